"""Image in, acquisition boxes out: segmentation (steps 1–6), box placement (step 7), mapping (step 8).

:func:`box_image` is the one call a notebook, the CLI and the benchmark use. Its result keeps the segmentation's
intermediates for figures and gives the boxes in parent-image pixels and, when the pixel size is known, in
nanometres (:meth:`BoxResult.table`, :func:`write_boxes`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from semkit.data.records import SEMRecord
from semkit.errors import InputError
from semkit.stem.boxes import BOX_COLUMNS, boxes_to_parent, place_boxes, size_cap
from semkit.stem.segment import Segmentation, SegmentSettings, segment_particle

#: Columns of :meth:`BoxResult.table` and of the CSV/JSON box files.
TABLE_COLUMNS = ("x", "y", "size", "x_nm", "y_nm", "size_nm", "cluster")


@dataclass
class BoxSettings:
    """Settings of the whole boxing run (saved next to every box file).

    Attributes:
        algorithm: 1 (largest squares first) or 2 (raster scan, the study's choice).
        size_cap_fraction: largest box side as a fraction of the cropped image's shorter side (study: 0.2).
        segment: settings of steps 1–6.
    """

    algorithm: int = 2
    size_cap_fraction: float = 0.2
    segment: SegmentSettings = field(default_factory=SegmentSettings)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BoxResult:
    """Boxes for one image.

    Attributes:
        source: image name or path.
        boxes: int32 (N, 4) in the cropped grid, columns :data:`~semkit.stem.boxes.BOX_COLUMNS`; (0, 4) when
            nothing was found.
        segmentation: the intermediates of steps 1–6.
        scale: parent pixels per grid pixel (parent side / 128).
        cap: box-size cap used (grid pixels).
        algorithm: 1 or 2.
        pixel_size_nm: parent pixel size, ``None`` if unknown.
    """

    source: str
    boxes: np.ndarray
    segmentation: Segmentation
    scale: float
    cap: int
    algorithm: int
    pixel_size_nm: float | None = None

    @property
    def n_boxes(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def reason(self) -> str | None:
        """Why there are no boxes (``None`` when segmentation succeeded)."""
        return self.segmentation.reason

    @property
    def offset(self) -> tuple[int, int]:
        """(row, col) of the crop in the 128-grid."""
        return self.segmentation.offset

    def parent_boxes(self) -> np.ndarray:
        """float64 (N, 3): x, y (top-left corner) and side of each box in parent-image pixels."""
        return boxes_to_parent(self.boxes, self.offset, self.scale)

    def table(self):
        """The boxes as a :class:`pandas.DataFrame` with columns :data:`TABLE_COLUMNS`.

        ``x``/``y`` are the top-left corner (column/row) and ``size`` the side, in parent pixels; the ``_nm``
        columns are the same in nanometres (NaN when the pixel size is unknown); ``cluster`` is the intensity
        cluster (1 = darkest).
        """
        import pandas as pd

        xys = self.parent_boxes()
        px = np.nan if self.pixel_size_nm is None else self.pixel_size_nm
        return pd.DataFrame(
            {
                "x": xys[:, 0],
                "y": xys[:, 1],
                "size": xys[:, 2],
                "x_nm": xys[:, 0] * px,
                "y_nm": xys[:, 1] * px,
                "size_nm": xys[:, 2] * px,
                "cluster": self.boxes[:, 3].astype(np.int64),
            },
            columns=list(TABLE_COLUMNS),
        )

    def summary(self) -> dict:
        """Scalars for tables: name, box count, k, peaks, crop, cap, reason."""
        seg = self.segmentation
        return {
            "image": Path(self.source).stem if self.source and "://" not in self.source else self.source,
            "n_boxes": self.n_boxes,
            "n_elements": seg.n_elements,
            "n_peaks": int(len(seg.peaks)),
            "k": seg.k,
            "crop": None if seg.bbox is None else list(seg.bbox),
            "cap": self.cap,
            "algorithm": self.algorithm,
            "reason": seg.reason,
        }


def _record_fields(image, n_elements, pixel_size_nm, source):
    if isinstance(image, SEMRecord):
        rec = image
        if n_elements is None:
            n_elements = rec.meta.get("n_elements")
        if pixel_size_nm is None:
            pixel_size_nm = rec.pixel_size_nm
        source = source or rec.source
        image = rec.image
    if n_elements is None:
        raise InputError(
            "no element count for this image: pass n_elements (CLI: --elements N or a counts CSV); the number "
            "of clusters depends on it",
            source,
        )
    return image, n_elements, pixel_size_nm, source


def box_image(
    image: np.ndarray | SEMRecord,
    n_elements: int | None = None,
    settings: BoxSettings | None = None,
    pixel_size_nm: float | None = None,
    source: str | None = None,
) -> BoxResult:
    """Segment one HAADF particle image and cover the particle with acquisition boxes.

    Args:
        image: square (N, N) array (any numeric dtype) or a :class:`SEMRecord` whose ``meta['n_elements']`` and
            ``pixel_size_nm`` are used when the arguments are not given.
        n_elements: elements in the particle's composition.
        settings: algorithm, size cap and segmentation settings (defaults: :class:`BoxSettings`).
        pixel_size_nm: parent pixel size for the physical coordinates.
        source: image name for messages and tables.

    Returns:
        :class:`BoxResult`; with no particle or a constant image its box list is empty and ``reason`` says why.

    Raises:
        InputError: naming the image, for a missing element count, non-square or non-2-D input, or an unknown
            algorithm.
    """
    cfg = settings or BoxSettings()
    image, n_elements, pixel_size_nm, source = _record_fields(image, n_elements, pixel_size_nm, source)
    seg = segment_particle(image, n_elements, cfg.segment, source=source)
    scale = seg.parent_shape[0] / cfg.segment.grid
    if not seg.ok:
        boxes = np.zeros((0, len(BOX_COLUMNS)), dtype=np.int32)
        return BoxResult(source or "", boxes, seg, scale, 0, cfg.algorithm, pixel_size_nm)
    cap = size_cap(seg.labels.shape, cfg.size_cap_fraction)
    try:
        boxes = place_boxes(seg.labels, cfg.algorithm, cap)
    except InputError as exc:
        raise InputError(exc.reason, source) from None
    return BoxResult(source or "", boxes, seg, scale, cap, cfg.algorithm, pixel_size_nm)


def box_records(records: list[SEMRecord], settings: BoxSettings | None = None) -> list[BoxResult]:
    """:func:`box_image` on every record (element counts from ``record.meta['n_elements']``)."""
    return [box_image(r, settings=settings) for r in records]


def write_boxes(result: BoxResult, path: str | Path, settings: BoxSettings | None = None) -> Path:
    """Write one image's boxes as CSV (``.csv``) or JSON (``.json``).

    The CSV holds :data:`TABLE_COLUMNS`; the JSON holds the same rows under ``"boxes"`` plus the image's
    summary (:meth:`BoxResult.summary`), the parent shape, the pixel size and the settings.

    Raises:
        InputError: for a suffix other than .csv or .json.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InputError("box files are .csv or .json", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = result.table()
    if suffix == ".csv":
        table.to_csv(path, index=False)
        return path
    payload = {
        **result.summary(),
        "source": result.source,
        "parent_shape": list(result.segmentation.parent_shape),
        "grid": int(result.segmentation.resized.shape[0]),
        "pixel_size_nm": result.pixel_size_nm,
        "settings": None if settings is None else settings.to_dict(),
        "boxes": json.loads(table.to_json(orient="records")),
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def boxes_frame(results: list[BoxResult]):
    """All images' boxes in one :class:`pandas.DataFrame`: an ``image`` column, then :data:`TABLE_COLUMNS`."""
    import pandas as pd

    frames = [r.table().assign(image=r.summary()["image"]) for r in results]
    if not frames:
        return pd.DataFrame(columns=["image", *TABLE_COLUMNS])
    out = pd.concat(frames, ignore_index=True)
    return out[["image", *TABLE_COLUMNS]]
