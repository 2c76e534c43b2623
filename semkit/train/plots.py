"""Figures of a fine-tuning run: training curves and prediction overlays (certain green, uncertain red).

Every function returns a matplotlib ``Figure`` (or an RGB array) and never calls ``plt.show()``. The confidence
histogram of certain vs uncertain particles is :func:`semkit.plotting.evaluation.plot_confidence_histograms`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from skimage.segmentation import find_boundaries

#: Colours of the overlays, as in the uncertainty-aware study's figures.
CERTAIN_RGB = (0, 200, 0)
UNCERTAIN_RGB = (230, 0, 0)


def overlay_rgb(image: np.ndarray, labels: np.ndarray, uncertain_ids: Sequence[int] = (), alpha: float = 0.3
                ) -> np.ndarray:
    """Grayscale image with particles tinted and outlined: certain green, uncertain red.

    Args:
        image: (H, W) float in [0, 1].
        labels: (H, W) int instance labels, 0 = background.
        uncertain_ids: labels drawn red; every other particle is green.
        alpha: tint strength inside particles (outlines are opaque).

    Returns:
        uint8 (H, W, 3).
    """
    gray = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    rgb = np.repeat(gray[..., None], 3, axis=2) * 255.0
    fg = labels > 0
    uncertain = np.isin(labels, np.asarray(list(uncertain_ids), dtype=labels.dtype)) & fg
    colour = np.zeros_like(rgb)
    colour[fg] = CERTAIN_RGB
    colour[uncertain] = UNCERTAIN_RGB
    rgb[fg] = (1 - alpha) * rgb[fg] + alpha * colour[fg]
    edges = find_boundaries(labels, mode="inner") & fg
    rgb[edges] = colour[edges]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def plot_training_curves(history: pd.DataFrame, metrics: Sequence[str] = ("train/loss_epoch", "val/aji_plus")):
    """Training loss and validation AJI+ per epoch (from :func:`semkit.train.read_history`).

    Missing columns are skipped; an empty history gives a figure saying so.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    present = [m for m in metrics if m in history.columns and history[m].notna().any()]
    fig, axes = plt.subplots(1, max(len(present), 1), figsize=(3.6 * max(len(present), 1), 2.8), squeeze=False)
    if not present:
        axes[0, 0].text(0.5, 0.5, "no logged values", ha="center", va="center")
        axes[0, 0].set_axis_off()
        return fig
    for ax, name in zip(axes[0], present, strict=True):
        series = history[name].dropna()
        ax.plot(series.index, series.to_numpy(), marker="o")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(name, fontsize="small")
    fig.tight_layout()
    return fig


def plot_overlays(images: Sequence[np.ndarray], predictions: Sequence[tuple[np.ndarray, pd.DataFrame]],
                  names: Sequence[str] | None = None, max_images: int = 4, panel_size: float = 3.5):
    """Prediction overlays (certain green, uncertain red) of up to ``max_images`` images side by side.

    Args:
        images: (H, W) images.
        predictions: per image, ``(labels, table)`` with the table's ``id`` and ``certain`` columns.
        names: panel titles.
    """
    import matplotlib.pyplot as plt

    n = min(len(images), max_images)
    fig, axes = plt.subplots(1, max(n, 1), figsize=(panel_size * max(n, 1), panel_size), squeeze=False)
    for i in range(n):
        labels, table = predictions[i]
        uncertain = table.loc[~table["certain"].astype(bool), "id"].to_numpy() if len(table) else []
        ax = axes[0, i]
        ax.imshow(overlay_rgb(images[i], labels, uncertain))
        n_unc = len(uncertain)
        title = f"{names[i]}: " if names is not None else ""
        ax.set_title(f"{title}{len(table) - n_unc} certain, {n_unc} uncertain", fontsize="small")
        ax.set_axis_off()
    if n == 0:
        axes[0, 0].set_axis_off()
    fig.tight_layout()
    return fig
