"""Adaptive acquisition boxes for 4D-STEM / EELS / EDS of nanoparticles (issue 6).

Instead of the uniform 128 × 128 grid, a HAADF image of one particle is segmented into intensity clusters and
each cluster is covered by square boxes, one acquisition point each: none on background, small boxes where the
intensity varies, large ones in uniform regions.

Public API::

    make_haadf_image(size, n_elements, layout, seed)   synthetic HAADF particle (SEMRecord)
    make_haadf_set(n_images, sizes, seed)              reproducible set, element counts 1–5
    load_haadf_folder(folder, counts_csv)              real images + CSV of element counts
    segment_particle(image, n_elements, settings)      steps 1–6 → Segmentation
    place_boxes(labels, algorithm, cap)                Algorithm 1 or 2 → (N, 4) boxes
    box_image(image, n_elements, settings)             the whole pipeline → BoxResult
    write_boxes(result, path) / boxes_frame(results)   CSV / JSON / one table in parent pixels and nm
    time_boxing(records, settings, repeats)            per-image median times
    acquisition_table / dataset_table                  projected acquisition times
    ReviewLog, review_gallery, success_rate            the study's three visual criteria, recorded to CSV
"""

from semkit.stem.boxes import (
    ALGORITHMS,
    BOX_COLUMNS,
    boxes_from_parent,
    boxes_to_parent,
    coverage,
    largest_squares,
    place_boxes,
    size_cap,
)
from semkit.stem.io import load_haadf_folder, read_element_counts
from semkit.stem.pipeline import (
    TABLE_COLUMNS,
    BoxResult,
    BoxSettings,
    box_image,
    box_records,
    boxes_frame,
    write_boxes,
)
from semkit.stem.review import (
    REVIEW_CRITERIA,
    ReviewLog,
    auto_review,
    auto_review_log,
    review_gallery,
    success_rate,
)
from semkit.stem.segment import GRID, Segmentation, SegmentSettings, choose_k, segment_particle
from semkit.stem.synthetic import LAYOUTS, make_haadf_image, make_haadf_set
from semkit.stem.timing import (
    BASELINES_S,
    GRID_POINTS,
    acquisition_table,
    acquisition_time,
    compare_algorithms,
    dataset_table,
    time_boxing,
)

__all__ = [
    "ALGORITHMS",
    "BASELINES_S",
    "BOX_COLUMNS",
    "GRID",
    "GRID_POINTS",
    "LAYOUTS",
    "REVIEW_CRITERIA",
    "TABLE_COLUMNS",
    "BoxResult",
    "BoxSettings",
    "ReviewLog",
    "SegmentSettings",
    "Segmentation",
    "acquisition_table",
    "acquisition_time",
    "auto_review",
    "auto_review_log",
    "box_image",
    "box_records",
    "boxes_frame",
    "boxes_from_parent",
    "boxes_to_parent",
    "choose_k",
    "compare_algorithms",
    "coverage",
    "dataset_table",
    "largest_squares",
    "load_haadf_folder",
    "make_haadf_image",
    "make_haadf_set",
    "place_boxes",
    "read_element_counts",
    "review_gallery",
    "segment_particle",
    "size_cap",
    "success_rate",
    "time_boxing",
    "write_boxes",
]
