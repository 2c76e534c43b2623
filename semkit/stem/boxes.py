"""Square acquisition boxes that exactly cover labelled regions, and their mapping to the parent image.

Both algorithms cover every pixel of every non-zero region of a label image with axis-aligned squares such that

* each region pixel is covered by exactly one box (no gaps, no overlap),
* every box lies inside one region (all its pixels carry the same label),
* no box is larger than ``cap`` pixels on a side.

**Algorithm 1** (largest first) repeatedly places the largest square that still fits anywhere, ties broken in
raster order of the top-left corner. **Algorithm 2** (raster scan, the study's choice) visits pixels in raster
order and places, at each pixel not yet covered, the largest square with that pixel as its top-left corner.

Reference: the adaptive-box acquisition of high-throughput nanoparticle STEM characterisation (megalibraries),
where these boxes replace the uniform 128 × 128 grid; the study's pseudocode is not public, so both algorithms
are designed here from its description.

Box arrays have shape (N, 4) and integer columns :data:`BOX_COLUMNS` = (row, col, size, label) in the pixel grid
the labels live in (the cropped 128-grid for the STEM pipeline).
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from semkit.errors import InputError

#: Columns of a box array: top-left row, top-left column, side length (pixels), region label.
BOX_COLUMNS = ("row", "col", "size", "label")


def _run_lengths(labels: np.ndarray, axis: int) -> np.ndarray:
    """Length of the run of equal non-zero labels starting at each pixel and going right (axis 1) / down (axis 0).

    Vectorised: a run ends where the next pixel has another label; the run length is the distance to the next
    run end, found with a reversed running minimum.
    """
    lab = labels if axis == 1 else labels.T
    h, w = lab.shape
    ends = np.ones((h, w), dtype=bool)
    ends[:, :-1] = lab[:, :-1] != lab[:, 1:]
    idx = np.arange(w, dtype=np.int32)
    end_idx = np.where(ends, idx, w)
    next_end = np.minimum.accumulate(end_idx[:, ::-1], axis=1)[:, ::-1]
    runs = (next_end - idx + 1).astype(np.int32)
    runs[lab == 0] = 0
    return runs if axis == 1 else runs.T


def largest_squares(labels: np.ndarray, cap: int | None = None) -> np.ndarray:
    """Side of the largest same-label square whose top-left corner is each pixel.

    The classic dynamic programme, written with the right-run ``R`` and down-run ``D`` of each pixel: a square of
    side ``s`` at (i, j) fits iff ``R[i, j] >= s``, ``D[i, j] >= s`` and a square of side ``s - 1`` of the same
    label fits at (i + 1, j + 1), so ``S[i, j] = min(R[i, j], D[i, j], S[i + 1, j + 1] + 1)``. Rows are processed
    bottom-up, each as one vectorised operation (no per-pixel Python loop).

    Args:
        labels: int array (H, W); 0 is background, every other value a region.
        cap: optional upper bound on the returned sides.

    Returns:
        int32 array (H, W): 0 on background, >= 1 on region pixels.
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    right = _run_lengths(labels, 1)
    down = _run_lengths(labels, 0)
    base = np.minimum(right, down)
    if cap is not None:
        np.minimum(base, cap, out=base)
    sq = base.copy()
    if h > 1 and w > 1:
        same_diag = labels[:-1, :-1] == labels[1:, 1:]
        for i in range(h - 2, -1, -1):
            # Inner square from the row below, shifted one column; a different label below-right caps at 1.
            inner = np.where(same_diag[i], sq[i + 1, 1:] + 1, 1)
            np.minimum(sq[i, :-1], inner, out=sq[i, :-1])
    return sq


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"label image must be 2-D, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise InputError(f"label image must hold integers, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError("label image must be >= 0 (0 = background)")
    return labels.astype(np.int32, copy=False)


def _check_cap(cap: int | None, shape: tuple[int, int]) -> int:
    if cap is None:
        return max(1, min(shape))
    if int(cap) < 1:
        raise InputError(f"box size cap must be >= 1 pixel, got {cap}")
    return int(cap)


