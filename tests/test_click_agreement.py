"""The click audit: the model's agreement with click labels on the day's queries without judgments (nDCG@k with the
click label as the gain), against a hand-computed example, the rules (which queries, which click_labels partition)
and end to end on the small demo (click-model, build_pairs, score, audit)."""

from __future__ import annotations

import copy
from dataclasses import replace
from math import log2
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.core.config import set_path
from relevance.evaluation.audit_rows import AuditSettings
from relevance.evaluation.click_agreement import (
    CLICK_BIAS,
    CLICK_PREFIX,
    CLICK_SYSTEMS,
    choose_click_partition,
    click_agreement_rows,
    click_column,
    click_note,
    click_report_note,
    click_scope,
)
from tests.conftest import DEMO_DS, run, table

KS = (2, 3)
SETTINGS = AuditSettings(ks=KS, bootstrap_samples=200)


def candidates_frame(spark, rows: list[tuple]):
    return spark.createDataFrame(rows, "query_norm string, product_id string, score double, mean_position double, "
                                       "segment string, query_searches long, label double")


def local(df) -> pd.DataFrame:
    frame: pd.DataFrame = df.toPandas()
    return frame.set_index("query_norm")


# ---------------------------------------------------------------------------------------------------------------
# Per query, in Spark, against a hand-computed example
# ---------------------------------------------------------------------------------------------------------------


def test_click_ndcg_per_query_by_hand(spark):
    from relevance.evaluation.click_ndcg import click_ndcg_per_query

    frame = candidates_frame(spark, [
        # q1: p4 has no label (ranks nowhere); p2 and p3 tie on score (p2 first: product_id); p5 was not shown today
        ("q1", "p1", 0.9, 3.0, "head", 40, 0.2),
        ("q1", "p2", 0.5, 1.0, "head", 40, 0.8),
        ("q1", "p3", 0.5, 2.0, "head", 40, 0.0),
        ("q1", "p4", 0.99, 1.5, "head", 40, None),
        ("q1", "p5", 0.1, None, "head", 40, 0.4),
        ("q2", "p1", 0.3, 1.0, "tail", 2, 0.5),  # one labelled candidate
        ("q2", "p2", 0.2, 2.0, "tail", 2, None),
        ("q3", "p1", 0.3, 1.0, "tail", 3, 0.0),  # every label 0
        ("q3", "p2", 0.2, 2.0, "tail", 3, 0.0),
        ("q4", "p1", 0.3, 1.0, "torso", 9, None),  # no label
    ])
    per_query = local(click_ndcg_per_query(frame, KS))
    assert sorted(per_query.index) == ["q1", "q2", "q3", "q4"]
    q1 = per_query.loc["q1"]
    assert (q1.segment, q1.searches, q1.labelled, q1.label_sum) == ("head", 40, 4, pytest.approx(1.4))
    # gains in rank order: model p1, p2, p3, p5 (score desc, ties by product_id) -> 0.2, 0.8, 0.0, 0.4;
    # logged p2, p3, p1, p5 (mean position, never shown last) -> 0.8, 0.0, 0.2, 0.4; ideal 0.8, 0.4, 0.2, 0.0
    ideal2, ideal3 = 0.8 + 0.4 / log2(3), 0.8 + 0.4 / log2(3) + 0.2 / 2
    assert q1[click_column("model", 2)] == pytest.approx((0.2 + 0.8 / log2(3)) / ideal2, abs=1e-12)
    assert q1[click_column("model", 3)] == pytest.approx((0.2 + 0.8 / log2(3) + 0.0 / 2) / ideal3, abs=1e-12)
    assert q1[click_column("logged_position", 2)] == pytest.approx(0.8 / ideal2, abs=1e-12)
    assert q1[click_column("logged_position", 3)] == pytest.approx((0.8 + 0.2 / 2) / ideal3, abs=1e-12)
    for query in ("q2", "q3", "q4"):
        assert per_query.loc[query, [click_column(s, k) for s in ("model", "logged_position") for k in KS]].isna().all()
    assert per_query.labelled.to_dict() == {"q1": 4, "q2": 1, "q3": 2, "q4": 0}

    kept, scope = click_scope(per_query.reset_index(), "2025-01-07", "pbm", 10, "judgments")
    assert kept.query_norm.tolist() == ["q1"]
    assert (scope.day_queries, scope.unlabelled, scope.one_labelled, scope.zero_ideal, scope.evaluated) == (4, 1, 1, 1, 1)
    assert "1 of 4 evaluated" in scope.definition("model", 2) and "click_labels ds=2025-01-07" in scope.definition("model", 2)


