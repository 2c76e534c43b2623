"""ONNX export of the particle Mask R-CNN and an onnxruntime detector with the same outputs as PyTorch.

The graph takes one image ``image`` (1, H, W) float32 in [0, 1] (any H, W) and returns ``boxes`` (N, 4),
``scores`` (N,), ``mask_probs`` (N, 1, 28, 28) and, with the uncertainty head, ``uncertainty_probs`` (N, k);
the post-processing (:func:`semkit.models.postprocess.combine_masks`, tile stitching) stays in NumPy, shared by
both runtimes, so PyTorch and onnxruntime give the same label map up to float rounding at the thresholds.

Export uses torch's TorchScript-based exporter (``dynamo=False``, opset 17), the route torchvision tests its
detection models with. Two details keep the graph valid for *every* input, including images without a single
detection (where exported Mask R-CNN graphs are known to fail: a size traced as a constant, a split of an empty
tensor):

* :class:`ExportableMaskRCNN` runs the model's own modules step by step (transform, backbone, RPN, torchvision's
  ``RoIHeads.forward``) for one image and computes the confidence bins on *all* detections at once, instead of
  splitting them per image with Python-side lengths that tracing would freeze;
* nothing in the graph depends on a detection count seen while tracing (the tests run the exported graph on
  images with 0, some and the maximum number of detections, of sizes other than the traced one).

The model's settings and post-processing thresholds travel inside the ``.onnx`` file as metadata
(``semkit.config``, ``semkit.thresholds``), so one file is enough for ``semkit predict``.

Reference: torchvision's ``test/test_onnx.py`` (Mask R-CNN export, opset ≥ 11); ONNX Runtime,
https://onnxruntime.ai.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads

from semkit.errors import InputError
from semkit.inference.tiles import Detections
from semkit.models.postprocess import CombineThresholds

OPSET = 17
INPUT_NAME = "image"
OUTPUTS = ("boxes", "scores", "mask_probs", "uncertainty_probs")
META_CONFIG = "semkit.config"
META_THRESHOLDS = "semkit.thresholds"


class ExportableMaskRCNN(nn.Module):
    """One-image, tuple-output view of a particle Mask R-CNN for tracing.

    ``forward(image (1, H, W)) -> (boxes, scores, mask_probs[, uncertainty_probs])``: the same computation as
    ``model([image])[0]`` (same modules, same weights), without the per-image bookkeeping that tracing cannot
    follow. Detections are not resized back (the model never resizes) and masks stay 28 × 28 crops.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.has_uncertainty = getattr(model.roi_heads, "uncertainty_head", None) is not None

    def forward(self, image: torch.Tensor):
        m = self.model
        images, _ = m.transform([image])
        features = m.backbone(images.tensors)
        proposals, _ = m.rpn(images, features)
        heads = m.roi_heads
        # torchvision's detection step only; the uncertainty bins follow on all detections at once
        detections, _ = RoIHeads.forward(heads, features, proposals, images.image_sizes)
        det = detections[0]
        outputs = (det["boxes"], det["scores"], det["masks"])
        if self.has_uncertainty:
            logits = heads.uncertainty_logits(features, [det["boxes"]], images.image_sizes)
            outputs = (*outputs, logits.softmax(dim=1))
        return outputs


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    thresholds: CombineThresholds | None = None,
    example_shape: tuple[int, int] = (256, 256),
    opset: int = OPSET,
) -> Path:
    """Export a particle Mask R-CNN to an ONNX file with dynamic image height and width.

    Args:
        model: from :func:`semkit.models.build_maskrcnn` (or :func:`semkit.models.io.load_model`); it is
            copied to the CPU, the original is left untouched.
        path: output ``.onnx`` file (parent folders are created).
        thresholds: post-processing thresholds stored in the file's metadata (``None``: the defaults).
        example_shape: (H, W) of the tracing input; any size works later.
        opset: ONNX opset (≥ 11 for torchvision's detection ops).

    Returns:
        ``path``. Export of a ConvNeXtV2-Atto model takes about 10 s on a laptop CPU, ResNet-50 longer.

    Raises:
        TypeError: for a model without the particle Mask R-CNN's ``config``.
    """
    import onnx

    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "roi_heads"):
        raise TypeError("export_onnx needs a particle Mask R-CNN from semkit.models.build_maskrcnn")
    if getattr(config, "paste_masks", False):
        raise TypeError("export a model with paste_masks=False: the graph returns 28 x 28 mask crops")
    wrapper = ExportableMaskRCNN(copy.deepcopy(model).cpu().eval()).eval()
    names = list(OUTPUTS if wrapper.has_uncertainty else OUTPUTS[:3])
    channels = len(config.image_mean)
    example = torch.rand(channels, *example_shape, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {INPUT_NAME: {1: "height", 2: "width"}} | {n: {0: "detections"} for n in names}
    with warnings.catch_warnings():
        # tracing warns about every Python-side shape check of torchvision; the parity tests cover the graph
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=names, dynamic_axes=dynamic,
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    _set_metadata(proto, {
        META_CONFIG: json.dumps(asdict(config)),
        META_THRESHOLDS: json.dumps(asdict(thresholds or CombineThresholds())),
    })
    onnx.save(proto, str(path))
    return path


class OnnxDetector:
    """Run an exported particle Mask R-CNN with onnxruntime; same call and output as
    :class:`semkit.inference.predict.TorchDetector`.

    Args:
        path_or_session: ``.onnx`` file from :func:`export_onnx`, its bytes, or an ``InferenceSession``.
        device: ``"cpu"`` or ``"cuda"`` (needs onnxruntime-gpu).
        threads: intra-op threads (``None``: onnxruntime's default, all cores).

    Attributes:
        thresholds: the :class:`CombineThresholds` stored in the file (defaults if absent).
        config: the model settings stored in the file, as a dict (empty if absent).
    """

    def __init__(self, path_or_session, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        if isinstance(path_or_session, ort.InferenceSession):
            self.session = path_or_session
        else:
            source = path_or_session
            if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
                raise InputError("ONNX model file not found", source)
            options = ort.SessionOptions()
            if threads is not None:
                options.intra_op_num_threads = int(threads)
            providers = ["CPUExecutionProvider"]
            if str(device).startswith("cuda"):
                if "CUDAExecutionProvider" not in ort.get_available_providers():
                    raise ValueError("device 'cuda' requested but onnxruntime has no CUDA provider "
                                     "(install onnxruntime-gpu); use device='cpu'")
                providers.insert(0, "CUDAExecutionProvider")
            try:
                self.session = ort.InferenceSession(
                    str(source) if isinstance(source, (str, os.PathLike)) else source, options, providers=providers
                )
            except Exception as err:  # onnxruntime raises its own exception types for damaged files
                name = source if isinstance(source, (str, os.PathLike)) else None
                raise InputError(f"cannot open the ONNX model: {err}", name) from err
        inputs = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or self.output_names[:3] != list(OUTPUTS[:3]):
            raise InputError(f"not a semkit Mask R-CNN graph: inputs {inputs}, outputs {self.output_names}")
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config = json.loads(meta[META_CONFIG]) if META_CONFIG in meta else {}
        self.thresholds = (CombineThresholds(**json.loads(meta[META_THRESHOLDS])) if META_THRESHOLDS in meta
                           else CombineThresholds())

    def __call__(self, image: np.ndarray) -> Detections:
        x = np.ascontiguousarray(image, dtype=np.float32)[None]
        out = dict(zip(self.output_names, self.session.run(self.output_names, {INPUT_NAME: x}), strict=True))
        return Detections(
            boxes=out["boxes"].reshape(-1, 4).astype(np.float32, copy=False),
            scores=out["scores"].reshape(-1).astype(np.float32, copy=False),
            mask_probs=out["mask_probs"].astype(np.float32, copy=False),
            bin_probs=out.get("uncertainty_probs"),
            cropped=True,
        )


def _set_metadata(proto, values: dict[str, str]) -> None:
    keep = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
