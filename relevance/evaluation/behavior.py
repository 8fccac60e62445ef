"""The Spark side of the log-only audit: aggregations over the day's scored, logged pairs, so that only one row per
query (or `limit` rows) reaches the driver. `relevance.evaluation.audit_rows` turns their output into audit rows."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from relevance.evaluation.audit_rows import log_only_measures


def behavior_per_query(behavior: DataFrame, threshold: float, ks: Iterable[int]) -> DataFrame:
    """Per (query_norm, segment), a Spark aggregation over the day's scored, logged pairs: for each log-only measure,
    the events on pairs scored below `threshold` (`flagged:<metric>`) and all its events (`all:<metric>`).

    `behavior` has one row per pair with query_norm, segment, score, impressions, clicks, purchases and
    mean_position. One row per query comes out, so the driver never holds the day's pairs."""
    flagged = F.col("score") < threshold
    sums = []
    for metric, (events, k) in log_only_measures(ks).items():
        counted = F.col(events) if k is None else F.when(F.col("mean_position") <= k, F.col(events))
        sums += [F.sum(F.when(flagged, counted).otherwise(0)).cast("double").alias(f"flagged:{metric}"),
                 F.sum(F.coalesce(counted, F.lit(0))).cast("double").alias(f"all:{metric}")]
    return behavior.groupBy("query_norm", "segment").agg(*sums)



OFFENDER_COLUMNS = ["query_norm", "product_id", "score", "impressions", "clicks", "mean_position", "segment"]


def worst_offenders(behavior: DataFrame, threshold: float, limit: int = 10) -> pd.DataFrame:
    """The most-shown pairs the model calls irrelevant: where to look first (only `limit` rows reach the driver)."""
    flagged = behavior.where((F.col("score") < threshold) & (F.col("impressions") > 0))
    return (flagged.orderBy(F.desc("impressions"), "score", "query_norm", "product_id")
            .limit(limit).select(*OFFENDER_COLUMNS).toPandas())
