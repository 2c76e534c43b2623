"""Interpretability of encoders and segmenters: GRN feature maps, collapse statistics, class activation maps.

Public API::

    load_encoders(checkpoints, backbone, seed)        "random" / "imagenet" / encoder file / model folder → Encoder
    load_models(paths)                                fine-tuned model folders → {label: (model, postprocess)}
    example_records(images, size, seed)               image files, or synthetic low-/high-magnification examples
    demo_models(output_dir, backbone, quick)          a small Mask R-CNN and U-Net fine-tuned on synthetic images
    GRNCapture(model, stages)                         forward hooks on the GRN of each stage's last block
    capture_features(encoder, images, stages)         one forward pass → {stage: (B, 4·C_s, h, w)}
    capture_all(encoders, records, stages)            {checkpoint: {image: {stage: (4·C_s, h, w)}}}
    select_channels(n_total, n, seed, stage)          the same channels for every checkpoint
    channel_stats / feature_stats_table               dead, saturated, mean pairwise cosine similarity
    compute_cam(model, image, method, stage)          Ablation-CAM / Grad-CAM of a Mask R-CNN or U-Net
    compute_cams(models, records, method, stage)      {image: {model: CAMResult}}
    cam_summary / cam_summaries / cam_table         the numbers that go with a map

Figures are in :mod:`semkit.plotting.interpret`.
"""

from semkit.interpret.cam import (
    CAM_METHODS,
    CAMResult,
    ZeroAblationLayer,
    cam_class,
    cam_summaries,
    cam_summary,
    cam_table,
    compute_cam,
    compute_cams,
    energy_inside,
    maskrcnn_cam,
    unet_cam,
)
from semkit.interpret.features import (
    STAGES,
    GRNCapture,
    capture_all,
    capture_features,
    channel_selection,
    encoder_stages,
    grn_layers,
    select_channels,
)
from semkit.interpret.inputs import (
    Encoder,
    checkpoint_label,
    demo_models,
    example_records,
    load_encoder,
    load_encoders,
    load_models,
    model_label,
)
from semkit.interpret.stats import (
    STATS_COLUMNS,
    channel_stats,
    classify_channels,
    feature_stats_table,
    mean_pairwise_cosine,
    stats_by_checkpoint,
    summarise_stats,
)

__all__ = [
    "CAM_METHODS",
    "CAMResult",
    "Encoder",
    "GRNCapture",
    "STAGES",
    "STATS_COLUMNS",
    "ZeroAblationLayer",
    "cam_class",
    "cam_summaries",
    "cam_summary",
    "cam_table",
    "capture_all",
    "capture_features",
    "channel_selection",
    "channel_stats",
    "checkpoint_label",
    "classify_channels",
    "demo_models",
    "compute_cam",
    "compute_cams",
    "encoder_stages",
    "energy_inside",
    "example_records",
    "feature_stats_table",
    "grn_layers",
    "load_encoder",
    "load_encoders",
    "load_models",
    "maskrcnn_cam",
    "mean_pairwise_cosine",
    "model_label",
    "select_channels",
    "stats_by_checkpoint",
    "summarise_stats",
    "unet_cam",
]
