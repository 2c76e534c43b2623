"""Notebook 03 (fine-tuning) through papermill in quick mode: trains, tunes, evaluates and writes its results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semkit.metrics import aji_plus
from semkit.train import FinetuneConfig, load_splits, read_predictions

pytestmark = pytest.mark.notebook


def test_03_quick_maskrcnn_on_synthetic_data(run_notebook, tmp_path):
    run = run_notebook("03_finetuning", num_threads=1)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "maskrcnn_convnextv2_atto_uncertainty"
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (4, 1, 1)  # 6 images split 60/20/20
    assert metrics["epochs_trained"] == 2 and metrics["train_seconds"] > 0
    assert 0.0 <= metrics["test_aji_plus"] <= 1.0
    assert metrics["test_correct"] + metrics["test_missed"] == metrics["test_n_gt"] > 0
    # parity: the reported AJI+ is the metrics module's value on the written predictions
    results = json.loads((run / "finetune" / "results.json").read_text())
    config = FinetuneConfig(**results["config"])
    test = load_splits(config)["test"]
    seed_dir = run / "finetune" / "seed_0"
    preds = read_predictions(seed_dir / "predictions", [r.name for r in test])
    expected = np.mean([aji_plus(r.instances, labels) for r, (labels, _) in zip(test, preds, strict=True)])
    assert metrics["test_aji_plus"] == pytest.approx(expected)
    assert (seed_dir / "model" / "weights.pt").exists() and (seed_dir / "finetune_config.json").exists()
    for name in ("training_curves.png", "test_overlays.png", "confidence_histogram.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 5_000
