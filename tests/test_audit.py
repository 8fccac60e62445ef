"""The audit's library (relevance.evaluation) and its job's writers on hand-made frames (the log-only
aggregations on the local Spark session)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from relevance.evaluation.audit_rows import (
    AuditSettings,
    audit_rows,
    judged_evaluation,
    log_only_rows,
)
from relevance.evaluation.behavior import behavior_per_query, worst_offenders
from relevance.evaluation.compare import compare_rows, regression_failure

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = AuditSettings(ks=(2,), relevant_min_grade=1, threshold=0.5, bootstrap_samples=200)


def rows_of(candidates: pd.DataFrame, judged: pd.DataFrame, baselines: dict | None = None) -> pd.DataFrame:
    return audit_rows(judged_evaluation(candidates, judged, SETTINGS, baselines), SETTINGS)


def behavior() -> pd.DataFrame:
    return pd.DataFrame({
        "query_norm": ["sofa", "sofa", "sofa", "tee", "tee"],
        "product_id": ["a", "b", "c", "d", "e"],
        "segment": ["head", "head", "head", "tail", "tail"],
        "score": [0.9, 0.2, 0.1, 0.7, 0.3],
        "impressions": [10, 10, 4, 5, 5],
        "clicks": [6, 1, 0, 2, 3],
        "purchases": [1, 0, 0, 1, 0],
        "mean_position": [1.0, 2.0, 3.0, 1.0, 2.0],
    })


def test_log_only_shares_by_hand(spark):
    per_query: pd.DataFrame = behavior_per_query(spark.createDataFrame(behavior()), SETTINGS.threshold, SETTINGS.ks).toPandas()
    assert sorted(per_query.query_norm) == ["sofa", "tee"]  # one row per query reaches the driver, not one per pair
    rows = log_only_rows(per_query, SETTINGS).set_index(["segment", "metric"])
    # top-2 impressions: sofa a,b (10 + 10) and tee d,e (5 + 5); flagged (< 0.5): b (10) and e (5)
    assert rows.loc[("all", "irrelevant_impression_share@2"), "value"] == pytest.approx(15 / 30)
    assert rows.loc[("all", "irrelevant_impression_share@2"), "support"] == 30
    assert rows.loc[("head", "irrelevant_impression_share@2"), "value"] == pytest.approx(10 / 20)
    # clicks: flagged b (1), c (0), e (3) of 12
    assert rows.loc[("all", "irrelevant_click_share"), "value"] == pytest.approx(4 / 12)
    assert rows.loc[("all", "irrelevant_purchase_share"), "value"] == 0.0
    lo, hi = rows.loc[("all", "irrelevant_click_share"), ["ci_low", "ci_high"]]
    assert lo <= 4 / 12 <= hi


def test_worst_offenders_are_the_most_shown_flagged_pairs(spark):
    top = worst_offenders(spark.createDataFrame(behavior()), 0.5, limit=2)
    assert top.product_id.tolist() == ["b", "e"]
    assert worst_offenders(spark.createDataFrame(behavior()), 0.15).product_id.tolist() == ["c"]


def test_audit_rows_compare_with_the_logged_ranking():
    candidates = behavior().assign(mean_position=[3.0, 1.0, 2.0, 1.0, 2.0])
    judged = pd.DataFrame({"query_norm": ["sofa", "sofa", "sofa", "tee", "tee"],
                           "product_id": ["a", "b", "c", "d", "e"], "grade": [2, 0, 0, 1, 0]})
    frame = rows_of(candidates, judged).set_index(["system", "segment", "metric"])
    # model ranks the relevant product first in both queries; the logged ranking puts sofa/a last
    assert frame.loc[("model", "all", "mrr"), "value"] == 1.0
    assert frame.loc[("logged_position", "all", "mrr"), "value"] == pytest.approx((1 / 3 + 1) / 2)
    assert frame.loc[("model", "all", "mrr"), "baseline_value"] == pytest.approx((1 / 3 + 1) / 2)
    assert frame.loc[("model", "all", "precision"), "value"] == 1.0  # a, d predicted and relevant
    assert frame.loc[("model", "all", "roc_auc"), "value"] == 1.0
    assert frame.loc[("model", "tail", "roc_auc"), "value"] == 1.0  # tee: d relevant (0.7) above e (0.3)


def test_audit_reports_the_threshold_for_the_target_precision():
    rng = np.random.default_rng(0)
    n = 400
    relevant = rng.random(n) < 0.5
    scores = np.clip(np.where(relevant, 0.7, 0.3) + rng.normal(0, 0.15, n), 0, 1)
    candidates = pd.DataFrame({"query_norm": [f"q{i % 40}" for i in range(n)], "product_id": [f"p{i}" for i in range(n)],
                               "score": scores, "mean_position": np.nan, "segment": "tail"})
    judged = candidates[["query_norm", "product_id"]].assign(grade=relevant.astype(int))
    frame = rows_of(candidates, judged).set_index(["segment", "metric"])
    threshold = frame.loc[("all", "threshold_for_target_precision"), "value"]
    above = scores >= threshold
    assert 0.3 < threshold < 0.9 and relevant[above].mean() >= 0.9
    assert frame.loc[("all", "recall_at_target_precision"), "value"] == pytest.approx(relevant[above].sum() / relevant.sum())


def test_compare_reports_paired_deltas_and_the_gate_fails_on_a_worse_model():
    candidates = behavior()
    judged = pd.DataFrame({"query_norm": ["sofa", "sofa", "sofa", "tee", "tee"],
                           "product_id": ["a", "b", "c", "d", "e"], "grade": [2, 0, 0, 1, 0]})
    # the other model ranks the relevant product last in both queries: this model is better
    evaluation = judged_evaluation(candidates, judged, SETTINGS)
    better, movement = compare_rows(evaluation, np.array([0.1, 0.5, 0.9, 0.1, 0.9]), "old", SETTINGS)
    row = better.set_index(["segment", "metric"]).loc[("all", "delta_mrr")]
    assert row.value == pytest.approx(1 - (1 / 3 + 1 / 2) / 2) and row.baseline == "model:old"
    assert {k: movement["mrr"][k] for k in ("better", "worse")} == {"better": 2, "worse": 0}
    # sign flips of the two per-query deltas (+2/3, +1/2): half of them give a mean as far from 0, so p is about 1/2
    assert movement["mrr"]["p_value"] == pytest.approx(0.5, abs=0.05)
    assert regression_failure(better, "mrr", 0.01) is None
    # swap roles: the current model is the worse one, and the gate says so in one line
    worse, _ = compare_rows(judged_evaluation(candidates.assign(score=[0.1, 0.5, 0.9, 0.1, 0.9]), judged, SETTINGS),
                            candidates.score.to_numpy(), "good", SETTINGS)
    failure = regression_failure(worse, "mrr", 0.01)
    assert failure is not None
    assert failure.startswith("regression: mrr changed by -0.5833 against model:good") and "\n" not in failure


def test_every_system_is_judged_on_the_same_pairs_and_segments():
    from relevance.evaluation.summary import format_comparison

    candidates = behavior().assign(category=["Furniture > Sofas"] * 3 + ["Clothing / Tops"] * 2,
                                   query_norm=["red sofa"] * 3 + ["tee"] * 2)
    judged = candidates[["query_norm", "product_id"]].assign(grade=[2, 0, 0, 1, 0])
    lexical = np.array([1.5, 3.0, 1.0, 2.0, 1.0])  # a baseline that puts sofa/b above a
    frame = rows_of(candidates, judged, {"bm25": lexical}).set_index(["system", "segment", "metric"])
    assert frame.loc[("bm25", "all", "mrr"), "value"] == pytest.approx((1 / 2 + 1) / 2)
    assert frame.loc[("model", "all", "mrr"), "value"] == 1.0
    assert frame.loc[("bm25", "category=furniture", "roc_auc"), "value"] == 0.5  # a (relevant) above c, below b
    assert frame.loc[("model", "query_len=2", "ndcg@2"), "support"] == 1  # "red sofa"
    assert frame.loc[("model", "category=clothing", "ndcg@2"), "value"] == 1.0
    assert ("bm25", "all", "precision") not in frame.index  # threshold metrics only for the calibrated model
    text = format_comparison(frame.reset_index().assign(metric=lambda f: f.metric.str.replace("@2", "@10")), "test")
    assert "bm25" in text and "logged_position" in text and "all (2 queries)" in text


def test_held_out_queries_exclude_train_and_validation_queries():
    from relevance.evaluation.held_out import held_out_queries

    kept, scope = held_out_queries([{"train": ["a"], "val": ["b"], "test": ["c"]}], ["a", "b", "c", "new"])
    assert kept == {"c", "new"} and "2 excluded" in scope
    kept, _ = held_out_queries([{"train": ["a"], "val": ["b"]}, None, {"train": ["c"], "val": []}], ["a", "b", "c", "new"])
    assert kept == {"new"}  # a comparison excludes what either model trained or tuned on
    kept, scope = held_out_queries([None], ["a", "b"])
    assert kept == {"a", "b"} and "no model version records a training split" in scope


def test_curves_become_rows_with_pr_points_and_reliability_bins():
    from relevance.evaluation.audit_rows import curve_rows, curves, judged_pairs_of

    rng = np.random.default_rng(1)
    n = 300
    relevant = rng.random(n) < 0.5
    candidates = pd.DataFrame({"query_norm": [f"q{i % 30}" for i in range(n)], "product_id": [f"p{i}" for i in range(n)]})
    judged = candidates.assign(grade=relevant.astype(int))
    scores = np.clip(np.where(relevant, 0.7, 0.3) + rng.normal(0, 0.2, n), 0, 1)
    drawn = curves(judged_pairs_of(candidates, judged, {"model": scores}), ["model"], SETTINGS)
    pr = drawn["pr_curves"]
    assert 2 <= len(pr) <= 101 and pr.recall.is_monotonic_increasing and pr.recall.iloc[-1] == 1.0
    assert drawn["reliability"]["count"].sum() == n and drawn["score_histograms"]["count"].sum() == n
    rows = curve_rows(drawn, SETTINGS)
    observed = rows[rows.metric == "reliability_observed_rate"]
    assert len(observed) == 10 and (observed.ci_low <= observed.value).all() and (observed.value <= observed.ci_high).all()


def test_thresholds_for_the_target_precision_are_written_next_to_the_model_version(tmp_path):
    import json

    from jobs.audit import write_thresholds

    rng = np.random.default_rng(0)
    n = 400
    relevant = rng.random(n) < 0.5
    scores = np.clip(np.where(relevant, 0.7, 0.3) + rng.normal(0, 0.15, n), 0, 1)
    candidates = pd.DataFrame({"query_norm": [f"q{i % 40}" for i in range(n)], "product_id": [f"p{i}" for i in range(n)],
                               "score": scores, "mean_position": np.nan, "segment": ["head", "tail"] * (n // 2)})
    frame = rows_of(candidates, candidates[["query_norm", "product_id"]].assign(grade=relevant.astype(int)))
    path = write_thresholds(tmp_path, "2025-01-07", "run-1", frame, SETTINGS)
    assert isinstance(path, Path)
    written = json.loads(path.read_text())
    overall = frame.set_index(["system", "segment", "metric"]).loc[("model", "all", "threshold_for_target_precision"), "value"]
    assert path == tmp_path / "thresholds" / "2025-01-07.json" and written["target_precision"] == 0.9
    assert written["segments"]["all"]["threshold"] == pytest.approx(overall)
    assert {"all", "head", "tail"} <= set(written["segments"]) and 0 < written["segments"]["all"]["recall"] <= 1
    assert write_thresholds(tmp_path / "missing", "2025-01-07", "run-1", frame, SETTINGS) is None


def test_many_categories_fold_into_other_beyond_the_largest(monkeypatch):
    from relevance.evaluation import audit_rows as rows
    from relevance.evaluation.audit_rows import query_segments

    monkeypatch.setattr(rows, "MAX_CATEGORY_SEGMENTS", 2)
    categories = ["A > x"] * 3 + ["B > y"] * 2 + ["C > z", "D > w"]
    candidates = pd.DataFrame({"query_norm": [f"q{i}" for i in range(7)], "product_id": [f"p{i}" for i in range(7)],
                               "segment": "tail", "category": categories})
    judged = candidates[["query_norm", "product_id"]].assign(grade=1)
    segments = query_segments(candidates, judged, 1)
    assert segments["category=a"] == {"q0", "q1", "q2"} and segments["category=b"] == {"q3", "q4"}
    assert segments["category=other"] == {"q5", "q6"} and "category=c" not in segments


def test_held_out_candidates_keep_whole_queries_within_the_bound(spark):
    """Past audit.max_judged_pairs, whole held-out queries are kept (chosen by seed) and the scope says so."""
    from relevance.evaluation.held_out import held_out_candidates

    rows = [(f"q{q}", f"p{i}", 0.5, 1.0, "tail", "text", "cat") for q in range(12) for i in range(5)]
    candidates = spark.createDataFrame(rows, "query_norm string, product_id string, score double, mean_position double, "
                                             "segment string, product_text string, category string")
    judged = spark.createDataFrame([(f"q{q}", "p0", 1) for q in range(12)], "query_norm string, product_id string, grade long")
    split = {"train": ["q0", "q1"], "val": ["q2"], "test": []}
    held, grades, scope = held_out_candidates(candidates, judged, [split], max_pairs=1_000, seed=0)
    assert sorted(set(held.query_norm)) == sorted(f"q{q}" for q in range(3, 12)) and len(held) == 45
    assert set(grades.query_norm) == set(held.query_norm) and "3 excluded" in scope
    held, grades, scope = held_out_candidates(candidates, judged, [split], max_pairs=22, seed=0)
    assert len(held) == 20 and held.groupby("query_norm").size().eq(5).all()  # 4 whole queries of 5 candidates
    assert set(grades.query_norm) == set(held.query_norm)
    assert "4 of these 9 queries, chosen by seed, to stay within audit.max_judged_pairs=22" in scope


def test_audit_settings_come_from_the_audit_section_and_the_active_label_scheme():
    from jobs.core.config import load_settings
    from relevance.evaluation.audit_rows import audit_settings

    settings = load_settings(ROOT / "conf" / "local.yaml", ["audit.seed=3", "audit.ks=[1, 3]", "labels.scheme=esci",
                                                           "audit.target_precision=0.8"])
    audit = audit_settings(settings.audit, settings.labels.active, 0.4)
    assert (audit.ks, audit.seed, audit.threshold, audit.target_precision) == ((1, 3), 3, 0.4, 0.8)
    assert audit.relevant_min_grade == 2 and audit.gain == {3: 1.0, 2: 0.1, 1: 0.01, 0: 0.0}  # esci's gains
    assert "gain {3: 1.0, 2: 0.1, 1: 0.01, 0: 0.0}" in audit.definition("ndcg@3")


def test_one_judged_evaluation_feeds_the_rows_and_the_comparison():
    """Only judged queries are evaluated; systems, per-query metrics and segments are computed once, aligned with the
    kept candidates, and a comparison with the same scores moves nothing."""
    candidates = behavior().assign(query_norm=["sofa"] * 3 + ["unjudged"] * 2)
    judged = pd.DataFrame({"query_norm": ["sofa"] * 3, "product_id": ["a", "b", "c"], "grade": [2, 0, 0]})
    evaluation = judged_evaluation(candidates, judged, SETTINGS, {"bm25": np.array([1.0, 3.0, 2.0, 9.0, 9.0])})
    assert evaluation.queries == 1 and evaluation.candidates.product_id.tolist() == ["a", "b", "c"]
    assert list(evaluation.systems) == ["model", "bm25", "logged_position"]
    assert evaluation.systems["bm25"].tolist() == [1.0, 3.0, 2.0]  # the unjudged query's scores left out
    assert evaluation.per_query["bm25"].mrr.tolist() == [1 / 3] and set(evaluation.segments) >= {"all", "head"}
    assert evaluation.pairs.columns.tolist() == ["query_norm", "product_id", "model", "bm25", "logged_position", "grade"]
    same, movement = compare_rows(evaluation, evaluation.systems["model"], "twin", SETTINGS)
    assert (same.value == 0).all() and movement["mrr"]["better"] == movement["mrr"]["worse"] == 0
    assert "tail" not in evaluation.segments  # only the unjudged query was tail
    assert set(same.segment) == set(evaluation.segments) == {"all", "head", "query_len=1"}


def test_summary_thresholds_document_and_markdown_report():
    from relevance.evaluation.summary import audit_summary, markdown_report, thresholds_document

    rng = np.random.default_rng(0)
    n = 200
    relevant = rng.random(n) < 0.5
    candidates = pd.DataFrame({"query_norm": [f"q{i % 20}" for i in range(n)], "product_id": [f"p{i}" for i in range(n)],
                               "score": np.clip(np.where(relevant, 0.7, 0.3) + rng.normal(0, 0.1, n), 0, 1),
                               "mean_position": np.nan, "segment": "head"})
    frame = rows_of(candidates, candidates[["query_norm", "product_id"]].assign(grade=relevant.astype(int)))
    document = thresholds_document(frame, "2025-01-07", "run-1", SETTINGS)
    assert document is not None and set(document["segments"]) == {"all", "head", "query_len=1"}
    assert set(document["segments"]["all"]) == {"threshold", "recall"}
    targets = ["threshold_for_target_precision", "recall_at_target_precision"]
    assert thresholds_document(frame[~frame.metric.isin(targets)], "d", "r", SETTINGS) is None
    offenders = pd.DataFrame({"query_norm": ["q1"], "product_id": ["p1"], "score": [0.1]})
    text = audit_summary(frame, "v1", "2025-01-07", "test scope", 20, offenders, logged_queries=0)
    assert text.startswith("Systems compared on the same candidates, test scope")
    assert "audit ds=2025-01-07 model=v1" in text and "Log-only audits skipped" in text
    assert "Most-shown pairs the model calls irrelevant:" in audit_summary(frame, "v1", "d", "s", 0, offenders, 3)
    assert markdown_report("2025-01-07", "v1", "run-1", "body").startswith("# Relevance audit 2025-01-07\n\nmodel `v1`")
