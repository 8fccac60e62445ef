"""Catalog-wide retrieval with the serving bi-encoder, without I/O: `catalog_topk`.

For the audited queries of a day (every judged query, and the day's `audit.retrieval.queries` most searched logged
queries: head, then torso, then tail), the model's top-k products over the **whole catalog** by the exact dot
product of the normalized embeddings that `score`'s embedding path keys in `embeddings` (the same text
fingerprints, model version and precision: texts the table lacks are embedded and appended).

How it runs: the queries' vectors (a few thousand x d floats) are collected once and broadcast; the catalog's vectors
stay on executors, split into partitions, and each task folds its Arrow batches into every query's running top-k
(relevance.topk, numpy); a window over the tasks' top-k keeps the global top-k. The driver holds the query matrix and
nothing that grows with the catalog; no score matrix is ever materialized beyond one (query block x batch) per task.

The retrieval score (`score`, what the rank orders by) is the cosine of the two vectors: the bi-encoder's dense
part. A version whose card adds a lexical term (BM25 x weight) ranks the catalog by the dense part only, and each
retrieved pair also gets `relevance_score`, its calibrated score as `relevance` would give it (cosine + the lexical
term, Platt), computed on the k rows. A cross-encoder has no embeddings: the job skips it (one line).

shown_by_engine: the day's `pairs` hold (query_norm, product_id) with impressions > 0, i.e. the production engine
showed the product for that query in at least one search of the day. in_pairs: the day's pairs hold it at all (also
clicked-only rows and judged candidates, which the engine may never have shown).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from relevance.embeddings import PRODUCT, QUERY, calibrated, text_key, with_lexical_term
from relevance.frames import with_normalized_query
from relevance.topk import RunningTopK
from udfs.card import ModelCard
from udfs.lexical import Bm25Stats

SEGMENT_ORDER = {"head": 0, "torso": 1, "tail": 2}
TOPK_TYPE = StructType([StructField("qid", LongType()), StructField("product_id", StringType()),
                        StructField("score", DoubleType())])


def audited_queries(pairs: DataFrame, judgments: DataFrame | None, logged: int) -> DataFrame:
    """The queries retrieved for: (query_norm, segment, query_searches, judged), one row each. The day's `logged`
    most searched queries with an impression (head first, then torso, then tail; by searches desc, then query_norm),
    and every judged query (its `query` normalized as build_pairs does), logged that day or not (segment null and
    0 searches when not)."""
    day = (pairs.where(F.col("impressions") > 0).groupBy("query_norm")
           .agg(F.first("segment", ignorenulls=True).alias("segment"),
                F.max(F.coalesce("query_searches", F.lit(0))).alias("query_searches")))
    order = F.coalesce(*[F.when(F.col("segment") == s, F.lit(i)) for s, i in SEGMENT_ORDER.items()], F.lit(3))
    top = (day.orderBy(order, F.col("query_searches").desc(), F.col("query_norm")).limit(logged)
           .select("query_norm") if logged > 0 else None)
    chosen = top
    if judgments is not None:
        judged = (with_normalized_query(judgments.select("query"), "query").select("query_norm")
                  .where(F.col("query_norm").isNotNull() & (F.length("query_norm") > 0)).distinct()
                  .withColumn("judged", F.lit(True)))
        chosen = judged if top is None else top.join(judged, "query_norm", "full")
    if chosen is None:
        return pairs.sparkSession.createDataFrame([], "query_norm string, segment string, query_searches long, "
                                                      "judged boolean")
    return (chosen.join(day, "query_norm", "left")
            .select("query_norm", "segment", F.coalesce("query_searches", F.lit(0)).cast("long").alias("query_searches"),
                    F.coalesce(F.col("judged") if judgments is not None else F.lit(False), F.lit(False)).alias("judged")))


def retrieval_texts(queries: DataFrame, products: DataFrame) -> DataFrame:
    """The distinct texts to look up in (or add to) `embeddings`: (kind, text_fingerprint, text), keyed as
    relevance.embeddings.day_texts keys a day's pairs (a query is its query_norm, a product its product_text)."""
    q = queries.select(F.lit(QUERY).alias("kind"), F.col("query_norm").alias("text")).distinct()
    p = products.select(F.lit(PRODUCT).alias("kind"), F.col("product_text").alias("text")).distinct()
    return q.unionByName(p).withColumn("text_fingerprint", text_key(F.col("text")))


def keyed_vectors(frame: DataFrame, text_column: str, kind: str, vectors: DataFrame) -> DataFrame:
    """`frame` with the `vector` of its `text_column` (inner join: a text without a vector is dropped)."""
    mine = vectors.where(F.col("kind") == kind).select(F.col("text_fingerprint").alias("_key"), "vector")
    return frame.withColumn("_key", text_key(F.col(text_column))).join(mine, "_key").drop("_key")


