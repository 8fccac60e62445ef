"""vacuum: remove files no Delta log references (orphans of killed runs, replaced files) older than a retention period.

Readers never see such files (reads go through the Delta log); this only frees their space. Keep the
retention longer than the longest job: a running job's files are referenced only once it commits. A retention
below plumbing.delta.MIN_VACUUM_RETENTION_HOURS (24 h) is refused before Spark starts unless `--unsafe` is
given (for a warehouse no job is writing to); `--dry-run` deletes nothing and takes any retention.

First it removes (one commit per version) the `embeddings` vectors of model versions that no score run has used and
none has embedded with for `scoring.embeddings_retention_days`: re-embedding them would cost time, never a score.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from pyspark.sql import functions as F

from jobs.core.config import ConfigError, Settings
from jobs.core.job import JobContext, JobResult
from plumbing.delta import MIN_VACUUM_RETENTION_HOURS, vacuum_retention_problem
from relevance.embeddings import expired_versions
from schemas.tables import EMBEDDINGS, RUNS
from schemas.validate import conform

JOB = "vacuum"
NEEDS_DS = False
FLAGS = ("warehouse.vacuum_retention_hours", "warehouse.vacuum_dry_run",
         "warehouse.vacuum_unsafe")  # --retention-hours, --dry-run, --unsafe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Delete files under the warehouse's Delta tables that no Delta log references, once old "
                          f"enough (--retention-hours: at least {MIN_VACUUM_RETENTION_HOURS} without --unsafe).")


def check_settings(settings: Settings) -> None:
    """A retention vacuum must not run with stops the job before Spark starts (exit 2)."""
    warehouse = settings.warehouse
    problem = vacuum_retention_problem(warehouse.vacuum_retention_hours,
                                       warehouse.vacuum_unsafe or warehouse.vacuum_dry_run)
    if problem:
        raise ConfigError(f"warehouse.vacuum_retention_hours: {problem}")


def expire_embeddings(ctx: JobContext, dry_run: bool) -> dict[str, Any]:
    """Remove the vectors of model versions past `scoring.embeddings_retention_days` (relevance.embeddings.
    expired_versions): each version's partition replaced by none, one commit each; nothing when `dry_run`."""
    wh, days = ctx.warehouse, ctx.settings.scoring.embeddings_retention_days
    report: dict[str, Any] = {"versions_removed": [], "vectors_removed": 0, "retention_days": days,
                                 "dry_run": dry_run}
    if not wh.exists(EMBEDDINGS.name):
        return report
    table = conform(wh.read(EMBEDDINGS), EMBEDDINGS, wh.path(EMBEDDINGS.name))
    runs = conform(wh.read(RUNS), RUNS, wh.path(RUNS.name)) if wh.exists(RUNS.name) else None
    expired = expired_versions(table, runs, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days))
    if not expired:
        return report
    vectors = table.where(F.col("model_version").isin(expired)).count()
    if not dry_run:
        nothing = ctx.spark.createDataFrame([], EMBEDDINGS.schema)
        for version in expired:
            wh.overwrite_partition(nothing, EMBEDDINGS, {"model_version": version}, ctx.run_id)
    return {**report, "versions_removed": expired, "vectors_removed": vectors}


def run(ctx: JobContext) -> JobResult:
    check_settings(ctx.settings)  # also when run as a step, not from the CLI
    hours = ctx.settings.warehouse.vacuum_retention_hours
    dry_run = ctx.settings.warehouse.vacuum_dry_run
    unsafe = ctx.settings.warehouse.vacuum_unsafe
    embeddings = expire_embeddings(ctx, dry_run)
    expired, vectors = embeddings["versions_removed"], embeddings["vectors_removed"]
    removed = ctx.warehouse.vacuum(hours, dry_run=dry_run, unsafe=unsafe)
    total = sum(len(files) for files in removed.values())
    verb = "would remove" if dry_run else "removed"
    return JobResult(
        rows_in=total, rows_out=total, details={"retention_hours": hours, "dry_run": dry_run, "unsafe": unsafe,
                                                "files": {t: len(f) for t, f in removed.items()},
                                                "embeddings": embeddings},
        summary=f"vacuum {verb} {total} unreferenced files older than {hours} h from {len(removed)} tables"
                + "".join(f"\n  {t}: {len(f)}" for t, f in removed.items() if f)
                + (f"\nvacuum {verb} the {vectors} vectors of {len(expired)} model versions unused for "
                   f"{ctx.settings.scoring.embeddings_retention_days} days from embeddings: {', '.join(expired)}"
                   if expired else ""),
    )
