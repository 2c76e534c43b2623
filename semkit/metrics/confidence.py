"""Confidence analysis of predicted particles against certain/uncertain ground-truth flags.

The uncertainty-aware Mask R-CNN study gives every ground-truth particle an expert flag (certain = fully
visible and measurable, uncertain = partly hidden or ambiguous) and asks whether a model's per-particle
confidence reflects it. For the predicted particles matched to ground truth:

* the confidence distributions of particles matched to certain vs uncertain ground truth
  (:func:`confidence_by_flag`);
* how well confidence separates the two, as the area under the ROC curve with *certain* as the positive class
  (:func:`confidence_auroc`, sklearn);
* calibration, reading the confidence as the probability of the outcome (by default: "the matched particle is
  certain"; or "the prediction is correct", over all predictions): reliability curve and expected calibration
  error with equal-width bins (Guo et al., "On calibration of modern neural networks", ICML 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from semkit.errors import InputError

Outcome = Literal["certain", "correct"]


def _check(confidence, outcome) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64).ravel()
    y = np.asarray(outcome).ravel()
    if c.shape != y.shape:
        raise InputError(f"{c.shape[0]} confidences but {y.shape[0]} outcome flags")
    if not np.all(np.isfinite(c)) or np.any((c < 0) | (c > 1)):
        raise InputError("confidences must be finite values in [0, 1]")
    if y.dtype != np.bool_:
        if not np.all(np.isin(y, (0, 1))):
            raise InputError("outcome flags must be boolean (or 0/1)")
        y = y.astype(bool)
    return c, y


def confidence_auroc(confidence, certain) -> float:
    """AUROC of the confidence for separating certain (positive) from uncertain particles.

    Returns:
        Value in [0, 1]: 1 = every certain particle is more confident than every uncertain one, 0.5 = chance;
        NaN when only one of the two classes is present (undefined).
    """
    from sklearn.metrics import roc_auc_score

    c, y = _check(confidence, certain)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, c))


def _bins(c: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    # Right-closed bins ((k-1)/n, k/n] as in Guo et al., located exactly as sklearn's calibration_curve does.
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], c, side="left")


def reliability_curve(confidence, outcome, n_bins: int = 10) -> pd.DataFrame:
    """Observed frequency of the outcome against mean confidence in equal-width confidence bins.

    Args:
        confidence: (N,) values in [0, 1].
        outcome: (N,) bool, the event the confidence should predict.
        n_bins: number of equal-width bins on [0, 1], right-closed: ``[0, 1/n], (1/n, 2/n], …`` (Guo et al.;
            the same binning as :func:`sklearn.calibration.calibration_curve`).

    Returns:
        One row per bin: ``lower``, ``upper``, ``count``, ``mean_confidence``, ``observed_rate`` (NaN for an
        empty bin).
    """
    c, y = _check(confidence, outcome)
    b = _bins(c, n_bins)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=c, minlength=n_bins) / count
        rate = np.bincount(b, weights=y.astype(np.float64), minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": count,
                         "mean_confidence": np.where(count > 0, mean_conf, np.nan),
                         "observed_rate": np.where(count > 0, rate, np.nan)})


def expected_calibration_error(confidence, outcome, n_bins: int = 10) -> float:
    """ECE = Σ_bins (n_b / N) · |observed rate_b − mean confidence_b| (Naeini et al., AAAI 2015).

    Returns:
        Value in [0, 1]; NaN for no particles.
    """
    curve = reliability_curve(confidence, outcome, n_bins)
    n = int(curve["count"].sum())
    if n == 0:
        return float("nan")
    used = curve["count"] > 0
    gaps = (curve.loc[used, "observed_rate"] - curve.loc[used, "mean_confidence"]).abs()
    return float((curve.loc[used, "count"] * gaps).sum() / n)


def confidence_by_flag(confidence, certain) -> pd.DataFrame:
    """Summary of the confidence distribution of particles matched to certain vs uncertain ground truth.

    Returns:
        Rows ``"certain"`` and ``"uncertain"``; columns ``n, mean, std, median, q25, q75`` (NaN for an empty
        group).
    """
    c, y = _check(confidence, certain)
    rows = {}
    for label, sel in (("certain", y), ("uncertain", ~y)):
        x = c[sel]
        rows[label] = {"n": int(x.size),
                       "mean": float(x.mean()) if x.size else np.nan,
                       "std": float(x.std(ddof=1)) if x.size > 1 else np.nan,
                       "median": float(np.median(x)) if x.size else np.nan,
                       "q25": float(np.quantile(x, 0.25)) if x.size else np.nan,
                       "q75": float(np.quantile(x, 0.75)) if x.size else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


@dataclass(frozen=True)
class ConfidenceAnalysis:
    """Confidence analysis of one or several methods.

    Attributes:
        summary: per method: ``n``, ``n_certain``, ``n_uncertain``, ``mean_confidence_certain``,
            ``mean_confidence_uncertain``, ``auroc``, ``ece``, ``outcome``.
        distributions: per method and flag: the :func:`confidence_by_flag` statistics.
        reliability: per method and bin: the :func:`reliability_curve`.
        particles: the matched, flagged predicted particles: ``method``, ``score``, ``certain``.
    """

    summary: pd.DataFrame
    distributions: pd.DataFrame
    reliability: pd.DataFrame
    particles: pd.DataFrame


def confidence_analysis(per_particle: pd.DataFrame, outcome: Outcome = "certain", n_bins: int = 10) -> ConfidenceAnalysis:
    """Confidence of predicted particles vs the certainty of their matched ground truth, per method.

    Args:
        per_particle: :attr:`semkit.metrics.Evaluation.per_particle` (predicted rows need ``score``; matched
            ones carry the ``certain`` flag of their ground-truth partner).
        outcome: what the calibration treats as the event: ``"certain"`` — the matched ground truth is certain
            (predicted particles matched to flagged ground truth) —, or ``"correct"`` — the prediction is
            matched at all (all predicted particles).
        n_bins: bins of the reliability curve and ECE.

    Returns:
        :class:`ConfidenceAnalysis`. AUROC always uses the certain/uncertain flag of matched particles.

    Raises:
        InputError: if no predicted particle has a score, or (``outcome="certain"``) none carries a flag.
        KeyError: for an unknown ``outcome``.
    """
    if outcome not in ("certain", "correct"):
        raise KeyError(f"unknown outcome {outcome!r}; choose 'certain' or 'correct'")
    pred = per_particle[(per_particle["side"] == "pred")]
    if "score" not in pred.columns or pred["score"].isna().all():
        raise InputError("no predicted particle has a confidence score")
    pred = pred[pred["score"].notna()]
    if "method" not in pred.columns:
        pred = pred.assign(method="prediction")
    flagged = pred[pred["certain"].notna()] if "certain" in pred.columns else pred.iloc[0:0]
    if outcome == "certain" and flagged.empty:
        raise InputError("no matched predicted particle carries a certain/uncertain flag")
    summaries, dists, curves, parts = [], [], [], []
    for method, part in pred.groupby("method", sort=False):
        fl = flagged[flagged["method"] == method]
        flags = fl["certain"].astype(bool).to_numpy()
        if outcome == "certain":
            conf, event = fl["score"].to_numpy(), flags
        else:
            conf, event = part["score"].to_numpy(), (part["status"] == "correct").to_numpy()
        dist = confidence_by_flag(fl["score"].to_numpy(), flags) if len(fl) else confidence_by_flag([], [])
        curve = reliability_curve(conf, event, n_bins)
        summaries.append({"method": method, "n": int(conf.shape[0]), "n_certain": int(flags.sum()),
                          "n_uncertain": int((~flags).sum()),
                          "mean_confidence_certain": dist.loc["certain", "mean"],
                          "mean_confidence_uncertain": dist.loc["uncertain", "mean"],
                          "auroc": confidence_auroc(fl["score"].to_numpy(), flags) if len(fl) else np.nan,
                          "ece": expected_calibration_error(conf, event, n_bins), "outcome": outcome})
        dists.append(dist.rename_axis("flag").reset_index().assign(method=method))
        curves.append(curve.assign(method=method))
        parts.append(pd.DataFrame({"method": method, "score": fl["score"].to_numpy(), "certain": flags}))
    return ConfidenceAnalysis(pd.DataFrame(summaries), pd.concat(dists, ignore_index=True),
                              pd.concat(curves, ignore_index=True), pd.concat(parts, ignore_index=True))
