"""Plain folders of unlabeled SEM images (the self-supervised pool) as :class:`SEMRecord` objects.

Every image is read with :func:`semkit.data.io.load_image` (float32 grayscale in [0, 1], pixel size from the
instrument's metadata or ``None``), its databar is detected and cropped (:mod:`semkit.data.databar`) and the
detected height is kept in ``record.meta["databar_rows"]`` so the crop can be undone or audited.

:func:`iter_unlabeled` is a generator: a pool of thousands of 1920 × 1200 images (≈ 9 MB each as float32) is
never held in memory at once. :func:`load_unlabeled` is the list version for small folders.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

from semkit.data.databar import detect_databar
from semkit.data.io import IMAGE_SUFFIXES, ImageMeta, list_images, load_image
from semkit.data.records import MagnificationBucket, SEMRecord
from semkit.errors import InputError

log = logging.getLogger(__name__)

#: Field of view (image width, µm) below which an image counts as high magnification, as in the SSL study.
FIELD_OF_VIEW_SPLIT_UM = 50.0


def magnification_bucket(
    field_of_view_um: float | None, threshold_um: float = FIELD_OF_VIEW_SPLIT_UM
) -> MagnificationBucket | None:
    """``"high"`` when the field of view is narrower than ``threshold_um``, ``"low"`` otherwise.

    Args:
        field_of_view_um: image width in micrometres (``None`` when the pixel size is unknown).
        threshold_um: the split; 50 µm by default (a 1024-px image at 48.8 nm/px).

    Returns:
        ``"high"``, ``"low"``, or ``None`` when the field of view is unknown (``None`` or NaN, as a manifest
        column holds it): an uncalibrated image is never guessed into a bucket.
    """
    if field_of_view_um is None or not math.isfinite(float(field_of_view_um)):
        return None
    return "high" if field_of_view_um < threshold_um else "low"


def iter_unlabeled(
    folders: str | Path | Iterable[str | Path],
    recursive: bool = True,
    crop_databar: bool | int = True,
    errors: list[InputError] | None = None,
) -> Iterator[SEMRecord]:
    """Yield one unlabeled :class:`SEMRecord` per image file, lazily.

    Args:
        folders: a folder, an image file, or several of either. Folders are scanned for ``.tif``, ``.tiff``,
            ``.png``, ``.jpg``, ``.jpeg`` (case-insensitive), sorted by path.
        recursive: also scan subfolders.
        crop_databar: ``True`` detects and crops each image's databar; ``False`` keeps the full frame; an
            integer crops exactly that many bottom rows from every image (explicit override).
        errors: if a list is given, unreadable files are logged, appended to it as :class:`InputError` and
            skipped (for folder-level scans that report a table of skipped files); if ``None`` the first
            bad file raises.

    Yields:
        Records with ``instances``/``semantic`` ``None``, ``pixel_size_nm`` from metadata, the magnification
        bucket when the field of view is known, and ``meta`` holding the :class:`ImageMeta` fields plus
        ``databar_rows`` (rows cropped, 0 when none).

    Raises:
        InputError: naming the folder or file, for a missing folder or (with ``errors=None``) a bad image.
    """
    for path in _image_paths(folders, recursive):
        try:
            yield _read_one(path, crop_databar)
        except InputError as exc:
            if errors is None:
                raise
            log.warning("skipping %s", exc)
            errors.append(exc)


def load_unlabeled(
    folders: str | Path | Iterable[str | Path],
    recursive: bool = True,
    crop_databar: bool | int = True,
    errors: list[InputError] | None = None,
) -> list[SEMRecord]:
    """All of :func:`iter_unlabeled` as a list (for small folders; use the generator for big pools)."""
    return list(iter_unlabeled(folders, recursive=recursive, crop_databar=crop_databar, errors=errors))


# --------------------------------------------------------------------------------------------------------------
# internals


def _image_paths(folders: str | Path | Iterable[str | Path], recursive: bool) -> list[Path]:
    items = [folders] if isinstance(folders, str | Path) else list(folders)
    paths: list[Path] = []
    for item in items:
        item = Path(item)
        if item.is_file():
            if item.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"unsupported file type {item.suffix!r}", item)
            paths.append(item)
        else:
            paths.extend(list_images(item, recursive=recursive))  # raises InputError for a missing folder
    return paths


def _read_one(path: Path, crop_databar: bool | int) -> SEMRecord:
    image, meta = load_image(path)
    rows = _databar_rows(image, crop_databar, path)
    image = image[: image.shape[0] - rows]
    info = _meta_dict(meta)
    info["databar_rows"] = rows
    # The field of view is the physical width; cropping rows does not change it.
    return SEMRecord(
        image=image,
        pixel_size_nm=meta.pixel_size_nm,
        source=str(path),
        magnification_bucket=magnification_bucket(meta.field_of_view_um),
        meta=info,
    )


def _databar_rows(image, crop_databar: bool | int, path: Path) -> int:
    if crop_databar is True:
        return detect_databar(image)
    if crop_databar is False or crop_databar is None:
        return 0
    rows = int(crop_databar)
    if not 0 <= rows < image.shape[0]:
        raise InputError(
            f"databar override of {rows} rows does not fit an image of {image.shape[0]} rows", path
        )
    return rows


def _meta_dict(meta: ImageMeta) -> dict:
    info = meta.to_dict()
    info.pop("shape", None)  # the record's image shape is authoritative after cropping
    return info
