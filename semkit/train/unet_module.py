"""Lightning module for the U-Net baseline (foreground + normalised distance map → watershed instances).

Training minimises :func:`semkit.models.unet.unet_loss` (binary cross-entropy on both channels) on random
windows; validation predicts whole images (zero-padded to a multiple of 32, the smp encoders' requirement, and
cropped back), turns the prediction into instances with :func:`semkit.models.instances_from_prediction` and
logs the image-averaged AJI+ as ``val/aji_plus`` -- the same monitor as the Mask R-CNN module.

Reference: Ronneberger et al., "U-Net", MICCAI 2015; distance-map post-processing after Scherr et al.,
PLoS ONE 15, e0243219 (2020).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch

from semkit.metrics import aji_plus
from semkit.models.backbones import BACKBONES
from semkit.models.unet import (
    UNET_ENCODERS,
    UNetConfig,
    UNetPostprocess,
    build_unet_model,
    instances_from_prediction,
    unet_logits,
    unet_loss,
)
from semkit.train.recipe import configure_optimizers


def unet_encoder_for(backbone: str) -> str:
    """U-Net encoder name for a backbone name: ``"convnextv2_atto"`` → ``"tu-convnextv2_atto"``.

    Names already in :data:`semkit.models.UNET_ENCODERS` pass through.

    Raises:
        KeyError: no U-Net encoder for ``backbone`` (lists the valid names).
    """
    if backbone in UNET_ENCODERS:
        return backbone
    if backbone in BACKBONES and f"tu-{backbone}" in UNET_ENCODERS:
        return f"tu-{backbone}"
    raise KeyError(f"no U-Net encoder for backbone {backbone!r}; choose one of: {', '.join(UNET_ENCODERS)}")


class UNetModule(L.LightningModule):
    """Trains :func:`semkit.models.build_unet`; validates with AJI+ of the watershed instances.

    Args:
        encoder: U-Net encoder or backbone name (see :func:`unet_encoder_for`).
        arch: ``"unet"`` or ``"unetplusplus"``.
        init: encoder initialisation (``"random"``, ``"imagenet"``, semkit checkpoint path).
        imagenet_file: local ImageNet weights for ``init="imagenet"``.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        foreground_threshold, seed_threshold, min_area: post-processing of
            :func:`semkit.models.instances_from_prediction` used for validation.
        load_encoder: apply ``init`` (stored as ``False`` in checkpoints, whose weights are complete).
        schedule, max_steps, budget_seconds: the learning-rate schedule over the training budget
            (:func:`semkit.train.recipe.configure_optimizers`); ``schedule=None`` keeps the rate constant.
    """

    def __init__(self, encoder: str = "tu-convnextv2_atto", arch: str = "unet", init: str = "random",
                 imagenet_file: str | None = None, lr: float = 1e-3, weight_decay: float = 1e-4,
                 foreground_threshold: float = 0.5, seed_threshold: float = 0.5, min_area: int = 10,
                 load_encoder: bool = True, schedule: dict | None = None, max_steps: int | None = None,
                 budget_seconds: float | None = None):
        super().__init__()
        encoder = unet_encoder_for(encoder)
        self.save_hyperparameters({"encoder": encoder, "arch": arch, "init": str(init), "imagenet_file": None,
                                   "lr": lr, "weight_decay": weight_decay, "schedule": schedule,
                                   "max_steps": max_steps, "budget_seconds": budget_seconds,
                                   "foreground_threshold": foreground_threshold, "seed_threshold": seed_threshold,
                                   "min_area": min_area, "load_encoder": False})
        config = UNetConfig(encoder=encoder, arch=arch, init=str(init),
                            imagenet_file=None if imagenet_file is None else str(imagenet_file))
        # checkpoints hold every weight: rebuilding from one must not reload (or download) the encoder init
        self.model = build_unet_model(config, **({} if load_encoder else {"init": "random", "imagenet_file": None}))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] (any H, W) → (B, 2, H, W) logits (foreground, distance)."""
        return unet_logits(self.model, images)

    def postprocess_params(self) -> dict:
        return UNetPostprocess(**{k: self.hparams[k] for k in ("foreground_threshold", "seed_threshold",
                                                               "min_area")}).to_dict()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        x = torch.stack(list(images))
        y = torch.stack([t["unet"] for t in targets]).to(x.device)
        loss = unet_loss(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images),
                 sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        for image, target in zip(images, targets, strict=True):
            logits = self(image[None])[0]
            self.log("val/loss", unet_loss(logits[None], target["unet"][None].to(logits.device)),
                     on_epoch=True, batch_size=1, sync_dist=True)
            labels = instances_from_prediction(logits, **self.postprocess_params())
            self.log("val/aji_plus", aji_plus(target["instances"].cpu().numpy(), labels), on_epoch=True,
                     prog_bar=True, batch_size=1, sync_dist=True)

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.lr, self.hparams.weight_decay, self.hparams.schedule,
                                    self.hparams.max_steps, self.hparams.budget_seconds)

    @torch.no_grad()
    def predict_logits(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits (2, H, W) on the CPU for each (1, H, W) image, in eval mode."""
        self.eval()
        return [self(im[None].to(self.device))[0].cpu() for im in images]
