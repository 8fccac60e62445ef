"""The five ways to score a day of pairs that the score benchmark compares, each prepared on a `BenchContext`:
the naive pandas UDF, sentence-transformers' CrossEncoder, predict_batch_udf, our pure scorer and our score job's
transformation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import DoubleType

from bench.score_inputs import ARROW_BATCH_ROWS, BATCH_TOKENS, BENCH_DS, CHUNK_ROWS, MAX_BATCH_ROWS, Pairs
from jobs.core.spark import session_setting
from relevance.frames import text_fingerprint
from relevance.scoring import device_and_precision, score_frame
from relevance.settings import ARROW_BATCH_ROWS_KEY as ARROW_BATCH_SETTING
from udfs.model import (
    WEIGHTS_DIR,
    load_model_version,
    quiet_transformers,
    read_card,
)
from udfs.scorer import score_pairs
from udfs.spark_udf import ScoreCounters, ScorerSpec

# --------------------------------------------------------------------------------------------
# The shared context and what every approach returns
# --------------------------------------------------------------------------------------------


@dataclass
class BenchContext:
    model_dir: Path  # the model version directory (model/ + model_card.json)
    driver_threads: int  # torch threads of the driver-process approaches
    spark: SparkSession | None = None
    spark_threads: int = 1  # torch threads per Spark task
    _frames: dict[int, tuple[Pairs, DataFrame]] = field(default_factory=dict, repr=False)

    @property
    def weights_dir(self) -> str:
        return str(self.model_dir / WEIGHTS_DIR)

    @property
    def max_length(self) -> int:
        return read_card(self.model_dir).max_length

    def session(self) -> SparkSession:
        if self.spark is None:
            raise RuntimeError("this approach needs a SparkSession (BenchContext.spark)")
        return self.spark

    def frame(self, pairs: Pairs) -> DataFrame:
        """The pairs as one cached DataFrame, built on first use and shared by every Spark approach."""
        if id(pairs) not in self._frames:
            self._frames[id(pairs)] = (pairs, spark_pairs(self.session(), pairs))
        return self._frames[id(pairs)][1]

    def release(self) -> None:
        for _, df in self._frames.values():
            df.unpersist()
        self._frames.clear()


@dataclass
class Scored:
    scores: np.ndarray  # probability of relevance per pair, in input order
    real_tokens: int | None  # tokens fed to the model, None where not counted
    padded_tokens: int | None


@dataclass
class Prepared:
    """An approach with its model loaded (driver) or its UDF built (Spark), ready to score any pairs."""

    score: Callable[[Pairs], Scored]
    load_s: float | None  # model load in the driver; None for Spark (the workers load on the first call)
    torch_threads: str


Approach = Callable[[BenchContext], Prepared]


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


# --------------------------------------------------------------------------------------------
# The naive forward pass (approaches 1-3)
# --------------------------------------------------------------------------------------------


def load_hf(weights_dir: str) -> tuple[Any, torch.nn.Module]:
    """Tokenizer + one-logit sequence classifier straight from transformers, as a first version would."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(weights_dir, local_files_only=True)
    network = AutoModelForSequenceClassification.from_pretrained(weights_dir, num_labels=1, local_files_only=True)
    return tokenizer, network.eval()


