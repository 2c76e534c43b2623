"""Shared fixtures of the inference tests: one tiny random Mask R-CNN, its saved folder and its ONNX export.

The ONNX export of Mask R-CNN is the slow step (about 10-30 s on a shared CPU), so it happens once per session.
"""

from __future__ import annotations

import pytest
import torch
from inference_helpers import KEEP_ALL, TINY

from semkit.models import build_maskrcnn


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return build_maskrcnn(**TINY).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model):
    from semkit.models.io import save_model

    return save_model(tiny_model, tmp_path_factory.mktemp("model") / "tiny", KEEP_ALL, extra={"crop": 128})


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_model):
    from semkit.inference.onnx import export_onnx

    return export_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", KEEP_ALL)
