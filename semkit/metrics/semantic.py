"""Semantic-segmentation metrics: per-class IoU, mean IoU, Dice and pixel accuracy.

Statistics first, scores from statistics (as in segmentation-models-pytorch): :func:`confusion_matrix` counts
pixels per (true class, predicted class); :func:`semantic_scores` turns one confusion matrix into scores.
Two aggregations over a dataset are reported side by side and named so they cannot be confused:

* **dataset-level** (``*_dataset_level``): confusion matrices are summed over all images first, then scored —
  every pixel weighs the same, large images and frequent classes dominate;
* **image-averaged** (``*_image_averaged``): every image is scored on its own, then the scores are averaged
  over images — every image weighs the same.

A class absent from both the ground truth and the prediction of an image has an undefined IoU/Dice there (NaN)
and is left out of that image's means, not counted as 0 or 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from semkit.errors import InputError


def _check_class_map(arr, num_classes: int, ignore_index: int | None, name: str | None, role: str) -> np.ndarray:
    if arr is None:
        raise InputError(f"{role} is missing (None)", name)
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise InputError(f"{role} must be a class map (H, W), got shape {arr.shape}", name)
    if arr.size == 0:
        raise InputError(f"{role} is empty (shape {arr.shape})", name)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{role} contains NaN or infinite values", name)
        raise InputError(f"{role} must hold integer class indices, got {arr.dtype}", name)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise InputError(f"{role} must hold integer class indices, got {arr.dtype}", name)
    values = arr.astype(np.int64)
    valid = values != ignore_index if ignore_index is not None else np.ones(values.shape, bool)
    bad = valid & ((values < 0) | (values >= num_classes))
    if bad.any():
        raise InputError(f"{role} has class index {int(values[bad][0])} outside 0..{num_classes - 1}", name)
    return values


def confusion_matrix(gt, pred, num_classes: int, *, ignore_index: int | None = None,
                     name: str | None = None) -> np.ndarray:
    """Pixel counts per (ground-truth class, predicted class) of one image.

    Args:
        gt: int class map (H, W) with values in 0..num_classes-1 (or ``ignore_index``).
        pred: int class map (H, W), same shape.
        num_classes: number of classes C.
        ignore_index: ground-truth value whose pixels are not counted (e.g. 255 for "unlabelled").
        name: image name used in error messages.

    Returns:
        int64 (C, C), rows = ground truth, columns = prediction.

    Raises:
        InputError: naming ``name``, for shape mismatches, float/NaN values or class indices out of range.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    g = _check_class_map(gt, num_classes, ignore_index, name, "ground truth")
    p = _check_class_map(pred, num_classes, None, name, "prediction")
    if g.shape != p.shape:
        raise InputError(f"ground truth shape {g.shape} does not match prediction shape {p.shape}", name)
    keep = g != ignore_index if ignore_index is not None else slice(None)
    codes = g[keep].ravel() * num_classes + p[keep].ravel()
    return np.bincount(codes, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def semantic_scores(confusion: np.ndarray) -> dict[str, np.ndarray | float]:
    """Scores of one confusion matrix.

    Args:
        confusion: (C, C) pixel counts, rows = ground truth.

    Returns:
        ``iou`` (C,) = TP / (TP + FP + FN), ``dice`` (C,) = 2 TP / (2 TP + FP + FN) — NaN for a class absent from
        both sides —, ``miou`` and ``mdice`` (NaN-ignoring means over classes) and ``pixel_accuracy``
        = trace / total (NaN for an empty matrix).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    total = confusion.sum()
    defined = ~np.isnan(iou)
    return {"iou": iou, "dice": dice,
            "miou": float(np.nanmean(iou)) if defined.any() else float("nan"),
            "mdice": float(np.nanmean(dice)) if defined.any() else float("nan"),
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan")}


@dataclass(frozen=True)
class SemanticEvaluation:
    """Semantic metrics of a dataset under both aggregations.

    Attributes:
        per_class: one row per class: ``class``, ``iou_dataset_level``, ``iou_image_averaged``,
            ``dice_dataset_level``, ``dice_image_averaged``, ``gt_pixels``, ``pred_pixels``.
        per_image: one row per image: ``image``, ``pixel_accuracy``, ``miou``, ``mdice``, ``iou_<class>``.
        summary: ``miou_dataset_level``, ``miou_image_averaged``, ``mdice_dataset_level``,
            ``mdice_image_averaged``, ``pixel_accuracy_dataset_level``, ``pixel_accuracy_image_averaged``,
            ``n_images``.
        confusion: (C, C) summed confusion matrix.
    """

    per_class: pd.DataFrame
    per_image: pd.DataFrame
    summary: dict[str, float]
    confusion: np.ndarray


def semantic_metrics(gt: Sequence | Mapping, pred: Sequence | Mapping, num_classes: int, *,
                     class_names: Sequence[str] | None = None, ignore_index: int | None = None) -> SemanticEvaluation:
    """Per-class IoU/Dice, mIoU, mean Dice and pixel accuracy over several images, both aggregations.

    Args:
        gt: class maps, a list or a mapping image name → (H, W).
        pred: predictions in the same order / with the same names.
        num_classes: number of classes.
        class_names: names for the per-class table (default ``"0"``, ``"1"``, …).
        ignore_index: ground-truth value not counted.

    Returns:
        :class:`SemanticEvaluation`. ``miou_image_averaged`` is the mean over images of each image's mIoU;
        ``iou_image_averaged`` of a class is its mean IoU over the images where it is defined.

    Raises:
        InputError: for an empty dataset, mismatched image lists, or any bad image (named).
    """
    gt_items = list(gt.items()) if isinstance(gt, Mapping) else [(f"image_{i:04d}", g) for i, g in enumerate(gt)]
    if isinstance(pred, Mapping):
        missing = [n for n, _ in gt_items if n not in pred]
        if missing:
            raise InputError("no prediction for this ground-truth image", missing[0])
        pred_items = [pred[n] for n, _ in gt_items]
    else:
        pred_items = list(pred)
    if not gt_items:
        raise InputError("no images to evaluate")
    if len(pred_items) != len(gt_items):
        raise InputError(f"{len(gt_items)} ground-truth images but {len(pred_items)} predictions")
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    rows, ious, dices = [], [], []
    for (name, g), p in zip(gt_items, pred_items, strict=True):
        cm = confusion_matrix(g, p, num_classes, ignore_index=ignore_index, name=name)
        total += cm
        s = semantic_scores(cm)
        ious.append(s["iou"])
        dices.append(s["dice"])
        rows.append({"image": name, "pixel_accuracy": s["pixel_accuracy"], "miou": s["miou"],
                     "mdice": s["mdice"], **{f"iou_{c}": v for c, v in zip(names, s["iou"], strict=True)}})
    ious, dices = np.array(ious), np.array(dices)
    ds = semantic_scores(total)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": class never defined → NaN
        iou_img = np.nanmean(ious, axis=0)
        dice_img = np.nanmean(dices, axis=0)
    per_image = pd.DataFrame(rows)
    per_class = pd.DataFrame({"class": names, "iou_dataset_level": ds["iou"], "iou_image_averaged": iou_img,
                              "dice_dataset_level": ds["dice"], "dice_image_averaged": dice_img,
                              "gt_pixels": total.sum(axis=1), "pred_pixels": total.sum(axis=0)})
    summary = {"miou_dataset_level": ds["miou"], "miou_image_averaged": float(per_image["miou"].mean()),
               "mdice_dataset_level": ds["mdice"], "mdice_image_averaged": float(per_image["mdice"].mean()),
               "pixel_accuracy_dataset_level": ds["pixel_accuracy"],
               "pixel_accuracy_image_averaged": float(per_image["pixel_accuracy"].mean()),
               "n_images": len(gt_items)}
    return SemanticEvaluation(per_class, per_image, summary, total)

