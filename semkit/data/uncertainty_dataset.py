"""The labeled set of the uncertainty-aware SEM particle segmentation study.

Paper: L. Rettenberger, N. J. Szymanski, Y. Zeng, J. Schuetzke, S. Wang, G. Ceder, M. Reischl,
"Uncertainty-aware particle segmentation for electron microscopy at varied length scales",
npj Computational Materials 10, 124 (2024), doi:10.1038/s41524-024-01302-w.
Code: github.com/lrettenberger/Uncertainty-Aware-Particle-Segmentation-for-SEM.

Layout read here (one *set* per magnification; file stems pair the three folders)::

    <root>/<set>/Samples/NAME.tif                   grayscale SEM image (Phenom desktop SEM, 1920 × 1200 at low
                                                    magnification)
    <root>/<set>/High_Confidence_Labels/NAME.tif    instance label map of the particles annotated with high
                                                    confidence (0 = background, one integer per particle)
    <root>/<set>/Low_Confidence_Labels/NAME.tif     instance label map of the particles annotated with low
                                                    confidence

``<root>`` may itself be a set (``<root>/Samples``) or hold several (e.g. a low- and a high-magnification set);
every folder named ``Samples`` under it is one set. Folder names are matched case-insensitively.

What the sources say, and what is inferred:

* The folder names and the two magnification sets are those of the published data set as described in semkit's
  issue 2. The data set's own README was not reachable through the sources available when this adapter was
  written, so the encoding below is inferred from the authors' code and stated here so it can be checked.
* The repository's README splits scans at 10,000× (high magnification above, low below) and ships one model
  per set. ``export_low_magnification/model.py`` predicts two particle sets, *confident* and *not confident*,
  makes them mutually exclusive (``conf_not_conf_exclusive``: a not-confident particle whose IoU with a
  confident one reaches 0.49 is dropped), and ``run_model.py`` writes them as separate uint16 instance label
  maps (``*_uint16_instance_mask_confident``, ``*_not_confident``, ``*_combined``). The training code
  (``DLIP/data/base_classes/segmentation/base_seg_dataset.py``) pairs a samples folder with a labels folder by
  file stem and reads both with ``tifffile``. Hence: one instance label map per confidence level, paired by
  stem.

How the two maps become one record (``instances`` + ``certain``):

1. High-confidence particles get labels 1..N_high (in increasing order of their original ids), certain.
2. Low-confidence particles get the following labels, uncertain. A low-confidence particle of which at least
   ``duplicate_overlap`` of the pixels are also labelled high-confidence is the same particle annotated twice
   and is dropped (the authors' exclusivity rule); otherwise it keeps the pixels not claimed by a
   high-confidence particle (a label map holds one label per pixel; the high-confidence annotation wins).
3. Counts go to ``meta``: ``n_high``, ``n_low``, ``n_low_dropped``.

Set ``label_encoding="binary"`` when the label files are binary masks (particles white, separated by
background lines) instead of label maps; instances are then their 4-connected components.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np

from semkit.data.bam import instances_from_outline_mask
from semkit.data.databar import detect_databar
from semkit.data.folders import magnification_bucket as bucket_from_fov
from semkit.data.io import IMAGE_SUFFIXES, list_images, load_image, load_labels
from semkit.data.records import MagnificationBucket, SEMRecord
from semkit.errors import InputError

SAMPLES_DIR = "Samples"
HIGH_DIR = "High_Confidence_Labels"
LOW_DIR = "Low_Confidence_Labels"
_MAG_NAME = re.compile(r"(low|high)[\W_]*mag", re.IGNORECASE)


def load_uncertainty_dataset(
    root: str | Path,
    magnification_bucket: MagnificationBucket | None = None,
    databar_rows: int | None = 0,
    label_encoding: Literal["instances", "binary"] = "instances",
    duplicate_overlap: float = 0.5,
) -> list[SEMRecord]:
    """Read every set under ``root`` into records with instance labels and certain/uncertain flags.

    Args:
        root: a set folder (holding ``Samples/``) or a folder of sets.
        magnification_bucket: force ``"low"``/``"high"`` for all records. ``None`` takes it from the set's
            folder name (``Low_Magnification``, ``high-mag``, ...), else from the field of view when the image
            carries a pixel size, else leaves it ``None``.
        databar_rows: bottom rows to cut from images and labels: 0 (default) cuts none, ``None`` detects the
            bar, a positive integer is an explicit override.
        label_encoding: ``"instances"`` (label maps) or ``"binary"`` (masks whose 4-connected components are
            the particles).
        duplicate_overlap: a low-confidence particle with at least this fraction of its pixels also labelled
            high-confidence is dropped as a duplicate.

    Returns:
        One record per sample, sorted by set then name; ``instances`` int32 (H, W), ``certain`` bool (N,) with
        the high-confidence particles first.

    Raises:
        InputError: naming the folder or file, when no set is found, a label folder or file is missing, a label
            map's size differs from its image, or a label file is not single-channel integer.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a directory", root)
    if label_encoding not in ("instances", "binary"):
        raise InputError(f"label_encoding must be 'instances' or 'binary', got {label_encoding!r}")
    sample_dirs = sorted(d for d in [root, *root.rglob("*")] if d.is_dir() and d.name.lower() == "samples")
    if not sample_dirs:
        raise InputError(f"no {SAMPLES_DIR}/ folder found", root)
    records = []
    for samples in sample_dirs:
        set_dir = samples.parent
        high_dir, low_dir = _subdir(set_dir, HIGH_DIR), _subdir(set_dir, LOW_DIR)
        bucket = magnification_bucket or _bucket_from_name(set_dir, root)
        images = list_images(samples, recursive=False)
        if not images:
            raise InputError("no images found", samples)
        for img_path in images:
            records.append(
                _load_one(
                    img_path,
                    high_dir,
                    low_dir,
                    bucket,
                    databar_rows,
                    label_encoding,
                    duplicate_overlap,
                    set_name=str(set_dir.relative_to(root.parent)),
                )
            )
    return records


