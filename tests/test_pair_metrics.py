"""Weighted, resample-vectorized classifier metrics against scikit-learn on the same (duplicated) rows."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from relevance.evaluation import pair_metrics as pm


def cases(n_cases: int = 150):
    rng = np.random.default_rng(3)
    for _ in range(n_cases):
        n = int(rng.integers(2, 50))
        scores = np.round(rng.random(n), 1)  # coarse: many ties
        relevant = rng.random(n) < 0.4
        copies = rng.integers(0, 3, size=n)
        rows = np.repeat(np.arange(n), copies)
        if 0 < relevant[rows].sum() < len(rows):
            yield scores, relevant, copies.astype(float), rows


@pytest.mark.parametrize(("ours", "theirs"), [(pm.roc_auc, roc_auc_score), (pm.pooled_average_precision, average_precision_score)])
def test_weights_equal_duplicated_rows_in_sklearn(ours, theirs):
    checked = 0
    for scores, relevant, copies, rows in cases():
        assert ours(scores, relevant, copies[None])[0] == pytest.approx(theirs(relevant[rows], scores[rows]), abs=1e-12)
        checked += 1
    assert checked > 50


def test_threshold_metrics_and_brier_by_hand():
    scores, relevant = np.array([0.9, 0.8, 0.4, 0.2]), np.array([True, False, True, False])
    w = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 1.0, 0.0]])
    metrics = pm.at_threshold(0.5)
    np.testing.assert_allclose(metrics["precision"](scores, relevant, w), [0.5, 1.0])
    np.testing.assert_allclose(metrics["recall"](scores, relevant, w), [0.5, 2 / 3])
    np.testing.assert_allclose(metrics["f1"](scores, relevant, w), [0.5, 0.8])
    # F0.5 = 1.25 tp / (predicted + 0.25 actual): (1.25 * 1) / (2 + 0.5) and (1.25 * 2) / (2 + 0.75)
    np.testing.assert_allclose(metrics["f0.5"](scores, relevant, w), [0.5, 2.5 / 2.75])
    np.testing.assert_allclose(pm.brier(scores, relevant, w[:1]), [(0.01 + 0.64 + 0.36 + 0.04) / 4])


def test_a_resample_without_a_class_is_nan_and_ignored_by_the_interval():
    scores, relevant = np.array([0.9, 0.1]), np.array([True, False])
    assert np.isnan(pm.roc_auc(scores, relevant, np.array([[1.0, 0.0]])))[0]
    assert np.isnan(pm.pooled_average_precision(scores, relevant, np.array([[0.0, 1.0]])))[0]
    value, low, high = pm.value_and_interval(pm.roc_auc, scores, relevant, np.array([[1.0, 0.0], [1.0, 1.0]]), 0.95)
    assert value == low == high == 1.0


def test_bootstrap_weights_draw_whole_queries():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    weights = pm.bootstrap_weights(groups, 200, seed=1)
    assert weights.shape == (200, 6)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 5]).all()
    assert (weights[:, [0, 2, 3]].sum(axis=1) == 3).all()  # three queries drawn per resample


def test_weight_blocks_are_the_same_draws_as_one_matrix(monkeypatch):
    """Many judged pairs: weights come in bounded blocks of resamples, and the intervals do not change."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(50), 4)
    scores, relevant = rng.random(200), rng.random(200) < 0.4
    whole = pm.bootstrap_weights(groups, 300, seed=2)
    expected = pm.value_and_interval(pm.roc_auc, scores, relevant, whole, 0.95)
    monkeypatch.setattr(pm, "WEIGHT_BLOCK_ENTRIES", 200 * 7)  # 7 resamples per block
    blocks = list(pm.bootstrap_weight_blocks(groups, 300, seed=2))
    assert max(len(b) for b in blocks) == 7 and np.array_equal(np.concatenate(blocks), whole)
    assert pm.value_and_interval(pm.roc_auc, scores, relevant, iter(blocks), 0.95) == expected
