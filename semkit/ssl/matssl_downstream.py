"""MatSSL's downstream task: a pretrained encoder inside a U-Net++, fine-tuned for semantic segmentation.

The encoder (any semkit encoder state dict: MatSSL, DenseCL, MoCo v2, FCMAE, ImageNet or none) goes into a
segmentation-models-pytorch U-Net++ through the same strict loading path as the U-Net baselines
(:func:`semkit.models.create_backbone` → :func:`semkit.models.unet.load_unet_encoder`), is fine-tuned with the
multiclass Dice loss (Adam, lr 1e-4, weight decay 1e-5) on random crops of a semantic folder layout (NASA's
EBC-1/2/3, :func:`semkit.data.load_semantic_folders`), and is scored on the test images with
:func:`semkit.metrics.semantic_metrics` (mIoU dataset-level and image-averaged).

* :func:`finetune_semantic` -- one split (e.g. ``EBC1``); returns :class:`SemanticFinetuneResult`;
* :func:`finetune_semantic_splits` -- several splits, one row of test mIoU per split;
* :func:`build_semantic_model`, :func:`predict_semantic` -- the model and sliding-window inference.

Validation during training (for the best checkpoint) scores fixed crops of the validation images, which keeps
each epoch cheap on a CPU; the final test scores whole images.

References: Zhou et al., "UNet++", DLMIA 2018; Nguyen, Phan, Lee, "MatSSL", ICCV Workshops 2025
(arXiv:2507.18184); Stuckner, Harder, Smith, npj Comput. Mater. 8, 200 (2022) (the EBC benchmark).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from semkit.data.curation import tile_starts
from semkit.data.records import SEMRecord
from semkit.data.semantic import load_semantic_folders
from semkit.errors import InputError
from semkit.metrics.semantic import SemanticEvaluation, confusion_matrix, semantic_metrics, semantic_scores
from semkit.models.backbones import create_backbone, encoder_state_dict, load_encoder_state_dict
from semkit.models.maskrcnn import GRAY_MEAN, GRAY_STD
from semkit.models.unet import ARCHITECTURES, UNET_ENCODERS, load_unet_encoder

#: The NASA EBC benchmark, relative to the repository root.
DEFAULT_ROOT = "../shared/data/nasa-ebc"
EBC_SPLITS = ("EBC1", "EBC2", "EBC3")
#: Spatial sizes fed to the U-Net++ must be multiples of the encoder's total stride.
STRIDE = 32
CONFIG_FILE = "finetune_config.json"
RESULTS_FILE = "results.json"


@dataclass
class SemanticFinetuneConfig:
    """Settings of one semantic fine-tuning run (saved as ``finetune_config.json`` in ``output_dir``).

    Attributes:
        backbone: encoder name (``"resnet50"`` as in MatSSL, or ``convnextv2_*``).
        arch: ``"unetplusplus"`` (MatSSL) or ``"unet"``.
        num_classes: classes in the label maps (3 for EBC: values 0, 1, 2).
        epochs: training epochs.
        crop: side of the random training crops (multiple of 32; no rescaling).
        crops_per_image: random crops per training image per epoch (and fixed crops per validation image).
        batch_size: crops per step.
        lr, weight_decay: Adam settings (1e-4, 1e-5 in MatSSL).
        eval_tile: side of the sliding-window tiles for whole-image inference (multiple of 32, bounds memory);
            ``None`` = the whole (padded) image at once.
        eval_crop: score only the centred ``eval_crop`` square of every test image (quick checks); ``None`` =
            the whole image (the benchmark number).
        accelerator, devices, precision: Lightning settings.
        seed: seeds initialisation and crops.
        output_dir: run folder (config, checkpoints, metrics.csv, results.json).
        num_workers: dataloader workers.
        limit_train_batches: batches per epoch (int) or fraction; ``None`` = all.
        max_time: wall-clock budget ``"DD:HH:MM:SS"``.
        enable_progress_bar: Lightning's progress bar.
    """

    backbone: str = "resnet50"
    arch: str = "unetplusplus"
    num_classes: int = 3
    epochs: int = 20
    crop: int = 256
    crops_per_image: int = 8
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-5
    eval_tile: int | None = 512
    eval_crop: int | None = None
    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    precision: str = "32-true"
    seed: int = 0
    output_dir: str = "runs/semantic_finetune"
    num_workers: int = 0
    limit_train_batches: int | float | None = None
    max_time: str | None = None
    enable_progress_bar: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise KeyError(f"unknown architecture {self.arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
        smp_encoder_name(self.backbone)
        for name in ("crop", "eval_tile", "eval_crop"):
            value = getattr(self, name)
            if value is not None and (value < STRIDE or value % STRIDE):
                raise InputError(f"{name} must be a positive multiple of {STRIDE}, got {value}")
        for name in ("num_classes", "epochs", "crops_per_image", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SemanticFinetuneResult:
    """Outcome of :func:`finetune_semantic`.

    Attributes:
        split: dataset split folder (e.g. ``"EBC1"``).
        test: the :class:`~semkit.metrics.SemanticEvaluation` of the test images (``test.summary`` holds
            ``miou_dataset_level``, ``miou_image_averaged``, ...).
        best_val_miou: best validation-crop mIoU during training (selects the checkpoint).
        history: per-epoch curves (``train/loss_epoch``, ``val/miou``, ...).
        predictions: test image name → predicted (H, W) class map.
        config: the settings used.
        encoder: what initialised the encoder (``"random"``, ``"imagenet"``, a path, ``"state_dict"``).
    """

    split: str
    test: SemanticEvaluation
    best_val_miou: float | None
    history: pd.DataFrame
    predictions: dict[str, np.ndarray]
    config: SemanticFinetuneConfig
    encoder: str

    @property
    def test_miou(self) -> float:
        """Dataset-level test mIoU (pixels of all test images pooled)."""
        return float(self.test.summary["miou_dataset_level"])

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-serialisable summary (what ``results.json`` holds)."""
        per_class = self.test.per_class
        return {"split": self.split, "encoder": self.encoder, "best_val_miou": self.best_val_miou,
                **{f"test_{k}": v for k, v in self.test.summary.items()},
                **{f"test_iou_class_{c}": float(v)
                   for c, v in zip(per_class["class"], per_class["iou_dataset_level"], strict=True)},
                "config": self.config.to_dict()}