def test_queries_with_judgments_and_labels_of_other_models_or_few_impressions_are_left_out(spark):
    from relevance.evaluation.click_ndcg import click_agreement

    relevance = spark.createDataFrame(
        [(q, p, s) for q in ("red shoes", "blue hat") for p, s in (("a", 0.9), ("b", 0.4), ("c", 0.1))],
        "query_norm string, product_id string, score double")
    pairs = spark.createDataFrame(
        [(q, p, pos, "tail", 5) for q in ("red shoes", "blue hat") for p, pos in (("a", 3.0), ("b", 1.0), ("c", 2.0))],
        "query_norm string, product_id string, mean_position double, segment string, query_searches long")
    judgments = spark.createDataFrame([("  Red SHOES ", "a")], "query string, product_id string")  # normalized: red shoes
    labels = spark.createDataFrame(
        [(q, p, "pbm", 20, lab, DEMO_DS) for q in ("red shoes", "blue hat") for p, lab in (("a", 0.1), ("b", 0.6))]
        + [("blue hat", "c", "pbm", 3, 0.9, DEMO_DS),  # shown too rarely
           ("blue hat", "c", "sdbn", 20, 0.9, DEMO_DS),  # another click model
           ("blue hat", "c", "pbm", 20, 0.9, "2025-01-06")],  # another partition
        "query_norm string, product_id string, click_model string, impressions long, label double, ds string")

    found = click_agreement(relevance, pairs, judgments, "judgments", labels, DEMO_DS, "pbm", 10, KS)
    assert found.per_query.query_norm.tolist() == ["blue hat"] and found.scope.day_queries == 1
    # blue hat: labelled a (0.1), b (0.6); the model ranks a first, the log b first
    assert found.per_query[click_column("model", 2)].iloc[0] == pytest.approx(
        (0.1 + 0.6 / log2(3)) / (0.6 + 0.1 / log2(3)), abs=1e-12)
    assert found.per_query[click_column("logged_position", 2)].iloc[0] == pytest.approx(1.0)

    without = click_agreement(relevance, pairs, None, "judgments", labels, DEMO_DS, "pbm", 10, KS)
    assert without.per_query.query_norm.tolist() == ["blue hat", "red shoes"] and without.scope.judgments_table is None


# ---------------------------------------------------------------------------------------------------------------
# Which click_labels partition
# ---------------------------------------------------------------------------------------------------------------


def test_the_latest_partition_on_or_before_ds_within_the_maximum_age():
    assert choose_click_partition("2025-01-07", "2025-01-07", 7).ds == "2025-01-07"
    assert choose_click_partition("2024-12-31", "2025-01-07", 7).ds == "2024-12-31"  # 7 days older: used
    too_old = choose_click_partition("2024-12-30", "2025-01-07", 7)  # 8 days
    assert too_old.ds is None and "ds=2024-12-30, 8 days older" in too_old.note
    assert "click_labels_max_age_days=7" in too_old.note and "no click labels were available" in too_old.note
    assert choose_click_partition(None, "2025-01-07", 7).ds is None
    missing = choose_click_partition(None, "2025-01-07", 7, table_exists=False)
    assert missing.ds is None and "no click_labels table" in missing.note and "\n" not in missing.note


