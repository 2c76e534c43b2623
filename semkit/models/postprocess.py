"""Combine Mask R-CNN detections into one non-overlapping instance label map (uncertainty-aware).

The study's post-processing (Rettenberger et al., "Uncertainty-aware particle segmentation for electron
microscopy at varied length scales", npj Comput. Mater. 10, 124 (2024)), in this order:

1. split detections into *certain* and *uncertain* by their confidence bins: certain when the most probable bin
   is in the upper half (argmax ≥ k/2); ``split="confidence"`` uses γ > 0.5 instead;
2. drop certain detections with objectness below θ_ω and uncertain ones below θ_ψ;
3. binarise each mask at θ_Σ;
4. within each group, in order of decreasing objectness, drop a mask whose IoU with an already kept mask exceeds
   θ_Ω (mask NMS; done per group, as in the study's released inference code, so an uncertain detection never
   suppresses a certain one);
5. drop uncertain masks whose IoU with any kept certain mask exceeds θ_sp;
6. paint the kept masks into one label map, certain ones first, each group by decreasing objectness; a pixel
   belongs to the first mask that claims it, and masks left with fewer than ``min_area`` visible pixels are
   dropped.

Masks can be torchvision's per-box crops (N, 1, 28, 28) together with their boxes -- they are resized into
their box exactly as ``torchvision.models.detection.roi_heads.paste_masks_in_image`` does, but only inside the
box, so memory stays proportional to the total box area instead of N full-resolution float masks (500 masks of
1200 × 1920 float32 would take 4.6 GB). Full-resolution masks (N, H, W) are accepted too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

from semkit.errors import InputError

TABLE_COLUMNS = ["id", "detection", "objectness", "confidence", "certain", "area_px"]


@dataclass
class CombineThresholds:
    """Thresholds of :func:`combine_masks` (to be grid-searched on validation data for AJI+).

    Defaults for the three overlap/activation thresholds come from the study's released high-magnification
    inference script (overlap 0.3, activation 0.4, certain/uncertain overlap 0.1).

    Attributes:
        certain_score: θ_ω, minimum objectness of a certain detection.
        uncertain_score: θ_ψ, minimum objectness of an uncertain detection.
        overlap_iou: θ_Ω, mask IoU above which a lower-scored mask of the same group is removed.
        separation_iou: θ_sp, IoU with a certain mask above which an uncertain mask is removed.
        mask_threshold: θ_Σ, mask probability at which masks are binarised.
        min_area: masks with fewer visible pixels in the final label map are dropped.
    """

    certain_score: float = 0.5
    uncertain_score: float = 0.5
    overlap_iou: float = 0.3
    separation_iou: float = 0.1
    mask_threshold: float = 0.4
    min_area: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Mask:
    index: int
    y0: int
    x0: int
    mask: np.ndarray  # bool (h, w), the binarised mask inside its (trimmed) box
    area: int = 0

    def __post_init__(self) -> None:
        self.area = int(np.count_nonzero(self.mask))

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y0 + self.mask.shape[0], self.x0 + self.mask.shape[1]


def combine_masks(
    boxes,
    scores,
    masks,
    image_shape: tuple[int, int],
    bin_probs=None,
    thresholds: CombineThresholds | None = None,
    split: Literal["max_bin", "confidence"] = "max_bin",
    cropped: bool | None = None,
    **overrides,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Turn detections into a non-overlapping instance label map and a per-particle table.

    Args:
        boxes: (N, 4) xyxy boxes in pixels (tensor or array); needed for cropped masks.
        scores: (N,) objectness.
        masks: (N, 1, M, M) or (N, M, M) per-box mask probabilities (torchvision's crops, M = 28), or
            (N, H, W) / (N, 1, H, W) full-resolution probabilities with (H, W) = ``image_shape``.
        image_shape: (H, W) of the label map.
        bin_probs: (N, k) confidence-bin probabilities, or ``None`` (no uncertainty head: every detection is
            certain and its confidence is NaN).
        thresholds: :class:`CombineThresholds`; ``overrides`` replace single fields.
        split: ``"max_bin"`` (the study: argmax bin ≥ k/2) or ``"confidence"`` (γ > 0.5).
        cropped: whether ``masks`` are per-box crops; default: crops unless their size equals ``image_shape``
            (pass ``True`` for an image that is itself 28 × 28).

    Returns:
        ``(labels, table)``: int32 (H, W) label map, 0 = background, particles 1..P in painting order; and a
        DataFrame with one row per particle: ``id`` (label value), ``detection`` (index into the inputs),
        ``objectness``, ``confidence`` (γ, expected bin centre), ``certain`` (bool), ``area_px`` (pixels in
        the label map). No detections → all-zero map and an empty table with these columns.

    Raises:
        InputError: inconsistent lengths or shapes.
    """
    th = CombineThresholds(**{**(asdict(thresholds) if thresholds else {}), **overrides})
    height, width = int(image_shape[0]), int(image_shape[1])
    scores = _numpy(scores).astype(np.float64).reshape(-1)
    n = scores.shape[0]
    masks_t = torch.as_tensor(masks) if not isinstance(masks, torch.Tensor) else masks.detach().cpu()
    if masks_t.dtype in (torch.float16, torch.bfloat16):  # mixed precision: paste and threshold in float32
        masks_t = masks_t.float()
    if masks_t.dim() == 4:
        if masks_t.shape[1] != 1:
            raise InputError(f"masks must be (N, 1, M, M) or (N, M, M), got shape {tuple(masks_t.shape)}")
        masks_t = masks_t[:, 0]
    if masks_t.dim() != 3 or masks_t.shape[0] != n:
        raise InputError(f"expected {n} masks of shape (M, M) or (H, W), got shape {tuple(masks_t.shape)}")
    if cropped is None:
        cropped = tuple(masks_t.shape[1:]) != (height, width)
    boxes_np = None if boxes is None else _numpy(boxes).astype(np.float64).reshape(-1, 4)
    if cropped and (boxes_np is None or boxes_np.shape[0] != n):
        raise InputError(f"cropped masks need {n} boxes, got {None if boxes_np is None else boxes_np.shape[0]}")

    if bin_probs is None:
        certain = np.ones(n, dtype=bool)
        gamma = np.full(n, np.nan)
    else:
        probs = _numpy(bin_probs).astype(np.float64)
        if probs.ndim != 2 or probs.shape[0] != n:
            raise InputError(f"bin_probs must be ({n}, k), got shape {probs.shape}")
        k = probs.shape[1]
        gamma = probs @ ((np.arange(k) + 0.5) / k)
        certain = probs.argmax(axis=1) >= k / 2 if split == "max_bin" else gamma > 0.5

    passes = np.where(certain, scores >= th.certain_score, scores >= th.uncertain_score)
    order = np.argsort(-scores, kind="stable")
    kept: dict[bool, list[_Mask]] = {True: [], False: []}
    for i in order:
        if not passes[i]:
            continue
        if cropped:
            m = _pasted_mask(int(i), masks_t[i], boxes_np[i], height, width, th.mask_threshold)
        else:
            m = _full_res_mask(int(i), masks_t[i], th.mask_threshold)
        if m is None:
            continue
        group = kept[bool(certain[i])]
        if any(_iou(m, other) > th.overlap_iou for other in group):
            continue
        group.append(m)
    uncertain_kept = [m for m in kept[False] if not any(_iou(m, c) > th.separation_iou for c in kept[True])]

    labels = np.zeros((height, width), dtype=np.int32)
    rows = []
    for m in kept[True] + uncertain_kept:
        y0, x0, y1, x1 = m.bounds
        region = labels[y0:y1, x0:x1]
        visible = m.mask & (region == 0)
        area = int(visible.sum())
        if area < max(th.min_area, 1):
            continue
        pid = len(rows) + 1
        region[visible] = pid
        i = m.index
        rows.append((pid, i, scores[i], gamma[i], bool(certain[i]), area))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS).astype(
        {"id": "int32", "detection": "int64", "objectness": "float64", "confidence": "float64",
         "certain": "bool", "area_px": "int64"}
    )
    return labels, table


