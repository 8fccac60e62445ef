"""vacuum: remove files no Delta log references (orphans of killed runs, replaced files) older than a retention period.

Readers never see such files (reads go through the Delta log); this only frees their space. Keep the
retention longer than the longest job: a running job's files are referenced only once it commits.
"""

from __future__ import annotations

import argparse

from jobs.core.job import JobContext, JobResult

JOB = "vacuum"
NEEDS_DS = False
FLAGS = ("warehouse.vacuum_retention_hours", "warehouse.vacuum_dry_run")  # --retention-hours, --dry-run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Delete files under the warehouse's Delta tables that no Delta log references, once old enough."


def run(ctx: JobContext) -> JobResult:
    hours = ctx.settings.warehouse.vacuum_retention_hours
    dry_run = ctx.settings.warehouse.vacuum_dry_run
    removed = ctx.warehouse.vacuum(hours, dry_run=dry_run)
    total = sum(len(files) for files in removed.values())
    verb = "would remove" if dry_run else "removed"
    return JobResult(
        rows_in=total, rows_out=total, details={"retention_hours": hours, "dry_run": dry_run,
                                                "files": {t: len(f) for t, f in removed.items()}},
        summary=f"vacuum {verb} {total} unreferenced files older than {hours} h from {len(removed)} tables"
                + "".join(f"\n  {t}: {len(f)}" for t, f in removed.items() if f),
    )
