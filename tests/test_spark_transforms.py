"""The Spark transformations of relevance.pairs, relevance.scoring and relevance.frames, one at a time.

Each test builds a few rows by hand with `spark.createDataFrame` and compares the result with values worked out
by hand here (never by calling the code under test), so a changed rule, reason or formula fails a test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from relevance.frames import is_blank, rejects_frame, whole_queries_up_to, with_normalized_query
from relevance.pairs import (
    aggregate_behavior,
    catalog_texts,
    classify_events,
    finish_pairs,
    judged_candidate_pairs,
    query_segments,
)
from relevance.scoring import classify_pairs, grade_from_score, split_reusable, unusable_scores
from relevance.settings import PairsSettings
from schemas.tables import CATALOG, PAIRS, QUERY_LOG, REJECTS

UTC = dt.timezone.utc
DAY = "2025-01-07"
NOON = dt.datetime(2025, 1, 7, 12, tzinfo=UTC)
DUPLICATE = "duplicate product_id (an entry with a later updated_at is used)"
# events that passed classify_events, as aggregate_behavior and query_segments see them
EVENTS_OK = "query_norm string, query_id string, action_name string, object_id string, position long, product_text string"


def catalog_frame(spark: SparkSession, rows: list[dict]) -> DataFrame:
    defaults = {"description": None, "brand": None, "category": None, "attributes": None, "updated_at": NOON}
    return spark.createDataFrame([tuple({**defaults, **r}.get(c) for c in CATALOG.columns) for r in rows],
                                 CATALOG.schema)


def events_frame(spark: SparkSession, rows: list[dict]) -> DataFrame:
    defaults = {"client_id": "c1", "session_id": "s1", "timestamp": NOON, "action_name": "impression",
                "object_id": "P1", "position": 1, "ds": DAY}
    return spark.createDataFrame([tuple({**defaults, **r}.get(c) for c in QUERY_LOG.columns) for r in rows],
                                 QUERY_LOG.schema)


def fingerprint(query_norm: str, product_text: str) -> str:
    return hashlib.sha256(f"{query_norm}\u001f{product_text}".encode()).hexdigest()[:32]


# ---- relevance.pairs ------------------------------------------------------------------------------------------

def test_catalog_texts_latest_updated_at_wins_and_older_duplicates_are_rejected(spark):
    catalog = catalog_frame(spark, [
        {"product_id": "P1", "title": "New Sofa", "brand": "Acme", "updated_at": dt.datetime(2025, 1, 5, tzinfo=UTC)},
        {"product_id": "P1", "title": "Old Sofa", "brand": "Acme", "updated_at": dt.datetime(2025, 1, 1, tzinfo=UTC)},
        {"product_id": "P2", "title": "Oak Desk"},
        # a row without updated_at loses to a dated one (nulls sort last)
        {"product_id": "P3", "title": "A Lamp", "updated_at": None},
        {"product_id": "P3", "title": "Z Lamp", "updated_at": dt.datetime(2024, 6, 1, tzinfo=UTC)},
    ])
    texts, rejected = catalog_texts(catalog, PairsSettings())
    assert sorted(texts.columns) == ["product_id", "product_text"]
    assert dict(texts.collect()) == {"P1": "new sofa | brand: acme", "P2": "oak desk", "P3": "z lamp"}
    assert rejected.columns == ["reason", "raw"]
    rows = sorted((r.reason, json.loads(r.raw)["product_id"], json.loads(r.raw)["title"]) for r in rejected.collect())
    assert rows == [(DUPLICATE, "P1", "Old Sofa"), (DUPLICATE, "P3", "A Lamp")]


def test_catalog_texts_leave_out_null_parts_and_cut_at_max_words(spark):
    catalog = catalog_frame(spark, [
        {"product_id": "P1", "title": "Gray Sofa", "category": "Home > Living Room > Sofas",
         "attributes": {"weight": "10kg", "Color": "Gray"}, "description": "a soft sofa"},
        {"product_id": "P2", "title": "Oak Desk", "brand": "Acme", "description": None},
        {"product_id": "P3", "title": "Plain Lamp", "description": "never part of the text by default"},
        {"product_id": "P4", "title": "one two three four five six", "brand": "Acme"},
    ])
    texts, rejected = catalog_texts(catalog, PairsSettings(product_text_max_words=4))
    assert dict(texts.collect()) == {
        "P1": "gray sofa | category:",  # the first 4 words of the whole text ("|" counts as a word)
        "P2": "oak desk | brand:",
        "P3": "plain lamp",
        "P4": "one two three four",
    }
    assert rejected.count() == 0
    texts64, _ = catalog_texts(catalog, PairsSettings())
    assert {r.product_id: r.product_text for r in texts64.collect()}["P1"] == "gray sofa | category: living room > sofas | color: gray, weight: 10kg"
    # with pairs.product_text_description_words the description's first words follow the category; a null one is left out
    described, _ = catalog_texts(catalog, PairsSettings(product_text_description_words=2))
    assert dict(described.collect()) == {
        "P1": "gray sofa | category: living room > sofas | a soft | color: gray, weight: 10kg",
        "P2": "oak desk | brand: acme",
        "P3": "plain lamp | never part",
        "P4": "one two three four five six | brand: acme",
    }


def test_classify_events_gives_each_problem_its_reason(spark):
    events = events_frame(spark, [
        {"query_id": "ok", "user_query": "Gray  SOFA!"},
        {"query_id": "ok", "user_query": "Gray  SOFA!"},                                  # an exact copy
        {"query_id": "click", "user_query": "gray sofa", "action_name": "click", "position": None},
        {"query_id": "unknown", "user_query": "gray sofa", "object_id": "NOPE"},
        {"query_id": "pos0", "user_query": "gray sofa", "position": 0},
        {"query_id": "posnull", "user_query": "gray sofa", "position": None},
        {"query_id": "far", "user_query": "gray sofa", "action_name": "click", "position": 51},
        {"query_id": "blank", "user_query": "?!"},
        {"query_id": "view", "user_query": "gray sofa", "action_name": "view"},
        {"query_id": None, "user_query": "gray sofa"},
        {"query_id": "nextday", "user_query": "gray sofa", "timestamp": dt.datetime(2025, 1, 8, 0, 0, 1, tzinfo=UTC)},
    ])
    texts = spark.createDataFrame([("P1", "gray sofa | brand: acme")], "product_id string, product_text string")
    rows = classify_events(events, texts, max_position=50).collect()
    reasons: dict[str | None, list[str | None]] = {}
    for r in rows:
        reasons.setdefault(r.query_id, []).append(r.reason)
    assert {k: sorted(v, key=str) for k, v in reasons.items()} == {
        "ok": [None, "exact duplicate of another event"],  # sorted by str: "None" first
        "click": [None],
        "unknown": ["product not in catalog"],
        "pos0": ["impression without a valid position"],
        "posnull": ["impression without a valid position"],
        "far": ["implausible position 51 (above 50)"],
        "blank": ["empty query after normalization"],
        "view": ["unsupported action_name 'view'"],
        None: ["missing query_id"],
        "nextday": ["timestamp outside the event's ds (UTC date)"],
    }
    ok = next(r for r in rows if r.query_id == "ok" and r.reason is None)
    assert (ok.query_norm, ok.product_text) == ("gray sofa", "gray sofa | brand: acme")
    assert json.loads(ok.raw)["user_query"] == "Gray  SOFA!"


def test_query_segments_cut_by_cumulative_search_share(spark):
    searches = {"sofa": 12, "desk": 5, "lamp": 2, "rug": 1}  # shares before each: 0, 0.60, 0.85, 0.95
    rows = []
    for query, n in searches.items():
        for i in range(n):
            rows.append((query, f"{query}-{i}", "impression", "P1", 1, "t"))
            if i % 2 == 0:  # a second event of the same search is not a second search
                rows.append((query, f"{query}-{i}", "click", "P1", 1, "t"))
    segments = query_segments(spark.createDataFrame(rows, EVENTS_OK), head_share=0.5, torso_share=0.3)
    assert {r.query_norm: (r.query_searches, r.segment) for r in segments.collect()} == {
        "sofa": (12, "head"), "desk": (5, "torso"), "lamp": (2, "tail"), "rug": (1, "tail"),
    }


def test_aggregate_behavior_counts_mean_position_and_smoothed_ctr(spark):
    rows = [
        ("sofa", "q1", "impression", "P1", 1, "gray sofa"),
        ("sofa", "q2", "impression", "P1", 3, "gray sofa"),
        ("sofa", "q1", "click", "P1", 1, "gray sofa"),
        ("sofa", "q1", "add_to_cart", "P1", 1, "gray sofa"),
        ("sofa", "q1", "purchase", "P1", 1, "gray sofa"),
        ("sofa", "q1", "impression", "P2", 2, "red sofa"),
        ("sofa", "q2", "impression", "P2", 2, "red sofa"),
        ("sofa", "q3", "impression", "P2", 5, "red sofa"),
        ("desk", "q4", "impression", "P3", 4, "oak desk"),
        ("desk", "q4", "click", "P3", 9, "oak desk"),  # a click's position is not an impression's
    ]
    pairs = aggregate_behavior(spark.createDataFrame(rows, EVENTS_OK), prior_weight=3.0)
    # the day: 6 impressions, 2 clicks -> day CTR 1/3; w * day CTR = 1
    got = {(r.query_norm, r.product_id): r for r in pairs.collect()}
    assert set(got) == {("sofa", "P1"), ("sofa", "P2"), ("desk", "P3")}
    counts = {k: (r.impressions, r.clicks, r.carts, r.purchases, r.mean_position, r.product_text) for k, r in got.items()}
    assert counts == {
        ("sofa", "P1"): (2, 1, 1, 1, 2.0, "gray sofa"),
        ("sofa", "P2"): (3, 0, 0, 0, 3.0, "red sofa"),
        ("desk", "P3"): (1, 1, 0, 0, 4.0, "oak desk"),
    }
    assert got[("sofa", "P1")].ctr_smoothed == pytest.approx((1 + 1) / (2 + 3))   # 0.4
    assert got[("sofa", "P2")].ctr_smoothed == pytest.approx((0 + 1) / (3 + 3))   # 1/6
    assert got[("desk", "P3")].ctr_smoothed == pytest.approx((1 + 1) / (1 + 3))   # 0.5


def test_aggregate_behavior_without_impressions_has_a_zero_prior(spark):
    rows = [("sofa", "q1", "click", "P1", None, "t"), ("sofa", "q2", "click", "P1", None, "t")]
    [pair] = aggregate_behavior(spark.createDataFrame(rows, EVENTS_OK), prior_weight=4.0).collect()
    assert (pair.impressions, pair.clicks, pair.mean_position) == (0, 2, None)
    assert pair.ctr_smoothed == pytest.approx(2 / 4)  # (2 + 4 * 0) / (0 + 4)


def test_judged_candidate_pairs_one_zero_behavior_row_per_pair(spark):
    judged_ok = spark.createDataFrame(
        [("sofa", "P1", "gray sofa", 2), ("sofa", "P1", "gray sofa", 2), ("sofa", "P2", "red sofa", 0),
         ("desk", "P1", "gray sofa", 1)],
        "query_norm string, product_id string, product_text string, grade long")
    candidates = judged_candidate_pairs(judged_ok)
    assert candidates.columns == ["query_norm", "product_id", "impressions", "clicks", "carts", "purchases",
                                  "mean_position", "product_text", "ctr_smoothed", "source"]
    assert sorted(tuple(r) for r in candidates.collect()) == [
        ("desk", "P1", 0, 0, 0, 0, None, "gray sofa", None, "judgment"),
        ("sofa", "P1", 0, 0, 0, 0, None, "gray sofa", None, "judgment"),
        ("sofa", "P2", 0, 0, 0, 0, None, "red sofa", None, "judgment"),
    ]
    types = dict(candidates.dtypes)
    assert (types["impressions"], types["mean_position"], types["ctr_smoothed"]) == ("bigint", "double", "double")


def test_finish_pairs_adds_fingerprint_run_and_ds(spark):
    before = [c for c in PAIRS.columns if c not in ("text_fingerprint", "run_id", "ds")]
    base = {"impressions": 1, "clicks": 0, "carts": 0, "purchases": 0, "mean_position": 1.0, "ctr_smoothed": 0.1,
            "query_searches": 1, "segment": "head", "source": "log"}
    rows = [
        {"query_norm": "gray sofa", "product_id": "P1", "product_text": "gray sofa"},
        {"query_norm": "gray sofa", "product_id": "P2", "product_text": "gray sofa"},   # same query and text as P1
        {"query_norm": "gray sofa", "product_id": "P3", "product_text": "grey sofa"},
        {"query_norm": "gray", "product_id": "P4", "product_text": "sofa gray sofa"},   # same characters, other cut
    ]
    frame = spark.createDataFrame([tuple({**base, **r}[c] for c in before) for r in rows],
                                  ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in PAIRS.schema.fields
                                            if f.name in before))
    finished = finish_pairs(frame.select(*reversed(before), F.lit("dropped").alias("extra")), DAY, "run-1")
    assert finished.columns == PAIRS.columns
    got = {r.product_id: r for r in finished.collect()}
    assert {(r.run_id, r.ds) for r in got.values()} == {("run-1", DAY)}
    prints = {pid: r.text_fingerprint for pid, r in got.items()}
    assert all(p is not None and len(p) == 32 for p in prints.values())
    assert prints["P1"] == prints["P2"] == fingerprint("gray sofa", "gray sofa")
    assert prints["P3"] == fingerprint("gray sofa", "grey sofa") != prints["P1"]
    assert prints["P4"] == fingerprint("gray", "sofa gray sofa") != prints["P1"]
    assert (got["P1"].segment, got["P1"].impressions, got["P1"].ctr_smoothed) == ("head", 1, 0.1)


# ---- relevance.scoring ----------------------------------------------------------------------------------------

def test_grade_from_score_highest_threshold_reached(spark):
    scores = spark.createDataFrame([(0.1,), (0.5,), (0.9,), (0.3,), (0.7,), (0.2999,), (0.0,), (1.0,)], "score double")
    thresholds = {"2": 0.7, "1": 0.3}  # in any order
    graded = scores.select("score", grade_from_score(F.col("score"), thresholds).alias("grade"))
    assert dict(graded.collect()) == {0.1: 0, 0.5: 1, 0.9: 2, 0.3: 1, 0.7: 2, 0.2999: 0, 0.0: 0, 1.0: 2}
    assert dict(graded.dtypes)["grade"] == "bigint"
    shifted = scores.select("score", grade_from_score(F.col("score"), {"2": 0.7}, lowest_grade=1).alias("grade"))
    assert dict(shifted.collect()) == {0.1: 1, 0.5: 1, 0.9: 2, 0.3: 1, 0.7: 2, 0.2999: 1, 0.0: 1, 1.0: 2}


def test_split_reusable_reuses_known_fingerprints_once(spark):
    pairs_ok = spark.createDataFrame([("sofa", "P1", "f1"), ("sofa", "P2", "f2"), ("desk", "P3", "f3")],
                                     "query_norm string, product_id string, text_fingerprint string")
    at = dt.datetime(2025, 1, 6, 3, tzinfo=UTC)
    previous = spark.createDataFrame(
        [("f1", 0.8, at), ("f1", 0.8, at), ("f2", 0.4, at), ("f9", 0.1, at)],  # f1 twice, f9 not in the pairs
        "text_fingerprint string, score double, scored_at timestamp")
    to_score, reusable = split_reusable(pairs_ok, previous)
    assert reusable is not None
    assert [(r.product_id, r.text_fingerprint) for r in to_score.collect()] == [("P3", "f3")]
    local_at = dt.datetime.fromtimestamp(at.timestamp())  # how collect() hands back a timestamp
    assert sorted((r.product_id, r.previous_score, r.previous_scored_at) for r in reusable.collect()) == [
        ("P1", 0.8, local_at), ("P2", 0.4, local_at)]


def test_split_reusable_without_previous_scores_everything(spark):
    pairs_ok = spark.createDataFrame([("sofa", "P1", "f1")], "query_norm string, product_id string, text_fingerprint string")
    to_score, reusable = split_reusable(pairs_ok, None)
    assert reusable is None
    assert to_score is pairs_ok


def test_classify_pairs_reasons_first_one_first(spark):
    pairs = spark.createDataFrame(
        [("", "P1", "text"), ("q", None, "text"), ("q", "P2", " \u00a0\u200b "), ("q", "P3", "text"), (None, None, None)],
        "query_norm string, product_id string, product_text string")
    rows = classify_pairs(pairs).collect()
    assert [(r.query_norm, r.product_id, r.reason) for r in rows] == [
        ("", "P1", "empty query_norm"),
        ("q", None, "missing product_id"),
        ("q", "P2", "empty product_text"),
        ("q", "P3", None),
        (None, None, "empty query_norm"),
    ]
    assert json.loads(rows[1].raw) == {"query_norm": "q", "product_text": "text"}  # to_json leaves nulls out
    assert json.loads(rows[3].raw) == {"query_norm": "q", "product_id": "P3", "product_text": "text"}


def test_unusable_scores_counts_null_nan_and_outside_0_1(spark):
    scores = [0.0, 0.5, 1.0, None, float("nan"), -0.01, 1.01, float("inf"), float("-inf")]
    frame = spark.createDataFrame([(s,) for s in scores], "score double")
    assert unusable_scores(frame) == 6
    assert unusable_scores(frame.where(F.col("score").between(0, 1))) == 0


# ---- relevance.frames -----------------------------------------------------------------------------------------

def test_whole_queries_up_to_keeps_whole_queries_within_the_cap(spark):
    rows = spark.createDataFrame([(f"q{i}", f"P{j}") for i in range(10) for j in range(2)],  # 10 queries x 2 rows
                                 "query_norm string, product_id string")
    kept = whole_queries_up_to(rows, 7, seed=7).collect()
    per_query: dict[str, int] = {}
    for r in kept:
        per_query[r.query_norm] = per_query.get(r.query_norm, 0) + 1
    assert len(kept) == 6 and len(per_query) == 3 and set(per_query.values()) == {2}  # 2+2+2 fit, a 4th would not
    assert whole_queries_up_to(rows, 1, seed=7).count() == 0     # a query is never split
    assert whole_queries_up_to(rows, 20, seed=7).count() == 20   # everything fits


def test_whole_queries_up_to_same_seed_same_queries(spark):
    sizes = {"a": 1, "b": 3, "c": 2, "d": 4, "e": 1, "f": 2, "g": 3, "h": 1}  # 17 rows
    data = [(q, f"{q}{j}") for q, n in sizes.items() for j in range(n)]
    rows = spark.createDataFrame(data, "query_norm string, product_id string")
    shuffled = spark.createDataFrame(list(reversed(data)), "query_norm string, product_id string").repartition(3)

    def queries(frame: DataFrame) -> tuple[set[str], int]:
        kept = frame.collect()
        return {r.query_norm for r in kept}, len(kept)

    first, n_first = queries(whole_queries_up_to(rows, 9, seed=3))
    assert 0 < n_first <= 9 and n_first == sum(sizes[q] for q in first)  # whole queries only
    assert queries(whole_queries_up_to(rows, 9, seed=3)) == (first, n_first)
    assert queries(whole_queries_up_to(shuffled, 9, seed=3)) == (first, n_first)  # row order does not matter


def test_rejects_frame_columns_and_values(spark):
    rejected = spark.createDataFrame([("bad row", '{"a":1}', "ignored")], "reason string, raw string, other string")
    frame = rejects_frame(rejected, "build_pairs", "query_log", "run-9", DAY)
    assert frame.columns == REJECTS.columns
    [row] = frame.collect()
    assert (row.job, row.source_table, row.reason, row.raw, row.run_id, row.ds) == (
        "build_pairs", "query_log", "bad row", '{"a":1}', "run-9", DAY)
    assert isinstance(row.rejected_at, dt.datetime)


def test_with_normalized_query_adds_one_normalized_value_per_row(spark):
    frame = spark.createDataFrame(
        [(1, "Gray  SOFA!"), (2, "gray sofa"), (3, "Gray  SOFA!"), (4, None), (5, "\uff34\uff0d\uff53\uff48\uff49\uff52\uff54"),
         (6, "  O'Neill's  JACKET!! "), (7, "?!")],
        "id int, user_query string")
    got = with_normalized_query(frame, "user_query")
    assert sorted(got.columns) == ["id", "query_norm", "user_query"]
    assert dict(got.select("id", "query_norm").collect()) == {
        1: "gray sofa", 2: "gray sofa", 3: "gray sofa", 4: None, 5: "t-shirt", 6: "o'neill's jacket", 7: ""}
    named = with_normalized_query(frame, "user_query", out_column="q")
    assert named.where(F.col("id") == 1).select("q").first() == ("gray sofa",)


def test_is_blank_counts_unicode_whitespace(spark):
    values = [None, "", " ", "\t\n\r", "\u00a0", "\u200b", "\u3000\u2007", "\ufeff\u2060", " \u00a0\u200b ",
              "a", " a\u00a0", "\u200ba", "-"]
    frame = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, v string")
    blank = dict(frame.select("i", is_blank("v").alias("blank")).collect())
    assert [values[i] for i in sorted(blank) if blank[i]] == values[:9]


def test_plan_day_scoring_splits_a_day_three_ways(spark, tiny_model_root):
    """The day's plan in the library: a pair with no query is rejected, a pair whose text this version scored before
    keeps its earlier score, the rest are scored by the model now; every pair ends up in exactly one place."""
    from relevance.scoring import plan_day_scoring, scorer_spec
    from relevance.settings import ScoringSettings
    from udfs.model import load_model_version, locate_model_version

    model_dir = locate_model_version(str(tiny_model_root), "tiny-test", {})
    card = load_model_version(model_dir).card
    pairs = spark.createDataFrame(
        [("sofa", "P1", "gray sofa", "f1", "2025-01-07"), ("sofa", "P2", "oak desk", "f2", "2025-01-07"),
         ("", "P3", "lamp", "f3", "2025-01-07")],
        "query_norm string, product_id string, product_text string, text_fingerprint string, ds string")
    at = dt.datetime(2025, 1, 6, 3, tzinfo=UTC)
    previous = spark.createDataFrame([("f2", 0.25, at)], "text_fingerprint string, score double, scored_at timestamp")
    spec = scorer_spec(spark, ScoringSettings(), str(model_dir), {}, None)
    day = plan_day_scoring(pairs, previous, spec, card, "fp32", "run-1", 2)
    assert day.reused is not None
    assert [r.product_id for r in day.rejected.collect()] == ["P3"]
    assert [(r.product_id, r.score, r.reused) for r in day.reused.collect()] == [("P2", 0.25, True)]
    fresh = day.fresh.collect()
    assert [(r.product_id, r.reused, r.model_version) for r in fresh] == [("P1", False, card.version)]
    assert 0.0 <= fresh[0].score <= 1.0
    assert sorted(r.product_id for r in day.relevance.collect()) == ["P1", "P2"]
