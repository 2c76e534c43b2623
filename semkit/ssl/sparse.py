"""The MinkowskiEngine backend of FCMAE: a sparse ConvNeXt V2 encoder that mirrors timm's name for name.

Reference: Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", CVPR 2023
(the official sparse encoder, ``models/convnextv2_sparse.py``); Choy et al., "4D Spatio-Temporal ConvNets:
Minkowski Convolutional Neural Networks", CVPR 2019 (MinkowskiEngine).

The encoder runs the stem densely (a non-overlapping 4x4 patch convolution: a visible output position only
reads visible pixels), then keeps only the visible positions as a sparse tensor with coordinates
``(batch, row, column)`` and runs every stage on the sparse set: depthwise 7x7 convolutions are
``MinkowskiChannelwiseConvolution``, the 2x2 stride-2 downsampling is ``MinkowskiConvolution``, norms, MLPs
and GRN act on the feature rows. Module names are timm's (``stem.0``, ``stages.1.downsample.1``,
``stages.0.blocks.0.conv_dw``, ``...mlp.fc1``, ``...mlp.grn``), so :func:`timm_to_sparse` /
:func:`sparse_to_timm` only rename ``weight`` <-> ``kernel`` and reshape:

* depthwise: conv2d weight ``(C, 1, k, k)`` -> kernel ``(k*k, C)``; 2x2 downsampling: ``(O, I, 2, 2)`` ->
  ``(4, I, O)``. With (batch, row, column) coordinates MinkowskiEngine enumerates kernel offsets with the
  *first* spatial axis varying fastest, so the dense kernel is transposed in its two spatial axes before
  flattening (``W.permute(3, 2, ...)``);
* biases ``(C,)`` -> ``(1, C)``; 1x1-convolution MLP weights ``(O, I, 1, 1)`` -> linear ``(O, I)``.

GRN here computes its global L2 statistic per image (over that image's visible points), exactly like timm's
dense GRN. (The official ``MinkowskiGRN`` takes the norm over all points of the whole batch, which mixes images
and does not match the dense model; that is not reproduced.)

MinkowskiEngine is optional: importing this module never needs it, building an encoder does
(:func:`import_minkowski`). Install it with ``semkit/ssl/install_minkowski.sh``.
"""

from __future__ import annotations

import collections
import collections.abc
import copy

import torch
import torch.nn.functional as F
from torch import nn

from semkit.errors import InputError

#: ABCs MinkowskiEngine 0.5.4 imports from ``collections`` (moved to ``collections.abc`` in Python 3.10).
_ABC_ALIASES = ("Sequence", "Iterable", "Mapping", "MutableMapping", "Callable", "Iterator", "Hashable", "Set")


def import_minkowski():
    """Import MinkowskiEngine, first aliasing the ``collections`` ABCs it expects on Python >= 3.10.

    Returns:
        The ``MinkowskiEngine`` module.

    Raises:
        ImportError: MinkowskiEngine is not installed (the message names the install script).
    """
    for name in _ABC_ALIASES:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    try:
        import MinkowskiEngine as ME  # noqa: N817 -- the library's own abbreviation
    except ImportError as err:
        raise ImportError(
            f"MinkowskiEngine is not importable ({err}); install it with `bash semkit/ssl/install_minkowski.sh` "
            "or use backend='dense'"
        ) from err
    return ME


def minkowski_status() -> tuple[bool, str]:
    """``(True, version)`` if MinkowskiEngine imports, else ``(False, reason)`` (for skips and reports)."""
    try:
        ME = import_minkowski()  # noqa: N806
    except ImportError as err:
        return False, str(err)
    except Exception as err:  # noqa: BLE001 -- a broken build (ABI mismatch) must not crash a report
        return False, f"MinkowskiEngine fails to import: {type(err).__name__}: {err}"
    return True, getattr(ME, "__version__", "unknown version")


# ------------------------------------------------------------------------------------------------------------
# sparse layers (parameter names and shapes as timm's dense layers where possible)


def _like(x, features: torch.Tensor):
    """A sparse tensor with ``x``'s coordinates and new features."""
    ME = import_minkowski()  # noqa: N806
    return ME.SparseTensor(features, coordinate_map_key=x.coordinate_map_key, coordinate_manager=x.coordinate_manager)


