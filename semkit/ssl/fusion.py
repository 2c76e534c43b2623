"""Gated feature fusion of a multi-scale encoder (MatSSL).

Each stage's feature map is global-average-pooled to one vector per image, squashed with a sigmoid and
multiplied by a learnable scalar gate ``P_i``; the gated vectors are concatenated. The gates let the
contrastive objective decide how much the shallow (texture) and deep (shape) stages contribute, so
pretraining shapes every stage the U-Net decoder later reads, not only the last one.

Reference: Nguyen, Phan, Lee, "MatSSL: Robust Self-Supervised Representation Learning for Metallographic
Image Segmentation", ICCV Workshops 2025, arXiv:2507.18184.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class GatedFeatureFusion(nn.Module):
    """``concat_i(P_i · sigmoid(GAP(F_i)))`` over the stages of a feature pyramid.

    Args:
        channels: channels ``C_i`` of each stage (e.g. ``backbone.feature_info.channels()``).
        init_gate: initial value of every gate ``P_i`` (1 = plain concatenation of the sigmoid features).

    Attributes:
        gates: learnable ``(n_stages,)`` tensor of the ``P_i``.
        out_dim: ``sum(channels)``.

    Shapes: a list of ``(B, C_i, H_i, W_i)`` maps (any ``H_i, W_i >= 1``) → ``(B, sum C_i)``.
    """

    def __init__(self, channels: Sequence[int], init_gate: float = 1.0):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive ints, got {channels}")
        self.channels = channels
        self.gates = nn.Parameter(torch.full((len(channels),), float(init_gate)))
        self.out_dim = sum(channels)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} feature maps, got {len(features)}")
        parts = []
        for i, (f, c) in enumerate(zip(features, self.channels, strict=True)):
            if f.dim() != 4 or f.shape[1] != c:
                raise ValueError(f"feature map {i} must be (B, {c}, H, W), got {tuple(f.shape)}")
            parts.append(self.gates[i] * torch.sigmoid(f.mean(dim=(2, 3))))
        return torch.cat(parts, dim=1)
