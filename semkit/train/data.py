"""Training data: random crops of labelled SEM records with augmentations applied to image, masks and boxes alike.

:class:`InstanceDataset` turns a list of :class:`~semkit.data.records.SEMRecord` into ``(image, target)`` pairs
for torchvision's Mask R-CNN (and, with ``target_kind="unet"``, the two-channel targets of the U-Net baseline):

1. **crop** -- training draws a random ``crop_size`` × ``crop_size`` window (the records are large images:
   BAM is 704 × 1024, Phenom 1200 × 1920), so one epoch is ``crops_per_image`` windows per image. An image
   smaller than the crop is zero-padded at the bottom/right (``pad_small=True``; the padding is background)
   or rejected with an :class:`~semkit.errors.InputError` naming it. Evaluation uses whole images;
2. **instances of the window** -- every particle with at least ``min_visible_px`` visible pixels becomes one
   binary mask (G, h, w); smaller remnants cut off by the window become background. Boxes are derived from the
   masks in *pixel-edge* coordinates (``x1 = last column + 1``), the convention under which torchvision's
   geometric transforms of masks and boxes agree exactly. The expert certainty flag of each particle is kept;
3. **augment** (training only, :func:`make_augmentation`) -- ``torchvision.transforms.v2`` on the
   ``tv_tensors`` image, masks and boxes together: horizontal/vertical flips and 90° rotations move all three
   (exactly: 90° rotations permute pixels, no interpolation), brightness/contrast jitter, gamma, Gaussian blur
   and Gaussian noise act on the image only.

A window without particles is a valid negative sample (empty ``boxes`` (0, 4) and ``masks`` (0, h, w)); torchvision's
Mask R-CNN trains on such images. Records without instance labels cannot be used and raise.

:class:`SEMDataModule` wraps train/val/test record lists for Lightning; :func:`select_bucket` keeps one
magnification bucket (the uncertainty study trained one model per bucket); :func:`bam_split` is the fixed
20/5/5 split of the BAM TiO2 set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from semkit.data.records import SEMRecord
from semkit.errors import InputError
from semkit.models.unet import unet_targets

TargetKind = Literal["maskrcnn", "unet"]

#: BAM TiO2 split: (train, val, test) image counts of the 30 images.
BAM_SPLIT_COUNTS = (20, 5, 5)
#: Seed of the hash that orders the BAM file stems for :func:`bam_split`.
BAM_SPLIT_SEED = 0


@dataclass
class DataConfig:
    """Cropping, batching and augmentation settings (saved with every run).

    Attributes:
        crop_size: side of the square training windows in pixels; ``None`` trains on whole images.
        crops_per_image: random windows per image and epoch (epoch length = this × number of images).
        batch_size: training batch size (validation and test use 1: whole images of any size).
        num_workers: DataLoader worker processes (0 = in the main process).
        pad_small: zero-pad images smaller than the crop (else raise :class:`InputError`).
        min_visible_px: particles with fewer visible pixels in a window are dropped (set to background).
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rotate90: rotate by a random multiple of 90° (uniform over 0, 90, 180, 270).
        brightness: brightness jitter: factor drawn from [1 - b, 1 + b] (0 = off).
        contrast: contrast jitter: factor drawn from [1 - c, 1 + c] (0 = off).
        blur_p: probability of a Gaussian blur.
        blur_sigma: range of the blur σ in pixels.
        gamma: gamma correction ``x ** γ`` with γ log-uniform in [1 / (1 + g), 1 + g] (0 = off): SEM
            brightness curves differ between detectors and operators.
        noise_p: probability of additive Gaussian noise.
        noise_std: the noise σ is drawn uniformly from [0, noise_std] (images in [0, 1]; clipped back to it):
            scan speed and dose change the shot noise of SEM images.
        magnification_bucket: keep only records of this bucket (``"low"``/``"high"``); ``None`` keeps all.
    """

    crop_size: int | None = 256
    crops_per_image: int = 4
    batch_size: int = 2
    num_workers: int = 0
    pad_small: bool = True
    min_visible_px: int = 4
    hflip: float = 0.5
    vflip: float = 0.5
    rotate90: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    gamma: float = 0.0
    noise_p: float = 0.0
    noise_std: float = 0.05
    magnification_bucket: str | None = None

    def __post_init__(self) -> None:
        self.blur_sigma = tuple(float(s) for s in self.blur_sigma)
        if self.crop_size is not None and self.crop_size < 16:
            raise ValueError(f"crop_size must be at least 16 px or None, got {self.crop_size}")
        if self.crops_per_image < 1 or self.batch_size < 1:
            raise ValueError("crops_per_image and batch_size must be positive")
        if self.gamma < 0 or self.noise_std < 0:
            raise ValueError("gamma and noise_std must be >= 0")
        for name in ("hflip", "vflip", "blur_p", "noise_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


def make_augmentation(config: DataConfig) -> v2.Transform:
    """The training augmentation: geometric transforms on image, masks and boxes; photometric on the image.

    Inputs are ``tv_tensors.Image`` (1, H, W) float, ``tv_tensors.Mask`` (G, H, W) and
    ``tv_tensors.BoundingBoxes`` (G, 4) XYXY in pixel-edge coordinates; anything else (e.g. the certainty flags)
    passes through unchanged. With every augmentation switched off it is the identity.
    """
    steps: list[v2.Transform] = []
    if config.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(config.hflip))
    if config.vflip > 0:
        steps.append(v2.RandomVerticalFlip(config.vflip))
    if config.rotate90:
        # expand=True keeps every pixel for non-square inputs; multiples of 90° are exact pixel permutations.
        steps.append(v2.RandomChoice([v2.RandomRotation((a, a), expand=True) for a in (0, 90, 180, 270)]))
    if config.brightness > 0 or config.contrast > 0:
        steps.append(v2.ColorJitter(brightness=config.brightness or None, contrast=config.contrast or None))
    if config.blur_p > 0:
        # kernel of about 6σ for the largest σ, odd
        kernel = 2 * int(np.ceil(3 * config.blur_sigma[1])) + 1
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=config.blur_sigma)], p=config.blur_p))
    if config.gamma > 0:
        steps.append(RandomGamma(config.gamma))
    if config.noise_p > 0 and config.noise_std > 0:
        steps.append(v2.RandomApply([RandomGaussianNoise(config.noise_std)], p=config.noise_p))
    return v2.Compose(steps) if steps else v2.Identity()


class RandomGamma(v2.Transform):
    """``image ** γ`` with ``log γ`` uniform in ``[-log(1 + g), log(1 + g)]``; images only (masks and boxes pass
    through unchanged). Draws from torch's RNG, so seeding makes it repeatable."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, g: float):
        super().__init__()
        self.log_range = float(np.log1p(g))

    def make_params(self, flat_inputs):
        u = float(torch.empty(()).uniform_(-self.log_range, self.log_range))
        return {"gamma": float(np.exp(u))}

    def transform(self, inpt, params):
        return v2.functional.adjust_gamma(inpt, params["gamma"])


