"""generate: write the synthetic demo inputs (catalog, query_log, judgments, ground_truth) to the warehouse."""

from __future__ import annotations

import argparse

from jobs.core.config import set_path
from jobs.core.job import JobContext, JobResult
from relevance.data.demo import generate_demo
from relevance.frames import to_spark
from schemas.tables import CATALOG, GROUND_TRUTH, JUDGMENTS, QUERY_LOG

JOB = "generate"
NEEDS_DS = False
FLAGS = {"seed": "generate.seed", "products": "generate.n_products", "queries": "generate.n_queries",
         "days": "generate.n_days", "end_date": "generate.end_date", "searches_per_day": "generate.searches_per_day"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Generate deterministic synthetic demo data (catalog, UBI-style query log, judgments, hidden truth)."
    parser.add_argument("--seed", type=int, help="random seed (default: generate.seed)")
    parser.add_argument("--products", type=int, help="number of products")
    parser.add_argument("--queries", type=int, help="number of distinct query intents")
    parser.add_argument("--days", type=int, help="days of logs, ending at --end-date")
    parser.add_argument("--end-date", dest="end_date", help="last day of logs, YYYY-MM-DD")
    parser.add_argument("--searches-per-day", dest="searches_per_day", type=int, help="searches per day")


def apply_arguments(cfg: dict, args: argparse.Namespace) -> None:
    for flag, key in FLAGS.items():
        if getattr(args, flag, None) is not None:
            set_path(cfg, key, getattr(args, flag))


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
