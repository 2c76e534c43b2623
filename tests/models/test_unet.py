"""U-Net baselines: distance-map targets, instances by watershed, shared timm encoder weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semkit.errors import InputError
from semkit.models import backbones
from semkit.models.backbones import WeightsUnavailableError, create_backbone, encoder_state_dict
from semkit.models.unet import (
    UNET_ENCODERS,
    build_unet,
    instances_from_prediction,
    unet_loss,
    unet_targets,
)


def touching_discs(shape=(96, 128), r=20, centres=((48, 44), (48, 80))):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) & (labels == 0)] = i
    return labels


def best_iou(pred, truth, i):
    t = truth == i
    ious = [(np.logical_and(pred == j, t).sum() / np.logical_or(pred == j, t).sum()) for j in range(1, pred.max() + 1)]
    return max(ious, default=0.0)


def test_targets_hand_checked():
    labels = touching_discs()
    fg, dist = unet_targets(labels)
    np.testing.assert_array_equal(fg, labels > 0)
    assert dist[48, 44] == 1.0  # centre of the complete disc
    assert dist[labels == 2].max() == 1.0  # each particle is normalised by its own maximum
    assert dist[labels == 0].max() == 0.0
    assert 0 < dist[48, 62] < 0.1  # the neck where the discs touch counts as border
    # a 3-pixel square: all border, still a positive target
    tiny = np.zeros((8, 8), np.int32)
    tiny[2:5, 2:5] = 1
    assert unet_targets(tiny)[1][3, 3] == 1.0


def test_targets_round_trip_to_two_instances():
    labels = touching_discs()
    inst = instances_from_prediction(unet_targets(labels), logits=False)
    assert inst.max() == 2
    assert best_iou(inst, labels, 1) > 0.98 and best_iou(inst, labels, 2) > 0.98


def test_foreground_without_seed_is_kept_and_tiny_removed():
    pred = np.zeros((2, 30, 30), np.float32)
    pred[0, 2:8, 2:8] = 1.0  # foreground, distance never above the seed threshold
    pred[1, 2:8, 2:8] = 0.3
    pred[0, 20:22, 20:22] = 1.0  # 4 px
    inst = instances_from_prediction(pred, logits=False, seed_threshold=0.5, min_area=5)
    assert inst.max() == 1 and (inst == 1).sum() == 36
    with pytest.raises(InputError, match=r"\(2, H, W\)"):
        instances_from_prediction(np.zeros((3, 4, 4)))


def test_logits_are_passed_through_sigmoid():
    labels = touching_discs()
    probs = np.clip(unet_targets(labels), 1e-4, 1 - 1e-4)
    logits = torch.from_numpy(np.log(probs / (1 - probs)))
    np.testing.assert_array_equal(instances_from_prediction(logits), instances_from_prediction(probs, logits=False))


@pytest.mark.parametrize("encoder,arch", [("resnet50", "unet"), ("tu-convnextv2_atto", "unet"),
                                          ("tu-convnextv2_atto", "unetplusplus")])
def test_forward_backward(encoder, arch):
    torch.manual_seed(0)
    model = build_unet(encoder, arch)
    x = torch.rand(1, 1, 64, 64)
    out = model(x)
    assert out.shape == (1, 2, 64, 64)
    target = torch.from_numpy(unet_targets(touching_discs((64, 64), r=12, centres=((32, 20), (32, 42)))))[None]
    loss = unet_loss(out, target)
    assert torch.isfinite(loss)
    loss.backward()
    first = next(model.encoder.parameters())
    assert first.shape[1] == 1 and first.grad.abs().sum() > 0


@pytest.mark.parametrize("encoder,arch", [("resnet50", "unet"), ("tu-convnextv2_atto", "unetplusplus")])
def test_encoder_loads_the_same_timm_state_dict(encoder, arch, tmp_path):
    torch.manual_seed(0)
    backbone = create_backbone(UNET_ENCODERS[encoder]).eval()
    path = tmp_path / "encoder.pt"
    torch.save(encoder_state_dict(backbone), path)
    model = build_unet(encoder, arch, init=path).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        ours = backbone(x)
        theirs = [f for f in model.encoder(x) if f.shape[-1] in (16, 8, 4, 2) and f.shape[1] > 1][-4:]
    assert len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_unknown_names_and_offline_imagenet(monkeypatch):
    with pytest.raises(KeyError, match="tu-convnextv2_pico"):
        build_unet("efficientnet-b0")
    with pytest.raises(KeyError, match="unetplusplus"):
        build_unet("resnet50", arch="fpn")
    monkeypatch.setattr(backbones, "_hf_cached_file", lambda hub_id: None)
    monkeypatch.setattr(backbones, "HF_HOST", ("semkit-offline.invalid", 443))
    with pytest.raises(WeightsUnavailableError):
        build_unet("tu-convnextv2_atto", init="imagenet")
