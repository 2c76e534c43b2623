"""Notebook 05 (GRN feature maps, collapse statistics, CAMs) through papermill in quick mode."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from semkit.interpret import capture_features, channel_stats, example_records, load_encoder

pytestmark = pytest.mark.notebook

ATTO_GRN_CHANNELS = {"eta1": 160, "eta2": 320, "eta3": 640, "eta4": 1280}  # 4 x (40, 80, 160, 320)


def test_05_quick_with_demo_models(run_notebook, tmp_path):
    run = run_notebook("05_feature_maps_cam")
    m = json.loads((run / "metrics.json").read_text())
    assert m["images"] == ["low-magnification", "high-magnification"]
    assert m["image_shapes"] == {"low-magnification": [128, 128], "high-magnification": [128, 128]}
    # default checkpoints: the random encoder plus the encoders of the two demo models fine-tuned in the notebook
    assert m["checkpoints"] == m["available"] == [
        "random", "maskrcnn · random (fine-tuned)", "unet · random (fine-tuned)"]
    assert m["unavailable"] == {} and m["models"] == ["maskrcnn · random", "unet · random"]
    for label in m["checkpoints"]:
        stats = m["feature_stats"][label]
        assert {k: v["n_channels"] for k, v in stats.items()} == ATTO_GRN_CHANNELS
        for v in stats.values():
            assert 0 <= v["dead_fraction"] <= 1 and 0 <= v["saturated_fraction"] <= 1
            assert v["near_constant_fraction"] == pytest.approx(v["dead_fraction"] + v["saturated_fraction"])
            assert -1 <= v["mean_cosine"] <= 1
    # parity: the "random" numbers are the stats module's on an independently captured random encoder
    encoder = load_encoder("random", "convnextv2_atto", seed=0)
    records = example_records(size=128, seed=0)
    for stage in (1, 4):
        expected = [channel_stats(capture_features(encoder.module, r.image, [stage])[stage]) for r in records]
        got = m["feature_stats"]["random"][f"eta{stage}"]
        for key in ("dead_fraction", "saturated_fraction", "mean_cosine"):
            assert got[key] == pytest.approx(sum(e[key] for e in expected) / 2, abs=1e-9)
    table = pd.read_csv(run / "feature_stats.csv")
    assert len(table) == 3 * 2 * 4 and set(table["stage"]) == {1, 2, 3, 4}
    # CAMs: Ablation-CAM of both demo models on both images, each explaining something, maps in [0, 1]
    assert m["cam_method"] == "ablationcam" and m["cam_stage"] == 4
    for model in m["models"]:
        for image in m["images"]:
            cam = m["cam"][model][image]
            assert cam["n_targets"] > 0 and cam["score"] > 0
            assert 0 <= cam["cam_mean"] <= 1 and 0 <= cam["ground_truth_area"] <= 1
    cam_csv = pd.read_csv(run / "cam_summary.csv")
    assert len(cam_csv) == 4 and set(cam_csv["method"]) == {"ablationcam"}
    for name in ("feature_maps_low-magnification.png", "feature_maps_high-magnification.png",
                 "feature_stats.png", "cams_ablationcam.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 20_000


def test_05_with_given_checkpoints_and_model(run_notebook, tmp_path, monkeypatch):
    """The batch runner's parameters: an encoder file, "random", "imagenet" (offline: reported, not fatal) and a
    model folder for the CAMs; Grad-CAM."""
    from semkit.models import build_maskrcnn, save_model
    from semkit.models.backbones import create_backbone, encoder_state_dict

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the kernel inherits it: ImageNet weights cannot be fetched
    torch.manual_seed(1)
    encoder_file = tmp_path / "pretrain" / "encoder.pt"
    encoder_file.parent.mkdir()
    torch.save(encoder_state_dict(create_backbone("convnextv2_atto")), encoder_file)
    model = build_maskrcnn(backbone="convnextv2_atto", uncertainty=False, fpn_channels=32, box_score_thresh=0.0,
                           rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, detections_per_img=20)
    model_dir = save_model(model, tmp_path / "seed_0" / "model")
    run = run_notebook("05_feature_maps_cam", checkpoints=[str(encoder_file), "random", "imagenet"],
                       models=[str(model_dir)], cam_method="gradcam", stages=[1, 4], n_channels=8, image_size=96)
    m = json.loads((run / "metrics.json").read_text())
    assert m["checkpoints"] == ["pretrain/encoder.pt", "random", "imagenet"]
    assert m["available"] == ["pretrain/encoder.pt", "random"]
    assert "HF_HUB_OFFLINE" in m["unavailable"]["imagenet"]
    assert m["image_shapes"]["high-magnification"] == [96, 96]
    assert set(m["feature_stats"]["random"]) == {"eta1", "eta4"}
    # another initialisation (seed 1 vs 0) gives other maps, hence other statistics
    assert m["feature_stats"]["random"]["eta1"]["mean_cosine"] != m["feature_stats"]["pretrain/encoder.pt"][
        "eta1"]["mean_cosine"]
    assert m["models"] == ["maskrcnn · random"] and m["model_dirs"] == [str(model_dir)]
    assert all(m["cam"]["maskrcnn · random"][i]["n_targets"] > 0 for i in m["images"])
    assert (tmp_path / "figures" / "cams_gradcam.png").stat().st_size > 20_000
