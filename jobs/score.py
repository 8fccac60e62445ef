"""score: `pairs` for one ds -> `relevance` (calibrated probability per pair) with the model version in pandas UDFs.

Two paths (`scoring.path`): `pairs` scores each pair in a pandas UDF (a cross-encoder reads the pair, a bi-encoder
embeds its texts in the task); `embeddings` (a bi-encoder's, the default for one under `auto`) embeds only the day's
distinct texts the `embeddings` table lacks, appends them to it, and scores pairs by a dot product in Spark."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from dataclasses import dataclass, replace
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.core.config import storage_options
from jobs.core.job import JobContext, JobError, JobResult
from jobs.core.spark import session_setting
from relevance.diverse_rank import candidate_product_texts, scored_candidates, with_rank_diverse
from relevance.embeddings import embedding_details, plan_day_embeddings, scoring_path, vectors_of_texts
from relevance.frames import rejects_frame
from relevance.scoring import (
    DayScoring,
    device_and_precision,
    plan_day_scoring,
    probe_model,
    product_text_mismatch,
    score_shift,
    scorer_spec,
    scoring_details,
    serving_note,
    unusable_scores,
)
from relevance.settings import ARROW_BATCH_ROWS_KEY, Settings
from schemas.tables import EMBEDDINGS, PAIRS, REJECTS, RELEVANCE
from schemas.validate import conform
from udfs.card import BI_ENCODER, ModelCard
from udfs.model import (
    LoadedModel,
    fetch_model_version,
    load_model_version,
    locate_model_version,
)
from udfs.spark_udf import EmbedCounters, ScoreCounters, ScorerSpec

JOB = "score"


def previous_scores(wh, model_version: str, precision: str, ds: str, lookback_days: int) -> DataFrame | None:
    """Scores this model version gave in this precision in the last `lookback_days` days (ds included), if any.
    Rows of unknown precision (written before `relevance` kept it) are not reused."""
    if lookback_days <= 0 or not wh.exists(RELEVANCE.name):
        return None
    since = (dt.date.fromisoformat(ds) - dt.timedelta(days=lookback_days)).isoformat()
    table = conform(wh.read(RELEVANCE), RELEVANCE, wh.path(RELEVANCE.name))
    return table.where((F.col("model_version") == model_version) & (F.col("precision") == precision)
                       & (F.col("ds") >= since) & (F.col("ds") <= ds))


def load_checked_model(settings: Settings) -> tuple[str, LoadedModel, dict[str, float]]:
    """Locate the model version (a local folder, or its URI on an object store: what executors are handed),
    fetch and load it on the driver as executors will (fetch_model_version) and probe it (probe_model): a broken
    model stops here. Returns where the version is, the loaded version (its card, its frozen BM25 statistics) and
    the probe's score range."""
    options = storage_options(settings)
    model_dir = locate_model_version(settings.model.models_root, settings.model.version, options)
    model = load_model_version(fetch_model_version(model_dir, options, settings.model.cache_dir))
    mismatch = product_text_mismatch(model.card, settings.pairs)
    if mismatch:
        raise JobError(f"{JOB}: {mismatch}")
    return model_dir, model, probe_model(model)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Score one day's pairs with the promoted (or configured) model version into `relevance`."


def run(ctx: JobContext) -> JobResult:
    """Score the ds's pairs with Arrow batches of `scoring.arrow_batch_rows` rows, the session's own setting restored
    afterwards."""
    with session_setting(ctx.spark, ARROW_BATCH_ROWS_KEY, str(ctx.settings.scoring.arrow_batch_rows)):
        return score_day(ctx)


@dataclass
class ScoredDay:
    """A day's pairs scored on one path: the split (fresh, reused, rejected), the pairs scored now, the seconds it
    took, the path's details for `runs`, and on the embedding path the new vectors to append (persisted)."""

    day: DayScoring
    scored: int
    seconds: float
    details: dict[str, Any]
    new_vectors: DataFrame | None = None


def score_pair_by_pair(ctx: JobContext, pairs: DataFrame, previous: DataFrame | None, spec: ScorerSpec,
                       card: ModelCard, device: str, precision: str) -> ScoredDay:
    """The pair path: each pair scored in a pandas UDF (relevance.scoring.plan_day_scoring)."""
    counters = ScoreCounters(ctx.spark.sparkContext)
    day = plan_day_scoring(pairs, previous, spec, card, precision, ctx.run_id, ctx.spark.sparkContext.defaultParallelism,
                           counters)
    day = replace(day, fresh=day.fresh.cache())
    started = time.time()
    scored = day.fresh.count()
    seconds = time.time() - started
    return ScoredDay(day, scored, seconds,
                     {"scoring_path": "pairs", **scoring_details(counters.values(), spec, device, precision)})


