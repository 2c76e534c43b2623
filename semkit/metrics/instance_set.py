"""Instances of a set of images keyed by image name: what the evaluation compares.

An :class:`InstanceSet` holds, per image name, a label map (H, W) or a bool mask stack (N, H, W), and optionally
a confidence per instance (predictions), certainty flags per instance (ground truth) and the pixel size. It is
built from :class:`~semkit.data.records.SEMRecord` lists, from plain arrays, or read from disk:

* a folder of label-map images (TIFF/PNG, one per image, named like the image);
* semkit's instance-folder layout (``images/``, ``labels/``, optional ``certainty/``);
* a single label-map file;
* a COCO JSON file: a full dataset (``images`` + ``annotations``, optional ``score`` per annotation) or, for
  predictions against a COCO ground truth, a results list (``[{"image_id", "segmentation", "score"}, …]``).

Instance ``i`` of a label map is label ``i + 1``; scores and flags are indexed the same way (length = max label),
or by stack index for mask stacks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semkit.data.io import IMAGE_SUFFIXES, list_images, load_labels
from semkit.errors import InputError
from semkit.metrics.inputs import check_instances, check_scores


def n_slots(instances: np.ndarray) -> int:
    """Number of per-instance entries (scores, flags) an instance array needs: max label, or stack depth."""
    return int(instances.shape[0]) if instances.ndim == 3 else int(instances.max(initial=0))


@dataclass
class InstanceSet:
    """Instance annotations or predictions of several images.

    Attributes:
        masks: image name → label map (H, W) or bool mask stack (N, H, W).
        scores: image name → float (slots,) confidences in [0, 1] (predictions; may be empty).
        certain: image name → bool (slots,) certainty flags (ground truth; may be empty).
        pixel_size_nm: image name → pixel edge length in nm, where known.
        source: where the set came from (a path or ``simulated:…``), for messages and tables.
        coco_images: for sets read from a COCO dataset: image id → (name, height, width), so a COCO results
            list of predictions can be resolved against it.

    Raises:
        InputError: naming the image, for any invalid array or a score/flag vector of the wrong length.
    """

    masks: dict[str, np.ndarray]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    certain: dict[str, np.ndarray] = field(default_factory=dict)
    pixel_size_nm: dict[str, float] = field(default_factory=dict)
    source: str = ""
    coco_images: dict[int, tuple[str, int, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.masks:
            raise InputError("no images", self.source or None)
        self.masks = {str(k): check_instances(v, str(k)) for k, v in self.masks.items()}
        for key, table in (("scores", self.scores), ("certainty flags", self.certain)):
            unknown = sorted(set(table) - set(self.masks))
            if unknown:
                raise InputError(f"{key} given for unknown images {unknown[:5]}", self.source or None)
        self.scores = {k: check_scores(v, n_slots(self.masks[k]), k) for k, v in self.scores.items()}
        certain = {}
        for k, v in self.certain.items():
            flags = np.asarray(v)
            if flags.ndim != 1 or flags.shape[0] != n_slots(self.masks[k]):
                raise InputError(f"{flags.shape} certainty flags for {n_slots(self.masks[k])} instances", k)
            certain[k] = flags.astype(bool)
        self.certain = certain
        self.pixel_size_nm = {k: float(v) for k, v in self.pixel_size_nm.items() if v is not None}

    @property
    def names(self) -> list[str]:
        return list(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    @classmethod
    def from_records(cls, records: Sequence, source: str = "") -> InstanceSet:
        """Ground truth from :class:`SEMRecord` objects (instances, certainty flags, pixel size).

        Image names are the records' names (file stems), or ``image_0000``… when those are missing or repeat.

        Raises:
            InputError: naming the record, if it has no instance labels.
        """
        if not records:
            raise InputError("no records given", source or None)
        names = [r.name for r in records]
        if any(not n for n in names) or len(set(names)) != len(names):
            names = [f"image_{i:04d}" for i in range(len(records))]
        masks, certain, px = {}, {}, {}
        for name, rec in zip(names, records, strict=True):
            if rec.instances is None:
                raise InputError("record has no instance labels to evaluate", rec.source or name)
            masks[name] = rec.instances
            if rec.certain is not None:
                certain[name] = rec.certain
            if rec.pixel_size_nm is not None:
                px[name] = rec.pixel_size_nm
        return cls(masks, certain=certain, pixel_size_nm=px, source=source)

    @classmethod
    def load(cls, path: str | Path, reference: InstanceSet | None = None) -> InstanceSet:
        """Read instances from disk (see the module docstring for the accepted layouts).

        Args:
            path: folder, label-map file or COCO JSON file.
            reference: the ground truth, needed to resolve image ids of a COCO *results* list.

        Raises:
            InputError: naming the path, if it does not exist, holds no label images, or is unreadable.
        """
        path = Path(path)
        if not path.exists():
            raise InputError("does not exist", path)
        if path.is_file() and path.suffix.lower() == ".json":
            return _load_coco(path, reference)
        if path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"expected a label image ({', '.join(IMAGE_SUFFIXES)}) or COCO .json", path)
            return cls({path.stem: load_labels(path)}, source=str(path))
        if (path / "labels").is_dir() and (path / "images").is_dir():
            from semkit.data.instance_folder import read_instance_folder

            return cls.from_records(read_instance_folder(path), source=str(path))
        files = list_images(path, recursive=False)
        if not files:
            raise InputError("no label images (.tif/.png) in folder", path)
        masks = {}
        for f in files:
            if f.stem in masks:
                raise InputError(f"two label files for image {f.stem!r}", f)
            masks[f.stem] = load_labels(f)
        return cls(masks, source=str(path))


def as_instance_set(value, source: str = "") -> InstanceSet:
    """Accept an :class:`InstanceSet`, a list of records, a mapping name → array, a list of arrays, or a path."""
    if isinstance(value, InstanceSet):
        return value
    if isinstance(value, str | Path):
        return InstanceSet.load(value)
    if isinstance(value, Mapping):
        return InstanceSet(dict(value), source=source)
    if isinstance(value, np.ndarray):
        raise InputError("pass a list or mapping of images, not a single array (wrap it: [array])", source or None)
    values = list(value)
    if values and hasattr(values[0], "instances") and hasattr(values[0], "image"):
        return InstanceSet.from_records(values, source=source)
    return InstanceSet({f"image_{i:04d}": v for i, v in enumerate(values)}, source=source)


# --------------------------------------------------------------------------------------------------------------
# COCO


def _load_coco(path: Path, reference: InstanceSet | None) -> InstanceSet:
    """COCO dataset (via :func:`semkit.data.coco.load_coco_masks`) or results list → mask stacks and scores."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read COCO JSON ({exc})", path) from exc
    if isinstance(data, list):
        return _load_coco_results(path, data, reference)
    from semkit.data.coco import load_coco_masks

    masks, scores, certain, px, images = {}, {}, {}, {}, {}
    score_of = {a.get("id"): a["score"] for a in data.get("annotations", [])
                if isinstance(a, dict) and "score" in a}
    for file_name, inst in load_coco_masks(path).items():
        name = Path(file_name).stem
        if name in masks:
            raise InputError(f"two COCO images named {name!r}", path)
        masks[name] = inst.masks
        if inst.certain is not None:
            certain[name] = inst.certain
        if inst.image.get("pixel_size_nm") is not None:
            px[name] = float(inst.image["pixel_size_nm"])
        if score_of:
            missing = [int(i) for i in inst.annotation_ids if int(i) not in score_of]
            if missing:
                raise InputError(f"annotation {missing[0]} of image {name!r} has no score while others do", path)
            scores[name] = np.array([float(score_of[int(i)]) for i in inst.annotation_ids])
        images[inst.image["id"]] = (name, int(inst.masks.shape[1]), int(inst.masks.shape[2]))
    return InstanceSet(masks, scores=scores, certain=certain, pixel_size_nm=px, source=str(path),
                       coco_images=images)


