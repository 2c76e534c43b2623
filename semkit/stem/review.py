"""Visual review of boxing results with the study's three criteria, recorded to a CSV.

An image counts as a success when all three criteria hold (the study reports 96.0 % over its images):

1. ``bbox_encloses_particle``: the bounding box encloses the whole particle, faint edges included;
2. ``regions_separated``: the segmentation separates regions of different intensity;
3. ``boxes_reflect_regions``: the boxes reflect the regions of interest.

:class:`ReviewLog` keeps one row per image in a CSV written after every answer, :func:`success_rate` reads the
rate from it, :func:`review_gallery` is the interactive ipywidgets front end (notebooks only), and
:func:`auto_review` scores the same criteria against the ground truth of synthetic images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semkit.data.records import SEMRecord
from semkit.errors import InputError
from semkit.stem.pipeline import BoxResult

#: Criterion column → the question shown to the reviewer.
REVIEW_CRITERIA = {
    "bbox_encloses_particle": "Bounding box encloses the whole particle, faint edges included",
    "regions_separated": "Segmentation separates regions of different intensity",
    "boxes_reflect_regions": "Boxes reflect the regions of interest",
}
REVIEW_COLUMNS = ("image", *REVIEW_CRITERIA, "reviewer")


class ReviewLog:
    """One row per reviewed image in a CSV, rewritten after every :meth:`record` so nothing is lost.

    Args:
        path: CSV file; existing rows are loaded (and validated) so a review can be resumed.

    Raises:
        InputError: naming the CSV if it exists but lacks the review columns.
    """

    def __init__(self, path: str | Path):
        import pandas as pd

        self.path = Path(path)
        if self.path.is_file():
            frame = pd.read_csv(self.path, dtype={"image": str, "reviewer": str}, keep_default_na=False)
            missing = [c for c in REVIEW_COLUMNS if c not in frame.columns]
            if missing:
                raise InputError(f"review CSV lacks columns {missing}", self.path)
            for c in REVIEW_CRITERIA:
                frame[c] = frame[c].map(_as_bool)
            self._rows = {str(r["image"]): {c: r[c] for c in REVIEW_COLUMNS} for _, r in frame.iterrows()}
        else:
            self._rows = {}

    def record(self, image: str, reviewer: str = "", **criteria: bool) -> None:
        """Store (or replace) the answers for ``image`` and rewrite the CSV.

        Args:
            image: image id (file stem or synthetic source).
            reviewer: who answered.
            **criteria: one bool per key of :data:`REVIEW_CRITERIA`, all required.

        Raises:
            InputError: for a missing or unknown criterion.
        """
        unknown = sorted(set(criteria) - set(REVIEW_CRITERIA))
        missing = sorted(set(REVIEW_CRITERIA) - set(criteria))
        if unknown or missing:
            raise InputError(
                f"review needs exactly the criteria {list(REVIEW_CRITERIA)}; unknown {unknown}, missing {missing}"
            )
        self._rows[str(image)] = {"image": str(image), **{k: bool(v) for k, v in criteria.items()},
                                  "reviewer": reviewer}
        self.save()

    def get(self, image: str) -> dict | None:
        """The stored answers for ``image`` (``None`` if not reviewed yet)."""
        return self._rows.get(str(image))

    def frame(self):
        """All rows as a :class:`pandas.DataFrame` with :data:`REVIEW_COLUMNS` and a ``success`` column."""
        import pandas as pd

        frame = pd.DataFrame(list(self._rows.values()), columns=list(REVIEW_COLUMNS))
        frame["success"] = frame[list(REVIEW_CRITERIA)].all(axis=1) if len(frame) else pd.Series(dtype=bool)
        return frame

    def save(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frame().drop(columns="success").to_csv(self.path, index=False)
        return self.path

    def __len__(self) -> int:
        return len(self._rows)


def _as_bool(value) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y"):
        return True
    if text in ("false", "0", "no", "n"):
        return False
    raise InputError(f"review answers must be true/false, got {value!r}")


def success_rate(reviews) -> float:
    """Fraction of reviewed images that meet all three criteria (NaN when nothing was reviewed).

    Args:
        reviews: a :class:`ReviewLog`, a CSV path, or a frame with the :data:`REVIEW_CRITERIA` columns.
    """
    if isinstance(reviews, str | Path):
        reviews = ReviewLog(reviews)
    frame = reviews.frame() if isinstance(reviews, ReviewLog) else reviews
    if len(frame) == 0:
        return float("nan")
    return float(frame[list(REVIEW_CRITERIA)].astype(bool).all(axis=1).mean())


def auto_review(result: BoxResult, record: SEMRecord, purity: float = 0.85, iou: float = 0.85) -> dict:
    """Score the three criteria against a synthetic image's ground truth (particle mask and phase map).

    * bounding box: every grid pixel touched by the particle (area fraction > 5 %) lies inside the crop;
    * regions: each cluster's pixels belong mostly to one intensity level (phases whose noise-free levels differ
      by less than 10 % of the brightest are one level; mean cluster purity >= ``purity``);
    * boxes: the boxes' union and the particle (grid pixels at least half covered) overlap with IoU >= ``iou``.

    Returns:
        ``{criterion: bool}`` for :meth:`ReviewLog.record`, plus ``"purity"`` and ``"iou"`` values.

    Raises:
        InputError: naming the record if it has no ground truth (``instances``, ``semantic``,
            ``meta['phase_levels']``).
    """
    from semkit.stem.segment import resize_to_grid

    if record.instances is None or record.semantic is None or "phase_levels" not in record.meta:
        raise InputError("auto review needs a synthetic record with mask, phase map and phase levels",
                         record.source)
    seg = result.segmentation
    grid = seg.resized.shape[0]
    cover = resize_to_grid((record.instances > 0).astype(np.float32), grid)
    empty = {c: False for c in REVIEW_CRITERIA} | {"purity": 0.0, "iou": 0.0}
    if not seg.ok:
        return empty
    r0, c0, r1, c1 = seg.bbox
    inside = np.zeros_like(cover, dtype=bool)
    inside[r0:r1, c0:c1] = True
    bbox_ok = bool(not ((cover > 0.05) & ~inside).any())

    import cv2

    levels = np.asarray(record.meta["phase_levels"], dtype=np.float64)
    # Phases closer than 10 % of the brightest are indistinguishable in HAADF: merge them into one level.
    order = np.argsort(levels)
    level_id = np.zeros(levels.size, dtype=np.int64)
    for a, b in zip(order[:-1], order[1:], strict=True):
        level_id[b] = level_id[a] + (levels[b] - levels[a] >= 0.1 * levels.max())
    phase_grid = cv2.resize(record.semantic, (grid, grid), interpolation=cv2.INTER_NEAREST)
    phase_crop = phase_grid[r0:r1, c0:c1]
    labels = seg.labels
    sel = (labels > 0) & (phase_crop > 0)
    if sel.any():
        lv = level_id[phase_crop[sel].astype(np.int64) - 1]
        cl = labels[sel]
        table = np.zeros((cl.max() + 1, lv.max() + 1), dtype=np.int64)
        np.add.at(table, (cl, lv), 1)
        pur = float(table.max(axis=1).sum() / table.sum())
    else:
        pur = 0.0

    boxes_union = np.zeros((grid, grid), dtype=bool)
    boxes_union[r0:r1, c0:c1] = labels > 0
    truth = cover >= 0.5
    union = (boxes_union | truth).sum()
    overlap = float((boxes_union & truth).sum() / union) if union else 0.0
    return {
        "bbox_encloses_particle": bbox_ok,
        "regions_separated": pur >= purity,
        "boxes_reflect_regions": overlap >= iou,
        "purity": pur,
        "iou": overlap,
    }


def review_gallery(results: Sequence[BoxResult], images: Sequence[np.ndarray], log: ReviewLog,
                   reviewer: str = ""):
    """An ipywidgets gallery: one image at a time with its boxes, three checkboxes, Back / Save & next.

    Answers go to ``log`` (and its CSV) on every save; already reviewed images show their stored answers.
    The success rate is shown under the buttons and updated after each save.

    Args:
        results: boxing results, one per image.
        images: the parent images, in the same order.
        log: where answers are stored.
        reviewer: name written with every answer.

    Returns:
        An ``ipywidgets.VBox`` to display in a notebook.

    Raises:
        InputError: if ``results`` and ``images`` differ in length or are empty.
    """
    import ipywidgets as widgets

    from semkit.plotting.stem import boxes_png

    if len(results) != len(images) or not results:
        raise InputError(f"gallery needs one image per result, got {len(images)} images, {len(results)} results")
    state = {"i": 0}
    picture = widgets.Image(format="png")
    title = widgets.HTML()
    boxes = {k: widgets.Checkbox(value=True, description=q, indent=False,
                                 layout=widgets.Layout(width="auto")) for k, q in REVIEW_CRITERIA.items()}
    back, save = widgets.Button(description="Back"), widgets.Button(description="Save & next",
                                                                    button_style="success")
    status = widgets.HTML()

    def show() -> None:
        i = state["i"]
        res = results[i]
        picture.value = boxes_png(res, images[i])
        title.value = f"<b>{i + 1}/{len(results)}</b> {res.source} — {res.n_boxes} boxes"
        stored = log.get(res.source)
        for k, box in boxes.items():
            box.value = True if stored is None else bool(stored[k])
        rate = success_rate(log)
        status.value = f"reviewed {len(log)}/{len(results)}; success rate " + (
            "–" if np.isnan(rate) else f"{100 * rate:.1f} %")

    def on_save(_) -> None:
        log.record(results[state["i"]].source, reviewer=reviewer, **{k: b.value for k, b in boxes.items()})
        state["i"] = min(state["i"] + 1, len(results) - 1)
        show()

    def on_back(_) -> None:
        state["i"] = max(state["i"] - 1, 0)
        show()

    save.on_click(on_save)
    back.on_click(on_back)
    show()
    return widgets.VBox([title, picture, *boxes.values(), widgets.HBox([back, save]), status])


def auto_review_log(results: Sequence[BoxResult], records: Sequence[SEMRecord], path: str | Path) -> ReviewLog:
    """:func:`auto_review` every result whose record has ground truth and store the answers in a
    :class:`ReviewLog` at ``path`` (reviewer ``"ground truth"``); records without ground truth are skipped."""
    log = ReviewLog(path)
    for result, record in zip(results, records, strict=True):
        if record.instances is None or record.semantic is None or "phase_levels" not in record.meta:
            continue
        review = auto_review(result, record)
        log.record(result.source, reviewer="ground truth", **{k: review[k] for k in REVIEW_CRITERIA})
    return log
