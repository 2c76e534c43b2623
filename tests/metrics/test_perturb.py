"""Controlled perturbations: the requested numbers of each error, determinism, and confidence by kind."""

from __future__ import annotations

import numpy as np
import pytest

from semkit.bench.metrics import grid_particles
from semkit.errors import InputError
from semkit.metrics import PerturbConfig, aji_plus, match_instances, perturb_instances, simulate_study
from semkit.metrics.perturb import CONFIDENCE_MEANS

NONE = dict(drop=0.0, merge=0.0, split=0.0, shift=0, spurious=0.0)


@pytest.fixture(scope="module")
def gt() -> np.ndarray:
    return grid_particles(400, 500, 100, seed=4)  # 100 separated disks


def test_no_error_is_the_identity(gt):
    p = perturb_instances(gt, PerturbConfig(**NONE), seed=0)
    assert aji_plus(gt, p.labels) == 1.0 and set(p.kinds) == {"intact"}
    assert p.scores.shape == (100,) and np.all((p.scores >= 0) & (p.scores <= 1))


def test_drop_merge_split_spurious_counts(gt):
    dropped = perturb_instances(gt, PerturbConfig(**{**NONE, "drop": 0.1}), seed=1)
    m = match_instances(gt, dropped.labels)
    assert (m.correct, m.missed, m.false_positive) == (90, 10, 0)
    merged = perturb_instances(gt, PerturbConfig(**{**NONE, "merge": 0.2}), seed=1)
    assert merged.labels.max() == 90  # 20 particles, each merged with a neighbour: at most 10 fewer...
    assert int((merged.kinds == "merged").sum()) == 10  # ...one prediction per merged pair
    split = perturb_instances(gt, PerturbConfig(**{**NONE, "split": 0.1}), seed=1)
    assert split.labels.max() == 110 and int((split.kinds == "split").sum()) == 20
    spurious = perturb_instances(gt, PerturbConfig(**{**NONE, "spurious": 0.05}), seed=1)
    m = match_instances(gt, spurious.labels)
    assert (m.correct, m.missed, m.false_positive) == (100, 0, 5)


def test_deterministic_and_confidence_by_kind(gt):
    cfg = PerturbConfig(drop=0.1, merge=0.1, split=0.1, shift=2, spurious=0.2, confidence_concentration=200)
    a = perturb_instances(gt, cfg, seed=[3, 1])
    b = perturb_instances(gt, cfg, seed=[3, 1])
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.scores, b.scores)
    # Concentrated Beta distributions: each kind's mean confidence is close to its configured mean.
    for kind, key in (("intact", "intact_certain"), ("spurious", "spurious"), ("split", "split")):
        assert a.scores[a.kinds == kind].mean() == pytest.approx(CONFIDENCE_MEANS[key], abs=0.03)
    certain = np.ones(100, bool)
    certain[::2] = False
    c = perturb_instances(gt, PerturbConfig(**NONE, confidence_concentration=200), seed=0, certain=certain)
    # Predicted label k+1 is ground-truth label k+1 here (nothing dropped or moved).
    assert c.scores[~certain].mean() == pytest.approx(CONFIDENCE_MEANS["intact_uncertain"], abs=0.03)


def test_bad_config_and_input():
    with pytest.raises(InputError, match="exceed 1"):
        PerturbConfig(drop=0.5, merge=0.4, split=0.2)
    with pytest.raises(InputError, match="label map"):
        perturb_instances(np.zeros((2, 4, 4), bool), name="x")
    with pytest.raises(InputError, match="certainty flags"):
        perturb_instances(grid_particles(50, 50, 4), certain=np.ones(3, bool))


def test_simulated_study_table_shape():
    gt = {"a": grid_particles(120, 160, 10, seed=0)}
    study = simulate_study(gt, pretraining={"scratch": 1.5, "ssl": 0.8}, backbones={"s": 4.0, "l": 16.0},
                           pretrain_sizes=(100, 1000), n_seeds=2)
    # scratch: 2 backbones x 1 size x 2 seeds; ssl: 2 x 2 x 2.
    assert len(study) == 4 + 8
    assert set(study.loc[study.pretraining == "scratch", "pretrain_images"]) == {0}
    assert study["aji_plus"].between(0, 1).all()
