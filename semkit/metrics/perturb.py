"""Controlled perturbations of ground truth: synthetic "predictions" of known quality.

Evaluation code and notebook 04 must run before any model exists, and a metric is best understood on errors of
known kind and number. :func:`perturb_instances` turns a ground-truth label map into a prediction with

* **dropped** particles (missed detections),
* **merged** pairs (a particle joined with its nearest neighbour: one prediction covers two particles),
* **split** particles (cut in two across the major axis through the centroid),
* **shifted** particles (every particle translated by up to ``shift`` pixels),
* **grown** outlines (every prediction dilated by ``grow`` pixels),
* **spurious** particles (ellipses drawn on background),

and a **confidence score** per predicted particle drawn from a Beta distribution whose mean depends on what
happened to the particle (intact particles of certain ground truth high, uncertain ones lower, merged/split
pieces lower still, spurious ones lowest), so confidence analyses have a known answer: certain particles
are separable from uncertain ones with an AUROC clearly above 0.5.

:data:`METHOD_PRESETS` are three error levels used as stand-ins for segmentation methods, and
:func:`simulate_study` draws a whole results table (pretraining method × backbone size × pretraining-set size
× seed) from a toy model in which more pretraining images and bigger backbones mean fewer errors. These are
simulations for teaching and testing the evaluation tools, never results about real methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from skimage.draw import ellipse
from skimage.measure import regionprops
from skimage.segmentation import expand_labels

from semkit.errors import InputError
from semkit.metrics.inputs import check_instances

#: Mean confidence of a predicted particle by what the perturbation did to it.
CONFIDENCE_MEANS = {"intact_certain": 0.85, "intact_uncertain": 0.55, "merged": 0.45, "split": 0.45,
                    "spurious": 0.3}
KINDS = ("intact", "merged", "split", "spurious")


@dataclass(frozen=True)
class PerturbConfig:
    """How much of each controlled error a simulated method makes.

    Attributes:
        drop: fraction of ground-truth particles left out (missed).
        merge: fraction of ground-truth particles that end up merged, in pairs with their nearest neighbour
            (one prediction per pair).
        split: fraction of ground-truth particles cut in two.
        shift: every particle is translated by an integer offset drawn uniformly from [-shift, shift] per axis.
        grow: dilation of every predicted particle in pixels (0 = none; labels never overwrite each other).
        spurious: number of spurious particles as a fraction of the ground-truth count.
        spurious_radius: (min, max) semi-axis of spurious ellipses in pixels.
        confidence_concentration: a + b of the Beta distributions of the confidence (higher = less spread).
    """

    drop: float = 0.05
    merge: float = 0.05
    split: float = 0.05
    shift: int = 2
    grow: int = 0
    spurious: float = 0.05
    spurious_radius: tuple[float, float] = (3.0, 10.0)
    confidence_concentration: float = 12.0

    def __post_init__(self) -> None:
        for name in ("drop", "merge", "split"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"PerturbConfig.{name} must be a fraction in [0, 1], got {value}")
        if self.drop + self.merge + self.split > 1.0:
            raise InputError("PerturbConfig drop + merge + split must not exceed 1 (each particle gets one error)")
        if self.shift < 0 or self.grow < 0 or self.spurious < 0:
            raise InputError("PerturbConfig shift, grow and spurious must be non-negative")
        lo, hi = self.spurious_radius
        if not 0 < lo <= hi:
            raise InputError(f"PerturbConfig.spurious_radius must be 0 < min <= max, got {self.spurious_radius}")
        if self.confidence_concentration <= 0:
            raise InputError("PerturbConfig.confidence_concentration must be positive")

    def scaled(self, strength: float) -> PerturbConfig:
        """The same error mix with every rate and the shift multiplied by ``strength`` (rates capped)."""
        rates = np.array([self.drop, self.merge, self.split]) * strength
        if rates.sum() > 0.9:  # keep most particles alive so AJI+ stays informative
            rates *= 0.9 / rates.sum()
        return replace(self, drop=float(rates[0]), merge=float(rates[1]), split=float(rates[2]),
                       shift=int(round(self.shift * strength)), spurious=self.spurious * strength)

    def to_dict(self) -> dict:
        return asdict(self)


#: Three simulated methods of increasing error (stand-ins, not real methods).
METHOD_PRESETS: dict[str, PerturbConfig] = {
    "mild": PerturbConfig(drop=0.02, merge=0.02, split=0.02, shift=1, spurious=0.02),
    "moderate": PerturbConfig(drop=0.06, merge=0.06, split=0.06, shift=2, spurious=0.06),
    "severe": PerturbConfig(drop=0.12, merge=0.12, split=0.10, shift=3, spurious=0.15),
}


@dataclass(frozen=True)
class PerturbedPrediction:
    """A simulated prediction of one image.

    Attributes:
        labels: int32 (H, W) label map 1..M.
        scores: float64 (M,), confidence of predicted particle ``i + 1``.
        kinds: (M,) str, what happened to it: ``"intact"`` (possibly shifted/grown), ``"merged"``, ``"split"``
            or ``"spurious"``.
    """

    labels: np.ndarray
    scores: np.ndarray
    kinds: np.ndarray


def perturb_instances(gt, config: PerturbConfig | None = None, seed: int | Sequence[int] = 0,
                      certain: np.ndarray | None = None, *, name: str | None = None) -> PerturbedPrediction:
    """Apply controlled errors to a ground-truth label map.

    Args:
        gt: ground-truth label map (H, W); labels need not be consecutive.
        config: error rates; ``None`` = :class:`PerturbConfig` defaults.
        seed: seed (or seed sequence) of every random choice; the same seed gives the same prediction.
        certain: optional (max label,) bool flags of the ground truth (flag of label ``i + 1`` at ``i``); intact
            predictions of uncertain particles get lower confidence.
        name: image name used in error messages.

    Returns:
        :class:`PerturbedPrediction`. Counts: ``round(drop * N)`` dropped, ``round(split * N)`` split and
        ``round(merge * N / 2)`` merged pairs, chosen without overlap (particles can still vanish when shifted
        out of the image or covered by shifted neighbours).

    Raises:
        InputError: naming ``name``, for an invalid label map or flags of the wrong length.
    """
    config = PerturbConfig() if config is None else config
    gt = check_instances(gt, name, "ground truth")
    if gt.ndim != 2:
        raise InputError("perturbations need a label map (H, W), not a mask stack", name)
    rng = np.random.default_rng(seed)
    h, w = gt.shape
    props = regionprops(gt.astype(np.int64, copy=False))
    ids = np.array([p.label for p in props], dtype=np.int64)
    n = ids.shape[0]
    if certain is not None and len(certain) != int(gt.max(initial=0)):
        raise InputError(f"{len(certain)} certainty flags for a label map with max label {int(gt.max())}", name)
    cert = np.ones(int(gt.max(initial=0)) + 1, dtype=bool)
    if certain is not None:
        cert[1:] = np.asarray(certain, dtype=bool)

    # Assign each particle at most one structural error: drops and splits first, then merged pairs among the rest.
    order = rng.permutation(n)
    n_drop, n_split = round(config.drop * n), round(config.split * n)
    n_pairs = round(config.merge * n / 2)
    dropped = set(order[:n_drop].tolist())
    split_set = set(order[n_drop:n_drop + n_split].tolist())

    # New id per ground-truth particle (index into props); merged partners share the id of their leader.
    new_id = np.arange(1, n + 1)
    kind = np.array(["intact"] * n, dtype=object)
    centroids = np.array([p.centroid for p in props]).reshape(n, 2)
    free = np.ones(n, dtype=bool)
    free[list(dropped | split_set)] = False
    pairs = 0
    for i in order[n_drop + n_split:]:
        if pairs == n_pairs:
            break
        if not free[i]:
            continue
        free[i] = False
        candidates = np.flatnonzero(free)
        if candidates.size == 0:
            break
        j = candidates[np.argmin(np.linalg.norm(centroids[candidates] - centroids[i], axis=1))]
        free[j] = False
        new_id[j] = new_id[i]
        kind[i] = kind[j] = "merged"
        pairs += 1

    lut = np.zeros(int(gt.max(initial=0)) + 1, dtype=np.int64)
    lut[ids] = new_id
    for i in dropped:
        lut[ids[i]] = 0
    next_id = n + 1
    out = np.zeros((h, w), dtype=np.int64)
    offsets = rng.integers(-config.shift, config.shift + 1, size=(n, 2)) if config.shift else np.zeros((n, 2), int)
    kinds_by_id: dict[int, str] = {}
    source_certain: dict[int, bool] = {}
    for i, p in enumerate(props):
        target = int(lut[ids[i]])
        if target == 0:
            continue
        rr, cc = p.coords[:, 0] + offsets[i, 0], p.coords[:, 1] + offsets[i, 1]
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        rr, cc = rr[inside], cc[inside]
        values = np.full(rr.shape[0], target, dtype=np.int64)
        if i in split_set and rr.size >= 2:
            # Cut across the major axis through the centroid: the two halves become separate predictions.
            theta = p.orientation  # angle between the row axis and the major axis (skimage convention)
            proj = (p.coords[inside, 0] - p.centroid[0]) * np.cos(theta) + \
                   (p.coords[inside, 1] - p.centroid[1]) * np.sin(theta)
            values[proj > 0] = next_id
            kinds_by_id[next_id] = "split"
            source_certain[next_id] = bool(cert[ids[i]])
            next_id += 1
            kind[i] = "split"
        out[rr, cc] = values
        kinds_by_id.setdefault(target, str(kind[i]))
        source_certain[target] = source_certain.get(target, True) and bool(cert[ids[i]])
    if config.grow:
        out = expand_labels(out, distance=config.grow)

    n_spurious = round(config.spurious * n)
    lo, hi = config.spurious_radius
    for _ in range(n_spurious):
        for _attempt in range(50):  # look for a spot that is mostly background, so the particle is visible
            r0, c0 = rng.uniform(0, h), rng.uniform(0, w)
            ra, ca = rng.uniform(lo, hi, size=2)
            rr, cc = ellipse(r0, c0, ra, ca, shape=(h, w), rotation=rng.uniform(0, np.pi))
            free = out[rr, cc] == 0
            if free.sum() >= max(4, 0.8 * free.size):
                out[rr[free], cc[free]] = next_id
                kinds_by_id[next_id] = "spurious"
                next_id += 1
                break

    # Consecutive labels 1..M; particles shifted out of the image or painted over entirely disappear here.
    present = np.flatnonzero(np.bincount(out.ravel())[1:]) + 1
    relabel = np.zeros(int(out.max(initial=0)) + 1, dtype=np.int32)
    relabel[present] = np.arange(1, present.shape[0] + 1)
    labels = relabel[out]
    m = present.shape[0]
    kinds = np.array([kinds_by_id[int(old)] for old in present], dtype=object)
    means = np.array([CONFIDENCE_MEANS[_confidence_key(kinds_by_id[int(old)], source_certain.get(int(old), True))]
                      for old in present], dtype=np.float64)
    k = config.confidence_concentration
    scores = rng.beta(means * k, (1 - means) * k) if m else np.zeros(0)
    return PerturbedPrediction(labels, scores, kinds.astype(str))


def _confidence_key(kind: str, certain: bool) -> str:
    if kind == "intact":
        return "intact_certain" if certain else "intact_uncertain"
    return kind


def simulate_predictions(gt, methods: Mapping[str, PerturbConfig] | None = None, seed: int = 0):
    """Simulated predictions of several methods for a whole ground-truth set.

    Args:
        gt: :class:`~semkit.metrics.InstanceSet` of label maps (with optional certainty flags), or records.
        methods: method name → error rates; ``None`` = :data:`METHOD_PRESETS`.
        seed: base seed; image ``k`` of method ``m`` uses ``[seed, m, k]``.

    Returns:
        ``{method: InstanceSet}`` with label maps and confidence scores.
    """
    from semkit.metrics.instance_set import InstanceSet, as_instance_set

    gt = as_instance_set(gt)
    methods = METHOD_PRESETS if methods is None else methods
    out = {}
    for mi, (method, cfg) in enumerate(methods.items()):
        masks, scores = {}, {}
        for k, name in enumerate(gt.names):
            p = perturb_instances(gt.masks[name], cfg, seed=[seed, mi, k], certain=gt.certain.get(name), name=name)
            masks[name], scores[name] = p.labels, p.scores
        out[method] = InstanceSet(masks, scores=scores, pixel_size_nm=dict(gt.pixel_size_nm),
                                  source=f"simulated:{method}")
    return out


#: Toy study design: pretraining method → error multiplier at the reference backbone and set size.
STUDY_PRETRAINING = {"scratch": 1.6, "ssl-a": 1.0, "ssl-b": 0.8}
#: Backbone name → parameters in millions (ConvNeXt V2 atto … tiny).
STUDY_BACKBONES = {"atto": 3.4, "femto": 4.8, "pico": 8.6, "nano": 15.0, "tiny": 27.9}
STUDY_PRETRAIN_SIZES = (1_000, 3_000, 10_000, 30_000)


def simulate_study(gt, *, pretraining: Mapping[str, float] | None = None,
                   backbones: Mapping[str, float] | None = None,
                   pretrain_sizes: Sequence[int] = STUDY_PRETRAIN_SIZES, n_seeds: int = 2, seed: int = 0,
                   base: PerturbConfig | None = None) -> pd.DataFrame:
    """A simulated results table of a pretraining study, for the study figures of notebook 04.

    Toy model: a run's error strength is ``multiplier(pretraining) × (8.6 / params_m) ** 0.3 ×
    (10_000 / images) ** 0.2`` (no pretraining images for ``"scratch"``: its size term is 1), times a
    log-normal run-to-run factor (σ = 0.15); the run's predictions are ``base.scaled(strength)`` perturbations
    of the ground truth, scored with AJI+.

    Args:
        gt: :class:`~semkit.metrics.InstanceSet` of label maps, or records.
        pretraining: method → error multiplier; ``None`` = :data:`STUDY_PRETRAINING`.
        backbones: name → parameters (millions); ``None`` = :data:`STUDY_BACKBONES`.
        pretrain_sizes: pretraining-set sizes (number of images).
        n_seeds: runs per configuration.
        seed: base seed.
        base: error mix at strength 1; ``None`` = ``METHOD_PRESETS["moderate"]``.

    Returns:
        Long table, one row per (run, image): ``pretraining, backbone, backbone_params_m, pretrain_images,
        run_seed, image, aji_plus``. ``"scratch"`` rows have ``pretrain_images = 0`` and appear once per
        backbone and seed.
    """
    from semkit.metrics.instance import aji_plus
    from semkit.metrics.instance_set import as_instance_set

    gt = as_instance_set(gt)
    pretraining = STUDY_PRETRAINING if pretraining is None else pretraining
    backbones = STUDY_BACKBONES if backbones is None else backbones
    base = METHOD_PRESETS["moderate"] if base is None else base
    rng = np.random.default_rng([seed, 7])
    rows = []
    run = 0
    for method, mult in pretraining.items():
        sizes = [0] if method == "scratch" else list(pretrain_sizes)
        for backbone, params in backbones.items():
            for size in sizes:
                for s in range(n_seeds):
                    size_term = 1.0 if size == 0 else (10_000 / size) ** 0.2
                    strength = mult * (8.6 / params) ** 0.3 * size_term * float(np.exp(rng.normal(0, 0.15)))
                    cfg = base.scaled(strength)
                    for k, name in enumerate(gt.names):
                        pred = perturb_instances(gt.masks[name], cfg, seed=[seed, 1000 + run, k], name=name)
                        rows.append({"pretraining": method, "backbone": backbone, "backbone_params_m": params,
                                     "pretrain_images": size, "run_seed": s, "image": name,
                                     "aji_plus": aji_plus(gt.masks[name], pred.labels, name=name)})
                    run += 1
    return pd.DataFrame(rows)
