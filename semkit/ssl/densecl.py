"""DenseCL: dense contrastive learning -- MoCo v2 plus a contrastive loss between local features.

Two views of a crop pass through a query encoder and its momentum (EMA) copy. Besides MoCo v2's global
InfoNCE on average-pooled features, every position of the last feature map gets its own projection (a DenseCL
head applied per position) and is contrasted against

* its positive: the key-view position whose *backbone* feature is most similar (cosine) to it
  (:func:`lightly.models.utils.select_most_similar`) -- the correspondence is found, not computed from the
  augmentation geometry, so it survives crops, flips and rotations alike;
* negatives: a queue holding, per earlier image, the normalised mean of its dense key projections.

Loss: ``(1 - λ) · L_global + λ · L_dense`` with λ = 0.5, τ = 0.2 and queues of 65536 as in the paper.

Reference: Wang, Zhang, Shen, Kong, Li, "Dense Contrastive Learning for Self-Supervised Visual
Pre-Training", CVPR 2021 (official implementation WXinlong/DenseCL).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models.modules import DenseCLProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import batch_shuffle, batch_unshuffle, select_most_similar
from lightly.utils import dist as lightly_dist
from torch import nn

from semkit.ssl.mocov2 import (
    ContrastiveModule,
    MomentumEncoder,
    OptimSettings,
    config_dict,
    last_stage_backbone,
    method_lr,
    setting,
)
from semkit.ssl.transforms import two_view_transform

#: Weight λ of the dense loss.
DENSE_WEIGHT = 0.5


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None,
             temperature: float) -> torch.Tensor:
    """InfoNCE of each query against its positive and a shared set of negatives.

    ``mean_i [-log(exp(q_i·k_i / τ) / (exp(q_i·k_i / τ) + Σ_j exp(q_i·n_j / τ)))]`` with all vectors
    L2-normalised first (cosine similarities).

    Args:
        query: (N, D).
        positive: (N, D), row ``i`` is the positive of query ``i``.
        negatives: (K, D) shared negatives, or ``None``/empty for none (the loss is then 0).
        temperature: τ > 0.

    Returns:
        Scalar mean loss over the N queries.
    """
    q = F.normalize(query, dim=-1)
    k = F.normalize(positive, dim=-1)
    pos = (q * k).sum(dim=-1, keepdim=True)
    if negatives is None or negatives.numel() == 0:
        neg = q.new_zeros((q.shape[0], 0))
    else:
        neg = q @ F.normalize(negatives, dim=-1).to(q.dtype).T
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def dense_info_nce(query_dense: torch.Tensor, key_dense: torch.Tensor, query_features: torch.Tensor,
                   key_features: torch.Tensor, negatives: torch.Tensor | None,
                   temperature: float) -> torch.Tensor:
    """DenseCL's dense loss: InfoNCE per query position against the most similar key position.

    Args:
        query_dense: (B, S, D) dense projections of the query view (S = positions of the last feature map).
        key_dense: (B, S, D) dense projections of the key view.
        query_features, key_features: (B, S, C) backbone features of both views; the positive of query
            position ``s`` is the key position ``argmax_t cos(query_features[b, s], key_features[b, t])``
            (matching is within the same image only).
        negatives: (K, D) dense queue (or ``None``).
        temperature: τ.

    Returns:
        Scalar mean over all B·S query positions.
    """
    matched = select_most_similar(query_features, key_features, key_dense)
    return info_nce(query_dense.flatten(0, 1), matched.flatten(0, 1), negatives, temperature)


class DenseCL(nn.Module):
    """DenseCL network: backbone + global and dense DenseCL heads, EMA key encoder, two queues (Wang et al. 2021).

    Args:
        backbone: a :data:`semkit.models.BACKBONES` name (``resnet50`` as in the paper, or a ConvNeXt V2).
        hidden_dim, out_dim: widths of both 2-layer heads (2048 → 128 in the paper).
        queue_size: negatives per queue (65536 in the paper).
        temperature: τ of both losses (0.2).
        dense_weight: λ.
        init: initial backbone weights (see :func:`semkit.models.create_backbone`).

    Shapes: views ``(B, 1, H, W)``; the last feature map ``(B, C, h, w)`` with ``h = ⌈H/32⌉``, ``S = h·w``.
    """

    def __init__(self, backbone: str = "resnet50", hidden_dim: int = 2048, out_dim: int = 128,
                 queue_size: int = 65536, temperature: float = 0.2, dense_weight: float = DENSE_WEIGHT,
                 init="random"):
        super().__init__()
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError(f"dense_weight must lie in [0, 1], got {dense_weight}")
        encoder = last_stage_backbone(backbone, init=init)
        channels = encoder.feature_info.channels()[-1]
        self.encoders = MomentumEncoder(nn.ModuleDict({
            "backbone": encoder,
            "head_global": DenseCLProjectionHead(channels, hidden_dim, out_dim),
            # Applied to (B, S, C): a Linear per position is the paper's 1x1 convolution.
            "head_dense": DenseCLProjectionHead(channels, hidden_dim, out_dim),
        }))
        self.temperature = temperature
        self.dense_weight = dense_weight
        # Queues of normalised keys, (K, D); gather_distributed makes the content independent of the device count.
        self.global_queue = MemoryBankModule((queue_size, out_dim), gather_distributed=True, feature_dim_first=False)
        self.dense_queue = MemoryBankModule((queue_size, out_dim), gather_distributed=True, feature_dim_first=False)

    @property
    def backbone(self) -> nn.Module:
        """The query backbone (the encoder that is exported)."""
        return self.encoders.online["backbone"]

    @staticmethod
    def _encode(net: nn.ModuleDict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = net["backbone"](x)[-1]  # (B, C, h, w)
        features = fmap.flatten(2).transpose(1, 2)  # (B, S, C)
        global_proj = net["head_global"](fmap.mean(dim=(2, 3)))  # (B, D)
        dense_proj = net["head_dense"](features)  # (B, S, D)
        return features, global_proj, dense_proj

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query branch: backbone features (B, S, C), global projection (B, D), dense projections (B, S, D)."""
        return self._encode(self.encoders.online, x)

    @torch.no_grad()
    def encode_momentum(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Key branch (momentum encoder, no gradient); same outputs as :meth:`encode`.

        Under DDP the batch is shuffled across devices first (MoCo's shuffling BN).
        """
        distributed = lightly_dist.world_size() > 1
        if distributed:
            x, shuffle = batch_shuffle(x, distributed=True)
        out = self._encode(self.encoders.momentum, x)
        if distributed:
            out = tuple(batch_unshuffle(t, shuffle, distributed=True) for t in out)
        return out

    def update_momentum(self, m: float) -> None:
        """EMA step of the key encoder and heads (see :meth:`semkit.ssl.mocov2.MomentumEncoder.update`)."""
        self.encoders.update(m)

    def forward(self, x_query: torch.Tensor, x_key: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses of one batch of view pairs.

        The queues receive this batch's keys only when gradients are tracked (training).

        Returns:
            ``{"loss", "loss_global", "loss_dense"}`` scalars, ``loss = (1-λ)·global + λ·dense``.
        """
        q_feat, q_global, q_dense = self.encode(x_query)
        k_feat, k_global, k_dense = self.encode_momentum(x_key)
        k_global = F.normalize(k_global, dim=-1)
        # The dense queue stores one vector per image: the normalised mean of its dense key projections.
        k_dense_mean = F.normalize(k_dense.mean(dim=1), dim=-1)
        update = torch.is_grad_enabled() and q_global.requires_grad
        _, global_negatives = self.global_queue(k_global, update=update)
        _, dense_negatives = self.dense_queue(k_dense_mean, update=update)
        loss_global = info_nce(q_global, k_global, global_negatives, self.temperature)
        loss_dense = dense_info_nce(q_dense, k_dense, q_feat, k_feat, dense_negatives, self.temperature)
        loss = (1.0 - self.dense_weight) * loss_global + self.dense_weight * loss_dense
        return {"loss": loss, "loss_global": loss_global, "loss_dense": loss_dense}


#: Which weights :func:`semkit.ssl.pretrain.pretrain` exports: the final ones. The InfoNCE loss is measured
#: against a queue of negatives that starts random and fills with ever more similar keys, so it rises while the
#: encoder improves and the lowest validation loss just marks the earliest epoch.
EXPORT_CHECKPOINT = "last"

def build_module(config) -> ContrastiveModule:
    """DenseCL LightningModule for a pretraining configuration.

    Reads ``backbone``, ``lr`` (``None``: 0.3 × global batch / 256, the global batch being ``batch_size`` ×
    devices × nodes), ``weight_decay`` (``None``: 1e-4) and ``warmup_epochs`` from ``config``, and the optional
    ``queue_size`` (65536), ``temperature`` (0.2), ``key_momentum`` (0.999), ``dense_weight`` (0.5),
    ``proj_hidden_dim`` (2048), ``proj_dim`` (128), ``init`` (``"random"``; ``"imagenet"`` or an encoder
    checkpoint) when present. Schedule: linear warmup, then step decay ×0.1 at 60 % and 80 % of the run. Mixed
    precision comes from the trainer (``config.precision``, e.g. ``"16-mixed"`` on a GPU).
    """
    network = DenseCL(
        backbone=setting(config, "backbone", "resnet50"),
        hidden_dim=setting(config, "proj_hidden_dim", 2048),
        out_dim=setting(config, "proj_dim", 128),
        queue_size=setting(config, "queue_size", 65536),
        temperature=setting(config, "temperature", 0.2),
        dense_weight=setting(config, "dense_weight", DENSE_WEIGHT),
        init=setting(config, "init", "random"),
    )
    optim = OptimSettings(lr=method_lr(config, 0.3), weight_decay=setting(config, "weight_decay", 1e-4),
                          schedule="step", warmup_epochs=setting(config, "warmup_epochs", 0))
    return ContrastiveModule(network, optim, key_momentum=setting(config, "key_momentum", 0.999),
                             hparams=config_dict(config))


def view_transform(config):
    """DenseCL augmentation (MoCo v2's) of one ``(1, H, W)`` crop into two ``(1, crop_size, crop_size)`` views."""
    return two_view_transform(setting(config, "crop_size", 224), preset="densecl")
