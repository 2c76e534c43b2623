"""Predict a particle label map and per-particle table for one image with a trained Mask R-CNN.

The steps of :func:`predict_image`:

1. **check the image** (:func:`prepare_image`): 2-D grayscale float in [0, 1]; 8/16-bit integer arrays are
   scaled by their type's maximum (as :func:`semkit.data.io.load_image` does), RGB(A) is converted to gray with
   the loader's weights, anything else is an :class:`~semkit.errors.InputError` naming the image;
2. **resize as the study did** (:func:`resize_for_inference`): the high-magnification images of the
   uncertainty-aware study (7680 × 4800) were shrunk by 4 to 1920 × 1200 before inference (``resize=True``,
   :data:`STUDY_RESIZE`; area averaging). Every other size is left alone -- the model never rescales silently.
   ``resize=False`` turns this off and ``resize=(H, W)`` forces a size. The label map belongs to the resized
   image and the pixel size is scaled with it, so physical sizes stay right;
3. **crop the databar** (:func:`semkit.data.databar.detect_databar`) so its text is not segmented; the bar's
   rows are background in the returned label map, which keeps the input's (resized) shape;
4. **tiled inference** (:func:`semkit.inference.tiles.predict_tiled`) with the study's post-processing per tile
   and stitching of particles cut by tile borders. ``tile=None`` runs the whole image at once, as the study did
   for 1920 × 1200 images; a tile size such as the training crop size helps dense images (each forward pass
   returns at most ``detections_per_img`` particles).

Memory: the detector returns 28 × 28 mask crops per detection and the post-processing pastes them only inside
their boxes, so no full-resolution float mask per detection is ever built (500 of them at 1200 × 1920 would take
4.6 GB).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from semkit.data.databar import detect_databar
from semkit.errors import InputError
from semkit.inference.tiles import Detections, check_detections, predict_tiled
from semkit.models.classical import ClassicalSegmenter
from semkit.models.postprocess import CombineThresholds
from semkit.models.unet import UNetPostprocess, predict_unet

#: Input sizes the study shrank before inference: (H, W) → (H, W).
STUDY_RESIZE: dict[tuple[int, int], tuple[int, int]] = {(4800, 7680): (1200, 1920)}
# ITU-R BT.601 luma weights: the convention of semkit.data.io.load_image (PIL's "L").
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass
class Prediction:
    """Segmentation of one image.

    Attributes:
        labels: int32 (H, W) instance map, 0 = background, particles 1..P.
        table: one row per particle: ``id``, ``objectness``, ``confidence`` (γ in [0, 1], NaN without an
            uncertainty head), ``certain``, ``area_px``, ``tile``, ``pieces`` (see
            :func:`semkit.inference.tiles.stitch_pieces`).
        image: float32 (H, W), the image the labels belong to (after resizing).
        pixel_size_nm: pixel size of ``image`` (the input's times ``scale``), ``None`` if unknown.
        scale: input pixels per output pixel (4.0 after 7680 → 1920, 1.0 without resizing).
        databar_rows: rows at the bottom (of ``image``) excluded as the instrument's databar.
        source: file or name of the input.
        seconds: wall time of the prediction.
    """

    labels: np.ndarray
    table: pd.DataFrame
    image: np.ndarray
    pixel_size_nm: float | None = None
    scale: float = 1.0
    databar_rows: int = 0
    source: str = ""
    seconds: float = 0.0

    @property
    def n_particles(self) -> int:
        return len(self.table)

    @property
    def n_certain(self) -> int:
        return int(self.table["certain"].sum())


class TorchDetector:
    """Run a particle Mask R-CNN (:func:`semkit.models.build_maskrcnn`) on single images.

    Args:
        model: the model (switched to eval mode and moved to ``device``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        thresholds: post-processing thresholds that belong to the model (e.g. from :func:`load_model`).
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu",
                 thresholds: CombineThresholds | None = None):
        self.device = _torch_device(device)
        self.model = model.eval().to(self.device)
        self.thresholds = thresholds

    def __call__(self, image: np.ndarray) -> Detections:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(self.device)
        with torch.inference_mode():
            out = self.model([x])[0]
        cropped = "mask_probs" in out
        masks = out["mask_probs"] if cropped else out["masks"]
        bins = out.get("uncertainty_probs")
        return Detections(
            boxes=out["boxes"].float().cpu().numpy(),
            scores=out["scores"].float().cpu().numpy(),
            mask_probs=masks.float().cpu().numpy(),
            bin_probs=None if bins is None else bins.float().cpu().numpy(),
            cropped=cropped,
        )


class LabelPredictor:
    """A model that returns an instance label map directly (U-Net, classical pipeline) instead of detections:
    :func:`predict_image` runs it on the whole (databar-cropped) image; its particles have no objectness or
    confidence and count as certain.

    Args:
        segment: ``image (H, W) float32 in [0, 1] → int (H, W) label map``.
        kind: ``"unet"`` or ``"classical"`` (for messages and the summary).
    """

    thresholds = None

    def __init__(self, segment, kind: str):
        self.segment = segment
        self.kind = kind

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(self.segment(image), dtype=np.int32)


def as_detector(model_or_session, device: str = "cpu"):
    """A detector callable for a model, an onnxruntime session, a detector, or a saved model path.

    Args:
        model_or_session: a Mask R-CNN ``nn.Module``; an ``onnxruntime.InferenceSession`` of
            :func:`semkit.inference.onnx.export_onnx`; a :class:`TorchDetector` /
            :class:`~semkit.inference.onnx.OnnxDetector` (returned as is); or a path to a
            :func:`semkit.models.io.save_model` folder or an ``.onnx`` file (see :func:`load_predictor`).
        device: where to run.

    Returns:
        A callable ``image (H, W) float32 → Detections`` with a ``thresholds`` attribute (``None`` = defaults).
    """
    if isinstance(model_or_session, (str, os.PathLike)):
        return load_predictor(model_or_session, device)
    if isinstance(model_or_session, nn.Module):
        return TorchDetector(model_or_session, device)
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        ort = None
    if ort is not None and isinstance(model_or_session, ort.InferenceSession):
        from semkit.inference.onnx import OnnxDetector

        return OnnxDetector(model_or_session)
    if callable(model_or_session):
        return model_or_session
    raise TypeError(f"cannot predict with a {type(model_or_session).__name__}; pass a Mask R-CNN, an "
                    "onnxruntime.InferenceSession, a model folder or an .onnx file")


def load_predictor(path: str | os.PathLike, device: str = "cpu"):
    """Open a saved model for prediction: a :func:`~semkit.models.io.save_model` folder or an ``.onnx`` file.

    Returns:
        A :class:`TorchDetector` or :class:`~semkit.inference.onnx.OnnxDetector` whose ``thresholds`` are the
        ones saved with the model; for a U-Net or classical model folder a :class:`LabelPredictor`.

    Raises:
        InputError: naming ``path`` when it is neither.
    """
    from semkit.inference.onnx import OnnxDetector
    from semkit.models.io import is_model_folder, load_model

    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".onnx":
        return OnnxDetector(p, device=device)
    if is_model_folder(p) or (p.is_file() and is_model_folder(p.parent)):
        model, thresholds, _ = load_model(p)
        if isinstance(model, ClassicalSegmenter):
            return LabelPredictor(model, "classical")
        if isinstance(thresholds, UNetPostprocess):
            torch_device = _torch_device(device)
            return LabelPredictor(lambda image: predict_unet(model, [image], thresholds, torch_device)[0], "unet")
        return TorchDetector(model, device, thresholds)
    raise InputError("not a model: expected a folder written by semkit.models.io.save_model (config.json + "
                     "weights.pt) or an .onnx file written by semkit.inference.onnx.export_onnx", p)


def prepare_image(image, name: str | None = None) -> np.ndarray:
    """Check and convert an image array to float32 (H, W) grayscale in [0, 1].

    Accepts (H, W), (1, H, W) and (H, W, 3|4) arrays or tensors; bool, unsigned 8/16/32-bit integers (divided by
    the type's maximum, as the file loader does) and floats already in [0, 1].

    Raises:
        InputError: naming ``name`` for other shapes, signed integers, NaN/infinite values or floats outside
            [0, 1] (read files with :func:`semkit.data.io.load_image`, which scales them).
    """
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[-1] not in (3, 4):
        arr = arr[0]  # (1, H, W) as the model takes it; (1, W, 3) stays an RGB row
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise InputError(f"expected a grayscale (H, W) or RGB (H, W, 3) image, got shape {arr.shape}", name)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"image is empty (shape {arr.shape})", name)
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            arr = rgb[..., 0]  # grayscale stored as RGB: keep the exact values
        else:
            return (_unit_float(rgb, name).astype(np.float64) @ _LUMA).astype(np.float32)
    return _unit_float(arr, name)


