"""The training recipe's rules by value: the schedule at given steps and times, RoI sampling sized to density,
the detection cap by image area, and augmentations that keep masks and boxes consistent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from semkit.data import SEMRecord
from semkit.models import build_maskrcnn
from semkit.models.maskrcnn import detection_cap
from semkit.train.data import DataConfig, make_augmentation
from semkit.train.recipe import BudgetLR, LRSchedule, particles_per_crop, rois_for_density


def test_cosine_schedule_values():
    s = LRSchedule(name="cosine", warmup_fraction=0.1, final_fraction=0.01)
    assert s.factor(0.0) == pytest.approx(0.01)
    assert s.factor(0.05) == pytest.approx(0.01 + 0.99 * 0.5)  # half way through the warmup
    assert s.factor(0.1) == pytest.approx(1.0)
    assert s.factor(0.55) == pytest.approx(0.01 + 0.99 * 0.5)  # half way through the decay: cos(pi/2) = 0
    assert s.factor(1.0) == pytest.approx(0.01)
    assert s.factor(2.0) == pytest.approx(0.01) and s.factor(-1) == pytest.approx(0.01)
    assert LRSchedule(name="constant").factor(0.7) == 1.0
    no_warmup = LRSchedule(warmup_fraction=0.0, final_fraction=0.0)
    assert no_warmup.factor(0.0) == 1.0 and no_warmup.factor(0.25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)


@pytest.mark.parametrize("bad", [{"name": "step"}, {"warmup_fraction": 1.0}, {"final_fraction": -0.1}])
def test_schedule_rejects_bad_settings(bad):
    with pytest.raises((KeyError, ValueError)):
        LRSchedule(**bad)


def _optimizer(lr=1e-3):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_budget_lr_follows_steps():
    opt = _optimizer(2e-3)
    sched = BudgetLR(opt, LRSchedule(warmup_fraction=0.1, final_fraction=0.0), total_steps=100)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(100):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == 0.0  # step 0: start of the warmup at final_fraction 0
    assert lrs[5] == pytest.approx(1e-3)  # half the 10-step warmup
    assert lrs[10] == pytest.approx(2e-3)  # peak
    assert lrs[55] == pytest.approx(1e-3)  # half of the cosine
    assert lrs[100] == pytest.approx(0.0)


def test_budget_lr_follows_the_clock_when_time_runs_out_first():
    now = [0.0]
    opt = _optimizer(1e-3)
    sched = BudgetLR(opt, LRSchedule(warmup_fraction=0.0, final_fraction=0.1), total_steps=1000,
                     total_seconds=60.0, clock=lambda: now[0])
    now[0] = 30.0  # half the time, 1 % of the steps: progress 0.5
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    now[0] = 90.0
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    state = sched.state_dict()
    assert "clock" not in state and state["schedule"] == {"name": "cosine", "warmup_fraction": 0.0,
                                                            "final_fraction": 0.1}
    again = BudgetLR(_optimizer(1e-3), LRSchedule(), total_steps=5)
    again.load_state_dict(state)
    assert again.schedule == LRSchedule(warmup_fraction=0.0, final_fraction=0.1) and again.total_seconds == 60.0
    with pytest.raises(ValueError, match="budget"):
        BudgetLR(_optimizer(), LRSchedule())


def _record(n_particles: int, shape=(200, 400)) -> SEMRecord:
    labels = np.zeros(shape, dtype=np.int32)
    for i in range(n_particles):  # 4 x 4 squares on a grid
        y, x = divmod(i, 40)
        labels[5 * y:5 * y + 4, 5 * x:5 * x + 4] = i + 1
    return SEMRecord(image=np.zeros(shape, dtype=np.float32), instances=labels)


def test_particles_per_crop_and_rois_for_density():
    records = [_record(80), _record(400)]  # 200 x 400 = 80,000 px
    per = particles_per_crop(records, 100)  # a 100 x 100 window is 1/8 of the image
    np.testing.assert_allclose(per, [10.0, 50.0])
    np.testing.assert_allclose(particles_per_crop(records, None), [80.0, 400.0])
    # quantile 1.0: 50 particles -> 2 x 50 / 0.25 = 400 RoIs (a multiple of 32 already: 416 after rounding up)
    assert rois_for_density(records, 100, quantile=1.0) == 416
    # quantile 0: 10 particles -> 80 -> 96
    assert rois_for_density(records, 100, quantile=0.0) == 96
    assert rois_for_density(records, 100, quantile=0.0, lowest=128) == 128
    assert rois_for_density(records, None, quantile=1.0) == 512  # clipped to the highest


def test_detection_cap_scales_with_area():
    assert detection_cap(704, 1024, 700.0, 100) == 505
    assert detection_cap(1200, 1920, 700.0, 100) == 1613
    assert detection_cap(256, 256, 700.0, 100) == 100
    assert detection_cap(704, 1024, None, 200) == 200


def test_model_applies_the_area_cap_per_image():
    torch.manual_seed(0)
    model = build_maskrcnn(backbone="convnextv2_atto", uncertainty=False, detections_per_img=3,
                           detections_per_megapixel=100.0, box_score_thresh=0.0, fpn_channels=32).eval()
    with torch.no_grad():
        small = model([torch.rand(1, 64, 64)])[0]  # 0.004 Mpx: the floor, 3
        large = model([torch.rand(1, 256, 256)])[0]  # 0.066 Mpx x 100 -> 7
    assert len(small["scores"]) == 3
    assert len(large["scores"]) == 7


def test_augmentation_keeps_masks_and_boxes_together():
    torch.manual_seed(0)
    cfg = DataConfig(gamma=0.5, noise_p=1.0, noise_std=0.1, blur_p=1.0, brightness=0.3, contrast=0.3)
    aug = make_augmentation(cfg)
    image = torch.rand(1, 40, 60)
    masks = torch.zeros(2, 40, 60, dtype=torch.uint8)
    masks[0, 2:10, 3:20] = 1
    masks[1, 25:38, 40:58] = 1
    boxes = torch.tensor([[3.0, 2.0, 20.0, 10.0], [40.0, 25.0, 58.0, 38.0]])  # pixel edges
    for _ in range(20):
        img, m, b = aug(tv_tensors.Image(image), tv_tensors.Mask(masks),
                        tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(40, 60)))
        assert img.min() >= 0.0 and img.max() <= 1.0
        assert m.sum() == masks.sum()  # flips and 90-degree rotations only permute pixels
        for k in range(2):  # every box is still the tight box of its mask
            ys, xs = torch.nonzero(m[k], as_tuple=True)
            expected = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            torch.testing.assert_close(b[k].as_subclass(torch.Tensor), expected)


def test_gamma_and_noise_change_only_the_image():
    torch.manual_seed(1)
    cfg = DataConfig(hflip=0, vflip=0, rotate90=False, brightness=0, contrast=0, blur_p=0, gamma=1.0)
    image = torch.full((1, 8, 8), 0.25)
    out = make_augmentation(cfg)(tv_tensors.Image(image))
    gamma = math.log(float(out[0, 0, 0])) / math.log(0.25)
    assert 0.5 - 1e-6 <= gamma <= 2.0 + 1e-6 and gamma != 1.0
    assert torch.allclose(out, out[0, 0, 0])  # one gamma for the whole image
    noisy = make_augmentation(DataConfig(hflip=0, vflip=0, rotate90=False, brightness=0, contrast=0, blur_p=0,
                                         noise_p=1.0, noise_std=0.2))(tv_tensors.Image(torch.full((1, 64, 64), 0.5)))
    assert 0.0 < float(noisy.std()) <= 0.2 + 0.02
    with pytest.raises(ValueError):
        DataConfig(noise_p=1.5)
