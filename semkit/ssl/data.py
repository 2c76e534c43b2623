"""The unlabeled pretraining pool and its Lightning datamodule.

The pool is either image folders (read with :func:`semkit.data.iter_unlabeled`, databar cropped) or synthetic
SEM images (:func:`semkit.data.make_sem_dataset`). Image names -- the path relative to the common parent of the input folders, or
``synthetic-00012`` -- decide the 80/20 ``ssl_train`` / ``ssl_eval`` split (:func:`semkit.data.curation.split_ssl`)
and the pretraining-size subset (:func:`semkit.data.curation.ablation_subsets`), so both are reproducible across
machines and independent of listing order.

Training samples are random ``crop_size`` crops without rescaling (the SSL-for-SEM study crops 640 x 640 from
1920 x 1200 images), flipped horizontally with p = 0.5; validation crops sit at a fixed, seeded position and are
not flipped, so the validation loss of different epochs is measured on the same pixels.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from semkit.data import SyntheticConfig, iter_unlabeled, make_sem_dataset
from semkit.data.curation import ablation_subsets, split_ssl, tile_image
from semkit.data.io import load_image
from semkit.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class PoolImage:
    """One image of the unlabeled pool.

    Attributes:
        name: unique, machine-independent name (relative path or ``synthetic-NNNNN``).
        source: file path or synthetic identifier (named in errors).
        shape: (H, W) after the databar crop.
        image: the float32 (H, W) array in [0, 1], or ``None`` when it is re-read from ``source`` per crop.
        databar_rows: rows cropped from the bottom when re-reading.
    """

    name: str
    source: str
    shape: tuple[int, int]
    image: np.ndarray | None = None
    databar_rows: int = 0

    def load(self) -> np.ndarray:
        """The (H, W) float32 image."""
        if self.image is not None:
            return self.image
        image, _ = load_image(self.source)
        return image[: image.shape[0] - self.databar_rows] if self.databar_rows else image


def synthetic_config(size: int) -> SyntheticConfig:
    """Synthetic-generator settings for ``size`` x ``size`` pool images.

    Down to 256 px the default particle sizes are kept (particles have a physical size, not a size relative to
    the crop); below that radii shrink with the image so a small test crop still shows whole particles, and the
    particle count follows the area at the default density.
    """
    default = SyntheticConfig()
    scale = min(1.0, size / 256)
    density = (size / 512) ** 2 / scale**2
    lo = max(2, round(default.n_particles[0] * density))
    hi = max(lo + 1, round(default.n_particles[1] * density))
    return SyntheticConfig(
        height=size,
        width=size,
        n_particles=(lo, hi),
        radius_px=(max(2.0, default.radius_px[0] * scale), max(4.0, default.radius_px[1] * scale)),
    )


def build_pool(config) -> list[PoolImage]:
    """All images of the pool described by a :class:`~semkit.ssl.pretrain.PretrainConfig`.

    Folder images smaller than ``crop_size`` on either side raise :class:`InputError` naming the file (the
    study crops without rescaling, so such an image has no valid crop).

    Returns:
        Pool images in listing order (folders in order, files sorted), or ``synthetic_count`` synthetic ones.
        A file reached through two inputs is listed once.

    Raises:
        InputError: a missing folder, an unreadable image or one smaller than the crop.
    """
    crop = config.crop_size
    pool: list[PoolImage] = []
    if not config.data_folders:
        size = config.synthetic_size or max(crop, int(math.ceil(1.25 * crop)))
        for i, rec in enumerate(make_sem_dataset(config.synthetic_count, config.seed, synthetic_config(size))):
            pool.append(PoolImage(f"synthetic-{i:05d}", rec.source, rec.image.shape, rec.image))
        return pool
    inputs = [Path(f) for f in config.data_folders]
    # Names are paths relative to the common parent of the inputs ("EBC1/train/a.png", "EBC2/train/a.png"):
    # unique across folders that reuse file names, and machine independent (no absolute paths), so splits and
    # subsets come out the same everywhere.
    common = Path(os.path.commonpath([str(p.resolve().parent) for p in inputs]))
    seen: set[Path] = set()
    for root in inputs:
        for rec in iter_unlabeled(root, crop_databar=config.crop_databar):
            path = Path(rec.source)
            if path.resolve() in seen:
                log.info("%s: already in the pool through another input", path)
                continue
            seen.add(path.resolve())
            h, w = rec.image.shape
            if h < crop or w < crop:
                raise InputError(
                    f"image is {h}x{w} pixels after the databar crop, smaller than the {crop}x{crop} "
                    "pretraining crop (crops are never rescaled); lower crop_size or remove the image",
                    rec.source,
                )
            pool.append(
                PoolImage(
                    name=path.resolve().relative_to(common).as_posix(),
                    source=rec.source,
                    shape=(h, w),
                    image=rec.image if config.in_memory else None,
                    databar_rows=int(rec.meta.get("databar_rows", 0)),
                )
            )
    return pool


def split_pool(
    pool: Sequence[PoolImage], val_fraction: float, subset_fraction: float, seed: int
) -> tuple[list[PoolImage], list[PoolImage]]:
    """``(train, val)``: the seeded ``ssl_train``/``ssl_eval`` split, then the training subset.

    Args:
        pool: pool images with unique names.
        val_fraction: share held out (0 = no validation).
        subset_fraction: share of the ``ssl_train`` part kept (nested across fractions: 1 % is inside 2 % ...).
        seed: hashing seed of split and subset.

    Raises:
        InputError: an empty pool, or repeated names.
    """
    if not pool:
        raise InputError(
            "the unlabeled pool is empty: no images found in the data folders (or synthetic_count is 0)"
        )
    names = [p.name for p in pool]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise InputError(f"pool image names repeat (same file given twice?): {', '.join(dup)}")
    by_name = {p.name: p for p in pool}
    if val_fraction > 0 and len(pool) > 1:
        table = split_ssl(names, fractions=(1.0 - val_fraction, val_fraction), seed=seed, group=None)
        train_names = table.loc[table["ssl_split"] == "ssl_train", "name"].tolist()
        val_names = table.loc[table["ssl_split"] == "ssl_eval", "name"].tolist()
    else:
        train_names, val_names = names, []
    if subset_fraction < 1.0 and train_names:
        train_names = ablation_subsets(train_names, [subset_fraction], seed=seed)[float(subset_fraction)]
    return [by_name[n] for n in train_names], [by_name[n] for n in val_names]


class RandomCrops(Dataset):
    """Square crops of pool images, optionally flipped, passed through a view transform.

    Args:
        images: pool images (each at least ``crop_size`` on both sides).
        crop_size: crop side in pixels.
        crops_per_image: samples per image; sample ``i`` comes from image ``i // crops_per_image``.
        train: random positions and a horizontal flip with p = 0.5 (torch's RNG, seeded per worker by
            Lightning); ``False``: the position is drawn from ``numpy.random.default_rng([seed, i])`` and
            never flipped, so every epoch sees the same validation pixels.
        transform: maps the ``(1, crop, crop)`` float tensor to the method's sample; ``None`` = identity.
        seed: seed of the fixed validation positions.
        length: samples per epoch; ``None`` = ``len(images) * crops_per_image``. A larger value cycles over the
            images (sample ``i`` comes from image ``(i // crops_per_image) % len(images)``).

    Returns per item:
        ``transform(crop)`` or the crop, a float32 tensor ``(1, crop_size, crop_size)`` in [0, 1].
    """

    def __init__(
        self,
        images: Sequence[PoolImage],
        crop_size: int,
        crops_per_image: int = 1,
        train: bool = True,
        transform: Callable[[torch.Tensor], Any] | None = None,
        seed: int = 0,
        length: int | None = None,
    ):
        self.images = list(images)
        self.length = length
        self.crop_size = int(crop_size)
        self.crops_per_image = int(crops_per_image)
        self.train = train
        self.transform = transform
        self.seed = seed
        for p in self.images:
            if min(p.shape) < self.crop_size:
                raise InputError(f"image is {p.shape[0]}x{p.shape[1]}, smaller than the {crop_size} crop", p.source)

    def __len__(self) -> int:
        return len(self.images) * self.crops_per_image if self.length is None else int(self.length)

    def __getitem__(self, index: int):
        item = self.images[(index // self.crops_per_image) % len(self.images)]
        image = item.load()
        h, w = image.shape
        c = self.crop_size
        if self.train:
            y = int(torch.randint(0, h - c + 1, ()).item())
            x = int(torch.randint(0, w - c + 1, ()).item())
            flip = bool(torch.rand(()) < 0.5)
        else:
            rng = np.random.default_rng([self.seed, index])
            y, x, flip = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1)), False
        crop = torch.from_numpy(np.ascontiguousarray(image[y : y + c, x : x + c], dtype=np.float32))[None]
        if flip:
            crop = torch.flip(crop, dims=(-1,))
        return crop if self.transform is None else self.transform(crop)


def patch_stride(patch: int, overlap: float) -> int:
    """Stride between neighbouring patches that share ``overlap`` (a fraction in ``[0, 1)``) of their edge.

    Raises:
        InputError: ``overlap`` outside ``[0, 1)``.
    """
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"patch overlap must lie in [0, 1), got {overlap}")
    return max(1, round(patch * (1.0 - overlap)))


def patch_pool(images: Sequence[PoolImage], patch: int, overlap: float) -> list[PoolImage]:
    """Replace each pool image by its overlapping patches (:func:`overlapping_patches`), for
    the MatSSL study's pretraining on patches cut with overlap; :class:`UnlabeledDataModule` applies it to
    both splits when ``config.patch_overlap`` is set (``patch = crop_size``).

    Split the pool into training and validation images *before* cutting (e.g. cut ``datamodule.train_images``),
    so patches of one image never land on both sides. Patch names are ``<image name>@<y>,<x>``.

    Raises:
        InputError: an image smaller than ``patch`` (named).
    """
    stride = patch_stride(patch, overlap)
    out = []
    for item in images:
        image = item.load()
        if image.ndim != 2 or min(image.shape) < patch:
            raise InputError(f"image {image.shape} is smaller than the {patch}-pixel patch", item.source)
        tiles, offsets, _ = tile_image(image, tile=patch, stride=stride)
        out.extend(PoolImage(f"{item.name}@{y},{x}", item.source, (patch, patch), np.ascontiguousarray(t))
                   for t, (y, x) in zip(tiles, offsets, strict=True))
    return out



class UnlabeledDataModule(L.LightningDataModule):
    """Lightning datamodule of the unlabeled pool described by a :class:`~semkit.ssl.pretrain.PretrainConfig`.

    The pool is built and split when the datamodule is created, so a bad folder or an empty pool fails at once
    (before any process is spawned). Reads ``data_folders``, ``synthetic_count``, ``synthetic_size``,
    ``crop_size``, ``crops_per_image``, ``subset_fraction``, ``subset_budget``, ``val_fraction``, ``batch_size``,
    ``num_workers``,
    ``seed``, ``crop_databar``, ``in_memory``, ``patch_overlap`` (``None``: random crops anywhere in each image;
    a fraction: the images are replaced by grid patches of ``crop_size`` sharing that fraction of their edge,
    :func:`patch_pool`, so image counts are patch counts).

    Args:
        config: the pretraining configuration.
        transform: per-sample view transform (the method's ``view_transform(config)``); ``None`` = the crop.
        pool: an explicit list of :class:`PoolImage` instead of building it from ``config`` (tests, notebooks).

    Raises:
        InputError: an empty pool or images smaller than the crop (at creation); a training split smaller
            than one batch per process (:meth:`check_batch`, also run in ``setup``).
    """

    def __init__(self, config, transform: Callable[[torch.Tensor], Any] | None = None,
                 pool: Sequence[PoolImage] | None = None):
        super().__init__()
        self.config = config
        self.transform = transform
        pool = build_pool(config) if pool is None else list(pool)
        full_train, self.val_images = split_pool(pool, config.val_fraction, 1.0, config.seed)
        self.train_images, _ = split_pool(pool, config.val_fraction, config.subset_fraction, config.seed)
        overlap = getattr(config, "patch_overlap", None)
        if overlap is not None:  # cut after the split: patches of one image never land on both sides
            full_train = patch_pool(full_train, config.crop_size, overlap)
            self.train_images = patch_pool(self.train_images, config.crop_size, overlap)
            self.val_images = patch_pool(self.val_images, config.crop_size, overlap) if self.val_images else []
        if not self.train_images:
            raise InputError("the training part of the unlabeled pool is empty")
        # subset_budget "steps": a subset's epoch draws exactly as many crops as an epoch of the whole ssl_train
        # part (cycling over the subset's images), so every fraction of the ablation gets the same number of
        # updates: data size varies, compute does not
        length = None
        if getattr(config, "subset_budget", "epochs") == "steps":
            length = len(full_train) * config.crops_per_image
        self.train_dataset = RandomCrops(self.train_images, config.crop_size, config.crops_per_image, True,
                                         transform, config.seed, length=length)
        self.val_dataset = RandomCrops(self.val_images, config.crop_size, config.crops_per_image, False,
                                       transform, config.seed)

    @property
    def n_train_images(self) -> int:
        return len(self.train_images)

    @property
    def n_val_images(self) -> int:
        return len(self.val_images)

    def check_batch(self, world_size: int = 1) -> None:
        """Raise :class:`InputError` when a process would not get one full training batch.

        Training drops the last incomplete batch (contrastive losses and GRN statistics need full batches), so
        each of the ``world_size`` processes needs at least ``batch_size`` crops.
        """
        per_rank = math.ceil(len(self.train_dataset) / max(1, world_size))
        if per_rank < self.config.batch_size:
            raise InputError(
                f"the training pool gives {len(self.train_dataset)} crops ({self.n_train_images} images x "
                f"{self.config.crops_per_image} crops) for {world_size} process(es), fewer than one batch of "
                f"{self.config.batch_size} per process; lower batch_size, raise crops_per_image or add images"
            )

    def setup(self, stage: str | None = None) -> None:
        world = self.trainer.world_size if self.trainer is not None else 1
        self.check_batch(world)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_dataset,
            batch_size=self.config.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader | list:
        if not len(self.val_dataset):
            return []
        return DataLoader(
            self.val_dataset,
            batch_size=min(self.config.batch_size, len(self.val_dataset)),
            shuffle=False,
            drop_last=False,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


def sample_crops(config, n: int = 4, pool: Sequence[PoolImage] | None = None) -> torch.Tensor:
    """``n`` fixed validation crops (training crops when there is no validation split) of ``config``'s pool.

    Returns:
        float tensor (n', 1, crop_size, crop_size) in [0, 1], n' = min(n, available crops).
    """
    dm = UnlabeledDataModule(config, pool=pool)
    dataset = dm.val_dataset if len(dm.val_dataset) else RandomCrops(dm.train_images, config.crop_size, train=False,
                                                                     seed=config.seed)
    return torch.stack([dataset[i] for i in range(min(n, len(dataset)))])
