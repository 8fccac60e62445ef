"""score: `pairs` for one ds -> `relevance` (calibrated probability per pair) with the cross-encoder in a pandas UDF."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
import time
from collections.abc import Sequence

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.config import get
from jobs.core.job import JobContext, JobError, JobResult
from jobs.core.spark import session_setting
from jobs.core.storage import storage_options_from_config
from jobs.transforms import is_blank, raw_json, rejects_frame
from schemas import conform
from schemas.tables import PAIRS, REJECTS, RELEVANCE
from udfs.model import (
    HALF_PRECISIONS,
    LoadedModel,
    ModelError,
    fetch_model_version,
    load_model_version,
    locate_model_version,
)
from udfs.scorer import batch_budget, score_pairs
from udfs.spark_udf import ScoreCounters, ScoringSettings, make_score_udf

JOB = "score"


def grade_from_score(score: Column, grade_thresholds: dict[str, float], lowest_grade: int = 0) -> Column:
    """The highest grade whose minimum score the pair reaches (thresholds from the model card)."""
    expression = F.lit(lowest_grade).cast("long")
    for grade, threshold in sorted(grade_thresholds.items(), key=lambda item: int(item[0])):
        expression = F.when(score >= F.lit(float(threshold)), F.lit(int(grade)).cast("long")).otherwise(expression)
    return expression


def classify_pairs(pairs: DataFrame) -> DataFrame:
    """Attach a `reason` to pairs that cannot be scored (null for the rest)."""
    reason = (
        F.when(is_blank("query_norm"), "empty query_norm")
        .when(is_blank("product_id"), "missing product_id")
        .when(is_blank("product_text"), "empty product_text")
    )
    return pairs.withColumn("raw", raw_json(pairs)).withColumn("reason", reason)


def relevance_rows(frame: DataFrame, score: Column, scored_at: Column, reused: bool, card: dict, precision: str,
                   run_id: str) -> DataFrame:
    """Shape pairs with a score into `relevance` rows."""
    return frame.withColumn("score", score).select(
        "query_norm",
        "product_id",
        "score",
        grade_from_score(F.col("score"), card.get("grade_thresholds", {})).alias("grade_pred"),
        F.lit(card["version"]).alias("model_version"),
        F.lit(precision).alias("precision"),
        "text_fingerprint",
        F.lit(run_id).alias("run_id"),
        scored_at.alias("scored_at"),
        F.lit(reused).alias("reused"),
        "ds",
    )


def score_frame(pairs_ok: DataFrame, settings: ScoringSettings, card: dict, precision: str, run_id: str,
                partitions: int, counters: ScoreCounters | None = None) -> DataFrame:
    """Pure transformation: usable pairs -> relevance rows (scored lazily by the pandas UDF); `precision` is the
    one the tasks compute in (`device_and_precision`)."""
    udf = make_score_udf(settings, counters)
    return relevance_rows(pairs_ok.repartition(partitions), udf(F.col("query_norm"), F.col("product_text")),
                          F.current_timestamp(), False, card, precision, run_id)


def split_reusable(pairs_ok: DataFrame, previous: DataFrame | None) -> tuple[DataFrame, DataFrame | None]:
    """Pairs to score, and pairs whose (text_fingerprint, model_version) already has a score (with it)."""
    if previous is None:
        return pairs_ok, None
    known = previous.select("text_fingerprint", F.col("score").alias("previous_score"),
                            F.col("scored_at").alias("previous_scored_at")).dropDuplicates(["text_fingerprint"])
    return pairs_ok.join(known, "text_fingerprint", "left_anti"), pairs_ok.join(known, "text_fingerprint", "inner")


def previous_scores(wh, model_version: str, precision: str, ds: str, lookback_days: int) -> DataFrame | None:
    """Scores this model version gave in this precision in the last `lookback_days` days (ds included), if any.
    Rows of unknown precision (written before `relevance` kept it) are not reused."""
    if lookback_days <= 0 or not wh.exists(RELEVANCE.name):
        return None
    since = (dt.date.fromisoformat(ds) - dt.timedelta(days=lookback_days)).isoformat()
    table = conform(wh.read(RELEVANCE), RELEVANCE, wh.path(RELEVANCE.name))
    return table.where((F.col("model_version") == model_version) & (F.col("precision") == precision)
                       & (F.col("ds") >= since) & (F.col("ds") <= ds))


def optional_int(value: str | float | None) -> int | None:
    """A count from the config, or None for `auto`."""
    return None if value is None or value == "auto" else int(value)


def threads_per_task(spark: SparkSession, configured: str | float | None) -> int:
    """Torch threads per scoring task: configured, or cores / concurrent tasks on a local master."""
    threads = optional_int(configured)
    if threads is not None:
        return threads
    if (spark.sparkContext.master or "").startswith("local"):
        return max(1, (os.cpu_count() or 1) // spark.sparkContext.defaultParallelism)
    return int(spark.conf.get("spark.task.cpus", "1") or 1)


# Fixed probe pairs in everyday words any English tokenizer knows, relevant and irrelevant ones mixed: a sane
# model gives them finite scores that differ.
PROBE_PAIRS = (
    ("gray sofa", "gray linen sofa | brand: home | category: furniture > sofas | color: gray"),
    ("gray sofa", "stainless steel kitchen knife set | category: kitchen > knives"),
    ("oak desk", "solid oak writing desk with drawers | category: furniture > desks | material: oak"),
    ("oak desk", "blue cotton summer dress | category: clothing > dresses | color: blue"),
    ("laptop bag", "black leather laptop bag | category: bags | color: black"),
    ("laptop bag", "green garden hose | category: garden > hoses"),
    ("wireless headphones", "wireless headphones with microphone | category: electronics > audio"),
    ("wireless headphones", "wooden dining table for six people | category: furniture > tables | material: wood"),
)
MAX_UNKNOWN_PROBE_WORDS = 0.1  # share of probe words the tokenizer may map to [UNK]
MIN_PROBE_SPREAD = 1e-6        # probe scores closer together than this are one constant


def unknown_words(tokenizer, words: Sequence[str]) -> list[str]:
    """The words the tokenizer can only spell as its unknown token (or not at all)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    encoded = tokenizer(list(words), add_special_tokens=False)["input_ids"] if words else []
    return [w for w, ids in zip(words, encoded) if not ids or (unk is not None and unk in ids)]


