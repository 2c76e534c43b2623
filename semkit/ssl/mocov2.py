"""MoCo v2: momentum contrast with a queue of negatives, composed from lightly's blocks.

A query encoder (backbone + MLP head) and a key encoder that follows it as an exponential moving average
(:func:`lightly.models.utils.update_momentum`, frozen with :func:`~lightly.models.utils.deactivate_requires_grad`)
embed two augmented views of each crop; lightly's :class:`~lightly.loss.NTXentLoss` with a memory bank scores
every query against its own key (the positive) and a queue of keys from earlier batches (the negatives) -- the
InfoNCE loss of MoCo. The encoder is any :func:`semkit.models.create_backbone` model (ResNet-50 as in the paper,
or ConvNeXt V2), whose last stage is average-pooled, so the exported weights load into the fine-tuning models
with ``strict=True``.

This module also holds the pieces DenseCL (which extends MoCo v2) and MatSSL share: :class:`ContrastiveModule`
(the thin LightningModule: momentum update, logging, SGD with its schedule, encoder export), :func:`lr_lambda`,
:func:`split_views` and :func:`setting`.

Reference: Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297
(2020); He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import lightning as L
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum
from lightly.utils import dist as lightly_dist
from torch import nn

from semkit.models.backbones import BACKBONES, create_backbone, encoder_state_dict
from semkit.ssl.pretrain import scaled_lr, steps_of, warmup_cosine_lambda
from semkit.ssl.transforms import two_view_transform

#: Reference batch size of the linear learning-rate scaling rule (lr = base_lr * batch / 256).
REFERENCE_BATCH = 256


def setting(config, name: str, default):
    """``config.<name>``, or ``default`` when the field is missing or ``None`` (``None`` = "method default")."""
    value = getattr(config, name, None)
    return default if value is None else value


def last_stage_backbone(name: str, init="random") -> nn.Module:
    """A :func:`create_backbone` model that returns only its last (stride-32) feature map.

    The parameter names do not depend on ``out_indices``, so its state dict loads into the full pyramid model.
    """
    return create_backbone(name, init=init, out_indices=(BACKBONES[name][-1],))


class MomentumEncoder(nn.Module):
    """An online network and its exponential-moving-average copy (the "key" / "momentum" network).

    Args:
        online: the trained network (backbone and head in an ``nn.ModuleDict`` or any module).

    Attributes:
        online: the trained network.
        momentum: a deep copy with ``requires_grad=False``, updated only by :meth:`update`.
    """

    def __init__(self, online: nn.Module):
        super().__init__()
        self.online = online
        self.momentum = copy.deepcopy(online)
        deactivate_requires_grad(self.momentum)

    @torch.no_grad()
    def update(self, m: float) -> None:
        """``key = m * key + (1 - m) * query`` for every parameter (buffers such as BN statistics are left alone).

        Raises:
            ValueError: ``m`` outside ``[0, 1]``.
        """
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {m}")
        update_momentum(self.online, self.momentum, m=m)


class MoCoV2(nn.Module):
    """MoCo v2 network: query encoder, EMA key encoder, queue of negatives (Chen et al. 2020).

    Args:
        backbone: a :data:`semkit.models.BACKBONES` name; its last stage is pooled into the embedding.
        hidden_dim, out_dim: widths of the 2-layer MLP projection head (2048 → 128 in the paper).
        queue_size: number of negative keys kept (65536 in the paper; keep it a multiple of the batch size).
        temperature: InfoNCE temperature τ (0.2 in MoCo v2).
        init: initial backbone weights (see :func:`create_backbone`).

    Shapes: views ``(B, 1, H, W)`` → embeddings ``(B, out_dim)``; the backbone's last map is ``(B, C, H/32, W/32)``.
    """

    def __init__(self, backbone: str = "resnet50", hidden_dim: int = 2048, out_dim: int = 128,
                 queue_size: int = 65536, temperature: float = 0.2, init="random"):
        super().__init__()
        encoder = last_stage_backbone(backbone, init=init)
        channels = encoder.feature_info.channels()[-1]
        self.encoders = MomentumEncoder(nn.ModuleDict({
            "backbone": encoder,
            "head": MoCoProjectionHead(channels, hidden_dim, out_dim),
        }))
        # gather_distributed: under DDP the queue receives every device's keys, so its content does not depend
        # on the number of devices (a no-op on one device).
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, out_dim),
                                    gather_distributed=True)

    @property
    def backbone(self) -> nn.Module:
        """The query backbone (the encoder that is exported)."""
        return self.encoders.online["backbone"]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Query embedding ``(B, out_dim)`` of views ``(B, 1, H, W)``."""
        return self.encoders.online["head"](self.backbone(x)[-1].mean(dim=(2, 3)))

    @torch.no_grad()
    def embed_momentum(self, x: torch.Tensor) -> torch.Tensor:
        """Key embedding ``(B, out_dim)`` from the momentum encoder (no gradient).

        Under DDP the batch is shuffled across devices first ("shuffling BN" of the paper), so batch-norm
        statistics cannot leak which query matches which key.
        """
        distributed = lightly_dist.world_size() > 1
        if distributed:
            x, shuffle = batch_shuffle(x, distributed=True)
        net = self.encoders.momentum
        k = net["head"](net["backbone"](x)[-1].mean(dim=(2, 3)))
        return batch_unshuffle(k, shuffle, distributed=True) if distributed else k

    def update_momentum(self, m: float) -> None:
        """EMA step of the key encoder towards the query encoder (see :meth:`MomentumEncoder.update`)."""
        self.encoders.update(m)

    def forward(self, x_query: torch.Tensor, x_key: torch.Tensor) -> dict[str, torch.Tensor]:
        """InfoNCE loss of the queries against their keys and the queue.

        The queue is updated with the keys only when gradients are tracked (training), so validation leaves
        it untouched.

        Returns:
            ``{"loss": scalar}``.
        """
        q = self.embed(x_query)
        k = self.embed_momentum(x_key)
        return {"loss": self.criterion(q, k)}


