"""Training with Lightning: the shared trainer factory, data modules, Mask R-CNN / U-Net modules, threshold
search on validation data and the fine-tuning entry point.

* :class:`TrainerConfig` / :func:`make_trainer` -- the one Lightning trainer factory of the project;
* :mod:`~semkit.train.data` -- :class:`DataConfig`, :class:`InstanceDataset`, :class:`SEMDataModule`
  (random crops, ``torchvision.transforms.v2`` augmentations), :func:`bam_split`;
* :class:`MaskRCNNModule`, :class:`UNetModule` -- LightningModules validated with AJI+;
* :mod:`~semkit.train.thresholds` -- :func:`search_thresholds` and friends;
* :class:`FinetuneConfig` / :func:`finetune` -- train, tune on val, evaluate on test, write results;
* :mod:`~semkit.train.plots` -- training curves and overlays (imported on demand: it needs matplotlib).
"""

from semkit.train.data import DataConfig, InstanceDataset, SEMDataModule, bam_split
from semkit.train.finetune import FinetuneConfig, finetune, load_splits, read_predictions
from semkit.train.maskrcnn_module import MaskRCNNModule
from semkit.train.thresholds import predict_detections, search_thresholds
from semkit.train.trainer import TrainerConfig, make_trainer, read_history
from semkit.train.unet_module import UNetModule

__all__ = [
    "DataConfig",
    "FinetuneConfig",
    "InstanceDataset",
    "MaskRCNNModule",
    "SEMDataModule",
    "TrainerConfig",
    "UNetModule",
    "bam_split",
    "finetune",
    "load_splits",
    "make_trainer",
    "predict_detections",
    "read_history",
    "read_predictions",
    "search_thresholds",
]