def probe_model(model: LoadedModel) -> dict:
    """Prove a loaded model sane on PROBE_PAIRS before it writes anything, through `score_pairs` (so every model
    kind is probed the same way): its tokenizer knows the probe words, and its scores are finite and not one
    constant. A ModelError names the version and what is wrong; returns the probe's scores otherwise."""
    queries, texts = [q for q, _ in PROBE_PAIRS], [t for _, t in PROBE_PAIRS]
    words = sorted({w for text in queries + texts for w in re.findall(r"[a-z]+", text)})
    unknown = unknown_words(model.tokenizer, words)
    if len(unknown) > MAX_UNKNOWN_PROBE_WORDS * len(words):
        raise ModelError(f"model {model.version}: its tokenizer does not know {len(unknown)} of {len(words)} probe words "
                         f"({', '.join(unknown[:5])}, ...): tokenizer files missing or wrong; nothing scored")
    scores = np.asarray(score_pairs(model, queries, texts)[0], dtype=float)
    if not np.isfinite(scores).all():
        raise ModelError(f"model {model.version}: {int((~np.isfinite(scores)).sum())} of {len(scores)} probe scores are "
                         "NaN or infinite (broken weights?); nothing scored")
    if float(np.ptp(scores)) < MIN_PROBE_SPREAD:
        raise ModelError(f"model {model.version}: it gives every probe pair the same score {scores[0]:.6f} "
                         "(a constant model); nothing scored")
    return {"probe_min": round(float(scores.min()), 6), "probe_max": round(float(scores.max()), 6)}


