"""Semantic-segmentation folders: ``<root>/<split>/NAME.png`` with labels in ``<root>/<split>_annot/NAME.png``.

This is the layout of NASA's EBC-1/2/3 benchmark (Stuckner, Harder & Smith, "Microstructure segmentation with
deep learning encoders pre-trained on a large microscopy dataset", npj Comput. Mater. 8, 200 (2022);
nasa/pretrained-microscopy-models, ``benchmark_segmentation_data``), where labels hold the class indices 0, 1, 2.
Images and labels pair by file stem; the label file may have any supported image suffix. Labels are read with
:func:`semkit.data.io.load_labels` (never rescaled; palette PNGs give their indices).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semkit.data.folders import magnification_bucket
from semkit.data.io import list_images, load_image, load_labels
from semkit.data.records import SEMRecord
from semkit.errors import InputError

#: Suffix of the label folder next to each split folder.
ANNOT_SUFFIX = "_annot"


def load_semantic_folders(
    root: str | Path,
    split: str,
    classes: Sequence[int] | None = None,
) -> list[SEMRecord]:
    """Read one split of a semantic folder layout.

    Args:
        root: folder holding ``<split>/`` and ``<split>_annot/`` (e.g. ``nasa-ebc/EBC1``).
        split: split folder name (``"train"``, ``"val"``, ``"test"``); stored as ``record.split``.
        classes: allowed class values; a label holding any other value raises. ``None`` accepts any
            value from 0 to 255.

    Returns:
        One record per image, sorted by name, with ``semantic`` uint8 (H, W) and ``instances`` ``None``.

    Raises:
        InputError: naming the file or folder, for a missing split or label folder, an image without a label
            file (or a label without an image), a size mismatch, or a class value outside ``classes``.
    """
    root = Path(root)
    image_dir, label_dir = root / split, root / f"{split}{ANNOT_SUFFIX}"
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise InputError(f"semantic layout needs {folder.name}/ under {root}", folder)
    images = list_images(image_dir, recursive=False)
    if not images:
        raise InputError("no images found", image_dir)
    labels = {p.stem: p for p in list_images(label_dir, recursive=False)}
    orphans = sorted(set(labels) - {p.stem for p in images})
    if orphans:
        raise InputError(
            f"label files without an image in {split}/: {', '.join(orphans[:5])}", labels[orphans[0]]
        )
    allowed = None if classes is None else np.asarray(sorted(set(int(c) for c in classes)))
    records = []
    for img_path in images:
        lab_path = labels.get(img_path.stem)
        if lab_path is None:
            raise InputError(
                f"missing label file for image {img_path.name}", label_dir / f"{img_path.stem}.png"
            )
        image, meta = load_image(img_path)
        semantic = _read_semantic(lab_path, image.shape, allowed)
        info = meta.to_dict()
        info.pop("shape", None)
        info["label_path"] = str(lab_path)
        records.append(
            SEMRecord(
                image=image,
                semantic=semantic,
                pixel_size_nm=meta.pixel_size_nm,
                source=str(img_path),
                magnification_bucket=magnification_bucket(meta.field_of_view_um),
                split=split,
                meta=info,
            )
        )
    return records


def _read_semantic(path: Path, shape: tuple[int, int], allowed: np.ndarray | None) -> np.ndarray:
    labels = load_labels(path)
    if labels.shape != shape:
        raise InputError(f"label shape {labels.shape} does not match image shape {shape}", path)
    values = np.unique(labels)
    if values.size and (values[0] < 0 or values[-1] > 255):
        raise InputError(f"class values must lie in 0..255, found {values[0]}..{values[-1]}", path)
    if allowed is not None:
        extra = np.setdiff1d(values, allowed)
        if extra.size:
            raise InputError(
                f"class values {extra.tolist()} not in the allowed classes {allowed.tolist()}", path
            )
    return labels.astype(np.uint8)
