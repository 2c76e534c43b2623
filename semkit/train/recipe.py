"""The training recipe's rules that are not settings of a model: the learning-rate schedule over a budget, RoI
sampling sized to particle density and a detection cap that grows with image area.

**Budgets, not epochs.** A user has a CPU and an afternoon, so a run is budgeted in optimizer steps
(``max_steps``) and/or wall-clock minutes (``budget_minutes``), and the learning rate follows the *progress*
through that budget: a linear warmup from ``final_fraction`` of the peak to the peak over the first
``warmup_fraction``, then a half-cosine down to ``final_fraction`` at the end (:meth:`LRSchedule.factor`).
Progress is the larger of steps done / step budget and seconds spent / time budget, so a run that ends by its
clock has still annealed. Warmup + cosine decay is the common schedule of detection and SSL fine-tuning
(e.g. the ConvNeXt V2 fine-tuning recipes); the uncertainty-aware Mask R-CNN study trains with learning-rate
scheduling and early stopping.

**Sampling sized to density.** torchvision samples ``box_batch_size_per_image`` RoIs per image, at most a
quarter of them positive. A fixed 64 gives at most 16 positive RoIs, while a dense 256-px BAM crop holds ~45
particles: most particles then get no box, mask or confidence gradient in a step.
:func:`rois_for_density` sizes the sample from the training labels.

**Detection cap by area.** A fixed cap below the particle count of an image caps recall and AJI+ by a setting;
:func:`semkit.models.maskrcnn.detection_cap` scales it with the image's area
(``MaskRCNNConfig.detections_per_megapixel``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from semkit.config import JsonConfig

SCHEDULES = ("cosine", "constant")


@dataclass
class LRSchedule(JsonConfig):
    """Learning-rate factor (times the peak rate) as a function of the progress through the budget.

    Attributes:
        name: ``"cosine"`` (linear warmup, then half-cosine decay) or ``"constant"`` (the peak rate throughout,
            as semkit trained before the budgeted recipe).
        warmup_fraction: share of the budget spent warming up (0 = none).
        final_fraction: the factor at the start of the warmup and at the end of the decay.
    """

    name: str = "cosine"
    warmup_fraction: float = 0.05
    final_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise KeyError(f"unknown learning-rate schedule {self.name!r}; choose one of: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.final_fraction <= 1.0:
            raise ValueError(f"final_fraction must lie in [0, 1], got {self.final_fraction}")

    def factor(self, progress: float) -> float:
        """The factor at ``progress`` in [0, 1] (clipped): 1 at the end of the warmup, ``final_fraction`` at 0
        (with a warmup) and at 1."""
        if self.name == "constant":
            return 1.0
        p = min(max(float(progress), 0.0), 1.0)
        w, f = self.warmup_fraction, self.final_fraction
        if p < w:
            return f + (1.0 - f) * p / w
        span = 1.0 - w
        q = (p - w) / span if span > 0 else 1.0
        return f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * q))


class BudgetLR(torch.optim.lr_scheduler.LRScheduler):
    """Sets every parameter group's rate to ``base rate × schedule.factor(progress)`` at each optimizer step.

    Progress is ``max(steps / total_steps, seconds / total_seconds)`` over the budgets given (at least one);
    the clock starts when the scheduler is built, i.e. when training starts. Step it once per optimizer step.

    Args:
        optimizer: the optimizer (its groups' ``lr`` are the peak rates).
        schedule: the :class:`LRSchedule`.
        total_steps: step budget (``None`` = none).
        total_seconds: wall-clock budget (``None`` = none).
        clock: seconds since some origin (tests pass a fake one).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: LRSchedule, total_steps: int | None = None,
                 total_seconds: float | None = None, clock: Callable[[], float] = time.monotonic):
        if total_steps is None and total_seconds is None:
            raise ValueError("BudgetLR needs a step budget, a time budget or both")
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        if total_seconds is not None and total_seconds <= 0:
            raise ValueError(f"total_seconds must be positive, got {total_seconds}")
        self.schedule = schedule
        self.total_steps = total_steps
        self.total_seconds = total_seconds
        self.clock = clock
        self.start = clock()
        super().__init__(optimizer)

    def progress(self) -> float:
        """Share of the budget used, in [0, 1]."""
        parts = []
        if self.total_steps is not None:
            parts.append(self.last_epoch / self.total_steps)  # last_epoch counts scheduler steps
        if self.total_seconds is not None:
            parts.append((self.clock() - self.start) / self.total_seconds)
        return min(max(parts), 1.0)

    def get_lr(self) -> list[float]:
        factor = self.schedule.factor(self.progress())
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict:
        # plain values only, so checkpoints load with torch.load(weights_only=True); the clock is not saved
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "clock", "schedule")}
        state["schedule"] = self.schedule.to_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        schedule = state.pop("schedule", None)
        self.__dict__.update(state)
        if schedule is not None:
            self.schedule = LRSchedule(**schedule)


