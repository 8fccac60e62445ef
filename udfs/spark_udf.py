"""The pandas UDFs: the one that adapts the pure scorer to Spark (iterator of Arrow batches), and BM25's tokens
computed on executors."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, DoubleType, FloatType, LongType, StringType, StructField, StructType

from udfs.lexical import bm25_tokens
from udfs.runtime import MAX_WORKER_MODELS, check_precision

# The models loaded in this Python worker process, reused by every task it runs, least recently used first: at most
# MAX_WORKER_MODELS (a job scores with one; a worker reused across jobs of a session must not keep every version).
_WORKER_MODELS: OrderedDict[tuple[str, str, str], object] = OrderedDict()


@dataclass(frozen=True)
class ScorerSpec:
    model_dir: str  # a local version folder, or its URI on an object store (each executor machine fetches it once)
    device: str = "auto"  # auto | cpu | cuda
    threads_per_task: int = 1
    batch_tokens: int | None = None  # None: the default of the task's device (udfs.scorer.batch_budget)
    max_batch_rows: int | None = None
    precision: str = "fp32"  # fp32 | int8 (CPU only: ONNX Runtime, dynamically quantized weights; auto device -> CPU)
    storage_options: dict[str, str] = field(default_factory=dict)  # of an object-store model_dir
    cache_dir: str | None = None  # where executors cache a fetched version (None: udfs.model.model_cache_root)

    def __post_init__(self) -> None:
        check_precision(self.precision, self.device)  # on the driver, before any task starts


def worker_model(settings: ScorerSpec):
    """Load (once per worker process, device and precision) the model version for this task's device."""
    import torch

    from udfs.model import fetch_model_version, load_model_version, quiet_transformers, task_device

    device = task_device("cpu" if settings.precision == "int8" else settings.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, settings.threads_per_task))
    key = (settings.model_dir, str(device), settings.precision)
    if key in _WORKER_MODELS:
        _WORKER_MODELS.move_to_end(key)
        return _WORKER_MODELS[key]
    while len(_WORKER_MODELS) >= MAX_WORKER_MODELS:
        _WORKER_MODELS.popitem(last=False)
    quiet_transformers()
    local_dir = fetch_model_version(settings.model_dir, settings.storage_options, settings.cache_dir)
    _WORKER_MODELS[key] = load_model_version(local_dir, device, settings.precision)
    return _WORKER_MODELS[key]


class StatCounters:
    """Spark accumulators that bring the workers' statistics (the attributes FIELDS of a stats object) back to the
    driver."""

    FIELDS: tuple[str, ...] = ()

    def __init__(self, spark_context) -> None:
        self.accumulators = {name: spark_context.accumulator(0) for name in self.FIELDS}

    def add(self, stats) -> None:
        for name, accumulator in self.accumulators.items():
            accumulator.add(getattr(stats, name))

    def values(self) -> dict[str, int]:
        return {name: accumulator.value for name, accumulator in self.accumulators.items()}


class ScoreCounters(StatCounters):
    """The scorer's statistics: pairs, distinct pairs, real and padded tokens, pairs cut at max_length."""

    FIELDS = ("pairs", "unique_pairs", "real_tokens", "padded_tokens", "truncated")


def make_score_udf(settings: ScorerSpec, counters: ScoreCounters | None = None):
    """A pandas UDF (query_norm, product_text) -> calibrated relevance probability."""

    @pandas_udf(DoubleType())  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
    def score_udf(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        from udfs.scorer import EmbeddingCache, score_pairs

        model = worker_model(settings)
        cache = EmbeddingCache()  # this task's: a text repeated across its Arrow batches is embedded once
        for queries, texts in batches:
            scores, stats = score_pairs(
                model, queries.tolist(), texts.tolist(), settings.batch_tokens, settings.max_batch_rows, cache
            )
            if counters is not None:
                counters.add(stats)
            yield pd.Series(scores, index=queries.index)

    return score_udf


@pandas_udf(ArrayType(StringType()))  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
def bm25_tokens_udf(texts: pd.Series) -> pd.Series:
    """udfs.lexical.bm25_tokens of a column of texts, computed on executors."""
    return pd.Series(bm25_tokens(texts.tolist()), index=texts.index)


class EmbedCounters(StatCounters):
    """The embedding UDF's statistics: texts it embedded, real and padded tokens, texts cut at max_length."""

    FIELDS = ("texts", "real_tokens", "padded_tokens", "truncated")


EMBEDDING_TYPE = StructType([StructField("vector", ArrayType(FloatType())), StructField("tokens", LongType())])


def make_embed_udf(settings: ScorerSpec, counters: EmbedCounters | None = None):
    """A pandas UDF text -> struct<vector: array<float>, tokens: long>: a bi-encoder's embedding of each text
    (udfs.scorer.embed_texts), on the device the pair path would use (`worker_model`)."""

    @pandas_udf(EMBEDDING_TYPE)  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
    def embed_udf(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        from udfs.scorer import embed_texts

        model = worker_model(settings)
        for texts in batches:
            vectors, tokens, stats = embed_texts(model, texts.tolist(), settings.batch_tokens, settings.max_batch_rows)
            if counters is not None:
                counters.add(stats)
            yield pd.DataFrame({"vector": list(vectors), "tokens": tokens}, index=texts.index)

    return embed_udf


@pandas_udf(DoubleType())  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
def dot_udf(left: pd.Series, right: pd.Series) -> pd.Series:
    """The dot product of two array<float> columns row by row, in float64 (numpy, one matrix product per batch)."""
    import numpy as np

    if len(left) == 0:
        return pd.Series([], dtype="float64", index=left.index)
    a = np.vstack(left.to_numpy()).astype(np.float64)
    b = np.vstack(right.to_numpy()).astype(np.float64)
    return pd.Series((a * b).sum(axis=1), index=left.index)


def make_bm25_pair_udf(stats):
    """A pandas UDF (query, product text) -> BM25 under the frozen corpus `stats` (udfs.lexical.bm25_pair_scores):
    the lexical term a version's card may add to the logit."""

    @pandas_udf(DoubleType())  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
    def bm25_pair_udf(queries: pd.Series, texts: pd.Series) -> pd.Series:
        from udfs.lexical import bm25_pair_scores

        return pd.Series(bm25_pair_scores(stats, queries.tolist(), texts.tolist()), index=queries.index)

    return bm25_pair_udf
