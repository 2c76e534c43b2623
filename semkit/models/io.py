"""Save and load trained segmentation models as a self-describing folder (no download needed to reload).

A model folder holds:

* ``config.json`` -- the model's settings dataclass (:class:`semkit.models.maskrcnn.MaskRCNNConfig` or
  :class:`semkit.models.unet.UNetConfig`) as JSON, exactly ``asdict(model_settings(model))``;
* ``weights.pt`` -- the ``state_dict`` (loaded back with ``strict=True``);
* ``thresholds.json`` -- the post-processing picked on validation data
  (:class:`semkit.models.postprocess.CombineThresholds` for Mask R-CNN,
  :class:`semkit.models.unet.UNetPostprocess` for U-Net);
* ``meta.json`` -- which builder to call (``"model": "maskrcnn"`` or ``"unet"``), a format version and the
  caller's ``extra`` dictionary (training settings, metrics, the data split...).

A **classical** model folder (:func:`save_classical`) holds only ``config.json`` (the tuned
:class:`semkit.models.classical.ClassicalConfig`) and ``meta.json`` with ``"model": "classical"``: it has no
weights, yet :func:`load_model` and ``semkit predict`` take it like any other model.

:func:`load_model` rebuilds the architecture with *random* initialisation whatever ``config.init`` says (the
original value stays in ``config.json`` for the record), so reloading never touches the network or a
pretraining checkpoint that may no longer exist, and then loads every tensor from ``weights.pt``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

from semkit.errors import InputError
from semkit.models.classical import ClassicalConfig, ClassicalSegmenter
from semkit.models.maskrcnn import MaskRCNNConfig, build_maskrcnn
from semkit.models.postprocess import CombineThresholds
from semkit.models.unet import UNetConfig, UNetPostprocess, build_unet_model

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
THRESHOLDS_FILE = "thresholds.json"
META_FILE = "meta.json"

#: Savable model kinds: name -> (config dataclass, builder(config, **overrides), post-processing dataclass).
MODEL_KINDS: dict[str, tuple[type, object, type]] = {
    "maskrcnn": (MaskRCNNConfig, build_maskrcnn, CombineThresholds),
    "unet": (UNetConfig, build_unet_model, UNetPostprocess),
}


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    thresholds: CombineThresholds | UNetPostprocess | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` (with its settings and post-processing thresholds) to the folder ``path``.

    Args:
        model: a model built by :func:`semkit.models.build_maskrcnn` or
            :func:`semkit.models.unet.build_unet_model` (it carries ``.config``).
        path: folder to create (parents too); existing files of the same names are overwritten.
        thresholds: post-processing of the model's kind (:class:`CombineThresholds` for Mask R-CNN,
            :class:`UNetPostprocess` for U-Net); ``None`` stores that kind's defaults.
        extra: JSON-serialisable metadata stored in ``meta.json`` and returned by :func:`load_model`.

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        TypeError: the model has no known ``.config``, ``thresholds`` belong to another kind of model, or
            ``extra`` is not JSON-serialisable.
    """
    kind = _kind_of(model)
    thresholds_cls = MODEL_KINDS[kind][2]
    if thresholds is None:
        thresholds = thresholds_cls()
    elif not isinstance(thresholds, thresholds_cls):
        raise TypeError(f"a {kind} model needs {thresholds_cls.__name__} thresholds, got {type(thresholds).__name__}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "model": kind, "extra": dict(extra or {})}
    try:
        meta_text = json.dumps(meta, indent=2)
    except TypeError as err:
        raise TypeError(f"extra must be JSON-serialisable: {err}") from err
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(model_settings(model)), indent=2))
    (folder / THRESHOLDS_FILE).write_text(json.dumps(asdict(thresholds), indent=2))
    (folder / META_FILE).write_text(meta_text)
    # CPU tensors so a GPU-trained model loads on a CPU-only machine without map_location surprises
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    return folder


