"""semkit.data.databar: detection on real and synthetic images, consistent cropping of labels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semkit.data.databar import crop_databar, detect_databar
from semkit.data.io import list_images, load_image
from semkit.errors import InputError


def _specimen(h: int, w: int, seed: int = 0) -> np.ndarray:
    """SEM-like texture: smooth blobs plus shot noise, never one exact value over half a row."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.2 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    return np.clip(base + rng.normal(0, 0.05, (h, w)), 0, 1).astype(np.float32)


def _with_bar(image: np.ndarray, rows: int, background: float, text: float, seed: int = 1) -> np.ndarray:
    """Burn a bar of ``rows`` rows with sparse text blocks (and one full-width scale-bar line) into the image."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    h, w = out.shape
    bar = np.full((rows, w), background, dtype=np.float32)
    for _ in range(6):  # "letters": small blocks covering well under half of any row
        r0, c0 = rng.integers(1, max(rows - 6, 2)), rng.integers(0, w - 12)
        bar[r0 : r0 + 5, c0 : c0 + 10] = text
    bar[rows // 2, : int(0.8 * w)] = text  # a long scale bar: one non-uniform row inside the bar
    out[h - rows :] = bar
    return out


@pytest.mark.parametrize(("background", "text"), [(0.0, 1.0), (1.0, 0.0)], ids=["black-bar", "white-bar"])
@pytest.mark.parametrize("rows", [8, 20, 37])
def test_synthetic_bar_height(background, text, rows):
    image = _with_bar(_specimen(200, 160), rows, background, text)
    assert detect_databar(image) == rows


def test_no_bar_on_specimen_flat_frame_or_short_strip():
    image = _specimen(200, 160)
    assert detect_databar(image) == 0
    # A flat (blank, saturated) frame is not a bar even though every row is uniform.
    assert detect_databar(np.zeros((200, 160), np.float32)) == 0
    # Fewer than MIN_BAR_ROWS black rows are a scan artefact, not a bar.
    strip = image.copy()
    strip[-5:] = 0.0
    assert detect_databar(strip) == 0


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(8, 45), white=st.booleans(), seed=st.integers(0, 1000))
def test_bar_height_property(rows, white, seed):
    image = _with_bar(_specimen(240, 128, seed), rows, float(white), float(not white), seed)
    assert detect_databar(image) == rows


def test_crop_labels_consistently():
    image = _with_bar(_specimen(100, 40), 20, 0.0, 1.0)
    labels = np.arange(100 * 40, dtype=np.int32).reshape(100, 40)
    already_cropped = labels[:80].copy()
    out_img, rows, out_full, out_cropped, out_none = crop_databar(image, None, labels, already_cropped, None)
    assert rows == 20 and out_img.shape == (80, 40)
    np.testing.assert_array_equal(out_img, image[:80])
    np.testing.assert_array_equal(out_full, labels[:80])
    np.testing.assert_array_equal(out_cropped, already_cropped)
    assert out_none is None


def test_explicit_rows_override_detection():
    image = _with_bar(_specimen(100, 40), 20, 0.0, 1.0)
    out_img, rows, lab = crop_databar(image, 30, np.ones((100, 40), np.uint8))
    assert rows == 30 and out_img.shape == (70, 40) and lab.shape == (70, 40)
    out_img, rows = crop_databar(image, 0)
    assert rows == 0 and out_img.shape == (100, 40)


def test_crop_errors():
    image = _specimen(100, 40)
    with pytest.raises(InputError, match="matches neither"):
        crop_databar(image, 20, np.zeros((90, 40), np.uint8))
    with pytest.raises(InputError, match="not within"):
        crop_databar(image, 100)
    with pytest.raises(InputError, match="2-D"):
        detect_databar(np.zeros((4, 4, 3)))


@pytest.mark.shared_data
def test_bam_bar_starts_at_row_712(bam_dir):
    paths = list_images(bam_dir / "images")
    assert len(paths) == 30
    heights = [detect_databar(load_image(p)[0]) for p in paths]
    # The visible bar is 56 rows (rows 712-767); the annotators cut 64 rows, which is why adapters override.
    assert heights == [56] * 30


@pytest.mark.shared_data
def test_no_bar_on_phenom_or_nasa(phenom_dir, nasa_ebc_dir):
    phenom = list_images(phenom_dir)
    nasa = [p for p in list_images(nasa_ebc_dir) if not p.parent.name.endswith("_annot")]
    assert len(phenom) == 9 and len(nasa) == 58
    found = {p.name: detect_databar(load_image(p)[0]) for p in phenom + nasa}
    assert {name: h for name, h in found.items() if h} == {}
