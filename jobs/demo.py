"""demo: the whole product on the embedded default: generate -> finetune -> nightly -> tables and a SQL example."""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.core.job import JobContext, JobResult, run_step
from schemas.tables import TABLES

JOB = "demo"
OUTPUT_TABLES = ("pairs", "relevance", "embeddings", "catalog_topk", "relevance_audit", "runs", "rejects")
EXAMPLE_SQL = Path(__file__).resolve().parent.parent / "sql" / "irrelevant_in_top_slots.sql"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Run the demo end to end: generate data, fine-tune, nightly for --ds, print the audit and tables."


def run(ctx: JobContext) -> JobResult:
    for step in ("generate", "finetune"):
        result = run_step(ctx, step)
        print(f"[{step}] {result.summary}", flush=True)
    outcome = run_step(ctx, "nightly")
    print(f"[nightly] {outcome.summary}\n")

    wh = ctx.warehouse
    print(f"Delta tables under {wh.root}:")
    for name in (n for n in OUTPUT_TABLES if wh.exists(n)):  # embeddings, catalog_topk: with retrieve
        table = wh.delta_table(name)
        print(f"  {name:<16} {wh.path(name)}  (version {table.version()}, {table.count()} rows)")
    for name in ("relevance", "pairs"):
        wh.read(TABLES[name]).createOrReplaceTempView(name)
    query = EXAMPLE_SQL.read_text().replace("${ds}", str(ctx.ds))
    print(f"\nExample SQL ({EXAMPLE_SQL.relative_to(EXAMPLE_SQL.parent.parent)}):\n" + query)
    ctx.spark.sql(query).show(5, truncate=50)
    print("Open any table with deltalake.DeltaTable(path), DuckDB's delta_scan(path), or Spark with delta-spark.")
    return JobResult(rows_in=outcome.rows_in, rows_out=outcome.rows_out, rows_rejected=outcome.rows_rejected,
                     model_version=outcome.model_version, throughput_per_s=outcome.throughput_per_s,
                     summary="demo finished")
