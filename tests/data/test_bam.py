"""semkit.data.bam: instances from outline masks, certainty from the measurable mask, real BAM counts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from semkit.data.bam import certainty_from_mask, instances_from_outline_mask, load_bam
from semkit.errors import InputError

H, W, BAR, CUT = 50, 40, 8, 10  # image rows, columns, visible bar rows, rows the annotators cut


def _snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _outline_mask() -> np.ndarray:
    """Hand-made particles (255) on background; comments give the expected label after the 10-row cut."""
    m = np.zeros((H, W), np.uint8)
    m[2:10, 2:12] = 255  # 1: certain (fully measurable)
    m[2:10, 13:23] = 255  # 2: certain (60 % measurable); column 12 is the 1-px separating line
    m[12:20, 2:12] = 255  # 3: uncertain (30 % measurable)
    m[22:26, 2:6] = 255  # 4: touches 5 only diagonally -> separate under 4-connectivity
    m[26:30, 6:10] = 255  # 5
    m[30, 30] = 255  # 6: single-pixel fragment
    m[34:44, 32:34] = 255  # 7: left arm of a U whose base lies below the cut -> split in two by the crop
    m[34:44, 36:38] = 255  # 8: right arm
    m[42:44, 32:38] = 255
    m[36:46, 20:30] = 255  # 9: crosses the cut, measurable part fully inside -> certain
    m[44:48, 2:7] = 255  # entirely below the cut: not an instance of the cropped image
    return m


def _measurable() -> np.ndarray:
    m = np.zeros((H - CUT, W), np.uint8)
    m[2:10, 2:12] = 255
    m[2:10, 13:19] = 255
    m[12:20, 2:5] = 255
    m[36:40, 20:30] = 255
    return m


def _make_bam(root: Path, name: str = "img01") -> Path:
    for sub in ("images", "instances", "measurable"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, (H, W), dtype=np.uint8)
    image[H - BAR :] = 0
    image[H - 5 : H - 3, 3:20] = 255  # bar text
    tifffile.imwrite(root / "images" / f"{name}.tif", image)
    tifffile.imwrite(root / "instances" / f"{name}_m.tif", _outline_mask())
    tifffile.imwrite(root / "measurable" / f"{name}_cm.tif", _measurable())
    return root


EXPECTED_CERTAIN = [True, True, False, False, False, False, False, False, True]


def test_synthetic_layout(tmp_path):
    root = _make_bam(tmp_path / "bam")
    before = _snapshot(root)
    (rec,) = load_bam(root, databar_rows=CUT)
    assert _snapshot(root) == before  # nothing in the input folder is modified
    assert rec.image.shape == (H - CUT, W) and rec.instances.dtype == np.int32
    assert rec.n_instances == 9
    assert rec.meta["n_instances_uncropped"] == 9  # 9 full-mask components: +1 split by the cut, -1 below it
    assert rec.certain.tolist() == EXPECTED_CERTAIN
    np.testing.assert_allclose(rec.meta["measurable_overlap"][:3], [1.0, 0.6, 0.3])
    assert rec.meta["databar_rows"] == CUT and rec.meta["n_fragments_removed"] == 0
    assert rec.pixel_size_nm is None and rec.magnification_bucket is None  # no metadata: never guessed
    # label 9 is the crossing particle, cut to the 4 rows above the crop line
    assert (rec.instances == 9).sum() == 40 and (rec.instances == 6).sum() == 1
    assert rec.name == "img01"


def test_fragments_dropped_on_request(tmp_path):
    (rec,) = load_bam(_make_bam(tmp_path / "bam"), databar_rows=CUT, min_area_px=2)
    assert rec.n_instances == 8 and rec.meta["n_fragments_removed"] == 1
    assert rec.certain.tolist() == EXPECTED_CERTAIN[:5] + EXPECTED_CERTAIN[6:]
    assert rec.instances[30, 30] == 0


def test_detected_bar_pads_measurable(tmp_path):
    # Detection finds the 8-row visible bar; the 2 rows between the measurable mask and the bar count as
    # not measurable, so particle 9 (now 6 rows tall, 4 of them measurable) is still certain.
    (rec,) = load_bam(_make_bam(tmp_path / "bam"), databar_rows=None)
    assert rec.image.shape == (H - BAR, W) and rec.meta["databar_rows"] == BAR
    assert rec.n_instances == 9  # the U's base (rows 42-43) is still cut off
    assert rec.certain.tolist() == EXPECTED_CERTAIN
    assert rec.meta["measurable_overlap"][8] == pytest.approx(40 / 60)


def test_certainty_threshold_is_fraction_of_pixels():
    instances = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 0, 0, 0]])
    measurable = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    certain, overlap = certainty_from_mask(instances, measurable, 0.5)
    np.testing.assert_allclose(overlap, [0.75, 0.25, 0.0])
    assert certain.tolist() == [True, False, False]
    assert certainty_from_mask(instances, measurable, 0.2)[0].tolist() == [True, True, False]
    # a label id without pixels (hand-made maps) is uncertain, not a division by zero
    certain, overlap = certainty_from_mask(np.array([[0, 2]]), np.array([[1, 1]]))
    assert certain.tolist() == [False, True] and overlap.tolist() == [0.0, 1.0]


def test_instances_are_4_connected_in_raster_order():
    mask = np.array(
        [
            [1, 0, 0, 1],
            [0, 1, 0, 1],
            [0, 1, 0, 0],
        ]
    )
    labels, removed = instances_from_outline_mask(mask)
    np.testing.assert_array_equal(labels, [[1, 0, 0, 2], [0, 3, 0, 2], [0, 3, 0, 0]])
    labels, removed = instances_from_outline_mask(mask, min_area_px=2)
    np.testing.assert_array_equal(labels, [[0, 0, 0, 1], [0, 2, 0, 1], [0, 2, 0, 0]])
    assert removed == 1


def test_bad_input_names_the_file(tmp_path):
    root = _make_bam(tmp_path / "bam")
    (root / "measurable" / "img01_cm.tif").unlink()
    with pytest.raises(InputError, match="img01_cm.tif"):
        load_bam(root)

    root = _make_bam(tmp_path / "b2")
    tifffile.imwrite(root / "instances" / "img01_m.tif", np.arange(H * W, dtype=np.uint16).reshape(H, W) % 3)
    with pytest.raises(InputError, match="img01_m.tif.*binary"):
        load_bam(root)

    root = _make_bam(tmp_path / "b3")
    tifffile.imwrite(root / "measurable" / "img01_cm.tif", np.zeros((H - CUT, W + 2), np.uint8))
    with pytest.raises(InputError, match="img01_cm.tif"):
        load_bam(root)

    root = _make_bam(tmp_path / "b4")
    tifffile.imwrite(root / "instances" / "img01_m.tif", np.zeros((H - 1, W), np.uint8))
    with pytest.raises(InputError, match="img01_m.tif"):
        load_bam(root)

    with pytest.raises(InputError, match="measurable"):
        (tmp_path / "b5" / "images").mkdir(parents=True)
        (tmp_path / "b5" / "instances").mkdir()
        load_bam(tmp_path / "b5")
    with pytest.raises(InputError, match="certain_min_fraction"):
        load_bam(root, certain_min_fraction=0.0)


# --------------------------------------------------------------------------------------------------------------
# real data


@pytest.fixture(scope="module")
def bam_records(bam_dir):
    before = _snapshot(bam_dir)
    records = load_bam(bam_dir)
    assert _snapshot(bam_dir) == before
    return records


@pytest.mark.shared_data
def test_real_bam_counts(bam_records):
    assert len(bam_records) == 30
    assert all(r.image.shape == (704, 1024) and r.meta["databar_rows"] == 64 for r in bam_records)
    assert {r.pixel_size_nm for r in bam_records} == {7.344}
    assert {r.magnification_bucket for r in bam_records} == {"high"}  # 7.52 µm field of view
    # 4,651 4-connected components in the full 768-row masks (the published count) ...
    assert sum(r.meta["n_instances_uncropped"] for r in bam_records) == 4651
    # ... 4,627 in the 704-row annotated crop: 25 lie wholly below row 704 and one is split by the cut.
    assert sum(r.n_instances for r in bam_records) == 4627


@pytest.mark.shared_data
def test_real_bam_certainty(bam_records):
    overlap = np.concatenate([r.meta["measurable_overlap"] for r in bam_records])
    certain = np.concatenate([r.certain for r in bam_records])
    assert certain.sum() == 2392 and certain.mean() == pytest.approx(0.517, abs=0.001)
    # Bimodal overlap: the 0.5 threshold sits in an empty gap, so the rule is not sensitive to it.
    assert (overlap == 0).sum() == 2234
    assert ((overlap > 0) & (overlap < 0.1)).sum() == 1
    assert ((overlap >= 0.1) & (overlap < 0.9)).sum() == 0
    assert (overlap >= 0.9).sum() == 2392
    # Fragments under 10 px are never certain: dropping them leaves 4,193 instances, 2,392 certain.
    areas = np.concatenate([np.bincount(r.instances.ravel())[1:] for r in bam_records])
    assert (areas >= 10).sum() == 4193 and certain[areas >= 10].sum() == 2392
    assert (areas == 1).sum() == 277
