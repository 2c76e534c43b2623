"""COCO instance-segmentation JSON: import (polygons, compressed and uncompressed RLE) and export (RLE).

COCO is the interchange format for annotation tools (CVAT, Label Studio, labelme exports) and detection
frameworks (torchvision, Detectron2, MMDetection). Masks are decoded and encoded with ``pycocotools.mask``.

semkit's extensions, all optional on import and ignored by other tools:

* per annotation, ``"attributes": {"certain": true|false}`` (CVAT's attribute convention; a top-level
  ``"certain"`` key is read too): the expert's certain/uncertain flag;
* per image, ``"pixel_size_nm"``, ``"magnification_bucket"`` and ``"split"``.

**Overlaps.** COCO masks may overlap (an occluded particle's annotation can extend under its neighbour); a label
map holds one label per pixel. :func:`load_coco` paints the annotations largest first, so where masks overlap
the *smaller* annotation keeps the pixel: a small particle lying on a big one stays whole and the big one loses
the covered part, which is what the image shows. An annotation covered completely by smaller ones has no pixel
left; it is left out of the label map and listed in ``meta["hidden_annotation_ids"]``. Use
:func:`load_coco_masks` for the full, overlapping (N, H, W) mask stack.

**Polygon convention.** pycocotools treats polygon coordinates as positions on the pixel grid whose pixel
``(row, col)`` spans ``[col, col + 1) × [row, row + 1)``; a polygon with integer vertices covers exactly the
pixels inside it (an axis-aligned rectangle from (x0, y0) to (x1, y1) covers columns x0..x1-1, rows y0..y1-1).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from semkit.data.folders import magnification_bucket
from semkit.data.io import load_image
from semkit.data.records import SEMRecord
from semkit.errors import InputError


@dataclass
class CocoInstances:
    """All (possibly overlapping) instance masks of one COCO image.

    Attributes:
        file_name: the image entry's ``file_name``.
        masks: bool (N, H, W), in the order of the annotations in the file (crowd regions excluded).
        annotation_ids: int64 (N,) COCO annotation ids.
        category_ids: int64 (N,).
        certain: bool (N,) flags, or ``None`` when the file carries none.
        image: the raw image entry (``id``, ``height``, ``width``, extensions).
        n_crowd: number of ``iscrowd`` annotations left out.
    """

    file_name: str
    masks: np.ndarray
    annotation_ids: np.ndarray
    category_ids: np.ndarray
    certain: np.ndarray | None
    image: dict
    n_crowd: int = 0


def load_coco_masks(json_path: str | Path) -> dict[str, CocoInstances]:
    """Decode every annotation of a COCO instance file into per-image boolean mask stacks.

    Args:
        json_path: COCO JSON with ``images`` and ``annotations``; segmentations as polygons, uncompressed RLE
            (``counts`` a list) or compressed RLE (``counts`` a string).

    Returns:
        ``{file_name: CocoInstances}`` for every image entry (images without annotations get an empty
        (0, H, W) stack). No image file is read.

    Raises:
        InputError: naming the JSON file, for invalid JSON, missing keys, an annotation of an unknown image, a
            malformed polygon or RLE, an RLE whose size differs from the image, or certainty flags given for
            only some annotations.
    """
    json_path = Path(json_path)
    out = {}
    for item in _index(json_path):
        rles = [_to_rle(ann, item.height, item.width, json_path) for ann in item.annotations]
        masks = [_decode_rle(rle, ann, json_path) for rle, ann in zip(rles, item.annotations, strict=True)]
        out[item.file_name] = CocoInstances(
            file_name=item.file_name,
            masks=np.stack(masks) if masks else np.zeros((0, item.height, item.width), dtype=bool),
            annotation_ids=item.annotation_ids,
            category_ids=item.category_ids,
            certain=item.certain,
            image=item.entry,
            n_crowd=item.n_crowd,
        )
    return out


def masks_to_labels(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten an overlapping mask stack into a label map; where masks overlap the smaller one wins.

    Args:
        masks: bool (N, H, W).

    Returns:
        ``(labels, kept)``: int32 (H, W) labels 1..K numbered in stack order among the kept masks, and the
        indices (K,) into ``masks`` of the masks that kept at least one pixel.
    """
    n = masks.shape[0]
    areas = masks.reshape(n, -1).sum(axis=1) if n else np.zeros(0, dtype=np.int64)
    return _paint(masks.shape[1:], areas, masks.__getitem__)