def boxes_raster(labels: np.ndarray, cap: int | None = None) -> np.ndarray:
    """Algorithm 2: raster scan, largest square at each still-uncovered pixel.

    A square placed earlier can only reach the current row from above, so a pixel (i, c) is covered iff the
    last row covered in column c is >= i. Per row, the uncovered region pixels form runs; walking a run from the
    left, the square at column c has side ``min(S[i, c], run_end - c)`` (``S`` from :func:`largest_squares`,
    already capped) and the walk jumps by that side. The Python loop therefore runs once per box, not per pixel.

    Args:
        labels: int array (H, W), 0 = background.
        cap: largest allowed side in pixels (``None``: no cap).

    Returns:
        int32 array (N, 4) with columns :data:`BOX_COLUMNS`, in raster order of the top-left corners. Empty
        (0, 4) when there is no region pixel.
    """
    labels = _check_labels(labels)
    h, w = labels.shape
    cap = _check_cap(cap, (h, w))
    sq = largest_squares(labels, cap)
    region = labels > 0
    covered_through = np.full(w, -1, dtype=np.int64)
    box_r: list[int] = []
    box_c: list[int] = []
    box_s: list[int] = []
    edge_buf = np.zeros(w + 2, dtype=bool)
    for i in np.flatnonzero(region.any(axis=1)).tolist():
        free = region[i] & (covered_through < i)
        edge_buf[1:-1] = free
        # Run boundaries of the free columns alternate start, stop: runs are [starts[k], stops[k]).
        bounds = np.flatnonzero(edge_buf[1:] != edge_buf[:-1]).tolist()
        if not bounds:
            continue
        starts, stops = bounds[0::2], bounds[1::2]
        srow = sq[i].tolist()
        n_before = len(box_s)
        for a, b in zip(starts, stops, strict=True):
            c = a
            while c < b:
                s = min(srow[c], b - c)
                box_c.append(c)
                box_s.append(s)
                c += s
        sizes = np.asarray(box_s[n_before:], dtype=np.int64)
        box_r.extend([i] * sizes.size)
        # The row's boxes tile its free pixels in order, so one repeat assigns every covered column at once.
        covered_through[free] = np.repeat(i + sizes - 1, sizes)
    if not box_r:
        return np.zeros((0, 4), dtype=np.int32)
    out = np.empty((len(box_r), 4), dtype=np.int32)
    out[:, 0] = box_r
    out[:, 1] = box_c
    out[:, 2] = box_s
    out[:, 3] = labels[out[:, 0], out[:, 1]]
    return out


def boxes_largest_first(labels: np.ndarray, cap: int | None = None) -> np.ndarray:
    """Algorithm 1: place the largest square that still fits anywhere, until every region pixel is covered.

    Equivalent to the one-box-at-a-time greedy (largest side first, ties in raster order) but done in batches:
    for side ``s`` from the cap down to 2, the squares of side ``s`` that fit in the still-uncovered region are
    chosen in raster order, skipping any that overlaps one chosen before in the same batch (placing squares
    never makes a larger one fit, so after the batch no square of side ``s`` fits). Side 1 covers what is left.
    The largest-square map is recomputed only after a batch that placed boxes.

    Args:
        labels: int array (H, W), 0 = background.
        cap: largest allowed side in pixels (``None``: no cap).

    Returns:
        int32 array (N, 4) with columns :data:`BOX_COLUMNS`, ordered by decreasing side, then raster order.
    """
    labels = _check_labels(labels)
    h, w = labels.shape
    cap = _check_cap(cap, (h, w))
    free_labels = labels.copy()
    sq = largest_squares(free_labels, cap)
    out: list[np.ndarray] = []
    for s in range(int(sq.max(initial=0)), 1, -1):
        cand_r, cand_c = np.nonzero(sq >= s)
        if cand_r.size == 0:
            continue
        covered_through = np.full(w, -1, dtype=np.int64)
        blocked_prefix = np.zeros(w + 1, dtype=np.int64)
        rows_out: list[int] = []
        cols_out: list[int] = []
        row_bounds = np.flatnonzero(np.diff(cand_r)) + 1
        for r_cols in np.split(np.arange(cand_r.size), row_bounds):
            i = int(cand_r[r_cols[0]])
            cols = cand_c[r_cols]
            # A candidate overlaps an earlier square of this batch iff a column under it is covered at row i.
            np.cumsum(covered_through >= i, out=blocked_prefix[1:])
            ok = cols[blocked_prefix[cols + s] - blocked_prefix[cols] == 0].tolist()
            picked: list[int] = []
            k = 0
            while k < len(ok):
                c = ok[k]
                picked.append(c)
                k = bisect_left(ok, c + s, k + 1)
            for c in picked:
                covered_through[c : c + s] = i + s - 1
            rows_out.extend([i] * len(picked))
            cols_out.extend(picked)
        if not rows_out:
            continue
        br = np.asarray(rows_out, dtype=np.int64)
        bcol = np.asarray(cols_out, dtype=np.int64)
        out.append(np.stack([br, bcol, np.full_like(br, s), labels[br, bcol]], axis=1))
        for r, c in zip(rows_out, cols_out, strict=True):
            free_labels[r : r + s, c : c + s] = 0
        sq = largest_squares(free_labels, s)
    rest_r, rest_c = np.nonzero(free_labels)
    if rest_r.size:
        out.append(np.stack([rest_r, rest_c, np.ones_like(rest_r), labels[rest_r, rest_c]], axis=1))
    if not out:
        return np.zeros((0, 4), dtype=np.int32)
    return np.concatenate(out).astype(np.int32)


