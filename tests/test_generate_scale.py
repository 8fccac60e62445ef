"""generate-scale: a large synthetic day built with Spark; build_pairs must use every event of it."""

from __future__ import annotations

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import build_pairs, generate_scale
from plumbing.delta import Warehouse
from relevance.data import scale as scale_data
from relevance.frames import with_normalized_query
from schemas.tables import CATALOG, JUDGMENTS, PAIRS, QUERY_LOG, REJECTS
from tests.conftest import make_config, run

DS = "2025-01-07"
PAIRS_N, PRODUCTS, PER_QUERY, JUDGED = 2000, 3000, 20, 40
SMALL = {"generate_scale.pairs": PAIRS_N, "generate_scale.n_products": PRODUCTS,
         "generate_scale.candidates_per_query": PER_QUERY, "generate_scale.judged_queries": JUDGED,
         "generate_scale.seed": 3}


def _warehouse(spark, cfg: dict) -> Warehouse:
    return Warehouse(spark, cfg["warehouse"]["root"], cfg["warehouse"]["writer"])


def _generated(spark, root, models_root, **overrides) -> dict:
    cfg = make_config(root, models_root, **{**SMALL, **overrides})
    run(spark, cfg, generate_scale, ds=DS)
    return cfg


def _comparable(df: DataFrame) -> DataFrame:
    """Maps cannot take part in set operations: compare them as sorted entry arrays."""
    return df.select(*[F.array_sort(F.map_entries(c)).alias(c) if c == "attributes" else F.col(c) for c in df.columns])


def _same_rows(a: DataFrame, b: DataFrame) -> bool:
    a, b = _comparable(a), _comparable(b)
    return a.count() == b.count() and a.exceptAll(b).isEmpty() and b.exceptAll(a).isEmpty()


@pytest.fixture(scope="module")
def scale_day(spark, tmp_path_factory, tiny_model_root) -> dict:
    """A small generated day and the build_pairs run over it."""
    cfg = _generated(spark, tmp_path_factory.mktemp("scale_wh"), tiny_model_root)
    result = run(spark, cfg, build_pairs, ds=DS)
    return {"cfg": cfg, "pairs_result": result}


def test_every_event_is_used_and_pairs_are_exactly_the_target(spark, scale_day):
    wh, result = _warehouse(spark, scale_day["cfg"]), scale_day["pairs_result"]
    events = wh.read(QUERY_LOG, {"ds": DS})
    assert result.rows_rejected == 0 and result.rows_in == events.count() > PAIRS_N
    assert result.details["events_accepted"] == result.rows_in
    assert all(n == 0 for n in result.details["rejects_by_source"].values())
    assert wh.read(REJECTS).where((F.col("job") == build_pairs.JOB) & (F.col("ds") == DS)).isEmpty()

    pairs = wh.read(PAIRS, {"ds": DS})
    assert pairs.count() == PAIRS_N
    assert pairs.select("query_norm", "product_id").distinct().count() == PAIRS_N
    assert pairs.select("query_norm").distinct().count() == PAIRS_N // PER_QUERY
    assert {r.source for r in pairs.select("source").distinct().collect()} == {"log"}
    assert wh.read(CATALOG).count() == PRODUCTS


