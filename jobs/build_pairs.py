"""build_pairs: one day's query log + catalog (+ judged candidates) -> `pairs` for that ds.

Every event of the day either contributes to a pair or goes to `rejects` with a reason.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.core.config import get
from jobs.core.job import JobContext, JobResult
from jobs.transforms import (
    is_blank,
    product_text_udf,
    raw_json,
    rejects_frame,
    text_fingerprint,
    with_normalized_query,
)
from schemas import conform
from schemas.tables import CATALOG, JUDGMENTS, PAIRS, QUERY_LOG, REJECTS

JOB = "build_pairs"
ACTION_COUNTS = {"impression": "impressions", "click": "clicks", "add_to_cart": "carts", "purchase": "purchases"}


@dataclass(frozen=True)
class PairSettings:
    ctr_prior_weight: float = 20.0
    head_share: float = 0.5
    torso_share: float = 0.3
    product_text_max_words: int = 64
    include_judged: bool = True


@dataclass
class BuiltPairs:
    pairs: DataFrame
    rejects: dict[str, DataFrame]  # source table -> rows with `reason` and `raw`
    events_accepted: DataFrame


def catalog_texts(catalog: DataFrame, max_words: int) -> tuple[DataFrame, DataFrame]:
    """(product_id, product_text) for usable catalog rows (latest `updated_at` wins), and the rejected rows."""
    with_reason = catalog.withColumn("raw", raw_json(catalog)).withColumn(
        "reason",
        F.when(is_blank("product_id"), "catalog row without product_id")
        .when(is_blank("title"), "catalog row without title"),
    )
    usable = with_reason.where(F.col("reason").isNull())
    latest = Window.partitionBy("product_id").orderBy(F.col("updated_at").desc_nulls_last(), F.col("title"))
    newest = usable.withColumn("_rank", F.row_number().over(latest))
    duplicates = newest.where(F.col("_rank") > 1).withColumn(
        "reason", F.lit("duplicate product_id (an entry with a later updated_at is used)")
    )
    text = product_text_udf(max_words)(F.col("title"), F.col("brand"), F.col("category"), F.col("attributes"))
    texts = newest.where(F.col("_rank") == 1).select("product_id", text.alias("product_text"))
    rejected = with_reason.where(F.col("reason").isNotNull()).unionByName(duplicates.drop("_rank"))
    return texts, rejected.select("reason", "raw")


def classify_events(events: DataFrame, texts: DataFrame) -> DataFrame:
    """Normalize queries and attach a `reason` (null for usable events) and the `raw` row."""
    valid_actions = list(ACTION_COUNTS)
    staged = with_normalized_query(events.withColumn("raw", raw_json(events)), "user_query")
    staged = staged.join(texts, staged.object_id == texts.product_id, "left").drop(texts.product_id)
    reason = (
        F.when(is_blank("query_id"), "missing query_id")
        .when(is_blank("object_id"), "missing object_id (product id)")
        .when(F.col("timestamp").isNull(), "missing timestamp")
        .when(~F.col("action_name").isin(valid_actions) | F.col("action_name").isNull(),
              F.concat(F.lit("unsupported action_name '"), F.coalesce(F.col("action_name"), F.lit("null")), F.lit("'")))
        .when((F.col("action_name") == "impression") & (F.col("position").isNull() | (F.col("position") < 1)),
              "impression without a valid position")
        .when(is_blank("query_norm"), "empty query after normalization")
        .when(F.col("product_text").isNull(), "product not in catalog")
    )
    return staged.withColumn("reason", reason)


def query_segments(events_ok: DataFrame, head_share: float, torso_share: float) -> DataFrame:
    """Searches per normalized query and its head / torso / tail segment by cumulative traffic share."""
    searches = events_ok.groupBy("query_norm").agg(F.countDistinct("query_id").alias("query_searches"))
    ranked = Window.orderBy(F.col("query_searches").desc(), F.col("query_norm"))
    total = searches.agg(F.sum("query_searches")).first()[0] or 1
    before = F.coalesce(F.sum("query_searches").over(ranked.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0)) / F.lit(total)
    segment = F.when(before < head_share, "head").when(before < head_share + torso_share, "torso").otherwise("tail")
    return searches.withColumn("segment", segment)


def aggregate_behavior(events_ok: DataFrame, prior_weight: float) -> DataFrame:
    """Behavior counts, mean impression position and smoothed CTR per (query_norm, product_id)."""
    counts = [F.sum(F.when(F.col("action_name") == action, 1).otherwise(0)).cast("long").alias(name)
              for action, name in ACTION_COUNTS.items()]
    mean_position = F.avg(F.when(F.col("action_name") == "impression", F.col("position").cast("double")))
    pairs = events_ok.groupBy("query_norm", F.col("object_id").alias("product_id")).agg(
        *counts, mean_position.alias("mean_position"), F.first("product_text").alias("product_text")
    )
    totals = pairs.agg(F.sum("clicks"), F.sum("impressions")).first()
    prior = (totals[0] or 0) / totals[1] if totals[1] else 0.0
    smoothed = (F.col("clicks") + F.lit(prior_weight * prior)) / (F.col("impressions") + F.lit(prior_weight))
    return pairs.withColumn("ctr_smoothed", smoothed)


def classify_judgments(judgments: DataFrame, texts: DataFrame) -> DataFrame:
    """Judged (query, product) rows with normalized query, product text and a `reason` when unusable."""
    staged = with_normalized_query(judgments.withColumn("raw", raw_json(judgments)), "query")
    staged = staged.join(texts, "product_id", "left")
    reason = (
        F.when(is_blank("query_norm"), "empty query after normalization")
        .when(is_blank("product_id"), "missing product_id")
        .when(F.col("product_text").isNull(), "product not in catalog")
    )
    return staged.withColumn("reason", reason)


def build_pairs(
    events: DataFrame, catalog: DataFrame, judgments: DataFrame | None, settings: PairSettings, ds: str, run_id: str
) -> BuiltPairs:
    """The whole transformation, no I/O: events + catalog (+ judgments) -> pairs and rejects."""
    texts, catalog_rejects = catalog_texts(catalog, settings.product_text_max_words)
    events = classify_events(events, texts)
    events_ok = events.where(F.col("reason").isNull())
    rejects = {QUERY_LOG.name: events.where(F.col("reason").isNotNull()), CATALOG.name: catalog_rejects}

    behavior = aggregate_behavior(events_ok, settings.ctr_prior_weight).withColumn("source", F.lit("log"))
    if judgments is not None and settings.include_judged:
        judged = classify_judgments(judgments, texts)
        logged_queries = behavior.select("query_norm").distinct()
        judged_ok = judged.where(F.col("reason").isNull()).join(logged_queries, "query_norm", "left_semi")
        new_candidates = (
            judged_ok.select("query_norm", "product_id", "product_text").distinct()
            .join(behavior.select("query_norm", "product_id"), ["query_norm", "product_id"], "left_anti")
        )
        zeros = {name: F.lit(0).cast("long") for name in ACTION_COUNTS.values()}
        candidates = new_candidates.select(
            "query_norm", "product_id", *[v.alias(k) for k, v in zeros.items()],
            F.lit(None).cast("double").alias("mean_position"), "product_text",
            F.lit(None).cast("double").alias("ctr_smoothed"), F.lit("judgment").alias("source"),
        )
        behavior = behavior.unionByName(candidates)
        rejects[JUDGMENTS.name] = judged.where(F.col("reason").isNotNull())

    segments = query_segments(events_ok, settings.head_share, settings.torso_share)
    pairs = (
        behavior.join(segments, "query_norm", "left")
        .withColumn("text_fingerprint", text_fingerprint(F.col("query_norm"), F.col("product_text")))
        .withColumn("run_id", F.lit(run_id))
        .withColumn("ds", F.lit(ds))
    )
    return BuiltPairs(pairs.select(*PAIRS.columns), rejects, events_ok)


def settings_from_config(cfg: dict) -> PairSettings:
    return PairSettings(
        ctr_prior_weight=float(get(cfg, "pairs.ctr_prior_weight", 20)),
        head_share=float(get(cfg, "pairs.head_share", 0.5)),
        torso_share=float(get(cfg, "pairs.torso_share", 0.3)),
        product_text_max_words=int(get(cfg, "pairs.product_text_max_words", 64)),
        include_judged=bool(get(cfg, "pairs.include_judged", True)),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Aggregate one day's query log into query x product pairs with behavior counts and product text."


def run(ctx: JobContext) -> JobResult:
    wh, ds = ctx.warehouse, ctx.ds
    events = conform(wh.read(QUERY_LOG, {"ds": ds}), QUERY_LOG, wh.path(QUERY_LOG.name))
    catalog = conform(wh.read(CATALOG), CATALOG, wh.path(CATALOG.name))
    judgments = conform(wh.read(JUDGMENTS), JUDGMENTS, wh.path(JUDGMENTS.name)) if wh.exists(JUDGMENTS.name) else None

    events = events.cache()
    rows_in = events.count()
    if rows_in == 0:
        raise FileNotFoundError(f"query_log has no events for ds={ds} in {wh.path(QUERY_LOG.name)}")
    built = build_pairs(events, catalog, judgments, settings_from_config(ctx.cfg), ds, ctx.run_id)

    pairs = built.pairs.cache()
    written = wh.overwrite_partition(pairs, PAIRS, {"ds": ds}, ctx.run_id)
    reject_frames = [rejects_frame(df, JOB, source, ctx.run_id, ds) for source, df in built.rejects.items()]
    all_rejects = reject_frames[0]
    for frame in reject_frames[1:]:
        all_rejects = all_rejects.unionByName(frame)
    all_rejects = all_rejects.cache()
    wh.overwrite_partition(all_rejects, REJECTS, {"job": JOB, "ds": ds}, ctx.run_id)
    by_source = {r["source_table"]: r["count"] for r in all_rejects.groupBy("source_table").count().collect()}
    accepted = built.events_accepted.count()
    segments = {r["segment"]: r["count"] for r in pairs.groupBy("segment").count().collect()}
    return JobResult(
        rows_in=rows_in,
        rows_out=written,
        rows_rejected=by_source.get(QUERY_LOG.name, 0),
        details={"events_accepted": accepted, "rejects_by_source": by_source, "pairs_by_segment": segments},
        summary=f"{rows_in} events -> {written} pairs ({accepted} events used, {rows_in - accepted} rejected)",
    )
