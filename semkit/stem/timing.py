"""Processing-time measurement and the acquisition-time model of adaptive boxes versus the full grid.

Model (as in the study): acquiring one image takes ``T = t_seg + n_b · t_acq`` with ``t_acq = s_b / 16,384``,
where ``s_b`` is the time the full 128 × 128 grid takes (baselines 8, 16, 32 and 64 s), ``n_b`` the number of
boxes (one acquisition point each) and ``t_seg`` the processing time. The full grid takes ``s_b``; the time
reduction factor is ``s_b / T`` and the point reduction ``16,384 / n_b``.

Timing follows the study: every image is processed ``repeats`` times (30) and the per-image median is kept, so
the reported distribution is of medians, robust to a busy CPU. The garbage collector is off while an image is
timed, as in :mod:`timeit`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np

from semkit.data.records import SEMRecord
from semkit.errors import InputError
from semkit.stem.pipeline import BoxSettings, box_image
from semkit.stem.segment import GRID

#: Full-grid acquisition times of the study (seconds per 128 × 128 image).
BASELINES_S = (8.0, 16.0, 32.0, 64.0)
#: Points of the uniform grid the boxes replace.
GRID_POINTS = GRID * GRID


@contextmanager
def gc_paused():
    """Collect garbage, then keep the collector off while timing (as :mod:`timeit` does): in a notebook full of
    figures a collection pass over their objects can land inside a run and triple its time."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_boxing(
    records: Sequence[SEMRecord], settings: BoxSettings | None = None, repeats: int = 30
):
    """Process every record ``repeats`` times and keep the per-image median time.

    Args:
        records: images with ``meta['n_elements']``.
        settings: boxing settings (algorithm, cap, segmentation).
        repeats: runs per image (the study: 30).

    Returns:
        :class:`pandas.DataFrame`, one row per image: ``image``, ``size`` (parent side), ``n_elements``,
        ``n_boxes``, ``median_s``, ``min_s``, ``max_s``, ``reason`` (why there are no boxes, else ``None``).

    Raises:
        InputError: if ``repeats < 1``.
    """
    import pandas as pd

    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}")
    rows = []
    for rec in records:
        times = np.empty(repeats)
        with gc_paused():
            for r in range(repeats):
                start = time.perf_counter()
                result = box_image(rec, settings=settings)
                times[r] = time.perf_counter() - start
        rows.append(
            {
                "image": rec.source,
                "size": rec.image.shape[0],
                "n_elements": result.segmentation.n_elements,
                "n_boxes": result.n_boxes,
                "median_s": float(np.median(times)),
                "min_s": float(times.min()),
                "max_s": float(times.max()),
                "reason": result.reason,
            }
        )
    return pd.DataFrame(rows)


def acquisition_time(n_boxes, t_seg_s, baseline_s: float, grid_points: int = GRID_POINTS):
    """Projected acquisition time ``t_seg + n_boxes · baseline / grid_points`` (seconds; arrays broadcast)."""
    return np.asarray(t_seg_s, dtype=np.float64) + np.asarray(n_boxes, dtype=np.float64) * (
        baseline_s / grid_points
    )


def acquisition_table(timings, baselines: Sequence[float] = BASELINES_S, grid_points: int = GRID_POINTS):
    """Per image and baseline: projected time, time reduction and point reduction.

    Args:
        timings: frame from :func:`time_boxing` (columns ``image``, ``n_boxes``, ``median_s``).
        baselines: full-grid times ``s_b`` in seconds.
        grid_points: points of the full grid.

    Returns:
        :class:`pandas.DataFrame` with ``image``, ``baseline_s``, ``n_boxes``, ``t_seg_s``, ``t_acq_s``,
        ``projected_s``, ``time_reduction`` (``s_b / T``) and ``box_reduction`` (``grid_points / n_b``; NaN
        for images without boxes, which are left out of the time model).
    """
    import pandas as pd

    rows = []
    ok = timings[timings["n_boxes"] > 0]
    for s_b in baselines:
        projected = acquisition_time(ok["n_boxes"], ok["median_s"], s_b, grid_points)
        rows.append(
            pd.DataFrame(
                {
                    "image": ok["image"].to_numpy(),
                    "baseline_s": float(s_b),
                    "n_boxes": ok["n_boxes"].to_numpy(),
                    "t_seg_s": ok["median_s"].to_numpy(),
                    "t_acq_s": s_b / grid_points,
                    "projected_s": projected,
                    "time_reduction": s_b / projected,
                    "box_reduction": grid_points / ok["n_boxes"].to_numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def dataset_table(acquisition):
    """Dataset totals per baseline from :func:`acquisition_table`.

    Returns:
        :class:`pandas.DataFrame` indexed by ``baseline_s`` with ``images``, ``full_grid_s`` (images × s_b),
        ``projected_s`` (sum of T), ``time_reduction`` (full / projected), ``mean_box_reduction`` and
        ``total_box_reduction`` (all grid points / all boxes).
    """
    g = acquisition.groupby("baseline_s")
    out = g.agg(images=("image", "size"), projected_s=("projected_s", "sum"), boxes=("n_boxes", "sum"),
                mean_box_reduction=("box_reduction", "mean"))
    out["full_grid_s"] = out["images"] * out.index.to_numpy()
    out["time_reduction"] = out["full_grid_s"] / out["projected_s"]
    out["total_box_reduction"] = out["images"] * GRID_POINTS / out["boxes"]
    return out[["images", "full_grid_s", "projected_s", "time_reduction", "mean_box_reduction",
                "total_box_reduction"]]


def compare_algorithms(records: Sequence[SEMRecord], settings: BoxSettings | None = None, repeats: int = 30):
    """Time both box algorithms on the same images.

    Returns:
        :class:`pandas.DataFrame`, one row per image: ``image``, ``n_boxes_1``, ``n_boxes_2``, ``median_s_1``,
        ``median_s_2`` (medians over ``repeats`` runs, segmentation included).
    """
    from dataclasses import replace

    base = settings or BoxSettings()
    t1 = time_boxing(records, replace(base, algorithm=1), repeats)
    t2 = time_boxing(records, replace(base, algorithm=2), repeats)
    out = t1[["image"]].copy()
    out["n_boxes_1"], out["n_boxes_2"] = t1["n_boxes"], t2["n_boxes"]
    out["median_s_1"], out["median_s_2"] = t1["median_s"], t2["median_s"]
    return out
