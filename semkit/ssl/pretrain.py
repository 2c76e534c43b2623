"""The one entry point of self-supervised pretraining: :class:`PretrainConfig` and :func:`pretrain`.

Every method (FCMAE, DenseCL, MoCo v2, MatSSL) is a module listed in :data:`METHODS` exposing

* ``build_module(config: PretrainConfig) -> lightning.LightningModule`` -- the model to train. The module logs
  ``train/loss`` in ``training_step`` (``on_step=True, on_epoch=True``) and ``val/loss`` in
  ``validation_step`` (``on_epoch=True, sync_dist=True``), and has ``export_encoder() -> dict``: a plain
  timm-compatible encoder state dict that loads with ``strict=True`` into
  ``semkit.models.backbones.create_backbone(config.backbone)``;
* ``view_transform(config) -> callable | None`` -- maps one ``(1, H, W)`` float crop in [0, 1] to what the
  module's ``training_step`` / ``validation_step`` expect per sample (``None``: the crop itself).

:func:`pretrain` builds the unlabeled pool (image folders or synthetic images), splits it 80/20 into
``ssl_train`` / ``ssl_eval`` with :func:`semkit.data.curation.split_ssl`, draws the pretraining-size subset with
:func:`semkit.data.curation.ablation_subsets`, trains through :func:`semkit.train.trainer.make_trainer` (so one
code path serves CPU, one GPU, several GPUs and several SLURM nodes) and exports an encoder as ``encoder.pt`` +
``encoder.json``: the checkpoint with the lowest validation loss, or the final weights for methods whose module
sets ``EXPORT_CHECKPOINT = "last"`` (queue-based contrastive methods: their loss is measured against a queue of
negatives that fills up during training, so losses of different epochs are not comparable and the lowest one is
simply the earliest).

Files written into ``config.output_dir``::

    pretrain_config.json        this configuration (also copied into checkpoints/)
    trainer_config.json         the Lightning settings (make_trainer)
    logs/metrics.csv            per-step / per-epoch losses (see semkit.train.trainer.read_history)
    checkpoints/best.ckpt       lowest val/loss (train/loss when there is no validation split)
    checkpoints/last.ckpt
    encoder.pt                  plain timm encoder state dict of the best (or last, see above) checkpoint
    encoder.json                {"method", "backbone", "in_chans", "config", "best_val_loss", ...}
"""

from __future__ import annotations

import importlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from semkit.config import JsonConfig
from semkit.errors import InputError
from semkit.models.backbones import BACKBONES

#: Method name -> module exposing ``build_module(config)`` and ``view_transform(config)``.
METHODS: dict[str, str] = {
    "fcmae": "semkit.ssl.fcmae",
    "densecl": "semkit.ssl.densecl",
    "mocov2": "semkit.ssl.mocov2",
    "matssl": "semkit.ssl.matssl",
}
#: FCMAE encoder backends: masked dense emulation (runs anywhere) or MinkowskiEngine sparse tensors.
BACKENDS = ("dense", "minkowski")
#: How pretraining subsets are trained: the same number of updates as the whole pool, or the same epochs.
SUBSET_BUDGETS = ("steps", "epochs")
CONFIG_FILE = "pretrain_config.json"
ENCODER_FILE = "encoder.pt"
ENCODER_META_FILE = "encoder.json"


