"""combine_masks: each rule of the study's post-processing on constructed detections, paste parity, memory."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torchvision.models.detection.roi_heads import paste_masks_in_image

from semkit.errors import InputError
from semkit.models.postprocess import TABLE_COLUMNS, combine_masks, paste_mask_in_box

H, W = 40, 60
CERTAIN = [0, 0, 0, 0, 0.1, 0.9]  # argmax bin 5 >= k/2
UNCERTAIN = [0.9, 0.1, 0, 0, 0, 0]  # argmax bin 0


def rect(y0, x0, y1, x1, value=1.0):
    m = np.zeros((H, W), dtype=np.float32)
    m[y0:y1, x0:x1] = value
    return m


def combine(masks, scores, probs, **kw):
    return combine_masks(None, np.array(scores), np.stack(masks), (H, W),
                         bin_probs=None if probs is None else np.array(probs, dtype=np.float64), **kw)


def test_score_thresholds_differ_for_certain_and_uncertain():
    masks = [rect(0, 0, 10, 10), rect(0, 20, 10, 30), rect(20, 0, 30, 10)]
    labels, table = combine(masks, [0.45, 0.45, 0.8], [CERTAIN, UNCERTAIN, CERTAIN],
                            certain_score=0.5, uncertain_score=0.4)
    # the certain detection at 0.45 is below theta_omega; the uncertain one at 0.45 passes theta_psi
    assert table["detection"].tolist() == [2, 1]
    assert table["certain"].tolist() == [True, False]
    assert labels[5, 5] == 0 and labels[25, 5] == 1 and labels[5, 25] == 2


def test_mask_nms_within_a_group_keeps_the_higher_objectness():
    a = rect(0, 0, 10, 10)  # 100 px
    b = rect(0, 1, 10, 11)  # IoU with a = 90 / 110 = 0.818
    c = rect(0, 7, 10, 17)  # IoU with a = 30 / 170 = 0.176
    labels, table = combine([a, b, c], [0.6, 0.9, 0.7], [CERTAIN] * 3, overlap_iou=0.5)
    assert table["detection"].tolist() == [1, 2]  # a removed by the higher-scored b
    assert table["objectness"].tolist() == pytest.approx([0.9, 0.7])
    # c overlaps b on columns 7..10: those pixels stay with b (painted first)
    assert (labels[:10, 1:11] == 1).all() and (labels[:10, 11:17] == 2).all()
    assert table["area_px"].tolist() == [100, 60]


def test_uncertain_never_suppresses_certain_by_nms_but_is_separated():
    certain = rect(0, 0, 10, 10)
    uncertain_big_overlap = rect(0, 2, 10, 12)  # IoU 80/120 = 0.67 with the certain mask
    uncertain_small_overlap = rect(0, 9, 10, 29)  # IoU 10/290 = 0.034
    labels, table = combine([certain, uncertain_big_overlap, uncertain_small_overlap], [0.6, 0.99, 0.95],
                            [CERTAIN, UNCERTAIN, UNCERTAIN], overlap_iou=0.3, separation_iou=0.05)
    # the uncertain mask with the highest objectness does not remove the certain one (groups are separate) but
    # is itself removed because it overlaps a certain particle with IoU > theta_sp
    assert table["detection"].tolist() == [0, 2]
    assert table["certain"].tolist() == [True, False]
    assert (labels[:10, :10] == 1).all() and (labels[:10, 10:29] == 2).all()
    _, table = combine([certain, uncertain_small_overlap], [0.6, 0.95], [CERTAIN, UNCERTAIN],
                       separation_iou=0.01)
    assert table["detection"].tolist() == [0]


def test_binarisation_threshold():
    m = rect(0, 0, 10, 10, 0.9) + rect(10, 0, 20, 10, 0.45)
    _, low = combine([m], [0.9], None, mask_threshold=0.4)
    _, high = combine([m], [0.9], None, mask_threshold=0.5)
    assert low["area_px"].tolist() == [200] and high["area_px"].tolist() == [100]


def test_split_rule_max_bin_versus_confidence():
    bimodal = [0.4, 0, 0, 0, 0.3, 0.3]  # argmax bin 0 (uncertain), gamma = 6.4 / 12 = 0.533 (certain)
    _, by_bin = combine([rect(0, 0, 5, 5)], [0.9], [bimodal])
    _, by_gamma = combine([rect(0, 0, 5, 5)], [0.9], [bimodal], split="confidence")
    assert by_bin["certain"].tolist() == [False] and by_gamma["certain"].tolist() == [True]
    assert by_bin["confidence"].iloc[0] == pytest.approx(6.4 / 12)


def test_min_area_and_no_head():
    masks = [rect(0, 0, 10, 10), rect(0, 8, 10, 11)]  # second: IoU 20/110, only 10 px left after the first
    labels, table = combine(masks, [0.9, 0.8], None, min_area=11)
    assert table["detection"].tolist() == [0] and labels.max() == 1
    assert table["certain"].all() and table["confidence"].isna().all()


def test_empty_detections():
    labels, table = combine_masks(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 1, 28, 28)), (H, W),
                                  bin_probs=np.zeros((0, 6)))
    assert labels.shape == (H, W) and labels.dtype == np.int32 and labels.max() == 0
    assert list(table.columns) == TABLE_COLUMNS and len(table) == 0


def test_inconsistent_inputs_raise():
    with pytest.raises(InputError, match="cropped masks need 2 boxes"):
        combine_masks(None, np.ones(2), np.zeros((2, 28, 28)), (H, W))
    with pytest.raises(InputError, match="bin_probs must be"):
        combine_masks(np.zeros((2, 4)), np.ones(2), np.zeros((2, 28, 28)), (H, W), bin_probs=np.ones((3, 6)))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(-20, 70), st.floats(-20, 50), st.floats(1, 60), st.floats(1, 60))
def test_paste_matches_torchvision(seed, x0, y0, w, h):
    assume(x0 + w > 1 and y0 + h > 1 and x0 < W - 1 and y0 < H - 1)  # torchvision's own paste fails on boxes entirely outside the image
    mask = torch.rand(28, 28, generator=torch.Generator().manual_seed(seed))
    box = [x0, y0, x0 + w, y0 + h]
    full = paste_masks_in_image(mask[None, None], torch.tensor([box]), (H, W))[0, 0].numpy()
    local, ly, lx = paste_mask_in_box(mask, box, H, W)
    ours = np.zeros((H, W), dtype=np.float32)
    ours[ly:ly + local.shape[0], lx:lx + local.shape[1]] = local
    np.testing.assert_array_equal(ours, full)


def test_box_outside_the_image_pastes_nothing():
    local, _, _ = paste_mask_in_box(torch.ones(28, 28), [0.0, -40.0, 10.0, -20.0], H, W)
    assert local.size == 0
    labels, table = combine_masks(np.array([[0.0, -40.0, 10.0, -20.0]]), np.ones(1), np.ones((1, 28, 28)), (H, W))
    assert labels.max() == 0 and len(table) == 0


def _random_detections(n, height, width, seed):
    rng = np.random.default_rng(seed)
    size = rng.uniform(12, 150, (n, 2))
    x0 = rng.uniform(-10, width - 10, n)
    y0 = rng.uniform(-10, height - 10, n)
    boxes = np.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], 1).astype(np.float32)
    yy, xx = np.mgrid[:28, :28]
    blob = np.exp(-(((yy - 13.5) / 9) ** 2 + ((xx - 13.5) / 9) ** 2)).astype(np.float32)
    masks = np.clip(blob[None] + rng.normal(0, 0.15, (n, 28, 28)), 0, 1).astype(np.float32)[:, None]
    probs = rng.dirichlet(np.ones(6), n)
    scores = rng.uniform(0.3, 1.0, n)
    return boxes, scores, masks, probs


def test_cropped_and_full_resolution_masks_agree():
    boxes, scores, masks, probs = _random_detections(40, 100, 120, seed=0)
    full = paste_masks_in_image(torch.from_numpy(masks), torch.from_numpy(boxes), (100, 120))[:, 0].numpy()
    a, ta = combine_masks(boxes, scores, masks, (100, 120), bin_probs=probs)
    b, tb = combine_masks(None, scores, full, (100, 120), bin_probs=probs)
    assert len(ta) > 5
    np.testing.assert_array_equal(a, b)
    assert ta.equals(tb)


def test_500_detections_on_1200x1920_stay_small_in_memory():
    height, width = 1200, 1920
    boxes, scores, masks, probs = _random_detections(500, height, width, seed=1)
    masks_t = torch.from_numpy(masks)
    tracemalloc.start()
    start = time.perf_counter()
    labels, table = combine_masks(torch.from_numpy(boxes), torch.from_numpy(scores), masks_t, (height, width),
                                  bin_probs=torch.from_numpy(probs), overlap_iou=0.5, separation_iou=0.3)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full_masks_bytes = 500 * height * width * 4  # 4.6 GB
    assert peak < 100e6 < full_masks_bytes / 40  # label map (9 MB) + crops, not N full-size masks
    assert seconds < 30
    assert labels.shape == (height, width) and len(table) > 100
    ids = np.unique(labels)
    assert ids[0] == 0 and ids[1:].tolist() == table["id"].tolist()
    np.testing.assert_array_equal(np.bincount(labels.ravel())[1:], table["area_px"].to_numpy())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_outputs_combine_like_float32(dtype):
    # bf16-mixed training validates on half-precision detector outputs, which numpy cannot hold
    masks = torch.from_numpy(np.stack([rect(0, 0, 10, 10, 0.75), rect(20, 0, 30, 10), rect(0, 20, 10, 30)]))
    scores, probs = torch.tensor([0.9, 0.55, 0.8]), torch.tensor([CERTAIN, UNCERTAIN, CERTAIN])
    ref = combine_masks(None, scores, masks, (H, W), bin_probs=probs)
    got = combine_masks(None, scores.to(dtype), masks.to(dtype), (H, W), bin_probs=probs.to(dtype))
    np.testing.assert_array_equal(got[0], ref[0])
    assert got[1]["detection"].tolist() == ref[1]["detection"].tolist() == [0, 2, 1]  # certain ones first
    assert got[1]["certain"].tolist() == [True, True, False]
