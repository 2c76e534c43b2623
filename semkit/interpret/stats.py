"""Feature-collapse statistics of a layer's channel maps: dead and saturated channels, feature diversity.

Looking at 16 maps is not measuring, so every feature-map figure comes with numbers over *all* channels of the
layer. For a capture ``X`` of shape (C, H, W) or (B, C, H, W) (channel maps over the pixels of one or several
images), with the layer scale ``s = sqrt(mean(X²))`` (root mean square over every channel, image and pixel):

* **near-constant** channel: its standard deviation over images and pixels is at most ``constant_tol · s``
  (default 1 % of the layer's scale). The threshold is relative, so the statistics do not change when the
  whole layer is scaled (GRN outputs of different checkpoints differ in scale by orders of magnitude); an
  all-zero layer (``s = 0``) has every channel near-constant.
* **saturated** channel: near-constant *and* sitting in the top of the layer's range: its mean exceeds, by
  more than ``constant_tol · s``, the ``saturation_quantile`` quantile (default 0.9) of the values of the
  layer's *varying* (not near-constant) channels -- of all its values when every channel is near-constant.
  Drawn on the layer's shared colour scale it is bright everywhere. The flat channels are left out of the
  reference because a collapsed layer with many bright flat channels would otherwise move the quantile onto
  their own level and hide them.
* **dead** channel: near-constant and not saturated -- flat at an ordinary or low level (all-zero maps are
  the typical case). ``dead + saturated = near-constant``: the "dead or saturated" feature maps of ConvNeXt
  V1 that GRN removes (Woo et al., 2023, Fig. 3).
* **mean pairwise cosine similarity**: the average of ``cos(X_i, X_j)`` over all pairs ``i != j`` of
  channels, each map flattened over images and pixels (raw activations, as in ConvNeXt V2's feature cosine
  distance analysis; ``center=True`` subtracts each channel's mean first). 1 = every channel carries the same
  map (collapse), 0 = orthogonal maps (diverse features). All-zero channels have no direction and are left
  out; with fewer than two left the value is NaN. ConvNeXt V2's "cosine distance" is
  ``(1 - m) (C - 1) / (2 C)`` for this mean ``m`` over ``C`` channels.

Reference: Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", CVPR 2023.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

#: Columns of :func:`feature_stats_table`.
STATS_COLUMNS = ["checkpoint", "image", "stage", "n_channels", "dead_fraction", "saturated_fraction",
                 "near_constant_fraction", "mean_cosine"]


def channel_matrix(features) -> np.ndarray:
    """(C, N) float64 view of (C, H, W) or (B, C, H, W) features: one row per channel over images and pixels."""
    x = np.asarray(features.numpy() if hasattr(features, "numpy") else features, dtype=np.float64)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"features must be (C, H, W) or (B, C, H, W), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


def _peak_scaled(x: np.ndarray) -> np.ndarray:
    # every statistic here is scale-free; dividing by the peak first keeps tiny or huge layers (GRN outputs span
    # orders of magnitude) away from underflow and overflow in the squares
    peak = np.abs(x).max(initial=0.0)
    return x / peak if peak > 0 else x


def classify_channels(features, constant_tol: float = 0.01,
                      saturation_quantile: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(dead, saturated)`` masks of length C (see the module docstring for the definitions).

    Args:
        features: (C, H, W) or (B, C, H, W).
        constant_tol: a channel is near-constant when its standard deviation is at most this fraction of the
            layer's root-mean-square value.
        saturation_quantile: a near-constant channel whose mean exceeds this quantile of the varying channels'
            values (all values if none varies) is saturated, otherwise dead.
    """
    if constant_tol < 0 or not 0 <= saturation_quantile <= 1:
        raise ValueError(f"need constant_tol >= 0 and 0 <= saturation_quantile <= 1, got {constant_tol}, "
                         f"{saturation_quantile}")
    x = _peak_scaled(channel_matrix(features))
    scale = np.sqrt(np.mean(x * x))
    constant = x.std(axis=1) <= constant_tol * scale
    high = np.quantile(x[~constant] if (~constant).any() else x, saturation_quantile)
    # "above" by more than the flatness tolerance, so rounding in a constant layer's mean cannot tip the verdict
    saturated = constant & (x.mean(axis=1) > high + constant_tol * scale)
    return constant & ~saturated, saturated


