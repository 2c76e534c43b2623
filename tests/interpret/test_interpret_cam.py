"""Ablation-CAM and Grad-CAM: hand-computed maps on a toy network, tiny Mask R-CNN and U-Net on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from semkit.data.synthetic import SyntheticConfig, make_sem_record
from semkit.interpret import (
    CAM_METHODS,
    ZeroAblationLayer,
    cam_class,
    cam_summaries,
    cam_summary,
    cam_table,
    compute_cam,
    compute_cams,
    energy_inside,
)
from semkit.interpret.cam import run_cam
from semkit.models import UNetPostprocess, build_maskrcnn, build_unet


@pytest.fixture(scope="module")
def record():
    # 80 x 96: not a multiple of 32, so padding and cropping back are exercised
    return make_sem_record(3, SyntheticConfig(height=80, width=96, radius_px=(6.0, 14.0), n_particles=(4, 7)))


@pytest.fixture(scope="module")
def maskrcnn():
    # seed 1: with seed 0 Grad-CAM's weighted stage-4 activations are negative everywhere (an all-zero map after
    # its ReLU, which grad-cam returns faithfully); this test needs a map to compare
    torch.manual_seed(1)
    return build_maskrcnn(backbone="convnextv2_atto", uncertainty=True, fpn_channels=32, box_score_thresh=0.0,
                          rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, detections_per_img=20).eval()


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_unet("tu-convnextv2_atto", decoder_channels=(32, 16, 16, 8, 8)).eval()


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Toy(nn.Module):
    """score = sum of channel 0 of ``layer``; channel 0 = x, channel 1 = -x."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.layer.weight[:] = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)

    def forward(self, x):
        return self.layer(x)[:, 0].sum(dim=(1, 2))


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_cam_of_a_toy_network_by_hand(method):
    # only channel 0 matters: Ablation-CAM weights (S - 0) / S = 1 and 0; Grad-CAM weights dS/dch0 = 1, 0.
    # The map is then relu(x) min-max scaled to [0, 1].
    x = torch.arange(1.0, 1 + 6 * 8).view(1, 1, 6, 8)
    model = Toy()
    cam = run_cam(model, x, model.layer, method, [lambda out: out])
    expected = (x[0, 0] - x.min()) / (x.max() - x.min())
    np.testing.assert_allclose(cam, expected.numpy(), atol=1e-5)
    assert isinstance(model.layer, nn.Conv2d)  # the ablation layer was swapped back
    assert all(p.grad is None for p in model.parameters())


def test_zero_ablation_layer_zeroes_exactly_the_chosen_channels():
    layer = ZeroAblationLayer()
    acts = torch.randn(1, 4, 3, 3) - 5  # all negative: grad-cam's own layer would write min - 1e7 here
    layer.set_next_batch(input_batch_index=0, activations=acts, num_channels_to_ablate=2)
    layer.indices = np.array([1, 3])
    out = layer(None)
    assert out.shape == (2, 4, 3, 3)
    assert torch.all(out[0, 1] == 0) and torch.all(out[1, 3] == 0)
    assert torch.equal(out[0, [0, 2, 3]], acts[0, [0, 2, 3]]) and torch.equal(out[1, :3], acts[0, :3])


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(KeyError, match="ablationcam, gradcam"):
        cam_class("scorecam")


@pytest.mark.parametrize("method", ["ablationcam", "gradcam"])
def test_maskrcnn_cam(maskrcnn, record, method):
    before = _state(maskrcnn)
    res = compute_cam(maskrcnn, record.image, method, stage=4)
    assert res.cam.shape == record.image.shape == res.labels.shape
    assert res.cam.dtype == np.float32 and np.isfinite(res.cam).all()
    assert res.cam.min() >= 0 and res.cam.max() <= 1 and res.cam.std() > 1e-3  # not constant
    assert res.n_targets > 0 and res.score > 0 and res.layer == "backbone.body.model.stages.3"
    assert res.method == method
    # the model is as it was: weights, mask branch and uncertainty head back, no hooks, no gradients left
    after = maskrcnn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert maskrcnn.roi_heads.has_mask() and maskrcnn.roi_heads.uncertainty_head is not None
    assert all(not m._forward_hooks for m in maskrcnn.modules())
    assert all(p.grad is None for p in maskrcnn.parameters())
    assert not any(m.training for m in maskrcnn.modules())


