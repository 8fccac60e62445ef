"""finetune: judgments + catalog -> a new model version (weights, tokenizer, model card), promoted when it wins.

Load (the judgments classified against the catalog's product texts, a catalog sample for the bi-encoder's catalog
stage, the catalog's BM25 statistics, the promoted version) -> compute (relevance.training.pipeline: split, train,
choose the weight mix and BM25 weight, calibrate, evaluate, decide the promotion) -> write (the model version, the
PROMOTED pointer, the rejected judgments). The new version is promoted only when it beats the promoted version and
the zero-shot base on validation by `finetune.promotion_margin` (`--force-promote` overrides).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.core.config import storage_options
from jobs.core.job import JobContext, JobResult
from plumbing.errors import InputError
from relevance.click_model import usable_labels
from relevance.evaluation.baselines import bm25_corpus_stats
from relevance.frames import rejects_frame, whole_queries_up_to
from relevance.pairs import catalog_texts, classify_judgments, latest_entry_first
from relevance.training.pipeline import (
    FinetuneInputs,
    NewVersion,
    catalog_sample_size,
    train_new_version,
    trains_on_catalog,
    weighs_bm25,
)
from relevance.training.promotion import load_promoted
from relevance.training.sources import ClickExamples, uses_clicks
from relevance.training.split import training_examples
from schemas.tables import CATALOG, CLICK_LABELS, JUDGMENTS, REJECTS
from schemas.validate import conform
from udfs.model import promote, promoted_version, resolve_base_model, save_model_version

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


def read_judged_pairs(ctx: JobContext, texts: DataFrame) -> DataFrame:
    """Load: the judgments classified against the catalog's product `texts` (read_catalog_texts), cached."""
    wh = ctx.warehouse
    judgments = conform(wh.read(JUDGMENTS), JUDGMENTS, wh.path(JUDGMENTS.name))
    return classify_judgments(judgments, texts, ctx.settings.labels.active).cache()


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


def read_click_examples(ctx: JobContext, texts: DataFrame) -> ClickExamples:
    """Load: the click labels that may train (finetune.sources), from the `click_labels` partition named by
    finetune.click_labels_ds or else the latest: the finetune.click_model's labels of pairs shown at least
    finetune.click_min_impressions times whose product has a catalog text (`texts`), at most finetune.max_click_examples
    (whole queries, by seed). An InputError, before anything is written, when there are none."""
    wh, tuning = ctx.warehouse, ctx.settings.finetune
    where = wh.path(CLICK_LABELS.name)
    if not wh.exists(CLICK_LABELS.name):
        raise InputError(f"finetune.sources={tuning.sources} needs click labels and there is no click_labels table at "
                         f"{where} (run `python -m jobs click-model --ds D` first); nothing was written")
    labels = conform(wh.read(CLICK_LABELS), CLICK_LABELS, where)
    ds = tuning.click_labels_ds or labels.agg(F.max("ds")).collect()[0][0]
    chosen = usable_labels(labels, ds, tuning.click_model, tuning.click_min_impressions)
    counted = chosen.count()
    with_text = chosen.join(texts, "product_id").select("query_norm", "product_id", "product_text", "label").cache()
    available = with_text.count()
    if available == 0:
        raise InputError(f"finetune.sources={tuning.sources}: {where} holds no {tuning.click_model} label for ds {ds} "
                         f"of a pair shown {tuning.click_min_impressions}+ times whose product is in the catalog "
                         f"({counted} shown that often); nothing was written")
    kept = whole_queries_up_to(with_text, tuning.max_click_examples, tuning.seed) if (
        available > tuning.max_click_examples) else with_text
    frame: pd.DataFrame = kept.toPandas()
    rows = frame.sort_values(["query_norm", "product_id"], ignore_index=True)
    return ClickExamples(rows, where, str(ds), tuning.click_model, available, counted - available)


