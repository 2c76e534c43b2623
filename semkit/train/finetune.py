"""Fine-tuning entry point: train, pick thresholds on validation, evaluate on test, write everything down.

One :class:`FinetuneConfig` describes a run (dataset, approach, backbone, initialisation, magnification bucket,
epochs, crops, batch size, learning rate, seeds, hardware) and :func:`finetune` carries it out:

1. load the data and its fixed split (:func:`load_splits`): the synthetic generator, the BAM TiO2 layout
   (:func:`semkit.train.data.bam_split`, databar cropped, certainty from the measurable masks) or a semkit
   instance folder; optionally keep one magnification bucket;
2. for each of ``repeats`` seeds (``seed``, ``seed + 1``, ...): train with Lightning (:func:`make_trainer`:
   early stopping and checkpointing on validation AJI+), reload the best epoch, grid-search the
   post-processing thresholds on the validation split (:mod:`semkit.train.thresholds`), predict the test
   images and evaluate them with :mod:`semkit.metrics` (AJI+, correct/missed/false-positive counts at IoU 0.4,
   PQ, COCO mask AP); with the uncertainty head also the AUROC of the confidence for certain vs uncertain
   ground truth and the confidence-vs-IoU check (Spearman correlation of each predicted particle's confidence
   with its IoU; the same numbers for the objectness as a reference);
3. write, per repeat, the model folder (:func:`semkit.models.io.save_model`; Mask R-CNN), Lightning's
   checkpoint and ``logs/metrics.csv`` curves, the thresholds, the predicted label maps / particle tables / overlays
   and the evaluation tables, and, for the run, ``results.json`` (per repeat, mean and std over repeats) with
   ``finetune_config.json`` next to it.

Approaches: ``"maskrcnn"`` (with or without the uncertainty head), ``"unet"`` (distance-map U-Net) and
``"classical"`` (no training; its parameters are tuned on validation like the thresholds of the others).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from semkit.config import JsonConfig
from semkit.data.records import SEMRecord
from semkit.errors import InputError
from semkit.train.data import DataConfig, SEMDataModule, bam_split, check_records, select_bucket
from semkit.train.trainer import TrainerConfig, make_trainer, read_history

MODELS = ("maskrcnn", "unet", "classical")
CONFIG_FILE = "finetune_config.json"
RESULTS_FILE = "results.json"
#: Scalar test metrics collected per repeat (and averaged over repeats).
TEST_METRICS = ("aji_plus", "aji_plus_dataset_level", "correct", "missed", "false_positive", "precision",
                "recall", "f1", "pq", "sq", "rq", "ap", "ap50", "ap75", "n_gt", "n_pred",
                "confidence_auroc_certain", "confidence_auroc_correct", "confidence_iou_spearman",
                "confidence_best_iou_spearman", "objectness_auroc_correct", "objectness_best_iou_spearman",
                "mean_confidence_certain", "mean_confidence_uncertain")

#: Mask R-CNN settings for quick CPU runs (tests, notebooks in quick mode): fewer proposals, 16 sampled RoIs per
#: image (the mask head's cost grows with the sampled positives), a 64-channel pyramid (the box head's first
#: layer shrinks from 12.8 M to 3.2 M weights) and at most 100 detections per image: about 4x cheaper per step.
QUICK_MASKRCNN = {"detections_per_img": 100, "rpn_pre_nms_top_n_train": 500, "rpn_post_nms_top_n_train": 300,
                  "rpn_pre_nms_top_n_test": 500, "rpn_post_nms_top_n_test": 300, "box_batch_size_per_image": 16,
                  "fpn_channels": 64}


@dataclass
class FinetuneConfig(JsonConfig):
    """Settings of one fine-tuning experiment (saved as ``finetune_config.json`` next to its results).

    Attributes:
        dataset: ``"synthetic"``, or a folder: the BAM layout (``images/``, ``instances/``, ``measurable/``)
            or a semkit instance folder (``images/``, ``labels/``, optional ``certainty/``).
        synthetic_images: images drawn for ``dataset="synthetic"`` (split 60/20/20 by index).
        synthetic_size: side of the synthetic images in pixels.
        model: ``"maskrcnn"``, ``"unet"`` or ``"classical"``.
        backbone: encoder name (:data:`semkit.models.BACKBONES`; for the U-Net its ``tu-`` counterpart).
        uncertainty: Mask R-CNN with the per-particle confidence head.
        init: ``"random"``, ``"imagenet"`` or a semkit encoder checkpoint path.
        imagenet_file: local ImageNet weights for ``init="imagenet"`` on offline machines.
        magnification_bucket: train and evaluate on one bucket (``"low"``/``"high"``); ``None`` = all images.
        epochs: maximum training epochs.
        crop_size: side of the random training windows (``None`` = whole images).
        crops_per_image: random windows per training image and epoch.
        batch_size: training batch size.
        lr: AdamW learning rate; ``None`` = 1e-4 for Mask R-CNN, 1e-3 for the U-Net.
        weight_decay: AdamW weight decay.
        seed: seed of the first repeat; repeat ``r`` uses ``seed + r``.
        repeats: independent trainings with different seeds (the classical pipeline is deterministic and
            runs once).
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``).
        devices: Lightning devices (several GPUs → DDP with ``strategy="auto"``).
        strategy: Lightning strategy.
        precision: Lightning precision.
        output_dir: run folder.
        patience: early-stopping patience in epochs on validation AJI+ (``None`` = off).
        max_time: wall-clock limit per training, ``"DD:HH:MM:SS"``.
        min_area_px: BAM only: drop label fragments smaller than this (the 1-px pieces between separating
            lines).
        threshold_grid: ``"default"``, ``"quick"`` or ``"none"`` (keep the :class:`CombineThresholds`
            defaults / default watershed and classical parameters).
        maskrcnn: overrides of :class:`semkit.models.MaskRCNNConfig` fields (e.g. ``detections_per_img``).
        augment: overrides of :class:`semkit.train.data.DataConfig` fields (e.g. ``{"blur_p": 0}``).
        num_workers: DataLoader workers.
        limit_train_batches: Lightning's batches-per-epoch limit (``None`` = all).
        enable_progress_bar: Lightning progress bars.
        save_predictions: write label maps, particle tables and overlay PNGs of the test images.
        num_threads: torch CPU threads during the run (restored afterwards); ``None`` keeps torch's setting.
            On a CPU shared with other jobs, 1 thread can be several times faster than oversubscribed cores.
    """

    dataset: str = "synthetic"
    synthetic_images: int = 10
    synthetic_size: int = 128
    model: str = "maskrcnn"
    backbone: str = "convnextv2_atto"
    uncertainty: bool = True
    init: str = "random"
    imagenet_file: str | None = None
    magnification_bucket: str | None = None
    epochs: int = 20
    crop_size: int | None = 256
    crops_per_image: int = 4
    batch_size: int = 2
    lr: float | None = None
    weight_decay: float = 1e-4
    seed: int = 0
    repeats: int = 1
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    output_dir: str = "runs/finetune"
    patience: int | None = 10
    max_time: str | None = None
    min_area_px: int = 10
    threshold_grid: str = "default"
    maskrcnn: dict = field(default_factory=dict)
    augment: dict = field(default_factory=dict)
    num_workers: int = 0
    limit_train_batches: int | float | None = None
    enable_progress_bar: bool = True
    save_predictions: bool = True
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise KeyError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        if self.threshold_grid not in ("default", "quick", "none"):
            raise KeyError(f"unknown threshold_grid {self.threshold_grid!r}; choose default, quick or none")
        if self.repeats < 1 or self.epochs < 1:
            raise ValueError("repeats and epochs must be positive")
        self.init = str(self.init)

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 1e-3 if self.model == "unet" else 1e-4



# --------------------------------------------------------------------------------------------------------------
# data


def synthetic_config(size: int):
    """Synthetic-generator settings scaled to ``size`` × ``size`` images (particle sizes and counts)."""
    from semkit.data.synthetic import SyntheticConfig

    area = size * size
    radius_hi = float(min(28.0, max(6.0, size / 10)))
    return SyntheticConfig(height=size, width=size, radius_px=(4.0, radius_hi),
                           n_particles=(max(2, area // 2500), max(3, area // 1000)))


def load_splits(config: FinetuneConfig) -> dict[str, list[SEMRecord]]:
    """Train/val/test records of ``config.dataset`` (magnification-bucket filter applied).

    * ``"synthetic"``: ``synthetic_images`` images of ``synthetic_size`` px drawn with data seed 0 (the
      same for every training seed), the first 60 % for training, the next 20 % validation, the rest test;
    * a BAM-layout folder: :func:`semkit.train.data.bam_split` (fixed 20/5/5 hash split);
    * a semkit instance folder: a deterministic 65/15/20 hash split of the file stems
      (:func:`semkit.data.curation.split_labeled`, seed 0).

    Raises:
        InputError: unknown folder layout, a split left empty, or no image in the requested bucket.
    """
    if config.dataset == "synthetic":
        from semkit.data.curation import split_counts
        from semkit.data.synthetic import make_sem_dataset

        records = make_sem_dataset(config.synthetic_images, seed=0, config=synthetic_config(config.synthetic_size))
        n_train, n_val, _ = split_counts(len(records), (0.6, 0.2, 0.2))
        splits = {"train": records[:n_train], "val": records[n_train:n_train + n_val],
                  "test": records[n_train + n_val:]}
    else:
        root = Path(config.dataset)
        if not root.is_dir():
            raise InputError("dataset folder not found (or pass dataset='synthetic')", root)
        if all((root / sub).is_dir() for sub in ("images", "instances", "measurable")):
            splits = bam_split(root, min_area_px=config.min_area_px)
        elif (root / "images").is_dir() and (root / "labels").is_dir():
            from semkit.data.curation import split_labeled
            from semkit.data.instance_folder import read_instance_folder

            records = read_instance_folder(root)
            table = split_labeled([r.name for r in records], stratify=None)
            split_of = dict(zip(table["name"], table["split"], strict=True))
            splits = {s: [r for r in records if split_of[r.name] == s] for s in ("train", "val", "test")}
        else:
            raise InputError("unknown dataset layout: expected images/ + instances/ + measurable/ (BAM) or "
                             "images/ + labels/ (semkit instance folder)", root)
    out = {}
    for name, records in splits.items():
        records = select_bucket(records, config.magnification_bucket)
        if not records:
            raise InputError(f"the {name} split is empty", config.dataset)
        for r in records:
            r.split = name
        out[name] = check_records(records, name)
    return out


# --------------------------------------------------------------------------------------------------------------
# approaches: train -> (predict function, thresholds, info)


def _data_config(config: FinetuneConfig) -> DataConfig:
    return DataConfig(**{"crop_size": config.crop_size, "crops_per_image": config.crops_per_image,
                         "batch_size": config.batch_size, "num_workers": config.num_workers, **config.augment})


def _trainer_config(config: FinetuneConfig, seed: int, run_dir: Path) -> TrainerConfig:
    return TrainerConfig(max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices,
                         strategy=config.strategy, precision=config.precision, output_dir=str(run_dir), seed=seed,
                         monitor="val/aji_plus", mode="max", patience=config.patience, max_time=config.max_time,
                         limit_train_batches=config.limit_train_batches, log_every_n_steps=1,
                         enable_progress_bar=config.enable_progress_bar, num_sanity_val_steps=0)


def _fit(module, datamodule, config: FinetuneConfig, seed: int, run_dir: Path) -> dict:
    trainer = make_trainer(_trainer_config(config, seed, run_dir))
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    train_s = time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    # evaluate where training ran if that was a GPU, else on the CPU
    device = "cuda" if torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda") else "cpu"
    module.to(device).eval()
    score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    history = read_history(run_dir)
    best_epoch = None
    if score is not None and "val/aji_plus" in history:
        best_epoch = int(history["val/aji_plus"].idxmax())
    return {"train_seconds": train_s, "epochs_trained": int(trainer.current_epoch), "checkpoint": best,
            "global_rank": int(trainer.global_rank),
            "best_val_aji_plus": None if score is None else float(score), "best_epoch": best_epoch}


def _run_maskrcnn(config: FinetuneConfig, splits, seed: int, run_dir: Path):
    from semkit.models.io import save_model
    from semkit.models.maskrcnn import MaskRCNNConfig
    from semkit.models.postprocess import CombineThresholds, combine_detections
    from semkit.train.maskrcnn_module import MaskRCNNModule, check_certainty
    from semkit.train.thresholds import predict_detections, search_thresholds

    model_cfg = MaskRCNNConfig(**{"backbone": config.backbone, "init": config.init,
                                  "imagenet_file": config.imagenet_file, "uncertainty": config.uncertainty,
                                  **config.maskrcnn})
    if model_cfg.uncertainty:
        check_certainty(splits["train"])
    module = MaskRCNNModule(model_cfg, lr=config.learning_rate, weight_decay=config.weight_decay)
    dm = SEMDataModule(splits["train"], splits["val"], config=_data_config(config), target_kind="maskrcnn")
    info = _fit(module, dm, config, seed, run_dir)
    if info["global_rank"] != 0:
        return None, info
    model = module.model
    thresholds = CombineThresholds()
    if config.threshold_grid != "none":
        val_det = predict_detections(model, [r.image for r in splits["val"]])
        thresholds, table = search_thresholds(val_det, [r.instances for r in splits["val"]],
                                              config.threshold_grid, progress=config.enable_progress_bar)
        table.to_csv(run_dir / "threshold_search.csv", index=False)
        info["val_aji_plus_tuned"] = float(table["score"].max())
    info["thresholds"] = thresholds.to_dict()
    info["model_dir"] = str(save_model(model, run_dir / "model", thresholds,
                                       extra={"finetune": config.to_dict(), "seed": seed, **_plain(info)}))

    def predict(records):
        out = []
        for rec, det in zip(records, predict_detections(model, [r.image for r in records]), strict=True):
            out.append(combine_detections(det, rec.image.shape, thresholds))
        return out

    return predict, info


def _run_unet(config: FinetuneConfig, splits, seed: int, run_dir: Path):
    from semkit.models.io import save_model
    from semkit.models.unet import UNetPostprocess, instances_from_prediction
    from semkit.train.thresholds import search_unet_thresholds
    from semkit.train.unet_module import UNetModule

    module = UNetModule(config.backbone, init=config.init, imagenet_file=config.imagenet_file,
                        lr=config.learning_rate, weight_decay=config.weight_decay)
    dm = SEMDataModule(splits["train"], splits["val"], config=_data_config(config), target_kind="unet")
    info = _fit(module, dm, config, seed, run_dir)
    if info["global_rank"] != 0:
        return None, info
    params = module.postprocess_params()
    if config.threshold_grid != "none":
        val_logits = module.predict_logits([torch.from_numpy(r.image)[None] for r in splits["val"]])
        params, table = search_unet_thresholds(val_logits, [r.instances for r in splits["val"]],
                                               min_area=params["min_area"], progress=config.enable_progress_bar)
        table.to_csv(run_dir / "threshold_search.csv", index=False)
        info["val_aji_plus_tuned"] = float(table["score"].max())
    info["thresholds"] = params
    info["model_dir"] = str(save_model(module.model, run_dir / "model", UNetPostprocess(**params),
                                       extra={"finetune": config.to_dict(), "seed": seed, **_plain(info)}))

    def predict(records):
        logits = module.predict_logits([torch.from_numpy(r.image)[None] for r in records])
        return [(labels, _plain_table(labels)) for labels in (instances_from_prediction(lg, **params)
                                                               for lg in logits)]

    return predict, info


def _run_classical(config: FinetuneConfig, splits, seed: int, run_dir: Path):
    from semkit.models.classical import segment_classical
    from semkit.train.thresholds import search_classical

    info: dict[str, Any] = {"train_seconds": 0.0, "epochs_trained": 0, "global_rank": 0}
    params: dict = {}
    if config.threshold_grid != "none":
        params, table = search_classical([r.image for r in splits["val"]], [r.instances for r in splits["val"]],
                                         progress=config.enable_progress_bar)
        table.to_csv(run_dir / "threshold_search.csv", index=False)
        info["val_aji_plus_tuned"] = float(table["score"].max())
    info["thresholds"] = params
    (run_dir / "thresholds.json").write_text(json.dumps(params, indent=2))

    def predict(records):
        return [(labels, _plain_table(labels)) for labels in
                (segment_classical(r.image, source=r.source or None, **params) for r in records)]

    return predict, info


RUNNERS = {"maskrcnn": _run_maskrcnn, "unet": _run_unet, "classical": _run_classical}


def _plain_table(labels: np.ndarray) -> pd.DataFrame:
    """Particle table of a method without scores (U-Net, classical): ids and areas only."""
    from semkit.models.postprocess import TABLE_COLUMNS

    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    return pd.DataFrame({"id": ids.astype(np.int32), "detection": np.arange(len(ids)), "objectness": np.nan,
                         "confidence": np.nan, "certain": True, "area_px": areas.astype(np.int64)})[TABLE_COLUMNS]


# --------------------------------------------------------------------------------------------------------------
# evaluation


def evaluate_predictions(records: list[SEMRecord], predictions: list[tuple[np.ndarray, pd.DataFrame]],
                         method: str = "prediction") -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """Test metrics of predicted label maps + particle tables against the records' ground truth.

    Args:
        records: labelled test records.
        predictions: per record, ``(label map, particle table)`` as returned by
            :func:`semkit.models.combine_detections` (labels 1..P; table rows with ``id``, ``objectness``,
            ``confidence``, ``certain``).
        method: name in the tables.

    Returns:
        ``(metrics, per_image, particles)``. ``metrics`` holds the :data:`TEST_METRICS` (AJI+ image-averaged
        as ``aji_plus``; AP ranked by objectness when available; confidence figures NaN without confidences).
        ``particles`` has one row per predicted particle: ``image, id, objectness, confidence, certain_pred,
        status, iou, best_iou, certain`` (``certain`` = flag of the matched ground truth, NA if unmatched).
    """
    from scipy.stats import spearmanr

    from semkit.metrics import EvaluationSettings, InstanceSet, confidence_auroc, evaluate

    gt = InstanceSet.from_records(records)
    masks, scores = {}, {}
    for name, (labels, table) in zip(gt.names, predictions, strict=True):
        masks[name] = labels
        obj = _by_id(table, "objectness", int(labels.max(initial=0)))
        if np.isfinite(obj).all() and len(obj):
            scores[name] = np.clip(obj, 0.0, 1.0)
    pred = InstanceSet(masks, scores=scores, source=method)
    ev = evaluate(gt, pred, method=method, settings=EvaluationSettings(sizes=False, coco_ap=True))
    summary = ev.summary.iloc[0]
    metrics: dict[str, float] = {"aji_plus": float(summary["aji_plus_image_averaged"])}
    for key in TEST_METRICS:
        if key in summary.index and key != "aji_plus":
            metrics[key] = float(summary[key])

    rows = ev.per_particle[ev.per_particle["side"] == "pred"][["image", "id", "status", "iou", "best_iou", "certain"]]
    tables = []
    for name, (_, table) in zip(gt.names, predictions, strict=True):
        t = table[["id", "objectness", "confidence", "certain"]].rename(columns={"certain": "certain_pred"})
        tables.append(t.assign(image=name))
    own = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["image", "id"])
    particles = rows.merge(own.astype({"id": "int64"}), on=["image", "id"], how="left")

    conf = particles["confidence"].to_numpy(dtype=float)
    obj = particles["objectness"].to_numpy(dtype=float)
    correct = (particles["status"] == "correct").to_numpy()
    best_iou = particles["best_iou"].to_numpy(dtype=float)
    flagged = particles["certain"].notna().to_numpy()

    def auroc(values, outcome):
        ok = np.isfinite(values)
        return confidence_auroc(np.clip(values[ok], 0, 1), outcome[ok]) if ok.sum() > 1 else math.nan

    def spearman(a, b):
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
            return math.nan
        return float(spearmanr(a[ok], b[ok]).statistic)

    flags = particles["certain"].to_numpy()
    metrics["confidence_auroc_certain"] = auroc(conf[flagged], flags[flagged].astype(bool))
    metrics["confidence_auroc_correct"] = auroc(conf, correct)
    metrics["confidence_iou_spearman"] = spearman(conf[correct], particles["iou"].to_numpy(dtype=float)[correct])
    metrics["confidence_best_iou_spearman"] = spearman(conf, best_iou)
    metrics["objectness_auroc_correct"] = auroc(obj, correct)
    metrics["objectness_best_iou_spearman"] = spearman(obj, best_iou)
    fl_conf = conf[flagged]
    fl_cert = flags[flagged].astype(bool)
    metrics["mean_confidence_certain"] = float(np.nanmean(fl_conf[fl_cert])) if np.isfinite(fl_conf[fl_cert]).any() else math.nan
    metrics["mean_confidence_uncertain"] = (float(np.nanmean(fl_conf[~fl_cert]))
                                            if np.isfinite(fl_conf[~fl_cert]).any() else math.nan)
    return metrics, ev.per_image, particles


def _by_id(table: pd.DataFrame, column: str, n: int) -> np.ndarray:
    values = np.full(n, np.nan)
    if len(table):
        values[table["id"].to_numpy(dtype=np.int64) - 1] = table[column].to_numpy(dtype=float)
    return values


# --------------------------------------------------------------------------------------------------------------
# the entry point


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Train ``config.repeats`` models, tune thresholds on validation, evaluate on test; write all results.

    Returns:
        JSON-ready dict (also written to ``<output_dir>/results.json``): ``config``; ``splits`` (image names);
        ``repeats`` -- per seed: ``seed``, ``run_dir``, training info (``train_seconds``, ``epochs_trained``,
        ``best_epoch``, ``best_val_aji_plus``, ``checkpoint``, ``model_dir``), ``thresholds``,
        ``val_aji_plus_tuned`` and ``test`` (the :data:`TEST_METRICS`); ``test`` / ``test_std``: mean and
        standard deviation over the repeats done; ``repeats_done`` / ``repeats_planned``; ``wall_seconds``.
        ``results.json`` is rewritten after every repeat, so an interrupted run keeps its finished seeds.

    Raises:
        InputError: bad data (see :func:`load_splits`), missing certainty flags for the uncertainty head.
        KeyError: unknown model / backbone names (listing the valid ones).
        semkit.models.WeightsUnavailableError: ImageNet weights requested offline without a local file.
    """
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        return _finetune(config)
    finally:
        torch.set_num_threads(threads)


