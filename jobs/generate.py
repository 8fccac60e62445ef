"""generate: write the synthetic demo inputs (catalog, query_log, judgments, ground_truth) to the warehouse."""

from __future__ import annotations

import argparse

from jobs.core.job import JobContext, JobResult
from relevance.data.demo import generate_demo
from relevance.frames import to_spark
from schemas.tables import CATALOG, GROUND_TRUTH, JUDGMENTS, QUERY_LOG

JOB = "generate"
NEEDS_DS = False
FLAGS = ("generate.seed", "generate.n_products", "generate.n_queries", "generate.n_days", "generate.end_date",
         "generate.searches_per_day")  # the settings this job sets from its flags (jobs/__main__.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Generate deterministic synthetic demo data (catalog, UBI-style query log, judgments, hidden truth)."


def run(ctx: JobContext) -> JobResult:
    g = ctx.settings.generate
    frames = generate_demo(
        seed=g.seed, n_products=g.n_products, n_queries=g.n_queries, n_days=g.n_days, end_date=g.end_date,
        searches_per_day=g.searches_per_day, page_size=g.page_size, judged_queries=g.judged_queries,
        judgments_per_query=g.judgments_per_query, label_noise=g.label_noise,
    )
    frames["query_log"]["ds"] = frames["query_log"]["timestamp"].dt.strftime("%Y-%m-%d")
    frames["judgments"]["source"] = f"demo-seed-{g.seed}"
    written = {}
    for spec in (CATALOG, QUERY_LOG, JUDGMENTS, GROUND_TRUTH):
        written[spec.name] = ctx.warehouse.replace(to_spark(ctx.spark, frames[spec.name], spec), spec, ctx.run_id)
    days = sorted(frames["query_log"]["ds"].unique())
    total = sum(written.values())
    return JobResult(
        rows_in=total, rows_out=total, details={"rows": written, "days": days},
        summary="demo data written: " + ", ".join(f"{k} {v}" for k, v in written.items()) + f"; days {days[0]}..{days[-1]}",
    )
