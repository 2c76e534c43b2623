"""Grid search of post-processing thresholds on the validation split, maximising AJI+.

The network runs once per validation image (:func:`predict_detections`); every combination of the grid then
only re-combines the stored detections (:func:`semkit.models.combine_detections`), which costs a fraction of a
forward pass. The score of a combination is the image-averaged AJI+ (:func:`semkit.metrics.aji_plus`), the
figure the studies report. Ties go to the combination that comes first in the grid's order (so the order of
the values in each axis expresses a preference).

The same :func:`grid_search` tunes the U-Net's watershed thresholds (:func:`search_unet_thresholds`) and the
classical pipeline's parameters (:func:`search_classical`), so all three approaches get the same
validation-set tuning in the comparison tables.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from semkit.errors import InputError
from semkit.metrics import aji_plus
from semkit.models.classical import segment_classical
from semkit.models.postprocess import CombineThresholds, combine_detections
from semkit.models.unet import instances_from_prediction

#: Default grid of :class:`CombineThresholds` (3 · 4 · 2 · 2 · 2 = 96 combinations).
DEFAULT_GRID: dict[str, tuple] = {
    "certain_score": (0.5, 0.3, 0.7),
    "uncertain_score": (0.5, 0.3, 0.7, 0.9),
    "overlap_iou": (0.3, 0.5),
    "separation_iou": (0.1, 0.3),
    "mask_threshold": (0.4, 0.5),
}
#: Small grid for quick runs (6 combinations).
QUICK_GRID: dict[str, tuple] = {"certain_score": (0.5, 0.3, 0.7), "uncertain_score": (0.5, 0.9)}
#: Fields that only matter when detections carry confidence bins (the uncertainty head).
UNCERTAINTY_FIELDS = ("uncertain_score", "separation_iou")
#: U-Net watershed thresholds (9 combinations).
UNET_GRID: dict[str, tuple] = {"foreground_threshold": (0.5, 0.3, 0.7), "seed_threshold": (0.5, 0.3, 0.7)}
#: Classical pipeline parameters (12 combinations).
CLASSICAL_GRID: dict[str, tuple] = {"sigma": (2.0, 1.0), "threshold": ("otsu", "local"), "min_distance": (7, 4, 11)}
GRIDS = {"default": DEFAULT_GRID, "quick": QUICK_GRID}


def grid_search(score: Callable[[dict], float], grid: Mapping[str, Sequence], progress: bool = False
                ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Evaluate ``score`` on every combination of ``grid`` and return the best.

    Args:
        score: maps one combination (``{name: value}``) to a number to maximise.
        grid: name → candidate values (tried in this order); an empty grid is one empty combination.
        progress: show a progress bar.

    Returns:
        ``(best combination, table)``: the table has one row per combination (grid order) with a ``score``
        column. Ties keep the first combination; NaN scores never win.

    Raises:
        InputError: an axis has no values.
    """
    for name, values in grid.items():
        if len(values) == 0:
            raise InputError(f"grid axis {name!r} has no values")
    names = list(grid)
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]
    rows = []
    best, best_score = combos[0], -np.inf
    for combo in tqdm(combos, desc="threshold search", disable=not progress, leave=False):
        s = float(score(combo))
        rows.append({**combo, "score": s})
        if s > best_score:  # strict: ties keep the earlier combination
            best, best_score = combo, s
    return dict(best), pd.DataFrame(rows)


@torch.no_grad()
def predict_detections(model: torch.nn.Module, images: Sequence, device: str | torch.device | None = None
                       ) -> list[dict[str, torch.Tensor]]:
    """Run a Mask R-CNN once per image (eval mode) and keep the raw detections on the CPU.

    Args:
        model: :func:`semkit.models.build_maskrcnn` model.
        images: (H, W) arrays or (1, H, W) tensors in [0, 1].
        device: where to run; default: the model's device.

    Returns:
        One output dict per image (``boxes``, ``scores``, ``mask_probs``, ``uncertainty_probs``...).
    """
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out = []
    for image in images:
        x = torch.as_tensor(np.asarray(image, dtype=np.float32)) if not isinstance(image, torch.Tensor) else image
        if x.dim() == 2:
            x = x[None]
        pred = model([x.to(device)])[0]
        out.append({k: v.detach().cpu() for k, v in pred.items()})
    model.train(was_training)
    return out


