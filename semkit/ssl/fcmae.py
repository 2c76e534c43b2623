"""FCMAE: the fully convolutional masked autoencoder of ConvNeXt V2, for grayscale SEM crops.

Reference: Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", CVPR 2023
(official code: facebookresearch/ConvNeXt-V2, ``models/fcmae.py``).

The model is split into the named steps of the official implementation -- :meth:`FCMAE.random_mask`,
:meth:`FCMAE.forward_encoder`, :meth:`FCMAE.forward_decoder`, :meth:`FCMAE.forward_loss`,
:meth:`FCMAE.patchify` / :meth:`FCMAE.unpatchify` -- and ``forward`` returns ``(loss, prediction, mask)``.
Two deliberate differences from the official code: patchify works for any channel count (the official one is
hard-coded to RGB), and the mask ratio passed to (or stored on) the model is the one ``forward`` uses.

Encoder. The encoder *is* timm's ConvNeXt V2 from :func:`semkit.models.backbones.create_backbone`, so its
parameter names are timm's and the exported state dict loads with ``strict=True`` into
``create_backbone(name)``, timm ``features_only`` models and segmentation-models-pytorch ``tu-`` encoders.
Sparse computation has two interchangeable backends:

* ``dense`` (default, runs anywhere): masked dense emulation. Forward hooks on timm's own modules (no copy of
  timm's model code) multiply by the visible-position mask after the stem, after every downsampling layer,
  after every depthwise convolution, after the block norm, on the GRN input and output and on the block output.
  Masked positions therefore stay exactly zero through the whole encoder, convolutions only ever read zeros
  there, and GRN's global L2 statistics only see visible positions -- exactly what a sparse convolution
  computes on the visible set.
* ``minkowski``: a true sparse encoder on MinkowskiEngine sparse tensors (:mod:`semkit.ssl.sparse`) with the
  same parameters (converted name for name).

Masking is on a ``patch_size`` grid (32 px = the encoder's total stride, so one mask cell is one final feature
position and, at every stage, a whole block of positions). The decoder is one ConvNeXt V2 block (width 512) on the
projected encoder features with a learned mask token at the masked positions; a 1x1 convolution predicts the
``patch_size ** 2 * in_chans`` pixels of each patch; the loss is the MSE on masked patches only, optionally
against per-patch normalised targets (``norm_pix_loss``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import numpy as np
import torch
from timm.models.convnext import ConvNeXtBlock
from timm.optim import param_groups_weight_decay
from torch import nn

from semkit.errors import InputError
from semkit.models.backbones import create_backbone, encoder_state_dict

# Inputs are normalised like fine-tuning normalises them (timm's ImageNet statistics averaged over RGB).
from semkit.models.maskrcnn import GRAY_MEAN, GRAY_STD
from semkit.ssl.pretrain import PretrainConfig, scaled_lr, steps_of, warmup_cosine_lambda

#: ConvNeXt V2 pretraining recipe: base learning rate (scaled by effective batch / 256), AdamW betas, decay.
BASE_LR = 8e-4
BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.05


# ------------------------------------------------------------------------------------------------------------
# masked dense emulation


def upsample_mask(keep: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Repeat a (B, gh, gw) grid mask to (B, height, width); both sides must be integer multiples of the grid."""
    gh, gw = keep.shape[-2:]
    if height % gh or width % gw:
        raise ValueError(f"feature map {height}x{width} is not a multiple of the {gh}x{gw} mask grid")
    return keep.repeat_interleave(height // gh, dim=-2).repeat_interleave(width // gw, dim=-1)


class DenseMasking:
    """Forward hooks on a timm ConvNeXt that keep masked positions exactly zero (dense FCMAE backend).

    Hooks are installed once and do nothing outside :meth:`apply`, so the same encoder also runs unmasked (e.g.
    for features or export). Layouts: timm's ConvNeXt blocks work channels-first when ``conv_mlp=True`` (atto
    to nano) and permute to channels-last around the norm and MLP otherwise (tiny and larger); each hook knows
    which layout its tensor has.

    The mask is state of this object during one forward, so timm's gradient checkpointing (which re-runs the
    forward during backward, outside :meth:`apply`) must stay off with this backend.

    Args:
        convnext: the plain timm ``ConvNeXt`` (``create_backbone(...).model``).
    """

    def __init__(self, convnext: nn.Module):
        self.keep: torch.Tensor | None = None
        self._cache: dict[tuple, torch.Tensor] = {}
        self.handles = []
        stem_conv = convnext.stem[0]
        if tuple(stem_conv.kernel_size) != tuple(stem_conv.stride):
            raise InputError("FCMAE masking needs a non-overlapping patch stem (ConvNeXt V2 'patch' stem)")
        self._hook(convnext.stem, "nchw")
        for stage in convnext.stages:
            if not isinstance(stage.downsample, nn.Identity):
                self._hook(stage.downsample, "nchw")
            for block in stage.blocks:
                inner = "nchw" if block.use_conv_mlp else "nhwc"
                self._hook(block.conv_dw, "nchw")
                self._hook(block.norm, inner)
                grn = block.mlp.grn
                grn_layout = "nchw" if grn.channel_dim == 1 else "nhwc"
                self.handles.append(grn.register_forward_pre_hook(self._pre_hook(grn_layout)))
                self._hook(grn, grn_layout)
                self._hook(block, "nchw")

    def _hook(self, module: nn.Module, layout: str) -> None:
        self.handles.append(module.register_forward_hook(_MaskHook(self, layout)))

    def _pre_hook(self, layout: str):
        return _MaskHook(self, layout, pre=True)

    def keep_like(self, tensor: torch.Tensor, layout: str) -> torch.Tensor:
        """The visible mask broadcastable to ``tensor`` (``(B,1,H,W)`` for NCHW, ``(B,H,W,1)`` for NHWC)."""
        h, w = tensor.shape[-2:] if layout == "nchw" else tensor.shape[1:3]
        key = (h, w, layout, tensor.dtype)
        if key not in self._cache:
            keep = upsample_mask(self.keep, h, w).to(tensor.dtype)
            self._cache[key] = keep[:, None] if layout == "nchw" else keep[..., None]
        return self._cache[key]

    @contextmanager
    def apply(self, keep: torch.Tensor) -> Iterator[None]:
        """Within the context, zero positions where ``keep`` (B, gh, gw; 1 = visible) is 0."""
        self.keep, self._cache = keep, {}
        try:
            yield
        finally:
            self.keep, self._cache = None, {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class _MaskHook:
    """A picklable forward (pre-)hook multiplying by the visible mask (closures would break ``ddp_spawn``)."""

    def __init__(self, masking: DenseMasking, layout: str, pre: bool = False):
        self.masking, self.layout, self.pre = masking, layout, pre

    def __call__(self, _module, inputs, output=None):
        if self.masking.keep is None:
            return None
        if self.pre:
            return (inputs[0] * self.masking.keep_like(inputs[0], self.layout),) + tuple(inputs[1:])
        return output * self.masking.keep_like(output, self.layout)


# ------------------------------------------------------------------------------------------------------------
# the model


def _init_weights(module: nn.Module) -> None:
    # Official FCMAE decoder initialisation: truncated normal (std 0.02) weights, zero biases.
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class FCMAE(nn.Module):
    """Fully convolutional masked autoencoder (Woo et al., CVPR 2023) on a timm ConvNeXt V2 encoder.

    Args:
        backbone: a ``convnextv2_*`` name of :data:`semkit.models.backbones.BACKBONES`.
        in_chans: image channels (1 for SEM).
        patch_size: mask-grid cell and predicted patch side in pixels; must equal the encoder's total stride
            (32).
        mask_ratio: default fraction of masked patches in [0, 1); ``forward(mask_ratio=...)`` overrides it.
        decoder_dim: decoder width (512 in the paper).
        decoder_depth: decoder ConvNeXt V2 blocks (1 in the paper).
        norm_pix_loss: per-patch normalised targets.
        backend: ``"dense"`` (masked dense emulation) or ``"minkowski"`` (MinkowskiEngine sparse encoder).
        drop_path_rate: encoder stochastic depth.

    Shapes: images (B, in_chans, H, W) with H, W multiples of ``patch_size``; mask (B, H/p, W/p), 1 = masked;
    prediction (B, L, p*p*in_chans) with L = H*W/p^2 in row-major patch order.
    """

    def __init__(
        self,
        backbone: str = "convnextv2_atto",
        in_chans: int = 1,
        patch_size: int = 32,
        mask_ratio: float = 0.5,
        decoder_dim: int = 512,
        decoder_depth: int = 1,
        norm_pix_loss: bool = True,
        backend: str = "dense",
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if not backbone.startswith("convnextv2"):
            raise InputError(f"FCMAE needs a ConvNeXt V2 backbone (with GRN), got {backbone!r}")
        if not 0 <= mask_ratio < 1:
            raise InputError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.backbone_name = backbone
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.backend = backend
        dense = create_backbone(backbone, in_chans=in_chans, drop_path_rate=drop_path_rate)
        stride = dense.feature_info.reduction()[-1]
        if patch_size != stride:
            raise InputError(
                f"FCMAE patch_size must equal the encoder's total stride ({stride} px for {backbone}), "
                f"got {patch_size}: one mask cell is one final feature position"
            )
        channels = dense.feature_info.channels()[-1]
        if backend == "dense":
            self.encoder = dense
            self.masking = DenseMasking(dense.model)
        elif backend == "minkowski":
            from semkit.ssl.sparse import SparseConvNeXtV2

            self.encoder = SparseConvNeXtV2.from_timm(dense.model, drop_path_rate=drop_path_rate)
            self.masking = None
        else:
            raise KeyError(f"unknown FCMAE backend {backend!r}; choose one of: dense, minkowski")
        self.proj = nn.Conv2d(channels, decoder_dim, kernel_size=1)
        self.mask_token = nn.Parameter(torch.zeros(1, decoder_dim, 1, 1))
        self.decoder = nn.Sequential(
            *[
                ConvNeXtBlock(decoder_dim, use_grn=True, ls_init_value=None, conv_mlp=False)
                for _ in range(decoder_depth)
            ]
        )
        self.pred = nn.Conv2d(decoder_dim, patch_size**2 * in_chans, kernel_size=1)
        for module in (self.proj, self.decoder, self.pred):
            module.apply(_init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    # ---- named steps

    def check_size(self, images: torch.Tensor) -> None:
        """Raise :class:`InputError` unless ``images`` is (B, in_chans, H, W) with H, W multiples of the patch."""
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise InputError(f"FCMAE expects images (B, {self.in_chans}, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise InputError(
                f"image size {h}x{w} is not divisible by the FCMAE patch size {p}; use a crop size that is a "
                f"multiple of {p} (e.g. {max(p, h // p * p)})"
            )

    def random_mask(
        self,
        batch: int,
        grid: tuple[int, int],
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Random patch mask: exactly ``round(L * mask_ratio)`` of the ``L = gh * gw`` cells per image are masked.

        Args:
            batch: number of images.
            grid: ``(gh, gw)`` = image size // patch size.
            mask_ratio: fraction to mask; ``None`` = ``self.mask_ratio``. At least one cell stays visible.
            generator: torch generator for a reproducible mask (same seed -> same mask); ``None`` = global RNG.
            device: where the mask is returned.

        Returns:
            float tensor (B, gh, gw), 1 = masked (removed), 0 = visible.
        """
        ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        if not 0 <= ratio < 1:
            raise InputError(f"mask_ratio must be in [0, 1), got {ratio}")
        gh, gw = grid
        n = gh * gw
        n_mask = min(int(round(n * ratio)), n - 1)
        noise = torch.rand(batch, n, generator=generator, device=None if generator is not None else device)
        rank = noise.argsort(dim=1).argsort(dim=1)  # rank of each cell's noise; the n_mask lowest are masked
        mask = (rank < n_mask).float().reshape(batch, gh, gw)
        return mask.to(device) if device is not None else mask

    def forward_encoder(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode the visible patches.

        Args:
            images: (B, C, H, W).
            mask: (B, H/p, W/p), 1 = masked.

        Returns:
            (B, C_enc, H/32, W/32) final-stage features, exactly zero at masked positions.
        """
        keep = 1.0 - mask
        if self.backend == "minkowski":
            return self.encoder(images, keep)
        model = self.encoder.model
        with self.masking.apply(keep.to(images.dtype)):
            x = model.stem(images)
            for stage in model.stages:
                x = stage(x)
        return x

    def forward_decoder(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fill masked positions with the mask token, decode, predict pixels.

        Returns:
            (B, L, p*p*C) predicted patches in :meth:`patchify` order.
        """
        x = self.proj(features)
        m = mask[:, None].to(x.dtype)
        x = x * (1.0 - m) + self.mask_token.to(x.dtype) * m
        x = self.decoder(x)
        pred = self.pred(x)  # (B, p*p*C, h, w)
        return pred.flatten(2).transpose(1, 2)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, p*p*C), patches row-major, pixels ordered (row, column, channel)."""
        b, c, h, w = images.shape
        p = self.patch_size
        x = images.reshape(b, c, h // p, p, w // p, p)
        x = torch.einsum("bchpwq->bhwpqc", x)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`patchify`: (B, L, p*p*C) -> (B, C, height, width)."""
        b, n, d = patches.shape
        p = self.patch_size
        c = d // (p * p)
        gh, gw = height // p, width // p
        if gh * gw != n or c * p * p != d:
            raise ValueError(f"{n} patches of {d} values do not make a {c}x{height}x{width} image")
        x = patches.reshape(b, gh, gw, p, p, c)
        x = torch.einsum("bhwpqc->bchpwq", x)
        return x.reshape(b, c, height, width)

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """Patchified targets, normalised per patch (mean 0, unit variance) when ``norm_pix_loss``."""
        target = self.patchify(images)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over masked patches only (visible patches do not count)."""
        per_patch = ((pred - self.targets(images)) ** 2).mean(dim=-1)  # (B, L)
        m = mask.flatten(1).to(per_patch.dtype)
        return (per_patch * m).sum() / m.sum().clamp_min(1.0)

    def forward(
        self,
        images: torch.Tensor,
        mask_ratio: float | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask, encode, decode and score.

        Args:
            images: (B, C, H, W), H and W multiples of ``patch_size``.
            mask_ratio: overrides ``self.mask_ratio`` for this call.
            mask: an explicit (B, H/p, W/p) mask (1 = masked) instead of a random one.
            generator: for a reproducible random mask.

        Returns:
            ``(loss, prediction (B, L, p*p*C), mask (B, H/p, W/p))``.
        """
        self.check_size(images)
        b, _, h, w = images.shape
        grid = (h // self.patch_size, w // self.patch_size)
        if mask is None:
            mask = self.random_mask(b, grid, mask_ratio, generator=generator, device=images.device)
        elif tuple(mask.shape) != (b, *grid):
            raise InputError(f"mask must have shape {(b, *grid)}, got {tuple(mask.shape)}")
        mask = mask.to(images.device, images.dtype)
        features = self.forward_encoder(images, mask)
        pred = self.forward_decoder(features, mask)
        return self.forward_loss(images, pred, mask), pred, mask

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The image with masked patches replaced by the prediction (for figures).

        With ``norm_pix_loss`` the prediction is in per-patch normalised units and is mapped back with the
        true patch mean and standard deviation, as in MAE's visualisations.

        Returns:
            (B, C, H, W) tensor in the units of ``images``.
        """
        target = self.patchify(images)
        out = pred
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
            out = pred * std + mean
        m = mask.flatten(1)[..., None].to(out.dtype)
        return self.unpatchify(target * (1 - m) + out * m, *images.shape[-2:])

    def export_encoder(self) -> dict[str, torch.Tensor]:
        """Plain timm ConvNeXt V2 state dict (loads strict into ``create_backbone(self.backbone_name)``)."""
        if self.backend == "minkowski":
            from semkit.ssl.sparse import sparse_to_timm

            return sparse_to_timm(self.encoder)
        return encoder_state_dict(self.encoder)


# ------------------------------------------------------------------------------------------------------------
# Lightning


def normalise(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] grayscale -> the network's input units (the fine-tuning normalisation)."""
    return (images - GRAY_MEAN[0]) / GRAY_STD[0]


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise`."""
    return images * GRAY_STD[0] + GRAY_MEAN[0]


class FCMAEModule(L.LightningModule):
    """Lightning wrapper of :class:`FCMAE` (Woo et al., CVPR 2023) with the ConvNeXt V2 pretraining optimiser.

    AdamW (betas 0.9/0.95), learning rate ``config.lr`` or ``8e-4 x effective batch / 256``, weight decay
    ``config.weight_decay`` or 0.05 (not on biases, norms, GRN and the mask token), per-step linear warmup over
    ``warmup_epochs`` then cosine decay to ``min_lr x peak``. Validation masks are drawn from a generator
    seeded by ``(seed, batch index)``, so every epoch scores the same masks and the validation loss is
    comparable between epochs and checkpoints.

    Batches: (B, 1, H, W) float crops in [0, 1] (normalised here).
    """

    def __init__(self, config: PretrainConfig):
        super().__init__()
        self.config = config
        self.save_hyperparameters(config.to_dict())
        self.model = FCMAE(
            backbone=config.backbone,
            in_chans=1,
            patch_size=config.patch_size,
            mask_ratio=config.mask_ratio,
            decoder_dim=config.decoder_dim,
            decoder_depth=config.decoder_depth,
            norm_pix_loss=config.norm_pix_loss,
            backend=config.backend,
            drop_path_rate=config.drop_path_rate,
        )

    def forward(self, images: torch.Tensor, **kwargs):
        return self.model(normalise(images), **kwargs)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch.shape[0],
                 sync_dist=True)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + batch_idx * 7919 + self.global_rank)
        loss, _, _ = self(batch, generator=generator)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch.shape[0],
                 sync_dist=True)
        return loss

    def configure_optimizers(self):
        config = self.config
        lr = config.lr or scaled_lr(BASE_LR, config.batch_size, self.trainer.world_size)
        wd = WEIGHT_DECAY if config.weight_decay is None else config.weight_decay
        # GRN gamma/beta and the mask token are 1-D-like scale/shift parameters: no decay, as in the paper.
        groups = param_groups_weight_decay(self.model, wd, no_weight_decay_list=("mask_token",))
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=BETAS)
        total, per_epoch = steps_of(self)
        warmup = int(round(config.warmup_epochs * per_epoch))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_lambda(warmup, total, config.min_lr))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def export_encoder(self) -> dict[str, torch.Tensor]:
        """Plain timm encoder state dict (see :meth:`FCMAE.export_encoder`)."""
        return self.model.export_encoder()

    @torch.no_grad()
    def examples(self, images: torch.Tensor, seed: int = 0) -> dict[str, np.ndarray]:
        """Original, masked and reconstructed crops for a figure.

        Args:
            images: (B, 1, H, W) crops in [0, 1].
            seed: mask seed.

        Returns:
            dict of float arrays (B, H, W) in [0, 1]: ``original``, ``masked`` (masked patches set to 0),
            ``reconstruction`` (visible pixels kept, masked ones predicted) plus ``mask`` (B, H/p, W/p) and
            ``loss`` (a float).
        """
        was_training = self.training
        self.eval()
        images = images.to(self.device)
        x = normalise(images)
        loss, pred, mask = self.model(x, generator=torch.Generator().manual_seed(seed))
        recon = denormalise(self.model.reconstruct(x, pred, mask)).clamp(0, 1)
        pixel_mask = upsample_mask(mask, *images.shape[-2:])[:, None]
        self.train(was_training)
        to_np = lambda t: t[:, 0].float().cpu().numpy()  # noqa: E731
        return {
            "original": to_np(images),
            "masked": to_np(images * (1 - pixel_mask)),
            "reconstruction": to_np(recon),
            "mask": mask.cpu().numpy(),
            "loss": float(loss),
        }


def build_module(config: PretrainConfig) -> FCMAEModule:
    """The FCMAE LightningModule for ``config`` (checks crop and patch sizes first).

    Raises:
        InputError: a non-ConvNeXt-V2 backbone, a crop size that is not a multiple of ``patch_size``, a patch
            size other than the encoder stride, or the MinkowskiEngine backend with mixed precision (its
            kernels are float32/float64 only).
    """
    if config.backend == "minkowski" and str(config.precision) not in ("32", "32-true", "64", "64-true"):
        raise InputError(
            f"the minkowski backend runs in float32 only; got precision {config.precision!r} (use '32-true' or "
            "the dense backend)"
        )
    if config.crop_size % config.patch_size:
        raise InputError(
            f"crop_size {config.crop_size} is not divisible by the FCMAE patch size {config.patch_size}; "
            f"use e.g. {max(config.patch_size, config.crop_size // config.patch_size * config.patch_size)}"
        )
    return FCMAEModule(config)


def view_transform(config: PretrainConfig):
    """FCMAE trains on the crop itself (masking is part of the model)."""
    return None


def plot_reconstructions(examples: dict[str, np.ndarray], n: int = 4, path=None):
    """Grid of original / masked / reconstructed crops (one row per crop).

    Args:
        examples: output of :meth:`FCMAEModule.examples`.
        n: rows (at most the number of crops).
        path: save the figure there when given.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    n = min(n, len(examples["original"]))
    cols = ("original", "masked", "reconstruction")
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        for j, name in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(examples[name][i], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name)
    fig.suptitle(f"FCMAE reconstructions (loss {examples['loss']:.3f})")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
