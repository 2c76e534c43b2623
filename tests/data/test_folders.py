"""semkit.data.folders: unlabeled folder scans, databar cropping, lazy iteration, bad files."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import semkit.data.folders as folders
from semkit.data.folders import iter_unlabeled, load_unlabeled, magnification_bucket
from semkit.errors import InputError


def _snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _specimen(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(30, 220, (h, w), dtype=np.uint8)


def _pool(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    with_bar = _specimen(120, 90, 0)
    with_bar[-12:] = 0  # a 12-row black databar with a line of text
    with_bar[-7:-5, 4:30] = 255
    tifffile.imwrite(
        root / "a_bar.tif", with_bar, imagej=True, resolution=(1 / 20.0, 1 / 20.0), metadata={"unit": "nm"}
    )
    Image.fromarray(_specimen(64, 80, 1)).save(root / "sub" / "b.png")
    Image.fromarray(_specimen(50, 60, 2)).save(root / "sub" / "deeper" / "c.jpg", quality=95)
    (root / "notes.txt").write_text("not an image")
    return root


def test_magnification_bucket_split_at_50um():
    assert magnification_bucket(49.99) == "high"
    assert magnification_bucket(50.0) == "low"
    assert magnification_bucket(7.52) == "high" and magnification_bucket(None) is None
    assert magnification_bucket(20.0, threshold_um=10.0) == "low"


def test_load_recursive_with_databar(tmp_path):
    root = _pool(tmp_path / "pool")
    before = _snapshot(root)
    records = load_unlabeled(root)
    assert _snapshot(root) == before
    assert [r.name for r in records] == ["a_bar", "b", "c"]
    a, b, c = records
    assert a.meta["databar_rows"] == 12 and a.image.shape == (108, 90)
    assert a.pixel_size_nm == pytest.approx(20.0) and a.magnification_bucket == "high"  # 1.8 µm wide
    assert a.meta["field_of_view_um"] == pytest.approx(90 * 20.0 / 1000)
    assert b.meta["databar_rows"] == 0 and b.image.shape == (64, 80) and b.pixel_size_nm is None
    assert b.magnification_bucket is None and c.image.shape == (50, 60)
    assert all(r.instances is None and r.semantic is None and r.certain is None for r in records)
    assert [r.name for r in load_unlabeled(root, recursive=False)] == ["a_bar"]


def test_crop_modes_and_file_inputs(tmp_path):
    root = _pool(tmp_path / "pool")
    (full,) = load_unlabeled(root / "a_bar.tif", crop_databar=False)
    assert full.image.shape == (120, 90) and full.meta["databar_rows"] == 0
    (fixed,) = load_unlabeled([root / "a_bar.tif"], crop_databar=20)
    assert fixed.image.shape == (100, 90) and fixed.meta["databar_rows"] == 20
    np.testing.assert_array_equal(fixed.image, full.image[:100])
    with pytest.raises(InputError, match="a_bar.tif"):
        load_unlabeled(root / "a_bar.tif", crop_databar=120)


def test_iter_is_lazy(tmp_path, monkeypatch):
    root = _pool(tmp_path / "pool")
    calls = []
    real = folders.load_image
    monkeypatch.setattr(folders, "load_image", lambda p: calls.append(p) or real(p))
    gen = iter_unlabeled(root)
    assert inspect.isgenerator(gen) and calls == []
    first = next(gen)
    assert first.name == "a_bar" and len(calls) == 1  # one image in memory at a time
    assert [r.name for r in gen] == ["b", "c"] and len(calls) == 3


def test_bad_files_raise_or_are_collected(tmp_path):
    root = _pool(tmp_path / "pool")
    data = (root / "sub" / "b.png").read_bytes()
    (root / "sub" / "b.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="b.png"):
        load_unlabeled(root)
    errors: list[InputError] = []
    records = load_unlabeled(root, errors=errors)
    assert [r.name for r in records] == ["a_bar", "c"]
    assert len(errors) == 1 and errors[0].path.endswith("b.png")
    with pytest.raises(InputError, match="missing"):
        load_unlabeled(tmp_path / "missing")
    with pytest.raises(InputError, match="notes.txt"):
        load_unlabeled(root / "notes.txt")


@pytest.mark.shared_data
def test_real_pools(phenom_dir, bam_dir):
    phenom = load_unlabeled(phenom_dir)
    assert len(phenom) == 9
    assert all(r.meta["databar_rows"] == 0 and r.pixel_size_nm is None for r in phenom)
    assert {r.image.shape for r in phenom} == {(1200, 1920), (900, 1100), (600, 960)}
    bam = list(iter_unlabeled(bam_dir / "images"))
    assert len(bam) == 30
    assert all(r.meta["databar_rows"] == 56 and r.image.shape == (712, 1024) for r in bam)
    assert all(r.magnification_bucket == "high" and r.pixel_size_nm == 7.344 for r in bam)