def _check_lengths(a: Sequence, b: Sequence, what: str) -> None:
    if len(a) != len(b):
        raise InputError(f"{len(a)} {what} for {len(b)} ground-truth label maps")
    if len(b) == 0:
        raise InputError("no validation images for the threshold search")


def search_thresholds(detections: Sequence[dict], ground_truth: Sequence[np.ndarray],
                      grid: Mapping[str, Sequence] | str | None = None, base: CombineThresholds | None = None,
                      progress: bool = False) -> tuple[CombineThresholds, pd.DataFrame]:
    """Pick :class:`CombineThresholds` maximising the image-averaged AJI+ over validation images.

    Args:
        detections: per image, the model output (from :func:`predict_detections`).
        ground_truth: per image, the (H, W) label map; its shape is the combination's image shape.
        grid: field → candidate values, or ``"default"`` / ``"quick"`` (:data:`DEFAULT_GRID`,
            :data:`QUICK_GRID`). When no detection carries confidence bins (model without the uncertainty head),
            the axes of :data:`UNCERTAINTY_FIELDS` are dropped: every detection is then certain and they cannot
            change the result.
        base: values of the fields the grid does not vary (default :class:`CombineThresholds`).
        progress: show a progress bar.

    Returns:
        ``(best thresholds, table of every combination with its score)``.

    Raises:
        InputError: mismatched lengths, no images, or an unknown field name.
    """
    _check_lengths(detections, ground_truth, "detection sets")
    grid = GRIDS[grid] if isinstance(grid, str) else (DEFAULT_GRID if grid is None else grid)
    known = {f.name for f in fields(CombineThresholds)}
    unknown = sorted(set(grid) - known)
    if unknown:
        raise InputError(f"unknown threshold names {unknown}; known: {', '.join(sorted(known))}")
    if not any("uncertainty_probs" in d for d in detections):
        grid = {k: v for k, v in grid.items() if k not in UNCERTAINTY_FIELDS}
    base_values = asdict(base or CombineThresholds())
    gts = [np.asarray(g) for g in ground_truth]

    def score(combo: dict) -> float:
        th = CombineThresholds(**{**base_values, **combo})
        return float(np.mean([aji_plus(g, combine_detections(d, g.shape, th)[0])
                              for d, g in zip(detections, gts, strict=True)]))

    best, table = grid_search(score, grid, progress)
    return CombineThresholds(**{**base_values, **best}), table


def search_unet_thresholds(logits: Sequence[torch.Tensor], ground_truth: Sequence[np.ndarray],
                           grid: Mapping[str, Sequence] | None = None, min_area: int = 10,
                           progress: bool = False) -> tuple[dict, pd.DataFrame]:
    """Pick the U-Net's ``foreground_threshold`` / ``seed_threshold`` maximising image-averaged AJI+.

    Args:
        logits: per image, the (2, H, W) network output.
        ground_truth: per image, the (H, W) label map.
        grid: defaults to :data:`UNET_GRID`.
        min_area: fixed ``min_area`` of :func:`semkit.models.instances_from_prediction`.

    Returns:
        ``(best keyword arguments for instances_from_prediction (incl. min_area), table)``.
    """
    _check_lengths(logits, ground_truth, "predictions")
    grid = UNET_GRID if grid is None else grid

    def score(combo: dict) -> float:
        return float(np.mean([aji_plus(g, instances_from_prediction(p, min_area=min_area, **combo))
                              for p, g in zip(logits, ground_truth, strict=True)]))

    best, table = grid_search(score, grid, progress)
    return {**best, "min_area": min_area}, table


def search_classical(images: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray],
                     grid: Mapping[str, Sequence] | None = None, progress: bool = False, **fixed
                     ) -> tuple[dict, pd.DataFrame]:
    """Pick :func:`semkit.models.segment_classical` parameters maximising image-averaged AJI+.

    Args:
        images: per image, the (H, W) image.
        ground_truth: per image, the (H, W) label map.
        grid: defaults to :data:`CLASSICAL_GRID`.
        **fixed: further fixed keyword arguments of ``segment_classical``.

    Returns:
        ``(best keyword arguments, table)``.
    """
    _check_lengths(images, ground_truth, "images")
    grid = CLASSICAL_GRID if grid is None else grid

    def score(combo: dict) -> float:
        return float(np.mean([aji_plus(g, segment_classical(im, **fixed, **combo))
                              for im, g in zip(images, ground_truth, strict=True)]))

    best, table = grid_search(score, grid, progress)
    return {**fixed, **best}, table
