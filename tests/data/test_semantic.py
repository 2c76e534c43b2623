"""semkit.data.semantic: the NASA EBC folder layout, real split counts, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semkit.data.semantic import load_semantic_folders
from semkit.errors import InputError


def _snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _make(root: Path, split: str, names: list[str], shape=(6, 5)) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}_annot").mkdir(exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full(shape, 40 * i, np.uint8)).save(root / split / f"{name}.png")
        lab = np.zeros(shape, np.uint8)
        lab[: i + 1] = 2
        lab[-1] = 1
        Image.fromarray(lab).save(root / f"{split}_annot" / f"{name}.png")


def test_constructed_split(tmp_path):
    _make(tmp_path, "train", ["b", "a#1"])
    before = _snapshot(tmp_path)
    records = load_semantic_folders(tmp_path, "train", classes=(0, 1, 2))
    assert _snapshot(tmp_path) == before
    assert [r.name for r in records] == ["a#1", "b"]
    rec = records[1]
    assert rec.split == "train" and rec.instances is None and rec.semantic.dtype == np.uint8
    expected = np.zeros((6, 5), np.uint8)
    expected[:1] = 2
    expected[-1] = 1
    np.testing.assert_array_equal(rec.semantic, expected)
    np.testing.assert_array_equal(rec.image, np.zeros((6, 5), np.float32))
    assert records[0].image[0, 0] == pytest.approx(40 / 255)


def test_palette_labels_give_indices(tmp_path):
    _make(tmp_path, "val", ["x"])
    idx = np.array([[0, 1, 2, 1, 0]] * 6, np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "val_annot" / "x.png")
    (rec,) = load_semantic_folders(tmp_path, "val")
    np.testing.assert_array_equal(rec.semantic, idx)


def test_bad_input_names_the_file(tmp_path):
    _make(tmp_path, "train", ["a", "b"])
    Image.fromarray(np.zeros((6, 4), np.uint8)).save(tmp_path / "train_annot" / "b.png")
    with pytest.raises(InputError, match=r"train_annot/b\.png.*does not match"):
        load_semantic_folders(tmp_path, "train")

    _make(tmp_path / "m", "test", ["a", "b"])
    (tmp_path / "m" / "test_annot" / "a.png").unlink()
    with pytest.raises(InputError, match=r"test_annot/a\.png.*missing label"):
        load_semantic_folders(tmp_path / "m", "test")

    _make(tmp_path / "o", "test", ["a"])
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(tmp_path / "o" / "test_annot" / "stray.png")
    with pytest.raises(InputError, match="stray"):
        load_semantic_folders(tmp_path / "o", "test")

    _make(tmp_path / "c", "train", ["a"])
    Image.fromarray(np.full((6, 5), 7, np.uint8)).save(tmp_path / "c" / "train_annot" / "a.png")
    with pytest.raises(InputError, match=r"a\.png.*\[7\]"):
        load_semantic_folders(tmp_path / "c", "train", classes=(0, 1, 2))

    with pytest.raises(InputError, match="val_annot"):
        (tmp_path / "v" / "val").mkdir(parents=True)
        load_semantic_folders(tmp_path / "v", "val")


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("benchmark", "counts"),
    [("EBC1", (18, 3, 3)), ("EBC2", (4, 3, 3)), ("EBC3", (15, 3, 6))],
)
def test_nasa_ebc_split_counts(nasa_ebc_dir, benchmark, counts):
    for split, expected in zip(("train", "val", "test"), counts, strict=True):
        records = load_semantic_folders(nasa_ebc_dir / benchmark, split, classes=(0, 1, 2))
        assert len(records) == expected
        values = set()
        for rec in records:
            values |= set(np.unique(rec.semantic).tolist())
            assert rec.semantic.shape == rec.image.shape and rec.split == split
        assert values <= {0, 1, 2}
