"""semkit.data.io: intensity scaling per file type, pixel size from instrument metadata, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from semkit.data.io import list_images, load_image, load_labels
from semkit.errors import InputError

# --------------------------------------------------------------------------------------------------------------
# intensity scaling


def test_tiff_8bit_scales_by_dtype_range(tmp_path):
    arr = np.array([[0, 51, 255], [102, 0, 0]], dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    img, meta = load_image(tmp_path / "a.tif")
    assert img.dtype == np.float32
    np.testing.assert_array_equal(img, (arr / 255.0).astype(np.float32))
    assert img[0, 1] == pytest.approx(0.2)
    assert meta.original_dtype == "uint8" and meta.original_range == (0.0, 255.0)
    assert meta.original_channels == 1 and meta.shape == (2, 3)


def test_tiff_16bit_scales_by_dtype_range_not_data_range(tmp_path):
    # The data max is 13107, but the scaling uses the dtype range: 13107 / 65535 = 0.2 exactly.
    arr = np.array([[0, 13107], [13107, 6553]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    img, meta = load_image(tmp_path / "a.tif")
    np.testing.assert_allclose(img, [[0.0, 0.2], [0.2, 6553 / 65535]], rtol=1e-6)
    assert meta.original_dtype == "uint16" and meta.original_range == (0.0, 65535.0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arr=arrays(st.sampled_from([np.uint8, np.uint16]), st.tuples(st.integers(1, 9), st.integers(1, 9))))
def test_integer_tiff_property(tmp_path, arr):
    path = tmp_path / "p.tif"
    tifffile.imwrite(path, arr)
    img, meta = load_image(path)
    top = float(np.iinfo(arr.dtype).max)
    np.testing.assert_array_equal(img, (arr.astype(np.float64) / top).astype(np.float32))
    assert meta.original_range == (0.0, top)
    assert img.min() >= 0.0 and img.max() <= 1.0


def test_rgb_tiff_uses_bt601_luma(tmp_path):
    arr = np.zeros((2, 2, 3), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0)
    arr[0, 1] = (0, 255, 0)
    arr[1, 0] = (0, 0, 255)
    arr[1, 1] = (100, 50, 200)
    tifffile.imwrite(tmp_path / "rgb.tif", arr, photometric="rgb")
    img, meta = load_image(tmp_path / "rgb.tif")
    expected = [[0.299, 0.587], [0.114, (0.299 * 100 + 0.587 * 50 + 0.114 * 200) / 255]]
    np.testing.assert_allclose(img, expected, rtol=1e-6)
    assert meta.original_channels == 3


def test_rgba_png_ignores_alpha(tmp_path):
    arr = np.zeros((1, 2, 4), dtype=np.uint8)
    arr[0, 0] = (0, 255, 0, 0)  # fully transparent green: still luma 0.587
    arr[0, 1] = (255, 255, 255, 128)
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "a.png")
    img, meta = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(img, [[0.587, 1.0]], rtol=1e-6)
    assert meta.original_channels == 4


def test_grayscale_stored_as_rgb_is_exact(tmp_path):
    gray = np.array([[10, 20, 30], [40, 50, 255]], dtype=np.uint8)
    tifffile.imwrite(tmp_path / "g.tif", np.stack([gray] * 3, axis=-1), photometric="rgb")
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "g.png")
    for name in ("g.tif", "g.png"):
        img, _ = load_image(tmp_path / name)
        # exactly value/255, not a luma sum with float rounding
        np.testing.assert_array_equal(img, (gray / 255.0).astype(np.float32))
    np.testing.assert_array_equal(load_labels(tmp_path / "g.png"), gray)


def _gray_palette_tiff(path, indices, gray_of_index):
    cmap = np.zeros((3, 256), dtype=np.uint16)
    for i, g in gray_of_index.items():
        cmap[:, i] = g * 257  # 16-bit colour map entries
    tifffile.imwrite(path, indices, photometric="palette", colormap=cmap)


def test_palette_tiff_maps_through_colour_map(tmp_path):
    idx = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    _gray_palette_tiff(tmp_path / "p.tif", idx, {0: 0, 1: 200, 2: 51})
    img, meta = load_image(tmp_path / "p.tif")
    np.testing.assert_array_equal(img, (np.array([[0, 200], [51, 200]]) / 255.0).astype(np.float32))
    assert meta.original_channels == "palette"
    # As labels, the indices are the classes.
    np.testing.assert_array_equal(load_labels(tmp_path / "p.tif"), idx)


def test_palette_png_image_and_labels(tmp_path):
    idx = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 128, 128, 128] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "p.png")
    img, meta = load_image(tmp_path / "p.png")
    red = 0.299
    np.testing.assert_allclose(img, [[0, red, 128 / 255], [128 / 255, red, 0]], rtol=1e-6)
    assert meta.original_channels == "palette"
    labels = load_labels(tmp_path / "p.png")
    assert labels.shape == (2, 3)
    np.testing.assert_array_equal(labels, idx)


def test_png_8_16_bit_and_bilevel(tmp_path):
    a8 = np.array([[0, 255, 128]], dtype=np.uint8)
    a16 = np.array([[0, 65535, 32768]], dtype=np.uint16)
    Image.fromarray(a8).save(tmp_path / "a8.png")
    Image.fromarray(a16).save(tmp_path / "a16.png")
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "b.png")
    img8, m8 = load_image(tmp_path / "a8.png")
    img16, m16 = load_image(tmp_path / "a16.png")
    imgb, _ = load_image(tmp_path / "b.png")
    np.testing.assert_array_equal(img8, (a8 / 255.0).astype(np.float32))
    np.testing.assert_array_equal(img16, (a16 / 65535.0).astype(np.float32))
    assert m8.original_range == (0.0, 255.0) and m16.original_range == (0.0, 65535.0)
    np.testing.assert_array_equal(imgb, [[1.0, 0.0]])  # bilevel is 0/1, not 0/(1/255)
    np.testing.assert_array_equal(load_labels(tmp_path / "b.png"), [[True, False]])


def test_jpeg_loads_close_to_source(tmp_path):
    arr = np.full((16, 16), 128, dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    img, meta = load_image(tmp_path / "a.jpg")
    assert img.shape == (16, 16) and meta.original_dtype == "uint8"
    assert np.abs(img - 128 / 255).max() <= 2 / 255  # lossy, but a flat patch survives


def test_float_tiff_kept_or_minmax_scaled(tmp_path):
    unit = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    wide = np.array([[-2.0, 0.0], [2.0, 6.0]], dtype=np.float32)
    tifffile.imwrite(tmp_path / "u.tif", unit)
    tifffile.imwrite(tmp_path / "w.tif", wide)
    img_u, meta_u = load_image(tmp_path / "u.tif")
    img_w, meta_w = load_image(tmp_path / "w.tif")
    np.testing.assert_array_equal(img_u, unit)
    assert meta_u.original_range == (0.0, 1.0)
    np.testing.assert_array_equal(img_w, [[0.0, 0.25], [0.5, 1.0]])
    assert meta_w.original_range == (-2.0, 6.0) and meta_w.original_dtype == "float32"


def test_load_labels_never_rescales(tmp_path):
    lab = np.array([[0, 1, 700], [3, 3, 0]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "l.tif", lab)
    out = load_labels(tmp_path / "l.tif")
    np.testing.assert_array_equal(out, lab)
    tifffile.imwrite(tmp_path / "f.tif", lab.astype(np.float32))
    np.testing.assert_array_equal(load_labels(tmp_path / "f.tif"), lab)


def test_list_images_sorted_case_insensitive(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.TIF", "a.png", "sub/c.jpeg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.TIF", "c.jpeg"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.png", "b.TIF"]


# --------------------------------------------------------------------------------------------------------------
# pixel size and instrument metadata


def _zeiss_text(pixel: str, mag: str = "20.00 K X", detector: str = "SE2") -> str:
    # The CZ_SEM tag: unnamed numbers first, then KEY lines in capitals followed by 'Label = value unit'.
    return (
        "0\r\n2.5e-009\r\n"
        f"AP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = {pixel}\r\n"
        f"AP_MAG\r\nMag = {mag}\r\n"
        f"DP_DETECTOR_TYPE\r\nDetector = {detector}\r\n"
        "AP_ACTUALKV\r\nEHT = 3.00 kV\r\n"
    )


def test_zeiss_pixel_size_magnification_detector(tmp_path):
    path = tmp_path / "z.tif"
    tifffile.imwrite(
        path, np.zeros((6, 8), np.uint8), extratags=[(34118, "s", 0, _zeiss_text("2.5 nm"), True)]
    )
    with tifffile.TiffFile(path) as tif:  # the tag really is what tifffile parses as Zeiss metadata
        assert tif.sem_metadata["ap_image_pixel_size"] == ("Image Pixel Size", 2.5, "nm")
    _, meta = load_image(path)
    assert meta.pixel_size_nm == 2.5 and meta.pixel_size_source == "zeiss" and meta.instrument == "zeiss"
    assert meta.magnification == 20000.0 and meta.detector == "SE2"
    assert meta.field_of_view_um == pytest.approx(8 * 2.5 / 1000)
    assert meta.extra["eht_kv"] == 3.0


def test_zeiss_micrometre_pixel_and_megax_magnification(tmp_path):
    path = tmp_path / "z.tif"
    text = _zeiss_text("1.25 \xb5m", mag="1.20 M X").encode("latin-1")  # Zeiss writes a Latin-1 micro sign
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), extratags=[(34118, 1, 0, text, True)])
    _, meta = load_image(path)
    assert meta.pixel_size_nm == pytest.approx(1250.0)
    assert meta.magnification == pytest.approx(1.2e6)


def test_fei_helios_metadata(tmp_path):
    text = (
        "[User]\r\nDate=01/02/2020\r\n[Beam]\r\nBeam=EBeam\r\n[EBeam]\r\nHV=5000\r\nHFW=2.048e-05\r\n"
        "[Scan]\r\nPixelWidth=2e-08\r\nHorFieldsize=2.048e-05\r\n[Detectors]\r\nName=ETD\r\n"
    )
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, np.zeros((6, 8), np.uint8), extratags=[(34682, "s", 0, text, True)])
    _, meta = load_image(path)
    assert meta.pixel_size_nm == pytest.approx(20.0) and meta.pixel_size_source == "fei"
    assert meta.instrument == "fei" and meta.detector == "ETD"
    assert meta.extra["eht_kv"] == pytest.approx(5.0)
    assert meta.extra["horizontal_field_width_um"] == pytest.approx(20.48)
    assert meta.field_of_view_um == pytest.approx(8 * 20.0 / 1000)


@pytest.mark.parametrize(("unit", "pixel", "expected_nm"), [("nm", 7.5, 7.5), ("micron", 0.25, 250.0)])
def test_imagej_calibration(tmp_path, unit, pixel, expected_nm):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        np.zeros((4, 4), np.uint8),
        imagej=True,
        resolution=(1 / pixel, 1 / pixel),
        metadata={"unit": unit},
    )
    _, meta = load_image(path)
    assert meta.pixel_size_nm == pytest.approx(expected_nm) and meta.pixel_size_source == "imagej"


def test_tiff_resolution_in_centimetres(tmp_path):
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    _, meta = load_image(path)
    assert meta.pixel_size_nm == pytest.approx(1000.0)  # 1 cm / 10,000 px = 1 µm
    assert meta.pixel_size_source == "tiff-resolution"


def test_96_dpi_is_not_a_calibration(tmp_path):
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), resolution=(96, 96), resolutionunit="INCH")
    _, meta = load_image(path)
    assert meta.pixel_size_nm is None and meta.field_of_view_um is None


def test_no_metadata_gives_none(tmp_path):
    tifffile.imwrite(tmp_path / "n.tif", np.zeros((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "n.png")
    for name in ("n.tif", "n.png"):
        _, meta = load_image(tmp_path / name)
        assert meta.pixel_size_nm is None and meta.pixel_size_source is None
        assert meta.magnification is None and meta.instrument is None


# --------------------------------------------------------------------------------------------------------------
# real data


@pytest.mark.shared_data
def test_bam_images_metadata(bam_dir):
    paths = list_images(bam_dir / "images")
    assert len(paths) == 30
    for path in paths:
        img, meta = load_image(path)
        assert img.shape == (768, 1024) and img.dtype == np.float32
        assert meta.pixel_size_nm == 7.344 and meta.pixel_size_source == "zeiss"
        assert meta.magnification == 50000.0 and meta.detector == "InLens"
        assert meta.field_of_view_um == pytest.approx(1024 * 7.344 / 1000)
        assert meta.original_dtype == "uint8" and meta.original_channels == "palette"


@pytest.mark.shared_data
def test_phenom_images_have_no_pixel_size(phenom_dir):
    paths = list_images(phenom_dir)
    assert len(paths) == 9
    for path in paths:
        img, meta = load_image(path)
        assert meta.pixel_size_nm is None
        assert img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0


@pytest.mark.shared_data
def test_nasa_ebc_pngs_load(nasa_ebc_dir):
    paths = [p for p in list_images(nasa_ebc_dir) if not p.parent.name.endswith("_annot")]
    assert len(paths) == 58  # 24 + 10 + 24 images
    for path in paths[::6]:
        img, meta = load_image(path)
        assert img.ndim == 2 and img.dtype == np.float32
        assert meta.original_dtype == "uint8" and meta.pixel_size_nm is None
        assert 0.0 <= img.min() < img.max() <= 1.0


# --------------------------------------------------------------------------------------------------------------
# bad input: an InputError that names the file


def _raises_naming(path, func=load_image):
    with pytest.raises(InputError) as info:
        func(path)
    assert path.name in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    _raises_naming(tmp_path / "absent.tif")
    _raises_naming(tmp_path / "absent.png", load_labels)


def test_truncated_tiff_and_png(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "full.tif", arr)
    Image.fromarray(arr).save(tmp_path / "full.png")
    for name in ("full.tif", "full.png"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) // 2])
        _raises_naming(cut)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "image.bmp"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    err = _raises_naming(path)
    assert "unsupported file type" in str(err)


def test_unsupported_modes(tmp_path):
    two_channel = tmp_path / "two.tif"
    tifffile.imwrite(
        two_channel, np.zeros((4, 4, 2), np.uint8), photometric="minisblack", planarconfig="contig"
    )
    assert "unsupported" in str(_raises_naming(two_channel))
    signed = tmp_path / "signed.tif"
    tifffile.imwrite(signed, np.zeros((4, 4), np.int16))
    assert "signed" in str(_raises_naming(signed))
    colour_labels = tmp_path / "colour.png"
    Image.fromarray(
        np.dstack([np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8), np.zeros((4, 4), np.uint8)])
    ).save(colour_labels)
    assert "single-channel" in str(_raises_naming(colour_labels, load_labels))


def test_nan_float_tiff(tmp_path):
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, np.array([[0.0, np.nan]], dtype=np.float32))
    assert "NaN" in str(_raises_naming(path))
    _raises_naming(path, load_labels)