def test_log_looks_like_search_behavior(spark, scale_day):
    events = _warehouse(spark, scale_day["cfg"]).read(QUERY_LOG, {"ds": DS})
    by_action = {r.action_name: r["count"] for r in events.groupBy("action_name").count().collect()}
    assert set(by_action) == {"impression", "click", "add_to_cart", "purchase"}
    assert by_action["impression"] > by_action["click"] > by_action["add_to_cart"] > by_action["purchase"] > 0

    per_query = events.select("query_id", F.lower("user_query").alias("q")).distinct().groupBy("q").count()
    counts = sorted(r["count"] for r in per_query.collect())
    assert len(counts) == PAIRS_N // PER_QUERY
    assert 1.3 <= sum(counts) / len(counts) <= 2.5          # about 1.9 searches per query
    assert counts.count(1) > len(counts) / 2 and counts[-1] >= 5  # mostly one search, a few head queries
    assert events.select("user_query").distinct().count() > len(counts)  # raw texts vary in case

    clicks = events.where(F.col("action_name") == "click")
    top = clicks.where(F.col("position") <= 5).count()
    bottom = clicks.where(F.col("position") > PER_QUERY - 5).count()
    assert top > 2 * bottom
    impressions = events.where(F.col("action_name") == "impression")
    shown = impressions.groupBy("query_id").agg(F.countDistinct("object_id"), F.min("position"), F.max("position"))
    assert shown.drop("query_id").distinct().collect() == [(PER_QUERY, 1, PER_QUERY)]  # each search shows all, once


def test_judgments_are_bounded_and_from_the_log(spark, scale_day):
    wh = _warehouse(spark, scale_day["cfg"])
    judgments = wh.read(JUDGMENTS)
    assert judgments.count() == JUDGED * PER_QUERY
    assert judgments.select("query").distinct().count() == JUDGED
    assert {r.source for r in judgments.select("source").distinct().collect()} == {"scale-seed-3"}
    grades = {r.grade for r in judgments.select("grade").distinct().collect()}
    assert grades == {0, 1, 2}  # the default label scheme (wands) grades 0-2: truth grade 3 is capped at 2

    pairs = wh.read(PAIRS, {"ds": DS}).select("query_norm", "product_id")
    judged = with_normalized_query(judgments, "query").select("query_norm", "product_id")
    assert judged.join(pairs, ["query_norm", "product_id"], "left_anti").isEmpty()


def test_same_seed_same_tables_other_seed_other_tables(spark, scale_day, tmp_path, tiny_model_root):
    first = _warehouse(spark, scale_day["cfg"])
    again = _warehouse(spark, _generated(spark, tmp_path / "again", tiny_model_root))
    other = _warehouse(spark, _generated(spark, tmp_path / "other", tiny_model_root, **{"generate_scale.seed": 4}))
    for spec in (CATALOG, QUERY_LOG, JUDGMENTS):
        assert _same_rows(first.read(spec), again.read(spec)), spec.name
        assert not _same_rows(first.read(spec), other.read(spec)), spec.name


def test_rows_do_not_depend_on_partitioning(spark):
    shape = scale_data.ScaleShape(seed=5, n_products=1000, n_queries=30, candidates_per_query=10)
    assert _same_rows(scale_data.query_log(spark, shape, DS, 1), scale_data.query_log(spark, shape, DS, 3))
    assert _same_rows(scale_data.catalog(spark, 5, 1000, DS, 1), scale_data.catalog(spark, 5, 1000, DS, 4))


def test_candidates_are_distinct_products_of_the_catalog(spark):
    shape = scale_data.ScaleShape(seed=1, n_products=len(scale_data.TYPES) * 4, n_queries=50, candidates_per_query=8)
    rows = scale_data.judgments(spark, shape, 50, {0: "0", 1: "1", 2: "2", 3: "3"}, "s").collect()
    by_query: dict[str, set[str]] = {}
    for r in rows:
        by_query.setdefault(r.query, set()).add(r.product_id)
    assert len(rows) == 50 * 8 and all(len(products) == 8 for products in by_query.values())
    assert len(by_query) == 50
    ids = {r.product_id for r in scale_data.catalog(spark, 1, shape.n_products, DS, 1).collect()}
    assert set().union(*by_query.values()) <= ids
    assert {r.grade for r in rows} == {0, 1, 2, 3}


def test_too_few_products_for_the_candidates_is_refused():
    with pytest.raises(ValueError, match="products"):
        scale_data.ScaleShape(seed=1, n_products=len(scale_data.TYPES) * 4, n_queries=10, candidates_per_query=10)
