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

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
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
        detections_per_img: maximum detections returned per image; with ``detections_per_megapixel`` the
            smallest cap, for small images.
        detections_per_megapixel: when set, the cap grows with the image's area (:func:`detection_cap`): a
            fixed cap below an image's particle count limits recall by a setting.
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
        box_batch_size_per_image: sampled RoIs per image in training (a quarter of them at most positive;
            every positive also goes through the mask head, the most expensive part of a CPU training step).
        mask_head_channels, mask_head_depth: width and number of the 3 × 3 convolutions of the mask head
            (torchvision's ``MaskRCNNHeads``; its default 4 × 256). The particles of SEM powders are small
            (10-40 px in BAM TiO2), so a narrower head loses little and costs a quarter per positive RoI.
        paste_masks: return torchvision's full-resolution ``"masks"`` (N, 1, H, W) instead of ``"mask_probs"``
            crops -- only for small images.
        channels_last: run the encoder and the feature pyramid in the channels-last memory layout (oneDNN's
            preferred layout on CPUs; measure with ``semkit bench train``).
    """

    backbone: str = "convnextv2_pico"
    init: str = "random"
    imagenet_file: str | None = None
    uncertainty: bool = True
    num_bins: int = 6
    label_noise_std: float = 0.1
    distance_scale: float = 1.0
    bin_weights: tuple[float, ...] | None = None
    detach_uncertainty_features: bool = False
    uncertainty_loss_weight: float = 1.0
    detections_per_img: int = 500
    detections_per_megapixel: float | None = None
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
    mask_head_channels: int = 256
    mask_head_depth: int = 4
    paste_masks: bool = False
    channels_last: bool = False

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
        if self.detections_per_megapixel is not None and self.detections_per_megapixel <= 0:
            raise ValueError("detections_per_megapixel must be positive or None")
        if self.mask_head_channels < 1 or self.mask_head_depth < 1:
            raise ValueError("mask_head_channels and mask_head_depth must be positive")

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

    def __init__(self, body: nn.Module, out_channels: int = 256, channels_last: bool = False):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
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
      pooled again, passed through the box head (detached only with ``detach_uncertainty_features``) and the
      confidence head; targets are the ``"certain"`` flags of the matched ground-truth particles
      (``targets[i]["certain"]``, (G_i,) bool).
      Adds ``"loss_uncertainty"`` to the loss dict. The label noise is drawn from torch's global RNG after
      torchvision's RoI sampling, so a step's detection losses equal those of a model without the head, but
      later steps sample different RoIs unless the RNG is reseeded.
    * Inference: the final detection boxes are pooled (as torchvision does for masks) and each detection gets
      ``"uncertainty_probs"`` (N, k) and ``"confidence"`` (N,) = expected bin centre.

    Reference: Rettenberger et al., npj Comput. Mater. 10, 124 (2024).
    """

    def __init__(self, *args, uncertainty: UncertaintyConfig | None = None,
                 detections_per_megapixel: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.detections_floor = self.detections_per_img
        self.detections_per_megapixel = detections_per_megapixel
        self.uncertainty = uncertainty
        self.uncertainty_head = (
            None if uncertainty is None else UncertaintyHead(uncertainty.in_features, uncertainty.num_bins)
        )
        self._sampled: tuple | None = None
        self.last_positives: float | None = None

    @classmethod
    def from_roi_heads(cls, heads: RoIHeads, uncertainty: UncertaintyConfig | None,
                       detections_per_megapixel: float | None = None) -> ParticleRoIHeads:
        """Rebuild torchvision's ``RoIHeads`` (same modules and settings) as a :class:`ParticleRoIHeads`."""
        return cls(
            heads.box_roi_pool, heads.box_head, heads.box_predictor,
            heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights, heads.score_thresh, heads.nms_thresh, heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool, mask_head=heads.mask_head, mask_predictor=heads.mask_predictor,
            uncertainty=uncertainty, detections_per_megapixel=detections_per_megapixel,
        )

    def select_training_samples(self, proposals, targets):
        out = super().select_training_samples(proposals, targets)
        # remember which RoIs were sampled and which particle each matches, for the uncertainty targets
        self._sampled = out
        labels = out[2]
        # positives per image feed the mask head: its cost (semkit bench train) grows with them
        self.last_positives = float(sum(int((lab > 0).sum()) for lab in labels)) / max(len(labels), 1)
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
        if not self.training and image_shapes:
            h, w = max(s[0] for s in image_shapes), max(s[1] for s in image_shapes)
            self.detections_per_img = detection_cap(h, w, self.detections_per_megapixel, self.detections_floor)
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
    backbone = TimmFPN(body, cfg.fpn_channels, cfg.channels_last)
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
    if (cfg.mask_head_channels, cfg.mask_head_depth) != (256, 4):
        # torchvision builds its 4 x 256 head; replaced only when it differs, so that models with the default
        # head draw their random weights exactly as before
        model.roi_heads.mask_head = MaskRCNNHeads(cfg.fpn_channels, (cfg.mask_head_channels,) * cfg.mask_head_depth, 1)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels,
                                                           len(CLASS_NAMES))
    model.transform = NoResizeTransform(cfg.image_mean, cfg.image_std, cfg.size_divisible, cfg.paste_masks)
    model.roi_heads = ParticleRoIHeads.from_roi_heads(model.roi_heads, cfg.uncertainty_config(),
                                                      cfg.detections_per_megapixel)
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


def detection_cap(height: int, width: int, per_megapixel: float | None, floor: int) -> int:
    """Detections to keep for an image: ``max(floor, ceil(H × W / 10⁶ × per_megapixel))`` (``floor`` alone when
    ``per_megapixel`` is ``None``). E.g. 700 per megapixel: 505 for 1024 × 704, 1613 for 1920 × 1200."""
    if per_megapixel is None:
        return int(floor)
    return int(max(floor, math.ceil(height * width / 1e6 * per_megapixel)))


@torch.no_grad()
def confidence_of_boxes(model: MaskRCNN, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The confidence head's γ for given boxes of one image -- e.g. every ground-truth particle's box, as the
    uncertainty-aware study evaluates the head (independently of what the detector finds).

    Args:
        model: a particle Mask R-CNN with the uncertainty head (eval mode is set here).
        image: (1, H, W) float in [0, 1].
        boxes: (G, 4) XYXY boxes in the image's pixels.

    Returns:
        (G,) confidences in [0, 1] on the CPU.

    Raises:
        InputError: the model has no uncertainty head.
    """
    heads = model.roi_heads
    if getattr(heads, "uncertainty_head", None) is None:
        raise InputError("this model has no uncertainty head (it was built with uncertainty=False)")
    model.eval()
    device = next(model.parameters()).device
    images, _ = model.transform([image.to(device)])
    features = model.backbone(images.tensors)
    if len(boxes) == 0:
        return torch.zeros(0)
    logits = heads.uncertainty_logits(features, [boxes.to(device, torch.float32)], images.image_sizes)
    return confidence(logits.softmax(dim=1)).cpu()