def smp_encoder_name(backbone: str) -> str:
    """The segmentation-models-pytorch encoder name of a semkit backbone (``resnet50``, ``tu-convnextv2_*``)."""
    for smp_name, name in UNET_ENCODERS.items():
        if name == backbone:
            return smp_name
    valid = ", ".join(UNET_ENCODERS.values())
    raise KeyError(f"no U-Net encoder for backbone {backbone!r}; choose one of: {valid}")


def build_semantic_model(backbone: str = "resnet50", encoder_state: Mapping[str, torch.Tensor] | str | os.PathLike
                         | None = None, num_classes: int = 3, arch: str = "unetplusplus") -> nn.Module:
    """A U-Net++ (or U-Net) with ``num_classes`` output logits and the given encoder weights.

    Args:
        backbone: semkit backbone name.
        encoder_state: ``None`` / ``"random"`` (random encoder), ``"imagenet"``, the path of a semkit encoder
            checkpoint, or a plain timm encoder state dict (e.g. ``module.export_encoder()``). Loaded with
            ``strict=True``: a mismatching state dict raises :class:`InputError` naming the tensors.
        num_classes: output channels.
        arch: key of :data:`semkit.models.UNET_ARCHITECTURES`.

    Returns:
        smp model: ``(B, 1, H, W)`` with H, W multiples of 32 → ``(B, num_classes, H, W)`` logits.
    """
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    model = ARCHITECTURES[arch](encoder_name=smp_encoder_name(backbone), encoder_weights=None, in_channels=1,
                                classes=num_classes)
    if encoder_state is None or (isinstance(encoder_state, str) and encoder_state == "random"):
        return model
    if isinstance(encoder_state, Mapping):
        source = load_encoder_state_dict(create_backbone(backbone), encoder_state)
    else:
        source = create_backbone(backbone, init=encoder_state)
    load_unet_encoder(model, encoder_state_dict(source))
    return model