def mean_pairwise_cosine(features, center: bool = False) -> float:
    """Mean cosine similarity over all pairs of distinct channel maps (see the module docstring).

    Args:
        features: (C, H, W) or (B, C, H, W).
        center: subtract each channel's mean first (a correlation rather than a raw-activation similarity).

    Returns:
        A value in [-1, 1]; NaN when fewer than two channels have a non-zero map.
    """
    x = _peak_scaled(channel_matrix(features))
    if center:
        x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1)
    # a map of exactly zero (or far below float precision relative to the others) has no direction
    keep = norms > 1e-12 * max(float(norms.max(initial=0.0)), 1e-300)
    x, norms = x[keep], norms[keep]
    c = len(x)
    if c < 2:
        return float("nan")
    unit = x / norms[:, None]
    # sum over all pairs from the Gram matrix's total: ||sum_i u_i||^2 = C + sum_{i != j} cos_ij, no C x C matrix
    total = unit.sum(axis=0)
    off_diagonal = float(total @ total) - c
    return float(np.clip(off_diagonal / (c * (c - 1)), -1.0, 1.0))


def channel_stats(features, constant_tol: float = 0.01, saturation_quantile: float = 0.9,
                  center: bool = False) -> dict[str, float]:
    """All statistics of one layer: ``n_channels``, ``dead_fraction``, ``saturated_fraction``,
    ``near_constant_fraction`` and ``mean_cosine`` (arguments as in :func:`classify_channels` and
    :func:`mean_pairwise_cosine`)."""
    dead, saturated = classify_channels(features, constant_tol, saturation_quantile)
    n = len(dead)
    return {"n_channels": n, "dead_fraction": float(dead.mean()), "saturated_fraction": float(saturated.mean()),
            "near_constant_fraction": float((dead | saturated).mean()),
            "mean_cosine": mean_pairwise_cosine(features, center)}


def feature_stats_table(captures: Mapping[str, Mapping[str, Mapping[int, np.ndarray]]], **kwargs) -> pd.DataFrame:
    """One row per (checkpoint, image, stage) with :func:`channel_stats` (columns :data:`STATS_COLUMNS`).

    Args:
        captures: ``{checkpoint: {image: {stage: (C, h, w) or (1, C, h, w) array}}}``, e.g. from
            :func:`semkit.interpret.capture_all`.
        **kwargs: thresholds passed to :func:`channel_stats`.
    """
    rows = [{"checkpoint": ckpt, "image": image, "stage": int(stage), **channel_stats(feat, **kwargs)}
            for ckpt, by_image in captures.items() for image, by_stage in by_image.items()
            for stage, feat in by_stage.items()]
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


def summarise_stats(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of :func:`feature_stats_table` over images: one row per (checkpoint, stage)."""
    value_cols = [c for c in STATS_COLUMNS if c not in ("checkpoint", "image", "stage")]
    return (table.groupby(["checkpoint", "stage"], sort=False)[value_cols].mean()
            .reset_index().astype({"n_channels": int}))


def stats_by_checkpoint(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`summarise_stats` as nested dicts for ``metrics.json``: ``{checkpoint: {"eta<s>": {column: value}}}``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in summarise_stats(table).to_dict("records"):
        values = {k: v for k, v in row.items() if k not in ("checkpoint", "stage")}
        out.setdefault(row["checkpoint"], {})[f"eta{int(row['stage'])}"] = values
    return out