def test_training_mode_is_restored(record):
    torch.manual_seed(0)
    model = build_unet("tu-convnextv2_atto", decoder_channels=(32, 16, 16, 8, 8)).train()
    compute_cam(model, record.image, "gradcam")
    assert all(m.training for m in model.modules())


def test_maskrcnn_cam_for_one_particle(maskrcnn, record):
    one = compute_cam(maskrcnn, record.image, "gradcam", particle=0)
    assert one.n_targets == 1 and one.target.startswith("detection 0")
    everything = compute_cam(maskrcnn, record.image, "gradcam", score_threshold=0.0, max_targets=5)
    assert everything.n_targets == 5
    assert not np.allclose(one.cam, everything.cam)
    with pytest.raises(IndexError, match="out of range"):
        compute_cam(maskrcnn, record.image, "gradcam", particle=10_000)


@pytest.mark.parametrize("method", ["ablationcam", "gradcam"])
def test_unet_cam(unet, record, method):
    before = _state(unet)
    res = compute_cam(unet, record.image, method, stage=4, postprocess=UNetPostprocess(min_area=1))
    assert res.cam.shape == record.image.shape == res.labels.shape
    assert np.isfinite(res.cam).all() and res.cam.min() >= 0 and res.cam.max() <= 1 and res.cam.std() > 1e-3
    assert res.layer == "encoder.model.stages_3" and res.score > 0
    after = unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks for m in unet.modules())
    assert not any(m.training for m in unet.modules())  # still in eval mode (batch norm in the decoder)


def test_unet_target_is_the_predicted_foreground(unet, record):
    res = compute_cam(unet, record.image, "gradcam", stage=2)
    with torch.no_grad():
        from semkit.models.unet import unet_logits

        probs = unet_logits(unet, torch.from_numpy(record.image)[None, None]).sigmoid()[0, 0]
    fg = probs > 0.5
    assert res.n_targets == int(fg.sum()) > 0
    assert res.score == pytest.approx(float(probs[fg].sum()), rel=1e-4)
    assert res.layer == "encoder.model.stages_1"


def test_unet_without_foreground_explains_the_whole_image(record):
    torch.manual_seed(0)
    model = build_unet("tu-convnextv2_atto", decoder_channels=(32, 16, 16, 8, 8)).eval()
    with torch.no_grad():
        model.segmentation_head[0].bias[0] = -50.0  # foreground probability ~0 everywhere
    res = compute_cam(model, record.image, "gradcam")
    assert "whole image" in res.target and res.n_targets == record.image.size
    assert res.labels.max() == 0


def test_energy_inside_by_hand():
    cam = np.array([[1.0, 0.0], [0.0, 3.0]])
    assert energy_inside(cam, np.array([[1, 0], [0, 0]])) == 0.25
    assert energy_inside(cam, np.ones((2, 2))) == 1.0
    assert math.isnan(energy_inside(np.zeros((2, 2)), np.ones((2, 2))))
    with pytest.raises(ValueError, match="shape"):
        energy_inside(cam, np.ones((3, 3)))


def test_summaries_and_tables(maskrcnn, unet, record):
    models = {"mrcnn": (maskrcnn, None), "unet": (unet, None)}
    cams = compute_cams(models, [record], method="gradcam", stage=3, progress=False)
    assert list(cams) == [record.name] and list(cams[record.name]) == ["mrcnn", "unet"]
    res = cams[record.name]["mrcnn"]
    summary = cam_summary(res, record.instances)
    gt = record.instances > 0
    assert summary["ground_truth_area"] == pytest.approx(gt.mean())
    assert summary["energy_in_ground_truth"] == pytest.approx(res.cam[gt].sum() / res.cam.sum())
    assert summary["cam_mean"] == pytest.approx(res.cam.mean())
    nested = cam_summaries(cams, [record])
    assert nested["unet"][record.name]["n_targets"] == cams[record.name]["unet"].n_targets
    table = cam_table(cams, [record])
    assert len(table) == 2 and set(table["method"]) == {"gradcam"}
    assert set(table["layer"]) == {"backbone.body.model.stages.2", "encoder.model.stages_2"}
    with pytest.raises(KeyError, match="choose one of"):
        compute_cams(models, [record], method="nope")
