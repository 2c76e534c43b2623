"""The prediction benchmark runs and reports consistent numbers (tiny settings; the real run is manual)."""

from __future__ import annotations

from inference_helpers import TINY

from semkit.bench.predict import bench_predict


def test_bench_reports_every_variant():
    lines = []
    result = bench_predict(backbones=("convnextv2_atto",), runtimes=("torch",), shape=(64, 96), repeats=2,
                           model_kwargs={k: v for k, v in TINY.items() if k != "backbone"}, echo=lines.append)
    assert result["shape"] == (64, 96) and result["repeats"] == 2 and result["export_s"] == {}
    v = result["variants"]["convnextv2_atto/torch"]
    assert 0 < v["forward_median_s"] <= v["median_s"] and v["min_s"] <= v["median_s"]
    assert v["detections"] == TINY["detections_per_img"] and 0 <= v["particles"] <= v["detections"]
    assert lines[0].startswith("Mask R-CNN prediction on one 96 x 64 image, CPU") and "random weights" in lines[0]
    assert "convnextv2_atto/torch" in lines[1]