def particles_per_crop(records: Sequence, crop_size: int | None) -> np.ndarray:
    """Expected particle count of a ``crop_size`` × ``crop_size`` window of each labelled record (its particle
    density times the window's area); the whole image's count for ``crop_size=None``."""
    counts = []
    for rec in records:
        labels = rec.instances
        n = len(np.unique(labels[labels > 0]))
        area = labels.shape[0] * labels.shape[1]
        window = area if crop_size is None else min(crop_size * crop_size, area)
        counts.append(n * window / area)
    return np.asarray(counts, dtype=float)


def rois_for_density(records: Sequence, crop_size: int | None, positives_per_particle: float = 2.0,
                     positive_fraction: float = 0.25, quantile: float = 0.95, lowest: int = 64,
                     highest: int = 512) -> int:
    """RoIs to sample per training image so that the dense windows get ``positives_per_particle`` positive
    RoIs per particle: ``positives_per_particle × n / positive_fraction``, with ``n`` the ``quantile`` of
    :func:`particles_per_crop` over the training records, rounded up to a multiple of 32 and clipped to
    [``lowest``, ``highest``].

    Example: BAM TiO2's 20 training images hold up to 501 particles in 1024 × 704 px; the 95th percentile of a
    256-px window is ~40 particles → 2 × 40 / 0.25 = 320 RoIs (positives ≤ 80).
    """
    per_crop = particles_per_crop(records, crop_size)
    if per_crop.size == 0:
        return lowest
    n = float(np.quantile(per_crop, quantile))
    rois = positives_per_particle * n / positive_fraction
    rois = int(math.ceil(rois / 32.0) * 32)
    return int(min(max(rois, lowest), highest))


def configure_optimizers(module, lr: float, weight_decay: float, schedule: dict | LRSchedule | None = None,
                         max_steps: int | None = None, budget_seconds: float | None = None):
    """AdamW over ``module``'s parameters with a :class:`BudgetLR` stepped every optimizer step, as Lightning's
    ``configure_optimizers`` returns it; the one optimizer set-up of every fine-tuning module.

    Without ``max_steps`` and ``budget_seconds`` the step budget is the trainer's estimate of the run's
    optimizer steps (epochs × batches per epoch); ``schedule=None`` or ``{"name": "constant"}`` keeps the rate
    constant (plain AdamW, as semkit trained before).
    """
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = schedule if isinstance(schedule, LRSchedule) else LRSchedule(**(schedule or {"name": "constant"}))
    if schedule.name == "constant":
        return optimizer
    total_steps = max_steps
    if total_steps is None and budget_seconds is None:
        estimate = module.trainer.estimated_stepping_batches
        total_steps = int(estimate) if math.isfinite(estimate) else None
        if total_steps is None:
            raise ValueError("a learning-rate schedule needs a step budget, a time budget or a finite epoch count")
    scheduler = BudgetLR(optimizer, schedule, total_steps=total_steps, total_seconds=budget_seconds)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


#: Mask R-CNN settings of the recipe (``FinetuneConfig.maskrcnn``'s default): a 128-channel feature pyramid and a
#: two-layer, 128-channel mask head (``semkit bench train``: ResNet-50 steps 3.4× faster than torchvision's
#: 256-channel pyramid and 4 × 256 mask head at 256 sampled RoIs), and a detection cap of 700 per megapixel,
#: at least 100 (505 for a 1024 × 704 BAM image, 1,613 for a 1920 × 1200 Phenom image).
RECIPE_MASKRCNN: dict = {"fpn_channels": 128, "mask_head_channels": 128, "mask_head_depth": 2,
                         "detections_per_img": 100, "detections_per_megapixel": 700.0}
#: Augmentation of the recipe (``FinetuneConfig.augment``'s default): :class:`semkit.train.data.DataConfig`'s own,
#: i.e. flips, 90° rotations, brightness/contrast jitter and blur. Gamma and Gaussian noise (``{"gamma": 0.25,
#: "noise_p": 0.3, "noise_std": 0.05}``) were measured on top, for the ResNet-50 U-Net at 30 CPU minutes: best
#: validation AJI+ 0.685 with them vs 0.708 without (test 0.681 vs 0.685; BENCHMARKS.md section 1), so they are
#: available (``DataConfig.gamma``, ``noise_p``, ``noise_std``) but off.
RECIPE_AUGMENT: dict = {}
