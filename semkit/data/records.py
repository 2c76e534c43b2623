"""The one record type every dataset adapter produces.

A :class:`SEMRecord` is one image with whatever annotations its source provides. Adapters (BAM, the
uncertainty-aware particle dataset, COCO, semantic folders, plain folders, the synthetic generator) all return
lists of records, so curation, training and evaluation never need to know where an image came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from semkit.errors import InputError

MagnificationBucket = Literal["low", "high"]
Split = Literal["train", "val", "test", "ssl_train", "ssl_eval"]


@dataclass
class SEMRecord:
    """One electron-microscopy image and its annotations.

    Attributes:
        image: float32 array (H, W) in [0, 1], databar already cropped.
        instances: int32 instance label map (H, W), 0 = background, 1..N = particles; ``None`` if unlabeled.
        certain: bool array of length N; ``certain[i]`` is the expert flag of instance ``i + 1``
            (True = certain / measurable). ``None`` when the source has no such flags.
        semantic: uint8 (H, W) class map for semantic datasets (NASA EBC, MetalDAM); ``None`` otherwise.
        pixel_size_nm: physical edge length of one pixel in nanometres, from metadata; ``None`` if unknown
            (never guessed).
        source: path of the image file (or a synthetic identifier such as ``synthetic://seed=0/index=3``).
        magnification_bucket: ``"low"`` or ``"high"`` (see :func:`semkit.data.curation.magnification_bucket`),
            ``None`` when the field of view is unknown.
        split: dataset split this record belongs to, if the source defines one.
        meta: free-form extra metadata (instrument, detector, magnification, original dtype, ...).
    """

    image: np.ndarray
    instances: np.ndarray | None = None
    certain: np.ndarray | None = None
    semantic: np.ndarray | None = None
    pixel_size_nm: float | None = None
    source: str = ""
    magnification_bucket: MagnificationBucket | None = None
    split: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def name(self) -> str:
        """File stem of the source (used as the image id in tables)."""
        return Path(self.source).stem if self.source else ""

    @property
    def n_instances(self) -> int:
        return 0 if self.instances is None else int(self.instances.max(initial=0))

    @property
    def field_of_view_um(self) -> float | None:
        """Width of the image in micrometres, if the pixel size is known."""
        if self.pixel_size_nm is None:
            return None
        return self.image.shape[1] * self.pixel_size_nm / 1000.0

    def validate(self) -> None:
        """Check shapes and dtypes; raise :class:`InputError` naming the source on any inconsistency."""
        src = self.source or None
        if self.image.ndim != 2:
            raise InputError(f"image must be 2-D grayscale, got shape {self.image.shape}", src)
        if self.image.dtype != np.float32:
            raise InputError(f"image must be float32 in [0, 1], got {self.image.dtype}", src)
        for name in ("instances", "semantic"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != self.image.shape:
                raise InputError(
                    f"{name} shape {arr.shape} does not match image shape {self.image.shape}", src
                )
        if self.instances is not None:
            if not np.issubdtype(self.instances.dtype, np.integer):
                raise InputError(f"instance labels must be integers, got {self.instances.dtype}", src)
            if self.instances.min(initial=0) < 0:
                raise InputError("instance labels must be >= 0", src)
        if self.certain is not None:
            if self.instances is None:
                raise InputError("certainty flags given without instances", src)
            if len(self.certain) != self.n_instances:
                raise InputError(
                    f"{len(self.certain)} certainty flags for {self.n_instances} instances", src
                )
        if self.pixel_size_nm is not None and not self.pixel_size_nm > 0:
            raise InputError(f"pixel size must be positive, got {self.pixel_size_nm}", src)