def normalize(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] → tensor normalised with the grayscale ImageNet statistics (as every semkit model)."""
    x = torch.as_tensor(np.asarray(image, dtype=np.float32)) if not isinstance(image, torch.Tensor) else image.float()
    return (x - GRAY_MEAN[0]) / GRAY_STD[0]


@torch.no_grad()
def predict_semantic(model: nn.Module, image: np.ndarray, tile: int | None = 512) -> np.ndarray:
    """Class map of one image by (sliding-window) inference.

    The image is reflect-padded to a multiple of 32; with ``tile`` set, tiles of that size at stride
    ``tile / 2`` (the last ones shifted to the border) are predicted and their softmax probabilities averaged
    where they overlap.

    Args:
        model: a :func:`build_semantic_model` model (put in eval mode here).
        image: (H, W) float in [0, 1].
        tile: tile side (multiple of 32) or ``None`` for one pass over the whole image.

    Returns:
        int64 (H, W) argmax class map.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"predict_semantic needs a 2-D image, got shape {image.shape}")
    model.eval()
    device = next(model.parameters()).device
    h, w = image.shape
    ph, pw = -h % STRIDE, -w % STRIDE
    x = normalize(image)[None, None]
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    x = x.to(device)
    H, W = x.shape[-2:]
    if tile is None or (tile >= H and tile >= W):
        probs = model(x).softmax(dim=1)
    else:
        ys = tile_starts(H, min(tile, H), max(min(tile, H) // 2, STRIDE))
        xs = tile_starts(W, min(tile, W), max(min(tile, W) // 2, STRIDE))
        th, tw = min(tile, H), min(tile, W)
        probs, counts = None, torch.zeros((1, 1, H, W), device=device)
        for y in ys:
            for x0 in xs:
                p = model(x[..., y : y + th, x0 : x0 + tw]).softmax(dim=1)
                if probs is None:
                    probs = torch.zeros((1, p.shape[1], H, W), device=device)
                probs[..., y : y + th, x0 : x0 + tw] += p
                counts[..., y : y + th, x0 : x0 + tw] += 1
        probs = probs / counts
    return probs[0, :, :h, :w].argmax(dim=0).cpu().numpy().astype(np.int64)


def _center_crop(array: np.ndarray, size: int | None) -> np.ndarray:
    if size is None:
        return array
    h, w = array.shape
    s_h, s_w = min(size, h), min(size, w)
    y, x = (h - s_h) // 2, (w - s_w) // 2
    return array[y : y + s_h, x : x + s_w]


class SemanticCrops(Dataset):
    """Crops of labelled images: random with flips / 90° rotations (training) or fixed and seeded (validation).

    Returns per item ``(image (1, crop, crop) float32 normalised, labels (crop, crop) int64)``.

    Raises:
        InputError: a record without a semantic map or smaller than the crop (naming its file).
    """

    def __init__(self, records: Sequence[SEMRecord], crop: int, crops_per_image: int = 1, train: bool = True,
                 seed: int = 0):
        self.records = list(records)
        self.crop, self.crops_per_image, self.train, self.seed = crop, crops_per_image, train, seed
        for rec in self.records:
            if rec.semantic is None:
                raise InputError("record has no semantic label map", rec.source)
            if min(rec.image.shape) < crop:
                raise InputError(f"image {rec.image.shape} is smaller than the {crop}-pixel crop", rec.source)

    def __len__(self) -> int:
        return len(self.records) * self.crops_per_image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rec = self.records[index // self.crops_per_image]
        h, w = rec.image.shape
        c = self.crop
        if self.train:
            y, x = (int(torch.randint(0, n - c + 1, ()).item()) for n in (h, w))
            flips = torch.rand(3) < 0.5
        else:
            rng = np.random.default_rng([self.seed, index])
            y, x, flips = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1)), torch.zeros(3, dtype=bool)
        image = torch.from_numpy(np.ascontiguousarray(rec.image[y : y + c, x : x + c], dtype=np.float32))
        labels = torch.from_numpy(np.ascontiguousarray(rec.semantic[y : y + c, x : x + c]).astype(np.int64))
        # The same flips and rotation for image and labels; micrographs have no preferred orientation.
        if flips[0]:
            image, labels = image.flip(-1), labels.flip(-1)
        if flips[1]:
            image, labels = image.flip(-2), labels.flip(-2)
        if flips[2]:
            image, labels = image.rot90(1, (-2, -1)), labels.rot90(1, (-2, -1))
        return normalize(image.contiguous())[None], labels.contiguous()


class SemanticSegmentationModule(L.LightningModule):
    """Lightning wrapper: multiclass Dice loss, Adam, validation mIoU from a summed confusion matrix.

    Logs ``train/loss`` (step and epoch), ``val/loss`` and ``val/miou`` (dataset-level over the validation
    crops of the epoch).
    """

    def __init__(self, model: nn.Module, num_classes: int, lr: float = 1e-4, weight_decay: float = 1e-5):
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.lr, self.weight_decay = lr, weight_decay
        self.loss = smp.losses.DiceLoss(mode="multiclass", from_logits=True)
        self._confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self.model(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._confusion[:] = 0

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.log("val/loss", self.loss(logits, y), on_epoch=True, batch_size=x.shape[0])
        pred = logits.argmax(dim=1).cpu().numpy()
        for g, p in zip(y.cpu().numpy(), pred, strict=True):
            self._confusion += confusion_matrix(g, p, self.num_classes)

    def on_validation_epoch_end(self) -> None:
        self.log("val/miou", semantic_scores(self._confusion)["miou"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def _load_split(root: Path, split: str, part: str, num_classes: int) -> list[SEMRecord]:
    return load_semantic_folders(root / split, part, classes=range(num_classes))


def finetune_semantic(encoder_state: Mapping[str, torch.Tensor] | str | os.PathLike | None = None,
                      root: str | os.PathLike = DEFAULT_ROOT, split: str = "EBC1", epochs: int | None = None,
                      crop: int | None = None, config: SemanticFinetuneConfig | None = None,
                      **overrides) -> SemanticFinetuneResult:
    """Fine-tune a U-Net++ with the given encoder on one split of a semantic folder layout; score the test set.

    Args:
        encoder_state: encoder initialisation (see :func:`build_semantic_model`); ``None`` = random.
        root: folder holding the splits (``<root>/<split>/{train,val,test}`` and ``*_annot``).
        split: split folder, e.g. ``"EBC1"``.
        epochs, crop: shortcuts for the config fields of the same name (``None``: from ``config``, else the
            defaults 20 and 256).
        config: full settings; ``epochs``, ``crop`` (when given) and ``overrides`` replace its fields.
        **overrides: other :class:`SemanticFinetuneConfig` fields (``backbone``, ``batch_size``, ...).

    Returns:
        :class:`SemanticFinetuneResult`; ``results.json`` (its :meth:`~SemanticFinetuneResult.summary`),
        ``finetune_config.json``, ``metrics.csv`` and ``checkpoints/`` are written into ``config.output_dir``.

    Raises:
        InputError: missing or malformed folders (named), label values outside ``0..num_classes-1``,
            images smaller than the crop.
    """
    from semkit.train.trainer import TrainerConfig, make_trainer, read_history

    base = config.to_dict() if config is not None else {}
    shortcuts = {k: v for k, v in (("epochs", epochs), ("crop", crop)) if v is not None}
    cfg = SemanticFinetuneConfig(**{**base, **shortcuts, **overrides})
    root = Path(root)
    train = _load_split(root, split, "train", cfg.num_classes)
    val = _load_split(root, split, "val", cfg.num_classes)
    test = _load_split(root, split, "test", cfg.num_classes)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps({"split": split, "root": str(root), **cfg.to_dict()}, indent=2))

    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the decoder's initialisation is seeded too
    model = build_semantic_model(cfg.backbone, encoder_state, cfg.num_classes, cfg.arch)
    module = SemanticSegmentationModule(model, cfg.num_classes, cfg.lr, cfg.weight_decay)
    train_loader = DataLoader(SemanticCrops(train, cfg.crop, cfg.crops_per_image, True, cfg.seed),
                              batch_size=cfg.batch_size, shuffle=True, drop_last=len(train) * cfg.crops_per_image
                              > cfg.batch_size, num_workers=cfg.num_workers)
    val_loader = DataLoader(SemanticCrops(val, cfg.crop, cfg.crops_per_image, False, cfg.seed),
                            batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    trainer = make_trainer(TrainerConfig(
        max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices, precision=cfg.precision,
        output_dir=str(out), seed=cfg.seed, monitor="val/miou", mode="max", patience=None,
        max_time=cfg.max_time, limit_train_batches=cfg.limit_train_batches, log_every_n_steps=1,
        enable_progress_bar=cfg.enable_progress_bar))
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    callback = trainer.checkpoint_callback
    if callback is not None and callback.best_model_path:
        state = torch.load(callback.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    best = None if callback is None or callback.best_model_score is None else float(callback.best_model_score)

    names = [Path(r.source).name for r in test]
    predictions = {n: predict_semantic(module.model, _center_crop(r.image, cfg.eval_crop), cfg.eval_tile)
                   for n, r in zip(names, test, strict=True)}
    truth = {n: _center_crop(r.semantic, cfg.eval_crop) for n, r in zip(names, test, strict=True)}
    evaluation = semantic_metrics(truth, predictions, cfg.num_classes)
    encoder = ("random" if encoder_state is None else "state_dict" if isinstance(encoder_state, Mapping)
               else str(encoder_state))
    result = SemanticFinetuneResult(split, evaluation, best, read_history(out), predictions, cfg, encoder)
    (out / RESULTS_FILE).write_text(json.dumps(result.summary(), indent=2, default=float))
    return result


def finetune_semantic_splits(encoder_state: Mapping[str, torch.Tensor] | str | os.PathLike | None = None,
                             root: str | os.PathLike = DEFAULT_ROOT, splits: Sequence[str] = EBC_SPLITS,
                             output_dir: str | os.PathLike = "runs/semantic_finetune", **kwargs) -> pd.DataFrame:
    """:func:`finetune_semantic` on each split (into ``<output_dir>/<split>``); one row of test scores per split.

    Returns:
        DataFrame indexed by ``split`` with ``test_miou_dataset_level``, ``test_miou_image_averaged``,
        ``test_mdice_dataset_level``, ``best_val_miou`` and the per-class IoUs.
    """
    rows = []
    for split in splits:
        result = finetune_semantic(encoder_state, root, split, output_dir=str(Path(output_dir) / split), **kwargs)
        summary = result.summary()
        summary.pop("config")
        rows.append(summary)
    return pd.DataFrame(rows).set_index("split")


def compare_encoders_semantic(encoders: Mapping[str, str | os.PathLike | None],
                              root: str | os.PathLike = DEFAULT_ROOT, splits: Sequence[str] = EBC_SPLITS,
                              output_dir: str | os.PathLike = "runs/semantic_finetune", **kwargs) -> pd.DataFrame:
    """Fine-tune the same U-Net++ from several encoders on the same splits, side by side.

    Args:
        encoders: display name → encoder checkpoint (``None`` = random initialisation), e.g.
            ``{"matssl": "run/encoder.pt", "random": None}``.
        root, splits: the semantic benchmark (see :func:`finetune_semantic_splits`).
        output_dir: runs go to ``<output_dir>/<name>/<split>``.
        **kwargs: :class:`SemanticFinetuneConfig` fields shared by every run (``epochs``, ``crop``, ``seed``...).

    Returns:
        One row per (encoder, split): ``encoder`` (the display name), ``split``, ``encoder_path`` and the
        score columns of :func:`finetune_semantic_splits`.

    Raises:
        InputError: an empty ``encoders`` mapping, or bad data (see :func:`finetune_semantic`).
    """
    if not encoders:
        raise InputError("no encoders to compare")
    tables = []
    for name, state in encoders.items():
        table = finetune_semantic_splits(state, root, splits, output_dir=Path(output_dir) / name, **kwargs)
        tables.append(table.reset_index().rename(columns={"encoder": "encoder_path"}).assign(encoder=name))
    out = pd.concat(tables, ignore_index=True)
    return out[["encoder", "split", *[c for c in out.columns if c not in ("encoder", "split")]]]
