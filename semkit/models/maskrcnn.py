"""Mask R-CNN for particles: torchvision's ``MaskRCNN`` on a timm backbone with an optional uncertainty head.

Built from library parts only: a :func:`semkit.models.backbones.create_backbone` encoder, torchvision's
``FeaturePyramidNetwork`` (+ max-pool level), ``AnchorGenerator``, ``MaskRCNN`` and a ``RoIHeads`` subclass
(:class:`ParticleRoIHeads`) that adds the per-particle confidence of :mod:`semkit.models.uncertainty`.

Defaults chosen for SEM powders (all in :class:`MaskRCNNConfig`):

* one foreground class, "particle" (``num_classes = 2`` with background);
* up to 500 detections per image (BAM images hold ~155 particles, dense powders several hundred), with
  2,000 RPN proposals kept after NMS at test time so 500 detections are reachable;
* anchors from 8 px to 512 px: two sizes per pyramid level, ``((8, 16), (24, 32), (48, 64), (96, 128),
  (256, 512))`` at strides 4, 8, 16, 32, 64, three aspect ratios each. torchvision's default starts at 32 px,
  which misses the small particles of low-magnification images; 8 px is about the smallest particle whose
  28 × 28 mask is still meaningful. Larger particles are matched by the 256/512 anchors of the pooled level;
* **no resizing**: torchvision's ``GeneralizedRCNNTransform`` rescales every image so its short side is 800 px
  (a 1200 × 1920 SEM image would be shrunk to 800 × 1280). :class:`NoResizeTransform` only normalises and pads
  to a multiple of 32, so boxes, masks and pixel sizes stay in the input's pixel grid, as in the seed studies;
* grayscale normalisation with timm's single-channel ImageNet statistics (mean 0.449, std 0.226, the averages of
  the RGB values), which matches the summed-RGB first convolution of ImageNet-initialised encoders;
* masks are returned as torchvision's 28 × 28 per-box probabilities (``"mask_probs"``) instead of one
  full-resolution float mask per detection (500 × 1200 × 1920 float32 = 4.6 GB);
  :func:`semkit.models.postprocess.combine_masks` pastes them straight into one label map.

Reference: He et al., "Mask R-CNN", ICCV 2017; Lin et al., "Feature Pyramid Networks for Object Detection",
CVPR 2017; the uncertainty head: Rettenberger et al., npj Comput. Mater. 10, 124 (2024).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from semkit.errors import InputError
from semkit.models.backbones import check_backbone_name, create_backbone
from semkit.models.uncertainty import (
    UncertaintyConfig,
    UncertaintyHead,
    bin_index,
    certainty_targets,
    confidence,
    uncertainty_loss,
)

CLASS_NAMES = ("background", "particle")
GRAY_MEAN = (float(sum(IMAGENET_DEFAULT_MEAN) / 3),)
GRAY_STD = (float(sum(IMAGENET_DEFAULT_STD) / 3),)
DEFAULT_ANCHOR_SIZES = ((8, 16), (24, 32), (48, 64), (96, 128), (256, 512))


@dataclass
class MaskRCNNConfig:
    """Everything needed to rebuild a particle Mask R-CNN (saved as JSON next to checkpoints).

    Attributes:
        backbone: encoder name, one of :data:`semkit.models.backbones.BACKBONES`.
        init: ``"random"``, ``"imagenet"`` or a semkit encoder checkpoint path.
        imagenet_file: local ImageNet weights for ``init="imagenet"`` (offline machines).
        uncertainty: add the k-bin confidence head.
        num_bins, label_noise_std, distance_scale, bin_weights, detach_uncertainty_features,
        uncertainty_loss_weight: see :class:`semkit.models.uncertainty.UncertaintyConfig`.
        detections_per_img: maximum detections returned per image.
        anchor_sizes: anchor side lengths in px per pyramid level (same count per level).
        aspect_ratios: anchor height/width ratios, shared by all levels.
        fpn_channels: feature-pyramid width (torchvision's 256).
        image_mean, image_std: grayscale normalisation (images come in [0, 1]).
        size_divisible: images are zero-padded (never resized) to a multiple of this.
        rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train, rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test:
            RPN proposal counts (raised from torchvision's 1000 to reach 500 detections).
        box_score_thresh: minimum objectness of a returned detection (final thresholds come later, in
            :func:`semkit.models.postprocess.combine_masks`).
        box_nms_thresh: box NMS IoU within the detector.
        box_batch_size_per_image: sampled RoIs per image in training.
        paste_masks: return torchvision's full-resolution ``"masks"`` (N, 1, H, W) instead of ``"mask_probs"``
            crops -- only for small images.
    """

    backbone: str = "convnextv2_pico"
    init: str = "random"
    imagenet_file: str | None = None
    uncertainty: bool = True
    num_bins: int = 6
    label_noise_std: float = 0.1
    distance_scale: float = 1.0
    bin_weights: tuple[float, ...] | None = None
    detach_uncertainty_features: bool = True
    uncertainty_loss_weight: float = 1.0
    detections_per_img: int = 500
    anchor_sizes: tuple[tuple[int, ...], ...] = DEFAULT_ANCHOR_SIZES
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    fpn_channels: int = 256
    image_mean: tuple[float, ...] = GRAY_MEAN
    image_std: tuple[float, ...] = GRAY_STD
    size_divisible: int = 32
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 3000
    rpn_post_nms_top_n_test: int = 2000
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    paste_masks: bool = False

    def __post_init__(self) -> None:
        check_backbone_name(self.backbone)
        self.init = str(self.init)
        self.anchor_sizes = tuple(tuple(int(s) for s in level) for level in self.anchor_sizes)
        if len({len(level) for level in self.anchor_sizes}) != 1:
            raise ValueError(f"every pyramid level needs the same number of anchor sizes, got {self.anchor_sizes}")
        if len(self.anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes needs 5 levels (4 backbone levels + pool), got {len(self.anchor_sizes)}")
        if self.detections_per_img < 1:
            raise ValueError("detections_per_img must be positive")

    def uncertainty_config(self) -> UncertaintyConfig | None:
        if not self.uncertainty:
            return None
        return UncertaintyConfig(
            num_bins=self.num_bins,
            label_noise_std=self.label_noise_std,
            distance_scale=self.distance_scale,
            bin_weights=self.bin_weights,
            detach_features=self.detach_uncertainty_features,
            loss_weight=self.uncertainty_loss_weight,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class TimmFPN(nn.Module):
    """timm multi-scale encoder + torchvision feature pyramid; returns ``{"0".."3", "pool"}`` maps.

    Attributes:
        out_channels: pyramid width, required by torchvision's detection heads.
    """

    def __init__(self, body: nn.Module, out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


class NoResizeTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` that normalises and pads but never rescales images.

    Output masks stay as per-box crops (``"mask_probs"``, (N, 1, 28, 28) probabilities) unless ``paste_masks``.
    """

    def __init__(self, image_mean, image_std, size_divisible: int = 32, paste_masks: bool = False):
        # min_size/max_size are unused because resize() is the identity; kept for torchvision's repr.
        super().__init__(min_size=0, max_size=0, image_mean=list(image_mean), image_std=list(image_std),
                         size_divisible=size_divisible)
        self.paste_masks = paste_masks

    def forward(self, images, targets=None):
        channels = len(self.image_mean)
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != channels:
                raise InputError(f"image {i}: expected a ({channels}, H, W) tensor, got shape {tuple(image.shape)}")
            if not image.is_floating_point():
                raise InputError(f"image {i}: expected float values in [0, 1], got {image.dtype}")
        return super().forward(images, targets)

    def resize(self, image, target=None):
        return image, target

    def postprocess(self, result, image_shapes, original_image_sizes):
        if self.training:
            return result
        for pred, shape in zip(result, original_image_sizes, strict=True):
            if "masks" in pred:
                if self.paste_masks:
                    pred["masks"] = paste_masks_in_image(pred["masks"], pred["boxes"], shape)
                else:
                    pred["mask_probs"] = pred.pop("masks")
        return result


class ParticleRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` plus an optional per-particle confidence head.

    The detection computation is torchvision's, untouched (``super().forward``); the head only *reads* the RoI
    box representation, so boxes, scores and masks are identical with or without it for the same weights.

    * Training: the foreground RoIs that torchvision sampled (kept from :meth:`select_training_samples`) are
      pooled again, passed through the box head (detached by default) and the confidence head; targets are the
      ``"certain"`` flags of the matched ground-truth particles (``targets[i]["certain"]``, (G_i,) bool).
      Adds ``"loss_uncertainty"`` to the loss dict. The label noise is drawn from torch's global RNG after
      torchvision's RoI sampling, so a step's detection losses equal those of a model without the head, but
      later steps sample different RoIs unless the RNG is reseeded.
    * Inference: the final detection boxes are pooled (as torchvision does for masks) and each detection gets
      ``"uncertainty_probs"`` (N, k) and ``"confidence"`` (N,) = expected bin centre.

    Reference: Rettenberger et al., npj Comput. Mater. 10, 124 (2024).
    """

    def __init__(self, *args, uncertainty: UncertaintyConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.uncertainty = uncertainty
        self.uncertainty_head = (
            None if uncertainty is None else UncertaintyHead(uncertainty.in_features, uncertainty.num_bins)
        )
        self._sampled: tuple | None = None

    @classmethod
    def from_roi_heads(cls, heads: RoIHeads, uncertainty: UncertaintyConfig | None) -> ParticleRoIHeads:
        """Rebuild torchvision's ``RoIHeads`` (same modules and settings) as a :class:`ParticleRoIHeads`."""
        return cls(
            heads.box_roi_pool, heads.box_head, heads.box_predictor,
            heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights, heads.score_thresh, heads.nms_thresh, heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool, mask_head=heads.mask_head, mask_predictor=heads.mask_predictor,
            uncertainty=uncertainty,
        )

    def select_training_samples(self, proposals, targets):
        out = super().select_training_samples(proposals, targets)
        # remember which RoIs were sampled and which particle each matches, for the uncertainty targets
        self._sampled = out
        return out

    def uncertainty_logits(self, features, boxes: list[torch.Tensor], image_shapes) -> torch.Tensor:
        """Bin logits (sum_i R_i, k) for the boxes of every image, from the shared RoI box representation."""
        detach = self.uncertainty.detach_features
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            x = self.box_head(self.box_roi_pool(features, boxes, image_shapes))
        return self.uncertainty_head(x)

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.uncertainty_head is not None and self.training:
            _check_certain(targets)
        result, losses = super().forward(features, proposals, image_shapes, targets)
        if self.uncertainty_head is None:
            return result, losses
        cfg = self.uncertainty
        if self.training:
            sampled_proposals, matched_idxs, labels, _ = self._sampled
            self._sampled = None
            boxes, certain = [], []
            for props, matched, lab, target in zip(sampled_proposals, matched_idxs, labels, targets, strict=True):
                pos = torch.where(lab > 0)[0]
                boxes.append(props[pos])
                certain.append(target["certain"].to(props.device)[matched[pos]])
            logits = self.uncertainty_logits(features, boxes, image_shapes)
            target_bins = bin_index(certainty_targets(torch.cat(certain), cfg.label_noise_std), cfg.num_bins)
            loss = uncertainty_loss(logits, target_bins, cfg.distance_scale, cfg.bin_weights)
            losses["loss_uncertainty"] = cfg.loss_weight * loss
        else:
            logits = self.uncertainty_logits(features, [r["boxes"] for r in result], image_shapes)
            probs = logits.softmax(dim=1).split([len(r["boxes"]) for r in result])
            for r, p in zip(result, probs, strict=True):
                r["uncertainty_probs"] = p
                r["confidence"] = confidence(p)
        return result, losses


def build_maskrcnn(config: MaskRCNNConfig | None = None, **overrides) -> MaskRCNN:
    """Build a particle Mask R-CNN.

    Args:
        config: settings; ``None`` = :class:`MaskRCNNConfig` defaults.
        **overrides: fields of :class:`MaskRCNNConfig` (e.g. ``backbone="convnextv2_atto", uncertainty=False``).

    Returns:
        torchvision ``MaskRCNN`` with ``.config`` (the :class:`MaskRCNNConfig`). Input: a list of (1, H, W)
        float tensors in [0, 1] (any H, W; not resized). Training targets per image: ``boxes`` (G, 4) float
        xyxy, ``labels`` (G,) int64 (all 1), ``masks`` (G, H, W) uint8 and, with the uncertainty head,
        ``certain`` (G,) bool. Eval output per image: ``boxes``, ``labels``, ``scores`` (N,), ``mask_probs``
        (N, 1, 28, 28) per-box mask probabilities and, with the head, ``uncertainty_probs`` (N, k) and
        ``confidence`` (N,).

    Raises:
        KeyError: unknown backbone (lists the valid names).
        WeightsUnavailableError: ``init="imagenet"`` offline without a local file.
        InputError: unreadable or mismatched encoder checkpoint.
    """
    cfg = MaskRCNNConfig(**{**(asdict(config) if config else {}), **overrides})
    body = create_backbone(cfg.backbone, in_chans=len(cfg.image_mean), init=cfg.init,
                           imagenet_file=cfg.imagenet_file)
    backbone = TimmFPN(body, cfg.fpn_channels)
    anchors = AnchorGenerator(sizes=cfg.anchor_sizes, aspect_ratios=(cfg.aspect_ratios,) * len(cfg.anchor_sizes))
    model = MaskRCNN(
        backbone,
        num_classes=len(CLASS_NAMES),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.detections_per_img,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
    )
    model.transform = NoResizeTransform(cfg.image_mean, cfg.image_std, cfg.size_divisible, cfg.paste_masks)
    model.roi_heads = ParticleRoIHeads.from_roi_heads(model.roi_heads, cfg.uncertainty_config())
    model.config = cfg
    return model


def _check_certain(targets) -> None:
    if targets is None:
        raise InputError("training needs targets")
    for i, t in enumerate(targets):
        if "certain" not in t:
            raise InputError(
                f"target {i} has no 'certain' flags; the uncertainty head needs one bool per particle "
                "(build the model with uncertainty=False for data without certainty labels)"
            )
        if t["certain"].shape[0] != t["boxes"].shape[0]:
            raise InputError(
                f"target {i}: {t['certain'].shape[0]} certainty flags for {t['boxes'].shape[0]} boxes"
            )