def save_classical(config: ClassicalConfig | dict, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the classical pipeline's parameters as a model folder (``config.json`` + ``meta.json``).

    Args:
        config: a :class:`ClassicalConfig` or the keyword arguments of :func:`semkit.models.segment_classical`
            (e.g. what :func:`semkit.train.thresholds.search_classical` picked on validation).
        path: folder to create.
        extra: JSON-serialisable metadata stored in ``meta.json``.
    """
    config = config if isinstance(config, ClassicalConfig) else ClassicalConfig.from_dict(dict(config))
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "model": "classical", "extra": dict(extra or {})}
    try:
        meta_text = json.dumps(meta, indent=2)
    except TypeError as err:
        raise TypeError(f"extra must be JSON-serialisable: {err}") from err
    config.save(folder / CONFIG_FILE)
    (folder / META_FILE).write_text(meta_text)
    return folder


def load_model(path: str | os.PathLike) -> tuple[nn.Module, CombineThresholds | UNetPostprocess, dict]:
    """Rebuild a model saved by :func:`save_model`, in eval mode on the CPU.

    Args:
        path: the model folder (or its ``weights.pt`` / ``config.json``).

    Returns:
        ``(model, thresholds, extra)``. ``model_settings(model).init`` is the value it was trained with; the weights
        come only from ``weights.pt``. For a classical folder: ``(ClassicalSegmenter, None, extra)``.

    Raises:
        InputError: the folder or one of its files is missing, unreadable, or the weights do not fit the
            architecture described by ``config.json`` (the message names the file and the first mismatches).
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError("model folder not found", folder)
    meta = _read_json(folder / META_FILE) if (folder / META_FILE).exists() else {"model": "maskrcnn"}
    kind = meta.get("model", "maskrcnn")
    if kind == "classical":
        try:
            config = ClassicalConfig.from_dict(_read_json(folder / CONFIG_FILE))
        except (TypeError, ValueError) as err:
            raise InputError(f"invalid classical settings: {err}", folder / CONFIG_FILE) from err
        return ClassicalSegmenter(config), None, dict(meta.get("extra", {}))
    if kind not in MODEL_KINDS:
        raise InputError(f"unknown model kind {kind!r}; known: {', '.join([*MODEL_KINDS, 'classical'])}",
                         folder / META_FILE)
    config_cls, builder, thresholds_cls = MODEL_KINDS[kind]
    raw = _read_json(folder / CONFIG_FILE)
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"unknown settings {unknown} for a {kind} model", folder / CONFIG_FILE)
    try:
        config = config_cls(**_tuples(raw))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"invalid settings: {err}", folder / CONFIG_FILE) from err
    # random init: no download, no dependence on the pretraining checkpoint the model started from
    model = builder(config, init="random", imagenet_file=None)
    _set_settings(model, config)
    state = _read_weights(folder / WEIGHTS_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"weights do not match {CONFIG_FILE}: {_short(err)}", folder / WEIGHTS_FILE) from err
    model.eval()
    th_path = folder / THRESHOLDS_FILE
    try:
        thresholds = thresholds_cls(**_read_json(th_path)) if th_path.exists() else thresholds_cls()
    except TypeError as err:
        raise InputError(f"invalid {thresholds_cls.__name__}: {err}", th_path) from err
    return model, thresholds, dict(meta.get("extra", {}))


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a folder written by :func:`save_model`."""
    p = Path(path)
    if not (p.is_dir() and (p / CONFIG_FILE).is_file()):
        return False
    if (p / WEIGHTS_FILE).is_file():
        return True
    try:
        return json.loads((p / META_FILE).read_text()).get("model") == "classical"
    except (OSError, ValueError, AttributeError):
        return False


def model_settings(model: nn.Module):
    """The settings dataclass a savable model carries: ``.semkit_config`` (U-Net) or ``.config`` (Mask R-CNN)."""
    return model.__dict__.get("semkit_config", getattr(model, "config", None))


def _set_settings(model: nn.Module, config) -> None:
    if "semkit_config" in model.__dict__:
        model.semkit_config = config
    else:
        model.config = config


def _kind_of(model: nn.Module) -> str:
    config = model_settings(model)
    for kind, (config_cls, _, _) in MODEL_KINDS.items():
        if isinstance(config, config_cls):
            return kind
    raise TypeError(
        f"cannot save a model whose .config is {type(config).__name__}; savable: "
        + ", ".join(cls.__name__ for cls, _, _ in MODEL_KINDS.values())
    )


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError("missing file of the model folder", path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable JSON: {err}", path) from err


def _read_weights(path: Path) -> dict:
    if not path.is_file():
        raise InputError("missing file of the model folder", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, runtime) for a damaged file
        raise InputError(f"unreadable weights: {err}", path) from err
    if not isinstance(state, dict):
        raise InputError(f"expected a state dict, got {type(state).__name__}", path)
    return state


def _tuples(value):
    # JSON turns the config's tuples into lists; the dataclass expects (nested) tuples
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _short(err: Exception, limit: int = 600) -> str:
    text = " ".join(str(err).split())  # torch's message spans lines; keep the error on one line
    return text if len(text) <= limit else text[:limit] + " ..."
