"""Pairwise agreement matrix between annotators/models: a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest

from semkit.errors import InputError
from semkit.metrics import agreement_matrix


def four_squares() -> np.ndarray:
    lab = np.zeros((6, 12), dtype=np.int32)
    for k in range(4):
        lab[0:2, 3 * k:3 * k + 2] = k + 1  # four 4-px squares
    return lab


def test_agreement_by_hand():
    a = {"x": four_squares(), "y": four_squares()}
    keep2 = np.where(np.isin(a["x"], [1, 2]), a["x"], 0)  # half the particles: AJI+ = 8 / 16
    keep1 = np.where(a["y"] == 3, a["y"], 0)  # a quarter: AJI+ = 4 / 16
    c = {"x": keep2, "y": keep1}
    am = agreement_matrix({"A": a, "B": {k: v * 2 for k, v in a.items()}, "C": c})
    assert am.mean.loc["A", "B"] == 1.0 and am.std.loc["A", "B"] == 0.0
    assert am.mean.loc["A", "C"] == pytest.approx(0.375) and am.mean.loc["C", "A"] == pytest.approx(0.375)
    assert am.std.loc["A", "C"] == pytest.approx(np.std([0.5, 0.25], ddof=1))
    assert np.all(np.diag(am.mean) == 1.0)
    assert am.formatted(2).loc["A", "C"] == "0.38 ± 0.18"
    assert len(am.per_image) == 3 * 2  # three pairs, two images
    f1 = agreement_matrix({"A": a, "C": c}, metric="f1")
    # x: 2 of 4 found, no false positive -> F1 = 4 / 6; y: 1 of 4 -> 2 / 5.
    assert f1.mean.loc["A", "C"] == pytest.approx((4 / 6 + 2 / 5) / 2)


def test_agreement_bad_input():
    a = {"x": four_squares()}
    with pytest.raises(KeyError, match="aji_plus, f1, pq"):
        agreement_matrix({"A": a, "B": a}, metric="dice")
    with pytest.raises(InputError, match="at least two"):
        agreement_matrix({"A": a})
    with pytest.raises(InputError, match="different images"):
        agreement_matrix({"A": a, "B": {"z": four_squares()}})
