"""The I/O edges the import jobs share: their rejects partition and the catalog coverage report."""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce

import pandas as pd
from pyspark.sql import DataFrame

from jobs.core.job import JobContext
from relevance.data.importers import missing_from_catalog
from relevance.frames import rejects_frame
from schemas.tables import CATALOG, REJECTS

REJECTS_DS = "all"  # an import is not a daily run: its rejects live in one partition per job


def write_rejects(ctx: JobContext, job: str, rejected: Mapping[str, pd.DataFrame]) -> int:
    """Replace the job's rejects partition (ds "all") with the rows (`reason`, `raw`) rejected per source; returns rows written."""
    frames = [
        rejects_frame(ctx.spark.createDataFrame(rows[["reason", "raw"]].astype(object), "reason string, raw string"),
                      job, source, ctx.run_id, REJECTS_DS)
        for source, rows in rejected.items()
    ]
    return ctx.warehouse.overwrite_partition(
        reduce(DataFrame.unionByName, frames), REJECTS, {"job": job, "ds": REJECTS_DS}, ctx.run_id
    )


def catalog_ids(ctx: JobContext) -> set[str] | None:
    """The product ids of the existing `catalog` table, or None when there is none."""
    if not ctx.warehouse.exists(CATALOG.name):
        return None
    return {row.product_id for row in ctx.warehouse.read(CATALOG).select("product_id").distinct().collect()}


def catalog_report(product_ids: pd.Series, known: set[str] | None) -> tuple[dict, str]:
    """(details, summary phrase) on how many distinct product ids the catalog lacks."""
    distinct = int(product_ids.dropna().nunique())
    missing = missing_from_catalog(product_ids, known)
    details = {"distinct_products": distinct, "missing_from_catalog": missing, "catalog_exists": known is not None}
    where = "the catalog" if known is not None else "the catalog (there is no catalog table yet)"
    return details, f"{missing} of {distinct} product ids are missing from {where}"