def _finetune(config: FinetuneConfig) -> dict[str, Any]:
    start = time.perf_counter()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / CONFIG_FILE)
    splits = load_splits(config)
    repeats = 1 if config.model == "classical" else config.repeats
    method = _method_name(config)
    results: dict[str, Any] = {"config": config.to_dict(), "method": method,
                               "splits": {k: [r.name for r in v] for k, v in splits.items()}, "repeats": []}
    for r in range(repeats):
        seed = config.seed + r
        run_dir = out / f"seed_{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / CONFIG_FILE)
        torch.manual_seed(seed)
        predict, info = RUNNERS[config.model](config, splits, seed, run_dir)
        if predict is None:
            # a non-zero DDP rank (strategy "ddp" re-runs the calling script per GPU): rank 0 does the rest
            return {"global_rank": info["global_rank"]}
        t0 = time.perf_counter()
        predictions = predict(splits["test"])
        info["test_predict_seconds"] = time.perf_counter() - t0
        metrics, per_image, particles = evaluate_predictions(splits["test"], predictions, method)
        per_image.to_csv(run_dir / "test_per_image.csv", index=False)
        particles.to_csv(run_dir / "test_particles.csv", index=False)
        if config.save_predictions:
            write_predictions(run_dir / "predictions", splits["test"], predictions)
        results["repeats"].append({"seed": seed, "run_dir": str(run_dir), **_plain(info), "test": metrics})
        # written after every seed, so an interrupted multi-seed run keeps the seeds it finished
        _summarise(results, repeats, time.perf_counter() - start)
        (out / RESULTS_FILE).write_text(json.dumps(_plain(results), indent=2))
    return _plain(results)


