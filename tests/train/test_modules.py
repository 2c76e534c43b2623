"""Lightning modules: empty crops train, certainty flags are required by the uncertainty head only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semkit.data import SEMRecord
from semkit.errors import InputError
from semkit.train.data import DataConfig, InstanceDataset, collate
from semkit.train.finetune import QUICK_MASKRCNN
from semkit.train.maskrcnn_module import MaskRCNNModule
from semkit.train.unet_module import UNetModule, unet_encoder_for


@pytest.fixture(autouse=True)
def one_thread():
    # one thread is several times faster than two oversubscribed ones on a shared CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(with_particle: bool, certain: bool = True):
    labels = np.zeros((64, 64), dtype=np.int32)
    if with_particle:
        labels[20:40, 20:40] = 1
    rec = SEMRecord(image=np.where(labels > 0, 0.8, 0.1).astype(np.float32), instances=labels,
                    certain=np.array([True] * int(with_particle)) if certain else None, source="crop.tif")
    no_aug = DataConfig(crop_size=None, hflip=0, vflip=0, rotate90=False, brightness=0, contrast=0, blur_p=0)
    return collate([InstanceDataset([rec], no_aug, train=True)[0]])


def test_maskrcnn_trains_on_an_empty_crop():
    torch.manual_seed(0)
    module = MaskRCNNModule({"backbone": "convnextv2_atto", **QUICK_MASKRCNN})
    module.train()
    images, targets = _batch(with_particle=False)
    losses = module.model(images, module.model_targets(targets))
    assert all(torch.isfinite(v) for v in losses.values())
    # no foreground RoI: nothing to learn for the box regression, mask and confidence heads
    assert losses["loss_uncertainty"].item() == 0.0 and losses["loss_mask"].item() == 0.0
    assert losses["loss_box_reg"].item() == 0.0
    sum(losses.values()).backward()


def test_uncertainty_head_needs_flags_plain_model_does_not():
    images, targets = _batch(with_particle=True, certain=False)
    assert "certain" not in targets[0]
    with_head = MaskRCNNModule({"backbone": "convnextv2_atto", **QUICK_MASKRCNN})
    with pytest.raises(InputError, match="uncertainty head needs certain/uncertain flags"):
        with_head.model_targets(targets)
    plain = MaskRCNNModule({"backbone": "convnextv2_atto", "uncertainty": False, **QUICK_MASKRCNN})
    assert set(plain.model_targets(targets)[0]) == {"boxes", "labels", "masks"}
    plain.train()
    losses = plain.model(images, plain.model_targets(targets))
    assert "loss_uncertainty" not in losses and torch.isfinite(sum(losses.values()))


def test_checkpoint_hyperparameters_never_reload_the_encoder_source(tmp_path):
    module = MaskRCNNModule({"backbone": "convnextv2_atto", "init": str(tmp_path / "gone.pt"), **QUICK_MASKRCNN},
                            load_encoder=False)
    assert module.hparams["load_encoder"] is False
    assert module.hparams["model_config"]["init"] == str(tmp_path / "gone.pt")  # kept for the record
    assert module.config.init == str(tmp_path / "gone.pt")


def test_unet_encoder_names():
    assert unet_encoder_for("convnextv2_atto") == "tu-convnextv2_atto"
    assert unet_encoder_for("resnet50") == "resnet50"
    with pytest.raises(KeyError, match="tu-convnextv2_pico"):
        unet_encoder_for("vit_base")
    module = UNetModule("convnextv2_atto")
    images, targets = _batch(with_particle=True)
    module.train()
    loss = module.training_step((images, [{**t, "unet": torch.zeros(2, 64, 64)} for t in targets]), 0)
    assert torch.isfinite(loss)
