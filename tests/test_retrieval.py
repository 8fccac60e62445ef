"""Catalog-wide retrieval (relevance.topk, relevance.retrieval, jobs/retrieve.py) and its audit rows
(relevance.evaluation.retrieval_rows / retrieval_audit): the exact top-k of a brute-force numpy search, the engine's
flags, a rerun that changes nothing, and an audit that without catalog_topk is the audit it was."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs import build_pairs, retrieve, score
from relevance.topk import RunningTopK, brute_force_top_k
from tests.conftest import DEMO_DS, copy_warehouse, run, table, with_settings

K = 12


def unit_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- pure
@pytest.mark.parametrize("batch", [7, 100, 1000])
def test_the_running_top_k_is_the_brute_force_top_k_ties_included(batch):
    rng = np.random.default_rng(3)
    queries, products = unit_vectors(rng, 23, 16), unit_vectors(rng, 1000, 16)
    products[[500, 501, 502]] = products[3]  # the same vector four times: ties go by product_id
    ids = np.array([f"P{i:05d}" for i in rng.permutation(1000)], dtype=object)
    top = RunningTopK(queries, K, query_block=5)
    for start in range(0, 1000, batch):
        top.add(ids[start:start + batch], products[start:start + batch])
    got, expected = top.results(), brute_force_top_k(queries, ids, products, K)
    assert (got[0] == expected[0]).all() and (got[1] == expected[1]).all()
    np.testing.assert_allclose(got[2], expected[2], rtol=0, atol=1e-12)
    assert top.products == 1000 and top.rescored < 23 * 1000  # the float32 selection rescored a fraction


def test_retrieval_rows_on_a_hand_checkable_day():
    from relevance.evaluation.audit_rows import AuditSettings
    from relevance.evaluation.retrieval_rows import retrieval_rows

    per_query = pd.DataFrame({
        "query_norm": ["a", "b", "c", "d"], "segment": ["head", "tail", "head", None],
        "query_searches": [10, 1, 5, 0], "judged": [True, False, True, True],
        "top_n": [2, 2, 2, 2], "top_unshown": [1, 2, 0, 2], "topk_n": [4, 4, 4, 4], "topk_shown": [2, 0, 3, 0],
        "relevant": [2, 0, 4, 3], "model_hits": [1, 0, 2, 3], "engine_hits": [2, 0, 1, 0]})
    rows = retrieval_rows(per_query, 4, 2, "v1", AuditSettings(bootstrap_samples=20)).set_index(
        ["system", "segment", "metric"])
    # d is not logged that day: only in no row (its engine showed nothing)
    assert rows.loc[("model", "all", "retrieval_unshown_share@2"), "value"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert rows.loc[("model", "head", "retrieval_unshown_share@2"), "value"] == pytest.approx(0.25)
    assert rows.loc[("model", "tail", "retrieval_unshown_share@2"), "support"] == 1
    assert rows.loc[("logged_position", "all", "retrieval_shown_recall@4"), "value"] == pytest.approx((2 / 4 + 3 / 4) / 2)
    judged = rows.loc[("model", "all", "retrieval_judged_recall@4")]
    assert judged.value == pytest.approx((1 / 2 + 2 / 4) / 2) and judged.support == 2
    assert judged.baseline_value == pytest.approx((2 / 2 + 1 / 4) / 2)
    assert rows.loc[("logged_position", "all", "retrieval_judged_recall@4"), "value"] == judged.baseline_value
    assert ("model", "tail", "retrieval_judged_recall@4") not in rows.index  # b is not judged


# ----------------------------------------------------------------------------- Spark
def test_top_k_over_catalog_on_executors_is_the_brute_force_top_k(spark):
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    from relevance.retrieval import top_k_over_catalog

    rng = np.random.default_rng(5)
    queries, products = unit_vectors(rng, 40, 24), unit_vectors(rng, 1200, 24)
    ids = np.array([f"P{i:06d}" for i in range(1200)], dtype=object)
    schema = StructType([StructField("product_id", StringType()), StructField("vector", ArrayType(FloatType()))])
    frame = spark.createDataFrame([(str(i), v.tolist()) for i, v in zip(ids, products)], schema)
    got = pd.DataFrame(top_k_over_catalog(spark, queries, frame, K, query_block=16, partitions=3).toPandas())
    got = got.sort_values(["qid", "rank"], ignore_index=True)
    rows, expected_ids, scores = brute_force_top_k(queries, ids, products, K)
    assert got.qid.tolist() == rows.tolist() and got.product_id.tolist() == list(expected_ids)
    assert got["rank"].tolist() == [r % K + 1 for r in range(len(rows))]
    np.testing.assert_allclose(got.score.to_numpy(), scores, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def retrieved(spark, demo_warehouse, tmp_path_factory) -> dict:
    """The demo day's pairs scored by the tiny bi-encoder on the embedding path (which fills `embeddings`), an audit
    before any retrieval, then `retrieve`."""
    from tests.test_embeddings import BI_VERSION, make_tiny_bi_encoder_version

    models = tmp_path_factory.mktemp("retrieval_models")
    make_tiny_bi_encoder_version(models)
    cfg = copy_warehouse(demo_warehouse, tmp_path_factory.mktemp("retrieval") / "warehouse")
    cfg = with_settings(cfg, model__models_root=str(models), model__version=BI_VERSION, scoring__path="embeddings",
                        audit__retrieval__k=K, audit__retrieval__queries=30, audit__retrieval__top_share_k=5,
                        audit__baselines=[], audit__bootstrap_samples=20)
    timings, results = {}, {}
    for module in (build_pairs, score, retrieve):
        started = time.perf_counter()
        results[module.JOB] = run(spark, cfg, module)
        timings[module.JOB] = round(time.perf_counter() - started, 1)
    print(f"\nretrieval fixture seconds: {timings}")
    return {"cfg": cfg, "first": results["retrieve"]}


def test_catalog_topk_is_the_exact_top_k_over_every_catalog_product(spark, retrieved):
    cfg = retrieved["cfg"]
    import hashlib

    from plumbing.delta import Warehouse
    from relevance.pairs import catalog_texts
    from relevance.settings import settings_from_mapping
    from schemas.tables import CATALOG

    first = retrieved["first"]
    topk = table(cfg, "catalog_topk")
    vectors = table(cfg, "embeddings")
    settings = settings_from_mapping(copy.deepcopy(cfg))
    catalog = Warehouse(spark, cfg["warehouse"]["root"], "delta-rs").read(CATALOG)
    texts = pd.DataFrame(catalog_texts(catalog, settings.pairs)[0].toPandas())
    key = {(r.kind, r.text_fingerprint): np.asarray(r.vector, dtype=np.float32) for r in vectors.itertuples()}

    def fingerprint(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    ids = texts.product_id.to_numpy(dtype=object)
    matrix = np.stack([key[("product", fingerprint(t))] for t in texts.product_text])  # every product has a vector
    queries = sorted(topk.query_norm.unique())
    assert len(queries) == first.rows_in and first.details["catalog_products"] == len(ids)
    qmatrix = np.stack([key[("query", fingerprint(q))] for q in queries])
    rows, expected_ids, scores = brute_force_top_k(qmatrix, ids, matrix, K)
    got = topk.sort_values(["query_norm", "rank"], ignore_index=True)
    assert got.query_norm.tolist() == [queries[r] for r in rows] and got.product_id.tolist() == list(expected_ids)
    np.testing.assert_allclose(got.score.to_numpy(), scores, rtol=0, atol=1e-9)
    assert set(topk.ds) == {DEMO_DS} and set(topk.model_version) == {"tiny-bi"} and (topk.k == K).all()
    # every judged query, and the 30 most searched logged ones
    judged = {q for q in topk[topk.judged].query_norm}
    assert len(judged) > 0 and len(set(queries) - judged) <= 30


def test_shown_by_engine_is_an_impression_in_the_days_pairs_and_the_score_is_relevances(retrieved):
    cfg = retrieved["cfg"]
    topk = table(cfg, "catalog_topk")
    pairs = table(cfg, "pairs")
    shown = set(zip(*pairs[pairs.impressions > 0][["query_norm", "product_id"]].T.to_numpy()))
    in_pairs = set(zip(pairs.query_norm, pairs.product_id))
    keys = list(zip(topk.query_norm, topk.product_id))
    assert topk.shown_by_engine.tolist() == [k in shown for k in keys]
    assert topk.in_pairs.tolist() == [k in in_pairs for k in keys]
    assert topk.shown_by_engine.any() and not topk.shown_by_engine.all()
    relevance = table(cfg, "relevance").set_index(["query_norm", "product_id"]).score
    both = topk[topk.in_pairs].set_index(["query_norm", "product_id"])
    both = both[both.index.isin(relevance.index)]
    assert len(both) > 0  # the pair's calibrated score, lexical term included, is relevance's
    np.testing.assert_allclose(both.relevance_score.to_numpy(), relevance.loc[both.index].to_numpy(), atol=1e-5)


def test_a_rerun_gives_the_same_table_and_embeds_nothing(spark, retrieved):
    cfg = retrieved["cfg"]
    columns = ["query_norm", "product_id", "rank", "score", "relevance_score", "shown_by_engine", "segment"]
    before = table(cfg, "catalog_topk").sort_values(["query_norm", "rank"], ignore_index=True)
    first = retrieved["first"]
    assert first.details["texts_embedded"] > 0  # the catalog's products the day did not show
    again = run(spark, cfg, retrieve)
    assert again.details["texts_embedded"] == 0 and again.rows_out == first.rows_out == len(before)
    after = table(cfg, "catalog_topk").sort_values(["query_norm", "rank"], ignore_index=True)
    pd.testing.assert_frame_equal(before[columns], after[columns])
    assert after.run_id.nunique() == 1 and after.run_id.iloc[0] != before.run_id.iloc[0]


def test_the_retrieval_audit_of_the_day_and_the_reports_gap_table(spark, retrieved):
    """retrieval_part on the job's catalog_topk, the day's pairs and the judgments: the rows equal a pandas count of
    the same tables, and the report lists the largest gaps with product titles."""
    import markupsafe

    from plumbing.delta import Warehouse
    from relevance.evaluation.audit_rows import AuditSettings
    from relevance.evaluation.report_html import AuditReport, render_audit_html
    from relevance.evaluation.retrieval_audit import retrieval_part
    from schemas.tables import CATALOG, CATALOG_TOPK, JUDGMENTS, PAIRS
    from udfs.text import normalize_text

    cfg = retrieved["cfg"]
    wh = Warehouse(spark, cfg["warehouse"]["root"], "delta-rs")
    part = retrieval_part(wh.read(CATALOG_TOPK, {"ds": DEMO_DS}), wh.read(PAIRS, {"ds": DEMO_DS}), wh.read(JUDGMENTS),
                          wh.read(CATALOG), "tiny-bi", DEMO_DS, AuditSettings(bootstrap_samples=20, threshold=0.0), 5, 3)
    rows = part.rows.set_index(["system", "segment", "metric"])
    assert part.note.startswith("catalog retrieval (top 12 over the whole catalog")
    topk, pairs, judgments = table(cfg, "catalog_topk"), table(cfg, "pairs"), table(cfg, "judgments")
    logged = topk[(topk.query_searches > 0) & (topk["rank"] <= 5)]
    share = rows.loc[("model", "all", "retrieval_unshown_share@5")]
    assert share.value == pytest.approx((~logged.shown_by_engine).groupby(logged.query_norm).mean().mean())
    assert share.support == logged.query_norm.nunique()
    judged_logged = topk[topk.judged & (topk.query_searches > 0)]
    shown = pairs[pairs.impressions > 0]
    relevant = judgments[judgments.grade >= 1].assign(query_norm=lambda j: j["query"].map(normalize_text))
    model, engine = [], []
    for query, group in judged_logged.groupby("query_norm"):
        mine = set(relevant[relevant.query_norm == query].product_id)
        if mine:
            model.append(len(mine & set(group.product_id)) / len(mine))
            engine.append(len(mine & set(shown[shown.query_norm == query].product_id)) / len(mine))
    recall = rows.loc[("model", "all", f"retrieval_judged_recall@{K}")]
    assert len(model) > 0 and recall.support == len(model)
    assert recall.value == pytest.approx(np.mean(model)) and recall.baseline_value == pytest.approx(np.mean(engine))
    assert rows.loc[("logged_position", "all", f"retrieval_shown_recall@{K}"), "value"] == pytest.approx(
        (judged_logged.groupby("query_norm").shown_by_engine.sum() / K).mean())

    gaps = part.gaps  # threshold 0: every never-shown product of a logged query's top 5 counts
    missed = logged[~logged.shown_by_engine]
    assert set(gaps.query_norm) <= set(missed.query_norm) and gaps.query_norm.nunique() == min(3, missed.query_norm.nunique())
    worst = missed.groupby("query_norm").size().max()
    assert gaps.gap.max() == worst and gaps.title.notna().all()
    html = render_audit_html(AuditReport(
        ds=DEMO_DS, model_version="tiny-bi", run_id="r", created_at="now", metrics=part.rows, pr_curves=pd.DataFrame(),
        reliability=pd.DataFrame(), score_histograms=pd.DataFrame(), worst_offenders=pd.DataFrame(), threshold=0.5,
        target_precision=0.9, summary_text=part.note, retrieval_gaps=gaps, retrieval_note=part.note))
    assert "Recall beyond the shown set" in html and "Relevant products the engine never showed" in html
    assert all(str(markupsafe.escape(title)) in html for title in gaps.title)


def test_without_catalog_topk_the_audit_is_unchanged_but_for_one_line(spark, retrieved):
    """The audit's compute step with and without the day's catalog_topk (the log-only audit, no judgments to keep it
    short): the same rows but the retrieval ones, and the summary says why there are none."""
    from dataclasses import replace

    from jobs.audit import load
    from jobs.core.job import JobContext
    from jobs.core.spark import open_warehouse
    from relevance.evaluation.audit_plan import compute
    from relevance.settings import settings_from_mapping

    settings = settings_from_mapping(copy.deepcopy(retrieved["cfg"]))
    ctx = JobContext(job="audit", settings=settings, spark=spark, warehouse=open_warehouse(spark, settings),
                     ds=DEMO_DS)
    inputs = replace(load(ctx), judgments=None, catalog=None)
    assert inputs.catalog_topk is not None
    with_topk = compute(settings, DEMO_DS, "r1", inputs).frame
    without = compute(settings, DEMO_DS, "r2", replace(inputs, catalog_topk=None))
    assert with_topk.metric.str.startswith("retrieval_unshown_share").any()
    assert not without.frame.metric.str.startswith("retrieval_").any()
    assert "catalog retrieval: no catalog_topk partition for ds=2025-01-07" in without.summary
    key, same = ["system", "segment", "metric", "k"], ["system", "segment", "metric", "k", "value", "support"]
    pd.testing.assert_frame_equal(
        with_topk[~with_topk.metric.str.startswith("retrieval_")][same].sort_values(key, ignore_index=True),
        without.frame[same].sort_values(key, ignore_index=True))


def test_a_cross_encoder_is_skipped_with_one_line(spark, demo_warehouse, tmp_path):
    cfg = copy_warehouse(demo_warehouse, tmp_path / "warehouse")
    result = run(spark, cfg, retrieve)  # the tiny test version is a cross-encoder
    assert "catalog retrieval skipped" in result.summary and "\n" not in result.summary
    assert result.rows_out == 0 and not (Path(cfg["warehouse"]["root"]) / "catalog_topk").exists()
