"""Scoring on Spark, without I/O: which pairs can be scored, which scores can be reused, the `relevance` rows,
the model's sanity probe, the checks on the scores written, and what the tasks run on."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from relevance.frames import is_blank, raw_json
from relevance.settings import PairsSettings, ScoringSettings
from udfs.card import ModelCard
from udfs.model import LoadedModel, ModelError
from udfs.runtime import batch_budget, device_type, effective_precision
from udfs.scorer import score_pairs
from udfs.spark_udf import ScoreCounters, ScorerSpec, make_score_udf


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


def relevance_rows(frame: DataFrame, score: Column, scored_at: Column, reused: bool, card: ModelCard, precision: str,
                   run_id: str) -> DataFrame:
    """Shape pairs with a score into `relevance` rows."""
    return frame.withColumn("score", score).select(
        "query_norm",
        "product_id",
        "score",
        grade_from_score(F.col("score"), card.grade_thresholds).alias("grade_pred"),
        F.lit(card.version).alias("model_version"),
        F.lit(precision).alias("precision"),
        "text_fingerprint",
        F.lit(run_id).alias("run_id"),
        scored_at.alias("scored_at"),
        F.lit(reused).alias("reused"),
        F.lit(None).cast("long").alias("rank_diverse"),  # relevance.diverse_rank sets it, when asked to
        "ds",
    )


def score_frame(pairs_ok: DataFrame, settings: ScorerSpec, card: ModelCard, precision: str, run_id: str,
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


def product_text_mismatch(card: ModelCard, pairs: PairsSettings) -> str | None:
    """Why a model version must not score the pairs' product texts, or None: a card that records the word budgets of
    the text it was trained on (`pairs.product_text_*` then) must find the same ones now (older cards record none)."""
    trained = {"product_text_max_words": card.product_text_max_words,
               "product_text_description_words": card.product_text_description_words}
    now = {name: getattr(pairs, name) for name in trained}
    differ = [f"pairs.{name}={now[name]} (trained with {value})" for name, value in trained.items()
              if value is not None and value != now[name]]
    return (f"model {card.version} was trained on other product texts than these settings build: {', '.join(differ)}"
            if differ else None)


def unknown_words(tokenizer, words: Sequence[str]) -> list[str]:
    """The words the tokenizer can only spell as its unknown token (or not at all)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    encoded = tokenizer(list(words), add_special_tokens=False)["input_ids"] if words else []
    return [w for w, ids in zip(words, encoded) if not ids or (unk is not None and unk in ids)]


def probe_model(model: LoadedModel) -> dict[str, float]:
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


def device_and_precision(spark: SparkSession, settings: ScorerSpec) -> tuple[str, str]:
    """What the scoring tasks run on and compute in, as far as the driver can tell: int8 runs on CPU, and a
    half precision on a CPU task falls back to fp32."""
    device = expected_device(spark, "cpu" if settings.precision == "int8" else settings.device)
    return device, effective_precision(settings.precision, device)


def expected_device(spark: SparkSession, preference: str) -> str:
    """What the scoring tasks run on, as far as the driver can tell (recorded in `runs`): the tasks' rule
    (udfs.runtime.device_type), a GPU counted as assigned where the session gives each task one."""
    import torch

    gpu_per_task = bool(spark.conf.get("spark.task.resource.gpu.amount", None))
    return device_type(preference, torch.cuda.is_available(), gpu_per_task)


# ----------------------------------------------------------------------------- a day's scoring, as one plan
def scorer_spec(spark: SparkSession, config: ScoringSettings, model_dir: str, storage_options: dict[str, str],
                cache_dir: str | None) -> ScorerSpec:
    """What each scoring task needs (the version's location, device, threads, batch budget, precision)."""
    return ScorerSpec(model_dir=model_dir, device=config.device,
                      threads_per_task=threads_per_task(spark, config.threads_per_task),
                      batch_tokens=optional_int(config.batch_tokens), max_batch_rows=optional_int(config.max_batch_rows),
                      precision=config.precision, storage_options=storage_options, cache_dir=cache_dir)


@dataclass(frozen=True)
class DayScoring:
    """A day's pairs split three ways, all lazy: `fresh` relevance rows the model scores now, `reused` relevance rows
    whose text this version already scored (None without earlier scores) and `rejected` pairs with a reason."""

    fresh: DataFrame
    reused: DataFrame | None
    rejected: DataFrame

    @property
    def relevance(self) -> DataFrame:
        return self.fresh if self.reused is None else self.fresh.unionByName(self.reused)


def plan_day_scoring(pairs: DataFrame, previous: DataFrame | None, spec: ScorerSpec, card: ModelCard,
                     precision: str, run_id: str, partitions: int, counters: ScoreCounters | None = None) -> DayScoring:
    """The day's `relevance` rows from its pairs: unusable pairs rejected, scores of `previous` (this version's
    earlier rows, or None) reused by text fingerprint, the rest scored by the pandas UDF."""
    classified = classify_pairs(pairs)
    to_score, reusable = split_reusable(classified.where(F.col("reason").isNull()), previous)
    fresh = score_frame(to_score, spec, card, precision, run_id, partitions, counters)
    reused = None if reusable is None else relevance_rows(
        reusable, F.col("previous_score"), F.col("previous_scored_at"), True, card, precision, run_id)
    return DayScoring(fresh=fresh, reused=reused, rejected=classified.where(F.col("reason").isNotNull()))


def scoring_details(stats: dict[str, int], spec: ScorerSpec, device: str, precision: str) -> dict[str, object]:
    """What the tasks' counters say about the run (padding, truncation, distinct pairs), for `runs.details`."""
    padded, unique = stats["padded_tokens"], stats["unique_pairs"]
    return {
        "padding_efficiency": round(stats["real_tokens"] / padded, 4) if padded else None,
        "truncation_rate": round(stats["truncated"] / unique, 4) if unique else None,
        "unique_pairs_scored": unique, "threads_per_task": spec.threads_per_task, "precision": precision,
        "batch_tokens": batch_budget(device, spec.batch_tokens, spec.max_batch_rows)[0],
    }


def serving_note(card: ModelCard, configured: str) -> str:
    """Which model serves and why, in words: the zero-shot base or a fine-tuned version; promoted (with the promotion's
    decision) or named by `model.version` (`configured`)."""
    what = "the zero-shot base" if card.is_base else f"fine-tuned {card.kind}"
    if configured != "promoted":
        return f"{card.version} ({what}), named by model.version={configured}"
    if not card.promoted:
        return f"{card.version} ({what}), named by PROMOTED (its card records no promotion decision)"
    return f"{card.version} ({what}), promoted: {card.promotion.get('decision', 'no decision recorded in its card')}"
