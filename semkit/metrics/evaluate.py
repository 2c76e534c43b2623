"""Evaluate predictions of one or several methods against ground truth: per-image, per-particle and summary tables.

For every image the pairwise overlap is computed once (:func:`~semkit.metrics.pairwise_overlap`) and gives
AJI+, the correct/missed/false-positive counts at IoU ≥ ``iou_threshold`` (0.4, as in the SSL study) with
precision/recall/F1, and panoptic quality at IoU > ``pq_threshold`` (0.5). COCO mask AP is computed over the
whole dataset (pycocotools). Every particle of both sides gets a row with its size descriptors, its partner and
IoU, its status, and (when available) its confidence score and the certainty flag of its ground truth.

Tables (all with a ``method`` column, so several methods stack):

* ``per_image``: ``image, n_gt, n_pred, aji_plus, aji_intersection, aji_union, correct, missed,
  false_positive, precision, recall, f1, pq, sq, rq, pq_tp, pq_fp, pq_fn, pq_iou_sum``;
* ``per_particle``: ``image, side ("gt"/"pred"), id, status ("correct"/"missed"/"false_positive"),
  matched_id, iou, best_iou, score, certain, area_px, ecd_px, feret_min_px, feret_max_px, aspect_ratio``
  (+ ``area_nm2, ecd_nm, feret_min_nm, feret_max_nm`` when a pixel size is known);
* ``summary`` (one row per method): image-averaged and dataset-level AJI+ (``aji_plus_image_averaged`` = mean
  of per-image AJI+, what papers report; ``aji_plus_dataset_level`` = ΣI / ΣU over all images), its std and
  standard error, summed counts with precision/recall/F1 and PQ/SQ/RQ from the summed counts, and AP/AP50/AP75.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from semkit.errors import InputError
from semkit.metrics.coco_ap import coco_mask_ap
from semkit.metrics.instance import Matching, Overlap, aji_plus_counts, match_overlap, pairwise_overlap
from semkit.metrics.instance_set import InstanceSet, as_instance_set
from semkit.metrics.size import add_physical_units, particle_sizes

SIZE_PX_COLUMNS = ["area_px", "ecd_px", "feret_min_px", "feret_max_px", "aspect_ratio"]


@dataclass
class EvaluationSettings:
    """Settings of an evaluation, saved as ``evaluation_settings.json`` next to its tables.

    Attributes:
        iou_threshold: IoU a predicted particle needs to count as correct (≥), for counts and precision/recall.
        pq_threshold: IoU a match needs for panoptic quality (>, Kirillov et al.).
        sizes: compute per-particle size descriptors (the slowest part; off for quick sweeps).
        coco_ap: compute COCO mask AP/AP50/AP75 per method.
        size_unit: physical unit of the size columns when the pixel size is known, ``"nm"`` or ``"um"``.
    """

    iou_threshold: float = 0.4
    pq_threshold: float = 0.5
    sizes: bool = True
    coco_ap: bool = True
    size_unit: str = "nm"

    def __post_init__(self) -> None:
        for name in ("iou_threshold", "pq_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"EvaluationSettings.{name} must lie in [0, 1], got {value}")
        if self.size_unit not in ("nm", "um"):
            raise InputError(f"EvaluationSettings.size_unit must be 'nm' or 'um', got {self.size_unit!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Evaluation:
    """Result of :func:`evaluate` / :func:`evaluate_methods` (tables described in the module docstring)."""

    per_image: pd.DataFrame
    per_particle: pd.DataFrame
    summary: pd.DataFrame
    settings: EvaluationSettings = field(default_factory=EvaluationSettings)

    @property
    def methods(self) -> list[str]:
        return list(self.summary["method"])

    def scalar_results(self) -> dict[str, dict[str, float]]:
        """``{method: {summary column: value}}`` of the numeric summary columns, for ``metrics.json``."""
        numeric = self.summary.set_index("method").select_dtypes("number")
        return {str(m): {k: float(v) for k, v in row.items()} for m, row in numeric.iterrows()}

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write every table as Parquet and CSV plus the settings as JSON.

        Returns:
            ``{"per_image": …parquet, "per_image_csv": …csv, …, "settings": …json}``.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for key in ("per_image", "per_particle", "summary"):
            table = getattr(self, key)
            paths[key] = out / f"{key}.parquet"
            table.to_parquet(paths[key], index=False)
            paths[f"{key}_csv"] = out / f"{key}.csv"
            table.to_csv(paths[f"{key}_csv"], index=False)
        paths["settings"] = out / "evaluation_settings.json"
        paths["settings"].write_text(json.dumps(self.settings.to_dict(), indent=2) + "\n")
        return paths


def evaluate(gt, pred, *, method: str = "prediction", settings: EvaluationSettings | None = None,
             pixel_size_nm: float | None = None) -> Evaluation:
    """Evaluate one prediction set against ground truth.

    Args:
        gt: ground truth: :class:`InstanceSet`, list of :class:`SEMRecord`, mapping name → array, list of
            arrays or a path (see :meth:`InstanceSet.load`).
        pred: predictions in the same form, covering exactly the ground-truth images (matched by name; lists
            are matched by position).
        method: name written to the ``method`` column.
        settings: thresholds and options; ``None`` = defaults.
        pixel_size_nm: pixel size for all images, overriding what the sets carry.

    Returns:
        :class:`Evaluation`.

    Raises:
        InputError: naming the image, for a missing or extra prediction or any bad array.
    """
    return evaluate_methods(gt, {method: pred}, settings=settings, pixel_size_nm=pixel_size_nm)


def evaluate_methods(gt, predictions: Mapping[str, object], *, settings: EvaluationSettings | None = None,
                     pixel_size_nm: float | None = None) -> Evaluation:
    """Evaluate several methods' predictions against the same ground truth (see :func:`evaluate`).

    Ground-truth particle sizes are computed once and repeated for every method, so per-method slices of
    ``per_particle`` are complete on their own.
    """
    settings = EvaluationSettings() if settings is None else settings
    if not predictions:
        raise InputError("no predictions to evaluate")
    gt = as_instance_set(gt, source="ground truth")
    gt_sizes: dict[str, pd.DataFrame] = {}
    images, particles, summaries = [], [], []
    for method, pred in predictions.items():
        pred = as_instance_set(pred, source=str(method))
        pred = _aligned(gt, pred, str(method))
        method_images = []
        for name in gt.names:
            ov = pairwise_overlap(gt.masks[name], pred.masks[name], name=name)
            match = match_overlap(ov, settings.iou_threshold)
            pq = match_overlap(ov, settings.pq_threshold, strict=True)
            method_images.append(_image_row(name, ov, match, pq))
            px = pixel_size_nm if pixel_size_nm is not None else gt.pixel_size_nm.get(
                name, pred.pixel_size_nm.get(name))
            if settings.sizes and name not in gt_sizes:
                gt_sizes[name] = particle_sizes(gt.masks[name], name=name)
            pred_sizes = particle_sizes(pred.masks[name], name=name) if settings.sizes else None
            part = _particle_rows(name, ov, match, gt.masks[name], pred.masks[name], gt.certain.get(name),
                                  pred.scores.get(name), gt_sizes.get(name), pred_sizes)
            part["pixel_size_nm"] = np.nan if px is None else float(px)
            particles.append(part.assign(method=method))
        per_image = pd.DataFrame(method_images).assign(method=method)
        images.append(per_image)
        summary = summarize(per_image)
        if settings.coco_ap:
            ap = coco_mask_ap(gt.masks, pred.masks, pred.scores)
            summary = summary.assign(**ap, ap_scores="given" if pred.scores else "constant")
        summaries.append(summary)
    per_particle = pd.concat(particles, ignore_index=True)
    if settings.sizes and per_particle["pixel_size_nm"].notna().any():
        per_particle = add_physical_units(per_particle, per_particle["pixel_size_nm"].to_numpy(),
                                          settings.size_unit)
    per_image = _method_first(pd.concat(images, ignore_index=True))
    summary = _method_first(pd.concat(summaries, ignore_index=True)).assign(
        iou_threshold=settings.iou_threshold, pq_threshold=settings.pq_threshold)
    return Evaluation(per_image, _method_first(per_particle), summary, settings)


def summarize(per_image: pd.DataFrame, by: str = "method") -> pd.DataFrame:
    """Dataset-level summary from a per-image table (one row per value of ``by``).

    Image-averaged AJI+ is the mean of the per-image values (std with ddof = 1, standard error = std / √n);
    dataset-level AJI+ is ΣI / ΣU (1.0 if the union is 0). Precision/recall/F1 and PQ/SQ/RQ are computed from
    the summed counts (edge cases as in :class:`~semkit.metrics.Matching`).
    """
    if by not in per_image.columns:
        per_image = per_image.assign(**{by: "prediction"})
    rows = []
    for key, t in per_image.groupby(by, sort=False):
        n = len(t)
        inter, union = int(t["aji_intersection"].sum()), int(t["aji_union"].sum())
        std = float(t["aji_plus"].std(ddof=1)) if n > 1 else float("nan")
        tp, n_gt, n_pred = int(t["correct"].sum()), int(t["n_gt"].sum()), int(t["n_pred"].sum())
        totals = Matching(np.zeros(tp), np.zeros(tp), np.zeros(tp), n_gt, n_pred, 0.0)
        pq_tp, pq_fp, pq_fn = (int(t[c].sum()) for c in ("pq_tp", "pq_fp", "pq_fn"))
        pq_m = Matching(np.zeros(pq_tp), np.zeros(pq_tp),
                        np.full(pq_tp, t["pq_iou_sum"].sum() / pq_tp if pq_tp else 0.0),
                        pq_tp + pq_fn, pq_tp + pq_fp, 0.0)
        rows.append({by: key, "n_images": n, "n_gt": n_gt, "n_pred": n_pred,
                     "aji_plus_image_averaged": float(t["aji_plus"].mean()), "aji_plus_std": std,
                     "aji_plus_sem": std / np.sqrt(n) if n > 1 else float("nan"),
                     "aji_plus_dataset_level": 1.0 if union == 0 else inter / union,
                     "correct": tp, "missed": n_gt - tp, "false_positive": n_pred - tp,
                     "precision": totals.precision, "recall": totals.recall, "f1": totals.f1,
                     "pq": pq_m.pq, "sq": pq_m.sq, "rq": pq_m.rq})
    return pd.DataFrame(rows)


def load_evaluation_inputs(ground_truth: str | Path = "", predictions: Mapping[str, str | Path] | None = None, *,
                           n_synthetic: int = 8, seed: int = 0, synthetic_config=None,
                           methods=None) -> tuple[InstanceSet, dict[str, InstanceSet]]:
    """Ground truth and predictions from disk, or simulated ones when no location is given.

    Args:
        ground_truth: folder/file of ground truth (see :meth:`InstanceSet.load`); ``""`` = synthetic images from
            :func:`semkit.data.synthetic.make_sem_dataset` ``(n_synthetic, seed, synthetic_config)``.
        predictions: method name → folder/file; empty = controlled perturbations of the ground truth
            (:func:`semkit.metrics.perturb.simulate_predictions` with ``methods``, default
            :data:`~semkit.metrics.perturb.METHOD_PRESETS`).
        n_synthetic: number of synthetic images.
        seed: seed of the synthetic images and perturbations.
        synthetic_config: :class:`~semkit.data.synthetic.SyntheticConfig`; ``None`` = defaults.
        methods: perturbation presets for simulated predictions.

    Raises:
        InputError: if predictions are given without ground truth, or a path cannot be read.
    """
    from semkit.metrics.perturb import simulate_predictions

    predictions = dict(predictions or {})
    if not ground_truth:
        if predictions:
            raise InputError("predictions given without ground truth: set the ground-truth location too")
        from semkit.data.synthetic import make_sem_dataset

        gt = InstanceSet.from_records(make_sem_dataset(n_synthetic, seed, synthetic_config), source="synthetic")
    else:
        gt = InstanceSet.load(ground_truth)
    if not predictions:
        return gt, simulate_predictions(gt, methods, seed=seed)
    return gt, {str(m): InstanceSet.load(p, reference=gt) for m, p in predictions.items()}


STUDY_COLUMNS = ("pretraining", "backbone", "backbone_params_m", "pretrain_images", "aji_plus")


def load_or_simulate_study(results_table: str | Path = "", gt=None, *, n_seeds: int = 2, seed: int = 0,
                           **simulate_kwargs) -> pd.DataFrame:
    """A results table of several runs: read from CSV/Parquet, or simulated on ``gt`` when no path is given.

    Args:
        results_table: CSV or Parquet with at least the columns of :data:`STUDY_COLUMNS` (one row per run, or per
            run and image); ``""`` = :func:`semkit.metrics.perturb.simulate_study` on ``gt``.
        gt: ground truth for the simulation (ignored when reading a table).
        n_seeds, seed, simulate_kwargs: passed to :func:`~semkit.metrics.perturb.simulate_study`.

    Raises:
        InputError: naming the file, if it cannot be read or lacks a required column.
    """
    from semkit.metrics.perturb import simulate_study

    if not results_table:
        if gt is None:
            raise InputError("simulating a study needs ground truth")
        return simulate_study(gt, n_seeds=n_seeds, seed=seed, **simulate_kwargs)
    path = Path(results_table)
    if not path.is_file():
        raise InputError("results table does not exist", path)
    try:
        table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many error types for malformed files
        raise InputError(f"cannot read results table ({type(exc).__name__}: {exc})", path) from exc
    missing = [c for c in STUDY_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"results table lacks columns {missing}; required: {', '.join(STUDY_COLUMNS)}", path)
    return table


def evaluate_paths(ground_truth: str | Path, predictions: Mapping[str, str | Path], out_dir: str | Path,
                   settings: EvaluationSettings | None = None) -> Evaluation:
    """Read ground truth and predictions from disk, evaluate, and save the tables under ``out_dir``."""
    if not predictions:
        raise InputError("no prediction location given")
    gt, preds = load_evaluation_inputs(ground_truth, predictions)
    result = evaluate_methods(gt, preds, settings=settings)
    result.save(out_dir)
    return result


# --------------------------------------------------------------------------------------------------------------
# internals


def _aligned(gt: InstanceSet, pred: InstanceSet, method: str) -> InstanceSet:
    """Predictions keyed like the ground truth; lists (image_0000…) on both sides pair by position."""
    positional = [f"image_{i:04d}" for i in range(len(pred))]
    if pred.names == positional and gt.names != positional and len(pred) == len(gt):
        rename = dict(zip(positional, gt.names, strict=True))
        pred = InstanceSet({rename[k]: v for k, v in pred.masks.items()},
                           scores={rename[k]: v for k, v in pred.scores.items()},
                           pixel_size_nm={rename[k]: v for k, v in pred.pixel_size_nm.items()}, source=pred.source)
    missing = [n for n in gt.names if n not in pred.masks]
    extra = [n for n in pred.names if n not in gt.masks]
    if missing:
        raise InputError(f"method {method!r} has no prediction for this image ({len(missing)} missing in total)",
                         missing[0])
    if extra:
        raise InputError(f"method {method!r} predicts an image without ground truth ({len(extra)} in total)",
                         extra[0])
    return pred


def _image_row(name: str, ov: Overlap, match: Matching, pq: Matching) -> dict:
    inter, union = aji_plus_counts(ov)
    return {"image": name, "n_gt": ov.n_gt, "n_pred": ov.n_pred,
            "aji_plus": 1.0 if union == 0 else inter / union, "aji_intersection": inter, "aji_union": union,
            "correct": match.correct, "missed": match.missed, "false_positive": match.false_positive,
            "precision": match.precision, "recall": match.recall, "f1": match.f1,
            "pq": pq.pq, "sq": pq.sq, "rq": pq.rq, "pq_tp": pq.correct, "pq_fp": pq.false_positive,
            "pq_fn": pq.missed, "pq_iou_sum": float(pq.iou.sum())}


def _slot(ids: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Index into per-instance vectors: label − 1 for label maps, stack index for stacks."""
    return ids if instances.ndim == 3 else ids - 1


