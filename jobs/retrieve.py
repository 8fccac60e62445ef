"""retrieve: the serving bi-encoder's top-k over the whole catalog for the day's audited queries -> `catalog_topk`.

Load (the serving model version's card, the day's pairs, the judgments, the catalog's product texts, this version's
vectors in `embeddings`) -> compute (relevance.retrieval: embed the texts the table lacks, top-k by exact dot
product on executors, the engine's flags) -> write (the new vectors appended to `embeddings`, the ds partition of
`catalog_topk` replaced in one commit). A cross-encoder version has no embeddings: the job says so in one line and
writes nothing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from pyspark import StorageLevel
from pyspark.sql import functions as F

from jobs.core.config import storage_options
from jobs.core.job import JobContext, JobError, JobResult
from relevance.embeddings import vectors_of_texts
from relevance.pairs import catalog_texts
from relevance.retrieval import (
    audited_queries,
    catalog_topk_rows,
    keyed_vectors,
    query_matrix,
    retrieval_texts,
    top_k_over_catalog,
)
from relevance.scoring import device_and_precision, product_text_mismatch, scorer_spec, serving_note
from schemas.tables import CATALOG, CATALOG_TOPK, EMBEDDINGS, JUDGMENTS, PAIRS
from schemas.validate import conform
from udfs.card import BI_ENCODER
from udfs.model import fetch_model_version, locate_model_version, read_card, read_lexical_stats
from udfs.spark_udf import EmbedCounters

JOB = "retrieve"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("The serving bi-encoder's top-k products over the whole catalog for the day's judged and "
                          "most searched queries, against what the engine showed, into `catalog_topk`.")


def run(ctx: JobContext) -> JobResult:
    wh, ds, spark, settings = ctx.warehouse, ctx.require_ds(), ctx.spark, ctx.settings
    config = settings.audit.retrieval
    options = storage_options(settings)
    location = locate_model_version(settings.model.models_root, settings.model.version, options)
    model_dir = fetch_model_version(location, options, settings.model.cache_dir)
    card = read_card(model_dir)
    serving = serving_note(card, settings.model.version)
    if card.kind != BI_ENCODER:
        return JobResult(model_version=card.version, details={"skipped": f"{card.kind} has no embeddings",
                                                              "serving": serving},
                         summary=f"catalog retrieval skipped: model {card.version} is a {card.kind} (it reads each "
                                 "pair whole, so it has no embeddings to search the catalog with); catalog_topk "
                                 "was not written")
    mismatch = product_text_mismatch(card, settings.pairs)
    if mismatch:
        raise JobError(f"{JOB}: {mismatch}")
    lexical = read_lexical_stats(model_dir, card)

    pairs = conform(wh.read(PAIRS, {"ds": ds}), PAIRS, wh.path(PAIRS.name)).cache()
    if not pairs.take(1):
        raise FileNotFoundError(f"pairs has no rows for ds={ds} in {wh.path(PAIRS.name)} (run build_pairs first)")
    judgments_spec = replace(JUDGMENTS, name=settings.audit.judgments_table)
    judgments = (conform(wh.read(judgments_spec), judgments_spec, wh.path(judgments_spec.name))
                 if wh.exists(judgments_spec.name) else None)
    products = catalog_texts(conform(wh.read(CATALOG), CATALOG, wh.path(CATALOG.name)), settings.pairs)[0]
    products = products.persist(StorageLevel.MEMORY_AND_DISK)
    queries = audited_queries(pairs, judgments, config.queries).cache()

    spec = scorer_spec(spark, settings.scoring, str(location), options, settings.model.cache_dir)
    device, precision = device_and_precision(spark, spec)
    table = (conform(wh.read(EMBEDDINGS, {"model_version": card.version}), EMBEDDINGS, wh.path(EMBEDDINGS.name))
             if wh.exists(EMBEDDINGS.name) else None)
    partitions = spark.sparkContext.defaultParallelism
    started = time.time()
    new_vectors, vectors = vectors_of_texts(retrieval_texts(queries, products), table, spec, card.version, precision,
                                            ctx.run_id, ds, partitions, EmbedCounters(spark.sparkContext))
    new_vectors = new_vectors.persist(StorageLevel.MEMORY_AND_DISK)
    embedded = {row["kind"]: int(row["count"]) for row in new_vectors.groupBy("kind").count().collect()}
    embed_seconds = time.time() - started

    names, matrix = query_matrix(keyed_vectors(queries, "query_norm", "query", vectors))
    if not names:
        return JobResult(model_version=card.version, details={"serving": serving, "queries": 0},
                         summary=f"catalog retrieval: no judged or logged query for ds={ds}; catalog_topk was not "
                                 "written")
    product_vectors = keyed_vectors(products, "product_text", "product", vectors).select("product_id", "vector")
    product_partitions = (partitions if config.product_partitions == "auto" else int(config.product_partitions))
    started = time.time()
    top = top_k_over_catalog(spark, matrix, product_vectors, config.k, config.query_block, product_partitions)
    rows = catalog_topk_rows(top, names, queries, products, pairs, card, lexical, precision, config.k, ctx.run_id,
                             ds).persist(StorageLevel.MEMORY_AND_DISK)
    rows.count()
    retrieve_seconds = time.time() - started
    catalog_size = products.count()

    if sum(embedded.values()):
        wh.append(new_vectors, EMBEDDINGS, ctx.run_id)  # new keys only: the texts the table lacked
    written = wh.overwrite_partition(rows, CATALOG_TOPK, {"ds": ds}, ctx.run_id)
    top10 = rows.where((F.col("rank") <= config.top_share_k) & (F.col("query_searches") > 0)).agg(
        F.avg(F.when(F.col("shown_by_engine"), 0.0).otherwise(1.0)).alias("unshown")).first()
    rows.unpersist()
    new_vectors.unpersist()
    products.unpersist()
    pairs_scored = len(names) * catalog_size
    throughput = pairs_scored / retrieve_seconds if retrieve_seconds > 0 else None
    judged = queries.where(F.col("judged")).count()
    unshown = top10["unshown"] if top10 is not None else None
    return JobResult(
        rows_in=len(names), rows_out=written, rows_rejected=0, model_version=card.version,
        throughput_per_s=throughput, device=device,
        details={"serving": serving, "queries": len(names), "judged_queries": judged, "catalog_products": catalog_size,
                 "k": config.k, "texts_embedded": sum(embedded.values()), "queries_embedded": embedded.get("query", 0),
                 "products_embedded": embedded.get("product", 0), "embed_seconds": round(embed_seconds, 3),
                 "retrieve_seconds": round(retrieve_seconds, 3), "dot_products": pairs_scored,
                 "product_partitions": product_partitions, "precision": precision,
                 "retrieval_score": "cosine of the normalized embeddings (the dense part); relevance_score: the "
                                    "calibrated pair score with the card's lexical term"},
        summary=f"catalog_topk: top {config.k} of {catalog_size} products for {len(names)} queries ({judged} judged) "
                f"with {card.version} in {retrieve_seconds:.1f}s ({throughput or 0:,.0f} dot products/s), "
                f"{sum(embedded.values())} texts embedded (the rest from embeddings); {written} rows"
                + (f"; {unshown:.1%} of the model's top {config.top_share_k} of the day's logged queries never shown "
                   "by the engine"
                   if unshown is not None else ""),
    )
