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

from jobs.core.config import ConfigError, get, set_path
from jobs.core.job import JobContext, JobResult
from jobs.import_edges import catalog_ids, catalog_report, write_rejects
from jobs.readers import (
    JUDGMENT_FORMATS,
    judgments_from_labels,
    read_mapped_table,
    read_quepid_csv,
    read_query_texts,
    read_rre_ratings,
    read_trec_qrels,
)
from jobs.transforms import to_spark
from schemas.tables import JUDGMENTS

JOB = "import-judgments"
NEEDS_DS = False
FLAGS = {"path": "imports.judgments.path", "format": "imports.judgments.format",
         "queries": "imports.judgments.queries", "scheme": "imports.judgments.scheme"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Import judgments from a Quepid CSV export, TREC qrels, RRE ratings JSON, or CSV/Parquet."
    parser.add_argument("--path", help="judgments file (default: imports.judgments.path)")
    parser.add_argument("--format", help=" | ".join(JUDGMENT_FORMATS))
    parser.add_argument("--queries", help="trec: the query_id<TAB>query text file")
    parser.add_argument("--scheme", help="label scheme of the ratings (default: labels.scheme)")


def apply_arguments(cfg: dict, args: argparse.Namespace) -> None:
    for flag, key in FLAGS.items():
        if getattr(args, flag, None):
            set_path(cfg, key, getattr(args, flag))
    if not get(cfg, "imports.judgments.path", None):
        raise ConfigError("import-judgments needs --path FILE (or imports.judgments.path)")
    if str(get(cfg, "imports.judgments.format", "")) not in JUDGMENT_FORMATS:
        raise ConfigError(f"import-judgments needs --format, one of {', '.join(JUDGMENT_FORMATS)}")
    if get(cfg, "imports.judgments.format") == "trec" and not get(cfg, "imports.judgments.queries", None):
        raise ConfigError("import-judgments --format trec needs --queries FILE (query_id<TAB>query text)")
    scheme_name(cfg)


def scheme_name(cfg: dict) -> str:
    name = str(get(cfg, "imports.judgments.scheme", None) or get(cfg, "labels.scheme"))
    if get(cfg, f"labels.schemes.{name}", None) is None:
        raise ConfigError(f"label scheme '{name}' is not in labels.schemes "
                          f"({', '.join(get(cfg, 'labels.schemes', {}) or {})})")
    return name


def read_rows(cfg: dict, path: str, fmt: str) -> pd.DataFrame:
    if fmt == "quepid":
        return read_quepid_csv(path)
    if fmt == "trec":
        return read_trec_qrels(path, read_query_texts(str(get(cfg, "imports.judgments.queries"))))
    if fmt == "rre":
        return read_rre_ratings(path)
    return read_mapped_table(path, fmt, get(cfg, "imports.judgments.mapping", None) or {})


def run(ctx: JobContext) -> JobResult:
    cfg = ctx.cfg
    path, fmt, scheme = str(get(cfg, "imports.judgments.path")), str(get(cfg, "imports.judgments.format")), scheme_name(cfg)
    rows = read_rows(cfg, path, fmt)
    judgments, rejected = judgments_from_labels(rows, get(cfg, f"labels.schemes.{scheme}.grades"), f"{fmt}:{scheme}")
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