def hf_scores(tokenizer: Any, network: torch.nn.Module, queries: list[str], texts: list[str],
              max_length: int) -> tuple[np.ndarray, int, int]:
    """One chunk: pad to its longest pair, truncate longest-first; (sigmoid of the logit, real tokens, padded tokens)."""
    encoded = tokenizer(queries, texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        logits = network(**encoded).logits[:, 0]
    mask = encoded["attention_mask"]
    return torch.sigmoid(logits).double().numpy(), int(mask.sum()), int(mask.numel())


_NAIVE_MODELS: dict[str, tuple[Any, torch.nn.Module]] = {}


def naive_worker_model(weights_dir: str, threads: int) -> tuple[Any, torch.nn.Module]:
    """The naive UDF's model, loaded once per Python worker process."""
    torch.set_num_threads(threads)
    if weights_dir not in _NAIVE_MODELS:
        _NAIVE_MODELS[weights_dir] = load_hf(weights_dir)
    return _NAIVE_MODELS[weights_dir]


def make_naive_udf(weights_dir: str, threads: int, max_length: int, real: Any, padded: Any) -> Callable[..., Column]:
    """Approach 1's pandas UDF; `real` and `padded` are Spark accumulators of token counts."""

    @pandas_udf(DoubleType())  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
    def naive_score(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        tokenizer, network = naive_worker_model(weights_dir, threads)
        for queries, texts in batches:
            parts = []
            for start in range(0, len(queries), CHUNK_ROWS):
                chunk = slice(start, start + CHUNK_ROWS)
                scores, n_real, n_padded = hf_scores(tokenizer, network, queries.iloc[chunk].tolist(),
                                                     texts.iloc[chunk].tolist(), max_length)
                real.add(n_real)
                padded.add(n_padded)
                parts.append(scores)
            yield pd.Series(np.concatenate(parts) if parts else np.array([], dtype=float), index=queries.index)

    return naive_score


def make_predict_batch_udf(weights_dir: str, threads: int, max_length: int) -> Callable[..., Column]:
    """Approach 3: Spark ML's predict_batch_udf (it caches the predict function per worker).

    Its token counts are not collected: the cached predict function outlives the task whose
    accumulators it captured. It cuts the same 64-row chunks in arrival order as the naive UDF.
    """
    from pyspark.ml.functions import predict_batch_udf

    def make_predict_fn() -> Callable[..., np.ndarray]:  # pyspark types a predict function of one input only
        torch.set_num_threads(threads)
        tokenizer, network = load_hf(weights_dir)

        def predict(queries: np.ndarray, texts: np.ndarray) -> np.ndarray:
            return hf_scores(tokenizer, network, queries.tolist(), texts.tolist(), max_length)[0]

        return predict

    return predict_batch_udf(make_predict_fn, return_type=DoubleType(), batch_size=CHUNK_ROWS)


# --------------------------------------------------------------------------------------------
# Spark helpers
# --------------------------------------------------------------------------------------------


def spark_pairs(spark: SparkSession, pairs: Pairs) -> DataFrame:
    """The pairs as the score job reads them (query_norm, product_id, product_text, text_fingerprint, ds), cached."""
    frame = pd.DataFrame({"query_norm": pairs.queries, "product_id": pairs.product_ids,
                          "product_text": pairs.texts, "ds": BENCH_DS})
    df = spark.createDataFrame(frame)
    df = df.withColumn("text_fingerprint", text_fingerprint(F.col("query_norm"), F.col("product_text"))).cache()
    df.count()
    return df


def collect_scores(scored: DataFrame, pairs: Pairs) -> np.ndarray:
    """The `score` column back in the pairs' order (NaN for a pair that came back without one)."""
    got: pd.DataFrame = scored.select("query_norm", "product_id", "score").toPandas()
    by_key = dict(zip(zip(got["query_norm"], got["product_id"]), got["score"]))
    return np.array([by_key.get(key, np.nan) for key in zip(pairs.queries, pairs.product_ids)], dtype=float)


def spark_scorer(ctx: BenchContext, build: Callable[[DataFrame], DataFrame],
                 counts: Callable[[], tuple[int, int]] | None = None) -> Callable[[Pairs], Scored]:
    """Score pairs with a Spark plan over their cached frame; token counts from accumulator deltas."""

    def score(pairs: Pairs) -> Scored:
        spark, df = ctx.session(), ctx.frame(pairs)
        before = counts() if counts else (0, 0)
        with session_setting(spark, ARROW_BATCH_SETTING, str(ARROW_BATCH_ROWS)):  # as the score job does
            scores = collect_scores(build(df), pairs)
        if counts is None:
            return Scored(scores, None, None)
        after = counts()
        return Scored(scores, after[0] - before[0], after[1] - before[1])

    return score


# --------------------------------------------------------------------------------------------
# The five approaches
# --------------------------------------------------------------------------------------------


def naive_udf(ctx: BenchContext) -> Prepared:
    spark = ctx.session()
    real, padded = spark.sparkContext.accumulator(0), spark.sparkContext.accumulator(0)
    udf = make_naive_udf(ctx.weights_dir, ctx.spark_threads, ctx.max_length, real, padded)
    partitions = spark.sparkContext.defaultParallelism

    def build(df: DataFrame) -> DataFrame:
        return df.repartition(partitions).withColumn("score", udf(F.col("query_norm"), F.col("product_text")))

    return Prepared(spark_scorer(ctx, build, lambda: (real.value, padded.value)), None, f"{ctx.spark_threads} per task")


def cross_encoder(ctx: BenchContext) -> Prepared:
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(ctx.driver_threads)
    quiet_transformers()
    model, load_s = timed(lambda: CrossEncoder(ctx.weights_dir, num_labels=1, max_length=ctx.max_length, device="cpu",
                                                local_files_only=True, activation_fn=torch.nn.Sigmoid()))

    def score(pairs: Pairs) -> Scored:
        torch.set_num_threads(ctx.driver_threads)
        with count_tokens(model) as counter:
            scores = model.predict(pairs.as_tuples(), batch_size=CHUNK_ROWS, show_progress_bar=False,
                                   activation_fn=torch.nn.Sigmoid())
        return Scored(np.asarray(scores, dtype=float), counter["real"], counter["padded"])

    return Prepared(score, load_s, f"{ctx.driver_threads} (driver process)")


def predict_batch(ctx: BenchContext) -> Prepared:
    spark = ctx.session()
    udf = make_predict_batch_udf(ctx.weights_dir, ctx.spark_threads, ctx.max_length)
    partitions = spark.sparkContext.defaultParallelism

    def build(df: DataFrame) -> DataFrame:
        return df.repartition(partitions).withColumn("score", udf("query_norm", "product_text"))

    return Prepared(spark_scorer(ctx, build), None, f"{ctx.spark_threads} per task")


def our_scorer(ctx: BenchContext) -> Prepared:
    torch.set_num_threads(ctx.driver_threads)
    model, load_s = timed(lambda: load_model_version(ctx.model_dir, "cpu"))

    def score(pairs: Pairs) -> Scored:
        torch.set_num_threads(ctx.driver_threads)
        scores, stats = score_pairs(model, pairs.queries, pairs.texts, BATCH_TOKENS, MAX_BATCH_ROWS)
        return Scored(scores, stats.real_tokens, stats.padded_tokens)

    return Prepared(score, load_s, f"{ctx.driver_threads} (driver process)")


def our_score_frame(ctx: BenchContext) -> Prepared:
    spark = ctx.session()
    card = read_card(ctx.model_dir)
    settings = ScorerSpec(model_dir=str(ctx.model_dir), device="cpu", threads_per_task=ctx.spark_threads,
                               batch_tokens=BATCH_TOKENS, max_batch_rows=MAX_BATCH_ROWS)
    counters = ScoreCounters(spark.sparkContext)
    partitions = spark.sparkContext.defaultParallelism
    _, precision = device_and_precision(spark, settings)

    def build(df: DataFrame) -> DataFrame:
        return score_frame(df, settings, card, precision, "bench", partitions, counters)

    def counts() -> tuple[int, int]:
        values = counters.values()
        return values["real_tokens"], values["padded_tokens"]

    return Prepared(spark_scorer(ctx, build, counts), None, f"{ctx.spark_threads} per task")


APPROACHES: dict[str, tuple[str, Approach]] = {
    "naive_udf": ("naive pandas UDF (HF tokenizer, 64-row chunks)", naive_udf),
    "cross_encoder": ("sentence-transformers CrossEncoder.predict (batch 64)", cross_encoder),
    "predict_batch_udf": ("Spark ML predict_batch_udf (batch 64)", predict_batch),
    "our_scorer": ("our scorer: score_pairs, no Spark", our_scorer),
    "our_score_frame": ("our score_frame, Spark local[2]", our_score_frame),
}
REFERENCE = "our_scorer"
BASELINE = "naive_udf"


@contextmanager
def count_tokens(model: torch.nn.Module) -> Iterator[dict[str, int]]:
    """Count real and padded tokens fed to the Hugging Face encoder inside `model` (forward pre-hook).

    The hook sits on the base model (e.g. BertModel): sentence-transformers calls the task model's
    `forward` directly, which bypasses that module's hooks.
    """
    from transformers import PreTrainedModel

    network = next(m for m in model.modules() if isinstance(m, PreTrainedModel)).base_model
    counter = {"real": 0, "padded": 0}

    def hook(_module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        if mask is not None:
            counter["real"] += int(mask.sum())
            counter["padded"] += int(mask.numel())

    handle = network.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counter
    finally:
        handle.remove()
