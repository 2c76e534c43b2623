"""The one Lightning trainer factory the whole project uses.

Every training stage (fine-tuning Mask R-CNN or a U-Net, SSL pretraining) describes its run with a
:class:`TrainerConfig` and gets its :class:`lightning.Trainer` from :func:`make_trainer`, so seeding, logging,
checkpointing, early stopping and the CPU / single-GPU / multi-GPU (DDP) choice behave the same everywhere.
The configuration is written as ``trainer_config.json`` into the run folder next to the checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from semkit.config import JsonConfig

CONFIG_FILE = "trainer_config.json"
#: Per-step / per-epoch values logged by the modules, written by Lightning's CSV logger (with hparams.yaml).
LOG_DIR = "logs"
HISTORY_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainerConfig(JsonConfig):
    """Settings of one Lightning training run.

    Attributes:
        max_epochs: upper bound on epochs (early stopping may end the run sooner).
        accelerator: ``"cpu"``, ``"gpu"``, ``"auto"``, ... (Lightning's names).
        devices: number of devices, a list of device ids, or ``"auto"``.
        num_nodes: machines for multi-node DDP.
        strategy: ``"auto"``, ``"ddp"``, ``"ddp_spawn"``, ... (Lightning's names). Several devices with
            ``"auto"`` selects DDP.
        precision: Lightning precision string, e.g. ``"32-true"``, ``"16-mixed"``, ``"bf16-mixed"``.
        output_dir: run folder; receives ``trainer_config.json``, ``logs/metrics.csv`` (the training curves,
            see :func:`read_history`) and ``checkpoints/``.
        seed: global seed given to :func:`lightning.seed_everything` (Python, NumPy, torch and dataloader
            workers), so a run is repeatable on the same hardware.
        monitor: logged metric for checkpointing and early stopping (e.g. ``"val/aji_plus"``,
            ``"train/loss"``); ``None`` keeps only the last epoch's checkpoint and disables early stopping.
        mode: ``"max"`` if a larger monitored value is better, ``"min"`` otherwise.
        patience: epochs without improvement of ``monitor`` before stopping; ``None`` disables early stopping.
        max_time: wall-clock budget as ``"DD:HH:MM:SS"``; ``None`` for no limit.
        max_steps: optimiser steps in all; the run ends at ``max_epochs`` or ``max_steps``, whichever comes
            first (a fixed compute budget across pool sizes); ``None`` for no limit.
        val_every_steps: validate every this many training batches, across epoch boundaries (``None``: at the
            end of every epoch); with it, ``patience`` counts validations, not epochs.
        limit_train_batches: int (batches) or float (fraction) per training epoch; ``None`` = all.
        limit_val_batches: same for validation; ``None`` = all.
        log_every_n_steps: how often step-level values are logged.
        enable_progress_bar: show Lightning's progress bar.
        deterministic: passed to Lightning; ``True`` forces deterministic torch kernels (some CUDA kernels,
            e.g. RoIAlign backward, have none and would raise), ``"warn"`` only warns.
        save_checkpoints: write checkpoints at all (tests and quick notebook runs may not need them).
        num_sanity_val_steps: validation batches run before training to catch errors early (Lightning's 2);
            0 skips them (validation of large images is expensive on a CPU).
    """

    max_epochs: int = 10
    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    output_dir: str = "runs/train"
    seed: int = 0
    monitor: str | None = "val/aji_plus"
    mode: Literal["min", "max"] = "max"
    patience: int | None = 10
    max_time: str | None = None
    max_steps: int | None = None
    val_every_steps: int | None = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    deterministic: bool | Literal["warn"] | None = None
    save_checkpoints: bool = True
    num_sanity_val_steps: int = 2

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if self.val_every_steps is not None and self.val_every_steps < 1:
            raise ValueError(f"val_every_steps must be >= 1 or None, got {self.val_every_steps}")



def make_trainer(config: TrainerConfig, callbacks: Iterable[Callback] = ()) -> L.Trainer:
    """Seed everything and build the :class:`lightning.Trainer` described by ``config``.

    Adds, besides ``callbacks``: a :class:`~lightning.pytorch.callbacks.ModelCheckpoint` in
    ``<output_dir>/checkpoints`` (best on ``monitor`` as ``best.ckpt`` plus ``last.ckpt``; only ``last.ckpt``
    when ``monitor`` is ``None``) unless ``save_checkpoints`` is false, and
    :class:`~lightning.pytorch.callbacks.EarlyStopping` on ``monitor`` when ``patience`` is set. Logged values
    go to ``<output_dir>/logs/metrics.csv`` (see :func:`read_history`).

    Args:
        config: run settings; written to ``<output_dir>/trainer_config.json``.
        callbacks: extra Lightning callbacks.

    Returns:
        The trainer. Call ``trainer.fit(module, datamodule)``; the best checkpoint path is then
        ``trainer.checkpoint_callback.best_model_path`` (empty when no checkpoint was saved).
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / CONFIG_FILE)

    cbs: list[Callback] = list(callbacks)
    if config.save_checkpoints:
        cbs.append(
            ModelCheckpoint(
                dirpath=out / CHECKPOINT_DIR,
                filename="best",
                monitor=config.monitor,
                mode=config.mode,
                save_top_k=1,
                save_last=config.monitor is not None,
                # Re-running into the same folder overwrites instead of writing best-v1.ckpt.
                enable_version_counter=False,
            )
        )
    if config.monitor is not None and config.patience is not None:
        cbs.append(
            EarlyStopping(monitor=config.monitor, mode=config.mode, patience=config.patience, check_finite=False)
        )

    kwargs: dict[str, Any] = {}
    for name in ("limit_train_batches", "limit_val_batches", "max_time", "max_steps", "deterministic"):
        value = getattr(config, name)
        if value is not None:
            kwargs[name] = value
    if config.val_every_steps is not None:
        # an int interval counts training batches across epochs only without the per-epoch check
        kwargs.update(val_check_interval=config.val_every_steps, check_val_every_n_epoch=None)
    return L.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,
        callbacks=cbs,
        # version="" stops the logger from adding version_N folders: one run folder, one history
        logger=CSVLogger(save_dir=str(out), name=LOG_DIR, version=""),
        default_root_dir=str(out),
        log_every_n_steps=config.log_every_n_steps,
        enable_progress_bar=config.enable_progress_bar,
        enable_checkpointing=config.save_checkpoints,
        enable_model_summary=False,
        num_sanity_val_steps=config.num_sanity_val_steps,
        **kwargs,
    )


def read_history(output_dir: str | Path) -> pd.DataFrame:
    """Training curves of a run: one row per epoch, one column per logged value.

    Lightning's CSV logger writes step-level and epoch-level values on separate rows; they are merged per
    epoch (the last logged value of each column wins), which is what curve plots need.

    Args:
        output_dir: the run folder given as :attr:`TrainerConfig.output_dir`.

    Returns:
        DataFrame indexed by ``epoch``; empty if nothing was logged.
    """
    path = Path(output_dir) / LOG_DIR / HISTORY_FILE
    if not path.exists():
        return pd.DataFrame()
    frame = pd.read_csv(path)
    if "epoch" not in frame or frame.empty:
        return pd.DataFrame()
    frame = frame.drop(columns=[c for c in ("step",) if c in frame])
    return frame.groupby("epoch").last()