def load_checked_model(cfg: dict) -> tuple[str, dict]:
    """Locate the model version (a local folder, or its URI on an object store: what executors are handed),
    fetch and load it on the driver as executors will (fetch_model_version) and probe it (probe_model): a broken
    model stops here."""
    options = storage_options_from_config(cfg)
    model_dir = locate_model_version(get(cfg, "model.models_root"), str(get(cfg, "model.version")), options)
    model = load_model_version(fetch_model_version(model_dir, options, get(cfg, "model.cache_dir", None)))
    card = dict(model.card, probe=probe_model(model))
    return model_dir, card


def unusable_scores(relevance: DataFrame) -> int:
    """Scores that are not a probability: null, NaN, infinite or outside [0, 1]."""
    score = F.col("score")
    bad = score.isNull() | F.isnan(score) | (score < 0) | (score > 1)
    return relevance.where(bad).count()


def population_stability(shares: Sequence[float], expected: Sequence[float]) -> float:
    """PSI = sum((p - q) ln(p / q)) over bins (shares floored at 1e-4): 0.1 is a small shift, 0.25 a large one."""
    total = 0.0
    for p, q in zip(shares, expected):
        p, q = max(p, 1e-4), max(q, 1e-4)
        total += (p - q) * math.log(p / q)
    return total


