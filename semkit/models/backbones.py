"""The one builder for encoder backbones: timm ``features_only`` models with a grayscale stem.

Every model in semkit that needs an encoder (Mask R-CNN through its feature pyramid, the U-Net baselines through
segmentation-models-pytorch's ``tu-`` encoders, the self-supervised methods) gets it from
:func:`create_backbone`, so there is one place that decides how weights are initialised:

* ``init="random"`` -- no pretraining ("No Pretraining" in the comparison tables);
* ``init="imagenet"`` -- timm's ImageNet weights, from ``imagenet_file`` when given, else from the Hugging Face
  cache, else downloaded; timm sums the RGB filters of the first convolution into one grayscale filter. On a
  machine without network access and without a local file this fails *at once* with
  :class:`WeightsUnavailableError` instead of hanging in a download;
* ``init=<path>`` -- a semkit checkpoint: a plain timm-compatible encoder state dict (the parameter names of
  ``timm.create_model(name, in_chans=1, num_classes=0)``), loaded with ``strict=True`` so that a renamed or
  missing tensor is an error, never a silently random layer. Classifier-head tensors (``head.*``, ``fc.*``) that
  the pretraining model may carry are not part of the encoder and are dropped first.

The backbone is timm's ``FeatureGetterNet`` (``feature_cls="getter"``): it wraps the unmodified timm model as
``.model``, so its parameter names are exactly timm's and :func:`encoder_state_dict` / :func:`load_encoder_state_dict`
need no renaming. segmentation-models-pytorch's ``tu-`` encoders use timm's ``FeatureListNet`` instead, which
flattens ``stem.0`` into ``stem_0``; :func:`to_feature_list_names` converts a plain state dict to those names.

Reference: Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", CVPR 2023;
He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (ResNet-50).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import timm
import torch
from torch import nn

from semkit.errors import InputError

#: Supported encoders: name -> default ``out_indices`` for a feature pyramid (levels at strides 4, 8, 16, 32).
#: ResNet-50's stride-2 stem output (index 0) is left out of the pyramid, as in torchvision's Mask R-CNN.
BACKBONES: dict[str, tuple[int, ...]] = {
    "convnextv2_atto": (0, 1, 2, 3),
    "convnextv2_femto": (0, 1, 2, 3),
    "convnextv2_pico": (0, 1, 2, 3),
    "convnextv2_nano": (0, 1, 2, 3),
    "convnextv2_tiny": (0, 1, 2, 3),
    "convnextv2_base": (0, 1, 2, 3),
    "convnextv2_large": (0, 1, 2, 3),
    "convnextv2_huge": (0, 1, 2, 3),
    "resnet50": (1, 2, 3, 4),
}

#: Top-level timm modules that belong to the classifier, not the encoder (dropped when loading a checkpoint).
HEAD_MODULES = ("head", "fc", "classifier", "head_drop", "global_pool")

#: Seconds to wait for the Hugging Face host before declaring the machine offline.
CONNECT_TIMEOUT_S = 3.0
HF_HOST = ("huggingface.co", 443)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were requested but cannot be obtained (offline and not cached, no local file)."""


def check_backbone_name(name: str) -> str:
    """Return ``name`` if it is a supported backbone, else raise ``KeyError`` listing the valid names."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return name


def create_backbone(
    name: str = "convnextv2_pico",
    in_chans: int = 1,
    init: str | os.PathLike = "random",
    out_indices: Sequence[int] | None = None,
    imagenet_file: str | os.PathLike | None = None,
    **timm_kwargs,
) -> nn.Module:
    """Build a multi-scale timm encoder.

    Args:
        name: one of :data:`BACKBONES` (``convnextv2_{atto..huge}``, ``resnet50``).
        in_chans: input channels; 1 for grayscale SEM images.
        init: ``"random"``, ``"imagenet"`` or the path of a semkit encoder checkpoint (see module docstring).
        out_indices: which stages to return; default :data:`BACKBONES` ``[name]`` (strides 4, 8, 16, 32).
        imagenet_file: a local timm ImageNet checkpoint (``.safetensors``/``.pth``, 3-channel, with classifier)
            used for ``init="imagenet"`` instead of the Hugging Face hub.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Returns:
        A timm ``FeatureGetterNet``: ``forward(x (B, in_chans, H, W))`` returns a list of feature maps
        ``(B, C_i, H / r_i, W / r_i)`` with ``C_i = feature_info.channels()[i]`` and
        ``r_i = feature_info.reduction()[i]`` (H and W need not be multiples of r_i; ConvNeXt's strided
        convolutions round down, e.g. 70 → 17 → 8 → 4 → 2).
        ``.model`` is the plain timm model (classifier removed).

    Raises:
        KeyError: unknown ``name`` (the message lists the valid names).
        WeightsUnavailableError: ``init="imagenet"`` but the weights are neither local, cached nor downloadable.
        InputError: ``init`` / ``imagenet_file`` names a missing or incompatible file.
    """
    check_backbone_name(name)
    out_indices = tuple(BACKBONES[name] if out_indices is None else out_indices)
    kwargs = dict(features_only=True, feature_cls="getter", in_chans=in_chans, out_indices=out_indices)
    kwargs.update(timm_kwargs)
    init_str = str(init)
    if init_str == "random":
        return timm.create_model(name, pretrained=False, **kwargs)
    if init_str == "imagenet":
        weights = resolve_imagenet_weights(name, imagenet_file)
        overlay = {} if weights is None else {"pretrained_cfg_overlay": {"file": str(weights)}}
        return timm.create_model(name, pretrained=True, **kwargs, **overlay)
    model = timm.create_model(name, pretrained=False, **kwargs)
    load_encoder_state_dict(model, init)
    return model


def resolve_imagenet_weights(name: str, imagenet_file: str | os.PathLike | None = None) -> Path | None:
    """Find ImageNet weights for ``name`` without risking a hang.

    Order: ``imagenet_file`` if given; the file in the local Hugging Face cache; otherwise, if the hub is
    reachable within :data:`CONNECT_TIMEOUT_S` and offline mode is not set, ``None`` (timm downloads it).

    Raises:
        InputError: ``imagenet_file`` does not exist.
        WeightsUnavailableError: no local copy and the hub is unreachable or ``HF_HUB_OFFLINE`` is set.
    """
    if imagenet_file is not None:
        path = Path(imagenet_file)
        if not path.is_file():
            raise InputError("ImageNet weights file not found", path)
        return path
    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    cached = _hf_cached_file(hub_id) if hub_id else None
    if cached is not None:
        return cached
    hint = (f"ImageNet weights for {name!r} ({hub_id}) are not in the local Hugging Face cache and cannot be "
            "downloaded: {why}. Pass imagenet_file=<local .safetensors/.pth>, use init='random' or a semkit "
            "checkpoint, or download the weights once on a connected machine (timm.create_model(..., "
            "pretrained=True)) and copy the Hugging Face cache.")
    if _hf_offline():
        raise WeightsUnavailableError(hint.format(why="HF_HUB_OFFLINE is set"))
    if not _host_reachable(*HF_HOST, timeout=CONNECT_TIMEOUT_S):
        raise WeightsUnavailableError(hint.format(why=f"{HF_HOST[0]} is unreachable (no network)"))
    return None


def encoder_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The plain timm parameter names and tensors of a backbone built by :func:`create_backbone`.

    This is the semkit checkpoint format: ``torch.save(encoder_state_dict(b), path)`` and later
    ``create_backbone(name, init=path)``.
    """
    return {k: v.detach().clone() for k, v in _timm_model(backbone).state_dict().items()}


