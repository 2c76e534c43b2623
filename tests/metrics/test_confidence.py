"""Confidence analysis: AUROC, reliability curve and ECE by hand; parity with sklearn; the per-particle route."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semkit.errors import InputError
from semkit.metrics import (
    InstanceSet,
    confidence_analysis,
    confidence_auroc,
    confidence_by_flag,
    evaluate,
    expected_calibration_error,
    reliability_curve,
)


def test_auroc_by_hand():
    # Certain 0.9, 0.8, 0.3 vs uncertain 0.5, 0.2: 5 of the 6 (certain, uncertain) pairs are ordered correctly.
    conf = [0.9, 0.8, 0.3, 0.5, 0.2]
    certain = [True, True, True, False, False]
    assert confidence_auroc(conf, certain) == pytest.approx(5 / 6)
    assert np.isnan(confidence_auroc([0.1, 0.2], [True, True]))  # one class only: undefined


def test_reliability_and_ece_by_hand():
    conf = [0.15, 0.15, 0.95, 0.95, 1.0]
    outcome = [0, 1, 1, 1, 1]
    curve = reliability_curve(conf, outcome, n_bins=10)
    assert curve["count"].tolist() == [0, 2, 0, 0, 0, 0, 0, 0, 0, 3]
    assert curve.loc[1, "observed_rate"] == 0.5 and curve.loc[9, "observed_rate"] == 1.0
    assert curve.loc[9, "mean_confidence"] == pytest.approx(2.9 / 3)
    # ECE = 2/5 * |0.5 - 0.15| + 3/5 * |1 - 2.9/3| = 0.14 + 0.02 = 0.16
    assert expected_calibration_error(conf, outcome, 10) == pytest.approx(0.16)
    assert np.isnan(curve.loc[0, "mean_confidence"])
    # Bins are right-closed: 0.5 belongs to [0, 0.5], 0 to the first bin, 1 to the last.
    assert reliability_curve([0.0, 0.5, 0.50001, 1.0], [0, 0, 1, 1], 2)["count"].tolist() == [2, 2]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=2, max_size=60), st.integers(2, 12))
def test_reliability_curve_matches_sklearn(rows, n_bins):
    from sklearn.calibration import calibration_curve

    conf = np.array([c for c, _ in rows])
    y = np.array([b for _, b in rows])
    if y.all() or not y.any():
        return  # sklearn needs both classes
    curve = reliability_curve(conf, y, n_bins).dropna()
    prob_true, prob_pred = calibration_curve(y, conf, n_bins=n_bins, strategy="uniform")
    np.testing.assert_allclose(curve["observed_rate"], prob_true)
    np.testing.assert_allclose(curve["mean_confidence"], prob_pred)
    ece = expected_calibration_error(conf, y, n_bins)
    assert 0.0 <= ece <= 1.0


def test_confidence_by_flag_and_bad_input():
    table = confidence_by_flag([0.9, 0.7, 0.2], [True, True, False])
    assert table.loc["certain", "n"] == 2 and table.loc["certain", "mean"] == pytest.approx(0.8)
    assert table.loc["uncertain", "median"] == pytest.approx(0.2) and np.isnan(table.loc["uncertain", "std"])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        confidence_auroc([1.5, 0.2], [True, False])
    with pytest.raises(InputError, match="2 confidences but 1"):
        confidence_auroc([0.5, 0.2], [True])
    with pytest.raises(InputError, match="boolean"):
        reliability_curve([0.5], [2])


def test_confidence_analysis_from_an_evaluation():
    gt = np.zeros((6, 12), dtype=np.int32)
    gt[0:2, 0:2], gt[0:2, 4:6], gt[4:6, 0:2], gt[4:6, 4:6] = 1, 2, 3, 4
    pred = gt.copy()
    pred[4:6, 8:10] = 5  # a false positive
    certain = np.array([True, True, False, False])
    scores = np.array([0.9, 0.8, 0.4, 0.3, 0.7])  # label i+1 -> scores[i]
    ev = evaluate(InstanceSet({"im": gt}, certain={"im": certain}),
                  InstanceSet({"im": pred}, scores={"im": scores}), method="m")
    pp = ev.per_particle
    matched = pp[(pp.side == "pred") & (pp.status == "correct")].sort_values("id")
    assert matched["certain"].tolist() == [True, True, False, False]  # the flag of the matched ground truth
    ca = confidence_analysis(pp)
    row = ca.summary.iloc[0]
    assert row["auroc"] == 1.0 and row["n_certain"] == 2 and row["n_uncertain"] == 2
    assert row["mean_confidence_certain"] == pytest.approx(0.85)
    # Outcome "certain", 10 bins: {0.3}: rate 0 -> 0.3; {0.4}: 0.4; {0.8}: |1 - 0.8|; {0.9}: 0.1 -> mean 0.25.
    assert row["ece"] == pytest.approx((0.3 + 0.4 + 0.2 + 0.1) / 4)
    correct = confidence_analysis(pp, outcome="correct").summary.iloc[0]
    assert correct["n"] == 5  # all predictions, the false positive (0.7, outcome 0) included
    assert correct["ece"] == pytest.approx((0.7 + 0.6 + 0.7 + 0.2 + 0.1) / 5)
    with pytest.raises(KeyError, match="choose"):
        confidence_analysis(pp, outcome="sure")
