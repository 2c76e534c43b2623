"""Output files of a prediction on a constructed label map with known sizes, flags and pixel size."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import roifile
from PIL import Image
from skimage.draw import disk, polygon2mask

from semkit.data.coco import load_coco
from semkit.data.io import load_labels
from semkit.inference.outputs import FILL_ALPHA, PARTICLE_COLUMNS, particle_table, write_outputs
from semkit.inference.predict import Prediction

PX = 7.3  # nm per pixel


def constructed(pixel_size_nm=PX, source="") -> Prediction:
    labels = np.zeros((60, 80), dtype=np.int32)
    labels[10:20, 5:25] = 1  # 10 x 20 rectangle, certain
    labels[disk((40, 50), 8, shape=labels.shape)] = 2  # disk, uncertain
    table = pd.DataFrame({"id": [1, 2], "objectness": [0.9, 0.7], "confidence": [0.8, 0.3],
                          "certain": [True, False], "area_px": [200, int((labels == 2).sum())],
                          "tile": [0, 0], "pieces": [1, 1]})
    image = np.full(labels.shape, 0.4, np.float32)
    return Prediction(labels=labels, table=table, image=image, pixel_size_nm=pixel_size_nm, source=source)


def test_particle_table_values():
    pred = constructed()
    table = particle_table(pred.labels, pred.table, PX)
    assert list(table.columns) == PARTICLE_COLUMNS + ["tile", "pieces"]
    rect = table.iloc[0]
    assert rect["area_px"] == 200 and rect["area_nm2"] == pytest.approx(200 * PX**2)  # areas scale with px²
    assert rect["ecd_px"] == pytest.approx(np.sqrt(4 * 200 / np.pi))
    assert rect["ecd_nm"] == pytest.approx(rect["ecd_px"] * PX)
    # Feret diameters on the half-pixel contour (corners cut): max between (0, -0.5) and (9, 19.5)
    assert rect["feret_min_px"] == pytest.approx(10) and rect["feret_max_px"] == pytest.approx(np.hypot(9, 20))
    assert rect["feret_max_nm"] == pytest.approx(np.hypot(9, 20) * PX)
    assert table["area_nm2"].to_numpy() == pytest.approx(table["area_px"].to_numpy() * PX**2)
    assert list(table["certain"]) == [True, False] and list(table["objectness"]) == [0.9, 0.7]
    assert list(table["confidence"]) == [0.8, 0.3]
    unknown = particle_table(pred.labels, pred.table, None)
    assert list(unknown.columns) == list(table.columns) and unknown["area_nm2"].isna().all()
    assert unknown["feret_max_nm"].isna().all() and (unknown["area_px"] == table["area_px"]).all()


def test_written_files(tmp_path):
    pred = constructed()
    paths = write_outputs(pred, tmp_path, name="scan")
    assert {p.name for p in paths.values()} == {"scan_labels.tif", "scan_particles.csv", "scan_coco.json",
                                                 "scan_overlay.png", "scan_rois.zip"}
    assert np.array_equal(load_labels(paths["labels"]), pred.labels)
    csv = pd.read_csv(paths["particles"])
    assert list(csv["area_nm2"]) == pytest.approx([200 * PX**2, (pred.labels == 2).sum() * PX**2])

    # overlay: certain green, uncertain red; outlines pure, fill blended, background untouched
    rgb = np.asarray(Image.open(paths["overlay"]))
    gray = 0.4 * 255
    assert tuple(rgb[10, 10]) == (0, 255, 0)  # top edge of the certain rectangle
    assert tuple(rgb[15, 15]) == tuple(np.rint([(1 - FILL_ALPHA) * gray, (1 - FILL_ALPHA) * gray
                                                + FILL_ALPHA * 255, (1 - FILL_ALPHA) * gray]).astype(int))
    assert tuple(rgb[33, 50]) == (255, 0, 0)  # top of the uncertain disk
    assert tuple(rgb[40, 50])[0] > tuple(rgb[40, 50])[1]
    assert tuple(rgb[0, 0]) == (round(gray),) * 3

    # ImageJ ROI set: one polygon per particle, in ImageJ's pixel-edge coordinates
    rois = roifile.roiread(paths["rois"])
    assert [r.name for r in rois] == ["0001-certain", "0002-uncertain"]
    rect = rois[0].coordinates()
    assert rect[:, 0].min() == 5 and rect[:, 0].max() == 25 and rect[:, 1].min() == 10 and rect[:, 1].max() == 20
    x, y = rect[:, 0], rect[:, 1]
    assert 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) == pytest.approx(200 - 0.5)
    assert rois[0].stroke_color == bytes((255, 0, 255, 0)) and rois[1].stroke_color == bytes((255, 255, 0, 0))
    circle = rois[1].coordinates()
    # rasterising the outline at pixel centres gives back the disk
    raster = polygon2mask(pred.labels.shape, np.c_[circle[:, 1] - 0.5, circle[:, 0] - 0.5])
    assert np.array_equal(raster, pred.labels == 2)

    # COCO: same instances and flags, plus scores
    [record] = load_coco(paths["coco"], image_root=tmp_path)
    assert np.array_equal(record.instances, pred.labels) and list(record.certain) == [True, False]
    assert record.pixel_size_nm == pytest.approx(PX)
    anns = json.loads(paths["coco"].read_text())["annotations"]
    assert [a["score"] for a in anns] == [0.9, 0.7] and [a["confidence"] for a in anns] == [0.8, 0.3]


def test_coco_references_the_input_file_when_not_resized(tmp_path):
    src = tmp_path / "in" / "scan.png"
    src.parent.mkdir()
    Image.fromarray(np.full((60, 80), 102, np.uint8)).save(src)
    paths = write_outputs(constructed(source=str(src)), tmp_path / "out")
    assert paths["labels"].name == "scan_labels.tif"
    entry = json.loads(paths["coco"].read_text())["images"][0]
    assert entry["file_name"] == "scan.png" and not (tmp_path / "out" / "scan.png").exists()


def test_empty_prediction_writes_empty_files(tmp_path):
    pred = Prediction(labels=np.zeros((30, 40), np.int32),
                      table=pd.DataFrame(columns=["id", "objectness", "confidence", "certain", "area_px"]),
                      image=np.zeros((30, 40), np.float32))
    paths = write_outputs(pred, tmp_path, name="empty")
    csv = pd.read_csv(paths["particles"])
    assert len(csv) == 0 and list(csv.columns)[: len(PARTICLE_COLUMNS)] == PARTICLE_COLUMNS
    with zipfile.ZipFile(paths["rois"]) as z:
        assert z.namelist() == []
    assert json.loads(paths["coco"].read_text())["annotations"] == []
    assert load_labels(paths["labels"]).max() == 0
