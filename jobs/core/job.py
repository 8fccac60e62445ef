"""What every job shares: its context, its result, and the row it appends to `runs`."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from jobs.core.config import config_hash
from plumbing.delta import Warehouse
from plumbing.errors import one_line
from relevance.settings import Settings
from schemas.tables import RUNS


class JobError(RuntimeError):
    """A job cannot go on; the message is the one line the user sees."""


@dataclass
class JobContext:
    """Everything a job needs: its typed settings, Spark, the warehouse, and its run's identity."""

    job: str
    settings: Settings
    spark: SparkSession
    warehouse: Warehouse
    ds: str | None
    run_id: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8])

    def child(self, job: str) -> "JobContext":
        """A context for a sub-job (nightly's steps): same config and ds, its own run id."""
        return JobContext(job=job, settings=self.settings, spark=self.spark, warehouse=self.warehouse, ds=self.ds)

    def require_ds(self) -> str:
        """The ds of a job that processes one date partition (the CLI requires --ds for such a job)."""
        if self.ds is None:
            raise JobError(f"{self.job} needs a ds (--ds YYYY-MM-DD)")
        return self.ds


@dataclass
class JobResult:
    """Counts a job reports; rows_in = rows_accepted + rows_rejected must hold for every job."""

    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    rows_reused: int = 0
    model_version: str | None = None
    throughput_per_s: float | None = None
    device: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


def record_run(ctx: JobContext, result: JobResult, status: str, error: str | None, started: float) -> None:
    """Append one row to `runs` (one commit)."""
    finished = time.time()
    row = {
        "run_id": ctx.run_id,
        "job": ctx.job,
        "ds": ctx.ds,
        "status": status,
        "error": error,
        "config_hash": config_hash(ctx.settings),
        "model_version": result.model_version,
        "rows_in": result.rows_in,
        "rows_out": result.rows_out,
        "rows_rejected": result.rows_rejected,
        "rows_reused": result.rows_reused,
        "duration_s": round(finished - started, 3),
        "throughput_per_s": result.throughput_per_s,
        "device": result.device,
        "writer": ctx.warehouse.writer,
        "details": json.dumps(result.details, default=str, sort_keys=True),
        "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc),
        "finished_at": dt.datetime.fromtimestamp(finished, dt.timezone.utc),
    }
    df = ctx.spark.createDataFrame([tuple(row[c] for c in RUNS.columns)], RUNS.schema)
    ctx.warehouse.append(df, RUNS, ctx.run_id)


def _forget_cached_frames(spark: SparkSession) -> None:
    """A job's cached frames end with it: the nightly's steps (and the tests) share one JVM, whose heap they would fill."""
    try:
        spark.catalog.clearCache()
    except Exception:  # noqa: BLE001 (the JVM itself may be what failed; the job's own error is the one to report)
        pass


def run_job(ctx: JobContext, body: Callable[[JobContext], JobResult]) -> JobResult:
    """Run a job body, time it, and log success or failure to `runs`; failures re-raise as JobError."""
    started = time.time()
    try:
        result = body(ctx)
    except Exception as exc:
        _forget_cached_frames(ctx.spark)
        message = str(exc) if isinstance(exc, JobError) else one_line(exc)
        if ctx.settings.log_tracebacks:
            traceback.print_exc()
        try:
            record_run(ctx, JobResult(), "failed", message, started)
        except Exception as log_exc:  # the warehouse itself may be what is broken
            message += f" (and the runs table could not be written: {one_line(log_exc)})"
        raise JobError(f"{ctx.job} failed: {message}") from exc
    _forget_cached_frames(ctx.spark)
    record_run(ctx, result, "succeeded", None, started)
    return result


def run_step(ctx: JobContext, job: str) -> JobResult:
    """Run the job named `job` as a step of this one (nightly, demo), with its own run id and `runs` row.

    Steps are found by name, as the CLI finds jobs, so that no job imports another."""
    return run_job(ctx.child(job), importlib.import_module(f"jobs.{job}").run)