def load_coco(json_path: str | Path, image_root: str | Path | None = None) -> list[SEMRecord]:
    """Read a COCO instance file and its images into records with label maps.

    Args:
        json_path: the COCO JSON.
        image_root: folder the ``file_name`` entries are relative to; default: the JSON's folder.

    Returns:
        One record per image entry, in file order. ``instances`` from :func:`masks_to_labels` (label ``i``
        is annotation ``meta["annotation_ids"][i - 1]``), ``certain`` from the annotations' flags (``None``
        when the file has none), ``pixel_size_nm`` from the image entry, else from the image's own metadata.

    Raises:
        InputError: naming the JSON or image file (see :func:`load_coco_masks`; also a missing image or one
            whose size differs from its entry).
    """
    json_path = Path(json_path)
    root = json_path.parent if image_root is None else Path(image_root)
    records = []
    for item in _index(json_path):
        img_path = root / item.file_name
        image, meta = load_image(img_path)
        h, w = item.height, item.width
        if image.shape != (h, w):
            raise InputError(f"image is {image.shape} but its COCO entry says {(h, w)}", img_path)
        # One image at a time and one decoded mask at a time: a (N, H, W) stack of 150 particles on a
        # 1920 x 1200 image would be 345 MB.
        rles = [_to_rle(ann, h, w, json_path) for ann in item.annotations]
        areas = np.asarray(
            [_area(rle, ann, json_path) for rle, ann in zip(rles, item.annotations, strict=True)],
            dtype=np.int64,
        )
        labels, kept = _paint(
            (h, w),
            areas,
            lambda i, rles=rles, item=item: _decode_rle(rles[i], item.annotations[i], json_path),
        )
        hidden = np.setdiff1d(np.arange(len(rles)), kept)
        pixel_size = item.entry.get("pixel_size_nm")
        pixel_size = meta.pixel_size_nm if pixel_size is None else float(pixel_size)
        fov = None if pixel_size is None else w * pixel_size / 1000.0
        info = meta.to_dict()
        info.pop("shape", None)
        info.update(
            coco_image_id=item.entry["id"],
            annotation_ids=item.annotation_ids[kept].tolist(),
            category_ids=item.category_ids[kept].tolist(),
            hidden_annotation_ids=item.annotation_ids[hidden].tolist(),
            n_crowd=item.n_crowd,
        )
        records.append(
            SEMRecord(
                image=image,
                instances=labels,
                certain=None if item.certain is None else item.certain[kept],
                pixel_size_nm=pixel_size,
                source=str(img_path),
                magnification_bucket=item.entry.get("magnification_bucket") or magnification_bucket(fov),
                split=item.entry.get("split"),
                meta=info,
            )
        )
    return records