def _unit_float(arr: np.ndarray, name: str | None) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype.kind == "u":
        return (arr.astype(np.float64) / np.iinfo(arr.dtype).max).astype(np.float32)
    if arr.dtype.kind == "i":
        raise InputError(f"signed integer images ({arr.dtype}) are not supported", name)
    if arr.dtype.kind != "f":
        raise InputError(f"unsupported sample type {arr.dtype}", name)
    if not np.all(np.isfinite(arr)):
        raise InputError("image contains NaN or infinite values", name)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"float image values must lie in [0, 1], got [{lo:g}, {hi:g}]; read files with "
                         "semkit.data.io.load_image, which scales them", name)
    return arr.astype(np.float32, copy=False)


def resize_for_inference(
    image: np.ndarray, resize: bool | tuple[int, int] = True, name: str | None = None
) -> tuple[np.ndarray, float]:
    """Shrink an image as the study did before inference.

    Args:
        image: float32 (H, W).
        resize: ``True``: apply :data:`STUDY_RESIZE` (7680 × 4800 → 1920 × 1200) and leave every other size
            alone; ``False``: never resize; ``(H, W)``: resize to that shape (the aspect ratio must stay within
            1 %, so that one pixel size still describes both axes).

    Returns:
        ``(image, scale)``: the (resized) float32 image and input pixels per output pixel (1.0 if unchanged).
        Integer factors use area averaging (:func:`skimage.transform.downscale_local_mean`), other sizes
        :func:`skimage.transform.resize` with anti-aliasing.

    Raises:
        InputError: for a target that changes the aspect ratio or is not positive.
    """
    from skimage.transform import downscale_local_mean
    from skimage.transform import resize as sk_resize

    shape = tuple(int(s) for s in image.shape)
    if resize is True:
        target = STUDY_RESIZE.get(shape)
    elif resize is False or resize is None:
        target = None
    else:
        target = (int(resize[0]), int(resize[1]))
    if target is None or target == shape:
        return image, 1.0
    if min(target) < 1:
        raise InputError(f"resize target must be positive, got {target}", name)
    sy, sx = shape[0] / target[0], shape[1] / target[1]
    if abs(sy / sx - 1) > 0.01:
        raise InputError(f"resizing {shape} to {target} changes the aspect ratio; one pixel size could not "
                         "describe both axes", name)
    if sy == sx and sy.is_integer() and shape[0] % target[0] == 0 and shape[1] % target[1] == 0:
        out = downscale_local_mean(image, (int(sy), int(sx)))
    else:
        out = sk_resize(image, target, order=1, anti_aliasing=sy > 1, preserve_range=True)
    return np.clip(out, 0, 1).astype(np.float32), float(np.sqrt(sy * sx))