def query_matrix(query_vectors: DataFrame) -> tuple[list[str], np.ndarray]:
    """The audited queries' vectors on the driver (query_norm order): as many rows as queries audited (bounded by
    audit.retrieval.queries + the judged queries), never the catalog."""
    rows = query_vectors.select("query_norm", "vector").orderBy("query_norm").collect()
    names = [r.query_norm for r in rows]
    matrix = np.array([r.vector for r in rows], dtype=np.float32) if rows else np.zeros((0, 0), np.float32)
    return names, matrix


def _partition_top_k(queries, k: int, query_block: int):
    """The mapInArrow function of a task: its products' Arrow batches -> the running top-k of every query."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        top = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            top = top or RunningTopK(queries.value, k, query_block)
            vectors = batch.column("vector")
            flat = vectors.flatten().to_numpy(zero_copy_only=False)
            top.add(batch.column("product_id").to_numpy(zero_copy_only=False),
                    flat.reshape(batch.num_rows, len(flat) // batch.num_rows))
        if top is None:
            return
        for qid, ids, scores in top.result_frames():
            yield pa.RecordBatch.from_arrays([pa.array(qid, pa.int64()), pa.array(ids, pa.string()),
                                              pa.array(scores, pa.float64())], names=["qid", "product_id", "score"])

    return run


def top_k_over_catalog(spark: SparkSession, matrix: np.ndarray, product_vectors: DataFrame, k: int,
                       query_block: int, partitions: int) -> DataFrame:
    """(qid, product_id, score, rank) of each query (a row of `matrix`, qid its index) over every product of
    `product_vectors` (product_id, vector): per task a running top-k (relevance.topk), then a window keeps the
    global top-k by score desc, then product_id asc."""
    broadcast = spark.sparkContext.broadcast(np.ascontiguousarray(matrix, dtype=np.float32))
    vectors = product_vectors.select("product_id", "vector")
    # more partitions than tasks: merged without a shuffle (the catalog's vectors are not moved); fewer: spread
    vectors = (vectors.coalesce(partitions) if vectors.rdd.getNumPartitions() >= partitions
               else vectors.repartition(partitions))
    per_task = vectors.mapInArrow(_partition_top_k(broadcast, k, query_block), TOPK_TYPE)
    best = Window.partitionBy("qid").orderBy(F.col("score").desc(), F.col("product_id"))
    return per_task.withColumn("rank", F.row_number().over(best).cast("long")).where(F.col("rank") <= k)


def engine_flags(pairs: DataFrame) -> DataFrame:
    """(query_norm, product_id, shown_by_engine, in_pairs) of the day's pairs: shown = impressions > 0."""
    return (pairs.groupBy("query_norm", "product_id")
            .agg(F.max(F.coalesce(F.col("impressions"), F.lit(0)) > 0).alias("shown_by_engine"))
            .withColumn("in_pairs", F.lit(True)))


def catalog_topk_rows(top: DataFrame, query_names: list[str], queries: DataFrame, products: DataFrame,
                      pairs: DataFrame, card: ModelCard, lexical: Bm25Stats | None, precision: str, k: int,
                      run_id: str, ds: str) -> DataFrame:
    """The `catalog_topk` rows: the retrieved (qid, product_id, score, rank) with the query's name and day
    (`query_names[qid]`, `queries`), the engine's flags (engine_flags of `pairs`) and the pair's calibrated
    `relevance_score` (cosine + the card's lexical weight x BM25 of the query and the product text, Platt)."""
    spark = top.sparkSession
    names = spark.createDataFrame([(i, q) for i, q in enumerate(query_names)], "qid long, query_norm string")
    rows = (top.join(F.broadcast(names), "qid").drop("qid")
            .join(queries, "query_norm", "left")
            .join(engine_flags(pairs), ["query_norm", "product_id"], "left")
            .join(products.select("product_id", "product_text"), "product_id", "left"))
    logit = with_lexical_term(F.col("score"), card, lexical)
    return rows.select(
        "query_norm", "product_id", "rank", "score", calibrated(logit, card).alias("relevance_score"),
        F.coalesce("shown_by_engine", F.lit(False)).alias("shown_by_engine"),
        F.coalesce("in_pairs", F.lit(False)).alias("in_pairs"),
        "segment", "query_searches", F.coalesce("judged", F.lit(False)).alias("judged"),
        F.lit(card.version).alias("model_version"), F.lit(precision).alias("precision"),
        F.lit(int(k)).cast("long").alias("k"), F.lit(run_id).alias("run_id"), F.lit(ds).alias("ds"),
    )