class SlotState:
    """Mixin that makes MinkowskiEngine modules copyable and picklable.

    MinkowskiEngine's convolutions keep ``in_channels``, ``dimension``, ``kernel_generator`` ... in ``__slots__``,
    which ``nn.Module.__getstate__`` (``__dict__`` only) drops: a deep copy or a pickled copy (``ddp_spawn``,
    callbacks that copy the model) then fails in ``forward``. The slot values are added to the state.
    """

    def _slot_names(self) -> list[str]:
        return [n for cls in type(self).__mro__ for n in cls.__dict__.get("__slots__", ()) if isinstance(n, str)]

    def __getstate__(self):
        state = dict(super().__getstate__())
        for cls in type(self).__mro__:
            for name in cls.__dict__.get("__slots__", ()):
                try:
                    value = cls.__dict__[name].__get__(self)  # set slots only, not parameters
                except AttributeError:
                    continue
                # MinkowskiConvolution keeps an instance of its autograd Function (not picklable) and only
                # calls its static ``apply``: the class itself serves the same purpose.
                state[name] = type(value) if isinstance(value, torch.autograd.Function) else value
        return state

    def __setstate__(self, state):
        slots = set(self._slot_names())
        super().__setstate__({k: v for k, v in state.items() if k not in slots})
        for name in slots & set(state):
            object.__setattr__(self, name, state[name])


_LAYER_NAMES = ("ChannelwiseConvolution", "Convolution")


def _minkowski_layers():
    """``(ChannelwiseConvolution, Convolution)``: picklable subclasses of MinkowskiEngine's two convolutions.

    They are created on first use (MinkowskiEngine is optional) as module-level names, so pickle finds them
    by name (module ``__getattr__`` below creates them in a fresh process too).
    """
    g = globals()
    if _LAYER_NAMES[0] not in g:
        ME = import_minkowski()  # noqa: N806
        bases = (ME.MinkowskiChannelwiseConvolution, ME.MinkowskiConvolution)
        for name, base in zip(_LAYER_NAMES, bases, strict=True):
            g[name] = type(name, (SlotState, base), {"__module__": __name__, "__qualname__": name,
                                                     "__doc__": f"Picklable ``{base.__name__}``."})
    return g[_LAYER_NAMES[0]], g[_LAYER_NAMES[1]]


