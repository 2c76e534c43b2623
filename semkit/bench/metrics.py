"""``semkit bench metrics``: how long AJI+ takes on a full-size SEM image.

The target (issue 3): a 1920 × 1200 image with 300 ground-truth and about 300 predicted particles must take well
under 0.1 s, because fine-tuning runs evaluate every validation image after every epoch.
"""

from __future__ import annotations

import time

import numpy as np
from skimage.draw import disk


def grid_particles(height: int = 1200, width: int = 1920, n_instances: int = 300, seed: int = 0) -> np.ndarray:
    """A label map with exactly ``n_instances`` disk-shaped particles, one per cell of a jittered grid.

    Returns:
        int32 (height, width) with labels 1..n_instances (disks may touch but never overwrite each other).
    """
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(n_instances * width / height)))
    rows = int(np.ceil(n_instances / cols))
    ch, cw = height / rows, width / cols
    labels = np.zeros((height, width), dtype=np.int32)
    for k in range(n_instances):
        r, c = divmod(k, cols)
        radius = rng.uniform(0.25, 0.45) * min(ch, cw)
        cy = (r + 0.5) * ch + rng.uniform(-1, 1) * (ch / 2 - radius)
        cx = (c + 0.5) * cw + rng.uniform(-1, 1) * (cw / 2 - radius)
        rr, cc = disk((cy, cx), radius, shape=labels.shape)
        labels[rr, cc] = k + 1
    return labels


def bench_aji(height: int = 1200, width: int = 1920, n_instances: int = 300, repeats: int = 20,
              seed: int = 0, echo=print) -> dict[str, float]:
    """Time :func:`semkit.metrics.aji_plus` (and its two stages) on a synthetic full-size image.

    The prediction is the ground truth with ``METHOD_PRESETS["moderate"]`` errors (dropped, merged, split,
    shifted and spurious particles), so the contingency table is realistic.

    Args:
        height, width: image size.
        n_instances: ground-truth particles.
        repeats: timed repetitions (after one warm-up); the median is reported.
        seed: layout and perturbation seed.
        echo: where to print the report (``None`` = silent).

    Returns:
        ``{"n_gt", "n_pred", "aji_plus", "median_s", "min_s", "overlap_median_s", "hungarian_median_s"}``.
    """
    from semkit.metrics import METHOD_PRESETS, aji_plus, aji_plus_counts, pairwise_overlap, perturb_instances

    gt = grid_particles(height, width, n_instances, seed)
    pred = perturb_instances(gt, METHOD_PRESETS["moderate"], seed=seed).labels
    value = aji_plus(gt, pred)  # warm-up
    total, overlap_t, hungarian_t = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ov = pairwise_overlap(gt, pred)
        t1 = time.perf_counter()
        aji_plus_counts(ov)
        t2 = time.perf_counter()
        overlap_t.append(t1 - t0)
        hungarian_t.append(t2 - t1)
        t0 = time.perf_counter()
        aji_plus(gt, pred)
        total.append(time.perf_counter() - t0)
    result = {"n_gt": int(ov.n_gt), "n_pred": int(ov.n_pred), "aji_plus": float(value),
              "median_s": float(np.median(total)), "min_s": float(np.min(total)),
              "overlap_median_s": float(np.median(overlap_t)), "hungarian_median_s": float(np.median(hungarian_t))}
    if echo is not None:
        echo(f"AJI+ on {height} x {width}: {result['n_gt']} ground-truth vs {result['n_pred']} predicted particles "
             f"(AJI+ = {value:.4f})")
        echo(f"  total      median {result['median_s'] * 1e3:7.1f} ms   min {result['min_s'] * 1e3:7.1f} ms "
             f"({repeats} repeats)")
        echo(f"  overlap    median {result['overlap_median_s'] * 1e3:7.1f} ms   (bincount contingency)")
        echo(f"  hungarian  median {result['hungarian_median_s'] * 1e3:7.1f} ms   (linear_sum_assignment)")
    return result