class RandomGaussianNoise(v2.Transform):
    """Additive Gaussian noise of σ uniform in [0, ``max_std``], clipped to [0, 1]; images only."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, max_std: float):
        super().__init__()
        self.max_std = float(max_std)

    def make_params(self, flat_inputs):
        return {"std": float(torch.empty(()).uniform_(0.0, self.max_std))}

    def transform(self, inpt, params):
        noisy = inpt + params["std"] * torch.randn_like(inpt)
        return tv_tensors.wrap(noisy.clamp(0.0, 1.0), like=inpt)


def select_bucket(records: Sequence[SEMRecord], bucket: str | None) -> list[SEMRecord]:
    """Records of one magnification bucket (all records for ``None``).

    Raises:
        InputError: no record is in ``bucket`` (the message lists the buckets present).
    """
    if bucket is None:
        return list(records)
    kept = [r for r in records if r.magnification_bucket == bucket]
    if records and not kept:
        present = sorted({str(r.magnification_bucket) for r in records})
        raise InputError(f"no image in magnification bucket {bucket!r}; buckets present: {', '.join(present)}")
    return kept


def check_records(records: Sequence[SEMRecord], role: str = "training") -> list[SEMRecord]:
    """Validate labelled records for training/evaluation; raise :class:`InputError` naming the bad image.

    Re-runs :meth:`SEMRecord.validate` (arrays may have been replaced after construction), and requires
    instance labels and image values within [0, 1] (e.g. a raw 16-bit image put in a record by hand).
    """
    records = list(records)
    for i, rec in enumerate(records):
        src = rec.source or f"{role} record {i}"
        if not isinstance(rec, SEMRecord):
            raise InputError(f"expected SEMRecord, got {type(rec).__name__}", src)
        try:
            rec.validate()
        except InputError as err:
            raise InputError(err.reason, src) from None
        if rec.instances is None:
            raise InputError(f"{role} needs instance labels; this image has none", src)
        lo, hi = float(rec.image.min(initial=0.0)), float(rec.image.max(initial=0.0))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise InputError(f"image values must lie in [0, 1] (load it with semkit.data.load_image), "
                             f"found [{lo:g}, {hi:g}]", src)
    return records


def instance_targets(instances: np.ndarray, certain: np.ndarray | None, min_visible_px: int = 1,
                     masks: bool = True) -> dict:
    """Mask R-CNN targets of one label map (e.g. a window).

    Args:
        instances: int (h, w) label map; labels need not be consecutive.
        certain: bool flags indexed by label − 1 of the *original* labels, or ``None``.
        min_visible_px: labels with fewer pixels are dropped.
        masks: build the (G, h, w) mask stack (skip it where only the label map is needed: a 704 × 1024
            image with 150 particles needs 108 MB of masks).

    Returns:
        dict with ``masks`` (G, h, w) uint8 (if ``masks``), ``boxes`` (G, 4) float32 XYXY pixel edges,
        ``labels`` (G,) int64 ones, ``ids`` (G,) int64 original labels in increasing order, ``instances``
        (h, w) int64 label map with particle ``i`` (mask order) as ``i + 1`` and, if ``certain`` is given,
        ``certain`` (G,) bool.
    """
    counts = np.bincount(instances.ravel().astype(np.int64))
    ids = np.flatnonzero(counts >= max(min_visible_px, 1))
    ids = ids[ids > 0]
    h, w = instances.shape
    boxes = np.zeros((len(ids), 4), dtype=np.float32)
    # one pass over the pixels instead of one full comparison per particle
    lookup = np.zeros(counts.shape[0], dtype=np.int64)
    lookup[ids] = np.arange(1, len(ids) + 1)
    relabelled = lookup[instances]
    if len(ids):
        rr, cc = np.nonzero(relabelled)
        ss = relabelled[rr, cc] - 1
        for stat, coord, agg in ((0, cc, np.minimum), (1, rr, np.minimum), (2, cc, np.maximum), (3, rr, np.maximum)):
            init = np.full(len(ids), np.iinfo(np.int64).max if agg is np.minimum else -1, dtype=np.int64)
            agg.at(init, ss, coord)
            boxes[:, stat] = init + (1 if stat >= 2 else 0)
    target = {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.ones(len(ids), dtype=torch.int64),
        "ids": torch.from_numpy(ids.astype(np.int64)),
        "instances": torch.from_numpy(relabelled),
    }
    if masks:
        stack = np.zeros((len(ids), h, w), dtype=np.uint8)
        if len(ids):
            stack[ss, rr, cc] = 1
        target["masks"] = torch.from_numpy(stack)
    if certain is not None:
        target["certain"] = torch.from_numpy(np.asarray(certain, dtype=bool)[ids - 1])
    return target


def label_map_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(G, h, w) non-overlapping binary masks → int64 (h, w) label map, mask ``i`` painted as ``i + 1``."""
    if masks.shape[0] == 0:
        return torch.zeros(masks.shape[1:], dtype=torch.int64)
    # max over the stack gives (value, first index) per pixel without a (G, h, w) int64 temporary
    value, index = masks.max(dim=0)
    return torch.where(value > 0, index + 1, 0)


