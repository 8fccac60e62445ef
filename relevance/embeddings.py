"""Scoring a day with a bi-encoder through the `embeddings` table, without I/O.

A bi-encoder's logit of a pair is the cosine of the query's and the product text's embeddings (mean-pooled,
L2-normalized: a dot product), plus the card's lexical weight x BM25 under the version's frozen statistics; the score
is that logit Platt-calibrated. The pair path (relevance.scoring) embeds the texts of each task's pairs again every
night. Here the day's distinct texts are looked up in `embeddings` (keyed by model version, precision, kind and the
text's fingerprint), only the ones it lacks are embedded (a pandas UDF over those texts alone), and every pair is
scored by joining its two vectors and taking their dot product (a numpy pandas UDF): the same numbers as the pair path (the
vectors are computed by the same code, `udfs.scorer.embed_texts`), with each text embedded once per version.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from relevance.scoring import DayScoring, classify_pairs, relevance_rows, split_reusable
from udfs.card import BI_ENCODER, ModelCard
from udfs.lexical import Bm25Stats
from udfs.model import ModelError
from udfs.runtime import batch_budget
from udfs.spark_udf import EmbedCounters, ScorerSpec, dot_udf, make_bm25_pair_udf, make_embed_udf

QUERY, PRODUCT = "query", "product"  # embeddings.kind
PATHS = ("pairs", "embeddings")
# The dot product: a numpy pandas UDF (the default: 1.2x as fast as Spark's higher-order functions on a 100k-pair day
# of 384-d vectors, join included, bench/embeddings_bench.py; 1.5x on the dot alone), or Spark's higher-order
# functions (interpreted lambdas, no codegen).
DOTS = ("pandas", "spark")


def scoring_path(configured: str, card: ModelCard) -> str:
    """The path a version scores on: `auto` is `embeddings` for a bi-encoder and `pairs` for a cross-encoder; a
    cross-encoder asked for `embeddings` is a ModelError (it reads each pair whole: it has no embeddings)."""
    if configured == "auto":
        return "embeddings" if card.kind == BI_ENCODER else "pairs"
    if configured == "embeddings" and card.kind != BI_ENCODER:
        raise ModelError(f"model {card.version} is a {card.kind}: scoring.path=embeddings needs a bi-encoder "
                         "(use pairs or auto)")
    if configured not in PATHS:
        raise ValueError(f"unknown scoring path {configured!r}: expected auto or one of {', '.join(PATHS)}")
    return configured


def text_key(text: Column) -> Column:
    """The fingerprint of a text as `embeddings` keys it: the first 32 hex characters of the SHA-256 of its exact
    UTF-8 bytes. (The tokenizer and max_length belong to the model version, which is part of the key.)"""
    return F.substring(F.sha2(text, 256), 1, 32)


def day_texts(pairs: DataFrame) -> DataFrame:
    """The distinct texts of some pairs, once per kind: (kind, text_fingerprint, text); a query is its
    `query_norm`, a product its pair's `product_text` (what the pair path embeds)."""
    queries = pairs.select(F.lit(QUERY).alias("kind"), F.col("query_norm").alias("text")).distinct()
    products = pairs.select(F.lit(PRODUCT).alias("kind"), F.col("product_text").alias("text")).distinct()
    return queries.unionByName(products).withColumn("text_fingerprint", text_key(F.col("text")))


def stored_vectors(table: DataFrame | None, model_version: str, precision: str, texts: DataFrame) -> DataFrame | None:
    """The table's vectors of `texts` for this version and precision, one per (kind, text_fingerprint) (two
    concurrent runs may both have appended a text: either row is the same vector), or None without a table."""
    if table is None:
        return None
    mine = table.where((F.col("model_version") == model_version) & (F.col("precision") == precision))
    return (mine.select("kind", "text_fingerprint", "vector")
            .join(texts.select("kind", "text_fingerprint"), ["kind", "text_fingerprint"], "left_semi")
            .dropDuplicates(["kind", "text_fingerprint"]))


