"""Figures of a fine-tuning run: training curves and prediction overlays (certain green, uncertain red).

Every function returns a matplotlib ``Figure`` and never calls ``plt.show()``. The overlay colours come from
:func:`semkit.inference.outputs.overlay_image` (the same as ``semkit predict`` writes); the confidence histogram
of certain vs uncertain particles is :func:`semkit.plotting.evaluation.plot_confidence_histograms`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from semkit.inference.outputs import overlay_image


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
        certain = table["certain"].astype(bool).to_numpy() if len(table) else np.zeros(0, bool)
        ax = axes[0, i]
        ax.imshow(overlay_image(images[i], labels, table["id"].to_numpy()[certain] if len(table) else []))
        n_unc = int((~certain).sum())
        title = f"{names[i]}: " if names is not None else ""
        ax.set_title(f"{title}{len(table) - n_unc} certain, {n_unc} uncertain", fontsize="small")
        ax.set_axis_off()
    if n == 0:
        axes[0, 0].set_axis_off()
    fig.tight_layout()
    return fig