def _particle_rows(name: str, ov: Overlap, match: Matching, gt: np.ndarray, pred: np.ndarray,
                   certain: np.ndarray | None, scores: np.ndarray | None, gt_sizes: pd.DataFrame | None,
                   pred_sizes: pd.DataFrame | None) -> pd.DataFrame:
    iou = ov.iou
    g_partner = np.full(ov.n_gt, -1, dtype=np.int64)
    p_partner = np.full(ov.n_pred, -1, dtype=np.int64)
    g_partner[match.gt_index] = match.pred_index
    p_partner[match.pred_index] = match.gt_index
    g_iou = np.full(ov.n_gt, np.nan)
    p_iou = np.full(ov.n_pred, np.nan)
    g_iou[match.gt_index] = p_iou[match.pred_index] = match.iou
    g_cert = pd.array([pd.NA] * ov.n_gt, dtype="boolean")
    if certain is not None and ov.n_gt:
        g_cert = pd.array(certain[_slot(ov.gt_ids, gt)], dtype="boolean")
    p_cert = pd.array([pd.NA] * ov.n_pred, dtype="boolean")
    matched = p_partner >= 0
    if certain is not None and matched.any():
        p_cert[matched] = g_cert[p_partner[matched]]
    p_score = np.full(ov.n_pred, np.nan)
    if scores is not None and ov.n_pred:
        p_score = scores[_slot(ov.pred_ids, pred)]
    gt_rows = pd.DataFrame({
        "image": name, "side": "gt", "id": ov.gt_ids,
        "status": np.where(g_partner >= 0, "correct", "missed"),
        "matched_id": pd.array(np.where(g_partner >= 0, ov.pred_ids[np.maximum(g_partner, 0)] if ov.n_pred else -1,
                                        -1), dtype="Int64"),
        "iou": g_iou, "best_iou": iou.max(axis=1) if ov.n_pred else np.zeros(ov.n_gt),
        "score": np.nan, "certain": g_cert})
    pred_rows = pd.DataFrame({
        "image": name, "side": "pred", "id": ov.pred_ids,
        "status": np.where(matched, "correct", "false_positive"),
        "matched_id": pd.array(np.where(matched, ov.gt_ids[np.maximum(p_partner, 0)] if ov.n_gt else -1, -1),
                               dtype="Int64"),
        "iou": p_iou, "best_iou": iou.max(axis=0) if ov.n_gt else np.zeros(ov.n_pred),
        "score": p_score, "certain": p_cert})
    gt_rows["matched_id"] = gt_rows["matched_id"].mask(gt_rows["matched_id"] < 0)
    pred_rows["matched_id"] = pred_rows["matched_id"].mask(pred_rows["matched_id"] < 0)
    if gt_sizes is not None:
        gt_rows = gt_rows.merge(gt_sizes, on="id", how="left")
        pred_rows = pred_rows.merge(pred_sizes, on="id", how="left")
    return pd.concat([gt_rows, pred_rows], ignore_index=True)


def _method_first(table: pd.DataFrame) -> pd.DataFrame:
    return table[["method"] + [c for c in table.columns if c != "method"]]
