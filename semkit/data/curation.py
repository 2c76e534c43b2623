"""Dataset curation: scan folders into a manifest, split deterministically, tile for SSL, nest ablation subsets.

The manifest is one row per readable image (a :class:`pandas.DataFrame`, saved as Parquet + CSV) with its size
after the databar crop, calibration, magnification bucket, quality measures (:mod:`semkit.data.quality`) and
perceptual-hash duplicate group. Every file that could not be used gets a row in the *skipped* table with the
reason; nothing is dropped silently and nothing in the input folders is ever written to.

Splits, pools and subsets are derived from image *names* through a seeded SHA-256 hash, so they do not depend on
the order in which files were listed, on absolute paths, or on the machine; duplicates (same perceptual-hash
group) always land in the same split so a copy of a test image never leaks into training.

The low/high magnification split at a 50 µm field of view follows the SSL-for-SEM study this toolkit reproduces
(images wider than 50 µm are "low" magnification overviews, narrower ones "high" magnification close-ups).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from semkit.data import quality
from semkit.data.databar import crop_databar as _crop
from semkit.data.databar import detect_databar
from semkit.data.folders import FIELD_OF_VIEW_SPLIT_UM, magnification_bucket
from semkit.data.io import IMAGE_SUFFIXES, load_image
from semkit.errors import InputError

logger = logging.getLogger(__name__)

#: Field of view (µm, image width) separating "low" (≥ threshold) from "high" (< threshold) magnification.
FOV_THRESHOLD_UM = FIELD_OF_VIEW_SPLIT_UM
#: Labeled split fractions (train, val, test) and the SSL pool split (ssl_train, ssl_eval).
LABELED_FRACTIONS = (0.65, 0.15, 0.20)
SSL_FRACTIONS = (0.8, 0.2)
#: Pretraining-size ablation: 1, 2, 4, ..., 64 % of the pool.
ABLATION_FRACTIONS = tuple(2**s / 100 for s in range(7))
#: Images with a side shorter than this (after the databar crop) are skipped: thumbnails and icons, not data.
MIN_IMAGE_SIDE = 16
#: Documentation and instrument side-car files that sit next to images and are not images themselves; they are
#: counted in the log but not listed as skipped images. Any other unsupported file is listed as skipped.
SIDECAR_SUFFIXES = (
    ".md",
    ".txt",
    ".csv",
    ".json",
    ".xml",
    ".yaml",
    ".yml",
    ".ini",
    ".hdr",
    ".log",
    ".pdf",
    ".parquet",
    ".db",
    ".html",
)

MANIFEST_COLUMNS = [
    "path",
    "relative_path",
    "name",
    "folder",
    "height",
    "width",
    "databar_rows",
    "original_dtype",
    "pixel_size_nm",
    "pixel_size_source",
    "field_of_view_um",
    "magnification",
    "detector",
    "magnification_bucket",
    "focus_score",
    "contrast",
    "rms_contrast",
    "structure_fraction",
    "near_empty",
    "phash",
    "duplicate_group",
]
SKIPPED_COLUMNS = ["path", "reason", "stage"]
TILE_COLUMNS = [
    "tile_path",
    "source",
    "name",
    "y",
    "x",
    "height",
    "width",
    "coverage",
    "pixel_size_nm",
    "magnification_bucket",
    "near_empty",
]

#: Where labels live relative to an image ``<root>/<image dir>/<stem>.<ext>``: ``(image dir, label pattern)``.
#: The pattern is relative to ``<root>``; a ``.*`` suffix matches any image suffix. Used by :func:`find_labels` and ``semkit curate --labels-layout``.
LABEL_LAYOUTS: dict[str, tuple[str, str]] = {
    # semkit's own layout (semkit.data.instance_folder; what the synthetic generator writes)
    "instance-folder": ("images", "labels/{stem}.tif"),
    # BAM TiO2 (Zenodo 4563942): instances/<stem>_m.tif next to images/
    "bam": ("images", "instances/{stem}_m.tif"),
    # uncertainty-aware particle dataset (semkit.data.uncertainty_dataset): any image suffix
    "uncertainty": ("Samples", "High_Confidence_Labels/{stem}.*"),
}

EdgePolicy = Literal["shift", "drop", "pad"]
#: How :func:`tile_image` treats the right/bottom remainder that a whole tile does not fit.
EDGE_POLICIES: dict[str, str] = {
    "shift": "the last tile of a row/column is moved back to end at the border (overlapping its neighbour): "
    "every pixel covered (for stride <= tile), nothing invented; images smaller than a tile give no "
    "tiles",
    "drop": "only tiles that fit at multiples of the stride; the remainder is not used",
    "pad": "partial tiles are padded by reflection and kept when at least min_coverage of them is image",
}


# ------------------------------------------------------------------------------------------------------------
# scanning


def scan_image(
    path: str | Path,
    crop_databar: bool | int = True,
    pixel_size_nm: float | None = None,
    fov_threshold_um: float = FOV_THRESHOLD_UM,
    require_pixel_size: bool = False,
) -> dict[str, Any]:
    """Manifest row of one image (all columns except ``duplicate_group``, ``folder`` and ``relative_path``).

    Args:
        path: image file.
        crop_databar: ``True`` detects the databar (:func:`semkit.data.databar.detect_databar`), ``False``
            keeps every row, an integer crops exactly that many bottom rows.
        pixel_size_nm: overrides the metadata pixel size (``pixel_size_source`` becomes ``"override"``).
        fov_threshold_um: see :func:`magnification_bucket`.
        require_pixel_size: raise when neither the metadata nor ``pixel_size_nm`` give a pixel size.

    Returns:
        dict keyed by :data:`MANIFEST_COLUMNS`. ``height``/``width`` are measured after the crop; the field of
        view is the cropped width times the pixel size. Missing numbers are NaN, missing strings ``None``.

    Raises:
        InputError: naming the file when it is unreadable, of an unsupported mode, too small, its databar
            override does not fit, or (with ``require_pixel_size``) it carries no calibration.
    """
    path = Path(path)
    image, meta = load_image(path)
    if isinstance(crop_databar, bool):
        rows = detect_databar(image) if crop_databar else 0
    else:
        rows = int(crop_databar)
    try:
        image, rows = _crop(image, rows)[:2]
    except InputError as exc:
        raise InputError(exc.reason, path) from exc
    h, w = image.shape
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(
            f"image is {h}x{w} pixels after the databar crop; curation needs at least "
            f"{MIN_IMAGE_SIDE} pixels a side",
            path,
        )
    if pixel_size_nm is not None:
        if not pixel_size_nm > 0:
            raise InputError(f"pixel size override must be positive, got {pixel_size_nm}")
        px, px_source = float(pixel_size_nm), "override"
    else:
        px, px_source = meta.pixel_size_nm, meta.pixel_size_source
    if px is None and require_pixel_size:
        raise InputError(
            "no pixel size in the metadata (Zeiss, FEI, ImageJ or TIFF resolution); pass a "
            "pixel size override to use this image",
            path,
        )
    fov = None if px is None else w * px / 1000.0
    row: dict[str, Any] = {
        "path": str(path),
        "name": path.stem,
        "height": h,
        "width": w,
        "databar_rows": int(rows),
        "original_dtype": meta.original_dtype,
        "pixel_size_nm": np.nan if px is None else float(px),
        "pixel_size_source": px_source,
        "field_of_view_um": np.nan if fov is None else fov,
        "magnification": np.nan if meta.magnification is None else float(meta.magnification),
        "detector": meta.detector,
        "magnification_bucket": magnification_bucket(fov, fov_threshold_um),
    }
    row.update(quality.image_quality(image))
    return row


def _scan_safe(path: Path, **kwargs) -> tuple[bool, dict[str, Any]]:
    """scan_image that returns the reason instead of raising (runs in worker processes)."""
    try:
        return True, scan_image(path, **kwargs)
    except InputError as exc:
        return False, {"path": str(path), "reason": exc.reason, "stage": "read"}


def _list_folder(folder: Path, recursive: bool) -> tuple[list[Path], list[dict], int]:
    """Image candidates, skipped non-image files and the number of ignored side-car files under ``folder``."""
    if not folder.is_dir():
        raise InputError("input folder does not exist or is not a directory", folder)
    pattern = "**/*" if recursive else "*"
    images, skipped, sidecars = [], [], 0
    for p in sorted(folder.glob(pattern)):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue  # hidden files (.DS_Store, .ipynb_checkpoints) and folders are not data
        suffix = p.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            images.append(p)
        elif suffix in SIDECAR_SUFFIXES:
            sidecars += 1
        else:
            skipped.append(
                {
                    "path": str(p),
                    "stage": "list",
                    "reason": f"unsupported file type {suffix or '(none)'!r}; semkit reads "
                    f"{', '.join(IMAGE_SUFFIXES)}",
                }
            )
    return images, skipped, sidecars


def scan_folders(
    folders: str | Path | Iterable[str | Path],
    recursive: bool = True,
    crop_databar: bool | int = True,
    pixel_size_nm: float | None = None,
    fov_threshold_um: float = FOV_THRESHOLD_UM,
    duplicate_max_distance: int = quality.DUPLICATE_MAX_DISTANCE,
    require_pixel_size: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan image folders into a manifest and a table of skipped files.

    Files that cannot be used (corrupt or truncated, unsupported mode or file type, too small, no pixel size
    when ``require_pixel_size``) are logged as warnings and listed in the skipped table; documentation side-car
    files (:data:`SIDECAR_SUFFIXES`) and hidden files are ignored. A file reached through two input folders is
    scanned once. The folders are only read.

    Args:
        folders: one folder or several; images are listed in folder order, sorted by path within a folder.
        recursive: also scan sub-folders.
        crop_databar: ``True`` detects the databar per image, ``False`` keeps all rows, an integer crops
            that many rows from every image.
        pixel_size_nm: pixel size for every image, overriding the metadata (for uncalibrated instruments).
        fov_threshold_um: low/high magnification boundary, see :func:`magnification_bucket`.
        duplicate_max_distance: perceptual-hash Hamming distance up to which images are duplicates.
        require_pixel_size: skip images without a pixel size instead of listing them with bucket ``None``.
        workers: processes reading images in parallel (1 = in this process).
        progress: show a tqdm progress bar.

    Returns:
        ``(manifest, skipped)``: ``manifest`` has :data:`MANIFEST_COLUMNS` (``duplicate_group`` is -1 for
        images without a duplicate, else a group id 0, 1, ...); ``skipped`` has :data:`SKIPPED_COLUMNS`
        (``stage`` is ``"list"`` for files that are not images, ``"read"`` for images that could not be used).

    Raises:
        InputError: if an input folder does not exist (a wrong argument, not a bad file).
    """
    from tqdm import tqdm

    if isinstance(folders, str | os.PathLike):
        folders = [folders]
    folders = [Path(f) for f in folders]
    if not folders:
        raise InputError("no input folders given")
    candidates: list[tuple[Path, Path]] = []
    skipped: list[dict] = []
    seen: dict[Path, Path] = {}
    n_sidecars = 0
    for folder in folders:
        images, skip, sidecars = _list_folder(folder, recursive)
        skipped += skip
        n_sidecars += sidecars
        for p in images:
            key = p.resolve()
            if key in seen:
                logger.info("%s: already scanned through %s", p, seen[key])
                continue
            seen[key] = folder
            candidates.append((folder, p))
    for s in skipped:
        logger.warning("skipped %s: %s", s["path"], s["reason"])
    if n_sidecars:
        logger.info("ignored %d documentation/side-car files (%s)", n_sidecars, ", ".join(SIDECAR_SUFFIXES))

    scan = partial(
        _scan_safe,
        crop_databar=crop_databar,
        pixel_size_nm=pixel_size_nm,
        fov_threshold_um=fov_threshold_um,
        require_pixel_size=require_pixel_size,
    )
    paths = [p for _, p in candidates]
    bar = tqdm(total=len(paths), desc="scanning images", unit="img", disable=not progress)
    if workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for r in pool.map(scan, paths, chunksize=max(1, len(paths) // (8 * workers))):
                results.append(r)
                bar.update()
    else:
        results = []
        for p in paths:
            results.append(scan(p))
            bar.update()
    bar.close()

    rows = []
    for (folder, p), (ok, row) in zip(candidates, results, strict=True):
        if ok:
            row["folder"] = str(folder)
            row["relative_path"] = p.relative_to(folder).as_posix()
            rows.append(row)
        else:
            logger.warning("skipped %s: %s", row["path"], row["reason"])
            skipped.append(row)
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest["duplicate_group"] = quality.duplicate_groups(list(manifest["phash"]), duplicate_max_distance)
    manifest = manifest.astype(
        {"height": "int64", "width": "int64", "databar_rows": "int64", "near_empty": "bool"}
    )
    n_uncal = int(manifest["pixel_size_nm"].isna().sum())
    logger.info(
        "scanned %d images, skipped %d files, %d without pixel size, %d in duplicate groups",
        len(manifest),
        len(skipped),
        n_uncal,
        int((manifest["duplicate_group"] >= 0).sum()),
    )
    return manifest, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)


def save_manifest(table: pd.DataFrame, path: str | Path, csv: bool = True) -> Path:
    """Write a manifest (or any curation table) as Parquet, plus a CSV copy beside it for spreadsheets.

    Args:
        table: the DataFrame.
        path: target file; the suffix is replaced by ``.parquet`` (and ``.csv`` for the copy).
        csv: also write the CSV.

    Returns:
        Path of the Parquet file.
    """
    path = Path(path).with_suffix(".parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    if csv:
        table.to_csv(path.with_suffix(".csv"), index=False)
    return path


def load_manifest(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`save_manifest` (Parquet)."""
    path = Path(path)
    if not path.exists():
        raise InputError("manifest file does not exist", path)
    return pd.read_parquet(path)


def find_labels(manifest: pd.DataFrame, layouts: Sequence[str] | None = None) -> pd.DataFrame:
    """Add ``label_path`` and ``label_layout`` columns by looking for labels where known layouts keep them.

    For an image ``<root>/<image dir>/<stem>.<ext>`` each layout of :data:`LABEL_LAYOUTS` names the label file
    relative to ``<root>``; the first layout (in the given order) whose file exists wins. Images without a label
    get ``None`` in both columns.

    Args:
        manifest: table with a ``path`` column.
        layouts: names from :data:`LABEL_LAYOUTS` to try (default: all).

    Returns:
        A copy of ``manifest`` with the two columns added.
    """
    layouts = list(LABEL_LAYOUTS) if layouts is None else list(layouts)
    for name in layouts:
        if name not in LABEL_LAYOUTS:
            raise InputError(f"unknown label layout {name!r}; choose from {', '.join(LABEL_LAYOUTS)}")
    label_paths, found = [], []
    for p in map(Path, manifest["path"]):
        hit = None
        for name in layouts:
            image_dir, pattern = LABEL_LAYOUTS[name]
            if p.parent.name != image_dir:
                continue
            base = p.parent.parent / pattern.format(stem=p.stem)
            options = [base.with_suffix(sfx) for sfx in IMAGE_SUFFIXES] if base.suffix == ".*" else [base]
            candidate = next((c for c in options if c.is_file()), None)
            if candidate is not None:
                hit = (str(candidate), name)
                break
        label_paths.append(None if hit is None else hit[0])
        found.append(None if hit is None else hit[1])
    out = manifest.copy()
    out["label_path"] = pd.Series(label_paths, index=out.index, dtype=object)
    out["label_layout"] = pd.Series(found, index=out.index, dtype=object)
    return out


# ------------------------------------------------------------------------------------------------------------
# splits and subsets


def _hash_key(name: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\x00{name}".encode()).hexdigest()


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items into ``len(fractions)`` parts by the largest-remainder (Hamilton) method.

    Each part first gets ``floor(f·n)``; the items left over go one each to the parts with the largest
    fractional remainders (ties to the earlier part). Then, if ``n`` is at least the number of parts, every
    empty part takes one item from the currently largest part, so e.g. 3 images split 65/15/20 give 1/1/1.

    Returns:
        Counts that sum to ``n``.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or len(fr) == 0 or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise InputError(f"split fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    quota = fr * n
    counts = np.floor(quota + 1e-9).astype(int)
    remainder = quota - counts
    for i in sorted(range(len(fr)), key=lambda i: (-remainder[i], i))[: n - counts.sum()]:
        counts[i] += 1
    if n >= len(fr):
        for i in range(len(fr)):
            if counts[i] == 0 and fr[i] > 0:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[i] += 1
    return [int(c) for c in counts]


def _as_table(data: pd.DataFrame | Iterable[str]) -> tuple[pd.DataFrame, bool]:
    if isinstance(data, pd.DataFrame):
        if "name" not in data.columns:
            raise InputError(f"table needs a 'name' column; it has {', '.join(map(str, data.columns))}")
        return data.copy(), True
    names = [str(n) for n in data]
    return pd.DataFrame({"name": names}), False


def _assign(
    table: pd.DataFrame,
    fractions: Sequence[float],
    labels: Sequence[str],
    seed: int,
    stratify: str | None,
    group: str | None,
) -> pd.Series:
    """Split labels for every row: strata by ``stratify``, units by ``group``, order by hashed names."""
    if len(labels) != len(fractions):
        raise InputError(f"{len(fractions)} fractions for {len(labels)} splits {tuple(labels)}")
    out = pd.Series([None] * len(table), index=table.index, dtype=object)
    if table.empty:
        return out
    keys = [_hash_key(n, seed) for n in table["name"]]
    tiebreak = table["relative_path"] if "relative_path" in table else table["name"]
    frame = pd.DataFrame(
        {"key": keys, "tie": tiebreak.astype(str).to_numpy(), "name": table["name"].to_numpy()},
        index=table.index,
    )
    if group is not None and group in table:
        g = table[group].to_numpy()
        # A duplicate group is one unit; singletons (-1) are their own unit.
        frame["unit"] = [f"g{v}" if v is not None and v >= 0 else f"i{i}" for i, v in enumerate(g)]
    else:
        frame["unit"] = [f"i{i}" for i in range(len(table))]
    frame["stratum"] = (
        table[stratify].astype(object).where(table[stratify].notna(), "(unknown)")
        if stratify is not None
        else "(all)"
    )
    for _, stratum in frame.groupby("stratum", sort=True, dropna=False):
        units = stratum.groupby("unit").agg(key=("key", "min"), tie=("tie", "min"))
        units = units.sort_values(["key", "tie"])
        counts = split_counts(len(units), fractions)
        unit_label = np.repeat(np.asarray(labels, dtype=object), counts)
        mapping = dict(zip(units.index, unit_label, strict=True))
        out.loc[stratum.index] = stratum["unit"].map(mapping).to_numpy()
    return out


def split_labeled(
    data: pd.DataFrame | Iterable[str],
    fractions: Sequence[float] = LABELED_FRACTIONS,
    seed: int = 0,
    stratify: str | None = "magnification_bucket",
    group: str | None = "duplicate_group",
    column: str = "split",
) -> pd.DataFrame:
    """Deterministic train/val/test split, per magnification bucket, duplicates kept together.

    Within each stratum (images without a bucket form their own stratum) the split units (single images, or
    whole duplicate groups) are ordered by ``sha256(seed, name)`` and cut into consecutive runs whose sizes
    come from :func:`split_counts` (largest remainder; a stratum with at least 3 units gets at least one unit
    in every split; 2 units go to train and test, 1 unit to train). The result therefore does not depend on the
    order of the input rows, and a given name keeps its split for a given seed on any machine.

    Args:
        data: manifest (needs ``name``; ``relative_path`` breaks ties between equal names) or a list of names.
        fractions: (train, val, test) fractions summing to 1.
        seed: changes the order.
        stratify: column to stratify by; ignored for a plain list of names, an error if a table lacks it.
        group: column of duplicate groups (-1 = none); used when present.
        column: name of the added column.

    Returns:
        Copy of the table (or a ``name`` table for a list) with ``column`` in {"train", "val", "test"}.
    """
    table, is_table = _as_table(data)
    if stratify is not None and stratify not in table:
        if is_table:
            raise InputError(
                f"cannot stratify by {stratify!r}: no such column "
                f"(columns: {', '.join(map(str, table.columns))})"
            )
        stratify = None
    table[column] = _assign(table, fractions, ("train", "val", "test"), seed, stratify, group)
    return table


def split_ssl(
    data: pd.DataFrame | Iterable[str],
    fractions: Sequence[float] = SSL_FRACTIONS,
    seed: int = 0,
    group: str | None = "duplicate_group",
    column: str = "ssl_split",
) -> pd.DataFrame:
    """Deterministic 80/20 ``ssl_train``/``ssl_eval`` split of the unlabeled pretraining pool.

    Same hashing and rounding as :func:`split_labeled`, without strata (the SSL pool mixes magnifications).

    Returns:
        Copy of the table (or a ``name`` table for a list) with ``column`` in {"ssl_train", "ssl_eval"}.
    """
    table, _ = _as_table(data)
    table[column] = _assign(table, fractions, ("ssl_train", "ssl_eval"), seed, None, group)
    return table


def assign_splits(
    manifest: pd.DataFrame,
    fractions: Sequence[float] = LABELED_FRACTIONS,
    ssl_fractions: Sequence[float] = SSL_FRACTIONS,
    seed: int = 0,
    stratify: str | None = "magnification_bucket",
) -> pd.DataFrame:
    """Labeled splits for labeled images and the SSL pool split, in one table.

    * ``split``: train/val/test (:func:`split_labeled`) for rows with a ``label_path`` (from
      :func:`find_labels`), ``None`` for the others.
    * ``ssl_split``: ssl_train/ssl_eval (:func:`split_ssl`) for the pretraining pool, which is every unlabeled
      image plus the labeled *train* images; val/test images, and any image in a duplicate group with a
      val/test member, stay out of it so pretraining never sees an evaluation image. ``None`` otherwise.

    Returns:
        Copy of ``manifest`` with the two columns.

    Raises:
        InputError: if ``manifest`` has no ``label_path`` column (run :func:`find_labels` first; to split a
            table that is all labeled, use :func:`split_labeled`).
    """
    if "label_path" not in manifest:
        raise InputError("assign_splits needs a 'label_path' column; run find_labels(manifest) first")
    out = manifest.copy()
    labeled = out["label_path"].notna()
    out["split"] = pd.Series([None] * len(out), index=out.index, dtype=object)
    if labeled.any():
        out.loc[labeled, "split"] = split_labeled(out[labeled], fractions, seed, stratify)["split"]
    held_out = out["split"].isin(["val", "test"])
    if "duplicate_group" in out:
        groups = set(out.loc[held_out & (out["duplicate_group"] >= 0), "duplicate_group"])
        held_out |= out["duplicate_group"].isin(groups) & (out["duplicate_group"] >= 0)
    pool = ~held_out & (~labeled | (out["split"] == "train"))
    out["ssl_split"] = pd.Series([None] * len(out), index=out.index, dtype=object)
    if pool.any():
        out.loc[pool, "ssl_split"] = split_ssl(out[pool], ssl_fractions, seed)["ssl_split"]
    return out


def ablation_subsets(
    names: Iterable[str], fractions: Sequence[float] = ABLATION_FRACTIONS, seed: int = 0
) -> dict[float, list[str]]:
    """Nested subsets of a pretraining pool for the pretraining-size ablation.

    The names are ordered once by ``sha256(seed, name)``; the subset for fraction ``f`` is the first
    ``max(1, floor(f·N + 0.5))`` names (round half up) of that order, so every smaller subset is contained in
    every larger one and the result does not depend on the input order.

    Args:
        names: unique image (or tile) names.
        fractions: values in (0, 1]; default 2^s/100 for s = 0..6 (1 % ... 64 %).
        seed: changes the order.

    Returns:
        dict fraction → list of names in hash order (each list a prefix of the longer ones).

    Raises:
        InputError: for an empty pool, repeated names or a fraction outside (0, 1].
    """
    names = [str(n) for n in names]
    if not names:
        raise InputError("cannot draw ablation subsets from an empty pool")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise InputError(f"ablation subsets need unique names; repeated: {', '.join(dup)}")
    for f in fractions:
        if not 0 < f <= 1:
            raise InputError(f"ablation fractions must be in (0, 1], got {f}")
    order = sorted(names, key=lambda n: (_hash_key(n, seed), n))
    return {float(f): order[: max(1, int(math.floor(f * len(order) + 0.5)))] for f in fractions}


def curation_summary(
    manifest: pd.DataFrame,
    skipped: pd.DataFrame | None = None,
    tiles: pd.DataFrame | None = None,
    subsets: dict[float, list[str]] | None = None,
) -> dict[str, Any]:
    """Scalar results of a curation run (what notebook 01 writes to ``metrics.json``).

    Returns:
        dict with ``n_images``, ``n_skipped``, ``n_uncalibrated``, ``n_near_empty``, ``n_duplicate_groups``,
        ``n_in_duplicate_groups``, ``n_bucket_low``/``_high``/``_unknown``, ``n_train``/``_val``/``_test``
        and ``n_ssl_train``/``_eval`` (when the split columns exist), ``n_tiles`` (with ``tiles``) and
        ``ablation_sizes`` (fraction → size, with ``subsets``).
    """
    groups = manifest["duplicate_group"] if "duplicate_group" in manifest else pd.Series(dtype="int64")
    bucket = (
        manifest["magnification_bucket"] if "magnification_bucket" in manifest else pd.Series(dtype=object)
    )
    out: dict[str, Any] = {
        "n_images": len(manifest),
        "n_skipped": 0 if skipped is None else len(skipped),
        "n_uncalibrated": int(manifest["pixel_size_nm"].isna().sum())
        if "pixel_size_nm" in manifest
        else None,
        "n_near_empty": int(manifest["near_empty"].sum()) if "near_empty" in manifest else None,
        "n_duplicate_groups": int(groups[groups >= 0].nunique()),
        "n_in_duplicate_groups": int((groups >= 0).sum()),
        "n_bucket_low": int((bucket == "low").sum()),
        "n_bucket_high": int((bucket == "high").sum()),
        "n_bucket_unknown": int(bucket.isna().sum()),
    }
    if "split" in manifest:
        out.update({f"n_{k}": int((manifest["split"] == k).sum()) for k in ("train", "val", "test")})
    if "ssl_split" in manifest:
        out.update({f"n_{k}": int((manifest["ssl_split"] == k).sum()) for k in ("ssl_train", "ssl_eval")})
    if tiles is not None:
        out["n_tiles"] = len(tiles)
    if subsets is not None:
        out["ablation_sizes"] = {str(f): len(v) for f, v in subsets.items()}
    return out


# ------------------------------------------------------------------------------------------------------------
# tiling


def tile_starts(length: int, tile: int, stride: int, edge: EdgePolicy = "shift") -> list[int]:
    """Start offsets of tiles along one axis of ``length`` pixels (see :data:`EDGE_POLICIES`)."""
    if edge not in EDGE_POLICIES:
        raise InputError(f"unknown edge policy {edge!r}; choose from {', '.join(EDGE_POLICIES)}")
    if tile < 1 or stride < 1:
        raise InputError(f"tile ({tile}) and stride ({stride}) must be positive")
    if edge == "pad":
        return list(range(0, length, stride)) if length > 0 else []
    if length < tile:
        return []
    starts = list(range(0, length - tile + 1, stride))
    if edge == "shift" and starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def tile_image(
    image: np.ndarray,
    tile: int = 640,
    stride: int | None = None,
    edge: EdgePolicy = "shift",
    min_coverage: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut an image into square tiles without rescaling.

    Args:
        image: (H, W) array.
        tile: tile edge in pixels.
        stride: step between tile starts; ``None`` = ``tile`` (no overlap, except the shifted last tile).
        edge: remainder policy, one of :data:`EDGE_POLICIES` (default ``"shift"``).
        min_coverage: for ``edge="pad"``: keep a padded tile only if at least this fraction of it is image.

    Returns:
        ``(tiles, offsets, coverage)``: tiles (N, tile, tile) of the image's dtype, offsets (N, 2) int64 of
        (y, x) top-left corners in image coordinates, coverage (N,) float fraction of real pixels (1.0 unless
        padded). N = 0 (arrays of shape (0, tile, tile) and (0, 2)) when nothing fits, e.g. an image smaller
        than the tile with the default policy.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"tile_image needs a 2-D image, got shape {image.shape}")
    stride = tile if stride is None else stride
    h, w = image.shape
    ys, xs = tile_starts(h, tile, stride, edge), tile_starts(w, tile, stride, edge)
    tiles, offsets, cover = [], [], []
    for y in ys:
        for x in xs:
            crop = image[y : y + tile, x : x + tile]
            frac = crop.size / float(tile * tile)
            if crop.shape != (tile, tile):
                if frac < min_coverage:
                    continue
                # Reflection keeps the local texture statistics; zeros would add a fake dark edge.
                crop = np.pad(crop, ((0, tile - crop.shape[0]), (0, tile - crop.shape[1])), mode="symmetric")
            tiles.append(crop)
            offsets.append((y, x))
            cover.append(frac)
    if not tiles:
        return (
            np.zeros((0, tile, tile), dtype=image.dtype),
            np.zeros((0, 2), dtype=np.int64),
            np.zeros(0, dtype=np.float64),
        )
    return np.stack(tiles), np.asarray(offsets, dtype=np.int64), np.asarray(cover, dtype=np.float64)


def _to_stored(image: np.ndarray, dtype: str) -> np.ndarray:
    """Back from float [0, 1] to the file's sample type (exact for 8- and 16-bit sources)."""
    if dtype in ("uint8", "bool"):
        return np.rint(image * 255).astype(np.uint8)
    if dtype == "uint16":
        return np.rint(image * 65535).astype(np.uint16)
    return image.astype(np.float32)


def write_tiles(
    manifest: pd.DataFrame,
    out_dir: str | Path,
    tile: int = 640,
    stride: int | None = None,
    edge: EdgePolicy = "shift",
    min_coverage: float = 0.5,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cut every manifest image (databar cropped as recorded) into TIFF tiles for SSL pretraining.

    Tiles go to ``out_dir/<image>/<image>_y<y>_x<x>.tif`` in the source's sample type (8-bit stays 8-bit) with
    the pixel size as an ImageJ calibration; the tiles table is saved as ``out_dir/tiles.parquet`` (+ CSV).
    Images that give no tile (smaller than the tile under the ``"shift"``/``"drop"`` policies) or can no longer
    be read are listed in the returned skipped table (stage ``"tile"``) and logged.

    Args:
        manifest: from :func:`scan_folders` (needs ``path``, ``name``, ``databar_rows``, ``original_dtype``,
            ``pixel_size_nm``).
        out_dir: output folder (created).
        tile, stride, edge, min_coverage: see :func:`tile_image`.
        progress: show a tqdm progress bar.

    Returns:
        ``(tiles, skipped)``: ``tiles`` has :data:`TILE_COLUMNS` (plus ``split``/``ssl_split`` copied from the
        manifest when present; ``tile_path`` is relative to ``out_dir``); ``skipped`` has
        :data:`SKIPPED_COLUMNS`.
    """
    import tifffile
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    carry = [c for c in ("split", "ssl_split") if c in manifest]
    # Folder names must be unique even when two input folders hold files of the same name.
    counts = manifest["name"].value_counts()
    seen: dict[str, int] = {}
    rows, skipped = [], []
    for _, rec in tqdm(
        manifest.iterrows(), total=len(manifest), desc="tiling", unit="img", disable=not progress
    ):
        name = str(rec["name"])
        seen[name] = seen.get(name, 0) + 1
        unit = name if counts[name] == 1 else f"{name}-{seen[name]}"
        try:
            image, _ = load_image(rec["path"])
            image = _crop(image, int(rec["databar_rows"]))[0]
        except InputError as exc:
            skipped.append({"path": str(rec["path"]), "reason": exc.reason, "stage": "tile"})
            logger.warning("skipped %s while tiling: %s", rec["path"], exc.reason)
            continue
        tiles, offsets, cover = tile_image(image, tile, stride, edge, min_coverage)
        if len(tiles) == 0:
            reason = (
                f"image {image.shape[0]}x{image.shape[1]} gives no {tile}x{tile} tile under edge policy "
                f"{edge!r} (never rescaled; edge='pad' pads small images)"
            )
            skipped.append({"path": str(rec["path"]), "reason": reason, "stage": "tile"})
            logger.warning("skipped %s while tiling: %s", rec["path"], reason)
            continue
        px = rec["pixel_size_nm"]
        kwargs: dict = {}
        if px is not None and np.isfinite(px):
            kwargs = {"imagej": True, "resolution": (1.0 / px, 1.0 / px), "metadata": {"unit": "nm"}}
        (out_dir / unit).mkdir(exist_ok=True)
        for t, (y, x), c in zip(tiles, offsets, cover, strict=True):
            rel = f"{unit}/{unit}_y{y:05d}_x{x:05d}.tif"
            tifffile.imwrite(out_dir / rel, _to_stored(t, str(rec["original_dtype"])), **kwargs)
            row = {
                "tile_path": rel,
                "source": str(rec["path"]),
                "name": name,
                "y": int(y),
                "x": int(x),
                "height": tile,
                "width": tile,
                "coverage": float(c),
                "pixel_size_nm": px,
                "magnification_bucket": rec.get("magnification_bucket"),
                "near_empty": quality.is_near_empty(t),
            }
            row.update({k: rec[k] for k in carry})
            rows.append(row)
    tiles_df = pd.DataFrame(rows, columns=TILE_COLUMNS + carry)
    save_manifest(tiles_df, out_dir / "tiles.parquet")
    return tiles_df, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)


# ------------------------------------------------------------------------------------------------------------
# demo input


def write_curation_demo(
    root: str | Path, n: int = 12, seed: int = 0, size: int = 512, pixel_size_nm: float = 7.5
) -> Path:
    """A small folder that exercises every branch of curation (used by notebook 01 and the tests).

    Writes ``root/images`` + ``root/labels`` + ``root/certainty`` in the instance-folder layout with
    :func:`semkit.data.synthetic.write_synthetic_dataset`:

    * ``synthetic_s<seed>_<i>``: ``n // 2`` images without a databar,
    * ``synthetic_s<seed+1>_<i>``: ``n - n // 2`` images with a 64-row databar below the ``size`` rows,
    * ``near_empty_s<seed+2>_0000``: bare substrate without particles (near-empty),
    * ``duplicate_of_<first>``: an exact copy of the first image and its label (a duplicate group),
    * ``images/truncated.tif``: the first 2 kB of the second image, which no reader can decode (a skip).

    Args:
        root: output folder (created). Scan ``root/images``; ``root/labels`` holds label maps, not images.
        n: number of regular synthetic images (at least 2).
        seed: generator seed.
        size: image height and width without the databar.
        pixel_size_nm: calibration written into the files (512 px at 7.5 nm is 3.84 µm wide: "high").

    Returns:
        ``root``.
    """
    from semkit.data.synthetic import SyntheticConfig, write_synthetic_dataset

    if n < 2:
        raise InputError(f"the curation demo needs at least 2 images, got {n}")
    root = Path(root)
    base = SyntheticConfig(height=size, width=size, pixel_size_nm=pixel_size_nm)
    parts = [
        (n // 2, seed, base, "synthetic_"),
        (n - n // 2, seed + 1, replace(base, databar_rows=64), "synthetic_"),
        (1, seed + 2, replace(base, n_particles=(0, 0)), "near_empty_"),
    ]
    for sub in ("images", "labels", "certainty"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for count, part_seed, config, prefix in parts:
        # Each part goes through a scratch folder; names carry the seed (synthetic_s<seed>_<i>), never collide.
        tmp = root / f".part_{part_seed}"
        write_synthetic_dataset(tmp, count, seed=part_seed, config=config)
        for sub in ("images", "labels", "certainty"):
            for f in sorted((tmp / sub).glob("*")) if (tmp / sub).is_dir() else []:
                shutil.move(str(f), root / sub / f.name.replace("synthetic_", prefix, 1))
        shutil.rmtree(tmp)
    images = sorted((root / "images").glob("synthetic_*.tif"))
    first, second = images[0], images[1]
    for sub in ("images", "labels"):
        if (root / sub / first.name).exists():
            shutil.copyfile(root / sub / first.name, root / sub / f"duplicate_of_{first.name}")
    (root / "images" / "truncated.tif").write_bytes(second.read_bytes()[:2048])
    return root