def score_through_embeddings(ctx: JobContext, pairs: DataFrame, previous: DataFrame | None, spec: ScorerSpec,
                             model: LoadedModel, device: str, precision: str) -> ScoredDay:
    """The embedding path (relevance.embeddings.plan_day_embeddings): the texts the `embeddings` table lacks are
    embedded (and persisted, to append once the scores pass), then every pair is a join and a dot product. A pair
    that finds no vector stops the job before anything is written."""
    wh, ds, card = ctx.warehouse, ctx.require_ds(), model.card
    counters = EmbedCounters(ctx.spark.sparkContext)
    table = (conform(wh.read(EMBEDDINGS, {"model_version": card.version}), EMBEDDINGS, wh.path(EMBEDDINGS.name))
             if wh.exists(EMBEDDINGS.name) else None)
    planned = plan_day_embeddings(pairs, previous, table, spec, card, model.lexical, precision, ctx.run_id, ds,
                                  ctx.spark.sparkContext.defaultParallelism, counters)
    started = time.time()
    new_vectors = planned.new_vectors.persist(StorageLevel.MEMORY_AND_DISK)
    embedded = {row["kind"]: int(row["count"]) for row in new_vectors.groupBy("kind").count().collect()}
    embed_seconds = time.time() - started
    expected = planned.to_score.count()
    distinct_texts = planned.texts.count()
    day = replace(planned.day, fresh=planned.day.fresh.cache())
    started = time.time()
    scored = day.fresh.count()
    join_dot_seconds = time.time() - started
    if scored != expected:
        raise JobError(f"{JOB}: {expected - scored} of {expected} pairs of ds={ds} found no vector of their query "
                       f"or product text in embeddings (model {card.version}, {precision}); relevance was not written")
    details = embedding_details(counters.values(), embedded, distinct_texts, spec, device, precision, embed_seconds,
                                join_dot_seconds)
    return ScoredDay(day, scored, embed_seconds + join_dot_seconds, details, new_vectors)


def union_all(frames: list[DataFrame]) -> DataFrame:
    return reduce(lambda left, right: left.unionByName(right), frames)


def rank_diversely(ctx: JobContext, relevance: DataFrame, pairs: DataFrame, new_vectors: DataFrame | None,
                   spec: ScorerSpec, card: ModelCard, precision: str) -> tuple[DataFrame, DataFrame | None, dict[str, Any]]:
    """With scoring.diverse_lambda set: `relevance` with `rank_diverse` (relevance.diverse_rank), the `embeddings` rows
    of the product texts neither the table nor this run's `new_vectors` hold (embedded now, persisted, to append) and
    the details for `runs`. Without it: `relevance` unchanged. A row left without a rank stops the job."""
    config, wh, ds = ctx.settings.scoring, ctx.warehouse, ctx.require_ds()
    if config.diverse_lambda is None:
        return relevance, None, {}
    if card.kind != BI_ENCODER:
        raise JobError(f"{JOB}: scoring.diverse_lambda is set, but model {card.version} is a {card.kind}, which has no "
                       "product embeddings to re-rank with (unset it); relevance was not written")
    key = ["model_version", "precision", "kind", "text_fingerprint", "vector"]
    known: list[DataFrame] = [frame.select(*key) for frame in (
        conform(wh.read(EMBEDDINGS, {"model_version": card.version}), EMBEDDINGS, wh.path(EMBEDDINGS.name))
        if wh.exists(EMBEDDINGS.name) else None, new_vectors) if frame is not None]
    candidates = scored_candidates(relevance, pairs)
    more, vectors = vectors_of_texts(candidate_product_texts(candidates), union_all(known) if known else None, spec,
                                     card.version, precision, ctx.run_id, ds, ctx.spark.sparkContext.defaultParallelism,
                                     EmbedCounters(ctx.spark.sparkContext))
    more = more.persist(StorageLevel.MEMORY_AND_DISK)
    embedded = more.count()
    ranked = with_rank_diverse(relevance, candidates, vectors, config.diverse_lambda, config.diverse_depth)
    ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)
    unranked = ranked.where(F.col("rank_diverse").isNull()).count()
    if unranked:
        raise JobError(f"{JOB}: {unranked} rows of ds={ds} found no product vector to re-rank with (model "
                       f"{card.version}, {precision}); relevance was not written")
    return ranked, more, {"lambda": config.diverse_lambda, "depth": config.diverse_depth, "texts_embedded": embedded}


