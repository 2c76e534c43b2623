"""Files written for every predicted image: label map, particle table, COCO JSON, overlay and Fiji ROI set.

For an image named ``NAME`` (:func:`write_outputs`):

* ``NAME_labels.tif`` -- the instance label map (0 = background, particles 1..P; 16- or 32-bit, zlib), read back
  with :func:`semkit.data.io.load_labels`;
* ``NAME_particles.csv`` -- one row per particle (:func:`particle_table`): ``id``, sizes in pixels and, when the
  pixel size is known, in nm (``area_nm2`` = ``area_px`` × pixel size², lengths × pixel size; NaN when unknown,
  so every table has the same columns), ``aspect_ratio``, ``confidence``, ``certain``, ``objectness``;
* ``NAME_coco.json`` -- COCO instances with compressed RLE masks (:func:`semkit.data.coco.save_coco`) plus each
  annotation's ``score`` (objectness) and ``confidence``, so COCO tools can rank the detections;
* ``NAME_overlay.png`` -- the image with certain particles in green and uncertain ones in red (filled
  translucently, outlines opaque), the colours of the uncertainty-aware study's figures;
* ``NAME_rois.zip`` -- an ImageJ/Fiji ROI set (``roifile``): one polygon per particle named
  ``NNNN-certain`` / ``NNNN-uncertain`` with the overlay's outline colour. Open it in Fiji's ROI Manager
  (File › Open) on the image to measure or edit the particles.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from semkit.inference.predict import Prediction

CERTAIN_RGB = (0, 255, 0)
UNCERTAIN_RGB = (255, 0, 0)
#: Fill opacity of the overlay; outlines are opaque.
FILL_ALPHA = 0.35
#: Columns of the per-particle CSV, in order (``nm`` columns are NaN without a pixel size).
PARTICLE_COLUMNS = ["id", "area_px", "area_nm2", "ecd_px", "ecd_nm", "feret_min_px", "feret_min_nm",
                    "feret_max_px", "feret_max_nm", "aspect_ratio", "confidence", "certain", "objectness"]
SUFFIXES = {"labels": "_labels.tif", "particles": "_particles.csv", "coco": "_coco.json",
            "overlay": "_overlay.png", "rois": "_rois.zip"}


def particle_table(labels: np.ndarray, table: pd.DataFrame, pixel_size_nm: float | None = None,
                   name: str | None = None) -> pd.DataFrame:
    """Per-particle sizes (:func:`semkit.metrics.size.particle_sizes`) joined with the prediction's scores.

    Args:
        labels: int (H, W) instance map with particles 1..P.
        table: the prediction table (``id``, ``objectness``, ``confidence``, ``certain``).
        pixel_size_nm: pixel edge length of ``labels``; ``None`` leaves the nm columns NaN.
        name: image name for error messages.

    Returns:
        DataFrame with :data:`PARTICLE_COLUMNS` (extra prediction columns such as ``tile`` follow), one row per
        particle in id order.
    """
    from semkit.metrics.size import add_physical_units, particle_sizes

    sizes = particle_sizes(labels, None, name=name)
    sizes = add_physical_units(sizes, np.nan if pixel_size_nm is None else float(pixel_size_nm), "nm")
    sizes["area_px"] = sizes["area_px"].round().astype(np.int64)
    scores = table.drop(columns=[c for c in ("area_px", "detection") if c in table.columns])
    out = sizes.merge(scores.astype({"id": np.int64}), on="id", how="left", validate="one_to_one")
    extra = [c for c in out.columns if c not in PARTICLE_COLUMNS]
    return out[PARTICLE_COLUMNS + extra].sort_values("id").reset_index(drop=True)


def overlay_image(image: np.ndarray, labels: np.ndarray, certain_ids, alpha: float = FILL_ALPHA) -> np.ndarray:
    """Colour particles on a grayscale image: certain green, uncertain red.

    Args:
        image: float (H, W) in [0, 1].
        labels: int (H, W) instance map.
        certain_ids: label values of the certain particles (all others are uncertain).
        alpha: fill opacity; outline pixels (the particles' inner boundary) get the pure colour.

    Returns:
        uint8 (H, W, 3) RGB; background pixels keep the gray value.
    """
    from skimage.segmentation import find_boundaries

    gray = np.clip(np.asarray(image, dtype=np.float64), 0, 1) * 255.0
    rgb = np.repeat(gray[..., None], 3, axis=2)
    labels = np.asarray(labels)
    is_certain = np.zeros(int(labels.max(initial=0)) + 1, dtype=bool)
    ids = np.asarray(list(certain_ids), dtype=np.int64)
    is_certain[ids[(ids > 0) & (ids < is_certain.size)]] = True
    colour = np.where(is_certain[labels][..., None], CERTAIN_RGB, UNCERTAIN_RGB).astype(np.float64)
    inside = labels > 0
    rgb[inside] = (1 - alpha) * rgb[inside] + alpha * colour[inside]
    edge = find_boundaries(labels, mode="inner") & inside
    rgb[edge] = colour[edge]
    return np.rint(rgb).astype(np.uint8)


def particle_rois(labels: np.ndarray, certain_ids=()) -> list:
    """ImageJ polygon ROIs, one per particle, in ImageJ's pixel coordinates.

    The outline is the 0.5 iso-contour of the particle mask (:func:`skimage.measure.find_contours`) shifted by
    half a pixel into ImageJ's convention (pixel (r, c) covers [c, c+1) × [r, r+1)), so it runs along the pixel
    edges and cuts each corner by half a pixel (a w × h rectangle encloses w·h − 0.5 px²). A particle split
    into several parts gets the outline of its largest part.

    Args:
        labels: int (H, W) instance map.
        certain_ids: label values of the certain particles (name suffix and outline colour).

    Returns:
        ``roifile.ImagejRoi`` objects in label order, named ``NNNN-certain`` or ``NNNN-uncertain``.
    """
    from roifile import ROI_TYPE, ImagejRoi
    from skimage.measure import find_contours

    certain = {int(i) for i in certain_ids}
    rois = []
    for ident, sl in enumerate(ndimage.find_objects(np.asarray(labels)), start=1):
        if sl is None:
            continue
        mask = np.pad(labels[sl] == ident, 1)
        contours = find_contours(mask.astype(np.float32), 0.5, fully_connected="high")
        outline = max(contours, key=_polygon_area)
        y = outline[:, 0] + sl[0].start - 1 + 0.5
        x = outline[:, 1] + sl[1].start - 1 + 0.5
        ok = ident in certain
        roi = ImagejRoi.frompoints(np.c_[x, y][:-1], name=f"{ident:04d}-{'certain' if ok else 'uncertain'}")
        roi.roitype = ROI_TYPE.POLYGON
        roi.stroke_color = bytes((255, *(CERTAIN_RGB if ok else UNCERTAIN_RGB)))  # ARGB
        rois.append(roi)
    return rois


def write_outputs(prediction: Prediction, out_dir: str | os.PathLike, name: str | None = None) -> dict[str, Path]:
    """Write the five output files of one prediction (see the module docstring).

    Args:
        prediction: from :func:`semkit.inference.predict.predict_image`.
        out_dir: folder (created).
        name: file name stem; default: the stem of ``prediction.source`` (``"image"`` if none).

    Returns:
        ``{"labels", "particles", "coco", "overlay", "rois"}`` → written paths.
    """
    from PIL import Image

    from semkit.data.io import save_labels

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or (Path(prediction.source).stem if prediction.source else "image")
    paths = {key: out / f"{stem}{suffix}" for key, suffix in SUFFIXES.items()}
    labels, table = prediction.labels, prediction.table
    certain_ids = table.loc[table["certain"], "id"].to_numpy()

    save_labels(paths["labels"], labels)
    particles = particle_table(labels, table, prediction.pixel_size_nm, name=prediction.source or stem)
    particles.to_csv(paths["particles"], index=False)
    _write_coco(prediction, particles, paths["coco"], stem)
    Image.fromarray(overlay_image(prediction.image, labels, certain_ids)).save(paths["overlay"])
    _write_rois(paths["rois"], particle_rois(labels, certain_ids))
    return paths


def _write_coco(prediction: Prediction, particles: pd.DataFrame, path: Path, stem: str) -> None:
    from semkit.data.coco import save_coco
    from semkit.data.records import SEMRecord

    labels = prediction.labels
    source = Path(prediction.source) if prediction.source else None
    # reference the input file when the label map matches it pixel for pixel, else store the image used
    reuse = source is not None and source.is_file() and prediction.scale == 1.0
    record = SEMRecord(
        image=prediction.image.astype(np.float32, copy=False), instances=labels.astype(np.int32, copy=False),
        certain=particles["certain"].to_numpy(dtype=bool), pixel_size_nm=prediction.pixel_size_nm,
        source=str(source) if reuse else stem,
    )
    save_coco([record], path, image_root=source.parent if reuse else path.parent, write_images=not reuse)
    data = json.loads(path.read_text())
    by_id = particles.set_index("id")
    # save_coco writes label l as the l-th annotation; add the scores COCO result tools expect
    for label, ann in enumerate(data["annotations"], start=1):
        row = by_id.loc[label]
        ann["score"] = float(row["objectness"])
        conf = float(row["confidence"])
        ann["confidence"] = None if math.isnan(conf) else conf
    data["info"]["description"] = "semkit predict: particle instances (score = objectness)"
    path.write_text(json.dumps(data))


def _write_rois(path: Path, rois: list) -> None:
    import zipfile

    from roifile import roiwrite

    if path.exists():
        path.unlink()  # roiwrite appends to an existing zip
    if rois:
        roiwrite(path, rois, mode="w")
    else:
        with zipfile.ZipFile(path, "w"):
            pass  # an empty ROI set for an image without particles, so every image has its five files


def _polygon_area(points: np.ndarray) -> float:
    y, x = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
