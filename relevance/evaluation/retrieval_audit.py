"""The retrieval audit's Spark side: `catalog_topk` of the day against the engine's shown set and the judgments,
aggregated per query in Spark (one row per query reaches the driver), and the queries with the largest gap for the
report (their never-shown products with titles: a few hundred rows at most).

Without a `catalog_topk` partition for the day (or with one of another model version than the audited one) there is
no retrieval row: the summary says why in one line (`RetrievalPart.note`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from relevance.evaluation.audit_rows import AuditSettings
from relevance.evaluation.retrieval_rows import retrieval_line, retrieval_rows
from relevance.frames import with_normalized_query


@dataclass(frozen=True)
class RetrievalPart:
    """The retrieval audit's rows (empty without catalog_topk), its summary line and the report's gap table."""

    rows: pd.DataFrame
    note: str
    gaps: pd.DataFrame = field(default_factory=pd.DataFrame)


def judged_relevant(judgments: DataFrame, relevant_min_grade: int) -> DataFrame:
    """(query_norm, product_id) of judged-relevant pairs (the query normalized as build_pairs does)."""
    return (with_normalized_query(judgments.where(F.col("grade") >= relevant_min_grade), "query")
            .select("query_norm", "product_id").distinct())


def retrieval_per_query(topk: DataFrame, pairs: DataFrame, relevant: DataFrame | None, top: int) -> DataFrame:
    """One row per query of catalog_topk: the counts retrieval_rows needs (see there)."""
    counts = topk.groupBy("query_norm").agg(
        F.first("segment", ignorenulls=True).alias("segment"), F.max("query_searches").alias("query_searches"),
        F.max(F.col("judged").cast("int")).cast("boolean").alias("judged"),
        F.sum((F.col("rank") <= top).cast("long")).alias("top_n"),
        F.sum(((F.col("rank") <= top) & ~F.col("shown_by_engine")).cast("long")).alias("top_unshown"),
        F.count(F.lit(1)).alias("topk_n"), F.sum(F.col("shown_by_engine").cast("long")).alias("topk_shown"))
    if relevant is None:
        return counts.select("*", *[F.lit(0).cast("long").alias(c) for c in ("relevant", "model_hits", "engine_hits")])
    queries = counts.select("query_norm")
    mine = relevant.join(queries, "query_norm", "left_semi")
    shown = pairs.where(F.col("impressions") > 0).select("query_norm", "product_id").distinct()
    n_relevant = mine.groupBy("query_norm").agg(F.count(F.lit(1)).alias("relevant"))
    model_hits = (mine.join(topk.select("query_norm", "product_id"), ["query_norm", "product_id"])
                  .groupBy("query_norm").agg(F.count(F.lit(1)).alias("model_hits")))
    engine_hits = (mine.join(shown, ["query_norm", "product_id"])
                   .groupBy("query_norm").agg(F.count(F.lit(1)).alias("engine_hits")))
    joined = counts.join(n_relevant, "query_norm", "left").join(model_hits, "query_norm", "left").join(
        engine_hits, "query_norm", "left")
    return joined.fillna(0, ["relevant", "model_hits", "engine_hits"])


def largest_gaps(topk: DataFrame, catalog: DataFrame | None, threshold: float, top: int, queries: int) -> pd.DataFrame:
    """The `queries` logged queries with the most products in the model's top `top` that the model calls relevant
    (relevance_score >= threshold) and the engine never showed (ties: more searches first), each such product with
    its title: query_norm, segment, query_searches, gap, rank, product_id, title, relevance_score."""
    if queries <= 0:
        return pd.DataFrame()
    missed = topk.where((F.col("rank") <= top) & ~F.col("shown_by_engine") & (F.col("relevance_score") >= threshold)
                        & (F.col("query_searches") > 0))
    worst = (missed.groupBy("query_norm").agg(F.count(F.lit(1)).alias("gap"), F.max("query_searches").alias("_s"))
             .orderBy(F.col("gap").desc(), F.col("_s").desc(), F.col("query_norm")).limit(queries).drop("_s"))
    rows = missed.join(F.broadcast(worst), "query_norm")
    if catalog is not None:
        titles = catalog.groupBy("product_id").agg(F.max("title").alias("title"))
        rows = rows.join(titles, "product_id", "left")
    else:
        rows = rows.withColumn("title", F.lit(None).cast("string"))
    frame = pd.DataFrame(rows.select("query_norm", "segment", "query_searches", "gap", "rank", "product_id", "title",
                                     "relevance_score").toPandas())
    return frame.sort_values(["gap", "query_searches", "query_norm", "rank"], ascending=[False, False, True, True],
                             ignore_index=True)


def retrieval_part(topk: DataFrame | None, pairs: DataFrame, judgments: DataFrame | None, catalog: DataFrame | None,
                   model_version: str, ds: str, settings: AuditSettings, top: int, report_queries: int
                   ) -> RetrievalPart:
    """The retrieval audit of the day: rows, the summary line and the report's gaps; with no catalog_topk partition
    (None or empty) or one of another model version, no rows and one line saying why."""
    if topk is None:
        return RetrievalPart(pd.DataFrame(), f"catalog retrieval: no catalog_topk partition for ds={ds} (run "
                                             "`retrieve`, which nightly runs when audit.retrieval.enabled)")
    versions = [r[0] for r in topk.select("model_version").distinct().limit(3).collect()]
    if not versions:
        return RetrievalPart(pd.DataFrame(), f"catalog retrieval: no catalog_topk partition for ds={ds} (run "
                                             "`retrieve`, which nightly runs when audit.retrieval.enabled)")
    if versions != [model_version]:
        return RetrievalPart(pd.DataFrame(), f"catalog retrieval: catalog_topk ds={ds} is of model "
                                             f"{', '.join(sorted(versions))}, the audited relevance of {model_version}: "
                                             "no retrieval rows (rerun `retrieve`)")
    topk = topk.cache()
    k = int(topk.agg(F.max("k")).collect()[0][0])
    relevant = judged_relevant(judgments, settings.relevant_min_grade) if judgments is not None else None
    per_query = pd.DataFrame(retrieval_per_query(topk, pairs, relevant, top).toPandas())
    rows = retrieval_rows(per_query, k, top, model_version, settings)
    gaps = largest_gaps(topk, catalog, settings.threshold, top, report_queries)
    topk.unpersist()
    return RetrievalPart(rows, retrieval_line(rows, len(per_query), k, top), gaps)