def _load_coco_results(path: Path, results: list, reference: InstanceSet | None) -> InstanceSet:
    """A COCO results list (``image_id``, ``segmentation``, ``score``) resolved against a COCO ground truth."""
    from pycocotools import mask as mask_utils

    if reference is None or not reference.coco_images:
        raise InputError("a COCO results list needs a COCO ground truth that defines its image ids", path)
    per_image: dict = {image_id: [] for image_id in reference.coco_images}
    for k, ann in enumerate(results):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id not in per_image:
            raise InputError(f"result {k} refers to unknown image_id {image_id!r}", path)
        if not ann.get("segmentation"):
            raise InputError(f"result {k} (image_id {image_id}) has no segmentation", path)
        per_image[image_id].append(ann)
    masks, scores = {}, {}
    for image_id, (name, h, w) in reference.coco_images.items():
        anns = per_image[image_id]
        stack = np.zeros((len(anns), h, w), dtype=bool)
        for j, ann in enumerate(anns):
            seg = ann["segmentation"]
            try:
                if isinstance(seg, list):  # polygons
                    rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                    rle = mask_utils.frPyObjects(seg, h, w)
                else:
                    rle = seg
                stack[j] = mask_utils.decode(rle).astype(bool)
            except Exception as exc:  # pycocotools raises bare TypeErrors/ValueErrors on malformed entries
                raise InputError(f"cannot decode segmentation of a result on image {name!r} ({exc})", path) from exc
        masks[name] = stack
        scores[name] = np.array([float(a.get("score", 1.0)) for a in anns])
    return InstanceSet(masks, scores=scores, source=str(path))
