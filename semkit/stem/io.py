"""A folder of real HAADF images plus a CSV of element counts → records for the boxing pipeline.

The CSV has one row per image: a ``file`` column (file name, with or without suffix, or a path relative to the
folder) and an ``n_elements`` column (``elements`` is accepted too). Images are read with
:func:`semkit.data.load_image`, so 8/16-bit TIFF and PNG work and the pixel size comes from the file's metadata.
"""

from __future__ import annotations

from pathlib import Path

from semkit.data.io import list_images, load_image
from semkit.data.records import SEMRecord
from semkit.errors import InputError

_COUNT_COLUMNS = ("n_elements", "elements")


def read_element_counts(csv_path: str | Path) -> dict[str, int]:
    """Read ``file → element count`` from a CSV (keys: the ``file`` column as written and its stem).

    Raises:
        InputError: naming the CSV, if it is missing, lacks the columns, or holds a count that is not a
            positive integer (the message names the row's file).
    """
    import pandas as pd

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError("element-count CSV does not exist", csv_path)
    try:
        frame = pd.read_csv(csv_path)
    except Exception as exc:  # pandas raises several parser errors
        raise InputError(f"cannot read CSV ({type(exc).__name__}: {exc})", csv_path) from exc
    count_col = next((c for c in _COUNT_COLUMNS if c in frame.columns), None)
    if "file" not in frame.columns or count_col is None:
        raise InputError(
            f"CSV needs a 'file' column and an 'n_elements' column, found {list(frame.columns)}", csv_path
        )
    counts: dict[str, int] = {}
    for name, value in zip(frame["file"].astype(str), frame[count_col], strict=True):
        try:
            n = int(value)
            if n != float(value) or n < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(f"element count for {name!r} must be a positive integer, got {value!r}",
                             csv_path) from None
        counts[name] = n
        counts.setdefault(Path(name).name, n)
        counts.setdefault(Path(name).stem, n)
    return counts


def load_haadf_folder(
    folder: str | Path, counts_csv: str | Path | None = None, n_elements: int | None = None
) -> list[SEMRecord]:
    """Load every TIFF/PNG/JPEG under ``folder`` as a record with its element count.

    Args:
        folder: image folder (searched recursively).
        counts_csv: CSV of element counts per file; defaults to ``folder/elements.csv`` when it exists.
        n_elements: count for images the CSV does not list (``None``: such images are an error).

    Returns:
        Records with ``meta['n_elements']`` set, in sorted file order.

    Raises:
        InputError: naming the file, for an unreadable image, or an image without an element count (naming the
            CSV, if any, that lacks it); naming the folder when it holds no images.
    """
    folder = Path(folder)
    paths = list_images(folder)
    if not paths:
        raise InputError("no TIFF/PNG/JPEG images in this folder", folder)
    if counts_csv is None and (folder / "elements.csv").is_file():
        counts_csv = folder / "elements.csv"
    counts = read_element_counts(counts_csv) if counts_csv is not None else {}
    records = []
    for path in paths:
        rel = path.relative_to(folder).as_posix()
        n = counts.get(rel, counts.get(path.name, counts.get(path.stem, n_elements)))
        if n is None:
            where = f"in {counts_csv}" if counts_csv is not None else "(no counts CSV given)"
            raise InputError(f"no element count {where}; add a row '{path.name},N' or pass a default", path)
        image, meta = load_image(path)
        records.append(
            SEMRecord(image=image, pixel_size_nm=meta.pixel_size_nm, source=str(path),
                      meta={"n_elements": int(n), "original_dtype": meta.original_dtype})
        )
    return records
