"""Pairwise agreement between any number of annotators and models.

Like the three-expert comparison of the uncertainty-aware Mask R-CNN study (LiCoO2 images annotated by three
experts and compared with the model), every pair of sources is scored image by image and summarised as
mean ± standard deviation over the images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from semkit.errors import InputError
from semkit.metrics.instance import Overlap, aji_plus_from_overlap, match_overlap, pairwise_overlap
from semkit.metrics.instance_set import as_instance_set


def _f1_at_04(overlap: Overlap) -> float:
    return match_overlap(overlap, 0.4).f1


def _pq_at_05(overlap: Overlap) -> float:
    return match_overlap(overlap, 0.5, strict=True).pq


#: Symmetric per-image agreement scores, by name.
AGREEMENT_METRICS: dict[str, Callable[[Overlap], float]] = {
    "aji_plus": aji_plus_from_overlap,
    "f1": _f1_at_04,
    "pq": _pq_at_05,
}


@dataclass(frozen=True)
class AgreementMatrix:
    """Pairwise agreement of several sources.

    Attributes:
        mean: square DataFrame (sources × sources) of the mean per-image score; diagonal 1.
        std: same shape, sample standard deviation over images (ddof = 1; NaN for one image); diagonal 0.
        per_image: long table ``a, b, image, <metric>`` of every pair (a before b in the given order).
        metric: the score used.
    """

    mean: pd.DataFrame
    std: pd.DataFrame
    per_image: pd.DataFrame
    metric: str

    def formatted(self, digits: int = 3) -> pd.DataFrame:
        """``"mean ± std"`` strings, as agreement tables are printed in papers."""
        m, s = self.mean.to_numpy(), self.std.to_numpy()
        cells = [[f"{m[i, j]:.{digits}f} ± {s[i, j]:.{digits}f}" for j in range(m.shape[1])] for i in range(m.shape[0])]
        return pd.DataFrame(cells, index=self.mean.index, columns=self.mean.columns)


def agreement_matrix(sources: Mapping[str, object], metric: str = "aji_plus") -> AgreementMatrix:
    """Score every pair of annotators/models image by image and summarise as mean ± std.

    Args:
        sources: name → :class:`~semkit.metrics.InstanceSet` (or anything
            :func:`~semkit.metrics.as_instance_set` accepts); all must cover the same images.
        metric: one of :data:`AGREEMENT_METRICS` (``"aji_plus"``, ``"f1"`` at IoU ≥ 0.4, ``"pq"``); all are
            symmetric, so each unordered pair is scored once.

    Returns:
        :class:`AgreementMatrix`.

    Raises:
        KeyError: for an unknown metric (the message lists the valid ones).
        InputError: for fewer than two sources or sources covering different images.
    """
    if metric not in AGREEMENT_METRICS:
        raise KeyError(f"unknown agreement metric {metric!r}; choose one of {', '.join(AGREEMENT_METRICS)}")
    score = AGREEMENT_METRICS[metric]
    sets = {name: as_instance_set(s, source=name) for name, s in sources.items()}
    if len(sets) < 2:
        raise InputError(f"agreement needs at least two sources, got {len(sets)}")
    names = list(sets)
    images = sets[names[0]].names
    for n in names[1:]:
        if set(sets[n].names) != set(images):
            diff = sorted(set(images) ^ set(sets[n].names))
            raise InputError(f"sources {names[0]!r} and {n!r} cover different images, e.g. {diff[:3]}")
    rows = []
    for a, b in combinations(names, 2):
        for image in images:
            ov = pairwise_overlap(sets[a].masks[image], sets[b].masks[image], name=image)
            rows.append({"a": a, "b": b, "image": image, metric: score(ov)})
    per_image = pd.DataFrame(rows)
    mean = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    std = pd.DataFrame(np.zeros((len(names), len(names))), index=names, columns=names)
    for (a, b), part in per_image.groupby(["a", "b"], sort=False):
        m = float(part[metric].mean())
        s = float(part[metric].std(ddof=1)) if len(part) > 1 else float("nan")
        mean.loc[a, b] = mean.loc[b, a] = m
        std.loc[a, b] = std.loc[b, a] = s
    return AgreementMatrix(mean, std, per_image, metric)
