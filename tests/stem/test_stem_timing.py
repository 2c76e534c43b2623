"""Acquisition-time model, per-image median timing and the benchmark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from semkit.errors import InputError
from semkit.stem import (
    BASELINES_S,
    GRID_POINTS,
    BoxSettings,
    acquisition_table,
    acquisition_time,
    box_image,
    compare_algorithms,
    dataset_table,
    make_haadf_set,
    time_boxing,
)


def test_acquisition_time_by_hand():
    assert GRID_POINTS == 16384 and BASELINES_S == (8.0, 16.0, 32.0, 64.0)
    # t_acq = 16.384 s / 16384 = 1 ms per box: 1000 boxes take 1 s, plus 10 ms of processing.
    assert acquisition_time(1000, 0.01, 16.384) == pytest.approx(1.01)
    np.testing.assert_allclose(acquisition_time([512, 1024], [0.0, 0.05], 8.0), [0.25, 0.55])


def _timings():
    return pd.DataFrame({"image": ["a", "b", "c"], "n_boxes": [512, 1024, 0], "median_s": [0.004, 0.006, 0.002]})


def test_acquisition_and_dataset_tables_by_hand():
    acq = acquisition_table(_timings(), baselines=(8.0, 64.0))
    assert len(acq) == 4  # image c has no boxes and is left out of the model
    row = acq[(acq.image == "a") & (acq.baseline_s == 8.0)].iloc[0]
    assert row.t_acq_s == pytest.approx(8 / 16384)
    assert row.projected_s == pytest.approx(0.004 + 512 * 8 / 16384)  # 0.254 s
    assert row.time_reduction == pytest.approx(8 / 0.254)
    assert row.box_reduction == pytest.approx(32.0)
    ds = dataset_table(acq)
    assert ds.loc[8.0, "images"] == 2 and ds.loc[8.0, "full_grid_s"] == 16.0
    assert ds.loc[8.0, "projected_s"] == pytest.approx(0.254 + 0.006 + 0.5)
    assert ds.loc[8.0, "time_reduction"] == pytest.approx(16.0 / 0.76)
    assert ds.loc[64.0, "mean_box_reduction"] == pytest.approx((32 + 16) / 2)
    assert ds.loc[64.0, "total_box_reduction"] == pytest.approx(2 * 16384 / 1536)


def test_time_boxing_and_algorithm_comparison():
    records = make_haadf_set(3, sizes=(256,), seed=4)
    t = time_boxing(records, repeats=3)
    assert t["image"].tolist() == [r.source for r in records]
    assert t["n_boxes"].tolist() == [box_image(r).n_boxes for r in records]
    assert (t["min_s"] <= t["median_s"]).all() and (t["median_s"] <= t["max_s"]).all() and (t["min_s"] > 0).all()
    assert t["n_elements"].tolist() == [1, 2, 3] and t["size"].tolist() == [256] * 3
    cmp = compare_algorithms(records, repeats=2)
    assert cmp["n_boxes_2"].tolist() == t["n_boxes"].tolist()
    assert cmp["n_boxes_1"].tolist() == [box_image(r, settings=BoxSettings(algorithm=1)).n_boxes for r in records]
    with pytest.raises(InputError):
        time_boxing(records, repeats=0)


def test_benchmark_reports_consistent_figures():
    from semkit.bench.stem import bench_stem

    lines = []
    out = bench_stem(n_images=3, size=256, repeats=2, seed=1, echo=lines.append)
    assert set(out["variants"]) == {"segmentation only", "Algorithm 2 (raster)", "Algorithm 1 (largest first)"}
    for name, s in out["variants"].items():
        per_image = out["per_image_ms"][name]
        assert len(per_image) == 3 and s["median_ms"] == pytest.approx(np.median(per_image), abs=1e-3)
        assert s["median_ms"] <= s["p90_ms"] <= s["max_ms"] + 1e-9
    counts = [box_image(r).n_boxes for r in make_haadf_set(3, sizes=(256,), seed=1)]
    assert (out["boxes_min"], out["boxes_max"]) == (min(counts), max(counts))
    assert out["boxes_mean"] == pytest.approx(np.mean(counts))
    assert out["reduction_total"] == pytest.approx(3 * 16384 / sum(counts))
    assert any("median" in line for line in lines) and any("reduction" in line for line in lines)


def test_benchmark_draws_the_boxes_and_the_time_and_count_histograms(tmp_path):
    import matplotlib.image

    from semkit.bench.stem import bench_stem

    lines = []
    bench_stem(n_images=2, size=256, repeats=1, seed=1, echo=lines.append, figures_dir=str(tmp_path))
    boxes = matplotlib.image.imread(tmp_path / "stem_boxes.png")
    assert boxes.shape[:2] == (240, 1200)  # one row of five 3-inch panels at 80 dpi (the two images, three blank)
    assert (tmp_path / "stem_times.png").stat().st_size > 0
    assert any(str(tmp_path / "stem_boxes.png") in line for line in lines)
