"""The BAM TiO2 SEM particle set (Ruehle, Krumrey & Hodoroaba, Sci. Rep. 11, 4942 (2021); Zenodo 4563942).

Layout (file stems pair the three folders)::

    <root>/images/NAME.tif          1024 × 768 SEM image, Zeiss metadata (pixel size 7.344 nm at 50 kX)
    <root>/instances/NAME_m.tif     1024 × 768 binary mask: particles white (255), separated by 1-px black lines
    <root>/measurable/NAME_cm.tif   1024 × 704 binary mask of the particles the annotators marked measurable
                                    (the databar already cut)

What the adapter does, and why:

* **Crop.** The visible databar starts at row 712 (:func:`semkit.data.databar.detect_databar` finds 56 rows),
  but the annotators worked on a 704-row crop (the measurable masks are 704 rows), so 64 rows are cut from the
  image and the instance mask by default. The explicit ``databar_rows`` wins over detection for that reason.
* **Instances** are the 4-connected components of the white regions (:func:`scipy.ndimage.label` with its
  default cross-shaped structure) of the *cropped* mask. 8-connectivity would merge particles across the
  1-px diagonal separating lines (3,562 instead of 4,651 components in the full masks).
* **Counts.** The 30 full 768-row masks hold 4,651 components (the published figure). The 704-row crop holds
  4,627: 25 components lie entirely in rows 704-767 (below the annotated area, some inside the visible bar)
  and the crop splits one component in two (4,651 - 25 + 1). ``meta["n_instances_uncropped"]`` keeps the
  per-image count of the full mask so both figures can be reproduced.
* **Fragments.** 277 of the 4,627 cropped components are single pixels (434 are under 10 px): isolated white
  pixels between diagonal separating lines, not particles. They are kept by default (``min_area_px=1``) so the
  counts match the published definition; pass e.g. ``min_area_px=10`` to drop them for training (4,193
  instances remain; no dropped fragment is certain, so the certain count is unchanged).
* **Certainty.** An instance is *certain* when at least ``certain_min_fraction`` (default 0.5) of its pixels lie
  in the measurable foreground. On the 30 images the overlap is sharply bimodal: 2,234 instances have no pixel
  inside, 1 has 2.5 %, and the other 2,392 have 95-100 % (the measurable outlines are drawn slightly tighter),
  none fall between 10 % and 90 %. Any threshold in that gap gives the same flags: 2,392 certain of 4,627
  (51.7 %; 57.0 % of the instances of at least 10 px). The per-instance overlap fractions are kept in
  ``meta["measurable_overlap"]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from semkit.data.databar import crop_databar, detect_databar
from semkit.data.folders import magnification_bucket
from semkit.data.io import list_images, load_image, load_labels
from semkit.data.records import SEMRecord
from semkit.errors import InputError

#: Rows cut by the BAM annotators (the measurable masks are 704 of 768 rows).
BAM_DATABAR_ROWS = 64


def load_bam(
    root: str | Path,
    databar_rows: int | None = BAM_DATABAR_ROWS,
    min_area_px: int = 1,
    certain_min_fraction: float = 0.5,
) -> list[SEMRecord]:
    """Read the BAM layout into records with instance label maps and certain/uncertain flags.

    Args:
        root: folder holding ``images/``, ``instances/`` and ``measurable/``.
        databar_rows: bottom rows to cut from the image and the instance mask; ``None`` detects the bar
            instead (56 rows on these images, which leaves 8 rows the measurable masks do not cover: they are
            then treated as outside the measurable area, giving 4,649 instances of which 2,378 are certain).
        min_area_px: components smaller than this many pixels are set to background (1 keeps all).
        certain_min_fraction: an instance is certain when at least this fraction of its pixels lies in the
            measurable foreground.

    Returns:
        One record per image, sorted by name: ``image`` float32 (H - rows, 1024), ``instances`` int32 labels
        1..N numbered in raster order, ``certain`` bool (N,), ``pixel_size_nm`` from the Zeiss metadata,
        ``magnification_bucket`` from the field of view. ``meta`` adds ``databar_rows``,
        ``n_instances_uncropped``, ``n_fragments_removed`` and ``measurable_overlap`` (float (N,)).

    Raises:
        InputError: naming the file, for a missing folder or mask, a non-binary mask or a size mismatch.
    """
    root = Path(root)
    if not 0.0 < certain_min_fraction <= 1.0:
        raise InputError(f"certain_min_fraction must be in (0, 1], got {certain_min_fraction}")
    for sub in ("images", "instances", "measurable"):
        if not (root / sub).is_dir():
            raise InputError(f"BAM layout needs a {sub}/ folder", root / sub)
    images = list_images(root / "images", recursive=False)
    if not images:
        raise InputError("no images found", root / "images")
    return [_load_one(p, root, databar_rows, min_area_px, certain_min_fraction) for p in images]


def instances_from_outline_mask(mask: np.ndarray, min_area_px: int = 1) -> tuple[np.ndarray, int]:
    """Instance labels from a binary mask whose particles are separated by thin background lines.

    Args:
        mask: (H, W) array, foreground > 0.
        min_area_px: components with fewer pixels become background.

    Returns:
        ``(labels, n_removed)``: int32 (H, W) labels 1..N of the 4-connected foreground components in raster
        order of their first pixel, and the number of components dropped for being too small.
    """
    labels, n = ndimage.label(np.asarray(mask) > 0)  # default structure = 4-connectivity
    labels = labels.astype(np.int32)
    if min_area_px <= 1 or n == 0:
        return labels, 0
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = areas >= min_area_px
    keep[0] = False
    new_ids = np.zeros(n + 1, dtype=np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_ids[labels], int(n - keep.sum())


def certainty_from_mask(
    instances: np.ndarray, certain_mask: np.ndarray, min_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-instance flag: does at least ``min_fraction`` of the instance lie in ``certain_mask``?

    Args:
        instances: int (H, W) labels 0..N.
        certain_mask: (H, W), foreground > 0 marks the certain (measurable) area.
        min_fraction: threshold on the fraction of the instance's pixels inside the mask.

    Returns:
        ``(certain, overlap)``: bool (N,) and float64 (N,) fractions; an instance with no pixels (possible only
        in hand-made label maps) has overlap 0 and is uncertain.
    """
    n = int(instances.max(initial=0))
    inside = np.bincount(instances[np.asarray(certain_mask) > 0].ravel(), minlength=n + 1)[1:]
    area = np.bincount(instances.ravel(), minlength=n + 1)[1:]
    overlap = np.divide(inside, area, out=np.zeros(n, dtype=np.float64), where=area > 0)
    return overlap >= min_fraction, overlap


