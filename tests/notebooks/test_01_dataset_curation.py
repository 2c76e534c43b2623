"""Notebook 01 (dataset curation) through papermill in quick mode: synthetic default and real folders."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from semkit.batch import NOTEBOOK_DIR

pytestmark = pytest.mark.notebook


def test_01_on_the_synthetic_demo_folder(run_notebook, tmp_path):
    run = run_notebook("01_dataset_curation")
    metrics = json.loads((run / "metrics.json").read_text())
    # Quick mode: 8 regular images + 1 near-empty + 1 duplicate are usable, the truncated file is skipped.
    assert metrics["n_images"] == 10 and metrics["n_skipped"] == 1
    assert metrics["n_duplicate_groups"] == 1 and metrics["n_in_duplicate_groups"] == 2
    assert metrics["n_near_empty"] == 1 and metrics["n_uncalibrated"] == 0
    assert metrics["n_bucket_high"] == 10 and metrics["n_bucket_low"] == 0
    # All images are labeled: 9 split units (the duplicate pair is one) cut 65/15/20 → 6/1/2 units.
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 10
    assert metrics["n_val"] == 1 and metrics["n_test"] == 2 and metrics["n_train"] == 7
    # The pretraining pool is the 7 train images, 80/20 in units: 6 units → 5/1, the pair counted twice.
    assert metrics["n_ssl_train"] + metrics["n_ssl_eval"] == 7 and metrics["n_ssl_eval"] >= 1
    # 4 pool images tiled in quick mode, 512 x 512 into 256-px tiles: 4 tiles each.
    assert metrics["n_tiles"] == 16
    sizes = metrics["ablation_sizes"]
    assert list(sizes) == ["0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64"]
    assert sizes == {f: max(1, int(float(f) * metrics["n_ssl_train"] + 0.5)) for f in sizes}
    manifest = pd.read_parquet(run / "manifest.parquet")
    assert len(manifest) == 10 and {"split", "ssl_split", "phash", "focus_score"} <= set(manifest.columns)
    skipped = pd.read_parquet(run / "skipped.parquet")
    assert skipped["path"].str.endswith("truncated.tif").tolist() == [True]
    for name in ("examples.png", "manifest_histograms.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 10_000


@pytest.mark.shared_data
def test_01_on_real_folders(run_notebook, bam_dir, phenom_dir):
    folders = [os.path.relpath(phenom_dir, NOTEBOOK_DIR), os.path.relpath(bam_dir / "images", NOTEBOOK_DIR)]
    run = run_notebook("01_dataset_curation", input_folders=folders)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == 39 and metrics["n_skipped"] == 0
    assert (
        metrics["n_bucket_high"] == 30 and metrics["n_bucket_unknown"] == 9 and metrics["n_uncalibrated"] == 9
    )
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (20, 4, 6)  # BAM labels found
    assert (metrics["n_ssl_train"], metrics["n_ssl_eval"]) == (23, 6)  # 9 Phenom + 20 BAM train images
    # Quick mode tiles the first 4 pool images (three 1200x1920 Phenom frames, one 900x1100) into 256-px tiles.
    assert metrics["n_tiles"] == 3 * 5 * 8 + 4 * 5
    assert metrics["n_duplicate_groups"] == 0 and metrics["n_near_empty"] == 0
    manifest = pd.read_parquet(run / "manifest.parquet").set_index("name")
    assert manifest.loc["1908248", "databar_rows"] == 56 and manifest.loc["4_Round-3", "databar_rows"] == 0
    assert manifest.loc["1908248", "magnification_bucket"] == "high"
    assert pd.isna(manifest.loc["4_Round-3", "magnification_bucket"])
