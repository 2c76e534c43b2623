"""Backbone builder: feature_info against real outputs, grayscale forward/backward, weight initialisation."""

from __future__ import annotations

import socket
import time

import pytest
import timm
import torch

from semkit.errors import InputError
from semkit.models import backbones
from semkit.models.backbones import (
    BACKBONES,
    WeightsUnavailableError,
    create_backbone,
    encoder_state_dict,
    load_encoder_state_dict,
)

# ConvNeXt V2 widths per stage (Woo et al. 2023, Table 1 and timm) and ResNet-50's bottleneck widths.
EXPECTED_CHANNELS = {
    "convnextv2_atto": [40, 80, 160, 320],
    "convnextv2_femto": [48, 96, 192, 384],
    "convnextv2_pico": [64, 128, 256, 512],
    "convnextv2_nano": [80, 160, 320, 640],
    "convnextv2_tiny": [96, 192, 384, 768],
    "convnextv2_base": [128, 256, 512, 1024],
    "convnextv2_large": [192, 384, 768, 1536],
    "convnextv2_huge": [352, 704, 1408, 2816],
    "resnet50": [256, 512, 1024, 2048],
}


def test_unknown_name_lists_choices():
    with pytest.raises(KeyError, match="convnextv2_pico.*resnet50"):
        create_backbone("convnextv2_small")


@pytest.mark.parametrize("name", list(BACKBONES))
def test_feature_info_matches_outputs(name):
    # On the meta device every scale (huge included) is built and run in milliseconds without memory.
    with torch.device("meta"):
        model = create_backbone(name)
        x = torch.empty(2, 1, 96, 160)
        feats = model(x)
    info = model.feature_info
    assert info.channels() == EXPECTED_CHANNELS[name]
    assert info.reduction() == [4, 8, 16, 32]
    assert [tuple(f.shape) for f in feats] == [(2, c, 96 // r, 160 // r) for c, r in zip(info.channels(), info.reduction(), strict=True)]
    assert model.model.state_dict()[next(iter(model.model.state_dict()))].shape[1] == 1  # grayscale stem


@pytest.mark.parametrize("name", ["convnextv2_atto", "resnet50"])
def test_forward_backward_grayscale(name):
    torch.manual_seed(0)
    model = create_backbone(name)
    x = torch.randn(1, 1, 128, 128)
    feats = model(x)
    assert [f.shape[1] for f in feats] == EXPECTED_CHANNELS[name]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    sum(f.mean() for f in feats).backward()
    stem = next(model.parameters())
    assert stem.shape[1] == 1 and stem.grad is not None
    assert torch.isfinite(stem.grad).all() and stem.grad.abs().sum() > 0


def test_checkpoint_round_trip_identical_outputs(tmp_path):
    torch.manual_seed(0)
    source = create_backbone("convnextv2_atto").eval()
    path = tmp_path / "encoder.pt"
    torch.save(encoder_state_dict(source), path)
    loaded = create_backbone("convnextv2_atto", init=path).eval()
    fresh = create_backbone("convnextv2_atto").eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        for a, b, c in zip(source(x), loaded(x), fresh(x), strict=True):
            assert torch.equal(a, b)
            assert not torch.equal(a, c)  # the load really replaced the random weights


def test_plain_timm_model_state_dict_loads_strictly(tmp_path):
    # what an SSL pretraining run exports: a plain timm encoder (num_classes=0 keeps head.norm for ConvNeXt)
    torch.manual_seed(1)
    plain = timm.create_model("convnextv2_atto", in_chans=1, num_classes=0).eval()
    assert any(k.startswith("head.") for k in plain.state_dict())
    path = tmp_path / "ssl.pt"
    torch.save({"state_dict": plain.state_dict()}, path)
    backbone = create_backbone("convnextv2_atto", init=path).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(x)[-1], plain.forward_features(x), atol=1e-6)


def test_mismatched_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "atto.pt"
    torch.save(encoder_state_dict(create_backbone("convnextv2_atto")), path)
    with pytest.raises(InputError, match="atto.pt.*does not match"):
        create_backbone("convnextv2_femto", init=path)
    missing = tmp_path / "nope.pt"
    with pytest.raises(InputError, match="nope.pt: encoder checkpoint not found"):
        create_backbone("convnextv2_atto", init=missing)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="broken.pt: cannot read"):
        load_encoder_state_dict(create_backbone("convnextv2_atto"), broken)


@pytest.fixture
def offline(monkeypatch):
    """No cached hub weights and an unresolvable hub host, whatever this machine's network is."""
    monkeypatch.setattr(backbones, "_hf_cached_file", lambda hub_id: None)
    monkeypatch.setattr(backbones, "HF_HOST", ("semkit-offline.invalid", 443))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_imagenet_offline_fails_at_once(offline):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="unreachable.*imagenet_file="):
        create_backbone("convnextv2_atto", init="imagenet")
    assert time.perf_counter() - start < 5.0


def test_imagenet_offline_env_fails_without_probing(offline, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_host_reachable", lambda *a, **k: pytest.fail("probed the network"))
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        create_backbone("resnet50", init="imagenet")


def test_connectivity_probe_does_not_hang(monkeypatch):
    def blackhole(*args, **kwargs):  # a resolver or firewall that never answers
        time.sleep(30)

    monkeypatch.setattr(socket, "create_connection", blackhole)
    start = time.perf_counter()
    assert backbones._host_reachable("example.org", 443, timeout=0.5) is False
    assert time.perf_counter() - start < 2.0


@pytest.fixture(scope="module")
def fake_imagenet_file(tmp_path_factory):
    """A 3-channel timm checkpoint with a 1000-class head, as downloaded from the hub."""
    torch.manual_seed(2)
    model = timm.create_model("convnextv2_atto", num_classes=1000)
    path = tmp_path_factory.mktemp("weights") / "convnextv2_atto_in1k.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_imagenet_from_local_file_sums_rgb_filters(offline, fake_imagenet_file):
    path, rgb = fake_imagenet_file
    model = create_backbone("convnextv2_atto", init="imagenet", imagenet_file=path)
    sd = encoder_state_dict(model)
    # timm adapts the RGB stem to grayscale by summing the three input-channel filters
    assert torch.allclose(sd["stem.0.weight"], rgb["stem.0.weight"].sum(1, keepdim=True))
    assert torch.equal(sd["stages.3.blocks.1.mlp.fc2.weight"], rgb["stages.3.blocks.1.mlp.fc2.weight"])
    with pytest.raises(InputError, match="missing.pth: ImageNet weights file not found"):
        create_backbone("convnextv2_atto", init="imagenet", imagenet_file=path.parent / "missing.pth")


def test_imagenet_from_hub_cache_needs_no_network(offline, fake_imagenet_file, monkeypatch):
    path, rgb = fake_imagenet_file
    monkeypatch.setattr(backbones, "_hf_cached_file", lambda hub_id: path)
    monkeypatch.setattr(backbones, "_host_reachable", lambda *a, **k: pytest.fail("probed the network"))
    model = create_backbone("convnextv2_atto", init="imagenet")
    assert torch.equal(encoder_state_dict(model)["stages.2.blocks.0.mlp.fc1.weight"],
                       rgb["stages.2.blocks.0.mlp.fc1.weight"])
