"""What the interpretation figures run on: encoders named by a "checkpoint" string, and example images.

A checkpoint string is one of

* ``"random"`` -- the untrained encoder (drawn with a fixed seed, so figures are reproducible);
* ``"imagenet"`` -- timm's ImageNet weights (offline without a local copy: reported unavailable, see
  :func:`load_encoders`);
* the path of a semkit encoder checkpoint (``encoder.pt`` of :func:`semkit.ssl.pretrain`, any plain timm
  state dict); its architecture is read from the ``encoder.json`` next to it when there is one;
* a pretraining run folder holding ``encoder.pt``;
* a semkit model folder (:func:`semkit.models.save_model`: fine-tuned Mask R-CNN or U-Net) or a fine-tuning
  seed folder holding ``model/`` -- its encoder is used as it was fine-tuned.

Example images (:func:`example_records`) are image files (databar cropped, optionally centre-cropped) or, when
none are given, two synthetic SEM images with exact labels: a low-magnification-looking one (many small
particles) and a high-magnification-looking one (a few large particles).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semkit.data.records import SEMRecord
from semkit.errors import InputError

NAMED_CHECKPOINTS = ("random", "imagenet")


@dataclass
class Encoder:
    """An encoder to look at, or the reason it could not be loaded.

    Attributes:
        label: short unique name for tables and figure titles.
        checkpoint: the checkpoint string it was loaded from.
        kind: ``"random"``, ``"imagenet"``, ``"encoder"`` (a state-dict file) or ``"model"`` (a model folder).
        backbone: timm backbone name (:data:`semkit.models.BACKBONES`).
        module: runs the encoder on ``(B, 1, H, W)`` input; ``None`` when unavailable.
        normalise_input: whether inputs are normalised first (all but U-Net encoders, see
            :func:`semkit.interpret.capture_features`).
        error: why it is unavailable (``None`` when loaded).
    """

    label: str
    checkpoint: str
    kind: str
    backbone: str
    module: nn.Module | None = None
    normalise_input: bool = True
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.module is not None


def checkpoint_label(checkpoint: str | os.PathLike) -> str:
    """Short name of a checkpoint: the name itself, or the last two parts of its path (``02/encoder.pt``)."""
    text = str(checkpoint)
    if text in NAMED_CHECKPOINTS:
        return text
    parts = Path(text).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else text


def load_encoder(checkpoint: str | os.PathLike, backbone: str = "convnextv2_atto",
                 imagenet_file: str | os.PathLike | None = None, seed: int = 0, label: str | None = None) -> Encoder:
    """Load the encoder a checkpoint string names (see the module docstring), in eval mode on the CPU.

    Args:
        checkpoint: ``"random"``, ``"imagenet"``, an encoder file, a pretraining run folder, a model folder.
        backbone: architecture for ``"random"``/``"imagenet"`` and for encoder files without ``encoder.json``.
        imagenet_file: local ImageNet weights for ``"imagenet"``.
        seed: seed of the random initialisation (``"random"`` only).
        label: display name; default :func:`checkpoint_label`, prefixed with the SSL method when
            ``encoder.json`` names it (``"fcmae · 02/encoder.pt"``); for a model folder :func:`model_label` +
            ``" (fine-tuned)"``.

    Raises:
        semkit.models.WeightsUnavailableError: ImageNet weights unavailable offline.
        InputError: missing or unreadable file, or weights that do not fit the architecture.
        KeyError: unknown backbone name (lists the valid ones).
    """
    from semkit.models.backbones import create_backbone

    text = str(checkpoint)
    if text == "random":
        # a fixed seed makes the "no pretraining" maps reproducible without touching the global RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = create_backbone(backbone, init="random")
        return Encoder(label or text, text, "random", backbone, module.eval())
    if text == "imagenet":
        module = create_backbone(backbone, init="imagenet", imagenet_file=imagenet_file)
        return Encoder(label or text, text, "imagenet", backbone, module.eval())
    path = Path(text)
    if not path.exists():
        raise InputError(f"checkpoint not found; use {' or '.join(map(repr, NAMED_CHECKPOINTS))}, an encoder "
                         "file, a pretraining run folder or a model folder", path)
    model_dir = _model_folder(path)
    if model_dir is not None:
        return _encoder_of_model(model_dir, text, label)
    if path.is_dir():
        from semkit.ssl.pretrain import ENCODER_FILE

        if not (path / ENCODER_FILE).is_file():
            raise InputError(f"folder holds neither {ENCODER_FILE} nor a model (config.json + weights.pt)", path)
        path = path / ENCODER_FILE
    meta = _encoder_meta(path)
    backbone = meta.get("backbone", backbone)
    module = create_backbone(backbone, init=path)
    default = f"{meta['method']} · {checkpoint_label(text)}" if "method" in meta else checkpoint_label(text)
    return Encoder(label or default, text, "encoder", backbone, module.eval())


def load_encoders(checkpoints: Sequence[str | os.PathLike], backbone: str = "convnextv2_atto",
                  imagenet_file: str | os.PathLike | None = None, seed: int = 0) -> list[Encoder]:
    """:func:`load_encoder` for each checkpoint; ImageNet weights that cannot be had offline do not stop the rest.

    Such a checkpoint comes back with ``module=None`` and ``error`` saying why (``available`` is False), so a
    notebook reports it and goes on. Any other failure (a missing or broken file) is raised: that is a typo or
    a damaged run, not something to skip silently. Equal labels are made unique by suffixing ``#2``, ``#3``...
    """
    from semkit.models.backbones import WeightsUnavailableError

    out: list[Encoder] = []
    for checkpoint in checkpoints:
        try:
            out.append(load_encoder(checkpoint, backbone, imagenet_file, seed))
        except WeightsUnavailableError as err:
            out.append(Encoder(checkpoint_label(checkpoint), str(checkpoint), "imagenet", backbone, None,
                               error=str(err)))
    seen: dict[str, int] = {}
    for enc in out:
        seen[enc.label] = seen.get(enc.label, 0) + 1
        if seen[enc.label] > 1:
            enc.label = f"{enc.label}#{seen[enc.label]}"
    return out


def load_models(paths: Sequence[str | os.PathLike]) -> dict[str, tuple[nn.Module, object]]:
    """Fine-tuned models for CAMs: ``{label: (model, postprocess)}`` from model folders (or seed folders holding
    ``model/``), loaded with :func:`semkit.models.load_model` (eval mode, CPU), labelled by :func:`model_label`
    (``#2``, ``#3``... for repeats).

    Raises:
        InputError: a path that is not a model folder, or a broken one.
    """
    from semkit.models.io import load_model

    out: dict[str, tuple[nn.Module, object]] = {}
    for path in paths:
        folder = _model_folder(Path(path))
        if folder is None:
            raise InputError("not a semkit model folder (config.json + weights.pt, or a folder holding model/)",
                             path)
        model, postprocess, _ = load_model(folder)
        label = base = model_label(model)
        n = 1
        while label in out:
            n += 1
            label = f"{base}#{n}"
        out[label] = (model, postprocess)
    return out


def model_label(model: nn.Module) -> str:
    """``"<architecture> · <encoder init>"`` of a fine-tuned model, e.g. ``"maskrcnn · 02/encoder.pt"``: the
    initialisation is what an SSL comparison varies."""
    from semkit.models.io import model_settings

    settings = model_settings(model)
    arch = getattr(settings, "arch", "maskrcnn")
    return f"{arch} · {checkpoint_label(getattr(settings, 'init', '?'))}"


def demo_models(output_dir: str | os.PathLike, backbone: str = "convnextv2_atto", quick: bool = True,
                seed: int = 0) -> list[Path]:
    """Fine-tune a small Mask R-CNN and a U-Net on synthetic images so the CAM figures have models to explain.

    Both go through :func:`semkit.train.finetune` (random encoder initialisation, no threshold search). Quick:
    5 images of 96 px, one epoch -- seconds on a CPU, only enough to show the pipeline. The Mask R-CNN keeps
    fewer test-time proposals than :data:`semkit.train.finetune.QUICK_MASKRCNN` (200 → 100) in quick mode,
    because Ablation-CAM runs the detector once per channel of the target layer.

    Returns:
        The two model folders (Mask R-CNN first), under ``output_dir/finetune_<model>/seed_<seed>/model``.
    """
    from semkit.train.finetune import QUICK_MASKRCNN, FinetuneConfig, finetune

    maskrcnn = {**QUICK_MASKRCNN, "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 100} if quick else {}
    folders = []
    for model in ("maskrcnn", "unet"):
        config = FinetuneConfig(
            model=model, backbone=backbone, synthetic_images=5 if quick else 20,
            synthetic_size=96 if quick else 256, epochs=1 if quick else 20, crop_size=64 if quick else 256,
            crops_per_image=2 if quick else 4, seed=seed, threshold_grid="none" if quick else "quick",
            maskrcnn=maskrcnn, save_predictions=False, enable_progress_bar=not quick, patience=None if quick else 5,
            output_dir=str(Path(output_dir) / f"finetune_{model}"))
        folders.append(Path(finetune(config)["repeats"][0]["model_dir"]))
    return folders


def example_records(images: Sequence[str | os.PathLike] = (), size: int = 128, seed: int = 0) -> list[SEMRecord]:
    """The images to interpret.

    Args:
        images: image files (databar detected and cropped); empty → two synthetic images with exact labels,
            ``low-magnification`` (many small particles) and ``high-magnification`` (a few large ones).
        size: side of the synthetic images; image files larger than ``size`` are centre-cropped to
            ``size`` × ``size`` (0 keeps them whole). Sides that are multiples of 32 avoid padding.
        seed: seed of the synthetic images.

    Returns:
        Records; synthetic ones carry ``instances`` and ``certain`` (ground truth for the CAM figures), files
        have ``instances=None``.

    Raises:
        InputError: an unreadable image file, or a synthetic ``size`` below 32.
    """
    if images:
        from semkit.data.folders import load_unlabeled

        records = load_unlabeled([Path(p) for p in images], recursive=False)
        return [_centre_crop(r, size) for r in records] if size else records
    from dataclasses import replace

    from semkit.data.synthetic import SyntheticConfig, make_sem_record

    if size < 32:
        raise InputError(f"synthetic example images need size >= 32, got {size}")
    area = size * size
    settings = {
        # many small particles over a wide field (pixel size so the field of view is ~60 µm: "low" bucket)
        "low-magnification": SyntheticConfig(height=size, width=size, radius_px=(2.5, 5.0),
                                             n_particles=(area // 250, area // 150), pixel_size_nm=60_000 / size),
        # a few large particles over a narrow field ("high" bucket)
        "high-magnification": SyntheticConfig(height=size, width=size, radius_px=(size / 10, size / 5),
                                              n_particles=(3, 6), pixel_size_nm=7.5),
    }
    out = []
    for i, (name, config) in enumerate(settings.items()):
        rec = make_sem_record(seed, config, index=i)
        out.append(replace(rec, source=f"synthetic://{name}"))
    return out


def _centre_crop(record: SEMRecord, size: int) -> SEMRecord:
    from dataclasses import replace

    h, w = record.image.shape
    if h <= size and w <= size:
        return record
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    window = (slice(y0, y0 + size), slice(x0, x0 + size))
    crop = {"image": np.ascontiguousarray(record.image[window])}
    for name in ("instances", "semantic"):
        arr = getattr(record, name)
        crop[name] = None if arr is None else np.ascontiguousarray(arr[window])
    return replace(record, **crop, meta={**record.meta, "crop": [y0, x0, size]})


def _model_folder(path: Path) -> Path | None:
    from semkit.models.io import is_model_folder

    if is_model_folder(path):
        return path
    if path.is_file() and is_model_folder(path.parent) and path.name in ("weights.pt", "config.json"):
        return path.parent
    if path.is_dir() and is_model_folder(path / "model"):
        return path / "model"
    return None


def _encoder_of_model(folder: Path, checkpoint: str, label: str | None) -> Encoder:
    from torchvision.models.detection import MaskRCNN

    from semkit.models.io import load_model, model_settings
    from semkit.models.unet import UNET_ENCODERS

    model, _, _ = load_model(folder)
    settings = model_settings(model)
    label = label or f"{model_label(model)} (fine-tuned)"
    if isinstance(model, MaskRCNN):
        return Encoder(label, checkpoint, "model", settings.backbone, model.backbone.body.eval())
    # smp U-Net: trained on raw [0, 1] input, no normalisation
    return Encoder(label, checkpoint, "model", UNET_ENCODERS[settings.encoder], model.encoder.eval(),
                   normalise_input=False)


def _encoder_meta(path: Path) -> dict:
    from semkit.ssl.pretrain import ENCODER_META_FILE

    meta = path.parent / ENCODER_META_FILE
    if not meta.is_file():
        return {}
    try:
        return dict(json.loads(meta.read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable encoder metadata: {err}", meta) from err
