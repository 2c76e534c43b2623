"""Saving and loading particle Mask R-CNN folders: identical outputs, no downloads, clear errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from semkit.errors import InputError
from semkit.models import CombineThresholds, UNetConfig, UNetPostprocess, build_maskrcnn, build_unet_model
from semkit.models.io import load_model, save_model

SMALL = dict(backbone="convnextv2_atto", detections_per_img=8, rpn_pre_nms_top_n_test=80,
             rpn_post_nms_top_n_test=40)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return build_maskrcnn(**SMALL).eval()


def test_round_trip_gives_identical_outputs(model, tmp_path):
    thresholds = CombineThresholds(certain_score=0.3, uncertain_score=0.7, overlap_iou=0.25, min_area=5)
    folder = save_model(model, tmp_path / "m", thresholds, extra={"epochs": 2, "split": [20, 5, 5]})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "meta.json", "thresholds.json",
                                                        "weights.pt"]
    assert json.loads((folder / "config.json").read_text()) == model.config.to_dict() | {
        "anchor_sizes": [list(a) for a in model.config.anchor_sizes],
        "aspect_ratios": list(model.config.aspect_ratios),
        "image_mean": list(model.config.image_mean), "image_std": list(model.config.image_std)}
    loaded, th, extra = load_model(folder)
    assert th == thresholds and extra == {"epochs": 2, "split": [20, 5, 5]}
    assert loaded.config == model.config and not loaded.training
    x = [torch.rand(1, 80, 112, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        a, b = model(x)[0], loaded(x)[0]
    assert a.keys() == b.keys() and len(a["boxes"]) > 0
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_load_never_fetches_the_initial_weights(model, tmp_path):
    # a model fine-tuned from ImageNet / an SSL checkpoint: reloading must not need those weights again
    model.config = replace(model.config, init=str(tmp_path / "deleted_ssl_checkpoint.pt"))
    try:
        folder = save_model(model, tmp_path / "m")
    finally:
        model.config = replace(model.config, init="random")
    loaded, th, extra = load_model(folder / "weights.pt")  # a file inside the folder is accepted too
    assert loaded.config.init.endswith("deleted_ssl_checkpoint.pt")
    assert th == CombineThresholds() and extra == {}
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_bad_folders_name_the_file(model, tmp_path):
    with pytest.raises(InputError, match="model folder not found"):
        load_model(tmp_path / "nothing")
    folder = save_model(model, tmp_path / "m")
    (folder / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="weights.pt: unreadable weights"):
        load_model(folder)
    # weights of a different architecture than config.json describes
    other = save_model(model, tmp_path / "other")
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(cfg | {"uncertainty": False}))
    with pytest.raises(InputError, match=r"weights.pt: weights do not match config.json.*uncertainty_head"):
        load_model(other)
    (other / "config.json").write_text(json.dumps(cfg | {"learning_rate": 1e-4}))
    with pytest.raises(InputError, match=r"config.json: unknown settings \['learning_rate'\]"):
        load_model(other)
    (other / "config.json").unlink()
    with pytest.raises(InputError, match="config.json: missing file"):
        load_model(other)


def test_only_particle_models_are_saved(tmp_path):
    with pytest.raises(TypeError, match="MaskRCNNConfig, UNetConfig"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x")


def test_unet_round_trip(tmp_path):
    torch.manual_seed(3)
    config = UNetConfig(encoder="tu-convnextv2_atto", arch="unetplusplus", init=str(tmp_path / "gone.pt"))
    model = build_unet_model(config, init="random").eval()  # built without the (missing) checkpoint
    post = UNetPostprocess(foreground_threshold=0.4, seed_threshold=0.6, min_area=3)
    folder = save_model(model, tmp_path / "u", post, extra={"seed": 3})
    assert json.loads((folder / "meta.json").read_text())["model"] == "unet"
    assert json.loads((folder / "thresholds.json").read_text()) == post.to_dict()
    loaded, th, extra = load_model(folder)
    assert th == post and extra == {"seed": 3} and loaded.semkit_config == config and not loaded.training
    x = torch.rand(1, 1, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # post-processing of the other kind is refused rather than written into the wrong file
    with pytest.raises(TypeError, match="needs UNetPostprocess"):
        save_model(model, tmp_path / "bad", CombineThresholds())
    (folder / "thresholds.json").write_text(json.dumps({"certain_score": 0.5}))
    with pytest.raises(InputError, match="thresholds.json: invalid UNetPostprocess"):
        load_model(folder)
