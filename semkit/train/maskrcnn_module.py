"""Lightning module that fine-tunes the uncertainty-aware particle Mask R-CNN.

Training minimises the sum of torchvision's Mask R-CNN losses (RPN objectness and box regression, box
classification and regression, mask) plus, when the model has the uncertainty head, the distance-weighted
bin cross-entropy of :mod:`semkit.models.uncertainty` whose targets come from the ``certain`` flags of the
matched ground-truth particles. Optimiser: AdamW (learning rate 1e-4 by default, as in the uncertainty-aware
Mask R-CNN study), with the budgeted warmup + cosine schedule of :mod:`semkit.train.recipe` when one is given.

Validation runs the model on whole images, combines the detections into one label map with
:func:`semkit.models.combine_detections` and computes the image-averaged AJI+ (:func:`semkit.metrics.aji_plus`)
for each of a few objectness thresholds (``val_score_thresholds``); ``val/aji_plus`` is the best of them -- the
value early stopping and checkpointing monitor (:class:`semkit.train.TrainerConfig`
``monitor="val/aji_plus", mode="max"``). Why several: early in training from random initialisation every
objectness is below the usual 0.5, so a single fixed threshold reads 0 for several epochs and early stopping
would end the run before the detector has been given a chance; the final thresholds are chosen afterwards by
the full grid search of :mod:`semkit.train.thresholds`.

Reference: He et al., "Mask R-CNN", ICCV 2017; Rettenberger et al., "Uncertainty-aware particle segmentation
for electron microscopy at varied length scales", npj Comput. Mater. 10, 124 (2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import lightning as L
import torch
from torch import nn
from torchmetrics.aggregation import MeanMetric

from semkit.data.records import SEMRecord
from semkit.errors import InputError
from semkit.metrics import aji_plus
from semkit.models.maskrcnn import MaskRCNNConfig, build_maskrcnn
from semkit.models.postprocess import CombineThresholds, combine_detections
from semkit.train.recipe import configure_optimizers

#: Target keys torchvision's Mask R-CNN (and the uncertainty head) read.
MODEL_TARGET_KEYS = ("boxes", "labels", "masks")


def model_config_from(value: MaskRCNNConfig | dict | None) -> MaskRCNNConfig:
    """A :class:`MaskRCNNConfig` from a config, a (JSON/YAML) dict with lists for tuples, or ``None``."""
    if isinstance(value, MaskRCNNConfig):
        return value
    values = dict(value or {})
    for key in ("anchor_sizes",):
        if key in values and values[key] is not None:
            values[key] = tuple(tuple(level) for level in values[key])
    for key in ("aspect_ratios", "image_mean", "image_std", "bin_weights"):
        if key in values and values[key] is not None:
            values[key] = tuple(values[key])
    return MaskRCNNConfig(**values)


class MaskRCNNModule(L.LightningModule):
    """Fine-tunes :func:`semkit.models.build_maskrcnn` with AdamW; validates with AJI+.

    Args:
        model_config: :class:`MaskRCNNConfig` (or its dict).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        thresholds: :class:`CombineThresholds` used to combine detections during validation (their two
            objectness thresholds are replaced by each of ``val_score_thresholds``).
        val_score_thresholds: objectness thresholds tried in validation; ``val/aji_plus`` is the best
            image-averaged AJI+ over them, ``val/aji_plus@<t>`` the value at each.
        load_encoder: initialise the encoder as ``model_config.init`` says (ImageNet / semkit checkpoint).
            The hyperparameters stored in checkpoints always say ``False``: reloading takes every weight from the
            checkpoint and never needs the pretraining file or the network.
        schedule, max_steps, budget_seconds: the learning-rate schedule over the training budget
            (:func:`semkit.train.recipe.configure_optimizers`); ``schedule=None`` keeps the rate constant.

    Batches are ``(images, targets)`` from :class:`semkit.train.data.SEMDataModule`: lists of (1, H, W) float
    tensors and dicts with ``boxes``, ``labels``, ``masks``, ``certain`` (needed with the uncertainty head) and
    ``instances`` (the ground-truth label map, for validation).
    """

    def __init__(self, model_config: MaskRCNNConfig | dict | None = None, lr: float = 1e-4,
                 weight_decay: float = 1e-4, thresholds: CombineThresholds | dict | None = None,
                 val_score_thresholds: Sequence[float] = (0.1, 0.3, 0.5), load_encoder: bool = True,
                 schedule: dict | None = None, max_steps: int | None = None, budget_seconds: float | None = None):
        super().__init__()
        cfg = model_config_from(model_config)
        th = thresholds if isinstance(thresholds, CombineThresholds) else CombineThresholds(**(thresholds or {}))
        self.save_hyperparameters({"model_config": cfg.to_dict(), "lr": lr, "weight_decay": weight_decay,
                                   "schedule": schedule, "max_steps": max_steps, "budget_seconds": budget_seconds,
                                   "thresholds": asdict(th), "val_score_thresholds": list(val_score_thresholds),
                                   "load_encoder": False})
        self.model = build_maskrcnn(cfg) if load_encoder else build_maskrcnn(cfg, init="random", imagenet_file=None)
        # keep the original init in the config for the record (io.save_model writes it)
        self.model.config = cfg
        self.thresholds = th
        self.val_score_thresholds = tuple(float(t) for t in val_score_thresholds)
        if not self.val_score_thresholds:
            raise ValueError("val_score_thresholds must not be empty")
        # MeanMetric sums and counts across DDP processes before averaging
        self.val_aji = nn.ModuleList(MeanMetric() for _ in self.val_score_thresholds)

    @property
    def config(self) -> MaskRCNNConfig:
        return self.model.config

    def forward(self, images: Sequence[torch.Tensor], targets=None):
        """Eval: list of detection dicts; train (with targets): dict of losses."""
        return self.model(list(images), targets)

    def model_targets(self, targets: Sequence[dict]) -> list[dict]:
        """The keys the model reads; ``certain`` only with the uncertainty head (where it is required)."""
        keys = MODEL_TARGET_KEYS + (("certain",) if self.config.uncertainty else ())
        out = []
        for t in targets:
            if self.config.uncertainty and "certain" not in t:
                raise InputError("the uncertainty head needs certain/uncertain flags for every particle; this "
                                 "training image has none (train with uncertainty=False)", t.get("source"))
            out.append({k: t[k] for k in keys})
        return out

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(list(images), self.model_targets(targets))
        loss = sum(losses.values())
        n = len(images)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        for name, value in losses.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        outputs = self.model(list(images))
        for image, out, target in zip(images, outputs, targets, strict=True):
            gt = target["instances"].cpu().numpy()
            out = {k: v.cpu() for k, v in out.items()}
            for metric, t in zip(self.val_aji, self.val_score_thresholds, strict=True):
                labels, _ = combine_detections(out, tuple(image.shape[-2:]), self.thresholds,
                                               certain_score=t, uncertain_score=t)
                metric.update(aji_plus(gt, labels))
            self.log("val/n_detections", float(len(out["scores"])), on_epoch=True, batch_size=1, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        means = [float(m.compute()) for m in self.val_aji]
        for metric, t, value in zip(self.val_aji, self.val_score_thresholds, means, strict=True):
            self.log(f"val/aji_plus@{t:g}", value)
            metric.reset()
        self.log("val/aji_plus", max(means), prog_bar=True)

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.lr, self.hparams.weight_decay, self.hparams.schedule,
                                    self.hparams.max_steps, self.hparams.budget_seconds)


def check_certainty(records: Sequence[SEMRecord]) -> None:
    """Raise :class:`InputError` naming the first labelled record without certain/uncertain flags.

    The uncertainty head cannot be trained on such images; call before training a model with
    ``uncertainty=True``.
    """
    for i, rec in enumerate(records):
        if rec.instances is not None and rec.certain is None:
            raise InputError("no certain/uncertain flags for this image; the uncertainty head needs them "
                             "(train with uncertainty=False)", rec.source or f"record {i}")
