"""Figures for STEM acquisition boxing: pipeline steps, box overlays, timing and box-count histograms,
projected acquisition times and the Algorithm 1 vs 2 comparison."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def _boxes_collection(xys: np.ndarray, clusters: np.ndarray, cmap: str = "tab10", linewidth: float = 0.6):
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    colors = [_cluster_color(int(c), cmap) for c in clusters]
    rects = [Rectangle((x, y), s, s) for x, y, s in xys]
    return PatchCollection(rects, facecolor="none", edgecolor=colors, linewidth=linewidth)


def _cluster_color(cluster: int, cmap: str = "tab10"):
    import matplotlib

    return matplotlib.colormaps[cmap](cluster % 10)


def plot_boxes(result, image: np.ndarray, ax=None, title: str | None = None):
    """Overlay a result's boxes (coloured by cluster) on the parent image.

    Args:
        result: :class:`~semkit.stem.pipeline.BoxResult`.
        image: the parent image (N, N).
        ax: axes to draw into (a new figure when ``None``).
        title: axes title (default: source and box count).

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(image, cmap="gray", interpolation="nearest")
    if result.n_boxes:
        # Box b covers pixels [y, y + size); pixel centres sit on integers, so edges are at -0.5.
        xys = result.parent_boxes() - np.array([0.5, 0.5, 0.0])
        ax.add_collection(_boxes_collection(xys, result.boxes[:, 3]))
    ax.set_title(title if title is not None else f"{result.n_boxes} boxes" + (
        f" ({result.reason})" if result.reason else ""), fontsize=9)
    ax.set_axis_off()
    return ax


def boxes_png(result, image: np.ndarray, size_in: float = 5.0, dpi: int = 100) -> bytes:
    """The :func:`plot_boxes` overlay rendered to PNG bytes (for the ipywidgets review gallery)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(size_in, size_in))
    plot_boxes(result, image, ax=ax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_pipeline_steps(result, image: np.ndarray):
    """The step-by-step figure: original, resized, sharpened, blurred, threshold + box, crop, diagonal profile
    with the cutoff, hull, clusters and boxes.

    Args:
        result: :class:`~semkit.stem.pipeline.BoxResult` of ``image``.
        image: the parent image.

    Returns:
        The matplotlib figure (2 × 5 panels; panels after a failed step stay empty with the reason as title).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    seg = result.segmentation
    fig, axes = plt.subplots(2, 5, figsize=(17, 7))
    axes = axes.ravel()
    for ax in axes:
        ax.set_axis_off()

    def show(ax, img, title, **kw):
        ax.imshow(img, cmap=kw.pop("cmap", "gray"), interpolation="nearest", **kw)
        ax.set_title(title, fontsize=9)

    show(axes[0], image, f"1. original {image.shape[0]}×{image.shape[1]}")
    show(axes[1], seg.resized, f"resized {seg.resized.shape[0]}² (stretched 0–255)")
    if seg.sharpened is not None:
        show(axes[2], seg.sharpened, "2. unsharp mask")
        show(axes[3], seg.blurred, "Gaussian blur")
    if seg.threshold_mask is not None:
        show(axes[4], seg.threshold_mask, "adaptive threshold + box")
        if seg.bbox is not None:
            r0, c0, r1, c1 = seg.bbox
            axes[4].add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, color="red", lw=1.5))
    if seg.crop is not None:
        show(axes[5], seg.crop, f"crop {seg.crop.shape[0]}×{seg.crop.shape[1]}")
        h, w = seg.crop.shape
        axes[5].plot([0, w - 1], [0, h - 1], color="orange", lw=1)
    if seg.profile is not None:
        ax = axes[6]
        ax.set_axis_on()
        ax.plot(seg.profile, color="orange", label="diagonal profile")
        if np.isfinite(seg.cutoff):
            ax.axhline(seg.cutoff, color="red", ls="--", label=f"cutoff {seg.cutoff:.0f}")
        for e in seg.edges:
            if e >= 0:
                ax.axvline(e, color="gray", ls=":", lw=1)
        ax.set_xlabel("position along diagonal")
        ax.set_ylabel("intensity (0–255)")
        ax.legend(fontsize=7)
        ax.set_title("3. background cutoff", fontsize=9)
    if seg.brightened is not None:
        show(axes[7], seg.brightened, "4. hull, brightened, sharpened, blurred")
    if seg.labels is not None:
        show(axes[8], seg.labels, f"5–6. k = {seg.k} ({len(seg.peaks)} peaks, n = {seg.n_elements})",
             cmap="tab10", vmin=0, vmax=9)
        ax = axes[9]
        ax.imshow(seg.crop, cmap="gray", interpolation="nearest")
        if result.n_boxes:
            xys = result.boxes[:, [1, 0, 2]].astype(float) - np.array([0.5, 0.5, 0.0])
            ax.add_collection(_boxes_collection(xys, result.boxes[:, 3], linewidth=0.8))
        ax.set_title(f"7. {result.n_boxes} boxes (Algorithm {result.algorithm}, cap {result.cap})", fontsize=9)
    if result.reason:
        fig.suptitle(f"stopped: {result.reason}", color="red")
    fig.tight_layout()
    return fig