#: The two box-placement algorithms by number (as in the study) and by name.
ALGORITHMS = {1: boxes_largest_first, 2: boxes_raster}


def place_boxes(labels: np.ndarray, algorithm: int = 2, cap: int | None = None) -> np.ndarray:
    """Cover every non-zero region of ``labels`` with square boxes.

    Args:
        labels: int array (H, W), 0 = background.
        algorithm: 1 (largest first) or 2 (raster scan); see :data:`ALGORITHMS`.
        cap: largest allowed side in pixels (``None``: no cap).

    Returns:
        int32 array (N, 4) with columns :data:`BOX_COLUMNS`.

    Raises:
        InputError: for an unknown algorithm (the message lists the valid ones) or a bad label image.
    """
    try:
        fn = ALGORITHMS[int(algorithm)]
    except (KeyError, ValueError, TypeError):
        raise InputError(f"unknown box algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}") from None
    return fn(labels, cap)


def size_cap(crop_shape: tuple[int, int], fraction: float = 0.2) -> int:
    """Largest box side: ``fraction`` of the shorter side of the cropped image, at least one pixel."""
    if not 0 < fraction <= 1:
        raise InputError(f"size cap fraction must be in (0, 1], got {fraction}")
    return max(1, int(fraction * min(crop_shape)))


def coverage(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """How many boxes cover each pixel: int32 array ``shape`` (1 everywhere on an exact cover of the region)."""
    count = np.zeros(shape, dtype=np.int32)
    for r, c, s, _ in np.asarray(boxes).reshape(-1, 4):
        count[r : r + s, c : c + s] += 1
    return count


def boxes_to_parent(
    boxes: np.ndarray, offset: tuple[int, int], scale: float
) -> np.ndarray:
    """Map boxes from the cropped grid to parent-image pixels.

    Args:
        boxes: (N, 4) array, columns :data:`BOX_COLUMNS`, in crop coordinates.
        offset: (row, col) of the crop's top-left corner in the resized grid.
        scale: parent pixels per grid pixel (e.g. 1024 / 128 = 8).

    Returns:
        float64 array (N, 3): x (column), y (row) of the top-left corner and side, in parent pixels; box ``b``
        covers parent pixels ``[y, y + size) × [x, x + size)``.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x = (b[:, 1] + offset[1]) * scale
    y = (b[:, 0] + offset[0]) * scale
    return np.stack([x, y, b[:, 2] * scale], axis=1)


def boxes_from_parent(xys: np.ndarray, offset: tuple[int, int], scale: float) -> np.ndarray:
    """Inverse of :func:`boxes_to_parent`: (N, 3) parent x, y, size → (N, 3) int row, col, size in the crop.

    Raises:
        InputError: if a box does not fall on the grid (not a whole number of grid pixels).
    """
    p = np.asarray(xys, dtype=np.float64).reshape(-1, 3)
    grid = np.stack([p[:, 1] / scale - offset[0], p[:, 0] / scale - offset[1], p[:, 2] / scale], axis=1)
    rounded = np.rint(grid)
    if not np.allclose(grid, rounded, atol=1e-6):
        raise InputError("boxes do not lie on the acquisition grid (offset/scale do not match)")
    return rounded.astype(np.int64)