def combine_detections(
    detection: dict, image_shape: tuple[int, int], thresholds: CombineThresholds | None = None, **kwargs
) -> tuple[np.ndarray, pd.DataFrame]:
    """:func:`combine_masks` on one image's output dict of :func:`semkit.models.maskrcnn.build_maskrcnn`."""
    masks = detection["mask_probs"] if "mask_probs" in detection else detection["masks"]
    return combine_masks(detection["boxes"], detection["scores"], masks, image_shape,
                         bin_probs=detection.get("uncertainty_probs"), thresholds=thresholds, **kwargs)


def paste_mask_in_box(mask: torch.Tensor, box, height: int, width: int) -> tuple[np.ndarray, int, int]:
    """Resize one (M, M) per-box mask into its box, clipped to the image, without a full-size canvas.

    Follows ``torchvision.models.detection.roi_heads.paste_masks_in_image`` step by step (one pixel of zero
    padding around the mask, box enlarged by the same factor, bilinear resize to the integer box size), so
    placing the result at ``(y0, x0)`` in a zero image reproduces torchvision's pasted mask exactly.

    Returns:
        ``(local, y0, x0)``: float32 (h, w) probabilities covering rows y0..y0+h, columns x0..x0+w (h or w may
        be 0 for a box outside the image).
    """
    m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    m, scale = expand_masks(m, padding=1)
    b = expand_boxes(torch.as_tensor(np.asarray(box, dtype=np.float32))[None], scale).to(torch.int64)[0].tolist()
    w = max(int(b[2] - b[0] + 1), 1)
    h = max(int(b[3] - b[1] + 1), 1)
    resized = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    x0, x1 = max(b[0], 0), min(b[2] + 1, width)
    y0, y1 = max(b[1], 0), min(b[3] + 1, height)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), dtype=np.float32), max(y0, 0), max(x0, 0)
    local = resized[y0 - b[1] : y1 - b[1], x0 - b[0] : x1 - b[0]]
    return local.numpy(), y0, x0


def _pasted_mask(index, mask, box, height, width, threshold) -> _Mask | None:
    local, y0, x0 = paste_mask_in_box(mask, box, height, width)
    return _trimmed(index, local > threshold, y0, x0)


def _full_res_mask(index, mask, threshold) -> _Mask | None:
    return _trimmed(index, mask.numpy() > threshold, 0, 0)


def _trimmed(index, binary: np.ndarray, y0: int, x0: int) -> _Mask | None:
    # keep only the bounding box of the foreground so IoUs and painting touch as few pixels as possible
    rows = np.flatnonzero(binary.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(binary.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return _Mask(index, y0 + int(r0), x0 + int(c0), np.ascontiguousarray(binary[r0:r1, c0:c1]))


def _iou(a: _Mask, b: _Mask) -> float:
    ay0, ax0, ay1, ax1 = a.bounds
    by0, bx0, by1, bx1 = b.bounds
    y0, x0, y1, x1 = max(ay0, by0), max(ax0, bx0), min(ay1, by1), min(ax1, bx1)
    if y1 <= y0 or x1 <= x0:
        return 0.0
    inter = int(np.count_nonzero(a.mask[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
                                 & b.mask[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]))
    return inter / (a.area + b.area - inter)


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):  # mixed-precision outputs; numpy has no bfloat16
            x = x.float()
        return x.numpy()
    return np.asarray(x)
