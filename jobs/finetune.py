"""finetune: judgments + catalog -> a new model version (weights, tokenizer, model card), promoted when it wins.

Queries are split into train / validation / test (no query in two splits). Two kinds of
network (`finetune.kind`): a bi-encoder, the base sentence-embedding model itself fine-tuned
so that the cosine of query and product orders the pairs by grade (CoSENT loss; it starts
from the zero-shot quality, first trained on pseudo-queries made from the catalog's own
products: relevance.training.catalog_queries), or a cross-encoder with a new head that
learns graded relevance (target = grade / top grade). Training runs a fixed number of epochs (the same model for the
same data, settings and seed, whatever the machine's load); the best epoch by validation
nDCG@10 is kept; with `finetune.lexical_weights`, validation also chooses how much BM25 (the
catalog's statistics frozen into the version) is added to the logit; Platt scaling on
validation turns logits into the probability that a product is relevant; thresholds are chosen
on validation and metrics are reported on the held-out test queries. The new version is
promoted only when it beats the promoted version and the zero-shot base on validation by
`finetune.promotion_margin` (`--force-promote` overrides).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.core.config import storage_options
from jobs.core.job import JobContext, JobResult
from relevance.evaluation.baselines import bm25_corpus_stats
from relevance.frames import rejects_frame
from relevance.pairs import catalog_texts, classify_judgments, latest_entry_first
from relevance.settings import FinetuneSettings, LabelScheme
from relevance.training.calibration import calibrate_on_validation
from relevance.training.card import SPLIT_FILE, model_card, split_queries, version_name
from relevance.training.catalog_queries import distinct_query_batches, pseudo_query_pairs
from relevance.training.catalog_training import starting_network
from relevance.training.distributed import train_distributed
from relevance.training.evaluate import evaluate, predict_logits
from relevance.training.loop import train_network
from relevance.training.promotion import promotion_gate, validation_rivals
from relevance.training.split import data_fingerprint, split_examples, training_examples
from relevance.training.weights import apply_weight_mix, choose_lexical_weight, choose_weight_mix
from schemas.tables import CATALOG, JUDGMENTS, REJECTS
from schemas.validate import conform
from udfs.card import ModelCard, calibrate
from udfs.lexical import LEXICAL_FILE, Bm25Stats, bm25_pair_scores
from udfs.model import BI_ENCODER, promote, resolve_base_model, save_model_version

if TYPE_CHECKING:
    from transformers import PreTrainedModel

JOB = "finetune"
FLAGS = ("finetune.force_promote",)  # --force-promote


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fine-tune the model (finetune.kind: bi_encoder or cross_encoder) on judgments and save a new model version; "
        "it is promoted only when it beats the promoted version and the zero-shot base on validation. "
        "Name it with --set finetune.version=NAME (default: <kind>-<time>-<data fingerprint>)."
    )


def read_catalog_texts(ctx: JobContext) -> DataFrame:
    """Load: (product_id, product_text) of every usable catalog product (build_pairs' texts)."""
    wh = ctx.warehouse
    catalog = conform(wh.read(CATALOG), CATALOG, wh.path(CATALOG.name))
    return catalog_texts(catalog, ctx.settings.pairs)[0]


def read_judged_pairs(ctx: JobContext) -> DataFrame:
    """Load: the judgments classified against the catalog's product texts (build_pairs' texts), cached."""
    wh = ctx.warehouse
    judgments = conform(wh.read(JUDGMENTS), JUDGMENTS, wh.path(JUDGMENTS.name))
    return classify_judgments(judgments, read_catalog_texts(ctx), ctx.settings.labels.active).cache()


def weighs_bm25(tuning: FinetuneSettings) -> bool:
    """Whether validation may add BM25 to the logit (a weight above 0 in `finetune.lexical_weights`)."""
    return any(weight > 0 for weight in tuning.lexical_weights)


def read_catalog_products(ctx: JobContext, limit: int, seed: int) -> list[dict[str, Any]]:
    """Load: up to `limit` catalog products (the latest entry of each, chosen by a hash of seed and product_id) with
    the fields pseudo-queries are made of and build_pairs' product text, in product_id order."""
    wh, settings = ctx.warehouse, ctx.settings
    catalog = conform(wh.read(CATALOG), CATALOG, wh.path(CATALOG.name))
    sample = (catalog.withColumn("_rank", F.row_number().over(latest_entry_first())).where(F.col("_rank") == 1).drop("_rank")
              .orderBy(F.xxhash64(F.lit(seed), "product_id"), "product_id").limit(limit))
    texts, _ = catalog_texts(sample, settings.pairs)
    rows = (sample.join(texts, "product_id").select("product_id", "title", "brand", "category", "attributes", "product_text")
            .orderBy("product_id").collect())
    return [row.asDict(recursive=True) for row in rows]


def trains_on_catalog(tuning: FinetuneSettings) -> bool:
    """A bi-encoder with `catalog_steps` trains on the catalog's pseudo-queries first; a cross-encoder does not."""
    return tuning.kind == BI_ENCODER and tuning.catalog_steps > 0


def catalog_batches(products: list[dict[str, Any]],
                    tuning: FinetuneSettings) -> tuple[list[list[tuple[str, str]]], dict[str, Any]]:
    """Compute: the pseudo-query batches of the bi-encoder's catalog stage and how the sample covered the catalog;
    none without products, or when fewer than `catalog_min_coverage` of them say what they are (the plan says so)."""
    pairs = pseudo_query_pairs(products, tuning.catalog_brand_share, tuning.seed)
    coverage = len(pairs) / len(products) if products else 0.0
    plan: dict[str, Any] = {"sampled_products": len(products), "with_pseudo_query": len(pairs), "coverage": round(coverage, 4)}
    if products and coverage < tuning.catalog_min_coverage:
        plan["skipped"] = (f"catalog stage skipped: {len(pairs)} of {len(products)} sampled products ({coverage:.0%}) have a "
                           f"category or product type, under finetune.catalog_min_coverage={tuning.catalog_min_coverage:g}")
        return [], plan
    return distinct_query_batches(pairs, tuning.batch_size, tuning.catalog_steps), plan


def fine_tune(base_dir: Path, parts: dict[str, Any], tuning: FinetuneSettings, scheme: LabelScheme,
              catalog: list[list[tuple[str, str]]], catalog_plan: dict[str, Any]) -> tuple[Any, PreTrainedModel, dict[str, Any]]:
    """Compute: for a bi-encoder, train the base on the `catalog` pseudo-query batches first; then on the train split
    (in `tuning.processes` processes), keep the best epoch and, for a bi-encoder, the best mix with the base weights;
    returns (tokenizer, network, history)."""
    relevant_min_grade, gain = scheme.relevant_min_grade, scheme.gain
    if tuning.processes > 1:
        tokenizer, network, history = train_distributed(str(base_dir), parts["train"], parts["val"], scheme.top_grade,
                                                        tuning, relevant_min_grade, gain, tuning.processes, catalog)
    else:
        tokenizer, network, catalog_history = starting_network(str(base_dir), tuning, catalog)
        network, history = train_network(
            tokenizer, network, parts["train"], parts["val"], scheme.top_grade, tuning, relevant_min_grade, gain
        )
        history["catalog"] = catalog_history
    history["catalog"] = {**catalog_plan, **history["catalog"]}
    network, history["weight_mix"] = choose_weight_mix(tokenizer, network, str(base_dir), parts["val"], tuning,
                                                       relevant_min_grade, gain)
    if history["weight_mix"]["val_ndcg"] is not None:  # the validation quality of the weights kept
        history["best_val_ndcg"] = history["weight_mix"]["val_ndcg"]
    return tokenizer, network, history


def refit_with_validation(base_dir: Path, parts: dict[str, Any], tuning: FinetuneSettings, scheme: LabelScheme,
                          catalog: list[list[tuple[str, str]]], share: float) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Compute (`finetune.refit`): train the starting network again on the train and validation pairs for
    `tuning.epochs` epochs, keep the last and mix it with the base at the `share` validation chose; returns
    (network, history). Its validation nDCG is in-sample, logged only."""
    tokenizer, network, _ = starting_network(str(base_dir), tuning, catalog)
    both = pd.concat([parts["train"], parts["val"]], ignore_index=True)
    network, history = train_network(tokenizer, network, both, parts["val"], scheme.top_grade, tuning,
                                     scheme.relevant_min_grade, scheme.gain, keep_last=True)
    return apply_weight_mix(network, str(base_dir), share), {
        "pairs": len(both), "epochs": history["epochs"], "train_seconds": history["train_seconds"], "share": share}


@dataclass
class NewVersion:
    """What the compute step made: the version's files (network, tokenizer, card, split) and whether to promote it."""

    tokenizer: Any
    network: PreTrainedModel
    card: ModelCard
    split: str
    lexical: Bm25Stats | None  # the frozen BM25 statistics the card's lexical weight scores with

    @property
    def extra_files(self) -> dict[str, str]:
        """The version's files besides weights, tokenizer and card: its split, and its BM25 statistics when used."""
        lexical = {LEXICAL_FILE: self.lexical.to_json()} if self.card.lexical_weight and self.lexical else {}
        return {SPLIT_FILE: self.split, **lexical}

    @property
    def name(self) -> str:
        return self.card.version

    @property
    def promoted(self) -> bool:
        return self.card.promoted

    @property
    def why(self) -> str:
        return str(self.card.promotion["decision"])


def new_version(ctx: JobContext, base_dir: Path, parts: dict[str, Any], catalog: list[list[tuple[str, str]]],
                catalog_plan: dict[str, Any], fingerprint: str, storage_options: dict[str, str],
                bm25_stats: Bm25Stats | None) -> NewVersion:
    """Compute: train, choose the BM25 weight (given `bm25_stats`), calibrate on validation, evaluate on the held-out
    test queries and decide the promotion."""
    settings, tuning, scheme = ctx.settings, ctx.settings.finetune, ctx.settings.labels.active
    tokenizer, network, history = fine_tune(base_dir, parts, tuning, scheme, catalog, catalog_plan)
    val_logits = predict_logits(tokenizer, network, parts["val"], tuning.max_length, tuning.kind)
    lexical: tuple[float, Bm25Stats | None] = (0.0, None)
    if bm25_stats is not None:
        val = parts["val"]
        val_bm25 = bm25_pair_scores(bm25_stats, val.query_norm.tolist(), val.product_text.tolist())
        history["lexical"] = choose_lexical_weight(val, val_logits, val_bm25, tuning, scheme.relevant_min_grade,
                                                   scheme.gain)
        history["best_val_ndcg"] = history["lexical"]["val_ndcg"]
        lexical = (history["lexical"]["weight"], bm25_stats)
        val_logits = predict_logits(tokenizer, network, val, tuning.max_length, tuning.kind, lexical)
    calibration = calibrate_on_validation(val_logits, parts["val"].grade.to_numpy(), scheme,
                                          settings.audit.target_precision)
    if tuning.refit:  # calibrated above on the scores of a model that never saw the validation pairs
        network, history["refit"] = refit_with_validation(base_dir, parts, tuning, scheme, catalog,
                                                          history["weight_mix"]["share"])
    test_logits = predict_logits(tokenizer, network, parts["test"], tuning.max_length, tuning.kind, lexical)
    test_scores = calibrate(test_logits, calibration.platt["a"], calibration.platt["b"])
    test_metrics = evaluate(parts["test"], test_scores, calibration.threshold, scheme.relevant_min_grade, scheme.gain,
                            list(settings.audit.ks))

    rivals = validation_rivals(parts["val"], base_dir, settings.model.models_root, tuning, scheme.relevant_min_grade,
                               scheme.gain, storage_options, settings.model.cache_dir)
    promoted, why = promotion_gate(history["best_val_ndcg"], rivals, tuning)
    now = dt.datetime.now(dt.timezone.utc)
    card = model_card(settings, version_name(tuning, fingerprint, now), now, ctx.run_id, fingerprint, parts, history,
                      calibration, test_metrics, rivals, promoted, why)
    return NewVersion(tokenizer, network, card, split_queries(parts), bm25_stats)


def run(ctx: JobContext) -> JobResult:
    settings, tuning, wh = ctx.settings, ctx.settings.finetune, ctx.warehouse
    base_dir = resolve_base_model(settings.model.base)
    models_root = settings.model.models_root
    options = storage_options(settings)
    torch.set_num_threads(tuning.threads or os.cpu_count() or 1)

    # load
    classified = read_judged_pairs(ctx)
    rows_in = classified.count()
    examples, available = training_examples(classified, tuning.max_examples, tuning.seed)
    products = (read_catalog_products(ctx, 2 * tuning.catalog_steps * tuning.batch_size, tuning.seed)
                if trains_on_catalog(tuning) else [])
    bm25_stats = bm25_corpus_stats(read_catalog_texts(ctx)) if weighs_bm25(tuning) else None

    # compute
    if len(examples) < available:
        print(f"finetune: {available} usable judged pairs, more than finetune.max_examples={tuning.max_examples}: "
              f"training on the {len(examples)} pairs of whole queries chosen by seed {tuning.seed}")
    parts = split_examples(examples, tuning.seed, tuning.val_fraction, tuning.test_fraction, wh.path(JUDGMENTS.name))
    fingerprint = data_fingerprint(examples)
    print(f"finetune: {len(examples)} judged pairs ({', '.join(f'{n} {len(p)}' for n, p in parts.items())}) "
          f"from {settings.model.base}, a {tuning.kind}")
    catalog, catalog_plan = catalog_batches(products, tuning)
    if "skipped" in catalog_plan:
        print(f"finetune: {catalog_plan['skipped']}")
    version = new_version(ctx, base_dir, parts, catalog, catalog_plan, fingerprint, options, bm25_stats)

    # write
    path = save_model_version(models_root, version.network, version.tokenizer, version.card,
                              extra_files=version.extra_files, storage_options=options)
    rejected = classified.where(F.col("reason").isNotNull())
    wh.overwrite_partition(rejects_frame(rejected, JOB, JUDGMENTS.name, ctx.run_id, ctx.ds or "all"), REJECTS,
                           {"job": JOB, "ds": ctx.ds or "all"}, ctx.run_id)
    if version.promoted:
        promote(models_root, version.name, options)
    print(f"finetune: {version.why}")

    rows_used = int(classified.where(F.col("reason").isNull()).count())
    history, test_metrics, threshold = version.card.training, version.card.metrics["test"], version.card.threshold
    k = settings.audit.ks[-1]
    catalog_seconds = history.get("catalog", {}).get("seconds", 0.0)
    return JobResult(
        rows_in=rows_in,
        rows_out=rows_used,
        rows_rejected=rows_in - rows_used,
        model_version=version.name,
        throughput_per_s=len(parts["train"]) * len(history["epochs"]) / max(history["train_seconds"], 1e-9),
        device="cpu",
        details={"model_dir": str(path), "kind": tuning.kind, "unique_pairs": len(examples), "usable_pairs": available,
                 "train_seconds": history["train_seconds"], "catalog_seconds": catalog_seconds, "test": test_metrics,
                 "threshold": threshold, "lexical_weight": version.card.lexical_weight, "promoted": version.promoted,
                 "promotion": version.card.promotion},
        summary=f"model {version.name} ({tuning.kind}) saved to {path}; held-out nDCG@{k} "
        f"{test_metrics.get(f'ndcg@{k}', float('nan')):.3f}, F1 {test_metrics['f1']:.3f} at threshold {threshold:.3f}; "
        f"trained in {history['train_seconds'] + catalog_seconds:.0f}s (the catalog stage {catalog_seconds:.0f}s); "
        f"{'promoted' if version.promoted else 'NOT promoted'} ({version.why})",
    )