@dataclass
class PretrainConfig(JsonConfig):
    """Settings of one pretraining run (saved as ``pretrain_config.json`` next to every checkpoint).

    Methods read the fields they need and ignore the others (e.g. only FCMAE reads ``mask_ratio``).

    Attributes:
        method: one of :data:`METHODS`.
        backbone: a :data:`semkit.models.backbones.BACKBONES` name (``convnextv2_atto`` ... ``resnet50``).
        data_folders: folders (or image files) of unlabeled images, read with
            :func:`semkit.data.iter_unlabeled` (databar cropped); empty = a synthetic pool.
        synthetic_count: number of synthetic images when ``data_folders`` is empty.
        synthetic_size: side of the synthetic images; ``None`` = ``crop_size`` rounded up by a quarter, so
            random crops still move.
        subset_fraction: fraction of the ``ssl_train`` pool used (the pretraining-size ablation: 2^s/100);
            the validation part is never subsampled, so validation losses stay comparable.
        subset_budget: how a subset is trained, one of :data:`SUBSET_BUDGETS`. ``"steps"``: a subset's epoch
            draws as many crops as an epoch of the whole ``ssl_train`` part (each subset image gives
            proportionally more crops), so every fraction gets the same number of updates and only the data
            varies; ``"epochs"``: an epoch is one pass over the subset (smaller subsets get fewer updates).
        crop_size: side of the square random crops (pixels, no rescaling; 640 in the SSL-for-SEM study).
        crops_per_image: random crops drawn per image per epoch (large images hold many crops).
        patch_overlap: ``None`` draws crops anywhere in each image; a fraction in [0, 1) cuts every image into
            grid patches of ``crop_size`` whose neighbours share that fraction of their edge, after the train/val
            split (the MatSSL study: 256-pixel patches with overlap; :func:`semkit.ssl.data.patch_pool`).
        patch_size: FCMAE mask grid (pixels); must equal the encoder's total stride (32 for ConvNeXt).
        mask_ratio: FCMAE fraction of masked patches, in [0, 1).
        backend: FCMAE encoder backend, one of :data:`BACKENDS`.
        norm_pix_loss: FCMAE targets normalised per patch (mean 0, variance 1), as in MAE / ConvNeXt V2.
        decoder_dim: FCMAE decoder width.
        decoder_depth: number of ConvNeXt V2 blocks in the FCMAE decoder (1 in the paper).
        drop_path_rate: stochastic depth of the encoder.
        epochs: training epochs.
        batch_size: images per device and step.
        lr: learning rate; ``None`` = the method's default (FCMAE: 8e-4 x effective batch / 256).
        min_lr: final learning rate of cosine schedules, as a fraction of the peak.
        weight_decay: optimiser weight decay; ``None`` = the method's default (FCMAE: 0.05).
        warmup_epochs: linear warmup length in epochs (may be fractional; converted to steps).
        accelerator, devices, num_nodes, strategy, precision: Lightning settings (see
            :class:`semkit.train.trainer.TrainerConfig`); several devices or nodes run DDP.
        seed: seeds the pool split, the subset, the initialisation, crops and masks.
        output_dir: run folder (see the module docstring for its contents).
        num_workers: dataloader worker processes.
        val_fraction: share of the pool held out for the validation loss (0.2 = the 80/20 split; 0 = none, the
            checkpoint is then chosen on the training loss).
        max_time: wall-clock budget ``"DD:HH:MM:SS"`` or ``None``.
        max_steps: optimiser steps in all, or ``None``; the run ends after ``epochs`` or ``max_steps``, whichever
            comes first, and the learning-rate schedule spans the shorter. The pretraining-size ablation sets it
            (with a large ``epochs``) so every pool size gets the same number of updates.
        limit_train_batches: batches per epoch (int) or fraction (float); ``None`` = all.
        limit_val_batches: same for validation.
        crop_databar: ``True`` detects and crops databars of folder images, ``False`` keeps all rows, an int
            crops that many rows.
        in_memory: keep folder images in memory (fast) instead of re-reading a file per crop (big pools).
        log_every_n_steps: Lightning logging interval.
        enable_progress_bar: show Lightning's progress bar.
    """

    method: str = "fcmae"
    backbone: str = "convnextv2_atto"
    data_folders: list[str] = field(default_factory=list)
    synthetic_count: int = 64
    synthetic_size: int | None = None
    subset_fraction: float = 1.0
    subset_budget: str = "steps"
    crop_size: int = 640
    crops_per_image: int = 1
    patch_overlap: float | None = None
    patch_size: int = 32
    mask_ratio: float = 0.5
    backend: str = "dense"
    norm_pix_loss: bool = True
    decoder_dim: int = 512
    decoder_depth: int = 1
    drop_path_rate: float = 0.0
    epochs: int = 1
    batch_size: int = 8
    lr: float | None = None
    min_lr: float = 0.0
    weight_decay: float | None = None
    warmup_epochs: float = 0.0
    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    seed: int = 0
    output_dir: str = "runs/pretrain"
    num_workers: int = 0
    val_fraction: float = 0.2
    max_time: str | None = None
    max_steps: int | None = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    crop_databar: bool | int = True
    in_memory: bool = True
    log_every_n_steps: int = 10
    enable_progress_bar: bool = False

    def __post_init__(self) -> None:
        self.data_folders = [str(f) for f in (self.data_folders or [])]
        self.validate()

    def validate(self) -> None:
        """Check the settings; raise ``KeyError`` for an unknown name (listing the valid ones), else
        :class:`InputError` saying which setting is wrong."""
        if self.method not in METHODS:
            raise KeyError(f"unknown pretraining method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.backbone not in BACKBONES:
            raise KeyError(f"unknown backbone {self.backbone!r}; choose one of: {', '.join(BACKBONES)}")
        if self.backend not in BACKENDS:
            raise KeyError(f"unknown FCMAE backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        positive = ("crop_size", "patch_size", "epochs", "batch_size", "crops_per_image", "decoder_dim",
                    "decoder_depth", "num_nodes", "log_every_n_steps")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"PretrainConfig.{name} must be a positive integer, got {value!r}")
        if self.synthetic_count < 0:
            raise InputError(f"PretrainConfig.synthetic_count must be >= 0, got {self.synthetic_count}")
        if self.synthetic_size is not None and self.synthetic_size < self.crop_size:
            raise InputError(
                f"synthetic_size {self.synthetic_size} is smaller than crop_size {self.crop_size}"
            )
        if self.subset_budget not in SUBSET_BUDGETS:
            raise KeyError(f"unknown subset_budget {self.subset_budget!r}; choose one of: {', '.join(SUBSET_BUDGETS)}")
        if not 0 < self.subset_fraction <= 1:
            raise InputError(f"subset_fraction must be in (0, 1], got {self.subset_fraction}")
        if not 0 <= self.mask_ratio < 1:
            raise InputError(f"mask_ratio must be in [0, 1) (some patches must stay visible), got {self.mask_ratio}")
        if self.patch_overlap is not None and not 0 <= self.patch_overlap < 1:
            raise InputError(f"patch_overlap must be None or in [0, 1), got {self.patch_overlap}")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"lr must be positive or None, got {self.lr}")
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or isinstance(self.max_steps, bool) or self.max_steps < 1
        ):
            raise InputError(f"PretrainConfig.max_steps must be None or a positive integer, got {self.max_steps!r}")
        if self.warmup_epochs < 0 or self.num_workers < 0:
            raise InputError("warmup_epochs and num_workers must be >= 0")

    def world_size(self) -> int | None:
        """Processes the run will use (devices x nodes), or ``None`` when ``devices`` is ``"auto"``/-1."""
        if isinstance(self.devices, list | tuple):
            return len(self.devices) * self.num_nodes
        if isinstance(self.devices, int) and self.devices > 0:
            return self.devices * self.num_nodes
        if isinstance(self.devices, str) and self.devices.isdigit():
            return int(self.devices) * self.num_nodes
        return None


