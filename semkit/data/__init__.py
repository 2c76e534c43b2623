"""Data layer: one image loader, one record type, dataset adapters, synthetic data, registry and curation."""

from semkit.data.databar import crop_databar, detect_databar
from semkit.data.io import ImageMeta, list_images, load_image, load_labels, save_labels
from semkit.data.records import SEMRecord

__all__ = [
    "ImageMeta",
    "SEMRecord",
    "crop_databar",
    "detect_databar",
    "list_images",
    "load_image",
    "load_labels",
    "save_labels",
]
