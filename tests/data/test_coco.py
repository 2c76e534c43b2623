"""semkit.data.coco: exact round trip, polygon and RLE import, overlaps, certainty flags, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from semkit.data.coco import load_coco, load_coco_masks, masks_to_labels, save_coco
from semkit.data.records import SEMRecord
from semkit.errors import InputError


def _snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _records() -> list[SEMRecord]:
    rng = np.random.default_rng(0)
    h, w = 24, 32
    labels = np.zeros((h, w), np.int32)
    labels[2:8, 3:12] = 1
    labels[10:20, 5:9] = 2
    labels[4:9, 20:30] = 3
    labels[15:22, 22:25] = 4
    labels[15:17, 25:27] = 4  # non-convex instance
    img8 = (rng.integers(0, 256, (h, w)) / 255.0).astype(np.float32)  # exactly 8-bit -> PNG
    img16 = (rng.integers(0, 65536, (h, w)) / 65535.0).astype(np.float32)  # exactly 16-bit -> 16-bit PNG
    imgf = rng.random((h, w), dtype=np.float32)  # arbitrary floats -> float32 TIFF
    return [
        SEMRecord(image=img8, instances=labels, certain=np.array([True, False, True, False]), pixel_size_nm=7.344,
                  source="a.tif", magnification_bucket="high", split="train"),
        SEMRecord(image=img16, instances=np.zeros((h, w), np.int32), certain=np.zeros(0, bool), source="b.tif",
                  split="val"),
        SEMRecord(image=imgf, instances=labels[::-1].copy(), certain=np.array([False, False, True, True]),
                  pixel_size_nm=2000.0, source="synthetic://seed=0/index=2"),
    ]  # fmt: skip


def _assert_same(a: SEMRecord, b: SEMRecord) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    assert b.image.dtype == np.float32
    np.testing.assert_array_equal(a.instances, b.instances)
    assert (a.certain is None) == (b.certain is None)
    if a.certain is not None:
        np.testing.assert_array_equal(a.certain, b.certain)
    assert (a.pixel_size_nm, a.split, a.name) == (b.pixel_size_nm, b.split, b.name)


def test_round_trip_exact(tmp_path):
    records = _records()
    path = save_coco(records, tmp_path / "ann" / "coco.json", image_root=tmp_path / "images")
    files = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert files == ["a.png", "b.png", "index=2.tif"]  # 8-bit, 16-bit, float32: each lossless
    back = load_coco(path, image_root=tmp_path / "images")
    assert len(back) == 3
    for a, b in zip(records, back, strict=True):
        _assert_same(a, b)
    assert [r.magnification_bucket for r in back] == ["high", None, "low"]  # 2000 nm * 32 px = 64 µm -> low
    data = json.loads(path.read_text())
    ann = data["annotations"][0]
    assert isinstance(ann["segmentation"]["counts"], str)  # compressed RLE on export
    assert ann["attributes"] == {"certain": True} and ann["area"] == 54.0 and ann["bbox"] == [3, 2, 9, 6]
    assert data["images"][0]["pixel_size_nm"] == 7.344
    # the mask stack and the label map agree when nothing overlaps
    stack = load_coco_masks(path)["a.png"]
    np.testing.assert_array_equal(stack.masks.argmax(0) + stack.masks.any(0), records[0].instances)


def test_round_trip_without_flags_and_existing_images(tmp_path):
    img = np.zeros((10, 12), np.uint8)
    img[2:5, 3:9] = 200
    Image.fromarray(img).save(tmp_path / "x.png")
    labels = (img > 0).astype(np.int32)
    rec = SEMRecord(image=(img / 255.0).astype(np.float32), instances=labels, source=str(tmp_path / "x.png"))
    path = save_coco([rec], tmp_path / "coco.json", image_root=tmp_path, write_images=False)
    assert json.loads(path.read_text())["images"][0]["file_name"] == "x.png"
    (back,) = load_coco(path)
    _assert_same(rec, back)
    assert back.certain is None and "attributes" not in json.loads(path.read_text())["annotations"][0]
    with pytest.raises(InputError, match="image_root"):
        save_coco([rec], tmp_path / "c2.json", image_root=tmp_path / "elsewhere", write_images=False)
    # a folder of links to images stored elsewhere (a shared dataset): file names are the links' names
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "y.png").symlink_to(tmp_path / "x.png")
    linked = SEMRecord(image=rec.image, instances=labels, source=str(tmp_path / "links" / "y.png"))
    path = save_coco([linked], tmp_path / "links" / "coco.json", image_root=tmp_path / "links", write_images=False)
    assert json.loads(path.read_text())["images"][0]["file_name"] == "y.png"
    _assert_same(linked, load_coco(path)[0])


def _write_coco(tmp_path: Path, annotations: list[dict], h: int = 8, w: int = 8, **image_extra) -> Path:
    Image.fromarray(np.full((h, w), 100, np.uint8)).save(tmp_path / "img.png")
    data = {
        "images": [{"id": 1, "file_name": "img.png", "height": h, "width": w, **image_extra}],
        "annotations": [{"image_id": 1, "category_id": 1, "iscrowd": 0, **a} for a in annotations],
        "categories": [{"id": 1, "name": "particle"}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return path


def test_polygon_import_hand_drawn(tmp_path):
    # An L drawn on pixel corners: x 1..6 along the top (rows 1-2), then down x 1..3 to y = 7.
    polygon = [1, 1, 6, 1, 6, 3, 3, 3, 3, 7, 1, 7]
    path = _write_coco(tmp_path, [{"id": 11, "segmentation": [polygon], "certain": True}], pixel_size_nm=3.0)
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 1, 1, 0, 0],
            [0, 1, 1, 1, 1, 1, 0, 0],
            [0, 1, 1, 0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    before = _snapshot(tmp_path)
    (rec,) = load_coco(path)
    assert _snapshot(tmp_path) == before  # reading never touches the input folder
    np.testing.assert_array_equal(rec.instances, expected)
    assert rec.certain.tolist() == [True] and rec.pixel_size_nm == 3.0
    assert rec.meta["annotation_ids"] == [11]


def test_rle_uncompressed_and_compressed(tmp_path):
    mask = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=np.uint8)
    # column-major runs starting with zeros: col0 = 0,0,0,1 | col1 = 1,1,0,0 | col2 = 1,0,0,0
    uncompressed = {"size": [4, 3], "counts": [3, 3, 2, 1, 3]}
    compressed = mask_utils.encode(np.asfortranarray(mask))
    compressed = {"size": [4, 3], "counts": compressed["counts"].decode("ascii")}
    path = _write_coco(
        tmp_path,
        [
            {"id": 1, "segmentation": uncompressed, "attributes": {"certain": False}},
            {"id": 2, "segmentation": compressed, "attributes": {"certain": "true"}},
        ],
        h=4,
        w=3,
    )
    stack = load_coco_masks(path)["img.png"]
    np.testing.assert_array_equal(stack.masks[0], mask.astype(bool))
    np.testing.assert_array_equal(stack.masks[1], mask.astype(bool))
    assert stack.certain.tolist() == [False, True] and stack.annotation_ids.tolist() == [1, 2]


def test_overlaps_smaller_wins_and_hidden_listed(tmp_path):
    big = [0, 0, 6, 0, 6, 6, 0, 6]  # 36 px
    small = [2, 2, 4, 2, 4, 4, 2, 4]  # 4 px inside it
    path = _write_coco(tmp_path, [{"id": 1, "segmentation": [big]}, {"id": 2, "segmentation": [small]}])
    (rec,) = load_coco(path)
    assert (rec.instances == 1).sum() == 32 and (rec.instances == 2).sum() == 4
    assert rec.instances[3, 3] == 2 and rec.certain is None
    stack = load_coco_masks(path)["img.png"]
    assert stack.masks.shape == (2, 8, 8) and stack.masks.sum(axis=(1, 2)).tolist() == [36, 4]

    # A mask covered completely by two smaller ones has no pixel left: listed, not silently lost.
    a = [0, 0, 6, 0, 6, 2, 0, 2]  # 12 px
    b = [0, 0, 4, 0, 4, 2, 0, 2]  # 8 px
    c = [2, 0, 6, 0, 6, 2, 2, 2]  # 8 px
    path = _write_coco(
        tmp_path,
        [{"id": 7, "segmentation": [a]}, {"id": 8, "segmentation": [b]}, {"id": 9, "segmentation": [c]}],
    )
    (rec,) = load_coco(path)
    assert rec.n_instances == 2 and rec.meta["hidden_annotation_ids"] == [7]
    assert rec.meta["annotation_ids"] == [8, 9]


def test_masks_to_labels_ties_keep_file_order():
    masks = np.zeros((2, 2, 3), bool)
    masks[0, 0, :2] = True
    masks[1, 0, 1:] = True  # same area: the later one is painted last and owns the shared pixel
    labels, kept = masks_to_labels(masks)
    np.testing.assert_array_equal(labels, [[1, 2, 2], [0, 0, 0]])
    assert kept.tolist() == [0, 1]
    labels, kept = masks_to_labels(np.zeros((0, 2, 2), bool))
    assert labels.shape == (2, 2) and kept.size == 0


def test_crowd_annotations_counted_not_decoded(tmp_path):
    path = _write_coco(
        tmp_path,
        [
            {"id": 1, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
            {"id": 2, "segmentation": [[]], "iscrowd": 1},
        ],
    )
    (rec,) = load_coco(path)
    assert rec.n_instances == 1 and rec.meta["n_crowd"] == 1


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ([{"id": 1, "segmentation": [[0, 0, 2, 0, 2]]}], "polygons"),
        ([{"id": 1, "segmentation": {"size": [5, 5], "counts": [64]}}], "RLE size"),
        ([{"id": 1, "segmentation": {"size": [8, 8], "counts": "!!"}}], "malformed RLE"),
        ([{"id": 1, "segmentation": {"size": [8, 8], "counts": ""}}], "malformed RLE"),
        ([{"id": 1, "segmentation": {"size": [8, 8], "counts": "zzzz"}}], "malformed RLE"),
        ([{"id": 1, "segmentation": 3}], "polygons or RLE"),
        (
            [
                {"id": 1, "segmentation": [[0, 0, 2, 0, 2, 2]], "certain": True},
                {"id": 2, "segmentation": [[0, 0, 2, 0, 2, 2]]},
            ],
            "no 'certain' flag",
        ),
        ([{"id": 1, "image_id": 99, "segmentation": [[0, 0, 2, 0, 2, 2]]}], "unknown image"),
        ([], "magnification_bucket"),
    ],
)
def test_bad_json_names_the_file(tmp_path, annotations, message):
    extra = {"magnification_bucket": "medium"} if message == "magnification_bucket" else {}
    path = _write_coco(tmp_path, annotations, **extra)
    with pytest.raises(InputError, match=message) as info:
        load_coco(path)
    assert "coco.json" in str(info.value)


def test_bad_files_name_the_file(tmp_path):
    two = _write_coco(tmp_path, [])
    data = json.loads(two.read_text())
    data["images"].append({**data["images"][0], "id": 2})
    two.write_text(json.dumps(data))
    with pytest.raises(InputError, match="coco.json.*share the file name"):
        load_coco(two)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="broken.json"):
        load_coco(tmp_path / "broken.json")
    path = _write_coco(tmp_path, [], h=9)  # the entry says 9 rows, the PNG has 8
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img.png")
    with pytest.raises(InputError, match="img.png"):
        load_coco(path)
    (tmp_path / "img.png").unlink()
    with pytest.raises(InputError, match="img.png"):
        load_coco(path)
    rec = _records()[0]
    with pytest.raises(InputError, match="unique"):
        save_coco([rec, rec], tmp_path / "d.json", image_root=tmp_path / "imgs")
    gap = SEMRecord(
        image=rec.image, instances=np.where(rec.instances == 2, 0, rec.instances), source="gap.tif"
    )
    with pytest.raises(InputError, match="gap.tif.*label 2"):
        save_coco([gap], tmp_path / "e.json", image_root=tmp_path / "imgs")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_rle_runs_parse_pycocotools_strings(h, w, seed):
    from semkit.data.coco import rle_runs

    mask = np.random.default_rng(seed).random((h, w)) < 0.4
    counts = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
    runs = rle_runs(counts)
    # COCO runs alternate background/foreground over the column-major pixel order, starting with background
    flat = mask.flatten(order="F")
    expected, value, n = [], False, 0
    for v in flat:
        if v == value:
            n += 1
        else:
            expected.append(n)
            value, n = v, 1
    expected.append(n)
    assert runs == expected and sum(runs) == h * w
    assert rle_runs(counts.decode()) == runs
    assert rle_runs(counts + b"zz") is None and rle_runs(b"") == []
