"""Notebook 06 (STEM acquisition boxing) through papermill in quick mode: synthetic particles and a folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from semkit.stem import GRID_POINTS, box_image, make_haadf_image, make_haadf_set

pytestmark = pytest.mark.notebook


def test_06_on_synthetic_particles(run_notebook, tmp_path):
    run = run_notebook("06_stem_boxing")
    m = json.loads((run / "metrics.json").read_text())
    # Quick mode: 10 synthetic images (element counts 1-5, 512 and 1024 px), 5 timing repeats.
    assert m["n_images"] == 10 and m["n_empty"] == 0 and m["repeats"] == 5 and m["largest_size"] == 1024
    counts = [box_image(r).n_boxes for r in make_haadf_set(10, sizes=(512, 1024), seed=0)]
    assert (m["boxes_min"], m["boxes_max"]) == (min(counts), max(counts))
    assert m["boxes_mean"] == pytest.approx(np.mean(counts)) == pytest.approx(m["boxes_mean_alg2"])
    assert m["reduction_total"] == pytest.approx(10 * GRID_POINTS / sum(counts))
    assert m["reduction_total"] > 10  # far fewer points than the 128 x 128 grid
    # Processing time is negligible next to acquisition: the time reduction approaches the point reduction.
    red = m["time_reduction"]
    assert list(red) == ["16", "32", "64", "8"]
    assert red["8"] < red["16"] < red["32"] < red["64"] <= m["reduction_total"] + 1e-9
    assert 0 < m["median_ms_alg2"] < 200 and 0 < m["median_ms"] < 200
    assert m["n_auto_reviewed"] == 10 and m["auto_success_rate"] >= 0.7
    assert m["n_reviewed"] == 0 and m["review_success_rate"] is None  # no visual review under papermill
    boxes = pd.read_csv(run / "boxes.csv")
    assert len(boxes) == sum(counts) and {"image", "x", "y", "size", "x_nm", "cluster"} <= set(boxes.columns)
    assert len(pd.read_csv(run / "auto_review.csv")) == 10
    for name in ("pipeline_steps.png", "overlays.png", "times_and_box_counts.png", "projected_times.png",
                 "algorithm_comparison.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 10_000


def test_06_on_a_folder_of_images_with_a_review_csv(run_notebook, tmp_path):
    folder = tmp_path / "haadf"
    folder.mkdir()
    recs = [make_haadf_image(256, n, seed=n) for n in (1, 2, 3)]
    for i, r in enumerate(recs[:2]):
        Image.fromarray(np.rint(r.image * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    tifffile.imwrite(folder / "p2.tif", np.rint(recs[2].image * 65535).astype(np.uint16))
    (folder / "elements.csv").write_text("file,n_elements\np0.png,1\np1.png,2\n")  # p2 gets the default
    review = tmp_path / "review.csv"
    review.write_text("image,bbox_encloses_particle,regions_separated,boxes_reflect_regions,reviewer\n"
                      "a,True,True,True,x\nb,True,False,True,x\nc,True,True,True,x\n")
    run = run_notebook("06_stem_boxing", input_dir=str(folder), elements=3, review_csv=str(review), repeats=2)
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_images"] == 3 and m["repeats"] == 2 and m["n_auto_reviewed"] == 0
    assert m["n_reviewed"] == 3 and m["review_success_rate"] == pytest.approx(2 / 3)
    assert m["boxes_min"] > 10 and m["largest_size"] == 256
