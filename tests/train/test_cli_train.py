"""``semkit finetune`` through click's test runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from semkit.cli.train import finetune
from semkit.metrics import aji_plus
from semkit.models import segment_classical
from semkit.train import FinetuneConfig, load_splits


def test_finetune_command_runs_the_classical_pipeline(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(finetune, ["--set", "model=classical", "--set", "synthetic_images=5",
                                           "--set", "synthetic_size=64", "--set", "threshold_grid=none",
                                           "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "classical: test AJI+" in result.output
    results = json.loads((out / "results.json").read_text())
    config = FinetuneConfig.load(out / "finetune_config.json")
    assert config.model == "classical" and config.synthetic_size == 64 and config.output_dir == str(out)
    test = load_splits(config)["test"]
    expected = np.mean([aji_plus(r.instances, segment_classical(r.image)) for r in test])
    assert results["test"]["aji_plus"] == pytest.approx(expected)
    # an earlier run's config file reproduces it, --set overrides single fields
    again = CliRunner().invoke(finetune, ["--config", str(out / "finetune_config.json"), "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "b" / "results.json").read_text())["test"] == results["test"]


def test_finetune_command_rejects_bad_settings(tmp_path):
    result = CliRunner().invoke(finetune, ["--set", "epoch=3"])
    assert result.exit_code == 2 and "unknown field 'epoch'" in result.output
    result = CliRunner().invoke(finetune, ["--set", "model3"])
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.output
    result = CliRunner().invoke(finetune, ["--set", "model=yolo", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "maskrcnn, unet, classical" in result.output
    result = CliRunner().invoke(finetune, ["--set", f"dataset={tmp_path / 'none'}", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "dataset folder not found" in result.output
