"""COCO mask average precision (AP, AP50, AP75) through pycocotools.

The ground truth and predictions are converted to in-memory COCO objects (one category, ``iscrowd = 0``) and
scored by :class:`pycocotools.cocoeval.COCOeval` with ``iouType="segm"``. Two deliberate departures from
``COCOeval.summarize``:

* the detection cap is raised to the largest number of predictions in any image (COCO's 100 would silently
  drop detections on SEM images with ~150 particles);
* the scores are read from ``COCOeval.eval["precision"]`` directly, because ``summarize`` hard-codes
  ``maxDets=100`` for AP@[.5:.95] and returns -1 when the cap is changed.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping

import numpy as np

from semkit.metrics.inputs import check_pair, check_scores


def _instance_masks(instances: np.ndarray):
    """Yield (slot index, Fortran-ordered uint8 mask) of the non-empty instances of a label map or stack."""
    if instances.ndim == 3:
        for i, m in enumerate(instances):
            if m.any():
                yield i, np.asfortranarray(m).view(np.uint8)
        return
    counts = np.bincount(instances.ravel().astype(np.intp, copy=False))
    # Comparing a Fortran-ordered label map gives Fortran-ordered masks: no transposed copy per instance.
    labels_f = np.asfortranarray(instances)
    for label in np.flatnonzero(counts[1:]) + 1:
        yield int(label) - 1, (labels_f == label).view(np.uint8)


def _rle(mask: np.ndarray) -> dict:
    """COCO run-length encoding of a Fortran-ordered uint8 mask (what pycocotools requires)."""
    from pycocotools import mask as mask_utils

    return mask_utils.encode(mask)


def coco_mask_ap(gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                 scores: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Mask AP averaged over IoU 0.50:0.95, AP at IoU 0.50 and at 0.75 (Lin et al., ECCV 2014).

    Args:
        gt: image name → ground-truth label map (H, W) or bool mask stack (N, H, W).
        pred: image name → prediction of the same image (every ground-truth image needs one).
        scores: image name → (slots,) confidences (label ``i + 1`` or stack index ``i``); ``None`` or a missing
            image → every prediction scores 1.0 (AP is then that of a single operating point).

    Returns:
        ``{"ap", "ap50", "ap75"}`` in [0, 1]; NaN when the ground truth has no instance at all (AP undefined);
        0.0 when there is ground truth but no prediction.

    Raises:
        InputError: naming the image, for invalid arrays, a size mismatch, bad scores or a missing prediction.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from semkit.errors import InputError

    scores = scores or {}
    images, gt_anns, dt_anns = [], [], []
    max_dets = 0
    for image_id, name in enumerate(gt, start=1):
        if name not in pred:
            raise InputError("no prediction for this ground-truth image", name)
        g, p = check_pair(gt[name], pred[name], name)
        h, w = g.shape[-2:]
        images.append({"id": image_id, "height": int(h), "width": int(w), "file_name": str(name)})
        for _, mask in _instance_masks(g):
            rle = _rle(mask)
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                            "segmentation": rle, "area": float(mask.sum()),
                            "bbox": _bbox(mask)})
        slots = p.shape[0] if p.ndim == 3 else int(p.max(initial=0))
        s = check_scores(scores[name], slots, name) if name in scores else np.ones(slots)
        n_here = 0
        for slot, mask in _instance_masks(p):
            dt_anns.append({"image_id": image_id, "category_id": 1, "segmentation": _rle(mask),
                            "score": float(s[slot])})
            n_here += 1
        max_dets = max(max_dets, n_here)
    if not gt_anns:
        return {"ap": float("nan"), "ap50": float("nan"), "ap75": float("nan")}
    if not dt_anns:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": [{"id": 1, "name": "particle"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt_anns)
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.maxDets = [1, 10, max(100, max_dets)]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, 0, 0, -1]  # (IoU thresholds, recall points) at area "all", max cap
    thresholds = ev.params.iouThrs

    def mean_valid(p: np.ndarray) -> float:
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else float("nan")

    return {"ap": mean_valid(precision),
            "ap50": mean_valid(precision[np.isclose(thresholds, 0.5)]),
            "ap75": mean_valid(precision[np.isclose(thresholds, 0.75)])}


def _bbox(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