def __getattr__(name: str):
    if name in _LAYER_NAMES:
        return dict(zip(_LAYER_NAMES, _minkowski_layers(), strict=True))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SparseLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each sparse point (timm's ``LayerNorm2d`` / ``LayerNorm``)."""

    def forward(self, x):
        return _like(x, F.layer_norm(x.F, self.normalized_shape, self.weight, self.bias, self.eps))


class SparseLinear(nn.Linear):
    """Pointwise linear layer (timm's ``fc1``/``fc2``, a 1x1 convolution or a linear layer)."""

    def forward(self, x):
        return _like(x, F.linear(x.F, self.weight, self.bias))


class SparseGELU(nn.GELU):
    def forward(self, x):
        return _like(x, F.gelu(x.F, approximate=self.approximate))


class SparseGRN(nn.Module):
    """Global Response Normalization on sparse points, with statistics per image over its visible points.

    ``y = x + bias + weight * x * N(x)``, ``N = ||x||_2 / mean_c ||x||_2`` with the L2 norm over the image's
    points per channel -- timm's ``GlobalResponseNorm`` restricted to the visible set.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        batch = x.C[:, 0].long().to(x.F.device)
        n_images = int(batch.max().item()) + 1
        sq = torch.zeros(n_images, x.F.shape[1], dtype=x.F.dtype, device=x.F.device).index_add_(0, batch, x.F * x.F)
        gx = sq.sqrt()
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return _like(x, x.F + torch.addcmul(self.bias, self.weight, x.F * nx[batch]))


class SparseDropPath(nn.Module):
    """Stochastic depth per image (timm's ``DropPath``): drop the residual branch of whole images."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        batch = x.C[:, 0].long().to(x.F.device)
        keep = (torch.rand(int(batch.max().item()) + 1, device=x.F.device) >= self.p).to(x.F.dtype) / (1 - self.p)
        return _like(x, x.F * keep[batch, None])


class SparseMlp(nn.Module):
    """timm's ``GlobalResponseNormMlp`` on sparse points: fc1 -> GELU -> GRN -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = SparseLinear(dim, hidden)
        self.act = SparseGELU()
        self.grn = SparseGRN(hidden)
        self.fc2 = SparseLinear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.grn(self.act(self.fc1(x))))


class SparseBlock(nn.Module):
    """ConvNeXt V2 block on sparse points (names as timm's ``ConvNeXtBlock``)."""

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 4.0, eps: float = 1e-6, drop_path: float = 0.0):
        super().__init__()
        channelwise, _ = _minkowski_layers()
        self.conv_dw = channelwise(dim, kernel_size=kernel_size, bias=True, dimension=2)
        self.norm = SparseLayerNorm(dim, eps=eps)
        self.mlp = SparseMlp(dim, int(mlp_ratio * dim))
        self.drop_path = SparseDropPath(drop_path)

    def forward(self, x):
        return x + self.drop_path(self.mlp(self.norm(self.conv_dw(x))))


class SparseStage(nn.Module):
    """One ConvNeXt stage: optional (LayerNorm, 2x2 stride-2 convolution) downsampling, then blocks."""

    def __init__(self, in_dim: int, out_dim: int, depth: int, downsample: bool, eps: float = 1e-6,
                 drop_path: tuple[float, ...] = ()):
        super().__init__()
        _, convolution = _minkowski_layers()
        if downsample:
            self.downsample = nn.Sequential(
                SparseLayerNorm(in_dim, eps=eps),
                convolution(in_dim, out_dim, kernel_size=2, stride=2, bias=True, dimension=2),
            )
        else:
            self.downsample = nn.Identity()
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.Sequential(*[SparseBlock(out_dim, eps=eps, drop_path=rates[i]) for i in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class SparseConvNeXtV2(nn.Module):
    """Sparse ConvNeXt V2 encoder for FCMAE (MinkowskiEngine), mirroring a timm ConvNeXt V2 name for name.

    Build it from a timm model with :meth:`from_timm` (copies the weights through :func:`timm_to_sparse`) and
    export with :func:`sparse_to_timm`.

    Args:
        stem: the dense timm stem (``Conv2d(k=4, s=4)`` + ``LayerNorm2d``), used as is.
        dims: channels per stage.
        depths: blocks per stage.
        timm_shapes: name -> shape of the timm state dict this encoder mirrors (for :func:`sparse_to_timm`).
    """

    def __init__(self, stem: nn.Module, dims, depths, timm_shapes: dict[str, tuple[int, ...]] | None = None,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.stem = stem
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start = [], 0
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            prev = dims[i - 1] if i > 0 else dim
            stages.append(SparseStage(prev, dim, depth, downsample=i > 0, drop_path=tuple(rates[start:start + depth])))
            start += depth
        self.stages = nn.ModuleList(stages)
        self.timm_shapes = dict(timm_shapes or {})
        self.stem_stride = int(stem[0].stride[0])

    @classmethod
    def from_timm(cls, convnext: nn.Module, drop_path_rate: float = 0.0) -> SparseConvNeXtV2:
        """Mirror a plain timm ConvNeXt V2 (``create_backbone(...).model``), copying its weights."""
        dims = [len(stage.blocks[0].norm.weight) for stage in convnext.stages]
        depths = [len(stage.blocks) for stage in convnext.stages]
        state = convnext.state_dict()
        model = cls(copy.deepcopy(convnext.stem), dims, depths, {k: tuple(v.shape) for k, v in state.items()},
                    drop_path_rate=drop_path_rate)
        model.load_state_dict(timm_to_sparse(state, model.state_dict()), strict=True)
        return model

    def to_sparse(self, features: torch.Tensor, keep: torch.Tensor):
        """Visible positions of a dense (B, C, h, w) map as a sparse tensor with (batch, row, column) coordinates."""
        ME = import_minkowski()  # noqa: N806
        from semkit.ssl.fcmae import upsample_mask

        keep_map = upsample_mask(keep, *features.shape[-2:]) > 0.5
        idx = keep_map.nonzero()  # (N, 3): batch, row, column -- row-major
        feats = features.permute(0, 2, 3, 1)[idx[:, 0], idx[:, 1], idx[:, 2]]
        return ME.SparseTensor(feats, coordinates=idx.int().cpu().contiguous(), device=str(features.device))

    def forward(self, images: torch.Tensor, keep: torch.Tensor, all_stages: bool = False):
        """Encode the visible patches.

        Args:
            images: (B, C, H, W) dense images.
            keep: (B, gh, gw) mask grid, 1 = visible.
            all_stages: also return every stage's output.

        Returns:
            (B, C_last, H/32, W/32) dense features, zero at masked positions (a list of all stages with
            ``all_stages``).
        """
        dense = self.stem(images)
        b, _, h, w = dense.shape
        x = self.to_sparse(dense, keep)
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if all_stages or i == len(self.stages) - 1:
                scale = 2**i
                shape = torch.Size([b, x.F.shape[1], h // scale, w // scale])
                out = x.dense(shape=shape, min_coordinate=torch.IntTensor([0, 0]))[0]
                outputs.append(out)
        return outputs if all_stages else outputs[-1]


# ------------------------------------------------------------------------------------------------------------
# weight conversion


def _to_sparse_tensor(name: str, value: torch.Tensor, target_shape: tuple[int, ...]) -> torch.Tensor:
    if value.ndim == 4 and len(target_shape) == 2 and value.shape[1] == 1 and target_shape[0] == value.shape[2] * value.shape[3]:
        # depthwise (C, 1, k, k) -> (k*k, C), spatial axes transposed for (batch, row, column) coordinates
        c = value.shape[0]
        return value[:, 0].permute(2, 1, 0).reshape(-1, c)
    if value.ndim == 4 and len(target_shape) == 3:
        # dense conv (O, I, k, k) -> (k*k, I, O), spatial axes transposed
        o, i = value.shape[:2]
        return value.permute(3, 2, 1, 0).reshape(-1, i, o)
    if value.ndim == 4 and len(target_shape) == 2 and value.shape[2:] == (1, 1):
        return value[:, :, 0, 0]  # 1x1 conv -> linear
    if value.ndim == 1 and len(target_shape) == 2:
        return value[None]  # bias (C,) -> (1, C)
    return value


def _to_dense_tensor(value: torch.Tensor, target_shape: tuple[int, ...]) -> torch.Tensor:
    if len(target_shape) == 4 and value.ndim == 2 and target_shape[1] == 1 and target_shape[2] * target_shape[3] == value.shape[0]:
        c, _, kh, kw = target_shape
        return value.reshape(kw, kh, c).permute(2, 1, 0)[:, None].contiguous()
    if len(target_shape) == 4 and value.ndim == 3:
        o, i, kh, kw = target_shape
        return value.reshape(kw, kh, i, o).permute(3, 2, 1, 0).contiguous()
    return value.reshape(target_shape).contiguous()


def _sparse_name(name: str, sparse_keys) -> str:
    if name in sparse_keys:
        return name
    if name.endswith(".weight") and name[: -len("weight")] + "kernel" in sparse_keys:
        return name[: -len("weight")] + "kernel"
    raise KeyError(f"timm tensor {name!r} has no counterpart in the sparse encoder")


def timm_to_sparse(state: dict[str, torch.Tensor], sparse_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a plain timm ConvNeXt V2 state dict to :class:`SparseConvNeXtV2` names and shapes.

    Args:
        state: timm encoder tensors (classifier tensors are ignored).
        sparse_state: the target model's ``state_dict()`` (gives names and shapes).

    Raises:
        KeyError: a timm tensor without a sparse counterpart.
        InputError: a shape that does not convert.
    """
    out = {}
    for name, value in state.items():
        if name.split(".", 1)[0] in ("head", "norm_pre"):
            continue
        target = _sparse_name(name, sparse_state)
        converted = _to_sparse_tensor(name, value, tuple(sparse_state[target].shape))
        if tuple(converted.shape) != tuple(sparse_state[target].shape):
            raise InputError(
                f"cannot convert {name} {tuple(value.shape)} to {target} {tuple(sparse_state[target].shape)}"
            )
        out[target] = converted.contiguous()
    return out


def sparse_to_timm(model: SparseConvNeXtV2) -> dict[str, torch.Tensor]:
    """The plain timm state dict of a :class:`SparseConvNeXtV2` (inverse of :func:`timm_to_sparse`)."""
    sparse_state = model.state_dict()
    out = {}
    for name, shape in model.timm_shapes.items():
        source = _sparse_name(name, sparse_state)
        out[name] = _to_dense_tensor(sparse_state[source].detach(), shape).clone()
    return out
