"""import-catalog: a team's own catalog file(s) (JSON, JSON Lines, CSV or Parquet) -> `catalog` (replaced).

The field mapping lives in config (`imports.catalog.mapping`, `imports.catalog.attribute_prefixes`); see
`conf/chorus.yaml` for the Chorus / Icecat layout. Records without an id or a title go to `rejects` (job
import-catalog, ds "all"): rows_in = records read = rows written + rejected.
"""

from __future__ import annotations

import argparse

import pandas as pd

from jobs.core.config import ConfigError, Settings
from jobs.core.imports import write_rejects
from jobs.core.job import JobContext, JobResult
from relevance.data.readers import CatalogMapping, catalog_from_records, read_records
from relevance.frames import to_spark
from schemas.tables import CATALOG

JOB = "import-catalog"
NEEDS_DS = False
FLAGS = ("imports.catalog.path", "imports.catalog.format")  # --path, --format


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Import a catalog from JSON, JSON Lines, CSV or Parquet (a file or a folder of files) with "
                          "the field mapping of imports.catalog.mapping.")


def check_settings(settings: Settings) -> None:
    if not settings.imports.catalog.path:
        raise ConfigError("import-catalog needs --path FILE_OR_FOLDER (or imports.catalog.path)")


def run(ctx: JobContext) -> JobResult:
    config = ctx.settings.imports.catalog
    path = str(config.path)
    mapping = CatalogMapping.from_config(config.mapping, config.attribute_prefixes)
    records = read_records(path, config.format)
    catalog, rejected = catalog_from_records(records, mapping, pd.Timestamp.now(tz="UTC"))
    ctx.warehouse.check_replace(CATALOG, len(catalog), source=f"{path} ({len(rejected)} records rejected)")
    written = ctx.warehouse.replace(to_spark(ctx.spark, catalog, CATALOG), CATALOG, ctx.run_id)
    n_rejected = write_rejects(ctx, JOB, {"catalog_file": rejected})
    missing = {column: int(catalog[column].isna().sum()) for column in ("description", "brand", "category")}
    missing["attributes"] = int((catalog["attributes"].map(len) == 0).sum())
    return JobResult(
        rows_in=len(records), rows_out=written, rows_rejected=n_rejected,
        details={"path": path, "mapping": mapping.__dict__, "products_without": missing,
                 "rejects_by_reason": rejected["reason"].value_counts().to_dict()},
        summary=f"catalog from {path}: {len(records)} records -> catalog {written}, {n_rejected} rejected; products "
                "without " + ", ".join(f"{k} {v}" for k, v in missing.items()),
    )
