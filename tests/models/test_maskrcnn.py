"""Particle Mask R-CNN: no resizing, losses, gradients, and an uncertainty head that leaves detections alone."""

from __future__ import annotations

import pytest
import torch

from semkit.errors import InputError
from semkit.models.maskrcnn import GRAY_MEAN, GRAY_STD, MaskRCNNConfig, build_maskrcnn
from semkit.models.uncertainty import bin_centres

# small proposal/detection counts keep the CPU tests fast; the defaults are checked separately
FAST = dict(backbone="convnextv2_atto", detections_per_img=20, rpn_pre_nms_top_n_test=200,
            rpn_post_nms_top_n_test=100, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
            box_batch_size_per_image=64)


def _sample(size=128):
    torch.manual_seed(0)
    image = torch.rand(1, size, size) * 0.2
    masks = torch.zeros(3, size, size, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0], [50.0, 60.0, 90.0, 100.0], [96.0, 8.0, 120.0, 30.0]])
    for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
        m[y0:y1, x0:x1] = 1
        image[0, y0:y1, x0:x1] += 0.6
    target = dict(boxes=boxes, labels=torch.ones(3, dtype=torch.int64), masks=masks,
                  certain=torch.tensor([True, False, True]))
    return image, target


def test_defaults_suit_particles():
    cfg = MaskRCNNConfig()
    assert cfg.backbone == "convnextv2_pico" and cfg.detections_per_img >= 500
    assert min(min(level) for level in cfg.anchor_sizes) == 8
    assert cfg.image_mean == pytest.approx((0.449,), abs=1e-3) and cfg.image_std == pytest.approx((0.226,), abs=1e-3)
    with pytest.raises(KeyError, match="resnet50"):
        MaskRCNNConfig(backbone="vit_base")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_maskrcnn(**FAST)


def test_1200x1920_input_is_not_rescaled(model):
    model.eval()
    image = torch.rand(1, 1200, 1920)
    images, _ = model.transform([image])
    assert images.image_sizes == [(1200, 1920)]
    assert images.tensors.shape == (1, 1, 1216, 1920)  # zero padding to a multiple of 32 only
    expected = (image - GRAY_MEAN[0]) / GRAY_STD[0]
    assert torch.allclose(images.tensors[0, :, :1200], expected)
    assert images.tensors[0, :, 1200:].abs().max() == 0
    model.train()
    _, target = _sample()
    images, targets = model.transform([torch.rand(1, 128, 128)], [target])
    assert torch.equal(targets[0]["boxes"], target["boxes"]) and images.image_sizes == [(128, 128)]


def test_anchors_reach_small_and_large_particles(model):
    model.eval()
    images, _ = model.transform([torch.rand(1, 128, 128)])
    features = model.backbone(images.tensors)
    anchors = model.rpn.anchor_generator(images, list(features.values()))[0]
    sides = (anchors[:, 2:] - anchors[:, :2])
    square = (sides[:, 0] - sides[:, 1]).abs() < 1e-3
    assert sides[square].min().item() == pytest.approx(8.0)
    assert sides[square].max().item() == pytest.approx(512.0)


def test_train_losses_and_gradients(model):
    model.train()
    image, target = _sample()
    losses = model([image], [target])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg",
                           "loss_uncertainty"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()
    stem = model.backbone.body.model.stem[0].weight
    head = model.roi_heads.uncertainty_head.fc.weight
    assert stem.grad.abs().sum() > 0 and head.grad.abs().sum() > 0


@pytest.mark.parametrize("detach", [True, False])
def test_uncertainty_gradient_reaches_shared_layers_only_without_detach(detach):
    torch.manual_seed(0)
    model = build_maskrcnn(**FAST, detach_uncertainty_features=detach).train()
    image, target = _sample()
    loss = model([image], [target])["loss_uncertainty"]
    shared = list(model.roi_heads.box_head.parameters()) + [model.backbone.body.model.stem[0].weight]
    grads = torch.autograd.grad(loss, shared + [model.roi_heads.uncertainty_head.fc.weight], allow_unused=True)
    shared_grad = sum(0.0 if g is None else g.abs().sum().item() for g in grads[:-1])
    assert grads[-1].abs().sum() > 0
    assert (shared_grad == 0.0) if detach else (shared_grad > 0.0)


