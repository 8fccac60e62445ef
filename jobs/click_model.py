"""click-model: fit position bias and click labels (PBM by EM, SDBN) over a window of query_log days ending at --ds.

Load the window's events -> `relevance.click_model.fit_click_models` -> write `click_labels` and
`click_model_positions` (partition ds = the window's last day) and this job's `rejects`. Rows in = the window's
events; rows rejected = events that cannot be read plus those of searches left out by the per-client click cap.
"""

from __future__ import annotations

import argparse
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.core.job import JobContext, JobResult
from relevance.click_model import MODELS, fit_click_models, window_days
from relevance.frames import rejects_frame
from schemas.tables import CLICK_LABELS, CLICK_MODEL_POSITIONS, QUERY_LOG, REJECTS, TableSpec
from schemas.validate import conform

JOB = "click-model"
FLAGS = ("click_model.days", "click_model.max_iterations")  # --days, --max-iterations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Fit the position bias (PBM by EM) and each (query, product)'s click label (PBM and SDBN) "
                          "over --days days of query_log ending at --ds; writes click_labels and click_model_positions.")


def _as_table(df: DataFrame, spec: TableSpec, run_id: str, ds: str) -> DataFrame:
    full = df.withColumn("run_id", F.lit(run_id)).withColumn("ds", F.lit(ds))
    return full.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in spec.schema.fields])


def read_window(ctx: JobContext, days: list[str]) -> tuple[DataFrame, dict[str, int]]:
    """The window's events (each day's partition, read through the Delta log) and the events per day."""
    wh = ctx.warehouse
    if not wh.exists(QUERY_LOG.name):
        raise FileNotFoundError(f"no query_log at {wh.path(QUERY_LOG.name)}: a click model needs logged searches")
    frames = [conform(wh.read(QUERY_LOG, {"ds": day}), QUERY_LOG, wh.path(QUERY_LOG.name)) for day in days]
    events = reduce(DataFrame.unionByName, frames).cache()
    per_day = {day: 0 for day in days} | {r["ds"]: r["count"] for r in events.groupBy("ds").count().collect()}
    return events, per_day


def run(ctx: JobContext) -> JobResult:
    wh, ds = ctx.warehouse, ctx.require_ds()
    settings = ctx.settings.click_model
    days = window_days(ds, settings.days)
    events, per_day = read_window(ctx, days)
    rows_in = sum(per_day.values())
    if rows_in == 0:
        raise FileNotFoundError(f"query_log has no events for ds {days[0]}..{days[-1]} in {wh.path(QUERY_LOG.name)}")

    fitted = fit_click_models(events, settings, days)

    labels = _as_table(fitted.labels, CLICK_LABELS, ctx.run_id, ds).cache()
    positions = _as_table(fitted.positions, CLICK_MODEL_POSITIONS, ctx.run_id, ds)
    rejects = rejects_frame(fitted.rejects, JOB, QUERY_LOG.name, ctx.run_id, ds).cache()
    n_labels, n_rejected = labels.count(), rejects.count()
    wh.check_replace(CLICK_LABELS, n_labels, {"ds": ds}, "the window's query_log")
    written = wh.overwrite_partition(labels, CLICK_LABELS, {"ds": ds}, ctx.run_id)
    wh.overwrite_partition(positions, CLICK_MODEL_POSITIONS, {"ds": ds}, ctx.run_id)
    wh.overwrite_partition(rejects, REJECTS, {"job": JOB, "ds": ds}, ctx.run_id)
    by_reason = {r["reason"]: r["count"] for r in rejects.groupBy("reason").count().collect()}

    empty_days = [day for day, n in per_day.items() if n == 0]
    notes = list(fitted.notes)
    if empty_days:
        notes.append(f"{len(empty_days)} of {len(days)} days of the window have no events ({', '.join(empty_days)})")
    details = fitted.details | {"window": [days[0], days[-1]], "events_per_day": per_day, "days_without_events":
                                empty_days, "events_used": rows_in - n_rejected, "rejects_by_reason": by_reason,
                                "notes": notes}
    summary = (f"click-model {days[0]}..{days[-1]} ({len(days)} days): {rows_in} events ({n_rejected} rejected) -> "
               f"{details['searches']} searches, {details['pairs']} pairs x {len(MODELS)} models = "
               f"{written} click_labels rows\n" + "\n".join(f"  - {note}" for note in notes))
    return JobResult(rows_in=rows_in, rows_out=written, rows_rejected=n_rejected, details=details, summary=summary)
