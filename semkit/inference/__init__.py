"""Inference: tiled prediction with stitching, ONNX export and onnxruntime, per-image output files.

Typical use::

    from semkit.inference import predict_file, write_outputs
    pred = predict_file("runs/maskrcnn_pico", "image.tif", tile=None)
    write_outputs(pred, "predictions/")

or ``semkit predict --model runs/maskrcnn_pico --images folder/ --out predictions/``.
"""

from semkit.inference.onnx import OnnxDetector, export_onnx
from semkit.inference.outputs import overlay_image, particle_rois, particle_table, write_outputs
from semkit.inference.predict import (
    STUDY_RESIZE,
    Prediction,
    TorchDetector,
    as_detector,
    load_predictor,
    predict_file,
    predict_image,
    prepare_image,
    resize_for_inference,
)
from semkit.inference.tiles import Detections, Tile, predict_tiled, stitch_pieces, tile_grid

__all__ = [
    "STUDY_RESIZE",
    "Detections",
    "OnnxDetector",
    "Prediction",
    "Tile",
    "TorchDetector",
    "as_detector",
    "export_onnx",
    "load_predictor",
    "overlay_image",
    "particle_rois",
    "particle_table",
    "predict_file",
    "predict_image",
    "predict_tiled",
    "prepare_image",
    "resize_for_inference",
    "stitch_pieces",
    "tile_grid",
    "write_outputs",
]