def plot_median_times(timings, ax=None, bins: int = 20):
    """Histogram of per-image median processing times (ms) from :func:`semkit.stem.timing.time_boxing`."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    ms = 1e3 * timings["median_s"].to_numpy()
    ax.hist(ms, bins=bins, color="tab:blue", edgecolor="white")
    ax.axvline(np.median(ms), color="black", ls="--", label=f"median {np.median(ms):.2f} ms")
    ax.set_xlabel("median time per image (ms)")
    ax.set_ylabel("images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return ax


def plot_box_counts(timings, ax=None, bins: int = 20, grid_points: int = 16384):
    """Histogram of box counts per image, with the mean point reduction versus the full grid in the legend."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    n = timings["n_boxes"].to_numpy()
    n = n[n > 0]
    ax.hist(n, bins=bins, color="tab:green", edgecolor="white")
    if n.size:
        ax.axvline(n.mean(), color="black", ls="--",
                   label=f"mean {n.mean():.0f} boxes (×{np.mean(grid_points / n):.0f} fewer points)")
        ax.legend(fontsize=8)
    ax.set_xlabel("boxes per image")
    ax.set_ylabel("images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return ax


def plot_projected_times(dataset, ax=None):
    """Bars of full-grid versus projected dataset acquisition time per baseline (:func:`dataset_table`)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    base = dataset.index.to_numpy()
    x = np.arange(base.size)
    ax.bar(x - 0.2, dataset["full_grid_s"] / 60, 0.4, label="full 128² grid", color="tab:gray")
    ax.bar(x + 0.2, dataset["projected_s"] / 60, 0.4, label="adaptive boxes", color="tab:orange")
    for xi, red, t in zip(x, dataset["time_reduction"], dataset["projected_s"] / 60, strict=True):
        ax.text(xi + 0.2, t * 1.15, f"×{red:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{b:g} s" for b in base])
    ax.set_xlabel("full-grid time per image (baseline)")
    ax.set_ylabel("dataset acquisition time (min)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return ax


def plot_algorithm_comparison(comparison, axes: Sequence | None = None):
    """Algorithm 1 vs 2: box counts per image (scatter against the diagonal) and median times.

    Args:
        comparison: frame with columns ``n_boxes_1``, ``n_boxes_2``, ``median_s_1``, ``median_s_2``.
        axes: two axes (a new 1 × 2 figure when ``None``).
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 4))
    a, b = comparison["n_boxes_1"].to_numpy(), comparison["n_boxes_2"].to_numpy()
    ax = axes[0]
    ax.scatter(a, b, s=14)
    top = max(a.max(initial=1), b.max(initial=1))
    ax.plot([0, top], [0, top], color="gray", ls="--", lw=1)
    ax.set_xlabel("boxes, Algorithm 1 (largest first)")
    ax.set_ylabel("boxes, Algorithm 2 (raster)")
    ax = axes[1]
    ax.boxplot([1e3 * comparison["median_s_1"], 1e3 * comparison["median_s_2"]])
    ax.set_xticks([1, 2], ["Algorithm 1", "Algorithm 2"])
    ax.set_ylabel("median time per image (ms)")
    return axes


def plot_overlays(results, images: Sequence[np.ndarray], ncols: int = 5, max_images: int = 20):
    """A grid of box overlays (the first ``max_images`` results), titled with element count, k and box count."""
    import matplotlib.pyplot as plt

    n = min(len(results), max_images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, res, img in zip(axes.ravel(), results[:n], images[:n], strict=False):
        seg = res.segmentation
        plot_boxes(res, img, ax=ax, title=f"n={seg.n_elements}, k={seg.k}: {res.n_boxes} boxes"
                   + (f"\n{res.reason[:40]}" if res.reason else ""))
    fig.tight_layout()
    return fig
