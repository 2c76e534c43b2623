"""Particle matching at an IoU threshold, panoptic quality and precision/recall/F1: hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from semkit.metrics import (
    Overlap,
    match_instances,
    match_overlap,
    pairwise_overlap,
    panoptic_quality,
    precision_recall_f1,
)


def _row(label_cols: dict[int, tuple[int, int]], width: int = 12) -> np.ndarray:
    """A one-row label map: label -> [start, stop) columns."""
    out = np.zeros((1, width), dtype=np.int32)
    for label, (a, b) in label_cols.items():
        out[0, a:b] = label
    return out


def test_threshold_is_inclusive_at_exactly_0_4():
    gt = _row({1: (0, 4)})  # 4 px
    pred = _row({1: (2, 5)})  # 3 px; I = 2, U = 5 -> IoU = 0.4 exactly
    m = match_instances(gt, pred, 0.4)
    assert (m.correct, m.missed, m.false_positive) == (1, 0, 0)
    assert m.iou.tolist() == [0.4]
    m = match_instances(gt, pred, 0.41)
    assert (m.correct, m.missed, m.false_positive) == (0, 1, 1)
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)


def test_panoptic_quality_by_hand():
    gt = np.zeros((6, 14), dtype=np.int32)
    gt[0:4, 0:4] = 1  # 16 px
    gt[0:4, 6:10] = 2  # 16 px
    pred = np.zeros_like(gt)
    pred[0:4, 0:4] = 1  # exact: IoU 1
    pred[0:4, 7:11] = 2  # shifted one column: I 12, U 20 -> IoU 0.6
    pred[5:6, 12:14] = 3  # spurious
    # TP 2, FP 1, FN 0: SQ = (1 + 0.6) / 2 = 0.8, RQ = 2 / (2 + 0.5) = 0.8, PQ = 0.64.
    pq = panoptic_quality(gt, pred)
    assert pq["sq"] == pytest.approx(0.8) and pq["rq"] == pytest.approx(0.8) and pq["pq"] == pytest.approx(0.64)
    prf = precision_recall_f1(gt, pred, 0.5)
    assert prf == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8})


def test_panoptic_quality_needs_iou_strictly_above_one_half():
    gt = _row({1: (0, 4)})
    pred = _row({1: (0, 2)})  # IoU exactly 0.5
    assert panoptic_quality(gt, pred) == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert match_instances(gt, pred, 0.5).correct == 1  # the counting threshold is inclusive


def test_empty_sides():
    empty = np.zeros((3, 3), dtype=np.int32)
    one = empty.copy()
    one[0, 0] = 1
    both = match_instances(empty, empty)
    assert (both.precision, both.recall, both.f1, both.pq) == (1.0, 1.0, 1.0, 1.0)
    no_pred = match_instances(one, empty)
    assert (no_pred.correct, no_pred.missed, no_pred.false_positive) == (0, 1, 0)
    assert (no_pred.precision, no_pred.recall, no_pred.f1) == (0.0, 0.0, 0.0)
    no_gt = match_instances(empty, one)
    assert (no_gt.false_positive, no_gt.precision, no_gt.recall) == (1, 0.0, 0.0)


def test_matching_maximises_the_number_of_matches_before_iou():
    # Overlapping ground truth (stacks): a-x IoU 19/21, a-y 9/21, b-x 9/21, b-y 0. Maximising total IoU would
    # match only a-x; the matching pairs a-y and b-x instead (two correct particles, stardist's rule).
    ov = Overlap(intersection=np.array([[19, 9], [9, 0]]), gt_area=np.array([20, 10]),
                 pred_area=np.array([20, 10]), gt_ids=np.array([0, 1]), pred_ids=np.array([0, 1]),
                 image_shape=(10, 10))
    m = match_overlap(ov, 0.4)
    assert m.correct == 2
    assert sorted(zip(m.gt_index.tolist(), m.pred_index.tolist(), strict=True)) == [(0, 1), (1, 0)]
    assert match_overlap(ov, 0.5).correct == 1  # above 0.5 only a-x qualifies


def test_threshold_zero_does_not_match_disjoint_instances():
    gt = _row({1: (0, 2)})
    pred = _row({1: (5, 7)})
    assert match_instances(gt, pred, 0.0).correct == 0


maps = arrays(np.int32, (6, 6), elements=st.integers(0, 4))


@settings(max_examples=60, deadline=None)
@given(maps, maps, st.floats(0.05, 1.0))
def test_counts_are_consistent(gt, pred, threshold):
    m = match_instances(gt, pred, threshold)
    n_gt, n_pred = len(np.unique(gt[gt > 0])), len(np.unique(pred[pred > 0]))
    assert m.correct + m.missed == n_gt and m.correct + m.false_positive == n_pred
    assert np.all(m.iou >= threshold)
    assert len(set(m.gt_index.tolist())) == m.correct == len(set(m.pred_index.tolist()))
    # Above IoU 0.5 a match is unique, so the count equals the number of pairs above the threshold.
    if threshold > 0.5:
        assert m.correct == int((pairwise_overlap(gt, pred).iou >= threshold).sum())