def new_vector_rows(missing: DataFrame, spec: ScorerSpec, model_version: str, precision: str, run_id: str, ds: str,
                    partitions: int, counters: EmbedCounters | None = None) -> DataFrame:
    """`embeddings` rows of the texts the table lacks, embedded lazily by the pandas UDF (spread over `partitions`
    tasks, on the device the pair path would use)."""
    embedded = missing.repartition(partitions).withColumn("_e", make_embed_udf(spec, counters)(F.col("text")))
    return embedded.select(
        F.lit(model_version).alias("model_version"),
        F.lit(precision).alias("precision"),
        "kind",
        "text_fingerprint",
        F.col("_e.vector").alias("vector"),
        F.length("text").cast("long").alias("text_length"),
        F.col("_e.tokens").alias("tokens"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("embedded_at"),
        F.lit(ds).alias("ds"),
    )


def vectors_of_texts(texts: DataFrame, table: DataFrame | None, spec: ScorerSpec, model_version: str, precision: str,
                     run_id: str, ds: str, partitions: int,
                     counters: EmbedCounters | None = None) -> tuple[DataFrame, DataFrame]:
    """The vectors of `texts` (kind, text_fingerprint, text): the `embeddings` rows of those the table lacks, embedded
    lazily (persist them: they run the model), and (kind, text_fingerprint, vector) of every text, stored or new."""
    stored = stored_vectors(table, model_version, precision, texts)
    missing = texts if stored is None else texts.join(stored.select("kind", "text_fingerprint"),
                                                       ["kind", "text_fingerprint"], "left_anti")
    new_vectors = new_vector_rows(missing, spec, model_version, precision, run_id, ds, partitions, counters)
    fresh = new_vectors.select("kind", "text_fingerprint", "vector")
    return new_vectors, (fresh if stored is None else stored.unionByName(fresh))


def dot_product(left: str, right: str, how: str = "pandas") -> Column:
    """The dot product of two array<float> columns in float64: Spark's higher-order functions (each product in
    double, summed in order) or the numpy pandas UDF `dot_udf`."""
    if how == "pandas":
        return dot_udf(F.col(left), F.col(right))
    if how != "spark":
        raise ValueError(f"unknown dot product {how!r}: expected one of {', '.join(DOTS)}")
    products = F.zip_with(F.col(left), F.col(right), lambda x, y: x.cast("double") * y.cast("double"))
    return F.aggregate(products, F.lit(0.0).cast("double"), lambda total, x: total + x)


def pair_logits(pairs: DataFrame, vectors: DataFrame, card: ModelCard, lexical: Bm25Stats | None,
                dot: str = "pandas") -> DataFrame:
    """The pairs with their logit `_logit`: the dot product (`dot`) of their query's and product text's vectors (inner
    joins: a pair whose vector is missing is dropped, which the caller counts), plus the card's lexical weight x
    BM25 under `lexical`, as `udfs.scorer.score_logits` computes it."""
    query = vectors.where(F.col("kind") == QUERY).select(F.col("text_fingerprint").alias("_qkey"),
                                                          F.col("vector").alias("_qvec"))
    product = vectors.where(F.col("kind") == PRODUCT).select(F.col("text_fingerprint").alias("_pkey"),
                                                              F.col("vector").alias("_pvec"))
    joined = (pairs.withColumn("_qkey", text_key(F.col("query_norm"))).withColumn("_pkey", text_key(F.col("product_text")))
              .join(query, "_qkey").join(product, "_pkey"))
    logit = with_lexical_term(dot_product("_qvec", "_pvec", dot), card, lexical)
    return joined.withColumn("_logit", logit).drop("_qkey", "_pkey", "_qvec", "_pvec")


def with_lexical_term(cosine: Column, card: ModelCard, lexical: Bm25Stats | None) -> Column:
    """A pair's logit from its cosine: plus the card's lexical weight x BM25 of `query_norm` and `product_text`
    under `lexical` (the version's frozen statistics), as `udfs.scorer.score_logits` computes it."""
    if not card.lexical_weight:
        return cosine
    if lexical is None:
        raise ModelError(f"model {card.version}: its card adds BM25 x {card.lexical_weight:g} to the logit but it "
                         "was loaded without the BM25 statistics")
    return cosine + F.lit(float(card.lexical_weight)) * make_bm25_pair_udf(lexical)(F.col("query_norm"),
                                                                                   F.col("product_text"))


def calibrated(logit: Column, card: ModelCard) -> Column:
    """udfs.card.calibrate as a Spark expression: sigmoid(a * logit + b), in double."""
    a, b = card.platt
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-(F.lit(a) * logit + F.lit(b))))


