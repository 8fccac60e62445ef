"""Spark schemas of every table in the warehouse.

Column names are contracts: downstream SQL depends on them. Add columns freely;
rename or drop only with a migration note in the README.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from schemas.limits import MAX_EVENT_LEAD_DAYS, MAX_POSITION, MIN_EVENT_TIME  # noqa: F401  (part of the contract)


@dataclass(frozen=True)
class TableSpec:
    """A warehouse table: its schema, its partition columns and which columns an input must have.

    `may_be_emptied`: a replace may leave it (or a partition) without rows (rejects: a clean rerun has none);
    every other table holding rows is never replaced by none without --allow-empty (plumbing.delta)."""

    name: str
    schema: StructType
    partition_by: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    may_be_emptied: bool = False

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]


def _struct(*fields: tuple[str, DataType]) -> StructType:
    return StructType([StructField(name, dtype, True) for name, dtype in fields])


S, L, I, D, T = StringType(), LongType(), IntegerType(), DoubleType(), TimestampType()  # noqa: E741 (I: IntegerType)

# Plausible values of query_log events; importers and build_pairs reject events outside them.

QUERY_LOG = TableSpec(
    "query_log",
    _struct(
        ("query_id", S),
        ("client_id", S),
        ("session_id", S),
        ("user_query", S),
        ("timestamp", T),
        ("action_name", S),
        ("object_id", S),
        ("position", L),
        ("ds", S),
    ),
    partition_by=("ds",),
    required=("query_id", "user_query", "timestamp", "action_name", "object_id", "position"),
)

CATALOG = TableSpec(
    "catalog",
    _struct(
        ("product_id", S),
        ("title", S),
        ("description", S),
        ("brand", S),
        ("category", S),
        ("attributes", MapType(S, S)),
        ("updated_at", T),
    ),
    required=("product_id", "title", "brand", "category", "attributes"),
)

JUDGMENTS = TableSpec(
    "judgments",
    _struct(("query", S), ("product_id", S), ("grade", L), ("label", S), ("source", S)),
    required=("query", "product_id", "grade"),
)

GROUND_TRUTH = TableSpec(
    "ground_truth",
    _struct(("query", S), ("product_id", S), ("grade", L)),
    required=("query", "product_id", "grade"),
)

PAIRS = TableSpec(
    "pairs",
    _struct(
        ("query_norm", S),
        ("product_id", S),
        ("impressions", L),
        ("clicks", L),
        ("carts", L),
        ("purchases", L),
        ("mean_position", D),
        ("ctr_smoothed", D),
        ("query_searches", L),
        ("segment", S),
        ("source", S),
        ("product_text", S),
        ("text_fingerprint", S),
        ("run_id", S),
        ("ds", S),
    ),
    partition_by=("ds",),
    required=("query_norm", "product_id", "product_text", "text_fingerprint", "segment", "ds"),
)

RELEVANCE = TableSpec(
    "relevance",
    _struct(
        ("query_norm", S),
        ("product_id", S),
        ("score", D),
        ("grade_pred", L),
        ("model_version", S),
        ("precision", S),  # what the network computed in (fp32 | int8 | bf16 | fp16); null in rows from before it was kept
        ("text_fingerprint", S),
        ("run_id", S),
        ("scored_at", T),
        ("reused", BooleanType()),
        # the query's order re-ranked by MMR over the model's product embeddings (1 first), when
        # scoring.diverse_lambda is set (the lambda is in the score run's `runs` details); null otherwise
        ("rank_diverse", L),
        ("ds", S),
    ),
    partition_by=("ds",),
    required=("query_norm", "product_id", "score", "model_version", "ds"),
)

# A bi-encoder's embedding of each distinct text it scored, keyed by (model_version, precision, kind,
# text_fingerprint): `score` embeds only the texts of a day this table lacks, then scores pairs by a dot product of
# two rows (relevance.embeddings). A cache: removing rows costs re-embedding, never a wrong score; `vacuum` drops the
# vectors of versions no score run has used within scoring.embeddings_retention_days.
EMBEDDINGS = TableSpec(
    "embeddings",
    _struct(
        ("model_version", S),
        ("precision", S),  # what the network computed in (fp32 | bf16 | fp16): vectors of two precisions differ
        ("kind", S),  # query | product
        ("text_fingerprint", S),  # sha-256 of the exact text embedded (32 hex characters)
        ("vector", ArrayType(FloatType())),  # mean-pooled, L2-normalized, float32
        ("text_length", L),  # characters of the text
        ("tokens", L),  # tokens embedded ([CLS] and [SEP] included, after truncation at the card's max_length)
        ("run_id", S),  # the score run that embedded it
        ("embedded_at", T),
        ("ds", S),  # the day that run scored
    ),
    partition_by=("model_version",),
    required=("model_version", "precision", "kind", "text_fingerprint", "vector"),
    may_be_emptied=True,  # a cache: vacuum empties the partitions of versions past their retention
)

# Each audited query's top-k products over the whole catalog by the serving bi-encoder's exact dot product of the
# `embeddings` vectors (relevance.retrieval), with whether the engine showed them that day. Written by `retrieve`.
CATALOG_TOPK = TableSpec(
    "catalog_topk",
    _struct(
        ("query_norm", S),
        ("product_id", S),
        ("rank", L),  # 1..k by score desc, then product_id asc
        ("score", D),  # the retrieval score: the cosine of the two normalized vectors (float32 vectors, summed in double)
        ("relevance_score", D),  # the pair's calibrated score as `relevance` gives it (cosine + the lexical term, Platt)
        ("shown_by_engine", BooleanType()),  # the day's pairs hold (query_norm, product_id) with impressions > 0
        ("in_pairs", BooleanType()),  # the day's pairs hold it at all (shown, clicked, or a judged candidate)
        ("segment", S),  # the query's frequency segment that day (head | torso | tail); null for a judged query not logged
        ("query_searches", L),  # the query's searches that day (0 for a judged query not logged)
        ("judged", BooleanType()),  # the query has judgments (audit.judgments_table)
        ("model_version", S),
        ("precision", S),
        ("k", L),  # audit.retrieval.k of the run
        ("run_id", S),
        ("ds", S),
    ),
    partition_by=("ds",),
    required=("query_norm", "product_id", "rank", "score", "shown_by_engine", "model_version", "ds"),
)

# One row per (query, product, click model) of a window of query_log days ending at ds (relevance.click_model).
CLICK_LABELS = TableSpec(
    "click_labels",
    _struct(
        ("query_norm", S),
        ("product_id", S),
        ("click_model", S),  # pbm | sdbn
        ("window_start", S),
        ("window_end", S),
        ("window_days", L),
        ("query_searches", L),  # searches of the query in the window
        ("impressions", L),  # searches that showed the product (an impression, or an action on it)
        ("clicks", L),  # of those, searches with a click, cart or purchase on it
        ("carts", L),
        ("purchases", L),
        ("mean_position", D),
        ("weighted_clicks", D),  # clicks with carts and purchases weighted
        ("examined", D),  # expected examined impressions under the model (plus the extra weight)
        ("effective_impressions", D),  # examined + the prior's strength: the n of the interval
        ("attractiveness", D),
        ("satisfaction", D),  # sdbn: last clicks / clicks; null for pbm
        ("relevance", D),  # the estimate (posterior mean): pbm attractiveness; sdbn attractiveness x satisfaction
        ("ci_low", D),  # its interval at click_model.confidence
        ("ci_high", D),
        ("label", D),  # the click label to rank or train by: ci_low (a pair needs evidence to rank high)
        ("prior_mean", D),  # the Beta prior's mean of attractiveness (pairs shown about as often)
        ("model_params", S),  # JSON: the model, its weights, prior and fitted position bias
        ("run_id", S),
        ("ds", S),  # the window's last day
    ),
    partition_by=("ds",),
    required=("query_norm", "product_id", "click_model", "relevance", "ds"),
)

# The fitted examination probability per position, with the run of click_labels that used it.
CLICK_MODEL_POSITIONS = TableSpec(
    "click_model_positions",
    _struct(
        ("click_model", S),
        ("position", L),
        ("examination", D),  # P(examined | position), the top position's held at 1
        ("impressions", L),
        ("clicks", L),
        ("ctr", D),
        ("identified", BooleanType()),  # fitted (or the reference); false: carried or no bias assumed
        ("source", S),
        ("window_start", S),
        ("window_end", S),
        ("run_id", S),
        ("ds", S),
    ),
    partition_by=("ds",),
    required=("position", "examination", "ds"),
)

RELEVANCE_AUDIT = TableSpec(
    "relevance_audit",
    _struct(
        ("run_id", S),
        ("model_version", S),
        ("system", S),
        ("segment", S),
        ("metric", S),
        ("k", L),
        ("threshold", D),
        ("value", D),
        ("support", L),
        ("ci_low", D),
        ("ci_high", D),
        ("baseline", S),
        ("baseline_value", D),
        ("definition", S),
        ("created_at", T),
        ("ds", S),
    ),
    partition_by=("ds",),
)

RUNS = TableSpec(
    "runs",
    _struct(
        ("run_id", S),
        ("job", S),
        ("ds", S),
        ("status", S),
        ("error", S),
        ("config_hash", S),
        ("model_version", S),
        ("rows_in", L),
        ("rows_out", L),
        ("rows_rejected", L),
        ("rows_reused", L),
        ("duration_s", D),
        ("throughput_per_s", D),
        ("device", S),
        ("writer", S),
        ("details", S),
        ("started_at", T),
        ("finished_at", T),
    ),
)

REJECTS = TableSpec(
    "rejects",
    _struct(
        ("job", S),
        ("source_table", S),
        ("reason", S),
        ("raw", S),
        ("run_id", S),
        ("rejected_at", T),
        ("ds", S),
    ),
    partition_by=("job", "ds"),
    may_be_emptied=True,
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        QUERY_LOG,
        CATALOG,
        JUDGMENTS,
        GROUND_TRUTH,
        PAIRS,
        RELEVANCE,
        EMBEDDINGS,
        CATALOG_TOPK,
        RELEVANCE_AUDIT,
        CLICK_LABELS,
        CLICK_MODEL_POSITIONS,
        RUNS,
        REJECTS,
    )
}
