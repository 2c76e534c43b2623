"""Error reduction rate: hand-computed values and the ERR matrix of a results table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from semkit.errors import InputError
from semkit.metrics import err_matrix, error_reduction_rate


def test_err_by_hand():
    # e_b = 1 - 0.6 = 0.4, e_m = 1 - 0.8 = 0.2: half the baseline's error removed.
    assert error_reduction_rate(0.8, 0.6) == pytest.approx(50.0)
    # Worse than the baseline: (0.4 - 0.5) / 0.4 = -25 %.
    assert error_reduction_rate(0.5, 0.6) == pytest.approx(-25.0)
    assert error_reduction_rate(1.0, 0.6) == pytest.approx(100.0)
    assert np.isnan(error_reduction_rate(0.9, 1.0))  # a perfect baseline leaves no error to reduce
    np.testing.assert_allclose(error_reduction_rate(np.array([0.8, 0.7]), 0.6), [50.0, 25.0])


def test_err_matrix_by_hand():
    table = pd.DataFrame({"method": ["A", "A", "B", "B", "C", "C"],
                          "aji_plus": [0.6, 0.8, 0.85, 0.95, 0.7, 0.7]})
    err = err_matrix(table)
    # Means: A 0.7 (e 0.3), B 0.9 (e 0.1), C 0.7 (e 0.3).
    assert list(err.index) == ["A", "B", "C"] and list(err.columns) == ["A", "B", "C"]
    assert err.loc["A", "B"] == pytest.approx((0.3 - 0.1) / 0.3 * 100)  # B over baseline A: 66.7 %
    assert err.loc["B", "A"] == pytest.approx((0.1 - 0.3) / 0.1 * 100)  # A over baseline B: -200 %
    assert err.loc["A", "C"] == pytest.approx(0.0)
    np.testing.assert_allclose(np.diag(err), 0.0, atol=1e-12)


def test_err_bad_input():
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        error_reduction_rate(1.2, 0.5)
    with pytest.raises(InputError):
        error_reduction_rate(np.nan, 0.5)
    with pytest.raises(KeyError, match="columns: method, score"):
        err_matrix(pd.DataFrame({"method": ["a"], "score": [0.5]}))
    with pytest.raises(InputError, match="empty"):
        err_matrix(pd.DataFrame({"method": [], "aji_plus": []}))