@dataclass(frozen=True)
class OptimSettings:
    """SGD and its learning-rate schedule for a contrastive method.

    Attributes:
        lr: peak learning rate (already scaled for the batch size).
        weight_decay: L2 weight decay of SGD.
        momentum: SGD momentum.
        schedule: ``"cosine"`` (to ``final_lr``), ``"step"`` (× ``gamma`` at each milestone) or ``"constant"``.
        warmup_epochs: linear warmup from ~0 to ``lr`` over this many epochs (may be fractional or 0).
        final_lr: learning rate at the end of a cosine schedule.
        milestones: for ``"step"``: fractions of the run after which the rate is multiplied by ``gamma``.
        gamma: step-decay factor.
    """

    lr: float
    weight_decay: float
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    final_lr: float = 0.0
    milestones: tuple[float, ...] = (0.6, 0.8)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of: cosine, step, constant")
        if self.lr <= 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")


def lr_lambda(total_steps: int, warmup_steps: int, settings: OptimSettings):
    """``LambdaLR`` factor of ``settings.lr`` at optimizer step ``s`` (0-based) of ``total_steps``.

    Linear warmup ``(s + 1) / warmup_steps`` first (so the first step does not run at lr 0), then

    * ``"cosine"``: cosine from 1 to ``final_lr / lr`` (:func:`semkit.ssl.pretrain.warmup_cosine_lambda`);
    * ``"step"``: ``gamma ** (number of milestones m with s >= m * total_steps)``;
    * ``"constant"``: 1.
    """
    if settings.schedule == "cosine":
        return warmup_cosine_lambda(warmup_steps, total_steps, settings.final_lr / settings.lr)
    bounds = [m * total_steps for m in settings.milestones]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if settings.schedule == "step":
            return settings.gamma ** sum(step >= b for b in bounds)
        return 1.0

    return factor


