"""Figures of a curation manifest: clear and challenging example images, histograms of the manifest columns.

:func:`select_examples` decides which images are shown (a pure function of the manifest, tested on its own);
:func:`plot_example_grid` only draws them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Numeric manifest columns shown by :func:`plot_manifest_histograms` (those present and not all missing).
HISTOGRAM_COLUMNS = (
    "focus_score",
    "contrast",
    "rms_contrast",
    "structure_fraction",
    "field_of_view_um",
    "pixel_size_nm",
    "width",
    "height",
)
#: Categorical columns shown as bar charts (missing values counted as "unknown").
CATEGORY_COLUMNS = ("magnification_bucket", "near_empty", "split", "ssl_split")
#: Longest edge of a displayed thumbnail; larger images are shown with a pixel stride (display only).
THUMBNAIL_PX = 512


def select_examples(manifest: pd.DataFrame, n: int = 4) -> dict[str, pd.DataFrame]:
    """Pick up to ``n`` rows per category for the example grid.

    Categories (empty ones are left out), in display order:

    * ``"sharpest"`` / ``"least sharp"``: highest / lowest ``focus_score`` among images that are *not*
      near-empty (on a near-empty frame the Laplacian measures noise, not focus);
    * ``"highest contrast"`` / ``"lowest contrast"``: by ``contrast``;
    * ``"near-empty"``: the first ``n`` near-empty images;
    * ``"duplicates"``: members of the first duplicate groups, group by group.

    Ties are broken by ``name`` so the choice does not depend on row order.

    Returns:
        dict category → rows of ``manifest`` (at most ``n`` each).
    """
    m = manifest.sort_values("name", kind="stable")
    out: dict[str, pd.DataFrame] = {}
    structured = m[~m["near_empty"].astype(bool)] if "near_empty" in m else m
    if len(structured):
        out["sharpest"] = structured.sort_values("focus_score", ascending=False, kind="stable").head(n)
        out["least sharp"] = structured.sort_values("focus_score", ascending=True, kind="stable").head(n)
    if len(m):
        out["highest contrast"] = m.sort_values("contrast", ascending=False, kind="stable").head(n)
        out["lowest contrast"] = m.sort_values("contrast", ascending=True, kind="stable").head(n)
    if "near_empty" in m and m["near_empty"].any():
        out["near-empty"] = m[m["near_empty"].astype(bool)].head(n)
    if "duplicate_group" in m and (m["duplicate_group"] >= 0).any():
        dup = m[m["duplicate_group"] >= 0].sort_values(["duplicate_group", "name"], kind="stable")
        out["duplicates"] = dup.head(n)
    return out


def _thumbnail(path: str, databar_rows: int) -> np.ndarray:
    from semkit.data.io import load_image

    image, _ = load_image(path)
    if databar_rows:
        image = image[: image.shape[0] - int(databar_rows)]
    step = max(1, int(np.ceil(max(image.shape) / THUMBNAIL_PX)))
    return image[::step, ::step]


def plot_example_grid(manifest: pd.DataFrame, n: int = 4, panel_size: float = 2.2):
    """Grid of example images: one row per category of :func:`select_examples`, ``n`` columns.

    Images are read from ``manifest["path"]`` and shown with the databar cropped as recorded, on a fixed
    [0, 1] grey scale (so low contrast looks low). Each panel is titled with the image name and the value the
    row is ranked by.

    Returns:
        matplotlib Figure (an empty one with a note when the manifest is empty).
    """
    import matplotlib.pyplot as plt

    groups = select_examples(manifest, n)
    if not groups:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, "no images in the manifest", ha="center", va="center")
        ax.axis("off")
        return fig
    value_of = {
        "sharpest": "focus_score",
        "least sharp": "focus_score",
        "highest contrast": "contrast",
        "lowest contrast": "contrast",
        "near-empty": "structure_fraction",
        "duplicates": "duplicate_group",
    }
    fig, axes = plt.subplots(
        len(groups), n, figsize=(panel_size * n, panel_size * len(groups) + 0.3), squeeze=False
    )
    for r, (label, rows) in enumerate(groups.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c >= len(rows):
                continue
            rec = rows.iloc[c]
            ax.imshow(_thumbnail(rec["path"], rec.get("databar_rows", 0)), cmap="gray", vmin=0, vmax=1)
            col = value_of[label]
            value = rec[col]
            text = f"group {int(value)}" if col == "duplicate_group" else f"{col.split('_')[0]} {value:.3g}"
            ax.set_title(f"{str(rec['name'])[:22]}\n{text}", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.suptitle("Clear and challenging images", fontsize=11)
    fig.tight_layout()
    return fig


def plot_manifest_histograms(
    manifest: pd.DataFrame,
    columns: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    bins: int = 20,
):
    """Histograms of numeric manifest columns and bar charts of categorical ones.

    Args:
        manifest: curation manifest.
        columns: numeric columns (default :data:`HISTOGRAM_COLUMNS`); absent ones are skipped and all-missing
            ones (e.g. the pixel size of an uncalibrated set) get a panel saying so.
        categories: categorical columns (default :data:`CATEGORY_COLUMNS`); missing values show as "unknown".
        bins: histogram bins.

    Returns:
        matplotlib Figure with one panel per column, four per row.
    """
    import matplotlib.pyplot as plt

    columns = [c for c in (HISTOGRAM_COLUMNS if columns is None else columns) if c in manifest]
    categories = [c for c in (CATEGORY_COLUMNS if categories is None else categories) if c in manifest]
    names = columns + categories
    ncol = 4
    nrow = max(1, int(np.ceil(len(names) / ncol)))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.5 * nrow), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        if name in columns:
            values = pd.to_numeric(manifest[name], errors="coerce").dropna()
            if values.empty:
                ax.text(
                    0.5,
                    0.5,
                    "no values\n(unknown for every image)",
                    ha="center",
                    va="center",
                    fontsize=8,
                    transform=ax.transAxes,
                )
            else:
                ax.hist(values, bins=bins, color="0.35")
            ax.set_ylabel("images")
        else:
            counts = manifest[name].astype(object).where(manifest[name].notna(), "unknown").astype(str)
            counts = counts.value_counts().sort_index()
            ax.bar(counts.index, counts.to_numpy(), color="0.35")
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"Manifest of {len(manifest)} images", fontsize=11)
    fig.tight_layout()
    return fig
