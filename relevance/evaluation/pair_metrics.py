"""Classifier metrics of judged (query, product) pairs, with row weights, for many resamples at once.

A query-level bootstrap resample is a weight per row: how often its query was drawn.
Every metric here takes a (resamples, rows) weight matrix and returns one value per
resample, so hundreds of resamples cost a few array passes instead of hundreds of
calls. With all weights 1 they equal scikit-learn's definitions:

* ROC-AUC: trapezoidal area under the ROC curve with ties in score grouped (the
  tie-corrected Mann-Whitney statistic), NaN when a resample lacks either class.
* pooled average precision: sum over distinct score thresholds (descending) of
  (recall_i - recall_{i-1}) * precision_i, NaN without a relevant pair.
* precision / recall / F1 / F-beta at a threshold: predicted relevant when score >= threshold.
* Brier score: weighted mean of (score - outcome)^2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from relevance.evaluation.classifier import counts_at_score_cuts
from relevance.evaluation.intervals import percentile_interval

# purity: no pyspark torch transformers

WeightedMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# Resample weights are made in blocks of at most this many entries (resamples x rows), so that memory stays bounded
# however many judged pairs there are; the blocks together are the same draws as one matrix.
WEIGHT_BLOCK_ENTRIES = 4_000_000


def bootstrap_weight_blocks(groups: np.ndarray, n_boot: int, seed: int = 0) -> Iterator[np.ndarray]:
    """The (n_boot, rows) weights, each row's query drawn that many times in each resample of the queries, as
    consecutive blocks of resamples."""
    codes, uniques = pd.factorize(pd.Series(groups), sort=True)
    n_groups = len(uniques)
    rng = np.random.default_rng(seed)
    per_block = max(1, WEIGHT_BLOCK_ENTRIES // max(len(codes), 1))
    for start in range(0, n_boot, per_block):
        rows = min(per_block, n_boot - start)
        drawn = rng.integers(0, n_groups, size=(rows, n_groups))
        counts = np.zeros((rows, n_groups))
        np.add.at(counts, (np.arange(rows)[:, None], drawn), 1.0)
        yield counts[:, codes]


def bootstrap_weights(groups: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """All of `bootstrap_weight_blocks` as one (n_boot, rows) matrix."""
    return np.concatenate(list(bootstrap_weight_blocks(groups, n_boot, seed)))


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def roc_auc(scores: np.ndarray, relevant: np.ndarray, weights: np.ndarray) -> np.ndarray:
    _, tp, fp = counts_at_score_cuts(scores, relevant, weights)
    tpr = _divide(tp, tp[:, -1:]) if tp.size else tp
    fpr = _divide(fp, fp[:, -1:]) if fp.size else fp
    tpr, fpr = np.pad(tpr, ((0, 0), (1, 0))), np.pad(fpr, ((0, 0), (1, 0)))
    return np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0, axis=1)


def pooled_average_precision(scores: np.ndarray, relevant: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision of all judged pairs pooled, as a classifier (scikit-learn's average_precision_score, the
    audit's `average_precision` rows); not the per-query ranking AP of `ranking.average_precision` (`map`)."""
    _, tp, fp = counts_at_score_cuts(scores, relevant, weights)
    recall = np.pad(_divide(tp, tp[:, -1:]), ((0, 0), (1, 0)))
    precision = _divide(tp, tp + fp)
    return np.nansum(np.diff(recall, axis=1) * precision, axis=1) + np.where(tp[:, -1] > 0, 0.0, np.nan)


def at_threshold(threshold: float, beta: float = 0.5) -> dict[str, WeightedMetric]:
    """precision, recall, F1 and F-beta (`f<beta>`) with predicted relevant = score >= threshold."""

    def counts(scores: np.ndarray, relevant: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
        predicted = scores >= threshold
        tp = weights @ (predicted & relevant).astype(float)
        return tp, weights @ predicted.astype(float), weights @ relevant.astype(float)

    def precision(s, r, w):
        tp, predicted, _ = counts(s, r, w)
        return _divide(tp, predicted)

    def recall(s, r, w):
        tp, _, actual = counts(s, r, w)
        return _divide(tp, actual)

    def f_score(b: float) -> WeightedMetric:
        def f(s, r, w):
            tp, predicted, actual = counts(s, r, w)
            return _divide((1.0 + b * b) * tp, predicted + b * b * actual)
        return f

    return {"precision": precision, "recall": recall, "f1": f_score(1.0), f"f{beta:g}": f_score(beta)}


def brier(scores: np.ndarray, relevant: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return _divide(weights @ (scores - relevant.astype(float)) ** 2, weights.sum(axis=1))


def value_and_interval(metric: WeightedMetric, scores: np.ndarray, relevant: np.ndarray,
                       weights: np.ndarray | Iterable[np.ndarray], confidence: float) -> tuple[float, float, float]:
    """The metric on the data as it is, and the percentile interval over the resample weights (a matrix, or
    blocks of resamples such as `bootstrap_weight_blocks`)."""
    scores, relevant = np.asarray(scores, dtype=float), np.asarray(relevant, dtype=bool)
    value = float(metric(scores, relevant, np.ones((1, len(scores))))[0])
    blocks = [weights] if isinstance(weights, np.ndarray) else weights
    low, high = percentile_interval(np.concatenate([metric(scores, relevant, block) for block in blocks]), confidence)
    return value, low, high
