"""Classifier metrics of scored, judged pairs: confusion counts at a threshold, threshold choice, calibration
(Brier score, equal-mass reliability bins, ECE) and the threshold for a target precision.

Pure functions on numpy arrays (no Spark, no I/O). A pair is *predicted* relevant when
``score >= threshold``; precision / recall / F-beta are NaN when their denominator is 0.
A threshold never splits tied scores: the places it can fall are the cuts between distinct
scores (``counts_at_score_cuts``), the one home of that rule for the PR curve, the threshold for a target
precision and the weighted metrics of ``pair_metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from relevance.evaluation.intervals import wilson_center_half

# purity: no pyspark torch transformers

__all__ = [
    "ConfusionCounts",
    "brier_score",
    "calibration_bins",
    "choose_threshold_max_f1",
    "confusion_at_threshold",
    "counts_at_score_cuts",
    "expected_calibration_error",
    "threshold_for_precision",
]


# --------------------------------------------------------------------------- threshold metrics


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den > 0 else float("nan")


@dataclass(frozen=True)
class ConfusionCounts:
    """Binary confusion counts at one decision threshold."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp); NaN when nothing was predicted relevant."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """tp / (tp + fn); NaN when nothing is relevant."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """F1 = 2 tp / (2 tp + fp + fn); NaN when tp + fp + fn = 0."""
        return self.f_beta(1.0)

    def f_beta(self, beta: float) -> float:
        """(1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp); NaN when tp + fp + fn = 0."""
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta!r}")
        b2 = float(beta) ** 2
        return _ratio((1 + b2) * self.tp, (1 + b2) * self.tp + b2 * self.fn + self.fp)


def confusion_at_threshold(scores: np.ndarray, relevant: np.ndarray, threshold: float) -> ConfusionCounts:
    """Confusion counts when a product is predicted relevant iff ``score >= threshold``."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(relevant, dtype=bool)
    if s.shape != y.shape:
        raise ValueError("scores and relevant must have the same shape")
    pred = s >= threshold  # NaN scores are predicted non-relevant
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    tn = int(np.count_nonzero(~pred & ~y))
    return ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=tn)


def choose_threshold_max_f1(scores: np.ndarray, relevant: np.ndarray) -> float:
    """The score value that, used as ``score >= t``, maximizes F1; ties go to the higher t."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(relevant, dtype=bool)
    if s.shape != y.shape:
        raise ValueError("scores and relevant must have the same shape")
    valid = ~np.isnan(s)
    if not valid.any():
        raise ValueError("choose_threshold_max_f1 needs at least one non-NaN score")
    candidates = np.unique(s[valid])  # ascending
    pos_sorted = np.sort(s[valid & y])
    neg_sorted = np.sort(s[valid & ~y])
    n_pos = int(np.count_nonzero(y))  # includes relevant rows with NaN score (always missed)
    tp = len(pos_sorted) - np.searchsorted(pos_sorted, candidates, side="left")
    fp = len(neg_sorted) - np.searchsorted(neg_sorted, candidates, side="left")
    fn = n_pos - tp
    f1 = 2.0 * tp / (2.0 * tp + fp + fn)  # denominator >= 1: every candidate predicts a row
    best = np.flatnonzero(f1 == f1.max())[-1]  # highest threshold among ties
    return float(candidates[best])



# ----------------------------------------------------------------------------- calibration


def brier_score(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Mean squared error between predicted probability and the 0/1 outcome."""
    scores, outcome = np.asarray(scores, dtype=float), np.asarray(relevant, dtype=float)
    return float(np.mean((scores - outcome) ** 2)) if len(scores) else float("nan")


def calibration_bins(scores: np.ndarray, relevant: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Equal-mass reliability bins (sorted by score): count, mean score, observed rate per bin."""
    scores, outcome = np.asarray(scores, dtype=float), np.asarray(relevant, dtype=float)
    order = np.argsort(scores, kind="stable")
    bins = np.array_split(order, min(n_bins, len(scores))) if len(scores) else []
    return pd.DataFrame(
        [{"bin": i, "count": len(b), "mean_score": scores[b].mean(), "observed_rate": outcome[b].mean()}
         for i, b in enumerate(bins) if len(b)]
    )


def expected_calibration_error(scores: np.ndarray, relevant: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-mass bins: count-weighted mean |observed rate - mean score|."""
    bins = calibration_bins(scores, relevant, n_bins)
    if bins.empty:
        return float("nan")
    return float(np.sum(bins["count"] * (bins.observed_rate - bins.mean_score).abs()) / bins["count"].sum())


# ----------------------------------------------------------------------------- thresholds over all cuts


def counts_at_score_cuts(scores: np.ndarray, relevant: np.ndarray,
                         weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, tp, fp) at each cut between distinct scores, from the highest score down.

    The pairs scored >= a threshold are predicted relevant; tp and fp count them, relevant or not. With `weights`
    of shape (resamples, rows), tp and fp are weighted counts of shape (resamples, cuts); without, counts (cuts,).
    """
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    last_of_value = np.r_[ordered[1:] != ordered[:-1], True]  # tied scores are never split by a threshold
    hits = np.asarray(relevant, dtype=bool)[order].astype(float)
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=float)[:, order]
    tp = np.cumsum(w * hits, axis=-1)[..., last_of_value]
    fp = np.cumsum(w * (1.0 - hits), axis=-1)[..., last_of_value]
    return ordered[last_of_value], tp, fp


def threshold_for_precision(
    scores: np.ndarray, relevant: np.ndarray, target: float, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Lowest threshold whose Wilson lower bound on precision reaches `target`.

    Returns (threshold, precision, recall) at that threshold (predicted relevant when
    score >= threshold), or (nan, nan, nan) when no threshold qualifies.
    """
    scores, relevant = np.asarray(scores, dtype=float), np.asarray(relevant, dtype=bool)
    thresholds, tp, fp = counts_at_score_cuts(scores, relevant)
    predicted = tp + fp
    center, half = wilson_center_half(tp, predicted, confidence)
    lower, p = center - half, tp / predicted
    qualifying = np.flatnonzero(lower >= target)
    if len(qualifying) == 0 or relevant.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    best = qualifying[-1]  # thresholds descend, so the last qualifying cut is the lowest threshold
    return float(thresholds[best]), float(p[best]), float(tp[best] / relevant.sum())
