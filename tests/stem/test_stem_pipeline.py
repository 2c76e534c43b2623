"""The whole boxing pipeline on synthetic particles of 1–5 elements, box files and real-image folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from semkit.errors import InputError
from semkit.stem import (
    GRID_POINTS,
    BoxSettings,
    auto_review,
    box_image,
    boxes_from_parent,
    choose_k,
    coverage,
    load_haadf_folder,
    make_haadf_image,
    read_element_counts,
    write_boxes,
)


@pytest.mark.parametrize("n_elements", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("algorithm", [1, 2])
def test_full_pipeline_on_synthetic_particles(n_elements, algorithm):
    rec = make_haadf_image(512, n_elements, seed=10 + n_elements)
    res = box_image(rec, settings=BoxSettings(algorithm=algorithm))
    seg = res.segmentation
    assert res.reason is None and seg.n_elements == n_elements
    assert seg.k == choose_k(len(seg.peaks), n_elements)
    # Far fewer points than the 128 x 128 grid (the study: about 30-fold on average).
    assert 20 <= res.n_boxes <= GRID_POINTS / 8
    # Boxes cover the particle's hull exactly once, each within one cluster, none above the cap.
    np.testing.assert_array_equal(coverage(res.boxes, seg.labels.shape), seg.hull.astype(np.int32))
    for r, c, s, lab in res.boxes:
        assert (seg.labels[r : r + s, c : c + s] == lab).all()
    assert res.cap == max(1, int(0.2 * min(seg.labels.shape))) and res.boxes[:, 2].max() <= res.cap
    # Against the ground truth: the bounding box holds the whole particle, the hull matches it.
    review = auto_review(res, rec)
    assert review["bbox_encloses_particle"] and review["iou"] >= 0.85


def test_boxes_in_parent_pixels_and_nanometres():
    rec = make_haadf_image(1024, 2, layout="core-shell", seed=3)
    res = box_image(rec)
    table = res.table()
    assert list(table.columns) == ["x", "y", "size", "x_nm", "y_nm", "size_nm", "cluster"]
    assert len(table) == res.n_boxes and res.scale == 8.0
    np.testing.assert_allclose(table["size_nm"], table["size"] * rec.pixel_size_nm)
    np.testing.assert_allclose(table["x_nm"], table["x"] * rec.pixel_size_nm)
    # Round trip to the crop grid, and the parent boxes cover the upsampled hull exactly.
    back = boxes_from_parent(table[["x", "y", "size"]].to_numpy(), res.offset, res.scale)
    np.testing.assert_array_equal(back, res.boxes[:, :3])
    parent_cover = np.zeros((1024, 1024), np.int32)
    for x, y, s in table[["x", "y", "size"]].to_numpy().astype(int):
        parent_cover[y : y + s, x : x + s] += 1
    r0, c0, r1, c1 = res.segmentation.bbox
    hull_parent = np.zeros((128, 128), bool)
    hull_parent[r0:r1, c0:c1] = res.segmentation.hull
    np.testing.assert_array_equal(parent_cover, np.kron(hull_parent, np.ones((8, 8), int)))
    # Unknown pixel size: physical columns are NaN, never guessed.
    assert box_image(rec.image, 2).table()["x_nm"].isna().all()


def test_write_boxes_csv_and_json(tmp_path):
    rec = make_haadf_image(512, 3, seed=5)
    settings = BoxSettings(algorithm=1)
    res = box_image(rec, settings=settings)
    csv = pd.read_csv(write_boxes(res, tmp_path / "b.csv"))
    pd.testing.assert_frame_equal(csv, res.table(), check_dtype=False)
    payload = json.loads(write_boxes(res, tmp_path / "b.json", settings).read_text())
    assert payload["n_boxes"] == res.n_boxes == len(payload["boxes"])
    assert payload["algorithm"] == 1 and payload["settings"]["algorithm"] == 1
    assert payload["parent_shape"] == [512, 512] and payload["grid"] == 128
    assert payload["boxes"][0]["x"] == pytest.approx(csv["x"][0])
    with pytest.raises(InputError, match="csv or .json"):
        write_boxes(res, tmp_path / "b.txt")


def _write_folder(tmp_path):
    folder = tmp_path / "haadf"
    (folder / "sub").mkdir(parents=True)
    a = make_haadf_image(256, 2, layout="janus", seed=1)
    b = make_haadf_image(256, 4, seed=2)
    Image.fromarray(np.rint(a.image * 255).astype(np.uint8)).save(folder / "a.png")
    tifffile.imwrite(folder / "sub" / "b.tif", np.rint(b.image * 4000).astype(np.uint16))  # 16-bit, small range
    return folder


def test_folder_of_real_images_with_counts_csv(tmp_path):
    folder = _write_folder(tmp_path)
    (folder / "elements.csv").write_text("file,n_elements\na.png,2\nb,4\n")
    records = load_haadf_folder(folder)
    assert [r.meta["n_elements"] for r in records] == [2, 4]
    assert records[1].meta["original_dtype"] == "uint16"
    results = [box_image(r) for r in records]
    assert all(r.reason is None and r.n_boxes > 10 for r in results)


def test_folder_without_a_count_names_the_file(tmp_path):
    folder = _write_folder(tmp_path)
    csv = tmp_path / "counts.csv"
    csv.write_text("file,n_elements\na.png,2\n")
    with pytest.raises(InputError, match="no element count") as info:
        load_haadf_folder(folder, csv)
    assert "b.tif" in str(info.value)
    assert [r.meta["n_elements"] for r in load_haadf_folder(folder, csv, n_elements=3)] == [2, 3]


@pytest.mark.parametrize(
    ("text", "match"),
    [("name,count\na.png,2\n", "'file' column"), ("file,n_elements\na.png,two\n", "positive integer"),
     ("file,n_elements\na.png,0\n", "positive integer"), ("file,elements\na.png,2.5\n", "positive integer")],
)
def test_bad_counts_csv(tmp_path, text, match):
    csv = tmp_path / "c.csv"
    csv.write_text(text)
    with pytest.raises(InputError, match=match) as info:
        read_element_counts(csv)
    assert "c.csv" in str(info.value)


def test_counts_csv_keys_and_missing_file(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("file,elements\ndir/x.tif,3\n")
    assert read_element_counts(csv) == {"dir/x.tif": 3, "x.tif": 3, "x": 3}
    with pytest.raises(InputError, match="does not exist"):
        read_element_counts(tmp_path / "nope.csv")