@dataclass(frozen=True)
class EmbeddingDay:
    """A day planned on the embedding path, all lazy: `day` (fresh, reused and rejected rows, as the pair path's),
    `new_vectors` (the `embeddings` rows of the texts the table lacked: persist it, it runs the model),
    `to_score` (the pairs `day.fresh` must hold one row each of) and `texts` (the distinct texts of those pairs)."""

    day: DayScoring
    new_vectors: DataFrame
    to_score: DataFrame
    texts: DataFrame


def plan_day_embeddings(pairs: DataFrame, previous: DataFrame | None, table: DataFrame | None, spec: ScorerSpec,
                        card: ModelCard, lexical: Bm25Stats | None, precision: str, run_id: str, ds: str,
                        partitions: int, counters: EmbedCounters | None = None, dot: str = "pandas") -> EmbeddingDay:
    """The day's `relevance` rows from its pairs on the embedding path: rejected and reused exactly as on the pair
    path (relevance.scoring.plan_day_scoring); the rest scored from the vectors of `table` (the `embeddings` table,
    None when there is none yet) and of the texts it lacks, embedded now."""
    if card.kind != BI_ENCODER:
        raise ModelError(f"model {card.version} is a {card.kind}: only a bi-encoder scores through embeddings")
    classified = classify_pairs(pairs)
    to_score, reusable = split_reusable(classified.where(F.col("reason").isNull()), previous)
    texts = day_texts(to_score)
    new_vectors, vectors = vectors_of_texts(texts, table, spec, card.version, precision, run_id, ds, partitions,
                                            counters)
    scored = pair_logits(to_score, vectors, card, lexical, dot)
    fresh = relevance_rows(scored, calibrated(F.col("_logit"), card), F.current_timestamp(), False, card, precision,
                           run_id)
    reused = None if reusable is None else relevance_rows(
        reusable, F.col("previous_score"), F.col("previous_scored_at"), True, card, precision, run_id)
    return EmbeddingDay(DayScoring(fresh=fresh, reused=reused, rejected=classified.where(F.col("reason").isNotNull())),
                        new_vectors, to_score, texts)


def embedding_details(stats: dict[str, int], texts_embedded: dict[str, int], distinct_texts: int, spec: ScorerSpec,
                      device: str, precision: str, embed_seconds: float, join_dot_seconds: float) -> dict[str, object]:
    """What the embedding path did, for `runs.details`: texts of the day, embedded now (by kind) and found in the
    table, the UDF's padding and truncation, and the time of each step."""
    padded, embedded = stats["padded_tokens"], sum(texts_embedded.values())
    return {
        "scoring_path": "embeddings", "distinct_texts": distinct_texts, "texts_embedded": embedded,
        "queries_embedded": texts_embedded.get(QUERY, 0), "products_embedded": texts_embedded.get(PRODUCT, 0),
        "texts_from_table": distinct_texts - embedded, "udf_texts_embedded": stats["texts"],
        "embed_seconds": round(embed_seconds, 3), "join_dot_seconds": round(join_dot_seconds, 3),
        "padding_efficiency": round(stats["real_tokens"] / padded, 4) if padded else None,
        "truncation_rate": round(stats["truncated"] / stats["texts"], 4) if stats["texts"] else None,
        "threads_per_task": spec.threads_per_task, "precision": precision,
        "batch_tokens": batch_budget(device, spec.batch_tokens, spec.max_batch_rows)[0],
    }


# ----------------------------------------------------------------------------- retention
def expired_versions(table: DataFrame, runs: DataFrame | None, cutoff: dt.datetime) -> list[str]:
    """The model versions of `embeddings` whose vectors are past retention: no row embedded at or after `cutoff`
    and no score run of the version started at or after it (`runs`, None without that table). A handful of names:
    the only values that reach the driver."""
    recent = table.groupBy("model_version").agg(F.max("embedded_at").alias("_last"))
    if runs is not None:
        used = (runs.where((F.col("job") == "score") & F.col("model_version").isNotNull())
                .groupBy("model_version").agg(F.max("started_at").alias("_used")))
        recent = recent.join(used, "model_version", "left").select(
            "model_version", F.greatest(F.col("_last"), F.coalesce(F.col("_used"), F.col("_last"))).alias("_last"))
    expired = recent.where(F.col("_last").isNull() | (F.col("_last") < F.lit(cutoff)))
    return sorted(r.model_version for r in expired.select("model_version").collect())
