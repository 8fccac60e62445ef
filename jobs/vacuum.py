"""vacuum: remove files no Delta log references (orphans of killed runs, replaced files) older than a retention period.

Readers never see such files (reads go through the Delta log); this only frees their space. Keep the
retention longer than the longest job: a running job's files are referenced only once it commits. A retention
below plumbing.delta.MIN_VACUUM_RETENTION_HOURS (24 h) is refused before Spark starts unless `--unsafe` is
given (for a warehouse no job is writing to); `--dry-run` deletes nothing and takes any retention.
"""

from __future__ import annotations

import argparse

from jobs.core.config import ConfigError, Settings
from jobs.core.job import JobContext, JobResult
from plumbing.delta import MIN_VACUUM_RETENTION_HOURS, vacuum_retention_problem

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


def run(ctx: JobContext) -> JobResult:
    check_settings(ctx.settings)  # also when run as a step, not from the CLI
    hours = ctx.settings.warehouse.vacuum_retention_hours
    dry_run = ctx.settings.warehouse.vacuum_dry_run
    unsafe = ctx.settings.warehouse.vacuum_unsafe
    removed = ctx.warehouse.vacuum(hours, dry_run=dry_run, unsafe=unsafe)
    total = sum(len(files) for files in removed.values())
    verb = "would remove" if dry_run else "removed"
    return JobResult(
        rows_in=total, rows_out=total, details={"retention_hours": hours, "dry_run": dry_run, "unsafe": unsafe,
                                                "files": {t: len(f) for t, f in removed.items()}},
        summary=f"vacuum {verb} {total} unreferenced files older than {hours} h from {len(removed)} tables"
                + "".join(f"\n  {t}: {len(f)}" for t, f in removed.items() if f),
    )
