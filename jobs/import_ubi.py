"""import-ubi: OpenSearch User Behavior Insights (UBI) ndjson -> `query_log` (the whole table is replaced).

Reads UBI queries and events, as OpenSearch bulk files (an {"index": {"_index": "ubi_queries"|"ubi_events"}}
line before each document) or as plain one-document-per-line ndjson, from one file (`--path`) or two
(`--queries`, `--events`). Each event gets its query's `user_query` (by query_id), a UTC timestamp,
ds = its UTC date, object_id and a 1-based position. Events that cannot be mapped go to `rejects`
(job import-ubi, ds "all") with a reason: rows_in = events read (plus unreadable lines) = written + rejected.
Rejected: lines that are not UTF-8 or not JSON, events without a known query, with an unparsable or implausible
timestamp (before 2000 or in the future), an implausible position, no object for a product action, and duplicates
(a second event with the same bulk `_id`; without ids, the same document again).
"""

from __future__ import annotations

import argparse

import pandas as pd

from jobs.core.config import ConfigError, Settings
from jobs.core.imports import catalog_ids, catalog_report, write_rejects
from jobs.core.job import JobContext, JobResult
from relevance.data.importers import EVENTS, QUERIES, query_texts, read_ubi, ubi_query_log
from relevance.frames import to_spark
from relevance.pairs import ACTION_COUNTS
from schemas.tables import QUERY_LOG

JOB = "import-ubi"
NEEDS_DS = False
# --path, --queries, --events (inputs: files named on the command line replace those in the config), --position-base
FLAGS = ("imports.ubi.path", "imports.ubi.queries", "imports.ubi.events", "imports.ubi.position_base")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Import OpenSearch UBI queries and events (ndjson, plain or bulk format) into query_log."


def check_settings(settings: Settings) -> None:
    input_files(settings)  # fail early, as a configuration error, when no input is named


def input_files(settings: Settings) -> list[tuple[str, str | None]]:
    """The files to read, each with the kind of document it holds (None: both, told apart per line)."""
    config = settings.imports.ubi
    path, queries, events = config.path, config.queries, config.events
    if path and not (queries or events):
        return [(str(path), None)]
    if queries and events and not path:
        return [(str(queries), QUERIES), (str(events), EVENTS)]
    raise ConfigError("import-ubi needs either --path FILE or both --queries FILE and --events FILE")


# ---- the job ----------------------------------------------------------------------------

def run(ctx: JobContext) -> JobResult:
    position_base = ctx.settings.imports.ubi.position_base
    files = input_files(ctx.settings)
    documents = read_ubi(files)
    texts, conflicting = query_texts(documents.queries)
    product_actions = list(ACTION_COUNTS)
    log, rejected = ubi_query_log(documents.events, texts, product_actions, position_base, documents.event_ids)
    rejected = pd.concat([documents.unreadable, rejected], ignore_index=True)
    source = " and ".join(path for path, _ in files)
    ctx.warehouse.check_replace(QUERY_LOG, len(log), source=f"{source} ({len(rejected)} lines or events rejected)")

    written = ctx.warehouse.replace(to_spark(ctx.spark, log, QUERY_LOG), QUERY_LOG, ctx.run_id)
    n_rejected = write_rejects(ctx, JOB, {"ubi_events": rejected})
    # only product actions (those build_pairs counts) name a catalog product; filters and searches do not
    details, phrase = catalog_report(log.loc[log["action_name"].isin(product_actions), "object_id"], catalog_ids(ctx))
    days = sorted(log["ds"].unique())
    details.update({
        "queries_read": len(documents.queries), "distinct_query_ids": len(texts),
        "query_ids_with_conflicting_text": conflicting, "events_read": len(documents.events),
        "unreadable_lines": len(documents.unreadable), "position_base": position_base,
        "days": days, "actions": log["action_name"].value_counts().to_dict(),
        "rejects_by_reason": rejected["reason"].value_counts().to_dict(),
    })
    rows_in = len(documents.events) + len(documents.unreadable)
    span = f" over {len(days)} days ({days[0]}..{days[-1]})" if days else ""
    return JobResult(
        rows_in=rows_in, rows_out=written, rows_rejected=n_rejected, details=details,
        summary=f"UBI: {len(documents.queries)} queries, {rows_in} events -> {written} query_log rows{span}, "
                f"{n_rejected} rejected; {phrase}",
    )
