"""Threshold search: finds the known best combination on constructed detections, ties, parity with direct AJI+."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from semkit.errors import InputError
from semkit.metrics import aji_plus
from semkit.models.postprocess import CombineThresholds, combine_detections
from semkit.models.unet import unet_targets
from semkit.train.thresholds import (
    CLASSICAL_GRID,
    grid_search,
    search_classical,
    search_thresholds,
    search_unet_thresholds,
)

H, W = 40, 60
CERTAIN = [0, 0, 0, 0, 0.1, 0.9]
UNCERTAIN = [0.9, 0.1, 0, 0, 0, 0]


def rect(y0, x0, y1, x1, value=1.0):
    m = np.zeros((H, W), dtype=np.float32)
    m[y0:y1, x0:x1] = value
    return m


def constructed_case():
    """Ground truth A (certain) and B (uncertain); detections built so that exactly one grid point is perfect.

    * A's mask has a 1-px ring of probability 0.45: mask_threshold 0.5 cuts it, 0.4 keeps it (AJI+ < 1);
    * a certain duplicate of A (score 0.55) overlaps it with IoU 1/3: removed only when overlap_iou = 0.3;
    * an uncertain duplicate of A (score 0.6) overlaps it with IoU 0.11-0.14: removed only at separation_iou 0.1;
    * a certain false positive at 0.40 passes only certain_score 0.3; A (0.6) is lost at 0.7;
    * an uncertain false positive at 0.35 passes only uncertain_score 0.3; B (0.6) is lost at 0.7 and 0.9.
    """
    gt = np.zeros((H, W), dtype=np.int32)
    gt[5:15, 5:15] = 1
    gt[25:35, 30:40] = 2
    a = rect(4, 4, 16, 16, 0.45)
    a[5:15, 5:15] = 1.0
    masks = [a, rect(25, 30, 35, 40), rect(5, 10, 15, 20), rect(5, 13, 15, 23), rect(25, 45, 35, 55),
             rect(0, 45, 4, 55)]
    scores = [0.6, 0.6, 0.55, 0.6, 0.40, 0.35]
    probs = [CERTAIN, UNCERTAIN, CERTAIN, UNCERTAIN, CERTAIN, UNCERTAIN]
    det = {"boxes": torch.zeros(6, 4), "scores": torch.tensor(scores), "masks": torch.from_numpy(np.stack(masks)),
           "uncertainty_probs": torch.tensor(probs, dtype=torch.float32)}
    return det, gt


# known-best values deliberately NOT first in each axis, so the search has to find them by score
GRID = {"certain_score": (0.3, 0.7, 0.5), "uncertain_score": (0.9, 0.3, 0.5, 0.7), "overlap_iou": (0.5, 0.3),
        "separation_iou": (0.3, 0.1), "mask_threshold": (0.4, 0.5)}


def test_search_finds_the_known_best_thresholds():
    det, gt = constructed_case()
    best, table = search_thresholds([det, det], [gt, gt], GRID)
    assert best == CombineThresholds(certain_score=0.5, uncertain_score=0.5, overlap_iou=0.3, separation_iou=0.1,
                                     mask_threshold=0.5)
    assert len(table) == 3 * 4 * 2 * 2 * 2
    assert table["score"].max() == pytest.approx(1.0)
    assert (table["score"] == table["score"].max()).sum() == 1  # unique optimum: every rule matters
    # parity: each table row equals AJI+ of combine_detections with those thresholds
    for _, row in table.sample(8, random_state=0).iterrows():
        th = CombineThresholds(**{k: row[k] for k in GRID})
        assert row["score"] == pytest.approx(aji_plus(gt, combine_detections(det, gt.shape, th)[0]))


def test_without_uncertainty_head_the_uncertain_axes_are_dropped():
    det, gt = constructed_case()
    det = {k: v for k, v in det.items() if k != "uncertainty_probs"}
    base = CombineThresholds(uncertain_score=0.123)
    best, table = search_thresholds([det], [gt], GRID, base=base)
    assert "uncertain_score" not in table and "separation_iou" not in table
    assert len(table) == 3 * 2 * 2
    assert best.uncertain_score == 0.123  # untouched base value


def test_grid_search_ties_keep_the_first_combination_and_nan_never_wins():
    best, table = grid_search(lambda c: 1.0, {"a": (3, 1, 2), "b": ("x", "y")})
    assert best == {"a": 3, "b": "x"} and len(table) == 6
    best, _ = grid_search(lambda c: np.nan if c["a"] == 1 else -c["a"], {"a": (1, 5, 2)})
    assert best == {"a": 2}
    with pytest.raises(InputError, match="'a' has no values"):
        grid_search(lambda c: 0.0, {"a": ()})


def test_search_rejects_bad_input():
    det, gt = constructed_case()
    with pytest.raises(InputError, match="1 detection sets for 2 ground-truth"):
        search_thresholds([det], [gt, gt])
    with pytest.raises(InputError, match="no validation images"):
        search_thresholds([], [])
    with pytest.raises(InputError, match="unknown threshold names"):
        search_thresholds([det], [gt], {"score": (0.5,)})


def test_unet_threshold_search_picks_the_foreground_level():
    gt = np.zeros((H, W), dtype=np.int32)
    gt[10:30, 10:30] = 1
    fg = np.where(gt > 0, 0.6, 0.0)
    fg[5:9, 40:55] = 0.4  # a faint false positive: only a foreground threshold of 0.3 includes it
    dist = unet_targets(gt)[1]
    probs = np.clip(np.stack([fg, dist]), 1e-4, 1 - 1e-4)
    logits = torch.from_numpy(np.log(probs / (1 - probs))).float()
    best, table = search_unet_thresholds([logits], [gt], {"foreground_threshold": (0.3, 0.7, 0.5),
                                                          "seed_threshold": (0.5,)}, min_area=5)
    assert best == {"foreground_threshold": 0.5, "seed_threshold": 0.5, "min_area": 5}
    assert table.set_index("foreground_threshold")["score"].to_dict() == pytest.approx({0.3: 400 / 460, 0.7: 0.0,
                                                                                        0.5: 1.0})


def test_classical_search_beats_or_matches_every_grid_point():
    from semkit.data import make_sem_dataset
    from semkit.train.finetune import synthetic_config

    recs = make_sem_dataset(2, seed=3, config=synthetic_config(96))
    best, table = search_classical([r.image for r in recs], [r.instances for r in recs])
    assert len(table) == np.prod([len(v) for v in CLASSICAL_GRID.values()])
    top = table.loc[table["score"].idxmax()]
    assert {k: top[k] for k in CLASSICAL_GRID} == {k: best[k] for k in CLASSICAL_GRID}
    assert isinstance(table, pd.DataFrame) and 0 < top["score"] <= 1
