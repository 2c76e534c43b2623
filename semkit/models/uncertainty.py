"""Per-particle uncertainty: a k-bin confidence head on the Mask R-CNN RoI box features, its loss and bin mapping.

Method (Rettenberger et al., "Uncertainty-aware particle segmentation for electron microscopy at varied length
scales", npj Computational Materials 10, 124 (2024), doi:10.1038/s41524-024-01302-w): experts mark each
annotated particle as *certain* (clearly delimited, measurable) or *uncertain* (blurred, occluded, agglomerated).
Mask R-CNN gets one extra fully connected layer on the 1024-d RoI box representation that predicts a distribution
over ``k`` confidence bins; with ``k = 6`` it has 1024 · 6 + 6 = 6,150 parameters, the size reported there.

Training targets (per foreground RoI, matched to a ground-truth particle):

* ``y = clip(c + ε, 0, 1)`` with ``c = 1`` for certain and ``0`` for uncertain particles and label noise
  ``ε ~ N(0, σ²)`` drawn independently for every RoI in every step, so targets spread over the neighbouring
  bins instead of sitting on the two extreme bins;
* target bin ``b = min(⌊k · y⌋, k − 1)`` (:func:`bin_index`; ``y = 1`` falls in the last bin).

Loss (equation 1 of the study, in the form this module implements; the stored copy of the paper and its
repository available while writing this did not contain the equation, so the form follows the description
"cross-entropy over the bins weighted per bin by w_c and by exp(−|y_n − c| / ξ) so that near misses cost less"):

    L = −(1/N) Σ_n Σ_c  w_c · exp(−|b_n − c| / ξ) · log softmax(z_n)_c

with ``n`` over the N foreground RoIs, ``c`` over bin indices 0..k−1, distances measured in bins. Probability
mass on a bin next to the target is therefore rewarded more than mass on a distant bin (a near miss costs
less). For ξ → 0 the loss becomes the ordinary class-weighted cross-entropy ``w_{b_n} · CE`` (summed over RoIs,
divided by N). The mean is over RoIs, not over the weights, so changing ``w`` changes the loss scale.

Confidence γ ∈ [0, 1] of a particle is the expected bin centre ``γ = Σ_c p_c (c + ½)/k`` (:func:`confidence`);
a particle is *certain* when γ > 0.5. The post-processing of the study splits detections by the most probable
bin instead (argmax ≥ k/2, :func:`certain_by_max_bin`); both agree unless the distribution is bimodal.

Gradient flow: the study trains the network on the sum of the Mask R-CNN losses and the confidence loss,
L = L1 + L2, so by default (``detach_features=False``) the head's loss reaches the shared layers (box head,
pyramid, encoder) like every other loss. ``detach_features=True`` reads *detached* box features instead: the
head's loss then trains only its own layer and never changes the detector (semkit's default until the
budgeted recipe; kept as an option, compared in BENCHMARKS.md).

Label noise: with ``c ∈ {0, 1}`` and σ, a target leaves its end bin only when the noise points inwards by more
than one bin width 1/k (outward noise is clipped back into the end bin), i.e. for a fraction
Φ(−1/(k σ)) of the targets (:func:`label_noise_spread`): 4.8 % at the study's k = 6 and σ = 0.1, 20 % at
σ = 0.2. Small σ thus leaves almost every target on the two extreme bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UncertaintyConfig:
    """Settings of the uncertainty head and its loss.

    Attributes:
        num_bins: k, number of confidence bins (6 in the study).
        label_noise_std: σ of the Gaussian label noise added to the 0/1 certainty targets.
        distance_scale: ξ (in bins) of the near-miss weight exp(−|b − c| / ξ); 0 gives plain weighted CE.
        bin_weights: w_c per bin (length k), e.g. to balance rare uncertain particles; ``None`` = all ones.
        detach_features: head reads detached RoI features (its loss does not train the shared layers); the
            default ``False`` is the study's joint loss L = L1 + L2; see the module doc.
        loss_weight: factor on the uncertainty loss before it is added to the Mask R-CNN losses.
        in_features: size of the RoI box representation (1024 for torchvision's TwoMLPHead).
    """

    num_bins: int = 6
    label_noise_std: float = 0.1
    distance_scale: float = 1.0
    bin_weights: tuple[float, ...] | None = None
    detach_features: bool = False
    loss_weight: float = 1.0
    in_features: int = 1024

    def __post_init__(self) -> None:
        if self.num_bins < 2:
            raise ValueError(f"num_bins must be at least 2, got {self.num_bins}")
        if self.label_noise_std < 0 or self.distance_scale < 0:
            raise ValueError("label_noise_std and distance_scale must be non-negative")
        if self.bin_weights is not None:
            self.bin_weights = tuple(float(w) for w in self.bin_weights)
            if len(self.bin_weights) != self.num_bins:
                raise ValueError(f"bin_weights has {len(self.bin_weights)} entries, expected num_bins={self.num_bins}")
            if min(self.bin_weights) < 0:
                raise ValueError("bin_weights must be non-negative")


class UncertaintyHead(nn.Module):
    """One fully connected layer: RoI box features (R, in_features) → bin logits (R, num_bins).

    Reference: Rettenberger et al., npj Comput. Mater. 10, 124 (2024); see the module docstring.
    """

    def __init__(self, in_features: int = 1024, num_bins: int = 6):
        super().__init__()
        self.num_bins = num_bins
        self.fc = nn.Linear(in_features, num_bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def certainty_targets(
    certain: torch.Tensor, noise_std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noisy certainty targets ``clip(1{certain} + N(0, σ²), 0, 1)``.

    Args:
        certain: (N,) bool or 0/1 tensor, one entry per foreground RoI.
        noise_std: σ; 0 gives exact 0/1 targets.
        generator: optional RNG for reproducible noise.

    Returns:
        (N,) float32 targets in [0, 1].
    """
    y = certain.to(torch.float32)
    if noise_std > 0 and y.numel():
        y = y + noise_std * torch.randn(y.shape, generator=generator, device=y.device)
    return y.clamp(0.0, 1.0)


def bin_index(y: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Bin of each target: ``min(⌊k·y⌋, k − 1)`` for y in [0, 1] (y = 1 lands in the last bin). Returns int64."""
    return torch.clamp(torch.floor(y * num_bins), 0, num_bins - 1).to(torch.int64)


def bin_centres(num_bins: int, device: torch.device | None = None) -> torch.Tensor:
    """Centres ``(c + ½)/k`` of the k bins on [0, 1], shape (k,)."""
    return (torch.arange(num_bins, dtype=torch.float32, device=device) + 0.5) / num_bins


def near_miss_weights(
    target_bins: torch.Tensor, num_bins: int, distance_scale: float, bin_weights: Sequence[float] | None = None
) -> torch.Tensor:
    """Per-RoI, per-bin loss weights ``w_c · exp(−|b_n − c| / ξ)``, shape (N, k).

    ξ = 0 means a one-hot weight on the target bin (the limit ξ → 0).
    """
    c = torch.arange(num_bins, device=target_bins.device, dtype=torch.float32)
    dist = (target_bins.to(torch.float32)[:, None] - c[None, :]).abs()
    weights = (dist == 0).to(torch.float32) if distance_scale == 0 else torch.exp(-dist / distance_scale)
    if bin_weights is not None:
        weights = weights * torch.as_tensor(bin_weights, dtype=torch.float32, device=weights.device)[None, :]
    return weights


def uncertainty_loss(
    logits: torch.Tensor,
    target_bins: torch.Tensor,
    distance_scale: float = 1.0,
    bin_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Distance-weighted cross-entropy over confidence bins (see module docstring for the formula).

    Args:
        logits: (N, k) bin logits of N foreground RoIs.
        target_bins: (N,) int64 target bins in [0, k).
        distance_scale: ξ in bins.
        bin_weights: w_c, length k, or ``None`` for ones.

    Returns:
        Scalar loss; exactly 0 (still attached to ``logits``' graph) when N = 0.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    weights = near_miss_weights(target_bins, logits.shape[1], distance_scale, bin_weights)
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(weights * log_p).sum(dim=1).mean()


def confidence(probs: torch.Tensor) -> torch.Tensor:
    """Confidence γ = expected bin centre of bin probabilities ``probs`` (N, k) → (N,) in [0, 1]."""
    return probs @ bin_centres(probs.shape[-1], probs.device).to(probs.dtype)


def certain_by_max_bin(probs: torch.Tensor) -> torch.Tensor:
    """The study's split: a detection is certain when its most probable bin is in the upper half (≥ k/2)."""
    k = probs.shape[-1]
    return probs.argmax(dim=-1) >= k / 2


def label_noise_spread(noise_std: float, num_bins: int) -> float:
    """Share of noisy 0/1 targets that leave their end bin: ``Φ(−1 / (k σ))`` (0 for σ = 0).

    A certain target ``1 + ε`` is clipped to 1 for ε > 0 and leaves the last bin only for ε < −1/k; an uncertain
    one likewise; see :func:`certainty_targets`.
    """
    if noise_std <= 0:
        return 0.0
    return float(0.5 * math.erfc(1.0 / (num_bins * noise_std) / math.sqrt(2.0)))