def _summarise(results: dict[str, Any], planned: int, seconds: float) -> None:
    frame = pd.DataFrame([rep["test"] for rep in results["repeats"]])
    results["test"] = {k: float(frame[k].mean()) for k in frame}
    results["test_std"] = {k: float(frame[k].std(ddof=1)) if len(frame) > 1 else math.nan for k in frame}
    results["repeats_done"], results["repeats_planned"] = len(frame), planned
    results["wall_seconds"] = seconds


def write_predictions(folder: str | Path, records: list[SEMRecord],
                      predictions: list[tuple[np.ndarray, pd.DataFrame]]) -> Path:
    """Write ``NAME_labels.tif`` (instance labels), ``NAME_particles.csv`` and ``NAME_overlay.png`` per image.

    The overlay draws certain particles green and uncertain ones red
    (:func:`semkit.inference.outputs.overlay_image`, as ``semkit predict`` does).
    """
    from PIL import Image

    from semkit.data.io import save_labels
    from semkit.inference.outputs import overlay_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (rec, (labels, table)) in enumerate(zip(records, predictions, strict=True)):
        name = rec.name or f"image_{i:04d}"
        save_labels(folder / f"{name}_labels.tif", labels)
        table.to_csv(folder / f"{name}_particles.csv", index=False)
        certain_ids = table.loc[table["certain"].astype(bool), "id"].to_numpy()
        Image.fromarray(overlay_image(rec.image, labels, certain_ids)).save(folder / f"{name}_overlay.png")
    return folder


def read_predictions(folder: str | Path, names: list[str]) -> list[tuple[np.ndarray, pd.DataFrame]]:
    """Read back what :func:`write_predictions` wrote for ``names`` (label maps and particle tables)."""
    from semkit.data.io import load_labels

    folder = Path(folder)
    return [(load_labels(folder / f"{n}_labels.tif").astype(np.int32), pd.read_csv(folder / f"{n}_particles.csv"))
            for n in names]


def _method_name(config: FinetuneConfig) -> str:
    if config.model == "classical":
        return "classical"
    if config.model == "unet":
        return f"unet_{config.backbone}"
    return f"maskrcnn_{config.backbone}" + ("_uncertainty" if config.uncertainty else "")


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars → Python, NaN/inf → None, paths → str."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