def score_day(ctx: JobContext) -> JobResult:
    """Load (the model, checked; the day's pairs; this version's earlier scores) -> plan (relevance.scoring, or
    relevance.embeddings on the embedding path) -> check the scores -> write embeddings, relevance and rejects."""
    wh, ds, spark, config = ctx.warehouse, ctx.require_ds(), ctx.spark, ctx.settings.scoring
    model_dir, model, probe = load_checked_model(ctx.settings)
    card = model.card
    path = scoring_path(config.path, card)  # a ModelError for a cross-encoder asked to score through embeddings
    pairs = conform(wh.read(PAIRS, {"ds": ds}), PAIRS, wh.path(PAIRS.name)).cache()
    rows_in = pairs.count()
    if rows_in == 0:
        raise FileNotFoundError(f"pairs has no rows for ds={ds} in {wh.path(PAIRS.name)} (run build_pairs first)")
    spec = scorer_spec(spark, config, str(model_dir), storage_options(ctx.settings), ctx.settings.model.cache_dir)
    device, precision = device_and_precision(spark, spec)
    previous = previous_scores(wh, card.version, precision, ds, config.reuse_lookback_days) if config.incremental else None
    previous = previous.cache() if previous is not None else None
    scored_day = (score_through_embeddings(ctx, pairs, previous, spec, model, device, precision) if path == "embeddings"
                  else score_pair_by_pair(ctx, pairs, previous, spec, card, device, precision))
    day, scored, scoring_seconds, path_details = (scored_day.day, scored_day.scored, scored_day.seconds,
                                                  scored_day.details)
    new_vectors = scored_day.new_vectors
    bad_scores = unusable_scores(day.fresh)
    if bad_scores:
        raise JobError(f"{JOB}: model {card.version} gave {bad_scores} of {scored} pairs of ds={ds} a score that is NaN, "
                       "infinite or outside [0, 1]; relevance was not written")
    reused = day.reused.count() if day.reused is not None else 0
    shift = score_shift(day.relevance, card.validation_score_deciles)
    relevance, diverse_vectors, diverse_details = rank_diversely(ctx, day.relevance, pairs, new_vectors, spec, card,
                                                                 precision)

    appended: list[DataFrame] = [frame for frame, count in ((new_vectors, path_details.get("texts_embedded")),
                                                            (diverse_vectors, diverse_details.get("texts_embedded")))
                                 if frame is not None and count]
    if appended:  # new keys only: the texts the table lacked
        wh.append(union_all(appended), EMBEDDINGS, ctx.run_id)
    written = wh.overwrite_partition(relevance, RELEVANCE, {"ds": ds}, ctx.run_id)
    rejected_count = wh.overwrite_partition(rejects_frame(day.rejected, JOB, PAIRS.name, ctx.run_id, ds), REJECTS,
                                            {"job": JOB, "ds": ds}, ctx.run_id)
    throughput = scored / scoring_seconds if scored and scoring_seconds > 0 else None
    far = shift is not None and shift > config.max_score_psi
    embedded_note = (f", {path_details['texts_embedded']} of {path_details['distinct_texts']} distinct texts embedded "
                     f"(the rest from embeddings)" if path == "embeddings" else "")
    return JobResult(
        rows_in=rows_in, rows_out=written, rows_rejected=rejected_count, rows_reused=reused,
        model_version=card.version, throughput_per_s=throughput, device=device,
        details={"serving": serving_note(card, ctx.settings.model.version), "pairs_scored": scored, "scoring_seconds": round(scoring_seconds, 3), "model_dir": str(model_dir),
                 **path_details, **probe, **({"rank_diverse": diverse_details} if diverse_details else {}),
                 "score_psi_vs_validation": shift if shift is not None else "the model card has no validation_score_deciles"},
        summary=f"{written} pairs in relevance with {card.version}: {scored} scored in {scoring_seconds:.1f}s "
        f"({throughput or 0:.0f} pairs/s on {device}, {precision}, {path} path{embedded_note}), {reused} reused from "
        "earlier runs"
        + (f"; rank_diverse: MMR at lambda {diverse_details['lambda']:g} over the top {diverse_details['depth']}"
           if diverse_details else "")
        + f"\nserving: {serving_note(card, ctx.settings.model.version)}"
        + (f"\nwarning: the day's scores are far from the model's validation scores (PSI {shift:.3f} > "
           f"{config.max_score_psi})" if far else ""),
    )
