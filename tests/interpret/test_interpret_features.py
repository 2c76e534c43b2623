"""GRN hooks: placement (one per stage, last block), shapes for atto and pico, parity with the GRN formula and
across model wrappers, weights untouched; deterministic channel selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semkit.interpret import (
    GRNCapture,
    capture_features,
    channel_selection,
    encoder_stages,
    grn_layers,
    select_channels,
)
from semkit.models import build_maskrcnn, build_unet
from semkit.models.backbones import create_backbone, encoder_state_dict

# GRN sits in the MLP after the 4x expansion: 4 x the stage widths
GRN_CHANNELS = {"convnextv2_atto": (160, 320, 640, 1280), "convnextv2_pico": (256, 512, 1024, 2048)}
STAGE_WIDTHS = {"convnextv2_atto": (40, 80, 160, 320), "convnextv2_pico": (64, 128, 256, 512)}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", ["convnextv2_atto", "convnextv2_pico"])
def test_one_capture_per_stage_with_expected_shapes(name):
    torch.manual_seed(0)
    encoder = create_backbone(name).eval()
    assert tuple(encoder.feature_info.channels()) == STAGE_WIDTHS[name]
    x = torch.rand(2, 1, 64, 96)
    with GRNCapture(encoder) as cap, torch.no_grad():
        encoder(x)
    assert cap.calls == {1: 1, 2: 1, 3: 1, 4: 1}
    for s, channels in zip((1, 2, 3, 4), GRN_CHANNELS[name], strict=True):
        assert channels == 4 * STAGE_WIDTHS[name][s - 1]
        assert tuple(cap.features[s].shape) == (2, channels, 64 // 2 ** (s + 1), 96 // 2 ** (s + 1))
    # the hooks sit on the last block of each stage (atto and pico: depths 2, 2, 6, 2)
    assert {s: n for s, (n, _) in cap.layers.items()} == {
        1: "model.stages.0.blocks.1.mlp.grn", 2: "model.stages.1.blocks.1.mlp.grn",
        3: "model.stages.2.blocks.5.mlp.grn", 4: "model.stages.3.blocks.1.mlp.grn"}
    # leaving the context removes the hooks: another forward pass records nothing
    with torch.no_grad():
        encoder(x)
    assert cap.calls == {1: 1, 2: 1, 3: 1, 4: 1}
    assert all(not m._forward_hooks for m in encoder.modules())


def test_odd_sizes_are_floored_like_the_strided_convolutions():
    encoder = create_backbone("convnextv2_atto")
    feats = capture_features(encoder, np.random.default_rng(0).random((70, 45), dtype=np.float32))
    # 4 x 4 stride-4 stem, then 2 x 2 stride-2 downsampling: 70 -> 17 -> 8 -> 4 -> 2, 45 -> 11 -> 5 -> 2 -> 1
    assert {s: f.shape for s, f in feats.items()} == {
        s: (1, c, math.floor(70 / 2 ** (s + 1)), math.floor(45 / 2 ** (s + 1)))
        for s, c in zip((1, 2, 3, 4), GRN_CHANNELS["convnextv2_atto"], strict=True)}


def test_capture_equals_grn_computed_by_hand():
    torch.manual_seed(0)
    encoder = create_backbone("convnextv2_atto").eval()
    inputs = {}
    # timm initialises GRN's gamma and beta to zero (GRN = identity); give them values so the formula matters
    for s, (_, grn) in grn_layers(encoder).items():
        with torch.no_grad():
            grn.weight.normal_()
            grn.bias.normal_()
        grn.register_forward_hook(lambda m, i, o, s=s: inputs.__setitem__(s, i[0].detach()))
    x = torch.rand(1, 1, 64, 64)
    feats = capture_features(encoder, x, normalise_input=False)
    for s, (_, grn) in grn_layers(encoder).items():
        u = inputs[s]  # (B, C, H, W), channels first
        g = u.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()  # ||u_c||_2 over the spatial positions
        n = g / (g.mean(dim=1, keepdim=True) + 1e-6)
        with torch.no_grad():
            expected = u + grn.weight.view(1, -1, 1, 1) * (u * n) + grn.bias.view(1, -1, 1, 1)
        np.testing.assert_allclose(feats[s], expected.numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(feats[s], u.numpy())  # not the identity


def test_capture_leaves_weights_mode_and_input_alone():
    torch.manual_seed(0)
    encoder = create_backbone("convnextv2_atto").train()
    before = _state(encoder)
    image = np.random.default_rng(1).random((64, 64), dtype=np.float32)
    copy = image.copy()
    first = capture_features(encoder, image, stages=(2, 3))
    assert set(first) == {2, 3}
    assert encoder.training  # restored
    after = encoder.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    np.testing.assert_array_equal(image, copy)
    assert all(not m._forward_hooks for m in encoder.modules())
    # eval mode inside: a second capture gives the same maps
    second = capture_features(encoder, image, stages=(2, 3))
    assert all(np.array_equal(first[s], second[s]) for s in (2, 3))


def test_normalisation_matches_the_fine_tuning_one():
    from semkit.models.maskrcnn import GRAY_MEAN, GRAY_STD

    encoder = create_backbone("convnextv2_atto")
    x = torch.rand(1, 1, 64, 64)
    normalised = capture_features(encoder, x, stages=[1])[1]
    by_hand = capture_features(encoder, (x - GRAY_MEAN[0]) / GRAY_STD[0], stages=[1], normalise_input=False)[1]
    np.testing.assert_allclose(normalised, by_hand, rtol=1e-6, atol=1e-6)


def test_same_layers_inside_maskrcnn_and_unet(tmp_path):
    torch.manual_seed(0)
    backbone = create_backbone("convnextv2_atto")
    path = tmp_path / "encoder.pt"
    torch.save(encoder_state_dict(backbone), path)
    maskrcnn = build_maskrcnn(backbone="convnextv2_atto", init=str(path), uncertainty=False)
    unet = build_unet("tu-convnextv2_atto", init=str(path))
    assert grn_layers(maskrcnn)[4][0] == "backbone.body.model.stages.3.blocks.1.mlp.grn"
    assert grn_layers(unet)[1][0] == "encoder.model.stages_0.blocks.1.mlp.grn"
    assert [n for n, _ in encoder_stages(unet)] == [f"encoder.model.stages_{i}" for i in range(4)]
    x = torch.rand(1, 1, 64, 64)
    reference = capture_features(backbone, x)
    for encoder in (maskrcnn.backbone.body, unet.encoder):  # the same weights reached through other wrappers
        got = capture_features(encoder, x)
        for s in (1, 2, 3, 4):
            np.testing.assert_allclose(got[s], reference[s], rtol=1e-5, atol=1e-5)


def test_no_grn_is_a_clear_error():
    resnet = create_backbone("resnet50")
    assert [n for n, _ in encoder_stages(resnet)] == [f"model.layer{i}" for i in range(1, 5)]
    with pytest.raises(ValueError, match="ConvNeXt V2"):
        grn_layers(resnet)
    with pytest.raises(ValueError, match="no four-stage"):
        encoder_stages(torch.nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="stages must be"):
        grn_layers(create_backbone("convnextv2_atto"), stages=(0, 5))


def test_channel_selection_is_fixed_by_seed_and_stage():
    a = select_channels(160, 16, seed=0, stage=1)
    assert np.array_equal(a, select_channels(160, 16, seed=0, stage=1))
    assert not np.array_equal(a, select_channels(160, 16, seed=1, stage=1))
    assert not np.array_equal(a, select_channels(160, 16, seed=0, stage=2))
    assert len(a) == 16 and len(set(a.tolist())) == 16 and np.all(np.diff(a) > 0) and a.max() < 160
    assert np.array_equal(select_channels(5, 16), np.arange(5))  # fewer channels than asked: all of them
    with pytest.raises(ValueError):
        select_channels(0, 16)


def test_same_channels_for_every_checkpoint_of_an_architecture():
    x = torch.rand(1, 1, 64, 64)
    torch.manual_seed(0)
    first = capture_features(create_backbone("convnextv2_atto"), x)
    torch.manual_seed(1)
    second = capture_features(create_backbone("convnextv2_atto"), x)
    assert not np.allclose(first[1], second[1])  # different weights ...
    sel_a, sel_b = channel_selection(first, 16, seed=3), channel_selection(second, 16, seed=3)
    assert all(np.array_equal(sel_a[s], sel_b[s]) for s in (1, 2, 3, 4))  # ... same channels
    assert all(np.array_equal(sel_a[s], select_channels(c, 16, 3, s))
               for s, c in zip((1, 2, 3, 4), GRN_CHANNELS["convnextv2_atto"], strict=True))


@settings(max_examples=50, deadline=None)
@given(n_total=st.integers(1, 3000), n=st.integers(1, 64), seed=st.integers(0, 2**31), stage=st.integers(1, 4))
def test_selection_properties(n_total, n, seed, stage):
    sel = select_channels(n_total, n, seed, stage)
    assert len(sel) == min(n, n_total) and len(np.unique(sel)) == len(sel)
    assert np.all(np.diff(sel) > 0) and sel.min() >= 0 and sel.max() < n_total
    assert np.array_equal(sel, select_channels(n_total, n, seed, stage))
