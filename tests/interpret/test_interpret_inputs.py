"""Checkpoint strings → encoders, model folders → models, example images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from semkit.errors import InputError
from semkit.interpret import example_records, load_encoder, load_encoders, load_models
from semkit.models import UNetConfig, build_maskrcnn, build_unet_model, save_model
from semkit.models.backbones import create_backbone, encoder_state_dict


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = encoder_state_dict(a), encoder_state_dict(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b = load_encoder("random", seed=0), load_encoder("random", seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert (a.label, a.kind, a.backbone, a.available, a.normalise_input) == (
        "random", "random", "convnextv2_atto", True, True)
    assert _same(a.module, b.module) and not _same(a.module, load_encoder("random", seed=1).module)
    assert not a.module.training


def test_encoder_file_uses_the_architecture_in_encoder_json(tmp_path):
    torch.manual_seed(0)
    pico = create_backbone("convnextv2_pico")
    run = tmp_path / "02"
    run.mkdir()
    torch.save(encoder_state_dict(pico), run / "encoder.pt")
    (run / "encoder.json").write_text(json.dumps({"method": "fcmae", "backbone": "convnextv2_pico"}))
    for checkpoint in (run / "encoder.pt", run):  # the file or its pretraining run folder
        enc = load_encoder(checkpoint, backbone="convnextv2_atto")
        assert (enc.kind, enc.backbone) == ("encoder", "convnextv2_pico") and _same(enc.module, pico)
    assert load_encoder(run / "encoder.pt").label == "fcmae · 02/encoder.pt"
    (run / "encoder.json").unlink()  # without metadata the given backbone is used: a mismatch is an error
    with pytest.raises(InputError, match="does not match"):
        load_encoder(run / "encoder.pt", backbone="convnextv2_atto")
    assert load_encoder(run / "encoder.pt", backbone="convnextv2_pico").label == "02/encoder.pt"


def test_model_folders_give_their_fine_tuned_encoders(tmp_path):
    torch.manual_seed(0)
    maskrcnn = build_maskrcnn(backbone="convnextv2_atto", uncertainty=False)
    unet = build_unet_model(UNetConfig(encoder="tu-convnextv2_atto"))
    m_dir = save_model(maskrcnn, tmp_path / "finetune" / "seed_0" / "model")
    u_dir = save_model(unet, tmp_path / "unet" / "model")
    enc = load_encoder(m_dir.parent)  # a seed folder holding model/ works too
    assert (enc.kind, enc.backbone, enc.normalise_input) == ("model", "convnextv2_atto", True)
    assert enc.label == "maskrcnn · random (fine-tuned)" and _same(enc.module, maskrcnn.backbone.body)
    enc = load_encoder(u_dir)
    assert (enc.backbone, enc.normalise_input, enc.label) == ("convnextv2_atto", False, "unet · random (fine-tuned)")
    got, want = enc.module.state_dict(), unet.encoder.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    models = load_models([m_dir, u_dir, m_dir])
    assert list(models) == ["maskrcnn · random", "unet · random", "maskrcnn · random#2"]
    assert type(models["unet · random"][1]).__name__ == "UNetPostprocess"
    with pytest.raises(InputError, match="not a semkit model folder"):
        load_models([tmp_path])


def test_unavailable_imagenet_is_reported_and_the_rest_loads(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("semkit.models.backbones._hf_cached_file", lambda hub_id: None)  # even if cached here
    encoders = load_encoders(["random", "imagenet", "random"])
    assert [e.label for e in encoders] == ["random", "imagenet", "random#2"]
    assert [e.available for e in encoders] == [True, False, True]
    assert "HF_HUB_OFFLINE" in encoders[1].error and encoders[1].module is None
    with pytest.raises(InputError, match="checkpoint not found"):
        load_encoders(["random", "no/such/encoder.pt"])  # a typo is not skipped silently


def test_synthetic_examples():
    low, high = example_records(size=96, seed=0)
    assert (low.name, high.name) == ("low-magnification", "high-magnification")
    assert (low.magnification_bucket, high.magnification_bucket) == ("low", "high")
    assert low.image.shape == high.image.shape == (96, 96)
    assert low.n_instances > 3 * high.n_instances > 0  # many small vs a few large particles
    assert np.array_equal(example_records(size=96, seed=0)[0].image, low.image)
    with pytest.raises(InputError):
        example_records(size=16)


def test_image_files_are_centre_cropped(tmp_path):
    rng = np.random.default_rng(0)
    pixels = (rng.random((150, 200)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    (rec,) = example_records([tmp_path / "a.png"], size=128)
    assert rec.image.shape == (128, 128) and rec.instances is None and rec.name == "a"
    np.testing.assert_allclose(rec.image, pixels[11:139, 36:164] / 255.0, atol=1e-6)
    (whole,) = example_records([tmp_path / "a.png"], size=0)
    assert whole.image.shape == (150, 200)
    with pytest.raises(InputError):
        example_records([tmp_path / "missing.png"])


@pytest.mark.shared_data
def test_real_sem_image_through_features_and_cam(bam_dir):
    from semkit.data.folders import load_unlabeled
    from semkit.interpret import capture_all, channel_stats, compute_cam
    from semkit.models import build_unet

    path = sorted((bam_dir / "images").glob("*.tif"))[0]
    (full,) = load_unlabeled([path])
    (rec,) = example_records([path], size=128)
    h, w = full.image.shape  # databar already cropped
    assert full.meta["databar_rows"] > 0 and rec.image.shape == (128, 128)
    np.testing.assert_array_equal(rec.image, full.image[(h - 128) // 2:(h - 128) // 2 + 128,
                                                         (w - 128) // 2:(w - 128) // 2 + 128])
    feats = capture_all(load_encoders(["random"]), [rec], progress=False)["random"][rec.name]
    assert feats[4].shape == (1280, 4, 4)
    assert all(np.isfinite(v) for v in channel_stats(feats[1]).values())
    torch.manual_seed(0)
    res = compute_cam(build_unet("tu-convnextv2_atto", decoder_channels=(32, 16, 16, 8, 8)), rec.image, "gradcam")
    assert res.cam.shape == (128, 128) and np.isfinite(res.cam).all()