class InstanceDataset(Dataset):
    """``(image, target)`` samples of labelled SEM records (see the module docstring).

    Args:
        records: labelled records (validated; see :func:`check_records`).
        config: crop/augmentation settings.
        train: random windows + augmentation (``True``) or whole images, unchanged (``False``).
        target_kind: ``"maskrcnn"`` or ``"unet"`` (adds ``"unet"``: (2, h, w) float32 from
            :func:`semkit.models.unet.unet_targets`).

    Each item is ``(image (1, h, w) float32, target)`` with the keys of :func:`instance_targets`
    (``instances`` is the label map of the sample, labels 1..G in mask order), ``index`` (record index) and
    ``origin`` (y, x) of the window in the record's image. Evaluation samples (``train=False``) carry no
    ``masks`` stack: validation needs only the label map.

    Raises:
        InputError: naming the image, for records without labels, invalid arrays, or (``pad_small=False``) an
            image smaller than the crop.
    """

    def __init__(self, records: Sequence[SEMRecord], config: DataConfig | None = None, train: bool = True,
                 target_kind: TargetKind = "maskrcnn"):
        self.config = config or DataConfig()
        if target_kind not in ("maskrcnn", "unet"):
            raise KeyError(f"unknown target_kind {target_kind!r}; choose 'maskrcnn' or 'unet'")
        self.records = check_records(records, "training" if train else "evaluation")
        self.train = train
        self.target_kind = target_kind
        self.augment = make_augmentation(self.config) if train else None
        crop = self.config.crop_size
        if train and crop is not None and not self.config.pad_small:
            for rec in self.records:
                if min(rec.image.shape) < crop:
                    raise InputError(f"image {rec.image.shape[0]} × {rec.image.shape[1]} is smaller than the "
                                     f"{crop} × {crop} crop (set pad_small=True to zero-pad it)", rec.source or None)

    def __len__(self) -> int:
        per = self.config.crops_per_image if self.train and self.config.crop_size is not None else 1
        return len(self.records) * per

    def __getitem__(self, idx: int):
        index = idx % len(self.records)
        rec = self.records[index]
        image, instances = rec.image, rec.instances
        origin = (0, 0)
        if self.train and self.config.crop_size is not None:
            image, instances, origin = random_crop(image, instances, self.config.crop_size)
        target = instance_targets(instances, rec.certain, self.config.min_visible_px if self.train else 1,
                                  masks=self.train)
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image))[None])
        if self.augment is not None:
            h, w = image.shape
            boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
            image_t, masks, boxes = self.augment(image_t, tv_tensors.Mask(target["masks"]), boxes)
            target["masks"], target["boxes"] = masks.as_subclass(torch.Tensor), boxes.as_subclass(torch.Tensor)
            target["instances"] = label_map_from_masks(target["masks"])
        target["index"] = index
        target["origin"] = origin
        if self.target_kind == "unet":
            target["unet"] = torch.from_numpy(unet_targets(target["instances"].numpy()))
        return image_t.as_subclass(torch.Tensor).float(), target