def save_coco(
    records: list[SEMRecord],
    json_path: str | Path,
    image_root: str | Path,
    write_images: bool = True,
    category_name: str = "particle",
) -> Path:
    """Write records as a COCO instance file with compressed-RLE masks.

    Args:
        records: records with ``instances`` (records without are written as images without annotations).
        json_path: output JSON path.
        image_root: folder the ``file_name`` entries are relative to.
        write_images: write each record's image into ``image_root`` as ``NAME.png`` (8- or 16-bit when the
            float values are exactly representable, so nothing is lost) or ``NAME.tif`` (float32) otherwise.
            ``False`` references the existing ``record.source`` files instead; they must lie under
            ``image_root`` and have the record's (cropped) size.
        category_name: the single category's name.

    Returns:
        ``json_path``. Loading it with :func:`load_coco` gives back equal images, label maps, flags, pixel size,
        magnification bucket and split.

    Raises:
        InputError: for two records with the same name, a label map with an unused label id, or
            (``write_images=False``) a source outside ``image_root``.
    """
    json_path, image_root = Path(json_path), Path(image_root)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    image_root.mkdir(parents=True, exist_ok=True)
    images, annotations, seen = [], [], set()
    for image_id, rec in enumerate(records, start=1):
        name = rec.name or f"image_{image_id:05d}"
        if name in seen:
            raise InputError(
                f"two records are named {name!r}; COCO file names must be unique", rec.source or None
            )
        seen.add(name)
        file_name = _write_image(rec, name, image_root) if write_images else _relative_source(rec, image_root)
        entry = {
            "id": image_id,
            "file_name": file_name,
            "height": int(rec.image.shape[0]),
            "width": int(rec.image.shape[1]),
        }
        if rec.pixel_size_nm is not None:
            entry["pixel_size_nm"] = float(rec.pixel_size_nm)  # a NumPy float32 would not serialise
        for key in ("magnification_bucket", "split"):
            if getattr(rec, key) is not None:
                entry[key] = str(getattr(rec, key))
        images.append(entry)
        if rec.instances is None:
            continue
        for label in range(1, rec.n_instances + 1):
            mask = rec.instances == label
            if not mask.any():
                # An empty annotation would not survive loading; label maps must be numbered 1..N without gaps.
                raise InputError(f"label {label} of 1..{rec.n_instances} has no pixels", rec.source or None)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": {
                    "size": [int(s) for s in rle["size"]],
                    "counts": rle["counts"].decode("ascii"),
                },
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
            }
            if rec.certain is not None:
                ann["attributes"] = {"certain": bool(rec.certain[label - 1])}
            annotations.append(ann)
    data = {
        "info": {"description": "written by semkit.data.coco.save_coco"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": category_name, "supercategory": category_name}],
    }
    json_path.write_text(json.dumps(data))
    return json_path


# --------------------------------------------------------------------------------------------------------------
# internals


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError("file does not exist", path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", path) from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError("not a COCO file: no 'images' list", path)
    data.setdefault("annotations", [])
    if not isinstance(data["annotations"], list):
        raise InputError("'annotations' must be a list", path)
    return data


def _certain_value(ann: dict) -> bool | None:
    value = ann.get("certain")
    if value is None and isinstance(ann.get("attributes"), dict):
        value = ann["attributes"].get("certain")
    if value is None:
        return None
    if isinstance(value, str):  # some tools export attribute values as strings
        if value.lower() not in ("true", "false", "1", "0"):
            return None
        return value.lower() in ("true", "1")
    return bool(value)


@dataclass
class _ImageAnnotations:
    """One image entry with its non-crowd annotations (nothing decoded yet)."""

    entry: dict
    file_name: str
    height: int
    width: int
    annotations: list[dict] = field(default_factory=list)
    n_crowd: int = 0
    has_certainty: bool = False

    @property
    def annotation_ids(self) -> np.ndarray:
        return np.asarray([int(a.get("id", i + 1)) for i, a in enumerate(self.annotations)], dtype=np.int64)

    @property
    def category_ids(self) -> np.ndarray:
        return np.asarray([int(a.get("category_id", 1)) for a in self.annotations], dtype=np.int64)

    @property
    def certain(self) -> np.ndarray | None:
        if not self.has_certainty:
            return None
        return np.asarray([_certain_value(a) for a in self.annotations], dtype=bool)


def _index(json_path: Path) -> list[_ImageAnnotations]:
    """Group the (non-crowd) annotations by image and validate everything that needs no decoding."""
    data = _read_json(json_path)
    images: dict = {}
    names: set[str] = set()
    has_certainty = any(_certain_value(a) is not None for a in data["annotations"])
    for entry in data["images"]:
        try:
            image_id, h, w = entry["id"], int(entry["height"]), int(entry["width"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"image entry {entry!r} lacks id/height/width ({exc})", json_path) from exc
        name = str(entry.get("file_name", image_id))
        if name in names:
            raise InputError(f"two image entries share the file name {name!r}", json_path)
        names.add(name)
        bucket = entry.get("magnification_bucket")
        if bucket is not None and bucket not in ("low", "high"):
            raise InputError(
                f"image {image_id}: magnification_bucket must be 'low' or 'high', got {bucket!r}", json_path
            )
        images[image_id] = _ImageAnnotations(entry, name, h, w, has_certainty=has_certainty)
    for ann in data["annotations"]:
        item = images.get(ann.get("image_id"))
        if item is None:
            raise InputError(
                f"annotation {ann.get('id')} refers to unknown image id {ann.get('image_id')!r}", json_path
            )
        if ann.get("iscrowd", 0):
            item.n_crowd += 1  # crowd regions mark groups, not instances: counted, not decoded
        elif has_certainty and _certain_value(ann) is None:
            raise InputError(f"annotation {ann.get('id')} has no 'certain' flag while others do", json_path)
        else:
            item.annotations.append(ann)
    return list(images.values())


def _to_rle(ann: dict, h: int, w: int, json_path: Path) -> dict:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) as one compressed RLE."""
    seg = ann.get("segmentation")
    where = f"annotation {ann.get('id')}"
    try:
        if isinstance(seg, list):
            if not seg or any(len(p) < 6 or len(p) % 2 for p in seg):
                raise InputError(f"{where}: polygons need an even number (>= 6) of coordinates", json_path)
            return mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in seg], h, w))
        if isinstance(seg, dict) and "counts" in seg and "size" in seg:
            if [int(s) for s in seg["size"]] != [h, w]:
                raise InputError(
                    f"{where}: RLE size {seg['size']} differs from the image ({h}, {w})", json_path
                )
            if isinstance(seg["counts"], list):
                return mask_utils.frPyObjects(seg, h, w)  # uncompressed RLE -> compressed
            counts = seg["counts"]
            return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    except InputError:
        raise
    except Exception as exc:  # pycocotools raises assorted errors on malformed input
        raise InputError(
            f"{where}: cannot read segmentation ({type(exc).__name__}: {exc})", json_path
        ) from exc
    raise InputError(f"{where}: segmentation must be polygons or RLE, got {type(seg).__name__}", json_path)


def _decode_rle(rle: dict, ann: dict, json_path: Path) -> np.ndarray:
    h, w = (int(v) for v in rle["size"])
    if isinstance(rle["counts"], bytes | str):
        # pycocotools decodes a truncated or garbled RLE string without complaint (into uninitialised memory, so
        # the outcome varies from run to run): check the runs first, deterministically.
        runs = rle_runs(rle["counts"])
        if runs is None or min(runs, default=0) < 0 or sum(runs) != h * w:
            raise InputError(
                f"annotation {ann.get('id')}: malformed RLE (its runs do not cover the {h} x {w} image)", json_path
            )
    try:
        with warnings.catch_warnings():
            # pycocotools' compiled decoder trips a NumPy 2 deprecation notice on every call; it is harmless.
            warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
            mask = mask_utils.decode(rle)
    except Exception as exc:  # malformed RLE strings
        raise InputError(
            f"annotation {ann.get('id')}: cannot decode segmentation ({type(exc).__name__}: {exc})", json_path
        ) from exc
    if mask.shape != (h, w):
        raise InputError(
            f"annotation {ann.get('id')}: decoded mask {mask.shape} is not ({h}, {w})", json_path
        )
    return mask.astype(bool)


def rle_runs(counts: bytes | str) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``), or ``None`` if malformed.

    Each run is a little-endian sequence of 5-bit groups stored as characters ``chr(48 + c)`` (bit 0x20: more
    groups follow; bit 0x10 of the last group: negative); runs after the second are stored as differences to the
    run two places before.
    """
    s = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s):
                return None  # the last run is cut off
            c = s[p] - 48
            if not 0 <= c < 64:
                return None  # not an RLE character
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _area(rle: dict, ann: dict, json_path: Path) -> int:
    try:
        return int(mask_utils.area(rle))
    except Exception as exc:  # malformed RLE strings
        raise InputError(
            f"annotation {ann.get('id')}: cannot decode segmentation ({type(exc).__name__}: {exc})", json_path
        ) from exc


def _paint(shape: tuple[int, ...], areas: np.ndarray, mask_of) -> tuple[np.ndarray, np.ndarray]:
    """The overlap rule in one place: paint largest first, so smaller masks own the shared pixels."""
    n = len(areas)
    owner = np.full(shape, -1, dtype=np.int64)
    # Stable sort: on equal areas the later annotation is painted last and owns the shared pixels.
    for i in np.argsort(-areas, kind="stable"):
        owner[mask_of(int(i))] = i
    visible = np.bincount(owner[owner >= 0], minlength=n) > 0
    kept = np.flatnonzero(visible)
    new_ids = np.zeros(n + 1, dtype=np.int32)  # shifted by one: owner -1 (background) -> index 0 -> label 0
    new_ids[kept + 1] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return new_ids[owner + 1], kept


def _write_image(rec: SEMRecord, name: str, root: Path) -> str:
    import tifffile
    from PIL import Image

    img = rec.image
    # Pick the smallest lossless container: load_image scales n-bit integers by (2**n - 1) back to the same float32.
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        scale = float(2**bits - 1)
        q = np.rint(np.asarray(img, dtype=np.float64) * scale)
        if np.array_equal((q / scale).astype(np.float32), img):
            Image.fromarray(q.astype(dtype)).save(root / f"{name}.png")
            return f"{name}.png"
    tifffile.imwrite(root / f"{name}.tif", img.astype(np.float32), compression="zlib")
    return f"{name}.tif"


def _relative_source(rec: SEMRecord, root: Path) -> str:
    src = Path(rec.source) if rec.source else None
    if src is not None and src.is_file():
        # a symlinked image (a folder of links to a shared dataset) is under root as linked, not as resolved
        for s, r in ((Path(os.path.abspath(src)), Path(os.path.abspath(root))), (src.resolve(), root.resolve())):
            if s.is_relative_to(r):
                return s.relative_to(r).as_posix()
    raise InputError(f"source is not a file under image_root {root} (use write_images=True)", rec.source or None)