# --------------------------------------------------------------------------------------------------------------
# internals


def _load_one(img_path: Path, root: Path, databar_rows: int | None, min_area_px: int, min_fraction: float):
    inst_path = root / "instances" / f"{img_path.stem}_m.tif"
    meas_path = root / "measurable" / f"{img_path.stem}_cm.tif"
    for p in (inst_path, meas_path):
        if not p.is_file():
            raise InputError(f"missing mask for image {img_path.name}", p)
    image, meta = load_image(img_path)
    outline = _binary(load_labels(inst_path), inst_path)
    measurable = _binary(load_labels(meas_path), meas_path)
    if outline.shape != image.shape:
        raise InputError(f"instance mask shape {outline.shape} != image shape {image.shape}", inst_path)
    rows = detect_databar(image) if databar_rows is None else int(databar_rows)
    n_uncropped = int(ndimage.label(outline)[1])
    if measurable.shape[1] != image.shape[1] or measurable.shape[0] > image.shape[0]:
        # The measurable mask covers the top rows of the image (704 of 768 in BAM); anything else is a mix-up.
        raise InputError(
            f"measurable mask shape {measurable.shape} does not fit image shape {image.shape}", meas_path
        )
    try:
        image, rows, outline = crop_databar(image, rows, outline)
    except InputError as exc:
        raise InputError(exc.reason, img_path) from exc
    measurable = _fit_rows(measurable, image.shape[0])
    instances, n_removed = instances_from_outline_mask(outline, min_area_px)
    certain, overlap = certainty_from_mask(instances, measurable, min_fraction)
    info = meta.to_dict()
    info.pop("shape", None)
    info.update(
        databar_rows=rows,
        n_instances_uncropped=n_uncropped,
        n_fragments_removed=n_removed,
        measurable_overlap=overlap,
        instances_path=str(inst_path),
        measurable_path=str(meas_path),
    )
    return SEMRecord(
        image=image,
        instances=instances,
        certain=certain,
        pixel_size_nm=meta.pixel_size_nm,
        source=str(img_path),
        magnification_bucket=magnification_bucket(meta.field_of_view_um),
        meta=info,
    )


def _binary(mask: np.ndarray, path: Path) -> np.ndarray:
    values = np.unique(mask)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        raise InputError(
            f"expected a binary mask (0 and one foreground value), found values {values[:5]}...", path
        )
    return mask > 0


def _fit_rows(mask: np.ndarray, rows: int) -> np.ndarray:
    """Crop a mask to ``rows`` rows, or pad it with background when it is shorter (detected-bar case)."""
    if mask.shape[0] >= rows:
        return mask[:rows]
    return np.pad(mask, ((0, rows - mask.shape[0]), (0, 0)))