def load_encoder_state_dict(
    backbone: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]
) -> nn.Module:
    """Load a plain timm-compatible encoder state dict into ``backbone`` with ``strict=True``.

    Args:
        backbone: a :func:`create_backbone` result (or a plain timm model).
        source: a state dict or the path of one saved with ``torch.save`` (a ``{"state_dict": ...}`` wrapper
            is unwrapped). Classifier tensors (:data:`HEAD_MODULES`) absent from the backbone are dropped.

    Raises:
        InputError: missing file, unreadable file, or names/shapes that do not match the backbone (the message
            lists the first offending names).
    """
    path = None
    if not isinstance(source, Mapping):
        path = Path(source)
        state = read_state_dict(path)
    else:
        state = dict(source)
    target = _timm_model(backbone)
    state = drop_head(state, target.state_dict().keys())
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        expected = set(target.state_dict())
        missing = sorted(expected - set(state))[:5]
        unexpected = sorted(set(state) - expected)[:5]
        raise InputError(
            "encoder state dict does not match the backbone "
            f"(missing e.g. {missing}, unexpected e.g. {unexpected}): {str(err).splitlines()[0]}",
            path,
        ) from None
    return backbone


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (or ``.safetensors``); raise :class:`InputError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError("encoder checkpoint not found", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any reader failure means the file is not a state dict
        raise InputError(f"cannot read encoder checkpoint: {err}", path) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError("encoder checkpoint is not a plain state dict of tensors", path)
    return dict(state)


def drop_head(state: Mapping[str, torch.Tensor], keep: Sequence[str] | set[str]) -> dict[str, torch.Tensor]:
    """Remove classifier tensors (top-level module in :data:`HEAD_MODULES`) that are not in ``keep``."""
    keep = set(keep)
    return {k: v for k, v in state.items() if k in keep or k.split(".", 1)[0] not in HEAD_MODULES}


def to_feature_list_names(state: Mapping[str, torch.Tensor], target_keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Rename plain timm keys (``stem.0.weight``) to timm ``FeatureListNet`` keys (``stem_0.weight``).

    ``FeatureListNet`` (used by segmentation-models-pytorch's ``tu-`` encoders) joins the first two levels of
    sequential modules with ``_``. Keys already in ``target_keys`` are kept; classifier keys are dropped.

    Raises:
        KeyError: a key maps to nothing in ``target_keys`` (the caller then fails a strict load anyway, but this
            names the key).
    """
    target = set(target_keys)
    out = {}
    for key, value in drop_head(state, target).items():
        if key in target:
            out[key] = value
            continue
        parts = key.split(".")
        flat = "_".join(parts[:2]) + ("." + ".".join(parts[2:]) if len(parts) > 2 else "")
        if flat not in target:
            raise KeyError(f"encoder key {key!r} has no counterpart {flat!r} in the feature-list model")
        out[flat] = value
    return out


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def _timm_model(backbone: nn.Module) -> nn.Module:
    # FeatureGetterNet keeps the plain timm model under ``.model``; anything else is taken as it is.
    return backbone.model if type(backbone).__name__ == "FeatureGetterNet" else backbone


def _hf_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def _hf_cached_file(hub_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _host_reachable(host: str, port: int, timeout: float) -> bool:
    # getaddrinfo ignores socket timeouts and can block for a long time on a broken resolver, so the whole
    # probe runs in a worker thread that we stop waiting for after ``timeout`` seconds.
    def probe() -> bool:
        with socket.create_connection((host, port), timeout=timeout):
            return True

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(probe).result(timeout=timeout)
    except (OSError, FutureTimeout):
        return False
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
