"""ONNX export: onnxruntime gives PyTorch's detections and label maps, with 0, some or many detections."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from inference_helpers import KEEP_ALL, TINY, gray_image
from onnx import numpy_helper

from semkit.errors import InputError
from semkit.inference.onnx import OnnxDetector
from semkit.inference.predict import TorchDetector, as_detector, predict_image

BIAS = "model.roi_heads.box_predictor.cls_score.bias"


def with_particle_bias(tiny_model, tiny_onnx, shift: float):
    """The same model in both runtimes with the particle logit shifted (fewer detections for shift < 0)."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] += shift
    proto = onnx.load(str(tiny_onnx))
    for init in proto.graph.initializer:
        if init.name == BIAS:
            init.CopyFrom(numpy_helper.from_array(
                model.roi_heads.box_predictor.cls_score.bias.detach().numpy().astype(np.float32), BIAS))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return TorchDetector(model, "cpu", KEEP_ALL), OnnxDetector(session)


def assert_same_detections(a, b):
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.mask_probs, b.mask_probs, atol=1e-4)
    np.testing.assert_allclose(a.bin_probs, b.bin_probs, atol=1e-5)


@pytest.mark.parametrize("shape", [(96, 128), (70, 150)])  # the traced size is 256 x 256
def test_onnxruntime_matches_pytorch(tiny_model, tiny_onnx, shape):
    torch_det = TorchDetector(tiny_model, "cpu", KEEP_ALL)
    onnx_det = OnnxDetector(tiny_onnx)
    assert onnx_det.thresholds == KEEP_ALL and onnx_det.config["backbone"] == TINY["backbone"]
    image = gray_image(shape, seed=1)
    a, b = torch_det(image), onnx_det(image)
    assert len(a) == TINY["detections_per_img"]
    assert_same_detections(a, b)
    pa, pb = predict_image(torch_det, image), predict_image(str(tiny_onnx), image)  # thresholds from the file
    assert pa.n_particles == pb.n_particles > 0
    assert np.mean(pa.labels != pb.labels) < 1e-3  # identical up to pixels at a threshold tie
    np.testing.assert_allclose(pa.table["objectness"], pb.table["objectness"], atol=1e-5)
    assert list(pa.table["certain"]) == list(pb.table["certain"])


def test_fewer_detections_than_traced(tiny_model, tiny_onnx):
    image = gray_image((96, 128), seed=2)
    scores = np.sort(TorchDetector(tiny_model)(image).scores)
    # shift the particle logit so that box_score_thresh (0.05) falls halfway between the two middle scores
    # (score = sigmoid of the logit difference): the top half of the detections stays, clear of any tie
    logit = np.log(scores / (1 - scores))
    middle = len(scores) // 2
    torch_det, onnx_det = with_particle_bias(
        tiny_model, tiny_onnx, float(np.log(0.05 / 0.95) - (logit[middle - 1] + logit[middle]) / 2))
    a = torch_det(image)
    assert len(a) == len(scores) - middle and 0 < len(a) < TINY["detections_per_img"]
    assert_same_detections(a, onnx_det(image))


def test_no_detections_at_all(tiny_model, tiny_onnx):
    # a model that scores nothing above box_score_thresh, e.g. a trained model on an empty substrate
    torch_det, onnx_det = with_particle_bias(tiny_model, tiny_onnx, -50.0)
    for shape in ((96, 128), (33, 47)):
        image = gray_image(shape, seed=3)
        a, b = torch_det(image), onnx_det(image)
        assert len(a) == len(b) == 0
        assert b.boxes.shape == (0, 4) and b.mask_probs.shape == (0, 1, 28, 28) and b.bin_probs.shape == (0, 6)
    for det in (torch_det, onnx_det):
        pred = predict_image(det, image, tile=32, overlap=8)
        assert pred.labels.shape == shape and pred.labels.max() == 0 and pred.n_particles == 0


def test_bad_onnx_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="ONNX model file not found"):
        OnnxDetector(tmp_path / "missing.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="broken.onnx: cannot open the ONNX model"):
        as_detector(tmp_path / "broken.onnx")


def test_parity_on_a_real_phenom_crop(tiny_model, tiny_onnx, phenom_dir):
    from semkit.data.io import load_image

    image, _ = load_image(phenom_dir / "4_Round-3.tif")
    crop = image[400:560, 800:1040]  # real powder texture, 160 x 240
    torch_det, onnx_det = TorchDetector(tiny_model, "cpu", KEEP_ALL), OnnxDetector(tiny_onnx)
    assert_same_detections(torch_det(crop), onnx_det(crop))
    pa, pb = predict_image(torch_det, crop), predict_image(onnx_det, crop)
    assert pa.n_particles == pb.n_particles > 0 and np.mean(pa.labels != pb.labels) < 1e-3
