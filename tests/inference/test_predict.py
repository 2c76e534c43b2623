"""predict_image: input checks and conversions (16-bit, RGB, small images, resizing, databar), memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile
import torch
from inference_helpers import KEEP_ALL, gray_image

from semkit.errors import InputError
from semkit.inference.predict import (
    TorchDetector,
    as_detector,
    predict_file,
    predict_image,
    prepare_image,
    resize_for_inference,
)
from semkit.inference.tiles import Detections


class Nothing:
    """A detector that finds nothing and records the images it was given."""

    thresholds = None

    def __init__(self):
        self.shapes = []

    def __call__(self, window):
        self.shapes.append(window.shape)
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                          np.zeros((0, 1, 28, 28), np.float32), np.zeros((0, 6), np.float32))


@pytest.fixture(scope="module")
def detector(tiny_model):
    return TorchDetector(tiny_model, "cpu", KEEP_ALL)


@pytest.fixture(scope="module")
def reference(detector):
    image = gray_image((96, 128))
    image8 = np.rint(image * 255).astype(np.uint8)
    return image8, predict_image(detector, image8)


def test_random_model_gives_a_consistent_label_map(reference):
    _, pred = reference
    labels, table = pred.labels, pred.table
    assert labels.shape == (96, 128) and labels.dtype == np.int32
    assert 0 < len(table) <= 12  # at most detections_per_img particles
    assert list(table["id"]) == list(range(1, len(table) + 1))
    assert np.array_equal(np.bincount(labels.ravel(), minlength=len(table) + 1)[1:], table["area_px"])
    assert table["confidence"].between(0, 1).all() and pred.scale == 1.0 and pred.pixel_size_nm is None


def test_16_bit_and_rgb_inputs_match_the_gray_image(detector, reference, tmp_path):
    image8, pred = reference
    image16 = image8.astype(np.uint16) * 257  # the same intensities at 16 bits: v / 65535 == v8 / 255
    assert np.array_equal(prepare_image(image16), prepare_image(image8))
    assert np.array_equal(predict_image(detector, image16).labels, pred.labels)
    rgb = np.repeat(image8[..., None], 3, axis=2)
    assert np.array_equal(predict_image(detector, rgb).labels, pred.labels)
    tifffile.imwrite(tmp_path / "sixteen.tif", image16)
    from_file = predict_file(detector, tmp_path / "sixteen.tif", pixel_size_nm=5.0)
    assert np.array_equal(from_file.labels, pred.labels) and from_file.pixel_size_nm == 5.0
    # coloured RGB: BT.601 luma, as the file loader
    px = np.array([[[200, 100, 50]]], dtype=np.uint8)
    assert prepare_image(px)[0, 0] == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255)


def test_image_smaller_than_the_tile_is_run_whole(detector, reference):
    image8, pred = reference
    tiled = predict_image(detector, image8, tile=256, overlap=64)
    assert np.array_equal(tiled.labels, pred.labels) and set(tiled.table["tile"]) == {0}
    tiny = predict_image(detector, np.full((9, 13), 0.5, np.float32), tile=64, overlap=16)
    assert tiny.labels.shape == (9, 13)


def test_tiles_are_all_fed_to_the_detector():
    nothing = Nothing()
    pred = predict_image(nothing, np.zeros((100, 150), np.float32), tile=64, overlap=16, crop_databar=False)
    assert nothing.shapes == [(64, 64)] * 6 and pred.labels.max() == 0 and pred.n_particles == 0


@pytest.mark.parametrize(("image", "message"), [
    (np.full((20, 20), 1.5, np.float32), r"values must lie in \[0, 1\], got \[1.5, 1.5\]"),
    (np.full((20, 20), np.nan, np.float32), "NaN"),
    (np.zeros((20, 20), np.int16), "signed integer"),
    (np.zeros((2, 20, 20)), "got shape"),
    (np.zeros((0, 20)), "empty"),
    (np.zeros((20, 20), np.complex64), "unsupported sample type"),
])
def test_bad_images_are_input_errors_naming_the_image(image, message):
    with pytest.raises(InputError, match=f"^scan_7.tif: .*{message}"):
        predict_image(Nothing(), image, name="scan_7.tif")


def test_study_resize_only_for_7680_by_4800():
    big = np.zeros((4800, 7680), np.float32)
    big[::2, ::2] = 1.0  # block means of 4 x 4 blocks: 4 of 16 pixels set
    small, scale = resize_for_inference(big)
    assert small.shape == (1200, 1920) and scale == 4.0 and np.allclose(small, 0.25)
    other = np.zeros((1200, 1920), np.float32)
    assert resize_for_inference(other)[0] is other and resize_for_inference(big, False)[0] is big
    half, s = resize_for_inference(np.ones((100, 160), np.float32), (50, 80))
    assert half.shape == (50, 80) and s == 2.0 and np.allclose(half, 1)
    with pytest.raises(InputError, match="aspect ratio"):
        resize_for_inference(other, (1200, 1200))
    nothing = Nothing()
    pred = predict_image(nothing, big, pixel_size_nm=2.5, tile=None)
    assert nothing.shapes == [(1200, 1920)]
    assert pred.labels.shape == pred.image.shape == (1200, 1920)
    assert pred.pixel_size_nm == 10.0 and pred.scale == 4.0  # areas in nm² stay right


def test_databar_rows_are_not_segmented():
    image = np.full((100, 120), 0.4, np.float32)
    image[88:] = 0.0  # a black instrument bar with white text
    image[92:96, 10:40:3] = 1.0
    nothing = Nothing()
    pred = predict_image(nothing, image)
    assert nothing.shapes == [(88, 120)] and pred.databar_rows == 12 and pred.labels.shape == (100, 120)
    nothing.shapes.clear()
    predict_image(nothing, image, crop_databar=False)
    assert nothing.shapes == [(100, 120)]


def test_as_detector_rejects_unknown_objects(tmp_path):
    with pytest.raises(TypeError, match="cannot predict with a int"):
        as_detector(3)
    with pytest.raises(InputError, match="not a model"):
        as_detector(tmp_path)


def test_unet_and_classical_model_folders_predict_label_maps(tmp_path):
    from semkit.data.synthetic import SyntheticConfig, make_sem_dataset
    from semkit.inference.predict import LabelPredictor
    from semkit.models import ClassicalConfig, build_unet_model, predict_unet, save_model, segment_classical
    from semkit.models.io import is_model_folder, load_model, save_classical
    from semkit.models.unet import UNetPostprocess

    rec = make_sem_dataset(1, seed=4, config=SyntheticConfig(height=96, width=128, n_particles=(6, 9)))[0]
    params = {"sigma": 1.0, "threshold": "otsu", "min_distance": 4, "min_area": 8}
    folder = save_classical(params, tmp_path / "classical", extra={"val_aji_plus": 0.5})
    assert is_model_folder(folder) and not (folder / "weights.pt").exists()
    segmenter, thresholds, extra = load_model(folder)
    assert thresholds is None and extra == {"val_aji_plus": 0.5}
    assert segmenter.config == ClassicalConfig(**params)
    predictor = as_detector(folder)
    assert isinstance(predictor, LabelPredictor) and predictor.kind == "classical"
    pred = predict_image(folder, rec.image, crop_databar=False)
    expected = segment_classical(rec.image, **params)
    np.testing.assert_array_equal(pred.labels, expected)
    assert len(pred.table) == expected.max() > 0
    np.testing.assert_array_equal(pred.table["area_px"], np.bincount(expected.ravel())[1:])
    assert pred.table["certain"].all() and pred.table["confidence"].isna().all()

    torch.manual_seed(0)
    unet = build_unet_model()
    post = UNetPostprocess(foreground_threshold=0.4, seed_threshold=0.6, min_area=3)
    udir = save_model(unet, tmp_path / "unet", post)
    assert as_detector(udir).kind == "unet"
    pred = predict_image(udir, rec.image, crop_databar=False)
    np.testing.assert_array_equal(pred.labels, predict_unet(unet, [rec.image], post)[0])
    with pytest.raises(InputError, match="invalid classical settings"):
        (folder / "config.json").write_text('{"sigma": 1.0, "threshold": "sideways"}')
        load_model(folder)


def test_peak_memory_of_several_hundred_detections_on_1920x1200():
    # 500 detections with boxes up to 300 px on a 1200 x 1920 image: the stitching/post-processing path must
    # stay far below one full-resolution float mask per detection (500 x 1200 x 1920 x 4 B = 4.6 GB)
    script = textwrap.dedent("""
        import resource, numpy as np
        from semkit.inference.predict import predict_image
        from semkit.inference.tiles import Detections
        rng = np.random.default_rng(0)
        n = 500
        xy = rng.uniform(0, [1920, 1200], (n, 2)); wh = rng.uniform(10, 300, (n, 2))
        boxes = np.c_[xy, xy + wh].astype(np.float32)
        det = Detections(boxes, rng.uniform(0.5, 1, n).astype(np.float32),
                         rng.uniform(0, 1, (n, 1, 28, 28)).astype(np.float32),
                         rng.dirichlet(np.ones(6), n).astype(np.float32))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        pred = predict_image(lambda w: det, rng.uniform(0, 1, (1200, 1920)).astype(np.float32))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(pred.n_particles, before, after)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    n, before_kb, after_kb = (int(v) for v in out.stdout.split())
    assert n > 100
    assert (after_kb - before_kb) / 1024 < 300, f"post-processing grew the peak RSS by {after_kb - before_kb} kB"
