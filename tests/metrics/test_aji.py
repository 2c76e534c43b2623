"""AJI+ and the pairwise overlap: hand-computed cases, properties, a slow reference and real BAM ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from semkit.metrics import (
    METHOD_PRESETS,
    aji_plus,
    aji_plus_counts,
    match_instances,
    pairwise_overlap,
    perturb_instances,
)

# ---------------------------------------------------------------------------------------------------------------
# slow reference: one instance at a time, intersections from np.unique, written independently of the package


def _as_masks(x: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(first raster pixel, mask) per instance of a label map or stack, empty masks dropped."""
    if x.ndim == 3:
        masks = [m for m in x if m.any()]
    else:
        masks = [x == v for v in np.unique(x) if v != 0]
    return [(int(np.flatnonzero(m.ravel())[0]), m) for m in masks]


def slow_aji_plus(gt: np.ndarray, pred: np.ndarray) -> float:
    g = _as_masks(gt)
    p = _as_masks(pred)
    # The package orders instances by first pixel (then area) so tie-breaking does not depend on label values.
    g.sort(key=lambda t: (t[0], int(t[1].sum())))
    p.sort(key=lambda t: (t[0], int(t[1].sum())))
    ga = [int(m.sum()) for _, m in g]
    pa = [int(m.sum()) for _, m in p]
    if not g or not p:
        total = sum(ga) + sum(pa)
        return 1.0 if total == 0 else 0.0
    inter = np.zeros((len(g), len(p)), dtype=np.int64)
    iou = np.zeros((len(g), len(p)))
    for i, (_, gm) in enumerate(g):
        for j, (_, pm) in enumerate(p):
            inter[i, j] = int(np.logical_and(gm, pm).sum())
            union = ga[i] + pa[j] - inter[i, j]
            iou[i, j] = inter[i, j] / union
    rows, cols = linear_sum_assignment(iou, maximize=True)
    i_sum, u_sum = 0, 0
    paired_g, paired_p = set(), set()
    for r, c in zip(rows, cols, strict=True):
        if inter[r, c] > 0:
            i_sum += inter[r, c]
            u_sum += ga[r] + pa[c] - inter[r, c]
            paired_g.add(r)
            paired_p.add(c)
    u_sum += sum(a for k, a in enumerate(ga) if k not in paired_g)
    u_sum += sum(a for k, a in enumerate(pa) if k not in paired_p)
    return i_sum / u_sum


def fast_reference_aji(gt: np.ndarray, pred: np.ndarray) -> float:
    """Same definition, intersections per ground-truth instance with np.unique (fast enough for real images)."""
    gids = [v for v in np.unique(gt) if v]
    pids, pareas = np.unique(pred[pred > 0], return_counts=True)
    pfirst = {int(v): int(np.flatnonzero(pred.ravel() == v)[0]) for v in pids}
    porder = sorted(pids.tolist(), key=lambda v: pfirst[v])
    pcol = {v: k for k, v in enumerate(porder)}
    parea = dict(zip(pids.tolist(), pareas.tolist(), strict=True))
    gfirst = {int(v): int(np.flatnonzero(gt.ravel() == v)[0]) for v in gids}
    gorder = sorted(gfirst, key=gfirst.get)
    garea = {v: int((gt == v).sum()) for v in gorder}
    inter = np.zeros((len(gorder), len(porder)), dtype=np.int64)
    for i, v in enumerate(gorder):
        under, counts = np.unique(pred[gt == v], return_counts=True)
        for u, c in zip(under, counts, strict=True):
            if u:
                inter[i, pcol[int(u)]] = c
    ga = np.array([garea[v] for v in gorder])
    pa = np.array([parea[v] for v in porder])
    union = ga[:, None] + pa[None, :] - inter
    rows, cols = linear_sum_assignment(inter / union, maximize=True)
    kept = inter[rows, cols] > 0
    i_sum = int(inter[rows, cols][kept].sum())
    return i_sum / int(ga.sum() + pa.sum() - i_sum)


# ---------------------------------------------------------------------------------------------------------------
# hand-computed


