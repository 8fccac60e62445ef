"""Unit tests for relevance.evaluation.ranking, .classifier and .intervals, with hand-computed expected values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, fbeta_score

from relevance.evaluation.classifier import ConfusionCounts, choose_threshold_max_f1, confusion_at_threshold
from relevance.evaluation.intervals import bootstrap_ci, bootstrap_mean_ci, wilson_interval
from relevance.evaluation.ranking import (
    average_precision,
    dcg_at_k,
    gain,
    judged_at_k,
    ndcg_at_k,
    per_query_ranking_metrics,
    precision_at_k,
    rank_query,
    recall_at_k,
    reciprocal_rank,
)

log2 = math.log2

# One query: ranked a(2) u(unjudged) b(0) c(1) d(0) e(2); z(1) judged but not ranked.
# Rows are shuffled so the function has to sort them itself.
RANKED_Q1 = pd.DataFrame(
    {
        "query": ["q1"] * 6,
        "product_id": ["c", "a", "e", "u", "d", "b"],
        "score": [0.6, 0.9, 0.4, 0.8, 0.5, 0.7],
    }
)
JUDGED_Q1 = pd.DataFrame(
    {
        "query": ["q1"] * 6,
        "product_id": ["a", "b", "c", "d", "e", "z"],
        "grade": [2, 0, 1, 0, 2, 1],
    }
)
# Rank order a, u, b, c, d, e -> grades [2, unjudged, 0, 1, 0, 2]
RANKED_GRADES = np.array([2, np.nan, 0, 1, 0, 2], dtype=float)
JUDGED_GRADES = np.array([2, 0, 1, 0, 2, 1], dtype=float)

NDCG3_LINEAR = (2 / 1 + 0 / log2(3) + 0 / 2) / (2 / 1 + 2 / log2(3) + 1 / 2)
NDCG5_LINEAR = (2 / 1 + 0 / log2(3) + 0 / 2 + 1 / log2(5) + 0 / log2(6)) / (
    2 / 1 + 2 / log2(3) + 1 / 2 + 1 / log2(5) + 0 / log2(6)
)
NDCG3_EXP = (3 / 1 + 0 / log2(3) + 0 / 2) / (3 / 1 + 3 / log2(3) + 1 / 2)
NDCG5_EXP = (3 / 1 + 0 / log2(3) + 0 / 2 + 1 / log2(5) + 0 / log2(6)) / (
    3 / 1 + 3 / log2(3) + 1 / 2 + 1 / log2(5) + 0 / log2(6)
)


# ----------------------------------------------------------------------------- ranking


def test_rank_query_orders_by_score_desc():
    order = rank_query(["c", "a", "e", "u", "d", "b"], [0.6, 0.9, 0.4, 0.8, 0.5, 0.7])
    assert [["c", "a", "e", "u", "d", "b"][i] for i in order] == ["a", "u", "b", "c", "d", "e"]


def test_rank_query_ties_broken_by_product_id_string_order():
    # equal scores given in reversed id order; "p10" < "p2" as strings
    assert rank_query(["b", "a"], [0.5, 0.5]).tolist() == [1, 0]
    assert rank_query(["p2", "p10", "p1"], [0.5, 0.5, 0.9]).tolist() == [2, 1, 0]


def test_rank_query_nan_scores_last():
    assert rank_query(["a", "b", "c"], [np.nan, -1.0, 2.0]).tolist() == [2, 1, 0]


def test_gain_kinds():
    assert gain(np.array([0, 1, 2, 3])).tolist() == [0, 1, 2, 3]
    assert gain(np.array([0, 1, 2, 3]), "exponential").tolist() == [0, 1, 3, 7]
    with pytest.raises(ValueError):
        gain(np.array([1]), "quadratic")


ESCI_GAIN = {3: 1.0, 2: 0.1, 1: 0.01, 0: 0.0}


def test_gain_mapping_int_and_str_keys():
    grades = np.array([3, 2, 1, 0, np.nan])
    expected = [1.0, 0.1, 0.01, 0.0]
    for mapping in (ESCI_GAIN, {str(k): v for k, v in ESCI_GAIN.items()}):
        out = gain(grades, mapping)
        assert out[:4].tolist() == expected and math.isnan(out[4])  # unjudged stays NaN


def test_gain_mapping_errors_name_the_grade():
    with pytest.raises(ValueError, match="grade 4 has no gain"):
        gain(np.array([3, 4, 1]), ESCI_GAIN)
    with pytest.raises(ValueError, match="'E' is not a numeric grade"):
        gain(np.array([1]), {"E": 1.0})
    two_gains: dict[int | str, float] = {1: 1.0, "1": 2.0}
    with pytest.raises(ValueError, match="two different gains"):
        gain(np.array([1]), two_gains)
    with pytest.raises(ValueError, match="grade 2 has no gain"):
        per_query_ranking_metrics(RANKED_Q1, JUDGED_Q1, [3], relevant_min_grade=1, gain_kind={0: 0.0, 1: 1.0})
    with pytest.raises(ValueError, match="unknown gain kind"):
        per_query_ranking_metrics(RANKED_Q1, JUDGED_Q1, [3], relevant_min_grade=1, gain_kind="quadratic")


def test_ndcg_with_gain_mapping_per_query():
    # grades as in Q1 (0..2); map 2 -> 1.0, 1 -> 0.1, 0 -> 0; rank order a u b c d e -> [2, -, 0, 1, 0, 2]
    mapping = {2: 1.0, 1: 0.1, 0: 0.0}
    out = per_query_ranking_metrics(RANKED_Q1, JUDGED_Q1, [5], relevant_min_grade=1, gain_kind=mapping)
    dcg = 1.0 + 0.1 / log2(5)
    idcg = 1.0 + 1.0 / log2(3) + 0.1 / 2 + 0.1 / log2(5)
    assert out.loc[0, "ndcg@5"] == pytest.approx(dcg / idcg, rel=1e-12)
    # a mapping equal to the grades is the linear gain; unjudged products need no entry for them
    same = {"0": 0, "1": 1, "2": 2}
    np.testing.assert_allclose(
        per_query_ranking_metrics(RANKED_Q1, JUDGED_Q1, [3, 5], 1, same)[["ndcg@3", "ndcg@5"]].to_numpy(),
        [[NDCG3_LINEAR, NDCG5_LINEAR]], rtol=1e-12,
    )


def test_judged_at_k():
    # Q1 rank order a u b c d e: u is unjudged
    out = per_query_ranking_metrics(RANKED_Q1, JUDGED_Q1, [1, 3, 6, 10], relevant_min_grade=1).iloc[0]
    assert out["judged@1"] == 1.0
    assert out["judged@3"] == pytest.approx(2 / 3)
    assert out["judged@6"] == pytest.approx(5 / 6)
    # 6 ranked < k = 10: denominator is the 6 ranked (ir_measures' Judged@k), not 10
    assert out["judged@10"] == pytest.approx(5 / 6)
    assert judged_at_k(np.array([True, False, True]), 2) == pytest.approx(1 / 2)
    assert judged_at_k(np.array([True, False, True]), 10) == pytest.approx(2 / 3)
    assert math.isnan(judged_at_k(np.array([], dtype=bool), 3))


def test_judged_at_k_counts_grade_zero_and_ignores_nan_grades():
    ranked = pd.DataFrame({"query": ["q"] * 3, "product_id": ["a", "b", "c"], "score": [0.9, 0.8, 0.7]})
    judged = pd.DataFrame({"query": ["q"] * 3, "product_id": ["a", "b", "c"], "grade": [0, np.nan, 2]})
    out = per_query_ranking_metrics(ranked, judged, [2, 3], relevant_min_grade=1).iloc[0]
    assert out["judged@2"] == pytest.approx(1 / 2) and out["judged@3"] == pytest.approx(2 / 3)


def test_dcg_at_k_hand_value():
    assert dcg_at_k(np.array([3.0, 2.0, 3.0, 0.0]), 3) == pytest.approx(3 / 1 + 2 / log2(3) + 3 / 2)
    # k larger than the list: only available ranks count
    assert dcg_at_k(np.array([1.0]), 10) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kind", "k", "expected"),
    [("linear", 3, NDCG3_LINEAR), ("linear", 5, NDCG5_LINEAR),
     ("exponential", 3, NDCG3_EXP), ("exponential", 5, NDCG5_EXP)],
)
def test_ndcg_hand_values_scalar(kind, k, expected):
    ranked_gains = np.nan_to_num(gain(RANKED_GRADES, kind), nan=0.0)
    assert ndcg_at_k(ranked_gains, gain(JUDGED_GRADES, kind), k) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("kind", "expected3", "expected5"),
    [("linear", NDCG3_LINEAR, NDCG5_LINEAR), ("exponential", NDCG3_EXP, NDCG5_EXP)],
)
def test_ndcg_hand_values_per_query(kind, expected3, expected5):
    out = per_query_ranking_metrics(RANKED_Q1, JUDGED_Q1, [3, 5], relevant_min_grade=1, gain_kind=kind)
    row = out.iloc[0]
    assert row["ndcg@3"] == pytest.approx(expected3, rel=1e-12)
    assert row["ndcg@5"] == pytest.approx(expected5, rel=1e-12)


def test_ndcg_nan_when_idcg_zero():
    assert math.isnan(ndcg_at_k(np.array([0.0, 0.0]), np.array([0.0, 0.0]), 5))


def test_per_query_counts_precision_recall_ap_rr():
    out = per_query_ranking_metrics(RANKED_Q1, JUDGED_Q1, [3, 5], relevant_min_grade=1)
    row = out.iloc[0]
    assert (row["n_ranked"], row["n_judged"], row["n_relevant"]) == (6, 6, 4)
    # relevant (grade >= 1): a (rank 1), c (rank 4), e (rank 6), z (not ranked)
    assert row["precision@3"] == pytest.approx(1 / 3)
    assert row["precision@5"] == pytest.approx(2 / 5)
    assert row["recall@3"] == pytest.approx(1 / 4)
    assert row["recall@5"] == pytest.approx(2 / 4)
    assert row["map"] == pytest.approx((1 / 1 + 2 / 4 + 3 / 6) / 4)
    assert row["mrr"] == pytest.approx(1.0)


def test_per_query_higher_relevance_threshold():
    out = per_query_ranking_metrics(RANKED_Q1, JUDGED_Q1, [3], relevant_min_grade=2)
    row = out.iloc[0]
    # relevant (grade >= 2): a (rank 1), e (rank 6)
    assert row["n_relevant"] == 2
    assert row["map"] == pytest.approx((1 / 1 + 2 / 6) / 2)
    assert row["recall@3"] == pytest.approx(1 / 2)


def test_precision_denominator_is_k_when_fewer_ranked():
    assert precision_at_k(np.array([True, False]), 5) == pytest.approx(1 / 5)
    ranked = pd.DataFrame({"query": ["q"] * 2, "product_id": ["a", "b"], "score": [0.9, 0.1]})
    judged = pd.DataFrame({"query": ["q"] * 2, "product_id": ["a", "b"], "grade": [1, 0]})
    out = per_query_ranking_metrics(ranked, judged, [5], relevant_min_grade=1)
    assert out.loc[0, "precision@5"] == pytest.approx(1 / 5)
    assert out.loc[0, "recall@5"] == pytest.approx(1.0)


def test_query_without_relevant_is_nan_and_excluded_from_means():
    ranked = pd.DataFrame(
        {"query": ["good", "good", "none", "none"], "product_id": ["a", "b", "a", "b"],
         "score": [0.9, 0.1, 0.9, 0.1]}
    )
    judged = pd.DataFrame(
        {"query": ["good", "good", "none", "none"], "product_id": ["a", "b", "a", "b"],
         "grade": [0, 1, 0, 0]}
    )
    out = per_query_ranking_metrics(ranked, judged, [1, 2], relevant_min_grade=1).set_index("query")
    none = out.loc["none"]
    assert none["n_relevant"] == 0
    for col in ["recall@1", "recall@2", "ndcg@1", "ndcg@2", "map", "mrr"]:
        assert math.isnan(none[col]), col
    assert none["precision@2"] == 0.0
    assert out["recall@2"].mean() == pytest.approx(1.0)  # pandas skips NaN
    assert out["mrr"].mean() == pytest.approx(1 / 2)
    assert math.isnan(recall_at_k(np.array([False, False]), 0, 2))
    assert math.isnan(average_precision(np.array([False]), 0))


def test_per_query_tie_break_by_product_id():
    ranked = pd.DataFrame({"query": ["q", "q"], "product_id": ["p2", "p10"], "score": [0.5, 0.5]})
    judged = pd.DataFrame({"query": ["q"], "product_id": ["p10"], "grade": [1]})
    out = per_query_ranking_metrics(ranked, judged, [1], relevant_min_grade=1)
    # "p10" sorts before "p2", so the relevant one is at rank 1
    assert out.loc[0, "precision@1"] == 1.0
    assert out.loc[0, "mrr"] == 1.0


def test_only_queries_in_both_inputs_are_evaluated():
    ranked = pd.DataFrame({"query": ["a", "b"], "product_id": ["x", "x"], "score": [1.0, 1.0]})
    judged = pd.DataFrame({"query": ["b", "c"], "product_id": ["x", "x"], "grade": [1, 1]})
    out = per_query_ranking_metrics(ranked, judged, [1], relevant_min_grade=1)
    assert out["query"].tolist() == ["b"]


def test_per_query_empty_and_duplicates():
    ranked = pd.DataFrame({"query": ["a"], "product_id": ["x"], "score": [1.0]})
    judged = pd.DataFrame({"query": ["b"], "product_id": ["x"], "grade": [1]})
    out = per_query_ranking_metrics(ranked, judged, [1, 3], relevant_min_grade=1)
    assert len(out) == 0
    assert "ndcg@3" in out.columns and "map" in out.columns
    dup = pd.DataFrame({"query": ["a", "a"], "product_id": ["x", "x"], "grade": [1, 0]})
    with pytest.raises(ValueError, match="duplicate"):
        per_query_ranking_metrics(ranked, dup, [1], relevant_min_grade=1)


def test_average_precision_and_reciprocal_rank_hand_values():
    rel = np.array([False, True, False, True, True])
    assert average_precision(rel, 3) == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    # one relevant judged product never retrieved: denominator 4
    assert average_precision(rel, 4) == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 4)
    assert average_precision(np.array([False, False]), 2) == 0.0
    assert reciprocal_rank(rel) == pytest.approx(1 / 2)
    assert reciprocal_rank(np.array([False, False])) == 0.0


def test_average_precision_matches_sklearn_when_all_relevant_ranked():
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    scores = np.linspace(1.0, 0.1, len(y))  # strictly decreasing: ranking = input order
    ours = average_precision(y.astype(bool), int(y.sum()))
    assert ours == pytest.approx(average_precision_score(y, scores), rel=1e-12)


def test_per_query_matches_scalar_functions_on_random_data():
    rng = np.random.default_rng(42)
    rows_r, rows_j = [], []
    for qi in range(40):
        n = int(rng.integers(1, 15))
        pids = [f"p{i}" for i in rng.choice(30, size=n, replace=False)]
        scores = rng.integers(0, 5, size=n) / 4  # many ties
        rows_r += [(f"q{qi}", p, s) for p, s in zip(pids, scores)]
        for i in rng.choice(30, size=int(rng.integers(1, 20)), replace=False):
            rows_j.append((f"q{qi}", f"p{i}", int(rng.integers(0, 4))))
    ranked = pd.DataFrame(rows_r, columns=["query", "product_id", "score"])
    judged = pd.DataFrame(rows_j, columns=["query", "product_id", "grade"])
    ks = [1, 3, 10]
    out = per_query_ranking_metrics(ranked, judged, ks, relevant_min_grade=2, gain_kind="exponential")
    assert len(out) == 40
    for _, row in out.iterrows():
        r = ranked[ranked["query"] == row["query"]]
        j = judged[judged["query"] == row["query"]]
        order = rank_query(r["product_id"].tolist(), r["score"].to_numpy())
        pids = r["product_id"].to_numpy()[order]
        grade_of = dict(zip(j["product_id"], j["grade"]))
        grades = np.array([grade_of.get(p, np.nan) for p in pids], dtype=float)
        rel = np.nan_to_num(grades, nan=-1) >= 2
        n_rel = int((j["grade"] >= 2).sum())
        ranked_gains = np.nan_to_num(gain(grades, "exponential"), nan=0.0)
        for k in ks:
            np.testing.assert_allclose(row[f"judged@{k}"], judged_at_k(~np.isnan(grades), k))
            np.testing.assert_allclose(row[f"precision@{k}"], precision_at_k(rel, k))
            np.testing.assert_allclose(row[f"recall@{k}"], recall_at_k(rel, n_rel, k))
            np.testing.assert_allclose(
                row[f"ndcg@{k}"], ndcg_at_k(ranked_gains, gain(j["grade"].to_numpy(), "exponential"), k)
            )
        np.testing.assert_allclose(row["map"], average_precision(rel, n_rel))
        expected_rr = reciprocal_rank(rel) if n_rel else np.nan
        np.testing.assert_allclose(row["mrr"], expected_rr)


def test_per_query_handles_many_queries():
    rng = np.random.default_rng(0)
    nq, per_q = 5000, 30
    q = np.repeat([f"q{i}" for i in range(nq)], per_q)
    p = np.tile([f"p{i}" for i in range(per_q)], nq)
    ranked = pd.DataFrame({"query": q, "product_id": p, "score": rng.random(nq * per_q)})
    judged = pd.DataFrame({"query": q, "product_id": p, "grade": rng.integers(0, 4, nq * per_q)})
    out = per_query_ranking_metrics(ranked, judged, [1, 5, 10], relevant_min_grade=2)
    assert len(out) == nq and out["ndcg@10"].between(0, 1).all()


# ----------------------------------------------------------------------------- thresholds

SCORES = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2])
RELEVANT = np.array([True, False, True, True, False, False])


def test_confusion_counts_and_f_scores():
    c = confusion_at_threshold(SCORES, RELEVANT, 0.75)
    assert c == ConfusionCounts(tp=1, fp=1, fn=2, tn=2)
    assert c.precision == pytest.approx(1 / 2)
    assert c.recall == pytest.approx(1 / 3)
    assert c.f1 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))  # = 2/5
    assert c.f_beta(2.0) == pytest.approx(5 * 1 / (5 * 1 + 4 * 2 + 1))  # = 5/14
    assert c.f_beta(0.5) == pytest.approx(1.25 * 1 / (1.25 * 1 + 0.25 * 2 + 1))  # = 5/11
    pred = SCORES >= 0.75
    assert c.f1 == pytest.approx(f1_score(RELEVANT, pred))
    assert c.f_beta(2.0) == pytest.approx(fbeta_score(RELEVANT, pred, beta=2.0))


def test_threshold_is_inclusive():
    c = confusion_at_threshold(SCORES, RELEVANT, 0.7)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 2)


def test_confusion_undefined_ratios_are_nan():
    empty = ConfusionCounts(tp=0, fp=0, fn=0, tn=5)
    assert math.isnan(empty.precision) and math.isnan(empty.recall) and math.isnan(empty.f1)
    no_pred = ConfusionCounts(tp=0, fp=0, fn=3, tn=2)
    assert math.isnan(no_pred.precision)
    assert no_pred.recall == 0.0 and no_pred.f1 == 0.0
    with pytest.raises(ValueError):
        no_pred.f_beta(0.0)


def test_choose_threshold_max_f1():
    # F1 per threshold: .9 -> 2/4, .8 -> 2/5, .7 -> 4/6, .4 -> 6/7, .3 -> 6/8, .2 -> 6/9
    assert choose_threshold_max_f1(SCORES, RELEVANT) == 0.4


def test_choose_threshold_ties_go_to_higher_threshold():
    # F1: .8 -> 2/3, .6 -> 2/4, .4 -> 2/5, .2 -> 4/6 (= 2/3, tie with .8)
    scores = np.array([0.2, 0.4, 0.6, 0.8])
    relevant = np.array([True, False, False, True])
    assert choose_threshold_max_f1(scores, relevant) == 0.8


# ----------------------------------------------------------------------------- intervals


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)


def test_wilson_interval_edges():
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0 < hi < 0.2
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and 0.8 < lo < 1.0
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    narrow, wide = wilson_interval(8, 10, 0.80), wilson_interval(8, 10, 0.99)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


def test_bootstrap_mean_ci_contains_mean_and_is_deterministic():
    values = np.random.default_rng(1).normal(0.6, 0.2, size=200)
    lo, hi = bootstrap_mean_ci(values, n_boot=500, seed=7)
    assert lo < values.mean() < hi
    assert hi - lo < 0.1
    assert bootstrap_mean_ci(values, n_boot=500, seed=7) == (lo, hi)
    assert bootstrap_mean_ci(values, n_boot=500, seed=8) != (lo, hi)


def test_bootstrap_ci_generic_matches_mean_helper_and_drops_nan():
    values = np.random.default_rng(2).random(100)
    with_nan = np.concatenate([values, [np.nan, np.nan]])
    generic = bootstrap_ci(values, np.mean, n_boot=300, seed=3)
    vectorized = bootstrap_ci(values, lambda a: a.mean(axis=1), n_boot=300, seed=3, vectorized=True)
    assert generic == pytest.approx(bootstrap_mean_ci(values, n_boot=300, seed=3))
    assert vectorized == pytest.approx(generic)
    assert bootstrap_mean_ci(with_nan, n_boot=300, seed=3) == bootstrap_mean_ci(values, n_boot=300, seed=3)
    assert bootstrap_ci(with_nan, np.mean, n_boot=300, seed=3) == pytest.approx(generic)


def test_bootstrap_ci_on_count_rows_micro_f1():
    rng = np.random.default_rng(5)
    counts = np.column_stack([rng.integers(0, 5, 300), rng.integers(0, 3, 300), rng.integers(0, 3, 300)])

    def micro_f1(rows: np.ndarray) -> float:
        tp, fp, fn = rows.sum(axis=0)
        return ConfusionCounts(int(tp), int(fp), int(fn), 0).f1

    point = micro_f1(counts)
    lo, hi = bootstrap_ci(counts, micro_f1, n_boot=300, seed=0)
    assert lo < point < hi
    assert bootstrap_ci(counts, micro_f1, n_boot=300, seed=0) == (lo, hi)


def test_bootstrap_empty_input_is_nan():
    assert all(math.isnan(x) for x in bootstrap_mean_ci(np.array([np.nan])))
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([]), np.mean))


# ----------------------------------------------------------------------------- calibration


def test_brier_and_equal_mass_ece_by_hand():
    from relevance.evaluation.classifier import brier_score, calibration_bins, expected_calibration_error

    scores = np.array([0.1, 0.2, 0.8, 0.9])
    relevant = np.array([0, 1, 1, 1])
    assert brier_score(scores, relevant) == pytest.approx((0.01 + 0.64 + 0.04 + 0.01) / 4)
    bins = calibration_bins(scores, relevant, n_bins=2)
    assert bins["count"].tolist() == [2, 2]
    # bin 1: mean score 0.15, observed 0.5; bin 2: mean score 0.85, observed 1.0
    assert expected_calibration_error(scores, relevant, n_bins=2) == pytest.approx((2 * 0.35 + 2 * 0.15) / 4)


def test_grouped_bootstrap_resamples_whole_queries():
    from relevance.evaluation.intervals import bootstrap_grouped_ci

    groups = np.array(["a", "a", "b", "b", "c"])
    values = np.array([1.0, 1.0, 0.0, 0.0, 0.5])
    lo, hi = bootstrap_grouped_ci(groups, lambda rows: values[rows].mean(), n_boot=300, seed=1)
    assert 0.0 <= lo <= values.mean() <= hi <= 1.0
    assert (lo, hi) == bootstrap_grouped_ci(groups, lambda rows: values[rows].mean(), n_boot=300, seed=1)
    # a statistic constant within every query has a degenerate interval only if all queries agree
    same = bootstrap_grouped_ci(np.array(["a", "b"]), lambda rows: 0.25, n_boot=50)
    assert same == (0.25, 0.25)


def test_threshold_for_precision_uses_the_wilson_lower_bound():
    from relevance.evaluation.classifier import threshold_for_precision

    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4])
    relevant = np.array([1, 1, 1, 1, 1, 0, 1, 0], dtype=bool)
    threshold, precision, recall = threshold_for_precision(scores, relevant, target=0.5)
    # 5/5 at 0.7 has Wilson lower bound 0.566 >= 0.5; 5/6 at 0.6 -> 0.436; 6/7 at 0.5 -> 0.487; 6/8 -> 0.409
    assert wilson_interval(5, 5)[0] >= 0.5 > wilson_interval(6, 7)[0]
    assert (threshold, precision, recall) == (0.7, 1.0, 5 / 6)
    assert np.isnan(threshold_for_precision(scores, relevant, target=0.99)[0])


def test_paired_randomization_test():
    from relevance.evaluation.intervals import paired_randomization_p_value

    assert paired_randomization_p_value(np.full(30, 0.1)) < 0.001  # consistent improvement
    noise = np.random.default_rng(3).normal(0, 1, 40)
    assert paired_randomization_p_value(noise - noise.mean()) > 0.9  # centred noise: no evidence
    assert paired_randomization_p_value(np.array([0.5, -0.5])) == 1.0


def test_bootstrap_resamples_in_bounded_blocks_give_the_same_interval(monkeypatch):
    """Many queries: the resample matrix is drawn block by block (memory bounded), the interval is unchanged."""
    import relevance.evaluation.intervals as intervals

    values = np.random.default_rng(4).random(1_000)
    counts = np.column_stack([values > 0.3, np.ones(1_000)])
    share = lambda m: m[:, 0].sum() / m[:, 1].sum()  # noqa: E731
    whole = (bootstrap_mean_ci(values, n_boot=200, seed=1), bootstrap_ci(counts, share, n_boot=200, seed=1),
             intervals.bootstrap_grouped_ci(np.arange(1_000) % 97, lambda rows: float(values[rows].mean()), 200, seed=1))
    monkeypatch.setattr(intervals, "BOOTSTRAP_BLOCK_ENTRIES", 7_000)  # 7 resamples of 1,000 queries per block
    drawn = []
    original = intervals._bootstrap_index_blocks

    def recorded(block: np.ndarray) -> np.ndarray:
        drawn.append(block.shape)
        return block

    monkeypatch.setattr(intervals, "_bootstrap_index_blocks", lambda *a: (recorded(b) for b in original(*a)))
    blocked = (bootstrap_mean_ci(values, n_boot=200, seed=1), bootstrap_ci(counts, share, n_boot=200, seed=1),
               intervals.bootstrap_grouped_ci(np.arange(1_000) % 97, lambda rows: float(values[rows].mean()), 200, seed=1))
    assert blocked == whole
    assert max(rows * n for rows, n in drawn) <= 7_000 and sum(rows for rows, n in drawn if n == 1_000) == 400


def test_counts_at_score_cuts_never_split_tied_scores():
    from relevance.evaluation.classifier import counts_at_score_cuts

    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.5, 0.1])
    relevant = np.array([0, 1, 1, 0, 0, 1], dtype=bool)
    thresholds, tp, fp = counts_at_score_cuts(scores, relevant)
    # one cut per distinct score, highest first: >= 0.9 holds both 0.9s, >= 0.5 adds both 0.5s, ...
    assert thresholds.tolist() == [0.9, 0.5, 0.2, 0.1]
    assert tp.tolist() == [1, 2, 2, 3] and fp.tolist() == [1, 2, 3, 3]
    # weights per (resample, row): a row weighted 2 counts twice, a row weighted 0 not at all
    weights = np.array([[1, 1, 1, 1, 1, 1], [0, 2, 1, 0, 1, 1]], dtype=float)
    _, wtp, wfp = counts_at_score_cuts(scores, relevant, weights)
    assert wtp.shape == (2, 4) and wtp[0].tolist() == tp.tolist() and wfp[0].tolist() == fp.tolist()
    assert wtp[1].tolist() == [2, 3, 3, 4] and wfp[1].tolist() == [0, 1, 1, 1]


def test_ranking_average_precision_is_per_query_and_pooled_average_precision_is_over_pairs():
    """The two APs differ: one query's ranking AP (trec_eval) vs the pooled AP of all judged pairs (scikit-learn)."""
    from relevance.evaluation.pair_metrics import pooled_average_precision

    # two queries: q1 ranks its relevant product first (AP 1), q2 second (AP 1/2); pooled, c (0.95) tops every pair
    scores = np.array([0.9, 0.8, 0.95, 0.6])  # q1: a (rel) 0.9, b 0.8; q2: c 0.95, d (rel) 0.6
    relevant = np.array([1, 0, 0, 1], dtype=bool)
    per_query = [average_precision(np.array([1, 0], dtype=bool), 1), average_precision(np.array([0, 1], dtype=bool), 1)]
    assert np.mean(per_query) == pytest.approx(0.75)
    pooled = pooled_average_precision(scores, relevant, np.ones((1, 4)))[0]
    # pooled ranking c, a (rel), b, d (rel): precision 1/2 at a and 2/4 at d
    assert pooled == pytest.approx(average_precision_score(relevant, scores)) == pytest.approx(0.5)
