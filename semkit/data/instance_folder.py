"""semkit's own on-disk layout for labeled instance data (what the synthetic generator writes).

::

    <root>/images/NAME.tif         image (8- or 16-bit; pixel size as an ImageJ calibration when known)
    <root>/labels/NAME.tif         instance label map, uint16/uint32, 0 = background, 1..N = particles
    <root>/certainty/NAME.csv      optional: columns ``label,certain`` (1 = certain, 0 = uncertain)

Images and labels pair by file stem. This is the simplest lossless layout for non-overlapping instances; COCO
JSON (``semkit.data.coco``) is the interchange format for overlapping ones.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from semkit.data.io import list_images, load_image, load_labels, save_labels
from semkit.data.records import SEMRecord
from semkit.errors import InputError


def write_instance_folder(records: list[SEMRecord], root: str | Path) -> Path:
    """Write records (with instance labels) to the layout above; returns ``root``."""
    import tifffile

    root = Path(root)
    for sub in ("images", "labels", "certainty"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, rec in enumerate(records):
        name = rec.name or f"image_{i:04d}"
        img8 = np.rint(np.clip(rec.image, 0, 1) * 255).astype(np.uint8)
        kwargs: dict = {}
        if rec.pixel_size_nm is not None:
            # ImageJ calibration in nm: what Fiji shows and what semkit.data.io reads back.
            kwargs = {"imagej": True, "resolution": (1.0 / rec.pixel_size_nm, 1.0 / rec.pixel_size_nm),
                      "metadata": {"unit": "nm"}}
        tifffile.imwrite(root / "images" / f"{name}.tif", img8, **kwargs)
        if rec.instances is not None:
            save_labels(root / "labels" / f"{name}.tif", rec.instances)
        if rec.certain is not None:
            with open(root / "certainty" / f"{name}.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["label", "certain"])
                for lab, flag in enumerate(rec.certain, start=1):
                    w.writerow([lab, int(bool(flag))])
    return root


def read_instance_folder(root: str | Path, split: str | None = None) -> list[SEMRecord]:
    """Read every image of the layout above into :class:`SEMRecord` objects.

    Raises:
        InputError: naming the file, for a missing label map, a size mismatch or an inconsistent certainty CSV.
    """
    root = Path(root)
    images = list_images(root / "images", recursive=False)
    if not images:
        raise InputError("no images found in images/", root)
    records = []
    for img_path in images:
        image, meta = load_image(img_path)
        lab_path = root / "labels" / f"{img_path.stem}.tif"
        instances = None
        if lab_path.exists():
            instances = load_labels(lab_path).astype(np.int32)
            if instances.shape != image.shape:
                raise InputError(f"label map shape {instances.shape} != image shape {image.shape}", lab_path)
        certain = None
        cert_path = root / "certainty" / f"{img_path.stem}.csv"
        if cert_path.exists() and instances is not None:
            certain = _read_certainty(cert_path, int(instances.max(initial=0)))
        records.append(SEMRecord(image=image, instances=instances, certain=certain,
                                 pixel_size_nm=meta.pixel_size_nm, source=str(img_path), split=split,
                                 meta={"original_dtype": meta.original_dtype}))
    return records


def _read_certainty(path: Path, n: int) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    seen = np.zeros(n, dtype=bool)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                lab, flag = int(row["label"]), int(row["certain"])
            except (KeyError, ValueError) as exc:
                raise InputError(f"expected columns label,certain with integers ({exc})", path) from exc
            if not 1 <= lab <= n:
                raise InputError(f"label {lab} not in the label map (1..{n})", path)
            flags[lab - 1], seen[lab - 1] = bool(flag), True
    if not seen.all():
        raise InputError(f"{int((~seen).sum())} labels have no certainty flag", path)
    return flags
