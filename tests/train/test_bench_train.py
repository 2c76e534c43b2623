"""`semkit bench train`: per-component step times of Mask R-CNN, variants side by side on identical batches."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from semkit.bench.train import VARIANTS, bench_train, format_train_bench
from semkit.cli.bench import bench


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_components_add_up_and_sampling_changes_the_mask_work():
    result = bench_train(backbones=("convnextv2_atto",), variants=("cpu6ep", "rois256_fpn128_mask128x2"),
                         crop_size=128, steps=1, echo=None)
    assert result["data"].startswith("synthetic") and result["steps"] == 1
    small, large = (result["variants"][f"convnextv2_atto/{v}"] for v in ("cpu6ep", "rois256_fpn128_mask128x2"))
    for v in (small, large):
        fw = v["forward_ms"]
        assert {"encoder", "fpn", "rpn", "box head", "mask head", "roi other"} <= set(fw)
        # the RoI heads' parts never exceed the RoI heads, and a step is forward + backward + optimizer
        assert fw["roi other"] >= -1.0
        assert v["step_s"] * 1000 >= fw["encoder"] + fw["rpn"] + v["backward_ms"]
        assert v["steps_per_s"] == pytest.approx(1 / v["step_s"])
    # 64 sampled RoIs allow at most 16 positives per image (positive fraction 0.25); 256 allow 64
    assert small["positives_per_image"] <= 16
    assert large["positives_per_image"] > small["positives_per_image"]
    text = format_train_bench(result)
    assert "mask head" in text and "steps per s" in text and "convnextv2_atto/cpu6ep" in text


def test_cli_lists_variants_and_rejects_unknown_ones():
    out = CliRunner().invoke(bench, ["train", "--list-variants"])
    assert out.exit_code == 0
    assert all(name in out.output for name in VARIANTS)
    assert json.loads(out.output.splitlines()[0].split(None, 1)[1]) == VARIANTS["cpu6ep"]
    bad = CliRunner().invoke(bench, ["train", "--variant", "warp9", "--steps", "1"])
    assert bad.exit_code != 0 and "unknown variant 'warp9'" in bad.output
