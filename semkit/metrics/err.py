"""Error reduction rate (ERR) of one method over another, and the ERR matrix of a results table.

ERR, as used to compare pretraining methods in the SSL particle-segmentation study, measures how much of a
baseline's remaining error a method removes: with the error ``e = 1 − AJI+``,

    ERR(m over b) = (e_b − e_m) / e_b × 100   [%].

100 % means the method is perfect, 0 % no better than the baseline, negative values worse. It is undefined
(NaN) when the baseline is already perfect (``e_b = 0``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from semkit.errors import InputError


def error_reduction_rate(score_method, score_baseline):
    """ERR in percent of a method over a baseline, from their AJI+ (or any score in [0, 1], higher = better).

    Args:
        score_method: AJI+ of the method (scalar or array).
        score_baseline: AJI+ of the baseline (broadcast against ``score_method``).

    Returns:
        ``(e_b − e_m) / e_b × 100`` with ``e = 1 − score``; NaN where ``e_b = 0``. A float for scalar input.

    Raises:
        InputError: if a score is NaN or outside [0, 1].
    """
    m = np.asarray(score_method, dtype=np.float64)
    b = np.asarray(score_baseline, dtype=np.float64)
    for label, arr in (("method", m), ("baseline", b)):
        if not np.all(np.isfinite(arr)) or np.any((arr < 0) | (arr > 1)):
            raise InputError(f"{label} score must lie in [0, 1] (AJI+), got {arr}")
    e_m, e_b = 1.0 - m, 1.0 - b
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(e_b > 0, (e_b - e_m) / np.where(e_b > 0, e_b, 1.0) * 100.0, np.nan)
    return float(err) if err.ndim == 0 else err


def err_matrix(table: pd.DataFrame, method_col: str = "method", score_col: str = "aji_plus") -> pd.DataFrame:
    """ERR of every method (columns) over every other method taken as baseline (rows).

    Each method's score is its mean ``score_col`` over the rows of ``table`` (images, runs); ERR is computed
    from those means, as the study compares models by their mean AJI+.

    Args:
        table: results in long form, e.g. :attr:`Evaluation.per_image` or a table of runs.
        method_col: column naming the method.
        score_col: score column in [0, 1].

    Returns:
        Square DataFrame, index = baseline, columns = method, values = ERR in %; the diagonal is 0
        (NaN for a perfect method), methods in order of first appearance.

    Raises:
        KeyError: if a column is missing (the message lists the table's columns).
        InputError: if the table is empty or a mean score lies outside [0, 1].
    """
    for col in (method_col, score_col):
        if col not in table.columns:
            raise KeyError(f"column {col!r} not in table; columns: {', '.join(map(str, table.columns))}")
    if table.empty:
        raise InputError("results table is empty")
    means = table.groupby(method_col, sort=False)[score_col].mean()
    values = error_reduction_rate(means.to_numpy()[None, :], means.to_numpy()[:, None])
    return pd.DataFrame(values, index=pd.Index(means.index, name="baseline"),
                        columns=pd.Index(means.index, name="method"))
