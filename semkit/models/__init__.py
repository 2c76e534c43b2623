"""Segmentation models: timm backbones, uncertainty-aware Mask R-CNN, U-Net baselines, classical pipeline.

Choices are plain dictionaries (:data:`BACKBONES`, :data:`UNET_ENCODERS`, :data:`UNET_ARCHITECTURES`,
:data:`SEGMENTERS`); an unknown name raises ``KeyError`` listing the valid ones.
"""

from semkit.models.backbones import (
    BACKBONES,
    WeightsUnavailableError,
    count_parameters,
    create_backbone,
    encoder_state_dict,
    load_encoder_state_dict,
)
from semkit.models.classical import ClassicalConfig, ClassicalSegmenter, segment_classical
from semkit.models.io import load_model, save_model
from semkit.models.maskrcnn import MaskRCNNConfig, build_maskrcnn
from semkit.models.postprocess import CombineThresholds, combine_detections, combine_masks
from semkit.models.uncertainty import UncertaintyConfig, UncertaintyHead, uncertainty_loss
from semkit.models.unet import ARCHITECTURES as UNET_ARCHITECTURES
from semkit.models.unet import (
    UNET_ENCODERS,
    UNetConfig,
    UNetPostprocess,
    build_unet,
    build_unet_model,
    instances_from_prediction,
    predict_unet,
    unet_targets,
)

#: Segmentation approaches of the comparison tables -> builder.
SEGMENTERS = {"maskrcnn": build_maskrcnn, "unet": build_unet, "classical": segment_classical}


def get_segmenter(name: str):
    """The builder (or, for ``"classical"``, the segmentation function) registered under ``name``."""
    if name not in SEGMENTERS:
        raise KeyError(f"unknown segmenter {name!r}; choose one of: {', '.join(SEGMENTERS)}")
    return SEGMENTERS[name]


__all__ = [
    "ClassicalConfig",
    "ClassicalSegmenter",
    "load_model",
    "save_model",
    "BACKBONES",
    "SEGMENTERS",
    "UNET_ARCHITECTURES",
    "UNET_ENCODERS",
    "CombineThresholds",
    "MaskRCNNConfig",
    "UncertaintyConfig",
    "UncertaintyHead",
    "UNetConfig",
    "UNetPostprocess",
    "WeightsUnavailableError",
    "build_maskrcnn",
    "build_unet",
    "build_unet_model",
    "combine_detections",
    "combine_masks",
    "count_parameters",
    "create_backbone",
    "encoder_state_dict",
    "get_segmenter",
    "instances_from_prediction",
    "load_encoder_state_dict",
    "predict_unet",
    "segment_classical",
    "uncertainty_loss",
    "unet_targets",
]
