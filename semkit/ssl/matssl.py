"""MatSSL: SimCLR on gated multi-stage features, for small unlabeled micrograph sets.

A ResNet-50 (any :func:`semkit.models.create_backbone` pyramid works) returns its four stage outputs; the
:class:`~semkit.ssl.fusion.GatedFeatureFusion` pools, squashes and gates each and concatenates them; a SimCLR
projection MLP maps the result to the embedding, trained with NT-Xent (τ = 0.07) on two SimCLR-augmented views
of each patch (in-batch negatives, no queue). Optimiser: SGD (lr 0.1, momentum 0.9, weight decay 1e-6) with a
cosine decay to 1e-4. The study pretrains on 256 × 256 patches cut with overlap (:func:`overlapping_patches`,
:func:`~semkit.ssl.data.patch_pool`, used by :func:`~semkit.ssl.pretrain.pretrain` with ``patch_overlap=0.5``;
without it the pool draws random 256 × 256 crops, i.e. overlapping patches at random rather than grid positions) and starts from ImageNet weights, keeping what was learned on natural images; without network access and
without cached weights :func:`initial_backbone` falls back to random weights with a logged warning (or raises,
if asked to).

Downstream, the pretrained encoder goes into a U-Net++ (:mod:`semkit.ssl.matssl_downstream`).

Reference: Nguyen, Phan, Lee, "MatSSL: Robust Self-Supervised Representation Learning for Metallographic
Image Segmentation", ICCV Workshops 2025, arXiv:2507.18184; Chen et al., SimCLR, ICML 2020.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import numpy as np
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from semkit.data.curation import tile_image
from semkit.errors import InputError
from semkit.models.backbones import WeightsUnavailableError, create_backbone
from semkit.ssl.data import PoolImage, patch_pool, patch_stride  # noqa: F401  (patch_pool re-exported: MatSSL's pool)
from semkit.ssl.fusion import GatedFeatureFusion
from semkit.ssl.mocov2 import ContrastiveModule, OptimSettings, config_dict, cosine_final_lr, setting
from semkit.ssl.transforms import two_view_transform

log = logging.getLogger(__name__)

#: NT-Xent temperature of the study.
TEMPERATURE = 0.07
#: Patch edge and overlap (fraction of the edge shared by neighbouring patches) of the pretraining pool.
PATCH = 256
OVERLAP = 0.5
#: Learning rate at the end of the cosine schedule.
FINAL_LR = 1e-4


def initial_backbone(name: str = "resnet50", init: str | os.PathLike = "imagenet",
                     fallback_to_random: bool = True) -> nn.Module:
    """The starting encoder: ``create_backbone(name, init=init)`` with an offline fallback.

    Args:
        name: backbone name.
        init: ``"imagenet"`` (the study's choice), ``"random"`` or a semkit encoder checkpoint.
        fallback_to_random: when ImageNet weights cannot be obtained (offline and not cached,
            :class:`~semkit.models.WeightsUnavailableError`), log a warning and start from random weights
            instead of raising.

    Raises:
        WeightsUnavailableError: ImageNet weights unavailable and ``fallback_to_random`` is false.
    """
    try:
        return create_backbone(name, init=init)
    except WeightsUnavailableError as err:
        if not fallback_to_random:
            raise
        log.warning("MatSSL starts from random weights: %s", err)
        return create_backbone(name, init="random")


class MatSSL(nn.Module):
    """MatSSL network: multi-stage encoder → gated fusion → projection MLP → NT-Xent (Nguyen et al. 2025).

    Args:
        backbone: an encoder built by :func:`semkit.models.create_backbone` (all its stages are fused), or a
            backbone name (built with random weights).
        hidden_dim, out_dim: widths of the SimCLR projection MLP.
        temperature: NT-Xent τ (0.07).
        init_gate: initial value of the fusion gates.

    Shapes: views ``(B, 1, H, W)`` with ``B >= 2`` (in-batch negatives, batch-normalised head) →
    fused ``(B, sum C_i)`` → embedding ``(B, out_dim)``.
    """

    def __init__(self, backbone: nn.Module | str = "resnet50", hidden_dim: int = 2048, out_dim: int = 128,
                 temperature: float = TEMPERATURE, init_gate: float = 1.0):
        super().__init__()
        self.backbone = create_backbone(backbone) if isinstance(backbone, str) else backbone
        self.fusion = GatedFeatureFusion(self.backbone.feature_info.channels(), init_gate=init_gate)
        self.head = SimCLRProjectionHead(self.fusion.out_dim, hidden_dim, out_dim)
        # gather_distributed: under DDP every device's views serve as negatives, as in one big batch.
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """Gated multi-stage representation ``(B, sum C_i)``."""
        return self.fusion(self.backbone(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projection ``(B, out_dim)`` on which the loss is computed."""
        return self.head(self.fused(x))

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> dict[str, torch.Tensor]:
        """NT-Xent of two view batches; ``{"loss": scalar}``."""
        if self.training and x0.shape[0] < 2:
            raise ValueError("MatSSL needs at least 2 images per batch (the other images are the negatives)")
        return {"loss": self.criterion(self.embed(x0), self.embed(x1))}


def overlapping_patches(images: Iterable[np.ndarray], patch: int = PATCH, overlap: float = OVERLAP,
                        names: Iterable[str] | None = None) -> np.ndarray:
    """Cut 2-D images into square patches whose neighbours share ``overlap`` of their edge.

    Uses :func:`semkit.data.curation.tile_image` with ``stride = round(patch · (1 - overlap))``; the last row
    and column of patches are shifted to end at the image border, so every pixel is covered.

    Args:
        images: (H, W) arrays, each at least ``patch`` pixels on both sides.
        patch: patch edge in pixels (256 in the study).
        overlap: fraction in ``[0, 1)`` (0.5 → stride 128 for 256-pixel patches).
        names: optional image names for error messages.

    Returns:
        (N, patch, patch) array of the images' dtype (float32 if the images differ in dtype).

    Raises:
        InputError: an image smaller than ``patch`` (naming it), or no images at all.
        InputError (a ValueError): ``overlap`` outside ``[0, 1)``.
    """
    stride = patch_stride(patch, overlap)
    names = list(names) if names is not None else None
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        name = names[i] if names is not None else f"image {i}"
        if image.ndim != 2:
            raise InputError(f"{name}: expected a 2-D grayscale image, got shape {image.shape}")
        if min(image.shape) < patch:
            raise InputError(f"{name}: image {image.shape} is smaller than the {patch}-pixel patch")
        tiles, _, _ = tile_image(image, tile=patch, stride=stride)
        out.append(tiles)
    if not out:
        raise InputError("no images to cut into patches")
    return np.concatenate(out, axis=0)


def build_module(config) -> ContrastiveModule:
    """MatSSL LightningModule for a pretraining configuration.

    Reads ``backbone`` (the study: ``"resnet50"``), ``lr`` (default 0.1, used as given -- the study does not
    scale it with the batch), ``weight_decay`` (1e-6), ``warmup_epochs`` (0) and the optional fields ``init``
    (``"imagenet"``), ``init_fallback`` (``True``: random weights with a warning when ImageNet weights cannot be
    had), ``temperature`` (0.07), ``min_lr`` (cosine floor as a fraction of the peak; 0 = the study's 1e-4),
    ``proj_hidden_dim`` (2048), ``proj_dim`` (128).
    """
    backbone = initial_backbone(setting(config, "backbone", "resnet50"), init=setting(config, "init", "imagenet"),
                                fallback_to_random=setting(config, "init_fallback", True))
    network = MatSSL(backbone, hidden_dim=setting(config, "proj_hidden_dim", 2048),
                     out_dim=setting(config, "proj_dim", 128), temperature=setting(config, "temperature", TEMPERATURE))
    lr = setting(config, "lr", 0.1)
    optim = OptimSettings(lr=lr, weight_decay=setting(config, "weight_decay", 1e-6), momentum=0.9,
                          schedule="cosine", warmup_epochs=setting(config, "warmup_epochs", 0),
                          final_lr=cosine_final_lr(config, lr, default=min(FINAL_LR, lr)))
    return ContrastiveModule(network, optim, hparams=config_dict(config))


def view_transform(config):
    """SimCLR augmentation of one ``(1, H, W)`` patch into two ``(1, crop_size, crop_size)`` views."""
    return two_view_transform(setting(config, "crop_size", PATCH), preset="simclr")
