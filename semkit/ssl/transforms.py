"""Two-view augmentations for contrastive pretraining on grayscale SEM crops.

SimCLR and MoCo v2 augment each image twice and ask the network to recognise the two views as the same image.
Their recipes were written for RGB photographs; for grayscale SEM the colour parts have nothing to act on, so
the recipe here keeps the geometric and intensity parts and drops saturation, hue and random-grayscale:

1. random resized crop to ``size`` (scale ``(min_scale, 1)``) -- SEM images have no preferred framing;
2. horizontal and vertical flips and 90-degree rotations -- a micrograph has no "up";
3. brightness / contrast jitter -- detector gain and contrast settings differ between sessions;
4. Gaussian blur -- focus and beam spot size vary;
5. normalisation with the grayscale ImageNet statistics that every semkit encoder sees downstream.

Everything works on ``(1, H, W)`` float tensors in ``[0, 1]`` (what :class:`semkit.ssl.data.UnlabeledDataModule`
yields), with torchvision transforms v2 composed by lightly's :class:`~lightly.transforms.MultiViewTransform`.

References: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR),
ICML 2020; Chen et al., "Improved Baselines with Momentum Contrastive Learning" (MoCo v2), arXiv:2003.04297.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.rotation import RandomRotate
from torchvision.transforms import v2 as T

from semkit.errors import InputError
from semkit.models.maskrcnn import GRAY_MEAN, GRAY_STD


@dataclass(frozen=True)
class ViewConfig:
    """Settings of one augmented view.

    Attributes:
        size: output edge in pixels (views are square).
        min_scale: smallest crop area, as a fraction of the input, of the random resized crop.
        hflip_prob, vflip_prob: probabilities of horizontal / vertical flips.
        rot90_prob: probability of a 90-degree rotation.
        jitter_prob: probability of brightness/contrast jitter.
        brightness, contrast: jitter strengths (factors drawn from ``[1 - s, 1 + s]``).
        blur_prob: probability of a Gaussian blur.
        blur_sigma: range of the blur's standard deviation in pixels.
        normalize: subtract the grayscale ImageNet mean and divide by its std (as the fine-tuning models do).
    """

    size: int = 224
    min_scale: float = 0.2
    hflip_prob: float = 0.5
    vflip_prob: float = 0.5
    rot90_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"view size must be >= 1, got {self.size}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"min_scale must lie in (0, 1], got {self.min_scale}")


#: Presets. ``simclr`` (SimCLR / MatSSL) crops more aggressively than ``mocov2`` / ``densecl``; DenseCL uses
#: MoCo v2's recipe unchanged (as lightly's DenseCLTransform does).
PRESETS: dict[str, dict] = {
    "simclr": dict(min_scale=0.08, jitter_prob=0.8, brightness=0.8, contrast=0.8, blur_prob=0.5),
    "mocov2": dict(min_scale=0.2, jitter_prob=0.8, brightness=0.4, contrast=0.4, blur_prob=0.5),
    "densecl": dict(min_scale=0.2, jitter_prob=0.8, brightness=0.4, contrast=0.4, blur_prob=0.5),
}


def view_augmentation(config: ViewConfig) -> T.Compose:
    """One random view: ``(1, H, W)`` float tensor → ``(1, size, size)`` float32 tensor.

    ``H`` and ``W`` may differ from ``size``; the random resized crop rescales.
    """
    # Kernel about 3 sigma wide on each side of the largest sigma, odd as torchvision requires, and no wider
    # than the view (reflection padding needs a border smaller than the image).
    kernel = min(2 * int(round(3 * config.blur_sigma[1])) + 1, config.size - 1 + config.size % 2)
    steps = [
        T.RandomResizedCrop(config.size, scale=(config.min_scale, 1.0), antialias=True),
        T.RandomHorizontalFlip(p=config.hflip_prob),
        T.RandomVerticalFlip(p=config.vflip_prob),
        RandomRotate(prob=config.rot90_prob, angle=90),
        T.RandomApply([T.ColorJitter(brightness=config.brightness, contrast=config.contrast)],
                      p=config.jitter_prob),
        T.RandomApply([T.GaussianBlur(kernel, sigma=config.blur_sigma)], p=config.blur_prob),
    ]
    if config.normalize:
        steps.append(T.Normalize(mean=list(GRAY_MEAN), std=list(GRAY_STD)))
    return T.Compose(steps)


class TwoViews:
    """Turn one grayscale crop into two independently augmented views.

    Args:
        config: settings shared by both views.

    Call with a ``(1, H, W)`` float tensor (values in ``[0, 1]``, ``H, W >= 1``); returns a list of two
    ``(1, size, size)`` float32 tensors. The default collate function batches a list of such pairs into a list
    of two ``(B, 1, size, size)`` tensors, the input the contrastive ``training_step`` s expect.

    Raises:
        InputError: the crop is not a 2-D image or a ``(1, H, W)`` tensor, is empty, or holds NaN/inf.
    """

    def __init__(self, config: ViewConfig):
        self.config = config
        augment = view_augmentation(config)
        self.multi_view = MultiViewTransform([augment, augment])

    def __call__(self, crop: torch.Tensor) -> list[torch.Tensor]:
        crop = torch.as_tensor(crop)
        if crop.dim() == 2:
            crop = crop.unsqueeze(0)
        if crop.dim() != 3 or crop.shape[0] != 1 or crop.shape[1] < 1 or crop.shape[2] < 1:
            raise InputError(f"a view transform needs a (1, H, W) grayscale crop, got shape {tuple(crop.shape)}")
        crop = crop.float()
        if not torch.isfinite(crop).all():
            raise InputError("the crop holds NaN or infinite values")
        return self.multi_view(crop)

    def __repr__(self) -> str:
        return f"TwoViews({self.config})"


def two_view_transform(size: int, preset: str = "simclr", **overrides) -> TwoViews:
    """The two-view transform of a preset, with optional overrides of :class:`ViewConfig` fields.

    Args:
        size: output edge of each view in pixels.
        preset: one of :data:`PRESETS`.
        **overrides: :class:`ViewConfig` fields to change (e.g. ``blur_prob=0``).

    Raises:
        KeyError: unknown preset (the message lists the valid ones).
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown view preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return TwoViews(ViewConfig(size=size, **{**PRESETS[preset], **overrides}))