def split_merge_missed_spurious() -> tuple[np.ndarray, np.ndarray]:
    """GT A (8 px) split in two, GT B and C (6 px each) merged into one 14-px prediction, GT D (4 px) missed,
    spurious prediction E (6 px)."""
    gt = np.zeros((10, 12), dtype=np.int32)
    gt[0:2, 0:4] = 1  # A
    gt[4:6, 0:3] = 2  # B
    gt[4:6, 4:7] = 3  # C
    gt[8:10, 0:2] = 4  # D
    pred = np.zeros_like(gt)
    pred[0:2, 0:2] = 5  # A1
    pred[0:2, 2:4] = 6  # A2
    pred[4:6, 0:7] = 7  # M covers B, C and the gap column
    pred[8:10, 8:11] = 9  # E, spurious
    return gt, pred


def test_aji_plus_split_merge_missed_spurious_by_hand():
    gt, pred = split_merge_missed_spurious()
    # IoU: A-A1 = A-A2 = 4/8; B-M = C-M = 6/14. Hungarian keeps A with one half (I 4, U 8) and M with one of
    # B/C (I 6, U 14). Unpaired: GT C (6) and D (4), predictions A2 (4) and E (6).
    # AJI+ = (4 + 6) / (8 + 14 + 6 + 4 + 4 + 6) = 10 / 42.
    assert aji_plus(gt, pred) == pytest.approx(10 / 42, abs=1e-15)
    ov = pairwise_overlap(gt, pred)
    assert aji_plus_counts(ov) == (10, 42)
    assert ov.gt_area.tolist() == [8, 6, 6, 4] and sorted(ov.pred_area.tolist()) == [4, 4, 6, 14]
    m = match_instances(gt, pred, 0.4)  # A-A1 (0.5) and M with B or C (0.43) pass 0.4
    assert (m.correct, m.missed, m.false_positive) == (2, 2, 2)


def test_aji_plus_edge_cases_and_a_perfect_match():
    empty = np.zeros((5, 5), dtype=np.int32)
    one = empty.copy()
    one[1:3, 1:3] = 7
    assert aji_plus(empty, empty) == 1.0
    assert aji_plus(one, empty) == 0.0 and aji_plus(empty, one) == 0.0
    assert aji_plus(one, one * 3) == 1.0  # label values do not matter
    assert aji_plus(np.zeros((0, 5, 5), bool), np.zeros((2, 5, 5), bool)) == 1.0  # empty masks are no instances


def test_aji_plus_overlapping_mask_stack_by_hand():
    gt = np.zeros((1, 4, 4), dtype=bool)
    gt[0, 0:2, 0:4] = True  # 8 px
    pred = np.zeros((2, 4, 4), dtype=bool)
    pred[0, 0:2, 0:4] = True  # identical, IoU 1
    pred[1, 0:2, 0:2] = True  # overlaps both, IoU 0.5 with the ground truth, left unpaired
    # Paired: I 8, U 8; unpaired prediction adds 4: AJI+ = 8 / 12.
    assert aji_plus(gt, pred) == pytest.approx(8 / 12)
    assert aji_plus(gt[0].astype(np.int32), pred) == pytest.approx(8 / 12)  # label map vs stack


def test_disjoint_instances_are_never_paired():
    gt = np.zeros((4, 8), dtype=np.int32)
    gt[:, :3] = 1
    pred = np.zeros_like(gt)
    pred[:, 5:] = 1
    assert aji_plus(gt, pred) == 0.0  # both unpaired: I = 0, U = 12 + 12


def test_tie_between_halves_is_resolved_independently_of_labels():
    gt, pred = split_merge_missed_spurious()
    swapped = pred.copy()
    swapped[pred == 5], swapped[pred == 6] = 6, 5
    assert aji_plus(gt, swapped) == aji_plus(gt, pred)


def test_large_and_sparse_label_values():
    gt, pred = split_merge_missed_spurious()
    big = np.where(pred > 0, pred.astype(np.int64) * 1_000_003, 0)  # forces the compacting path
    assert aji_plus(gt.astype(np.uint16), big) == pytest.approx(10 / 42)
    assert aji_plus(gt.astype(np.uint64), big.astype(np.uint64)) == pytest.approx(10 / 42)