def load_inputs(ctx: JobContext, base_dir: Path, classified: DataFrame, texts: DataFrame) -> FinetuneInputs:
    """Load: the usable judged pairs (at most finetune.max_examples, whole queries), the catalog sample of the
    catalog stage, the catalog's BM25 statistics (of `texts`), the promoted version and the click labels, as far as
    the settings need them."""
    settings, tuning = ctx.settings, ctx.settings.finetune
    examples, available = training_examples(classified, tuning.max_examples, tuning.seed)
    products = read_catalog_products(ctx, catalog_sample_size(tuning), tuning.seed) if trains_on_catalog(tuning) else []
    bm25 = (bm25_corpus_stats(texts, tuning.lexical_min_df, tuning.lexical_max_tokens) if weighs_bm25(tuning)
            else None)
    promoted = load_promoted(settings.model.models_root, storage_options(settings), settings.model.cache_dir)
    clicks = read_click_examples(ctx, texts) if uses_clicks(tuning) else None
    return FinetuneInputs(base_dir, examples, available, ctx.warehouse.path(JUDGMENTS.name), products, bm25, promoted,
                          clicks)


def run(ctx: JobContext) -> JobResult:
    settings, tuning, wh = ctx.settings, ctx.settings.finetune, ctx.warehouse
    base_dir = resolve_base_model(settings.model.base)
    options = storage_options(settings)
    torch.set_num_threads(tuning.threads or os.cpu_count() or 1)

    # load
    texts = read_catalog_texts(ctx).cache()  # judgments, BM25 and click labels each need them
    classified = read_judged_pairs(ctx, texts)
    rows_in = classified.count()
    compared_with = promoted_version(settings.model.models_root, options)  # what the gate compares against
    inputs = load_inputs(ctx, base_dir, classified, texts)

    # compute
    version = train_new_version(inputs, settings, ctx.run_id)

    # write
    path = save_model_version(settings.model.models_root, version.network, version.tokenizer, version.card,
                              extra_files=version.extra_files, storage_options=options)
    rejected = classified.where(F.col("reason").isNotNull())
    wh.overwrite_partition(rejects_frame(rejected, JOB, JUDGMENTS.name, ctx.run_id, ctx.ds or "all"), REJECTS,
                           {"job": JOB, "ds": ctx.ds or "all"}, ctx.run_id)
    served, said = None, version.why
    if version.promoted:
        promote(settings.model.models_root, version.name, options, expected=compared_with)
        served = version.name
    elif version.fallback is not None:  # nothing promoted and this one lost: the base serves, calibrated
        save_model_version(settings.model.models_root, version.fallback.network, version.fallback.tokenizer,
                           version.fallback.card, extra_files=version.fallback.extra_files, storage_options=options)
        promote(settings.model.models_root, version.fallback.card.version, options, expected=compared_with)
        served, said = version.fallback.card.version, f"{said}; {version.fallback.card.promotion['decision']}"
    print(f"finetune: {said}")

    rows_used = int(classified.where(F.col("reason").isNull()).count())
    return job_result(ctx, version, inputs, str(path), rows_in, rows_used, served)


def job_result(ctx: JobContext, version: NewVersion, inputs: FinetuneInputs, path: str, rows_in: int,
               rows_used: int, served: str | None) -> JobResult:
    """The run's counts, details and one-line summary."""
    tuning, history, card = ctx.settings.finetune, version.history, version.card
    test_metrics, threshold, k = card.metrics["test"], card.threshold, ctx.settings.audit.ks[-1]
    return JobResult(
        rows_in=rows_in,
        rows_out=rows_used,
        rows_rejected=rows_in - rows_used,
        model_version=version.name,
        throughput_per_s=version.pairs_per_second,
        device="cpu",
        details={"model_dir": path, "kind": tuning.kind, "unique_pairs": len(inputs.examples),
                 "usable_pairs": inputs.available, "train_seconds": history.train_seconds,
                 "catalog_seconds": history.catalog_seconds, "test": test_metrics, "threshold": threshold,
                 "lexical_weight": card.lexical_weight, "promoted": version.promoted, "promotion": card.promotion,
                 "serving": served or (inputs.promoted.version if inputs.promoted else None),
                 "sources": history.sources},
        summary=f"model {version.name} ({tuning.kind}) saved to {path}; held-out nDCG@{k} "
        f"{test_metrics.get(f'ndcg@{k}', float('nan')):.3f}, F1 {test_metrics['f1']:.3f} at threshold {threshold:.3f}; "
        f"trained in {history.train_seconds + history.catalog_seconds:.0f}s (the catalog stage "
        f"{history.catalog_seconds:.0f}s); {'promoted' if version.promoted else 'NOT promoted'} ({version.why})"
        + (f"; the zero-shot base serves as {served}" if served and not version.promoted else ""),
    )
