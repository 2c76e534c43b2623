"""The shared trainer factory: configuration round trip, callbacks, curves, repeatable seeds."""

from __future__ import annotations

import json

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from semkit.train import TrainerConfig, make_trainer, read_history


def test_config_round_trip_and_validation(tmp_path):
    cfg = TrainerConfig(max_epochs=3, output_dir=str(tmp_path), monitor="train/loss", mode="min", patience=2,
                        max_time="00:00:10:00", limit_train_batches=0.5)
    assert TrainerConfig.from_dict(json.loads(cfg.save(tmp_path / "c.json").read_text())) == cfg
    with pytest.raises(TypeError, match="unknown TrainerConfig fields: epochs"):
        TrainerConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError, match="mode"):
        TrainerConfig(mode="best")
    with pytest.raises(ValueError, match="max_epochs"):
        TrainerConfig(max_epochs=0)


def test_make_trainer_wires_monitor_checkpoint_and_early_stopping(tmp_path):
    cfg = TrainerConfig(max_epochs=4, accelerator="cpu", output_dir=str(tmp_path / "run"), patience=3,
                        limit_val_batches=2, enable_progress_bar=False)
    trainer = make_trainer(cfg)
    assert json.loads((tmp_path / "run" / "trainer_config.json").read_text()) == cfg.to_dict()
    ckpt = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    stop = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert len(ckpt) == 1 and ckpt[0].monitor == "val/aji_plus" and ckpt[0].mode == "max"
    assert ckpt[0].dirpath == str(tmp_path / "run" / "checkpoints")
    assert len(stop) == 1 and stop[0].patience == 3 and stop[0].monitor == "val/aji_plus"
    assert trainer.max_epochs == 4 and trainer.limit_val_batches == 2
    # no monitor: last checkpoint only, no early stopping
    trainer = make_trainer(TrainerConfig(output_dir=str(tmp_path / "b"), monitor=None, enable_progress_bar=False))
    assert not any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    assert trainer.checkpoint_callback.monitor is None


def test_read_history_merges_step_and_epoch_rows(tmp_path):
    (tmp_path / "logs").mkdir()
    pd.DataFrame({"epoch": [0, 0, 0, 1, 1], "step": [0, 1, 1, 2, 3],
                  "train/loss_step": [3.0, 2.0, None, 1.5, 1.0],
                  "train/loss_epoch": [None, None, 2.5, None, 1.25],
                  "val/aji_plus": [None, None, 0.1, 0.3, None]}).to_csv(tmp_path / "logs" / "metrics.csv", index=False)
    h = read_history(tmp_path)
    assert h.index.tolist() == [0, 1]
    assert h["train/loss_epoch"].tolist() == [2.5, 1.25]
    assert h["val/aji_plus"].tolist() == [0.1, 0.3]
    assert read_history(tmp_path / "missing").empty


class _Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _train(tmp_path, seed: int) -> torch.Tensor:
    cfg = TrainerConfig(max_epochs=3, accelerator="cpu", output_dir=str(tmp_path / f"s{seed}"), seed=seed,
                        monitor="train/loss", mode="min", patience=None, enable_progress_bar=False)
    trainer = make_trainer(cfg)  # seeds everything first: the model and the shuffling below depend on it
    module = _Regression()
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    trainer.fit(module, DataLoader(data, batch_size=8, shuffle=True))
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_same_seed_same_weights(tmp_path):
    a, b, c = _train(tmp_path / "a", 7), _train(tmp_path / "b", 7), _train(tmp_path / "c", 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    h = read_history(tmp_path / "a" / "s7")
    assert h.index.tolist() == [0, 1, 2] and h["train/loss"].iloc[-1] < h["train/loss"].iloc[0]
    assert (tmp_path / "a" / "s7" / "checkpoints" / "best.ckpt").exists()
