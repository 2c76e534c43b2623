"""Particle size statistics and the comparison of size distributions.

Per particle (:func:`particle_sizes`): area, equivalent circular diameter (ECD), minimum and maximum Feret
diameter and aspect ratio, in pixels and — when the pixel size is known — in physical units. Lengths scale with
the pixel size, **areas with its square** (applying the length factor to areas, as one published tool does,
understates a 7.3 nm/px particle area by a factor of 7.3).

Definitions (ISO 9276-6):

* ECD = √(4 A / π), the diameter of the circle of equal area;
* Feret diameters are caliper widths of the particle's convex hull; the hull outline is the half-pixel
  contour that :attr:`skimage.measure.regionprops` uses for ``feret_diameter_max`` (so a single pixel has a
  maximum Feret diameter of 1 and a minimum of √2/2);
* aspect ratio = minimum Feret / maximum Feret, in (0, 1] (1 for a disk).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import find_contours, regionprops

from semkit.errors import InputError
from semkit.metrics.inputs import check_instances

Unit = Literal["nm", "um"]
_NM_PER_UNIT = {"nm": 1.0, "um": 1000.0}
SIZE_COLUMNS = ("area", "ecd", "feret_min", "feret_max")


def min_feret_diameter(convex_image: np.ndarray) -> float:
    """Minimum caliper width of a convex binary image, on the contour skimage uses for the maximum Feret.

    Rotating calipers: the minimum width of a convex polygon is attained with one caliper flush with an edge,
    so it is the minimum over hull edges of the largest distance of a hull vertex from that edge's line.

    Args:
        convex_image: bool (h, w), the particle's convex hull (``regionprops(...).image_convex``).

    Returns:
        Width in pixels.
    """
    padded = np.pad(convex_image, 2, mode="constant", constant_values=0)
    points = np.vstack(find_contours(padded, 0.5, fully_connected="high"))
    try:
        hull = points[ConvexHull(points).vertices]
    except QhullError:  # all contour points on one line cannot happen for a non-empty image; be safe anyway
        return 0.0
    edges = np.roll(hull, -1, axis=0) - hull  # (k, 2)
    lengths = np.linalg.norm(edges, axis=1)
    rel = hull[None, :, :] - hull[:, None, :]  # (k edges, k vertices, 2)
    dist = np.abs(edges[:, None, 0] * rel[..., 1] - edges[:, None, 1] * rel[..., 0]) / lengths[:, None]
    return float(dist.max(axis=1).min())


def particle_sizes(instances, pixel_size_nm: float | None = None, unit: Unit = "nm", *,
                   name: str | None = None) -> pd.DataFrame:
    """Size descriptors of every particle of one image.

    Args:
        instances: label map (H, W) (labels need not be consecutive) or bool mask stack (N, H, W).
        pixel_size_nm: physical pixel edge length; ``None`` gives pixel columns only.
        unit: physical unit of the extra columns, ``"nm"`` or ``"um"``.
        name: image name used in error messages.

    Returns:
        One row per particle (empty masks skipped), columns ``id`` (label value or stack index), ``area_px``,
        ``ecd_px``, ``feret_min_px``, ``feret_max_px``, ``aspect_ratio`` and, with a pixel size,
        ``area_{unit}2``, ``ecd_{unit}``, ``feret_min_{unit}``, ``feret_max_{unit}``.

    Raises:
        InputError: naming ``name``, for invalid instances or a non-positive pixel size.
    """
    arr = check_instances(instances, name)
    if unit not in _NM_PER_UNIT:
        raise KeyError(f"unknown unit {unit!r}; choose one of {', '.join(_NM_PER_UNIT)}")
    if pixel_size_nm is not None and not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise InputError(f"pixel size must be a positive number of nm, got {pixel_size_nm}", name)
    rows = []
    if arr.ndim == 2:
        regions = [(r.label, r) for r in regionprops(arr.astype(np.int64, copy=False))]
    else:
        regions = [(i, regionprops(m.astype(np.uint8))[0]) for i, m in enumerate(arr) if m.any()]
    for ident, r in regions:
        fmax = float(r.feret_diameter_max)
        fmin = min_feret_diameter(r.image_convex)
        rows.append((ident, float(r.area), float(r.equivalent_diameter_area), fmin, fmax,
                     fmin / fmax if fmax > 0 else np.nan))
    table = pd.DataFrame(rows, columns=["id", "area_px", "ecd_px", "feret_min_px", "feret_max_px",
                                        "aspect_ratio"])
    table["id"] = table["id"].astype(np.int64)
    if pixel_size_nm is not None:
        table = add_physical_units(table, pixel_size_nm, unit)
    return table


def add_physical_units(table: pd.DataFrame, pixel_size_nm: float | np.ndarray | pd.Series,
                       unit: Unit = "nm") -> pd.DataFrame:
    """Add physical columns to a table with ``*_px`` size columns: lengths × s, areas × s² (s = pixel size).

    Args:
        table: has ``area_px``, ``ecd_px``, ``feret_min_px``, ``feret_max_px``.
        pixel_size_nm: one value, or one per row (NaN where unknown gives NaN sizes).
        unit: ``"nm"`` or ``"um"``.
    """
    if unit not in _NM_PER_UNIT:
        raise KeyError(f"unknown unit {unit!r}; choose one of {', '.join(_NM_PER_UNIT)}")
    s = np.asarray(pixel_size_nm, dtype=np.float64) / _NM_PER_UNIT[unit]
    out = table.copy()
    out[f"area_{unit}2"] = out["area_px"].to_numpy() * s**2  # an area scales with the SQUARE of the pixel size
    for col in ("ecd", "feret_min", "feret_max"):
        out[f"{col}_{unit}"] = out[f"{col}_px"].to_numpy() * s
    return out


@dataclass(frozen=True)
class DistributionComparison:
    """Summary statistics of two samples side by side and their two-sample Kolmogorov–Smirnov test.

    Attributes:
        table: rows ``n, mean, std, median, q10, …`` and columns ``(name_a, name_b, "difference")``
            (difference = b − a).
        ks_statistic: KS distance, the largest gap between the two empirical CDFs, in [0, 1].
        ks_pvalue: p-value of the two-sided KS test.
    """

    table: pd.DataFrame
    ks_statistic: float
    ks_pvalue: float

    def to_dict(self) -> dict[str, float]:
        """Flat ``{"mean_<a>": …, "ks_statistic": …}`` for results files."""
        out: dict[str, float] = {}
        for stat, row in self.table.iterrows():
            for col, value in row.items():
                out[f"{stat}_{col}"] = float(value)
        out["ks_statistic"], out["ks_pvalue"] = self.ks_statistic, self.ks_pvalue
        return out


def compare_distributions(a, b, quantiles: Sequence[float] = (0.1, 0.25, 0.75, 0.9),
                          names: tuple[str, str] = ("a", "b")) -> DistributionComparison:
    """Compare two samples (e.g. predicted vs ground-truth ECDs, or two annotators' sizes).

    Args:
        a, b: 1-D samples; NaNs are errors, not silently dropped.
        quantiles: extra quantiles to report besides the median.
        names: column names of the two samples.

    Returns:
        :class:`DistributionComparison` (KS via :func:`scipy.stats.ks_2samp`).

    Raises:
        InputError: if a sample is empty or holds NaN/infinite values.
    """
    samples = []
    for label, x in zip(names, (a, b), strict=True):
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size == 0:
            raise InputError(f"sample {label!r} is empty")
        if not np.all(np.isfinite(x)):
            raise InputError(f"sample {label!r} contains NaN or infinite values")
        samples.append(x)
    stat_names = ["n", "mean", "std", "median"] + [f"q{round(q * 100):02d}" for q in quantiles]
    cols = {}
    for label, x in zip(names, samples, strict=True):
        cols[label] = [x.size, x.mean(), x.std(ddof=1) if x.size > 1 else np.nan, np.median(x),
                       *np.quantile(x, quantiles)]
    table = pd.DataFrame(cols, index=stat_names, dtype=np.float64)
    table["difference"] = table[names[1]] - table[names[0]]
    ks = stats.ks_2samp(samples[0], samples[1])
    return DistributionComparison(table, float(ks.statistic), float(ks.pvalue))


def compare_sizes(per_particle: pd.DataFrame, column: str = "ecd_px", reference: str = "gt",
                  quantiles: Sequence[float] = (0.1, 0.25, 0.75, 0.9)) -> pd.DataFrame:
    """Predicted vs ground-truth size distributions for every method of an evaluation's per-particle table.

    Args:
        per_particle: :attr:`semkit.metrics.Evaluation.per_particle` (columns ``method``, ``side`` and
            ``column``).
        column: size column, e.g. ``"ecd_px"``, ``"ecd_nm"``, ``"area_nm2"``.
        reference: the ``side`` value of the reference sample.

    Returns:
        One row per method: ``n_gt, n_pred, mean_gt, mean_pred, median_gt, median_pred, …, ks_statistic,
        ks_pvalue``. Ground-truth particles are counted once per method (the same set each time).
    """
    if column not in per_particle.columns:
        raise KeyError(f"no column {column!r}; size columns: "
                       f"{', '.join(c for c in per_particle.columns if c.split('_')[0] in ('area', 'ecd', 'feret'))}")
    rows = []
    for method, part in per_particle.groupby("method", sort=False):
        ref = part.loc[part["side"] == reference, column].dropna()
        pred = part.loc[part["side"] != reference, column].dropna()
        if ref.empty or pred.empty:
            continue
        cmp = compare_distributions(ref, pred, quantiles, names=("gt", "pred"))
        rows.append({"method": method, **cmp.to_dict()})
    return pd.DataFrame(rows)