def random_crop(image: np.ndarray, instances: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """A uniformly random ``size`` × ``size`` window (torch RNG, so ``seed_everything`` makes it repeatable).

    Images smaller than ``size`` along an axis are zero-padded at the bottom/right first (labels with 0).

    Returns:
        ``(image window, label window, (y0, x0))``.
    """
    h, w = image.shape
    if h < size or w < size:
        pad = ((0, max(size - h, 0)), (0, max(size - w, 0)))
        image, instances = np.pad(image, pad), np.pad(instances, pad)
        h, w = image.shape
    y0 = int(torch.randint(0, h - size + 1, ()).item())
    x0 = int(torch.randint(0, w - size + 1, ()).item())
    return image[y0:y0 + size, x0:x0 + size], instances[y0:y0 + size, x0:x0 + size], (y0, x0)


def collate(batch):
    """Lists of images and targets (Mask R-CNN takes lists; images may differ in size)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


class SEMDataModule(L.LightningDataModule):
    """Lightning data module over train/val/test record lists.

    Args:
        train, val, test: labelled records; ``val`` drives early stopping and threshold search; ``test`` is
            optional. The magnification-bucket filter of ``config`` is applied to all three.
        config: :class:`DataConfig`.
        target_kind: ``"maskrcnn"`` or ``"unet"``.
    """

    def __init__(self, train: Sequence[SEMRecord], val: Sequence[SEMRecord], test: Sequence[SEMRecord] = (),
                 config: DataConfig | None = None, target_kind: TargetKind = "maskrcnn"):
        super().__init__()
        self.config = config or DataConfig()
        bucket = self.config.magnification_bucket
        self.train_records = select_bucket(train, bucket)
        self.val_records = select_bucket(val, bucket) if val else []
        self.test_records = select_bucket(test, bucket) if test else []
        if not self.train_records:
            raise InputError("no training images")
        self.target_kind = target_kind
        self.train_set = InstanceDataset(self.train_records, self.config, True, target_kind)
        self.val_set = InstanceDataset(self.val_records, self.config, False, target_kind)
        self.test_set = InstanceDataset(self.test_records, self.config, False, target_kind)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.config.batch_size, shuffle=True, collate_fn=collate,
                          num_workers=self.config.num_workers, persistent_workers=self.config.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1, shuffle=False, collate_fn=collate,
                          num_workers=self.config.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=1, shuffle=False, collate_fn=collate,
                          num_workers=self.config.num_workers)


def bam_split(root: str | Path, **load_kwargs) -> dict[str, list[SEMRecord]]:
    """The fixed 20/5/5 train/val/test split of the BAM TiO2 set (``../shared/data/bam-tio2-sem``).

    How: the 30 file stems are ordered by ``sha256("0\\x00" + stem)`` (seed :data:`BAM_SPLIT_SEED` = 0) and
    cut into 20/5/5 -- :func:`semkit.data.curation.split_labeled` with fractions 20/30, 5/30, 5/30 and no
    stratification (all 30 images are 50 kX, the "high" bucket). A hash rather than sorted names because the
    stems are acquisition numbers: sorted order would put neighbouring fields of view of one session into the
    same split. With the published file names this gives

    * val: 1908258, 1908268, 1908290, 1908304, 1908312
    * test: 1908264, 1908272, 1908296, 1908316, 1908322
    * train: the other 20.

    Args:
        root: the BAM folder (``images/``, ``instances/``, ``measurable/``).
        **load_kwargs: passed to :func:`semkit.data.load_bam` (databar crop and measurable-mask certainty
            are its defaults; e.g. ``min_area_px=10`` drops the 1-px fragments between separating lines).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` records with ``split`` set, each list sorted by name.
    """
    from semkit.data.bam import load_bam
    from semkit.data.curation import split_labeled

    records = load_bam(root, **load_kwargs)
    n_total = sum(BAM_SPLIT_COUNTS)
    fractions = tuple(c / n_total for c in BAM_SPLIT_COUNTS)
    table = split_labeled([r.name for r in records], fractions=fractions, seed=BAM_SPLIT_SEED, stratify=None)
    split_of = dict(zip(table["name"], table["split"], strict=True))
    out: dict[str, list[SEMRecord]] = {"train": [], "val": [], "test": []}
    for rec in records:
        rec.split = split_of[rec.name]
        out[rec.split].append(rec)
    return out
