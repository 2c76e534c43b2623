"""Data layer: one image loader, one record type, dataset adapters, synthetic data, registry and curation.

Adapters all return ``list[SEMRecord]``:

* :func:`load_bam` — BAM TiO2 layout (images/, instances/, measurable/),
* :func:`load_uncertainty_dataset` — Samples/ + High/Low_Confidence_Labels/ of the uncertainty-aware study,
* :func:`load_coco` / :func:`save_coco` — COCO instance JSON (polygons and RLE),
* :func:`load_semantic_folders` — ``split/NAME.png`` + ``split_annot/NAME.png`` (NASA EBC),
* :func:`load_unlabeled` / :func:`iter_unlabeled` — plain folders of images,
* :func:`read_instance_folder` / :func:`write_instance_folder` — semkit's own images/labels/certainty layout,
* :func:`make_sem_dataset` — the synthetic SEM generator (the embedded default data).
"""

from semkit.data.bam import load_bam
from semkit.data.coco import load_coco, load_coco_masks, save_coco
from semkit.data.databar import crop_databar, detect_databar
from semkit.data.folders import iter_unlabeled, load_unlabeled, magnification_bucket
from semkit.data.instance_folder import read_instance_folder, write_instance_folder
from semkit.data.io import ImageMeta, list_images, load_image, load_labels, save_labels
from semkit.data.records import SEMRecord
from semkit.data.semantic import load_semantic_folders
from semkit.data.synthetic import SyntheticConfig, make_sem_dataset, make_sem_record, write_synthetic_dataset
from semkit.data.uncertainty_dataset import load_uncertainty_dataset

__all__ = [
    "ImageMeta",
    "SEMRecord",
    "SyntheticConfig",
    "crop_databar",
    "detect_databar",
    "iter_unlabeled",
    "list_images",
    "load_bam",
    "load_coco",
    "load_coco_masks",
    "load_image",
    "load_labels",
    "load_semantic_folders",
    "load_uncertainty_dataset",
    "load_unlabeled",
    "magnification_bucket",
    "make_sem_dataset",
    "make_sem_record",
    "read_instance_folder",
    "save_coco",
    "save_labels",
    "write_instance_folder",
    "write_synthetic_dataset",
]
