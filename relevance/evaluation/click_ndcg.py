"""The Spark side of the click audit: the day's scored pairs of queries without judgments, their click labels, and
per query the click nDCG@k of the model's and the logged ranking as one Spark aggregation (window functions), so
that one row per query, never the day's pairs, reaches the driver. `relevance.evaluation.click_agreement` turns
its output into audit rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from relevance.click_model import usable_labels
from relevance.evaluation.audit_rows import LOGGED, MODEL
from relevance.evaluation.click_agreement import (
    MIN_LABELLED,
    ClickPartition,
    ClickScope,
    choose_click_partition,
    click_column,
    click_scope,
)
from relevance.frames import with_normalized_query

IDEAL = "ideal"
RANKINGS = (IDEAL, MODEL, LOGGED)


def ranking_order(name: str) -> list[Column]:
    """How a ranking orders a query's labelled candidates; ties by product_id ascending, as the judged audit ranks."""
    first = {IDEAL: F.desc("label"), MODEL: F.desc("score"),
             LOGGED: F.asc_nulls_last("mean_position")}[name]  # never shown that day: last, as logged_position
    return [first, F.asc("product_id")]


def click_partition(labels: DataFrame | None, ds: str, max_age_days: int) -> ClickPartition:
    """The click_labels partition the audit of `ds` uses: the latest on or before `ds`, within `max_age_days`
    (`labels` is the whole table, None without one). One value reaches the driver."""
    if labels is None:
        return choose_click_partition(None, ds, max_age_days, table_exists=False)
    latest = labels.where(F.col("ds") <= F.lit(ds)).agg(F.max("ds")).collect()[0][0]
    return choose_click_partition(latest, ds, max_age_days)


def judged_queries(judgments: DataFrame) -> DataFrame:
    """The normalized queries of a judgments table (every row counts, usable or not)."""
    return with_normalized_query(judgments.select("query").distinct(), "query").select("query_norm").distinct()


def unjudged_candidates(relevance: DataFrame, pairs: DataFrame, judgments: DataFrame | None) -> DataFrame:
    """The day's scored pairs of queries without judgments: query_norm, product_id, score, mean_position, segment
    (head / torso / tail), query_searches."""
    scored = relevance.select("query_norm", "product_id", "score").join(
        pairs.select("query_norm", "product_id", "mean_position", "segment", "query_searches"),
        ["query_norm", "product_id"], "left")
    if judgments is None:
        return scored
    return scored.join(F.broadcast(judged_queries(judgments)), "query_norm", "left_anti")


def _ranked(candidates: DataFrame) -> DataFrame:
    """Each candidate's rank under every RANKINGS entry among its query's labelled candidates (unlabelled ones are
    ranked apart, and not counted)."""
    by_query = Window.partitionBy("query_norm", F.col("label").isNull())
    ranks = [F.row_number().over(by_query.orderBy(*ranking_order(name))).alias(f"rank:{name}") for name in RANKINGS]
    return candidates.select("*", *ranks)


def _dcg(name: str, k: int) -> Column:
    rank = F.col(f"rank:{name}")
    return F.coalesce(F.sum(F.when(rank <= k, F.col("label") / F.log2(rank + 1))), F.lit(0.0))


def click_ndcg_per_query(candidates: DataFrame, ks: Iterable[int]) -> DataFrame:
    """One row per query of `candidates` (query_norm, product_id, score, mean_position, segment, query_searches,
    label; label null where the pair has none): segment, searches, labelled (candidates with a label), label_sum,
    and per system and k `click_column(system, k)` = DCG@k / ideal DCG@k over the labelled candidates (gain = the
    label, log2(rank + 1) discount), null when fewer than 2 are labelled or every label is 0."""
    ranked = _ranked(candidates)
    ks = sorted({int(k) for k in ks})
    sums = [_dcg(name, k).alias(f"dcg:{name}@{k}") for k in ks for name in RANKINGS]
    per_query = ranked.groupBy("query_norm").agg(
        F.max("segment").alias("segment"), F.max("query_searches").alias("searches"),
        F.count("label").alias("labelled"), F.coalesce(F.sum("label"), F.lit(0.0)).alias("label_sum"), *sums)
    evaluable = (F.col("labelled") >= MIN_LABELLED) & (F.col("label_sum") > 0)
    ndcg = [F.when(evaluable, F.col(f"dcg:{system}@{k}") / F.col(f"dcg:{IDEAL}@{k}")).alias(click_column(system, k))
            for system in (MODEL, LOGGED) for k in ks]
    return per_query.select("query_norm", "segment", "searches", "labelled", "label_sum", *ndcg)


@dataclass(frozen=True)
class ClickAgreement:
    """The click audit's evaluable queries (one row each, in pandas) and its scope."""

    per_query: pd.DataFrame
    scope: ClickScope


def click_agreement(relevance: DataFrame, pairs: DataFrame, judgments: DataFrame | None, judgments_table: str | None,
                    labels: DataFrame, labels_ds: str, click_model: str, min_impressions: int,
                    ks: Iterable[int]) -> ClickAgreement:
    """The click audit of the day: the scored pairs of queries without judgments, with the usable click labels of
    partition `labels_ds`, aggregated per query in Spark; only one row per query reaches the driver."""
    candidates = unjudged_candidates(relevance, pairs, judgments).join(
        usable_labels(labels, labels_ds, click_model, min_impressions), ["query_norm", "product_id"], "left")
    per_query: pd.DataFrame = click_ndcg_per_query(candidates, ks).toPandas()
    kept, scope = click_scope(per_query, labels_ds, click_model, min_impressions,
                              judgments_table if judgments is not None else None)
    return ClickAgreement(kept.sort_values("query_norm", ignore_index=True), scope)
