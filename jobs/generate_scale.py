"""generate-scale: write a large synthetic day (catalog, query_log of --ds, judgments) with Spark, for benchmarks."""

from __future__ import annotations

import argparse

from jobs.core.job import JobContext, JobResult
from relevance.data import scale as scale_data
from relevance.settings import LabelScheme
from schemas.tables import CATALOG, JUDGMENTS, QUERY_LOG

JOB = "generate-scale"
NEEDS_DS = True
FLAGS = ("generate_scale.seed", "generate_scale.n_products", "generate_scale.pairs")  # --seed, --products, --pairs
ROWS_PER_FILE = 1_000_000   # at most about this many rows per written file (more partitions beyond)
ACTIONS = ("impression", "click", "add_to_cart", "purchase")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Generate a large deterministic synthetic day with Spark: a catalog, the query log of --ds "
                          "with --pairs distinct (query, product) pairs, and judgments of a bounded set of its queries.")


def grade_labels(scheme: LabelScheme) -> dict[int, str]:
    """grade -> the label scheme's first label of that grade."""
    labels: dict[int, str] = {}
    for label, grade in scheme.grades.items():
        labels.setdefault(int(grade), str(label))
    return labels


def run(ctx: JobContext) -> JobResult:
    g = ctx.settings.generate_scale
    seed, n_products, per_query = g.seed, g.n_products, g.candidates_per_query
    shape = scale_data.ScaleShape(seed, n_products, g.pairs // per_query, per_query)
    judged = min(g.judged_queries, shape.n_queries)
    parallelism = ctx.spark.sparkContext.defaultParallelism
    wh, ds = ctx.warehouse, ctx.require_ds()

    written = {
        CATALOG.name: wh.replace(scale_data.catalog(ctx.spark, seed, n_products, ds,
                                                    max(parallelism, n_products // ROWS_PER_FILE)), CATALOG, ctx.run_id),
        QUERY_LOG.name: wh.overwrite_partition(
            scale_data.query_log(ctx.spark, shape, ds, max(parallelism, 2 * shape.n_queries * per_query // ROWS_PER_FILE)),
            QUERY_LOG, {"ds": ds}, ctx.run_id),
        JUDGMENTS.name: wh.replace(scale_data.judgments(ctx.spark, shape, judged, grade_labels(ctx.settings.labels.active),
                                                        f"scale-seed-{seed}"), JUDGMENTS, ctx.run_id),
    }
    counted = wh.read(QUERY_LOG, {"ds": ds}).groupBy("action_name").count().collect()
    by_action = {a: 0 for a in ACTIONS} | {r["action_name"]: r["count"] for r in counted}
    pairs = shape.n_queries * per_query
    total = sum(written.values())
    return JobResult(
        rows_in=total, rows_out=total,
        details={"rows": written, "events_by_action": by_action, "queries": shape.n_queries, "pairs": pairs,
                 "searches": by_action["impression"] // per_query, "judged_queries": judged, "seed": seed},
        summary=f"scale data for {ds} (seed {seed}): " + ", ".join(f"{k} {v}" for k, v in written.items())
                + f" rows; {shape.n_queries} queries x {per_query} candidates = {pairs} pairs, "
                f"{by_action['impression'] // per_query} searches, {judged} judged queries; events: "
                + ", ".join(f"{k} {v}" for k, v in by_action.items()),
    )