# ---------------------------------------------------------------------------------------------------------------
# properties

label_maps = st.integers(1, 10).flatmap(
    lambda h: st.integers(1, 10).flatmap(lambda w: st.tuples(
        arrays(np.int32, (h, w), elements=st.integers(0, 5)),
        arrays(np.int32, (h, w), elements=st.integers(0, 5)),
    ))
)
fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(label_maps)
def test_aji_plus_of_itself_is_one(pair):
    gt, _ = pair
    assert aji_plus(gt, gt) == 1.0


@fast
@given(label_maps, st.randoms(use_true_random=False))
def test_aji_plus_in_unit_interval_and_invariant_to_label_permutation(pair, rnd):
    gt, pred = pair
    value = aji_plus(gt, pred)
    assert 0.0 <= value <= 1.0
    perm = np.array([0] + rnd.sample(range(1, 50), 5))  # 0 stays background; labels become arbitrary
    assert aji_plus(perm[gt], perm[pred]) == value
    assert aji_plus(perm[gt], pred) == value


@fast
@given(label_maps, st.randoms(use_true_random=False))
def test_label_map_and_equivalent_mask_stack_agree(pair, rnd):
    gt, pred = pair
    labels = list(range(1, 6))
    rnd.shuffle(labels)  # stack order is arbitrary; absent labels give empty masks, which are ignored
    gstack = np.stack([gt == v for v in labels])
    pstack = np.stack([pred == v for v in labels])
    value = aji_plus(gt, pred)
    assert aji_plus(gstack, pstack) == value
    assert aji_plus(gstack, pred) == value
    assert aji_plus(gt, pstack) == value


@fast
@given(label_maps)
def test_vectorised_equals_slow_reference(pair):
    gt, pred = pair
    assert aji_plus(gt, pred) == slow_aji_plus(gt, pred)


@pytest.mark.parametrize(("direct", "compact"), [(0, 1 << 24), (0, 0)])
def test_compacted_and_sparse_contingency_paths_equal_slow_reference(monkeypatch, direct, compact):
    """The paths taken for huge label values / very many instances, forced on small random maps."""
    from semkit.metrics import instance

    monkeypatch.setattr(instance, "_MAX_DIRECT_GRID", direct)
    monkeypatch.setattr(instance, "_MAX_COMPACT_GRID", compact)
    rng = np.random.default_rng(5)
    for _ in range(30):
        gt = rng.integers(0, 7, size=(9, 11)) * rng.integers(1, 3)
        pred = rng.integers(0, 7, size=(9, 11)) * 1000
        assert aji_plus(gt, pred) == slow_aji_plus(gt, pred)


@fast
@given(st.integers(0, 3).flatmap(lambda n: arrays(bool, (n, 6, 7))),
       st.integers(0, 3).flatmap(lambda n: arrays(bool, (n, 6, 7))))
def test_overlapping_stacks_equal_slow_reference(gstack, pstack):
    value = aji_plus(gstack, pstack)
    assert 0.0 <= value <= 1.0
    assert value == slow_aji_plus(gstack, pstack)


# ---------------------------------------------------------------------------------------------------------------
# real data


@pytest.mark.shared_data
def test_bam_ground_truth_against_a_perturbed_copy(bam_dir):
    import tifffile

    for path in sorted((bam_dir / "instances").glob("*_m.tif"))[:2]:
        mask = tifffile.imread(path) > 0
        gt, n = ndimage.label(mask)  # default structure: 4-connected, as SOURCE.md prescribes
        assert n > 20
        pred = perturb_instances(gt, METHOD_PRESETS["moderate"], seed=3, name=path.name).labels
        value = aji_plus(gt, pred, name=path.name)
        assert 0.0 < value < 1.0
        assert value == pytest.approx(fast_reference_aji(gt, pred), abs=1e-12)
        assert aji_plus(gt, gt, name=path.name) == 1.0