def test_a_later_partition_is_not_used_and_an_old_one_only_within_the_age(spark):
    from relevance.evaluation.click_ndcg import click_partition

    labels = spark.createDataFrame([("q", "p", ds) for ds in ("2025-01-01", "2025-01-05", "2025-01-09")],
                                   "query_norm string, product_id string, ds string")
    assert click_partition(labels, "2025-01-07", 7).ds == "2025-01-05"
    assert click_partition(labels, "2025-01-07", 1).ds is None
    assert click_partition(labels, "2024-12-31", 7).ds is None
    assert click_partition(None, "2025-01-07", 7).ds is None


# ---------------------------------------------------------------------------------------------------------------
# Rows, summary and report
# ---------------------------------------------------------------------------------------------------------------


def per_query_frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 30
    frame = pd.DataFrame({"query_norm": [f"q{i}" for i in range(n)], "segment": ["head", "tail", "tail"] * 10,
                          "searches": 5, "labelled": 3, "label_sum": 1.0})
    for k in KS:
        frame[click_column("model", k)] = rng.uniform(0.3, 1.0, n)
        frame[click_column("logged_position", k)] = rng.uniform(0.5, 1.0, n)
    return frame


def test_rows_per_segment_with_the_logged_ranking_as_baseline():
    kept, scope = click_scope(per_query_frame(), "2025-01-07", "pbm", 10, "judgments")
    rows = click_agreement_rows(kept, scope, SETTINGS)
    assert set(rows.segment) == {"all", "head", "tail"}  # no torso query: no torso row
    assert set(rows.metric) == {"click_ndcg@2", "click_ndcg@3"} and set(rows.system) == {"model", "logged_position"}
    indexed = rows.set_index(["system", "segment", "metric"])
    model = indexed.loc[("model", "all", "click_ndcg@2")]
    assert model.value == pytest.approx(kept[click_column("model", 2)].mean()) and model.support == 30
    assert model.ci_low <= model.value <= model.ci_high and model.k == 2
    assert model.baseline == "logged_position"
    assert model.baseline_value == indexed.loc[("logged_position", "all", "click_ndcg@2"), "value"]
    assert indexed.loc[("model", "head", "click_ndcg@3"), "support"] == 10
    assert "click label" in model.definition and "30 of 30 evaluated" in model.definition


def test_summary_and_report_carry_the_click_section_and_the_bias(tmp_path):
    from relevance.evaluation import report_html
    from relevance.evaluation.report_html import AuditReport, render_audit_html
    from relevance.evaluation.summary import audit_summary, format_summary

    kept, scope = click_scope(per_query_frame(), "2025-01-07", "pbm", 10, "judgments")
    clicks = click_agreement_rows(kept, scope, SETTINGS)
    judged = pd.DataFrame([{"system": "model", "segment": "all", "metric": "ndcg@10", "k": 10, "value": 0.5,
                            "support": 4, "ci_low": 0.4, "ci_high": 0.6, "definition": "d", "baseline": None,
                            "baseline_value": None}])
    frame = pd.concat([judged, clicks], ignore_index=True)
    note = click_note(scope, choose_click_partition("2025-01-07", "2025-01-07", 7))
    summary = audit_summary(frame, "v1", "2025-01-07", "all judged queries", 0, pd.DataFrame(), 0, note)
    assert "click_ndcg@2" in summary and "tail (20 queries)" in summary and "not ground truth" in summary
    assert "click_ndcg" not in format_summary(frame, "v1", "2025-01-07")  # the model's table stays the judged one
    none = choose_click_partition(None, "2025-01-07", 7, table_exists=False).note
    assert audit_summary(judged, "v1", "2025-01-07", "s", 0, pd.DataFrame(), 0, none).endswith(none)

    report = AuditReport(ds="2025-01-07", model_version="v1", run_id="r", created_at="t", metrics=frame,
                         pr_curves=pd.DataFrame(), reliability=pd.DataFrame(), score_histograms=pd.DataFrame(),
                         worst_offenders=pd.DataFrame(), threshold=0.5, target_precision=0.9, summary_text=summary,
                         click_note=click_report_note(note))
    html = render_audit_html(report)
    assert (report_html.CLICK_PREFIX, report_html.CLICK_SYSTEMS) == (CLICK_PREFIX, CLICK_SYSTEMS)  # its own copies
    section = html.split('<section id="click-agreement">')[1].split("</section>")[0]
    assert "click_ndcg@3" in section and "logged_position" in section and CLICK_BIAS.split(":")[0] in section
    systems = html.split('<section id="systems">')[1].split("</section>")[0]
    assert "click_ndcg" not in systems
    assert '<section id="click-agreement">' not in render_audit_html(replace(report, metrics=judged, click_note=""))


