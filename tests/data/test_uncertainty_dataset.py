"""semkit.data.uncertainty_dataset: layout discovery, merging of high/low-confidence label maps, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from semkit.data.uncertainty_dataset import combine_confidence_labels, load_uncertainty_dataset
from semkit.errors import InputError


def _snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _maps() -> tuple[np.ndarray, np.ndarray]:
    """High-confidence ids 5 and 9, low-confidence ids 3 (free), 7 (25 % under #5), 8 (75 % under #9)."""
    high = np.zeros((12, 16), np.uint16)
    high[0:4, 0:4] = 5
    high[6:10, 0:4] = 9
    low = np.zeros((12, 16), np.uint16)
    low[0:4, 8:12] = 3
    low[0:4, 3:7] = 7  # column 3 is inside #5: 4 of 16 pixels covered
    low[6:10, 1:5] = 8  # columns 1-3 inside #9: 12 of 16 covered -> duplicate
    return high, low


def test_combine_hand_computed():
    high, low = _maps()
    labels, certain, counts = combine_confidence_labels(high, low)
    assert counts == {"n_high": 2, "n_low": 2, "n_low_dropped": 1}
    assert certain.tolist() == [True, True, False, False]
    assert (labels == 1).sum() == 16 and (labels == 2).sum() == 16  # high particles are whole
    assert (labels == 3).sum() == 16  # low id 3 (ranked before 7)
    assert (labels == 4).sum() == 12  # low id 7 minus the column shared with #5
    assert labels[0, 3] == 1 and labels[0, 4] == 4
    assert labels[6, 4] == 0  # the dropped duplicate leaves no trace
    assert labels.dtype == np.int32


@settings(max_examples=40, deadline=None)
@given(
    high=arrays(np.uint8, (6, 7), elements=st.integers(0, 4)),
    low=arrays(np.uint8, (6, 7), elements=st.integers(0, 4)),
)
def test_combine_properties(high, low):
    labels, certain, counts = combine_confidence_labels(high, low)
    n = counts["n_high"] + counts["n_low"]
    assert len(certain) == n == labels.max(initial=0)
    assert set(np.unique(labels[labels > 0])) == set(range(1, n + 1))  # consecutive, none empty
    assert np.all((labels > 0) <= ((high > 0) | (low > 0)))  # no label outside the annotations
    # every high-confidence pixel keeps a certain label; every certain label comes from a high particle
    assert np.all(certain[labels[high > 0] - 1])
    flags = np.concatenate([[False], certain])  # index 0 = background
    assert not np.any((high == 0) & flags[labels])
    assert counts["n_high"] == len(np.unique(high[high > 0]))
    for j in np.unique(low[low > 0]):
        free = (low == j) & (high == 0)
        # a low-confidence particle is kept whole (outside high ones) under one uncertain label, or dropped
        assert len(np.unique(labels[free])) <= 1
        if labels[free].size and labels[free][0] > 0:
            assert not certain[labels[free][0] - 1]
    for lab in range(counts["n_high"] + 1, n + 1):
        assert len(np.unique(low[labels == lab])) == 1  # one uncertain label = one low-confidence particle


def _make_set(folder: Path, names: dict[str, str], shape=(12, 16), pixel_nm: float | None = None) -> None:
    high, low = _maps()
    for sub in ("Samples", "High_Confidence_Labels", "Low_Confidence_Labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for stem, suffix in names.items():
        img = np.random.default_rng(len(stem)).integers(0, 255, shape, dtype=np.uint8)
        if suffix == ".png":
            Image.fromarray(img).save(folder / "Samples" / f"{stem}.png")
        else:
            kwargs = {}
            if pixel_nm:
                kwargs = {
                    "imagej": True,
                    "resolution": (1 / pixel_nm, 1 / pixel_nm),
                    "metadata": {"unit": "nm"},
                }
            tifffile.imwrite(folder / "Samples" / f"{stem}{suffix}", img, **kwargs)
        tifffile.imwrite(folder / "High_Confidence_Labels" / f"{stem}.tif", high)
        tifffile.imwrite(folder / "Low_Confidence_Labels" / f"{stem}.tif", low)


def test_layout_with_two_magnification_sets(tmp_path):
    root = tmp_path / "dataset"
    _make_set(root / "Low_Magnification", {"a": ".tif", "b": ".png"})
    _make_set(root / "high-mag", {"c": ".tif"})
    before = _snapshot(root)
    records = load_uncertainty_dataset(root)
    assert _snapshot(root) == before
    assert [r.name for r in records] == ["a", "b", "c"]  # sets sorted by path, then names
    assert [r.magnification_bucket for r in records] == ["low", "low", "high"]  # from the set folder names
    for rec in records:
        assert rec.n_instances == 4 and rec.certain.tolist() == [True, True, False, False]
        assert rec.meta["n_low_dropped"] == 1 and rec.meta["databar_rows"] == 0
        assert rec.image.shape == (12, 16) and rec.pixel_size_nm is None
    assert records[0].meta["set"] == "dataset/Low_Magnification"


def test_root_is_a_set_bucket_from_pixel_size_or_override(tmp_path):
    _make_set(tmp_path / "set", {"a": ".tif"}, pixel_nm=5000.0)  # 16 px * 5 µm = 80 µm field of view -> low
    (rec,) = load_uncertainty_dataset(tmp_path / "set")
    assert rec.pixel_size_nm == pytest.approx(5000.0) and rec.magnification_bucket == "low"
    (rec,) = load_uncertainty_dataset(tmp_path / "set", magnification_bucket="high")
    assert rec.magnification_bucket == "high"
    # pointing at the Samples folder itself also works
    (rec,) = load_uncertainty_dataset(tmp_path / "set" / "Samples")
    assert rec.name == "a" and rec.n_instances == 4


def test_databar_crop_applies_to_labels(tmp_path):
    _make_set(tmp_path / "set", {"a": ".tif"})
    (rec,) = load_uncertainty_dataset(tmp_path / "set", databar_rows=4)
    assert rec.image.shape == (8, 16) and rec.instances.shape == (8, 16)
    # high #9 sits in rows 6-9: cropped to 2 rows; low #8 stays a duplicate (covered 6 of 8 pixels)
    assert rec.certain.tolist() == [True, True, False, False]
    assert (rec.instances == 2).sum() == 8


def test_binary_label_encoding(tmp_path):
    root = tmp_path / "set"
    _make_set(root, {"a": ".tif"})
    binary = np.zeros((12, 16), np.uint8)
    binary[0:3, 0:3] = 255
    binary[0:3, 4:7] = 255  # separated by a background column: two particles
    tifffile.imwrite(root / "High_Confidence_Labels" / "a.tif", binary)
    tifffile.imwrite(root / "Low_Confidence_Labels" / "a.tif", np.zeros((12, 16), np.uint8))
    (rec,) = load_uncertainty_dataset(root, label_encoding="binary")
    assert rec.n_instances == 2 and rec.certain.tolist() == [True, True]


def test_bad_input_names_the_file(tmp_path):
    root = tmp_path / "set"
    _make_set(root, {"a": ".tif"})
    (root / "Low_Confidence_Labels" / "a.tif").unlink()
    with pytest.raises(InputError, match=r"Low_Confidence_Labels/a\.tif"):
        load_uncertainty_dataset(root)

    root = tmp_path / "s2"
    _make_set(root, {"a": ".tif"})
    tifffile.imwrite(root / "High_Confidence_Labels" / "a.tif", np.zeros((12, 15), np.uint16))
    with pytest.raises(InputError, match=r"High_Confidence_Labels/a\.tif"):
        load_uncertainty_dataset(root)

    root = tmp_path / "s3"
    _make_set(root, {"a": ".tif"})
    tifffile.imwrite(root / "High_Confidence_Labels" / "a.tif", np.zeros((11, 16), np.uint16))
    with pytest.raises(InputError, match=r"High_Confidence_Labels/a\.tif.*crop"):
        load_uncertainty_dataset(root)

    root = tmp_path / "s4"
    (root / "Samples").mkdir(parents=True)
    (root / "High_Confidence_Labels").mkdir()
    with pytest.raises(InputError, match="Low_Confidence_Labels"):
        load_uncertainty_dataset(root)

    (tmp_path / "s5" / "Low_Mag" / "Samples").mkdir(parents=True)
    for sub in ("High_Confidence_Labels", "Low_Confidence_Labels"):
        (tmp_path / "s5" / "Low_Mag" / sub).mkdir()
    with pytest.raises(InputError, match="Samples.*no images"):
        load_uncertainty_dataset(tmp_path / "s5")

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="Samples"):
        load_uncertainty_dataset(tmp_path / "empty")
