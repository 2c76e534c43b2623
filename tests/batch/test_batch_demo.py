"""The demo batch end to end, as `make demo` runs it (`semkit demo`): every notebook in quick mode on
synthetic data, then collect and report; a second invocation skips every finished run.

About 4-5 minutes on the 2-core development CPU (other jobs sharing it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from semkit.cli.demo import demo

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

STAGES = {"curate": 1, "pretrain": 2, "finetune_scratch": 4, "finetune_fcmae": 4, "evaluate": 1, "features": 1,
          "stem": 1}


def test_demo_batch_runs_collects_and_reports(tmp_path, monkeypatch):
    # relative --out/--figures, as `make demo` passes them (its defaults): runs execute two at a time and must
    # not move the process's working directory, or the report looks for the batch in the wrong folder
    monkeypatch.chdir(tmp_path)
    args = ["--out", "runs", "--figures", "figures"]
    result = CliRunner().invoke(demo, args)
    assert result.exit_code == 0, result.output
    assert "demo: 14 runs: 14 done, 0 skipped" in result.output
    assert Path.cwd() == tmp_path
    assert f"report -> {tmp_path / 'figures' / 'demo' / 'report.html'}" in result.output

    table = pd.read_parquet(tmp_path / "runs" / "demo" / "results.parquet")
    assert table.groupby("stage").size().to_dict() == STAGES
    assert (table["state"] == "done").all() and (table["wall_s"] > 0).all()
    pretrain = table[table["stage"] == "pretrain"].set_index("run_id")
    # quick mode: a 10-image synthetic pool split 80/20; half of the 8 training images, then all of them
    assert sorted(zip(pretrain["subset_fraction"], pretrain["n_train_images"], strict=True)) == [(0.5, 4), (1.0, 8)]
    assert (pretrain["metric.method"] == "fcmae").all()
    for stage in ("finetune_scratch", "finetune_fcmae"):
        rows = table[table["stage"] == stage]
        assert rows["test_aji_plus"].between(0, 1).all() and (rows["epochs_trained"] == 2).all()
        assert sorted(rows["seed"]) == [0, 0, 1, 1]
    fcmae = table[table["stage"] == "finetune_fcmae"]
    for _, row in fcmae.iterrows():
        up = pretrain.loc[row["pretrain.run_id"]]
        assert row["init"] == str(tmp_path / "runs" / "demo" / row["pretrain.run_id"] / "encoder.pt")
        assert row["pretrain.n_train_images"] == up["n_train_images"]
    assert sorted(table.loc[table["stage"] == "finetune_scratch", "backbone"]) == [
        "convnextv2_atto", "convnextv2_atto", "convnextv2_femto", "convnextv2_femto"]
    features = table[table["stage"] == "features"].iloc[0]
    assert json.loads(features["checkpoints"])[0] == "random"
    assert features["pretrain.subset_fraction"] == 1.0 and features["finetune_fcmae.seed"] == 0
    stem = table[table["stage"] == "stem"].iloc[0]
    assert stem["n_images"] > 0 and stem["boxes_mean"] > 0

    page = (tmp_path / "figures" / "demo" / "report.html").read_text()
    for figure in ("aji_vs_backbone_size", "err_matrix_pretraining", "aji_vs_pretraining_size", "aji_per_image",
                   "paired_comparison"):
        assert f'alt="{figure}"' in page
        assert (tmp_path / "figures" / "demo" / f"{figure}.png").stat().st_size > 5_000
    assert "No run reports an mIoU metric" in page  # no notebook computes mIoU in the demo

    again = CliRunner().invoke(demo, args)
    assert again.exit_code == 0, again.output
    assert "demo: 14 runs: 0 done, 14 skipped (already done)" in again.output