def split_views(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The two view batches ``(B, 1, H, W)`` of a collated batch.

    Accepts a list/tuple of two tensors (what :class:`semkit.ssl.transforms.TwoViews` collates to), such a pair
    wrapped in a tuple with extra items (``(views, labels, ...)``), or a tensor ``(B, 2, 1, H, W)``.

    Raises:
        ValueError: any other structure.
    """
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 5 and batch.shape[1] == 2:
            return batch[:, 0], batch[:, 1]
    elif isinstance(batch, (list, tuple)) and batch:
        if isinstance(batch[0], (list, tuple)):
            return split_views(batch[0])
        if len(batch) == 2 and all(isinstance(v, torch.Tensor) and v.dim() == 4 for v in batch):
            return batch[0], batch[1]
    shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
    raise ValueError(f"a contrastive batch must hold two views of shape (B, 1, H, W), got {shape}")


class ContrastiveModule(L.LightningModule):
    """Thin LightningModule around a contrastive network with ``forward(x0, x1) -> {"loss", ...}``.

    Per training step: optional momentum update of the key encoder (networks with ``update_momentum``), the
    losses logged as ``train/<name>``; per validation step the same losses as ``val/<name>`` (no momentum or
    queue update). The optimizer is SGD with :class:`OptimSettings`, stepped per batch.

    Args:
        network: the method's ``nn.Module``; must expose ``backbone`` (a :func:`create_backbone` model).
        optim: optimiser settings.
        key_momentum: EMA factor of the key encoder (ignored by networks without one).
        hparams: plain values saved with the checkpoint (the pretraining configuration).
    """

    def __init__(self, network: nn.Module, optim: OptimSettings, key_momentum: float = 0.999,
                 hparams: dict | None = None):
        super().__init__()
        self.network = network
        self.optim = optim
        self.key_momentum = key_momentum
        self.save_hyperparameters(hparams or {})

    def _step(self, batch, stage: str) -> torch.Tensor:
        x0, x1 = split_views(batch)
        if stage == "train" and hasattr(self.network, "update_momentum"):
            self.network.update_momentum(self.key_momentum)
        losses = self.network(x0, x1)
        for name, value in losses.items():
            self.log(f"{stage}/{name}", value, on_step=stage == "train", on_epoch=True,
                     prog_bar=name == "loss", sync_dist=True, batch_size=x0.shape[0])
        return losses["loss"]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=self.optim.lr, momentum=self.optim.momentum,
                                    weight_decay=self.optim.weight_decay)
        total, per_epoch = steps_of(self)
        warmup = min(int(round(self.optim.warmup_epochs * per_epoch)), total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, warmup, self.optim))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def export_encoder(self) -> dict[str, torch.Tensor]:
        """Plain timm encoder state dict; loads with ``strict=True`` into ``create_backbone(backbone)``."""
        return encoder_state_dict(self.network.backbone)


def method_lr(config, base_lr: float) -> float:
    """``config.lr`` when set, else ``base_lr × global batch / 256`` (the linear scaling rule of the paper).

    The global batch counts every device and node (``config.world_size()``; 1 when unknown).
    """
    if getattr(config, "lr", None) is not None:
        return float(config.lr)
    world = config.world_size() if hasattr(config, "world_size") else 1
    return scaled_lr(base_lr, setting(config, "batch_size", REFERENCE_BATCH), world or 1, REFERENCE_BATCH)


def cosine_final_lr(config, peak_lr: float, default: float = 0.0) -> float:
    """Final lr of a cosine schedule: ``config.min_lr`` (a fraction of the peak) when positive, else ``default``."""
    fraction = setting(config, "min_lr", 0.0)
    return fraction * peak_lr if fraction > 0 else default


#: Which weights :func:`semkit.ssl.pretrain.pretrain` exports: the final ones. The InfoNCE loss is measured
#: against a queue of negatives that starts random and fills with ever more similar keys, so it rises while the
#: encoder improves and the lowest validation loss just marks the earliest epoch.
EXPORT_CHECKPOINT = "last"

def build_module(config) -> ContrastiveModule:
    """MoCo v2 LightningModule for a pretraining configuration.

    Reads ``backbone``, ``lr`` (``None``: 0.03 × global batch / 256), ``weight_decay`` (``None``: 1e-4),
    ``warmup_epochs`` and ``min_lr`` (cosine floor as a fraction of the peak) from ``config``, and the optional
    fields ``queue_size`` (65536), ``temperature`` (0.2), ``key_momentum`` (0.999), ``proj_hidden_dim`` (2048),
    ``proj_dim`` (128), ``init`` (``"random"``; ``"imagenet"`` or an encoder checkpoint) when present. Cosine
    schedule as in MoCo v2.
    """
    network = MoCoV2(
        backbone=setting(config, "backbone", "resnet50"),
        hidden_dim=setting(config, "proj_hidden_dim", 2048),
        out_dim=setting(config, "proj_dim", 128),
        queue_size=setting(config, "queue_size", 65536),
        temperature=setting(config, "temperature", 0.2),
        init=setting(config, "init", "random"),
    )
    lr = method_lr(config, 0.03)
    optim = OptimSettings(lr=lr, weight_decay=setting(config, "weight_decay", 1e-4), schedule="cosine",
                          warmup_epochs=setting(config, "warmup_epochs", 0), final_lr=cosine_final_lr(config, lr))
    return ContrastiveModule(network, optim, key_momentum=setting(config, "key_momentum", 0.999),
                             hparams=config_dict(config))


def view_transform(config):
    """MoCo v2 augmentation of one ``(1, H, W)`` crop into two ``(1, crop_size, crop_size)`` views."""
    return two_view_transform(setting(config, "crop_size", 224), preset="mocov2")


def config_dict(config) -> dict:
    """Plain-value dictionary of a dataclass configuration (for checkpoints); ``{}`` for anything else."""
    import dataclasses

    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}
