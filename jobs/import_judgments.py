"""import-judgments: a team's own relevance judgments -> `judgments` (replaced).

Formats (`--format`): `quepid` (Quepid CSV export: query,docid,rating), `trec` (qrels, with `--queries` a
query_id<TAB>text file), `rre` (Rated Ranking Evaluator ratings JSON), `csv` / `parquet` with the column mapping
of `imports.judgments.mapping`. Ratings become grades through the label scheme (`--scheme`, default
`labels.scheme`; conf/labels.yaml). Rows without a query, product id or a known rating go to `rejects` (job
import-judgments, ds "all"); judged products missing from the catalog are reported.
"""

from __future__ import annotations

import argparse

import pandas as pd

from jobs.core.config import ConfigError, Settings
from jobs.core.imports import catalog_ids, catalog_report, write_rejects
from jobs.core.job import JobContext, JobResult
from relevance.data.readers import (
    JUDGMENT_FORMATS,
    judgments_from_labels,
    read_mapped_table,
    read_quepid_csv,
    read_query_texts,
    read_rre_ratings,
    read_trec_qrels,
)
from relevance.frames import to_spark
from relevance.settings import JudgmentsImport
from schemas.tables import JUDGMENTS

JOB = "import-judgments"
NEEDS_DS = False
# --path, --format, --queries, --scheme
FLAGS = ("imports.judgments.path", "imports.judgments.format", "imports.judgments.queries", "imports.judgments.scheme")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Import judgments from a Quepid CSV export, TREC qrels, RRE ratings JSON, or CSV/Parquet."


def check_settings(settings: Settings) -> None:
    config = settings.imports.judgments
    if not config.path:
        raise ConfigError("import-judgments needs --path FILE (or imports.judgments.path)")
    if config.format is None:
        raise ConfigError(f"import-judgments needs --format, one of {', '.join(JUDGMENT_FORMATS)}")
    if config.format == "trec" and not config.queries:
        raise ConfigError("import-judgments --format trec needs --queries FILE (query_id<TAB>query text)")


def read_rows(config: JudgmentsImport, path: str, fmt: str) -> pd.DataFrame:
    if fmt == "quepid":
        return read_quepid_csv(path)
    if fmt == "trec":
        return read_trec_qrels(path, read_query_texts(str(config.queries)))
    if fmt == "rre":
        return read_rre_ratings(path)
    return read_mapped_table(path, fmt, config.mapping)


def run(ctx: JobContext) -> JobResult:
    config = ctx.settings.imports.judgments
    path, fmt = str(config.path), str(config.format)
    scheme = config.scheme or ctx.settings.labels.scheme  # validate() checked that it exists
    rows = read_rows(config, path, fmt)
    judgments, rejected = judgments_from_labels(rows, ctx.settings.labels.named(scheme).grades, f"{fmt}:{scheme}")
    ctx.warehouse.check_replace(JUDGMENTS, len(judgments), source=f"{path} ({len(rejected)} rows rejected)")
    written = ctx.warehouse.replace(to_spark(ctx.spark, judgments, JUDGMENTS), JUDGMENTS, ctx.run_id)
    n_rejected = write_rejects(ctx, JOB, {f"judgments_{fmt}": rejected})
    details, phrase = catalog_report(judgments["product_id"], catalog_ids(ctx))
    details.update({"path": path, "format": fmt, "scheme": scheme, "queries": int(judgments["query"].nunique()),
                    "grades": {str(k): int(v) for k, v in judgments["grade"].value_counts().sort_index().items()},
                    "rejects_by_reason": rejected["reason"].value_counts().to_dict()})
    return JobResult(
        rows_in=len(rows), rows_out=written, rows_rejected=n_rejected, details=details,
        summary=f"judgments from {path} ({fmt}, scheme {scheme}): {details['queries']} queries, {len(rows)} rows -> "
                f"judgments {written}, {n_rejected} rejected; {phrase}",
    )