def predict_image(
    model_or_session,
    image,
    thresholds: CombineThresholds | None = None,
    tile: int | None = None,
    overlap: int = 128,
    resize: bool | tuple[int, int] = True,
    crop_databar: bool = True,
    pixel_size_nm: float | None = None,
    device: str = "cpu",
    name: str | None = None,
) -> Prediction:
    """Segment the particles of one image.

    Args:
        model_or_session: anything :func:`as_detector` accepts (model, onnxruntime session, detector, path).
        image: image array (see :func:`prepare_image`).
        thresholds: post-processing thresholds; ``None``: those saved with the model, else the defaults.
        tile: tile side in px (``None``: whole image in one pass). Images smaller than the tile are run whole.
        overlap: minimum tile overlap in px; make it larger than the largest particle.
        resize: see :func:`resize_for_inference` (default: the study's 7680 × 4800 → 1920 × 1200 only).
        crop_databar: exclude a detected instrument databar (its rows become background).
        pixel_size_nm: pixel size of the *input* image, if known.
        device: for PyTorch models / onnxruntime (``"cpu"``, ``"cuda"``...).
        name: image name for error messages and the result.

    Returns:
        :class:`Prediction`. An image without particles gives an all-zero map and an empty table.

    Raises:
        InputError: naming the image for unusable input.
    """
    t0 = time.perf_counter()
    detector = as_detector(model_or_session, device)
    th = thresholds or getattr(detector, "thresholds", None) or CombineThresholds()
    img = prepare_image(image, name)
    img, scale = resize_for_inference(img, resize, name)
    bar = detect_databar(img) if crop_databar and img.shape[0] > 1 else 0
    work = img[: img.shape[0] - bar]

    def checked(window: np.ndarray) -> Detections:
        return check_detections(detector(window), window.shape, name)

    if isinstance(detector, LabelPredictor):  # whole image at once: no detections to tile and stitch
        labels = detector(work)
        table = _label_table(labels)
    else:
        labels, table = predict_tiled(checked, work, th, tile=tile, overlap=overlap)
    if bar:
        labels = np.pad(labels, ((0, bar), (0, 0)))
    return Prediction(
        labels=labels, table=table, image=img,
        pixel_size_nm=None if pixel_size_nm is None else float(pixel_size_nm) * scale,
        scale=scale, databar_rows=int(bar), source=name or "", seconds=time.perf_counter() - t0,
    )


def _label_table(labels: np.ndarray) -> pd.DataFrame:
    """The particle table of a label map without scores (U-Net, classical): ids, areas; certain, no confidence."""
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    n = len(ids)
    return pd.DataFrame({"id": ids.astype(np.int32), "objectness": np.full(n, np.nan), "confidence": np.full(n, np.nan),
                         "certain": np.ones(n, dtype=bool), "area_px": areas.astype(np.int64),
                         "tile": np.zeros(n, dtype=np.int64), "pieces": np.ones(n, dtype=np.int64)})


def predict_file(model_or_session, path: str | os.PathLike, pixel_size_nm: float | None = None,
                 **kwargs) -> Prediction:
    """:func:`predict_image` on an image file read with :func:`semkit.data.io.load_image`.

    Args:
        pixel_size_nm: overrides the file's calibration (``None``: from the file's metadata, if any).
        **kwargs: passed to :func:`predict_image`.
    """
    from semkit.data.io import load_image

    image, meta = load_image(path)
    px = pixel_size_nm if pixel_size_nm is not None else meta.pixel_size_nm
    pred = predict_image(model_or_session, image, pixel_size_nm=px, name=str(path), **kwargs)
    return pred


def _torch_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available; use device='cpu'")
    return dev
