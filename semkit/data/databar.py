"""Detect and crop the instrument's information bar (databar) at the bottom of SEM images.

Zeiss, FEI/Thermo Fisher and JEOL microscopes burn a bar with text and a scale bar into the bottom rows of
saved images. It is not specimen: training on it teaches a network to find text, and evaluating on it counts
letters as particles. The detector looks for a band of bottom rows that is mostly one exact value (the bar's
flat background, black or white, with sparse text), something SEM noise never produces over a whole row.
"""

from __future__ import annotations

import numpy as np

from semkit.errors import InputError

#: A bar row has at least this fraction of its pixels at the row's most common value.
UNIFORM_FRACTION = 0.5
#: Bars shorter than this are not reported (a few black rows can be scan artefacts).
MIN_BAR_ROWS = 8
#: Bars are never taller than this fraction of the image.
MAX_BAR_FRACTION = 0.25
#: Rows inside a bar that are not uniform (thick text, a scale bar) may interrupt it for this many rows.
MAX_GAP_ROWS = 4


def _row_uniform(image: np.ndarray) -> np.ndarray:
    """Per row: is at least UNIFORM_FRACTION of the row at one exact (8-bit quantised) value near 0 or 1?"""
    q = np.rint(np.asarray(image, dtype=np.float64) * 255).astype(np.int64).clip(0, 255)
    flags = np.zeros(q.shape[0], dtype=bool)
    for r, row in enumerate(q):
        counts = np.bincount(row, minlength=256)
        mode = int(counts.argmax())
        # The bar's background is an extreme value (black or white), never mid-grey specimen texture.
        flags[r] = counts[mode] >= UNIFORM_FRACTION * row.size and (mode <= 8 or mode >= 247)
    return flags


def detect_databar(image: np.ndarray) -> int:
    """Number of bottom rows occupied by a databar (0 when there is none).

    Args:
        image: grayscale image (H, W), float in [0, 1] as returned by :func:`semkit.data.io.load_image`.

    Returns:
        Height in rows of the detected bar: the rows from its top edge to the bottom of the image.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"databar detection needs a 2-D image, got shape {image.shape}")
    h = image.shape[0]
    # Only the bottom quarter can hold a bar; scanning only there keeps this fast on large images.
    start = h - int(h * MAX_BAR_FRACTION)
    flags = _row_uniform(image[start:])
    top = len(flags)
    gap = 0
    for r in range(len(flags) - 1, -1, -1):
        if flags[r]:
            top, gap = r, 0
        else:
            gap += 1
            if gap > MAX_GAP_ROWS:
                break
    if top == 0 and len(flags) and flags[0]:
        # The uniform band reaches the top of the search window: a flat image region (an empty or saturated
        # frame), not a bar, which is never taller than MAX_BAR_FRACTION of the image.
        return 0
    rows = len(flags) - top
    return rows if rows >= MIN_BAR_ROWS else 0


def crop_databar(image: np.ndarray, rows: int | None = None, *labels: np.ndarray | None):
    """Remove the databar from an image and, consistently, from label arrays of the same height.

    Args:
        image: grayscale image (H, W).
        rows: bar height; ``None`` detects it with :func:`detect_databar`. An explicit value always wins
            (some datasets, e.g. BAM TiO2, annotate on a crop taller than the visible bar).
        *labels: label maps/masks to crop identically; ``None`` entries pass through. A label already of the
            cropped height is accepted as is (datasets often ship labels with the bar already removed).

    Returns:
        ``(image_cropped, rows, *labels_cropped)``.
    """
    h = image.shape[0]
    if rows is None:
        rows = detect_databar(image)
    if not 0 <= rows < h:
        raise InputError(f"databar height {rows} is not within [0, {h})")
    keep = h - rows
    out = []
    for lab in labels:
        if lab is None:
            out.append(None)
        elif lab.shape[0] == h:
            out.append(lab[:keep])
        elif lab.shape[0] == keep:
            out.append(lab)
        else:
            raise InputError(
                f"label height {lab.shape[0]} matches neither the image ({h}) nor the cropped image ({keep})"
            )
    return (image[:keep], rows, *out)