def score_shift(relevance: DataFrame, deciles: Sequence[float] | None) -> float | None:
    """PSI of the day's scores against the model card's validation scores, binned at the card's deciles
    (`validation_score_deciles`: 11 values, min to max); None when the card has none."""
    if not deciles or len(deciles) != 11:
        return None
    edges = [float(e) for e in deciles[1:-1]]
    row = relevance.agg(F.count(F.lit(1)), *[F.sum((F.col("score") < e).cast("long")) for e in edges]).collect()[0]
    total = row[0] or 0
    if not total:
        return None
    below = [0, *[int(v or 0) for v in row[1:]], total]
    shares = [(below[i + 1] - below[i]) / total for i in range(10)]
    return round(population_stability(shares, [0.1] * 10), 4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Score one day's pairs with the promoted (or configured) cross-encoder into `relevance`."


ARROW_BATCH_ROWS = "spark.sql.execution.arrow.maxRecordsPerBatch"


def run(ctx: JobContext) -> JobResult:
    """Score the ds's pairs with Arrow batches of `scoring.arrow_batch_rows` rows, the session's own setting restored
    afterwards."""
    with session_setting(ctx.spark, ARROW_BATCH_ROWS, str(get(ctx.cfg, "scoring.arrow_batch_rows", 4096))):
        return score_day(ctx)


def score_day(ctx: JobContext) -> JobResult:
    wh, ds, spark = ctx.warehouse, ctx.require_ds(), ctx.spark
    model_dir, card = load_checked_model(ctx.cfg)
    pairs = conform(wh.read(PAIRS, {"ds": ds}), PAIRS, wh.path(PAIRS.name)).cache()
    rows_in = pairs.count()
    if rows_in == 0:
        raise FileNotFoundError(f"pairs has no rows for ds={ds} in {wh.path(PAIRS.name)} (run build_pairs first)")

    settings = ScoringSettings(
        model_dir=str(model_dir),
        device=str(get(ctx.cfg, "scoring.device", "auto")),
        threads_per_task=threads_per_task(spark, get(ctx.cfg, "scoring.threads_per_task", "auto")),
        batch_tokens=optional_int(get(ctx.cfg, "scoring.batch_tokens", "auto")),
        max_batch_rows=optional_int(get(ctx.cfg, "scoring.max_batch_rows", "auto")),
        precision=str(get(ctx.cfg, "scoring.precision", "fp32")),
        storage_options=storage_options_from_config(ctx.cfg),
        cache_dir=get(ctx.cfg, "model.cache_dir", None),
    )
    device, precision = device_and_precision(spark, settings)
    classified = classify_pairs(pairs)
    previous = None
    if get(ctx.cfg, "scoring.incremental", True):
        previous = previous_scores(wh, card["version"], precision, ds, int(get(ctx.cfg, "scoring.reuse_lookback_days", 30)))
        previous = previous.cache() if previous is not None else None
    to_score, reusable = split_reusable(classified.where(F.col("reason").isNull()), previous)
    counters = ScoreCounters(spark.sparkContext)
    fresh = score_frame(to_score, settings, card, precision, ctx.run_id, spark.sparkContext.defaultParallelism,
                        counters).cache()

    started = time.time()
    scored = fresh.count()
    scoring_seconds = time.time() - started
    bad_scores = unusable_scores(fresh)
    if bad_scores:
        raise JobError(f"{JOB}: model {card['version']} gave {bad_scores} of {scored} pairs of ds={ds} a score that is NaN, "
                       "infinite or outside [0, 1]; relevance was not written")
    relevance = fresh
    reused = 0
    if reusable is not None:
        reused_rows = relevance_rows(reusable, F.col("previous_score"), F.col("previous_scored_at"), True, card,
                                     precision, ctx.run_id)
        relevance = fresh.unionByName(reused_rows)
        reused = reusable.count()
    shift = score_shift(relevance, card.get("validation_score_deciles"))
    max_psi = float(get(ctx.cfg, "scoring.max_score_psi", 0.25))
    written = wh.overwrite_partition(relevance, RELEVANCE, {"ds": ds}, ctx.run_id)
    rejected = classified.where(F.col("reason").isNotNull())
    rejected_count = wh.overwrite_partition(
        rejects_frame(rejected, JOB, PAIRS.name, ctx.run_id, ds), REJECTS, {"job": JOB, "ds": ds}, ctx.run_id
    )
    stats = counters.values()
    throughput = scored / scoring_seconds if scored and scoring_seconds > 0 else None
    return JobResult(
        rows_in=rows_in,
        rows_out=written,
        rows_rejected=rejected_count,
        rows_reused=reused,
        model_version=card["version"],
        throughput_per_s=throughput,
        device=device,
        details={
            "pairs_scored": scored, "scoring_seconds": round(scoring_seconds, 3),
            "padding_efficiency": round(stats["real_tokens"] / stats["padded_tokens"], 4) if stats["padded_tokens"] else None,
            "truncation_rate": round(stats["truncated"] / stats["unique_pairs"], 4) if stats["unique_pairs"] else None,
            "unique_pairs_scored": stats["unique_pairs"], "threads_per_task": settings.threads_per_task,
            "batch_tokens": batch_budget(device, settings.batch_tokens, settings.max_batch_rows)[0],
            "model_dir": str(model_dir), "precision": precision, **card["probe"],
            "score_psi_vs_validation": shift if shift is not None else "the model card has no validation_score_deciles",
        },
        summary=f"{written} pairs in relevance with {card['version']}: {scored} scored in {scoring_seconds:.1f}s "
        f"({throughput or 0:.0f} pairs/s on {device}, {precision}), {reused} reused from earlier runs"
        + (f"\nwarning: the day's scores are far from the model's validation scores (PSI {shift:.3f} > {max_psi})"
           if shift is not None and shift > max_psi else ""),
    )


def device_and_precision(spark: SparkSession, settings: ScoringSettings) -> tuple[str, str]:
    """What the scoring tasks run on and compute in, as far as the driver can tell: int8 runs on CPU, and a
    half precision on a CPU task falls back to fp32."""
    device = expected_device(spark, "cpu" if settings.precision == "int8" else settings.device)
    return device, settings.precision if (settings.precision in HALF_PRECISIONS) == (device == "cuda") else "fp32"


def expected_device(spark: SparkSession, preference: str) -> str:
    """What the scoring tasks run on, as far as the driver can tell (recorded in `runs`)."""
    import torch

    if preference == "cpu" or not torch.cuda.is_available():
        return "cpu"
    gpu_per_task = spark.conf.get("spark.task.resource.gpu.amount", None)
    return "cuda" if preference == "cuda" or gpu_per_task else "cpu"