def test_head_does_not_change_detection_outputs(model):
    plain = build_maskrcnn(**FAST, uncertainty=False)
    result = plain.load_state_dict(model.state_dict(), strict=False)
    assert result.missing_keys == [] and set(result.unexpected_keys) == {
        "roi_heads.uncertainty_head.fc.weight", "roi_heads.uncertainty_head.fc.bias"}
    image, target = _sample()
    model.eval(), plain.eval()
    with torch.no_grad():
        a, b = model([image])[0], plain([image])[0]
    assert len(a["boxes"]) > 0
    for key in ("boxes", "scores", "labels", "mask_probs"):
        assert torch.equal(a[key], b[key]), key
    assert "confidence" not in b
    model.train(), plain.train()
    torch.manual_seed(3)
    la = model([image], [target])
    torch.manual_seed(3)
    lb = plain([image], [target])
    assert set(la) - set(lb) == {"loss_uncertainty"}
    for key in lb:
        assert torch.equal(la[key], lb[key]), key


def test_eval_outputs_per_detection_confidence(model):
    model.eval()
    image, _ = _sample()
    with torch.no_grad():
        out = model([image])[0]
    n = len(out["boxes"])
    assert 0 < n <= FAST["detections_per_img"]
    assert out["mask_probs"].shape == (n, 1, 28, 28) and "masks" not in out
    probs = out["uncertainty_probs"]
    assert probs.shape == (n, 6) and torch.allclose(probs.sum(1), torch.ones(n))
    assert torch.allclose(out["confidence"], probs @ bin_centres(6))
    assert ((out["confidence"] >= 0) & (out["confidence"] <= 1)).all()


def test_bad_inputs_give_clear_errors(model):
    image, target = _sample()
    model.train()
    no_flags = {k: v for k, v in target.items() if k != "certain"}
    with pytest.raises(InputError, match="no 'certain' flags"):
        model([image], [no_flags])
    with pytest.raises(InputError, match="2 certainty flags for 3 boxes"):
        model([image], [{**target, "certain": target["certain"][:2]}])
    model.eval()
    with pytest.raises(InputError, match=r"expected a \(1, H, W\) tensor"):
        model([image.expand(3, -1, -1)])
    with pytest.raises(InputError, match="float"):
        model([(image * 255).to(torch.uint8)])


def test_resnet50_forward_backward():
    torch.manual_seed(0)
    model = build_maskrcnn(**{**FAST, "backbone": "resnet50"}).train()
    image, target = _sample()
    losses = model([image], [target])
    assert "loss_uncertainty" in losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.body.model.conv1.weight.grad.abs().sum() > 0
    assert model.backbone.body.model.conv1.weight.shape[1] == 1


def test_image_without_particles_trains():
    model = build_maskrcnn(**FAST).train()
    image = torch.rand(1, 96, 96)
    empty = dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64),
                 masks=torch.zeros(0, 96, 96, dtype=torch.uint8), certain=torch.zeros(0, dtype=torch.bool))
    losses = model([image], [empty])
    assert losses["loss_uncertainty"].item() == 0.0 and losses["loss_mask"].item() == 0.0
    assert torch.isfinite(sum(losses.values()))


def test_paste_masks_option_gives_torchvision_full_masks(model):
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    pasted = build_maskrcnn(**FAST, paste_masks=True)
    pasted.load_state_dict(model.state_dict())
    image, _ = _sample()
    model.eval(), pasted.eval()
    with torch.no_grad():
        crops, full = model([image])[0], pasted([image])[0]
    assert full["masks"].shape == (len(full["boxes"]), 1, 128, 128)
    assert torch.equal(full["masks"], paste_masks_in_image(crops["mask_probs"], crops["boxes"], (128, 128)))
