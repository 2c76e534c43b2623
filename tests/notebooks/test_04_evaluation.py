"""Notebook 04 (evaluation) through papermill in quick mode, on synthetic ground truth and simulated methods."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.notebook


def test_04_on_simulated_predictions(run_notebook, tmp_path):
    from semkit.data.synthetic import SyntheticConfig
    from semkit.metrics import aji_plus, load_evaluation_inputs

    run = run_notebook("04_evaluation")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == 4
    assert metrics["methods"] == ["mild", "moderate", "severe"]
    summary = metrics["summary"]
    aji = {m: summary[m]["aji_plus_image_averaged"] for m in metrics["methods"]}
    # The simulated methods make increasingly many errors, so their AJI+ must come out in that order.
    assert 0.0 < aji["severe"] < aji["moderate"] < aji["mild"] < 1.0
    for m in metrics["methods"]:
        s = summary[m]
        assert s["correct"] + s["missed"] == s["n_gt"] and s["correct"] + s["false_positive"] == s["n_pred"]
        assert 0.0 < s["ap"] <= s["ap50"] <= 1.0
        # Intact particles of certain ground truth get higher confidence by construction.
        assert metrics["confidence"][m]["auroc"] > 0.6
    # ERR of the best method over the worst baseline is positive, the reverse negative.
    assert metrics["err"]["severe"]["mild"] > 0 > metrics["err"]["mild"]["severe"]
    assert metrics["err"]["mild"]["moderate"] == pytest.approx(
        ((1 - aji["mild"]) - (1 - aji["moderate"])) / (1 - aji["mild"]) * 100)
    assert metrics["agreement_aji_plus"]["ground truth"]["mild"] == pytest.approx(aji["mild"])
    assert metrics["study_configurations"] == 5 + 2 * 5 * 4  # scratch per backbone + 2 methods x 5 x 4 sizes

    # The saved tables agree with metrics.json, and an image's AJI+ is reproduced from scratch.
    per_image = pd.read_parquet(run / "per_image.parquet")
    assert per_image.groupby("method")["aji_plus"].mean().to_dict() == pytest.approx(aji)
    gt, preds = load_evaluation_inputs(n_synthetic=4, seed=0, synthetic_config=SyntheticConfig(height=256,
                                                                                               width=256))
    name = gt.names[2]
    row = per_image[(per_image.method == "moderate") & (per_image.image == name)]
    assert row["aji_plus"].item() == pytest.approx(aji_plus(gt.masks[name], preds["moderate"].masks[name]))
    per_particle = pd.read_parquet(run / "per_particle.parquet")
    assert {"ecd_nm", "area_nm2", "score", "certain"} <= set(per_particle.columns)
    np.testing.assert_allclose(per_particle["area_nm2"], per_particle["area_px"] * 7.5**2)
    for fig in ("aji_per_image", "paired_comparison", "match_counts", "confidence_histograms",
                "size_distributions", "err_matrix", "agreement_matrix", "aji_vs_backbone_size",
                "aji_vs_pretraining_size"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 10_000