# ---------------------------------------------------------------------------------------------------------------
# End to end on the small demo
# ---------------------------------------------------------------------------------------------------------------


def expected_click_ndcg(cfg: dict, k: int, min_impressions: int) -> pd.DataFrame:
    """The model's click nDCG@k per evaluable query, in pandas from the tables the jobs wrote."""
    from udfs.text import normalize_text

    judged = {normalize_text(q) for q in table(cfg, "judgments")["query"]}
    labels = table(cfg, "click_labels")
    labels = labels[(labels.ds == DEMO_DS) & (labels.click_model == "pbm") & (labels.impressions >= min_impressions)]
    relevance = table(cfg, "relevance")
    pairs = table(cfg, "pairs")
    pairs = pairs[pairs.ds == DEMO_DS][["query_norm", "product_id", "segment"]]
    scored = (relevance[(relevance.ds == DEMO_DS) & ~relevance.query_norm.isin(judged)]
              .merge(pairs, on=["query_norm", "product_id"]).merge(labels[["query_norm", "product_id", "label"]],
                                                                  on=["query_norm", "product_id"]))
    rows = []
    for query, group in scored.groupby("query_norm"):
        gains = group.sort_values(["score", "product_id"], ascending=[False, True]).label.to_numpy()[:k]
        ideal = np.sort(group.label.to_numpy())[::-1][:k]
        discount = 1 / np.log2(np.arange(2, len(gains) + 2))
        if len(group) >= 2 and ideal.sum() > 0:
            rows.append({"query_norm": query, "segment": group.segment.iloc[0],
                         "ndcg": float((gains * discount).sum() / (ideal * discount[:len(ideal)]).sum())})
    return pd.DataFrame(rows)


def test_audit_adds_click_agreement_rows_on_the_demo(spark, fresh_warehouse):
    from jobs import audit, build_pairs, click_model, score

    cfg = copy.deepcopy(fresh_warehouse)
    for key, value in {"click_model.days": 2, "audit.click_min_impressions": 2, "audit.baselines": []}.items():
        set_path(cfg, key, value)
    run(spark, cfg, click_model)
    run(spark, cfg, build_pairs)
    run(spark, cfg, score)
    result = run(spark, cfg, audit)

    rows = table(cfg, "relevance_audit")
    clicks = rows[rows.metric.str.startswith("click_ndcg@")]
    assert set(clicks.metric) == {"click_ndcg@5", "click_ndcg@10"} and set(clicks.system) == {"model", "logged_position"}
    assert clicks[["value", "ci_low", "ci_high"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (clicks.support > 0).all() and clicks.definition.str.contains(f"click_labels ds={DEMO_DS}").all()
    expected = expected_click_ndcg(cfg, 10, 2)
    support = expected.groupby("segment").size().to_dict() | {"all": len(expected)}
    at10 = clicks[(clicks.metric == "click_ndcg@10") & (clicks.system == "model")].set_index("segment")
    assert at10.support.to_dict() == support  # a row for each segment with evaluable queries, and only those
    assert at10.loc["all", "value"] == pytest.approx(expected.ndcg.mean(), abs=1e-9)
    assert "Click agreement on the day's queries without judgments" in result.summary and "not ground truth" in result.summary
    html = (Path(cfg["warehouse"]["root"]) / "reports" / f"audit_{DEMO_DS}.html").read_text()
    assert '<section id="click-agreement">' in html