def combine_confidence_labels(
    high: np.ndarray, low: np.ndarray, duplicate_overlap: float = 0.5
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Merge a high- and a low-confidence instance label map into one map with certainty flags.

    Args:
        high: int (H, W) label map of high-confidence particles (0 = background, ids need not be consecutive).
        low: int (H, W) label map of low-confidence particles.
        duplicate_overlap: low-confidence particles with at least this fraction of pixels inside high-confidence
            particles are dropped as duplicates.

    Returns:
        ``(instances, certain, counts)``: int32 (H, W) labels 1..N (high first, each group in increasing order
        of the original ids), bool (N,) flags, and ``{"n_high", "n_low", "n_low_dropped"}``.
    """
    if high.shape != low.shape:
        raise InputError(f"label maps differ in shape: {high.shape} vs {low.shape}")
    high_ids = np.unique(high[high > 0])
    out = np.zeros(high.shape, dtype=np.int32)
    # searchsorted maps each original id to its rank, giving consecutive labels without a Python loop.
    out[high > 0] = np.searchsorted(high_ids, high[high > 0]) + 1
    low_ids = np.unique(low[low > 0])
    ranks = np.searchsorted(low_ids, low[low > 0])
    total = np.bincount(ranks, minlength=len(low_ids))
    covered = np.bincount(ranks[high[low > 0] > 0], minlength=len(low_ids))
    keep = covered < duplicate_overlap * total
    # Surviving low-confidence particles are numbered after the high-confidence ones.
    new_ids = np.zeros(len(low_ids), dtype=np.int32)
    new_ids[keep] = len(high_ids) + 1 + np.arange(int(keep.sum()), dtype=np.int32)
    free = (low > 0) & (out == 0)
    out[free] = new_ids[np.searchsorted(low_ids, low[free])]
    n_low = int(keep.sum())
    present = np.bincount(out.ravel(), minlength=len(high_ids) + n_low + 1)[len(high_ids) + 1 :] > 0
    if not present.all():
        # A kept low-confidence particle lost all its pixels (not possible with duplicate_overlap <= 1, kept as
        # a guard): renumber so labels stay consecutive.
        remap = np.concatenate(
            [[0], np.arange(1, len(high_ids) + 1), np.where(present, len(high_ids) + np.cumsum(present), 0)]
        ).astype(np.int32)
        out = remap[out]
        n_low = int(present.sum())
    certain = np.zeros(len(high_ids) + n_low, dtype=bool)
    certain[: len(high_ids)] = True
    counts = {"n_high": int(len(high_ids)), "n_low": n_low, "n_low_dropped": int(len(low_ids) - n_low)}
    return out, certain, counts


# --------------------------------------------------------------------------------------------------------------
# internals


def _subdir(set_dir: Path, name: str) -> Path:
    for child in set_dir.iterdir():
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    raise InputError(f"missing {name}/ folder next to {SAMPLES_DIR}/", set_dir / name)


def _bucket_from_name(set_dir: Path, root: Path) -> MagnificationBucket | None:
    # The set folder and its parents up to root are searched (nearest first), never the label folder names.
    for folder in (set_dir, *set_dir.parents):
        m = _MAG_NAME.search(folder.name)
        if m:
            return m.group(1).lower()  # type: ignore[return-value]
        if folder in (root, root.parent):
            break
    return None


def _label_file(folder: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise InputError(f"missing label file for sample {stem!r}", folder / f"{stem}.tif")


def _read_labels(path: Path, width: int, encoding: str) -> np.ndarray:
    labels = load_labels(path)
    if labels.ndim != 2 or labels.shape[1] != width:
        raise InputError(f"label shape {labels.shape} does not match the image width {width}", path)
    if encoding == "binary":
        return instances_from_outline_mask(labels)[0]
    if labels.min(initial=0) < 0:
        raise InputError("label map has negative values", path)
    return labels.astype(np.int64)


def _load_one(img_path, high_dir, low_dir, bucket, databar_rows, encoding, duplicate_overlap, set_name):
    high_path, low_path = _label_file(high_dir, img_path.stem), _label_file(low_dir, img_path.stem)
    image, meta = load_image(img_path)
    h = image.shape[0]
    rows = detect_databar(image) if databar_rows is None else int(databar_rows)
    if not 0 <= rows < h:
        raise InputError(f"databar height {rows} is not within [0, {h})", img_path)
    labels = []
    for path in (high_path, low_path):
        lab = _read_labels(path, image.shape[1], encoding)
        if lab.shape[0] not in (h, h - rows):
            raise InputError(
                f"label shape {lab.shape} fits neither the image {image.shape} nor its {h - rows}-row crop",
                path,
            )
        labels.append(lab[: h - rows])
    image = image[: h - rows]
    instances, certain, counts = combine_confidence_labels(*labels, duplicate_overlap=duplicate_overlap)
    info = meta.to_dict()
    info.pop("shape", None)
    info.update(
        counts,
        databar_rows=rows,
        set=set_name,
        high_labels_path=str(high_path),
        low_labels_path=str(low_path),
    )
    return SEMRecord(
        image=image,
        instances=instances,
        certain=certain,
        pixel_size_nm=meta.pixel_size_nm,
        source=str(img_path),
        magnification_bucket=bucket or bucket_from_fov(meta.field_of_view_um),
        meta=info,
    )