# ------------------------------------------------------------------------------------------------------------
# helpers shared by the method modules


def method_module(name: str):
    """Import the module of method ``name``; ``KeyError`` listing :data:`METHODS` for an unknown name."""
    if name not in METHODS:
        raise KeyError(f"unknown pretraining method {name!r}; choose one of: {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def scaled_lr(base_lr: float, batch_size: int, world_size: int = 1, reference: int = 256) -> float:
    """Linear learning-rate scaling (Goyal et al. 2017): ``base_lr * batch_size * world_size / reference``.

    ``batch_size`` is per device; the effective batch is ``batch_size * world_size``.
    """
    return base_lr * batch_size * max(1, world_size) / reference


def warmup_cosine_lambda(warmup_steps: int, total_steps: int, min_factor: float = 0.0):
    """A ``LambdaLR`` factor: linear warmup from 0 to 1 over ``warmup_steps``, then cosine to ``min_factor``.

    Step ``s`` (0-based, counted in optimiser steps) gets ``(s + 1) / warmup_steps`` during warmup, then
    ``min_factor + (1 - min_factor) * (1 + cos(pi * t)) / 2`` with ``t`` the fraction of the cosine phase done.
    """
    warmup_steps = max(0, int(warmup_steps))
    total_steps = max(warmup_steps + 1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def steps_of(module) -> tuple[int, int]:
    """``(total optimiser steps, steps per epoch)`` of the fitting run a LightningModule is attached to."""
    trainer = module.trainer
    # estimated_stepping_batches accounts for limit_train_batches, devices and max_steps (then the minimum of
    # epochs x batches and max_steps); it also sets up the training dataloader, so num_training_batches is known.
    total = max(1, int(trainer.estimated_stepping_batches))
    per_epoch = trainer.num_training_batches
    if isinstance(per_epoch, int | float) and math.isfinite(per_epoch) and per_epoch > 0:
        return total, max(1, math.ceil(per_epoch / max(1, trainer.accumulate_grad_batches)))
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
    return total, max(1, total // epochs)


# ------------------------------------------------------------------------------------------------------------
# the entry point


def pretrain(config: PretrainConfig) -> dict[str, Any]:
    """Pretrain an encoder self-supervised and export it.

    Args:
        config: the run settings (validated again here).

    Returns:
        dict with ``method``, ``backbone``, ``n_train_images``, ``n_val_images``, ``train_loss`` (per-epoch list),
        ``val_loss`` (per-epoch list, empty without validation), ``best_val_loss`` (lowest monitored loss),
        ``best_epoch``, ``epochs_run``, ``steps``, ``train_crops_per_epoch``, ``fit_seconds``, ``images_per_second`` (training crops per
        second of the fit, validation included), ``encoder_path``, ``checkpoint_path`` and ``output_dir``.
        On a non-zero DDP rank the export is skipped and ``encoder_path`` is ``None``.

    Raises:
        KeyError: unknown method, backbone or backend (the message lists the valid ones).
        InputError: an empty pool, a pool smaller than one batch, images smaller than the crop, a crop size the
            method cannot use (e.g. FCMAE: not a multiple of the patch size).
    """
    from semkit.ssl.data import UnlabeledDataModule
    from semkit.train.trainer import TrainerConfig, make_trainer, read_history

    config.validate()
    module_of_method = method_module(config.method)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / CONFIG_FILE)

    datamodule = UnlabeledDataModule(config, transform=module_of_method.view_transform(config))
    world = config.world_size()
    if world is not None:
        datamodule.check_batch(world)  # fail before any process is started
    model = module_of_method.build_module(config)

    has_val = datamodule.n_val_images > 0
    monitor = "val/loss" if has_val else "train/loss_epoch"
    trainer_config = TrainerConfig(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,
        output_dir=str(out),
        seed=config.seed,
        monitor=monitor,
        mode="min",
        patience=None,
        max_time=config.max_time,
        max_steps=config.max_steps,
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches if has_val else 0,
        log_every_n_steps=config.log_every_n_steps,
        enable_progress_bar=config.enable_progress_bar,
    )
    # the learning rate per step goes into the run's history next to the losses (schedules are part of a result)
    from lightning.pytorch.callbacks import LearningRateMonitor

    trainer = make_trainer(trainer_config, callbacks=[LearningRateMonitor(logging_interval="step")])
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    config.save(ckpt_dir / CONFIG_FILE)

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start

    history = read_history(out)
    train_curve = _column(history, "train/loss_epoch")
    val_curve = _column(history, "val/loss")
    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    best_score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    curve = val_curve if has_val else train_curve
    best_epoch = int(min(range(len(curve)), key=curve.__getitem__)) if curve else None

    results: dict[str, Any] = {
        "method": config.method,
        "backbone": config.backbone,
        "backend": config.backend,
        "n_train_images": datamodule.n_train_images,
        "train_crops_per_epoch": len(datamodule.train_dataset),
        "n_val_images": datamodule.n_val_images,
        "train_loss": train_curve,
        "val_loss": val_curve,
        "best_val_loss": None if best_score is None else float(best_score),
        "monitor": monitor,
        "best_epoch": best_epoch,
        "epochs_run": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "fit_seconds": fit_seconds,
        "images_per_second": trainer.global_step * config.batch_size * (world or 1) / max(fit_seconds, 1e-9),
        "checkpoint_path": best_path or None,
        "exported_checkpoint": getattr(module_of_method, "EXPORT_CHECKPOINT", "best"),
        "encoder_path": None,
        "output_dir": str(out),
    }
    if not trainer.is_global_zero:
        return results
    if results["exported_checkpoint"] == "last":
        results["checkpoint_path"] = str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").is_file() else None
    elif best_path:
        # The best checkpoint, not the last weights, is what the ablation fine-tunes.
        state = torch.load(best_path, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)
    results["encoder_path"] = str(export_encoder(model, config, out, extra=results))
    return results


def export_encoder(model, config: PretrainConfig, output_dir: str | Path, extra: dict | None = None) -> Path:
    """Write ``encoder.pt`` (``model.export_encoder()``) and ``encoder.json`` (metadata) into ``output_dir``.

    The state dict loads with ``semkit.models.backbones.create_backbone(config.backbone, init=<encoder.pt>)``.

    Returns:
        Path of ``encoder.pt``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.export_encoder().items()}
    path = out / ENCODER_FILE
    torch.save(state, path)
    meta = {
        "method": config.method,
        "backbone": config.backbone,
        "in_chans": 1,
        "n_tensors": len(state),
        "n_parameters": int(sum(v.numel() for v in state.values())),
        "config": config.to_dict(),
    }
    for key in ("best_val_loss", "best_epoch", "monitor", "epochs_run", "steps", "n_train_images", "n_val_images"):
        if extra and key in extra:
            meta[key] = extra[key]
    (out / ENCODER_META_FILE).write_text(json.dumps(meta, indent=2))
    return path


def load_module(output_dir: str | Path, checkpoint: str = "best"):
    """The trained LightningModule of a finished run (``checkpoints/<checkpoint>.ckpt``), in eval mode.

    Args:
        output_dir: the run's ``output_dir`` (holds ``pretrain_config.json``).
        checkpoint: ``"best"`` or ``"last"``.

    Raises:
        InputError: no configuration or checkpoint in ``output_dir``.
    """
    out = Path(output_dir)
    config = PretrainConfig.load(out / CONFIG_FILE)
    path = out / "checkpoints" / f"{checkpoint}.ckpt"
    if not path.is_file():
        raise InputError(f"no {checkpoint} checkpoint in this run", path)
    module = method_module(config.method).build_module(config)
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])
    return module.eval()


def loss_history(output_dir: str | Path):
    """``(steps, epochs)`` loss tables of a run: per optimiser step (``step``, ``train/loss_step`` and, for runs
    that logged it, ``lr``: the learning rate of the first parameter group) and per epoch
    (:func:`semkit.train.trainer.read_history`)."""
    import pandas as pd

    from semkit.train import trainer as tr

    epochs = tr.read_history(output_dir)
    csv = Path(output_dir) / getattr(tr, "LOG_DIR", "") / tr.HISTORY_FILE
    steps = pd.DataFrame(columns=["step", "train/loss_step"])
    if csv.is_file():
        raw = pd.read_csv(csv)
        if "train/loss_step" in raw:
            steps = raw.loc[raw["train/loss_step"].notna(), ["step", "train/loss_step"]].reset_index(drop=True)
        lr_columns = sorted(c for c in raw.columns if c.startswith("lr-"))
        if lr_columns:  # LearningRateMonitor writes its own rows: join them on the step
            lr = raw.loc[raw[lr_columns[0]].notna(), ["step", lr_columns[0]]].rename(columns={lr_columns[0]: "lr"})
            steps = steps.merge(lr.drop_duplicates("step", keep="last"), on="step", how="left")
    return steps, epochs


def plot_loss_curves(output_dir: str | Path, path: str | Path | None = None):
    """Training loss per step and training / validation loss per epoch of a run.

    Returns:
        The matplotlib figure (saved to ``path`` when given).
    """
    import matplotlib.pyplot as plt

    steps, epochs = loss_history(output_dir)
    fig, (ax_s, ax_e) = plt.subplots(1, 2, figsize=(10, 3.5))
    if len(steps):
        ax_s.plot(steps["step"], steps["train/loss_step"], lw=1)
    ax_s.set(xlabel="optimiser step", ylabel="loss", title="training loss per step")
    for column, label in (("train/loss_epoch", "train"), ("val/loss", "validation")):
        if column in epochs:
            series = epochs[column].dropna()
            ax_e.plot(series.index, series.values, marker="o", label=label)
    ax_e.set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    ax_e.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _column(history, name: str) -> list[float]:
    if history is None or history.empty or name not in history:
        return []
    return [float(v) for v in history[name].dropna().tolist()]
