"""build_pairs: one day's query log + catalog (+ judged candidates) -> `pairs` for that ds.

Every event of the day either contributes to a pair or goes to `rejects` with a reason.
"""

from __future__ import annotations

import argparse
from functools import reduce

from pyspark.sql import DataFrame

from jobs.core.job import JobContext, JobResult
from relevance.frames import rejects_frame
from relevance.pairs import BuiltPairs, build_pairs, offline_pairs
from schemas.tables import CATALOG, JUDGMENTS, PAIRS, QUERY_LOG, REJECTS
from schemas.validate import conform

JOB = "build_pairs"
def write_rejects(ctx: JobContext, built: BuiltPairs) -> dict[str, int]:
    """Replace this job's rejects of the ds with the built ones; returns their count per source table."""
    ds = ctx.require_ds()
    frames = [rejects_frame(df, JOB, source, ctx.run_id, ds) for source, df in built.rejects.items()]
    all_rejects = reduce(DataFrame.unionByName, frames).cache()
    ctx.warehouse.overwrite_partition(all_rejects, REJECTS, {"job": JOB, "ds": ds}, ctx.run_id)
    return {r["source_table"]: r["count"] for r in all_rejects.groupBy("source_table").count().collect()}


def run_offline(ctx: JobContext, catalog: DataFrame, judgments: DataFrame | None) -> JobResult:
    """No `query_log` table at all: the pairs of the ds are the judged candidates (offline evaluation)."""
    wh, ds = ctx.warehouse, ctx.require_ds()
    if judgments is None:
        raise FileNotFoundError(f"nothing to pair: no query_log at {wh.path(QUERY_LOG.name)} and no judgments at "
                                f"{wh.path(JUDGMENTS.name)}")
    judgments = judgments.cache()
    rows_in = judgments.count()
    if rows_in == 0:
        raise FileNotFoundError(f"nothing to pair: no query_log at {wh.path(QUERY_LOG.name)} and judgments at "
                                f"{wh.path(JUDGMENTS.name)} is empty")
    built = offline_pairs(catalog, judgments, ctx.settings.pairs, ds, ctx.run_id, ctx.settings.labels.active)
    pairs = built.pairs.cache()
    written = wh.overwrite_partition(pairs, PAIRS, {"ds": ds}, ctx.run_id)
    by_source = write_rejects(ctx, built)
    used = built.events_accepted.count()
    queries = pairs.select("query_norm").distinct().count()
    return JobResult(
        rows_in=rows_in,
        rows_out=written,
        rows_rejected=by_source.get(JUDGMENTS.name, 0),
        details={"mode": "offline (no query_log)", "judgments_used": used, "queries": queries,
                 "rejects_by_source": by_source},
        summary=f"no query_log: offline evaluation, {rows_in} judgments -> {written} judged pairs of {queries} queries "
                f"({used} judgments used, {rows_in - used} rejected)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Aggregate one day's query log into query x product pairs with behavior counts and product text."


def run(ctx: JobContext) -> JobResult:
    wh, ds = ctx.warehouse, ctx.require_ds()
    catalog = conform(wh.read(CATALOG), CATALOG, wh.path(CATALOG.name))
    judgments = conform(wh.read(JUDGMENTS), JUDGMENTS, wh.path(JUDGMENTS.name)) if wh.exists(JUDGMENTS.name) else None
    if not wh.exists(QUERY_LOG.name):
        return run_offline(ctx, catalog, judgments)
    events = conform(wh.read(QUERY_LOG, {"ds": ds}), QUERY_LOG, wh.path(QUERY_LOG.name))

    events = events.cache()
    rows_in = events.count()
    if rows_in == 0:
        raise FileNotFoundError(f"query_log has no events for ds={ds} in {wh.path(QUERY_LOG.name)}")
    built = build_pairs(events, catalog, judgments, ctx.settings.pairs, ds, ctx.run_id, ctx.settings.labels.active)

    pairs = built.pairs.cache()
    written = wh.overwrite_partition(pairs, PAIRS, {"ds": ds}, ctx.run_id)
    by_source = write_rejects(ctx, built)
    accepted = built.events_accepted.count()
    segments = {r["segment"]: r["count"] for r in pairs.groupBy("segment").count().collect()}
    return JobResult(
        rows_in=rows_in,
        rows_out=written,
        rows_rejected=by_source.get(QUERY_LOG.name, 0),
        details={"events_accepted": accepted, "rejects_by_source": by_source, "pairs_by_segment": segments},
        summary=f"{rows_in} events -> {written} pairs ({accepted} events used, {rows_in - accepted} rejected)",
    )
