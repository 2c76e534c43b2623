"""COCO mask AP through pycocotools: hand-computed precision/recall cases and the detection cap."""

from __future__ import annotations

import numpy as np
import pytest

from semkit.bench.metrics import grid_particles
from semkit.errors import InputError
from semkit.metrics import coco_mask_ap


def test_perfect_prediction():
    gt = grid_particles(120, 160, 12, seed=1)
    assert coco_mask_ap({"a": gt}, {"a": gt}) == {"ap": 1.0, "ap50": 1.0, "ap75": 1.0}


def test_single_match_with_iou_0_625():
    gt = np.zeros((8, 8), dtype=np.int32)
    gt[0:4, 0:4] = 1  # 16 px
    pred = np.zeros_like(gt)
    pred[0:4, 0:3] = 1  # 12 px inside: IoU 12 / 16 = 0.75 -> use 10 px instead
    pred[3, 2] = 0
    pred[3, 1] = 0  # 10 px: IoU 10 / 16 = 0.625
    # Matched at the thresholds 0.50, 0.55, 0.60 (precision 1 at every recall), missed at 0.65 ... 0.95:
    # AP = 3 / 10, AP50 = 1, AP75 = 0.
    assert coco_mask_ap({"a": gt}, {"a": pred}) == pytest.approx({"ap": 0.3, "ap50": 1.0, "ap75": 0.0})


def test_scores_order_the_detections():
    gt = np.zeros((6, 10), dtype=np.int32)
    gt[0:2, 0:2], gt[0:2, 6:8] = 1, 2
    pred = np.zeros_like(gt)
    pred[0:2, 0:2] = 1  # exact match of ground truth 1
    pred[4:6, 4:6] = 2  # false positive
    # Ranked by score: FP (0.9) then TP (0.1): precision 1/2 at recall 1/2, recall never exceeds 1/2.
    # 101-point interpolation: recall levels 0, 0.01, ..., 0.50 (51 of 101) get precision 0.5, the rest 0.
    ap = coco_mask_ap({"a": gt}, {"a": pred}, {"a": np.array([0.1, 0.9])})
    assert ap == pytest.approx({"ap": 25.5 / 101, "ap50": 25.5 / 101, "ap75": 25.5 / 101})
    swapped = coco_mask_ap({"a": gt}, {"a": pred}, {"a": np.array([0.9, 0.1])})
    assert swapped["ap50"] == pytest.approx(51 / 101)  # TP first: precision 1 up to recall 1/2


def test_more_than_100_particles_are_all_counted():
    gt = grid_particles(300, 400, 150, seed=2)
    # COCO's default cap of 100 detections per image would stop recall at 100/150.
    assert coco_mask_ap({"a": gt}, {"a": gt})["ap"] == 1.0


def test_undefined_and_empty_cases_and_bad_input():
    empty = np.zeros((4, 4), dtype=np.int32)
    one = empty.copy()
    one[1:3, 1:3] = 1
    ap = coco_mask_ap({"a": empty}, {"a": one})
    assert all(np.isnan(v) for v in ap.values())  # no ground truth at all: AP undefined
    assert coco_mask_ap({"a": one}, {"a": empty}) == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with pytest.raises(InputError, match="no prediction") as err:
        coco_mask_ap({"a": one}, {"b": one})
    assert err.value.path == "a"
    with pytest.raises(InputError, match="1 scores for 2"):
        coco_mask_ap({"a": one}, {"a": np.stack([one > 0, one > 0])}, {"a": np.array([0.5])})
