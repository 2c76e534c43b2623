"""Notebook 02 (self-supervised pretraining) through papermill in quick mode, FCMAE on a synthetic pool."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.notebook


def test_02_fcmae_quick(run_notebook, tmp_path):
    from semkit.models.backbones import create_backbone
    from semkit.train.trainer import read_history

    run = run_notebook("02_pretraining", seed=3)
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["method"], metrics["backbone"], metrics["backend"]) == ("fcmae", "convnextv2_atto", "dense")
    # quick mode: 10 synthetic images split 80/20, batch 4 -> 2 steps per epoch, 2 epochs
    assert (metrics["n_train_images"], metrics["n_val_images"], metrics["steps"]) == (8, 2, 4)
    history = read_history(run)
    assert metrics["best_val_loss"] == pytest.approx(history["val/loss"].min())
    assert metrics["best_epoch"] == int(history["val/loss"].to_numpy().argmin())
    # normalised-pixel targets: predicting the patch mean scores 1.0, so a trained model lands near or below it
    assert 0 < metrics["reconstruction_loss"] < 2.0
    # the pretraining_size spec: 8 fractions x 3 seeds pretrainings, one fine-tuning each, 3 scratch references
    assert metrics["ablation_runs"] == 8 * 3 * 2 + 3
    assert metrics["downstream_miou"] == {}  # no downstream_root: the section is skipped
    state = torch.load(metrics["encoder_path"], weights_only=True)
    backbone = create_backbone("convnextv2_atto", init=metrics["encoder_path"])
    assert torch.equal(backbone.model.stages[3].blocks[1].mlp.grn.weight, state["stages.3.blocks.1.mlp.grn.weight"])
    for name in ("loss_curves.png", "reconstructions.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 10_000
    assert json.loads((run / "encoder.json").read_text())["config"]["seed"] == 3


@pytest.mark.shared_data
def test_02_downstream_check_on_nasa_ebc(run_notebook, nasa_ebc_dir):
    run = run_notebook("02_pretraining", method="mocov2", downstream_root=str(nasa_ebc_dir))
    metrics = json.loads((run / "metrics.json").read_text())
    # quick mode: the first split, the pretrained encoder next to random initialisation
    assert set(metrics["downstream_miou"]) == {"mocov2.EBC1", "random.EBC1"}
    for name in ("mocov2", "random"):
        saved = json.loads((run / "downstream" / name / "EBC1" / "results.json").read_text())
        assert metrics["downstream_miou"][f"{name}.EBC1"] == pytest.approx(saved["test_miou_dataset_level"])
        assert 0.0 <= saved["test_miou_dataset_level"] <= 1.0
    pretrained = json.loads((run / "downstream" / "mocov2" / "EBC1" / "results.json").read_text())
    assert pretrained["encoder"] == metrics["encoder_path"]
