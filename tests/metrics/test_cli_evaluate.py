"""``semkit evaluate`` through click's CliRunner on label-map folders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from semkit.cli.evaluate import evaluate
from semkit.data.io import save_labels


@pytest.fixture
def folders(tmp_path):
    gt = np.zeros((10, 12), dtype=np.int32)
    gt[0:2, 0:4], gt[4:6, 0:3], gt[4:6, 4:7], gt[8:10, 0:2] = 1, 2, 3, 4
    pred = np.zeros_like(gt)
    pred[0:2, 0:2], pred[0:2, 2:4], pred[4:6, 0:7], pred[8:10, 8:11] = 1, 2, 3, 4  # AJI+ 10/42
    for sub, arr in (("gt", gt), ("pred", pred), ("copy", gt)):
        save_labels(tmp_path / sub / "img1.tif", arr)
    return tmp_path


def test_evaluate_two_methods(folders):
    out = folders / "out"
    result = CliRunner().invoke(evaluate, ["--gt", str(folders / "gt"), "--pred", f"hand={folders / 'pred'}",
                                           "--pred", str(folders / "copy"), "--out", str(out), "--no-sizes"])
    assert result.exit_code == 0, result.output
    summary = pd.read_parquet(out / "summary.parquet").set_index("method")
    assert summary.loc["hand", "aji_plus_image_averaged"] == pytest.approx(10 / 42)
    assert summary.loc["copy", "aji_plus_image_averaged"] == 1.0
    assert (summary.loc["hand", "correct"], summary.loc["hand", "missed"]) == (2, 2)
    assert "0.2381" in result.output and "copy" in result.output
    assert (out / "per_image.csv").exists() and (out / "evaluation_settings.json").exists()
    assert "area_px" not in pd.read_parquet(out / "per_particle.parquet").columns


def test_stricter_threshold_and_missing_prediction(folders):
    out = folders / "out"
    result = CliRunner().invoke(evaluate, ["--gt", str(folders / "gt"), "--pred", str(folders / "pred"),
                                           "--out", str(out), "--iou-threshold", "0.45", "--no-coco-ap"])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(out / "per_image.parquet")["correct"].tolist() == [1]  # only A-A1 (IoU 0.5)
    save_labels(folders / "gt" / "img2.tif", np.ones((10, 12), np.int32))
    result = CliRunner().invoke(evaluate, ["--gt", str(folders / "gt"), "--pred", str(folders / "pred"),
                                           "--out", str(out)])
    assert result.exit_code == 1
    assert "img2" in result.output and "no prediction" in result.output
