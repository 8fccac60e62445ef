"""import-wands: the Wayfair WANDS data set (product.csv, query.csv, label.csv) -> `catalog` and `judgments`.

Both tables are replaced. Labels Exact/Partial/Irrelevant are graded by the config's
`labels.schemes.wands.grades`. Rows that cannot be used go to `rejects` (job import-wands, ds "all"):
rows_in = products + labels read (+ unreadable query.csv lines) = catalog + judgments written + rejected.
The files are read line by line without CSV quoting (a WANDS title may open with an inch mark): a line that is
not UTF-8 or has the wrong number of tab-separated fields is rejected with its line number.
"""

from __future__ import annotations

import argparse

import pandas as pd

from jobs.core.config import ConfigError, Settings
from jobs.core.imports import write_rejects
from jobs.core.job import JobContext, JobResult
from relevance.data.importers import read_wands, wands_catalog, wands_judgments
from relevance.frames import to_spark
from schemas.tables import CATALOG, JUDGMENTS

JOB = "import-wands"
NEEDS_DS = False
FLAGS = ("imports.wands.path",)  # --path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Import WANDS (Wayfair ANnotation DataSet) products and labels into catalog and judgments."


def check_settings(settings: Settings) -> None:
    if not settings.imports.wands.path:
        raise ConfigError("import-wands needs --path DIR (or imports.wands.path)")


def run(ctx: JobContext) -> JobResult:
    folder = str(ctx.settings.imports.wands.path)
    files = read_wands(folder)
    grades = ctx.settings.labels.named("wands").grades
    catalog, catalog_rejects = wands_catalog(files.products, pd.Timestamp.now(tz="UTC"))
    judgments, judgment_rejects = wands_judgments(files.labels, files.queries, grades)
    rejected = {
        "wands.product": pd.concat([files.unreadable["product.csv"], catalog_rejects], ignore_index=True),
        "wands.label": pd.concat([files.unreadable["label.csv"], judgment_rejects], ignore_index=True),
        "wands.query": files.unreadable["query.csv"],
    }
    for spec, frame, name in ((CATALOG, catalog, "product.csv"), (JUDGMENTS, judgments, "label.csv")):
        ctx.warehouse.check_replace(spec, len(frame), source=f"{folder}/{name} ({len(rejected['wands.' + name[:-4]])} rejected)")

    written = {
        CATALOG.name: ctx.warehouse.replace(to_spark(ctx.spark, catalog, CATALOG), CATALOG, ctx.run_id),
        JUDGMENTS.name: ctx.warehouse.replace(to_spark(ctx.spark, judgments, JUDGMENTS), JUDGMENTS, ctx.run_id),
    }
    n_rejected = write_rejects(ctx, JOB, rejected)
    rows_in = len(files.products) + len(files.labels) + sum(len(f) for f in files.unreadable.values())
    rows_out = sum(written.values())
    return JobResult(
        rows_in=rows_in, rows_out=rows_out, rows_rejected=n_rejected,
        details={"rows": written, "products_read": len(files.products), "labels_read": len(files.labels),
                 "queries_read": len(files.queries), "labels": judgments["label"].value_counts().to_dict(),
                 "unreadable_lines": {name: len(f) for name, f in files.unreadable.items()},
                 "rejects_by_reason": pd.concat(rejected.values())["reason"].value_counts().to_dict()},
        summary=f"WANDS: {len(files.products)} products -> catalog {written['catalog']}, {len(files.labels)} labels -> "
                f"judgments {written['judgments']}; {n_rejected} rejected",
    )
