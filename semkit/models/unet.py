"""U-Net / U-Net++ baselines (segmentation-models-pytorch) that segment particles through a distance map.

The network predicts two channels per pixel (logits):

0. **foreground** -- particle vs background;
1. **normalised distance** -- inside each particle, the Euclidean distance to the particle's border divided by
   the particle's largest distance (1 at its centre, ~0 at its border, 0 outside).

Why a distance map rather than a boundary class: touching particles are separated by where the distance map
dips, which does not depend on a one-pixel-thin boundary being predicted exactly, and normalising per particle
makes small and large particles produce equally strong seeds. It is also the representation of the U-Net
baseline in the uncertainty-aware particle study (Rettenberger et al., npj Comput. Mater. 10, 124 (2024), whose
post-processing thresholds "cell" and "seed" levels of a distance map), itself after Scherr et al., "Cell
segmentation and tracking using CNN-based distance predictions", PLoS ONE 15, e0243219 (2020).

:func:`instances_from_prediction` turns the two channels into instances by a marker-controlled watershed:
seeds where the distance exceeds ``seed_threshold``, flooding ``-distance`` inside the foreground mask.

Encoders: ``"resnet50"`` (smp's own ResNet encoder, whose parameter names are timm's) or ``"tu-<timm name>"``
for the ConvNeXt V2 family. Weights always come from :func:`semkit.models.backbones.create_backbone` (random,
ImageNet, or a semkit encoder checkpoint), so the U-Net and Mask R-CNN start from identical encoder weights.

References: Ronneberger et al., "U-Net", MICCAI 2015; Zhou et al., "UNet++", DLMIA 2018.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries, watershed
from torch import nn

from semkit.config import JsonConfig
from semkit.errors import InputError
from semkit.models.backbones import (
    BACKBONES,
    create_backbone,
    drop_head,
    encoder_state_dict,
    to_feature_list_names,
)
from semkit.models.classical import remove_small_instances

#: Architectures by name.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"unet": smp.Unet, "unetplusplus": smp.UnetPlusPlus}
#: U-Net encoder name -> timm backbone that supplies its weights.
UNET_ENCODERS: dict[str, str] = {"resnet50": "resnet50"} | {
    f"tu-{name}": name for name in BACKBONES if name.startswith("convnextv2")
}
CHANNELS = ("foreground", "distance")
#: smp encoders need inputs whose sides are multiples of this (five stride-2 stages).
UNET_DIVISOR = 32


@dataclass
class UNetConfig(JsonConfig):
    """Settings of a U-Net baseline, saved as ``config.json`` in a model folder (:func:`semkit.models.save_model`).

    Attributes:
        encoder: one of :data:`UNET_ENCODERS`.
        arch: ``"unet"`` or ``"unetplusplus"``.
        init: encoder initialisation it was (or will be) built with: ``"random"``, ``"imagenet"`` or a semkit
            encoder checkpoint path.
        imagenet_file: local ImageNet weights for ``init="imagenet"``.
        in_channels: input channels (1 for grayscale SEM).
    """

    encoder: str = "tu-convnextv2_atto"
    arch: str = "unet"
    init: str = "random"
    imagenet_file: str | None = None
    in_channels: int = 1


@dataclass
class UNetPostprocess(JsonConfig):
    """Post-processing of :func:`instances_from_prediction`, saved as ``thresholds.json`` next to the weights."""

    foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    min_area: int = 10


def build_unet_model(config: UNetConfig | None = None, **overrides) -> nn.Module:
    """Build the U-Net described by ``config`` (fields in ``overrides`` replace the config's for building only).

    The returned model carries ``.semkit_config`` (the config as given, before overrides), which is what
    :func:`semkit.models.save_model` stores; smp models already use ``.config`` for their own hub settings.
    """
    config = config or UNetConfig()
    built = replace(config, **overrides)
    model = build_unet(built.encoder, built.arch, init=built.init, imagenet_file=built.imagenet_file,
                       in_channels=built.in_channels)
    model.semkit_config = config
    return model


def unet_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images of any size → (B, 2, H, W) logits: zero-padded to :data:`UNET_DIVISOR`, cropped back."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % UNET_DIVISOR, (-w) % UNET_DIVISOR
    x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
    return model(x)[..., :h, :w]


@torch.no_grad()
def predict_unet(model: nn.Module, images: Sequence[np.ndarray], postprocess: UNetPostprocess | None = None,
                 device: str | torch.device = "cpu") -> list[np.ndarray]:
    """Instance label maps for (H, W) float images in [0, 1] with a U-Net (eval mode, one image at a time).

    Args:
        model: from :func:`build_unet_model` or :func:`semkit.models.load_model`.
        images: grayscale images, any size.
        postprocess: thresholds (e.g. the ones saved with the model); ``None`` = defaults.
        device: where to run.
    """
    params = (postprocess or UNetPostprocess()).to_dict()
    model = model.eval().to(device)
    out = []
    for image in images:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
        out.append(instances_from_prediction(unet_logits(model, x)[0], **params))
    return out


def build_unet(
    encoder: str = "resnet50",
    arch: str = "unet",
    init: str | os.PathLike = "random",
    imagenet_file: str | os.PathLike | None = None,
    in_channels: int = 1,
    **smp_kwargs,
) -> nn.Module:
    """Build a U-Net (or U-Net++) predicting (foreground, normalised distance) logits.

    Args:
        encoder: one of :data:`UNET_ENCODERS` (``"resnet50"``, ``"tu-convnextv2_pico"``, ...).
        arch: ``"unet"`` or ``"unetplusplus"``.
        init: ``"random"``, ``"imagenet"`` or a semkit encoder checkpoint (plain timm state dict), loaded
            with ``strict=True``.
        imagenet_file: local ImageNet weights for ``init="imagenet"``.
        in_channels: input channels (1 for grayscale).
        **smp_kwargs: passed to the smp architecture (e.g. ``decoder_channels``).

    Returns:
        smp model: (B, in_channels, H, W) with H, W multiples of 32 → (B, 2, H, W) logits.

    Raises:
        KeyError: unknown encoder or architecture (the message lists the valid names).
    """
    if encoder not in UNET_ENCODERS:
        raise KeyError(f"unknown U-Net encoder {encoder!r}; choose one of: {', '.join(UNET_ENCODERS)}")
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    model = ARCHITECTURES[arch](encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                                classes=len(CHANNELS), **smp_kwargs)
    if str(init) != "random":
        backbone = create_backbone(UNET_ENCODERS[encoder], in_chans=in_channels, init=init,
                                   imagenet_file=imagenet_file)
        load_unet_encoder(model, encoder_state_dict(backbone))
    return model


def load_unet_encoder(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load a plain timm encoder state dict into an smp model's encoder with ``strict=True``."""
    if type(model.encoder).__name__ == "TimmUniversalEncoder":
        target = model.encoder.model  # timm FeatureListNet: "stem.0" is stored as "stem_0"
        state = to_feature_list_names(state, list(target.state_dict()))
    else:
        target = model.encoder  # smp ResNetEncoder: torchvision/timm ResNet names without the classifier
        state = drop_head(state, list(target.state_dict()))
    target.load_state_dict(state, strict=True)
    return model


def unet_targets(instances: np.ndarray) -> np.ndarray:
    """Training targets (2, H, W) float32 from an instance label map (H, W): foreground and normalised distance.

    The distance is measured to the nearest pixel not in the same particle (touching particles count as
    border), so each particle's distance peaks at its own centre; it is divided by the particle's maximum.
    """
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise InputError(f"instance map must be 2-D, got shape {instances.shape}")
    fg = instances > 0
    interior = fg & ~find_boundaries(instances, mode="inner")
    dist = ndi.distance_transform_edt(interior)
    # particles so thin that they are all boundary still get a positive distance (normalised to 1)
    dist = np.where(fg & (dist == 0), 0.5, dist)
    n = int(instances.max(initial=0))
    peak = np.asarray(ndi.maximum(dist, instances, index=np.arange(n + 1)), dtype=np.float64)
    peak[0] = 1.0
    norm = np.where(fg, dist / np.maximum(peak[instances], 1e-12), 0.0)
    return np.stack([fg, norm]).astype(np.float32)


def unet_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on both channels (the distance as a soft target in [0, 1]), averaged.

    Args:
        logits: (B, 2, H, W) network output.
        targets: (B, 2, H, W) from :func:`unet_targets`.
    """
    return F.binary_cross_entropy_with_logits(logits, targets)


def instances_from_prediction(
    prediction,
    foreground_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_area: int = 10,
    logits: bool = True,
) -> np.ndarray:
    """Instances from a (2, H, W) (foreground, distance) prediction by marker-controlled watershed.

    Args:
        prediction: (2, H, W) logits (``logits=True``, e.g. one image of the model output) or probabilities.
        foreground_threshold: foreground probability above which a pixel belongs to a particle.
        seed_threshold: normalised distance above which a pixel seeds a particle (its core).
        min_area: instances smaller than this many pixels are removed.
        logits: apply a sigmoid first.

    Returns:
        int32 (H, W) label map, 0 = background, particles 1..N. Foreground components without a seed (small
        particles whose distance never reaches the threshold) become instances of their own.
    """
    pred = prediction.detach().cpu().float() if isinstance(prediction, torch.Tensor) else torch.as_tensor(
        np.asarray(prediction, dtype=np.float32))
    if pred.dim() != 3 or pred.shape[0] != len(CHANNELS):
        raise InputError(f"prediction must be (2, H, W) (foreground, distance), got shape {tuple(pred.shape)}")
    if logits:
        pred = pred.sigmoid()
    fg_prob, dist = pred.numpy()
    fg = fg_prob > foreground_threshold
    markers, n = ndi.label(fg & (dist > seed_threshold))
    labels = watershed(-dist, markers, mask=fg)
    orphans, _ = ndi.label(fg & (labels == 0))
    labels = np.where(orphans > 0, orphans + n, labels)
    return remove_small_instances(labels, min_area)
