"""import-esci: the Amazon ESCI Shopping Queries data set -> `judgments` and `catalog` (both replaced).

Two inputs:
* `--path FOLDER` with shopping_queries_dataset_examples.parquet and shopping_queries_dataset_products.parquet,
  filtered to one `--locale` (default us): examples -> judgments, products -> catalog.
* `--judgments-json FILE`, OpenSearch search-relevance judgments (ratings 100/10/1/0 = E/S/C/I): judgments
  only, as there is no product text; the run reports how many judged products the existing catalog lacks.

Labels are graded by the config's `labels.schemes.esci.grades`. Unusable rows go to `rejects`
(job import-esci, ds "all"): rows_in = rows read (of the locale) = rows written + rejected. A file that is not
parquet / JSON, lacks a required column or (JSON) a `judgmentRatings` list stops the job, naming the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from jobs.core.config import ConfigError, Settings
from jobs.core.imports import catalog_ids, catalog_report, write_rejects
from jobs.core.job import JobContext, JobResult
from relevance.data.importers import (
    ESCI_EXAMPLES,
    ESCI_PRODUCTS,
    esci_catalog,
    esci_judgments,
    esci_judgments_from_ratings,
    read_esci_parquet,
    read_judgments_json,
    select_locale,
)
from relevance.frames import to_spark
from schemas.tables import CATALOG, JUDGMENTS

JOB = "import-esci"
NEEDS_DS = False
# --path, --judgments-json (inputs: one named on the command line replaces the config's), --locale
FLAGS = ("imports.esci.path", "imports.esci.judgments_json", "imports.esci.locale")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Import ESCI (Amazon Shopping Queries) judgments and products into judgments and catalog."


def check_settings(settings: Settings) -> None:
    source(settings)  # fail early, as a configuration error, when no input (or both) is named


def source(settings: Settings) -> tuple[str, str]:
    """("parquet", folder) or ("json", file): exactly one input must be named."""
    folder, json_file = settings.imports.esci.path, settings.imports.esci.judgments_json
    if bool(folder) == bool(json_file):
        raise ConfigError("import-esci needs exactly one of --path FOLDER (parquet files) or --judgments-json FILE")
    return ("parquet", str(folder)) if folder else ("json", str(json_file))


def write_judgments(ctx: JobContext, judgments: pd.DataFrame) -> int:
    return ctx.warehouse.replace(to_spark(ctx.spark, judgments, JUDGMENTS), JUDGMENTS, ctx.run_id)


def import_parquet(ctx: JobContext, folder: str, grades: dict) -> JobResult:
    locale = ctx.settings.imports.esci.locale
    examples, other_examples = select_locale(read_esci_parquet(Path(folder) / ESCI_EXAMPLES), locale)
    products, other_products = select_locale(read_esci_parquet(Path(folder) / ESCI_PRODUCTS), locale)
    judgments, judgment_rejects = esci_judgments(examples, grades)
    catalog, catalog_rejects = esci_catalog(products, pd.Timestamp.now(tz="UTC"))
    ctx.warehouse.check_replace(CATALOG, len(catalog), source=f"{Path(folder) / ESCI_PRODUCTS} (locale {locale})")
    ctx.warehouse.check_replace(JUDGMENTS, len(judgments), source=f"{Path(folder) / ESCI_EXAMPLES} (locale {locale})")

    written = {
        CATALOG.name: ctx.warehouse.replace(to_spark(ctx.spark, catalog, CATALOG), CATALOG, ctx.run_id),
        JUDGMENTS.name: write_judgments(ctx, judgments),
    }
    n_rejected = write_rejects(ctx, JOB, {"esci.examples": judgment_rejects, "esci.products": catalog_rejects})
    rows_in = len(examples) + len(products)
    return JobResult(
        rows_in=rows_in, rows_out=sum(written.values()), rows_rejected=n_rejected,
        details={"input": "parquet", "locale": locale, "rows": written, "examples_read": len(examples),
                 "products_read": len(products), "skipped_other_locales": other_examples + other_products,
                 "labels": judgments["label"].value_counts().to_dict(),
                 "rejects_by_reason": pd.concat([judgment_rejects, catalog_rejects])["reason"].value_counts().to_dict()},
        summary=f"ESCI ({locale}): {len(examples)} examples -> judgments {written['judgments']}, {len(products)} products "
                f"-> catalog {written['catalog']}; {n_rejected} rejected",
    )


def import_json(ctx: JobContext, path: str, grades: dict) -> JobResult:
    ratings = read_judgments_json(path)
    judgments, rejected = esci_judgments_from_ratings(ratings, grades)
    ctx.warehouse.check_replace(JUDGMENTS, len(judgments), source=f"{path} ({len(rejected)} ratings rejected)")
    written = write_judgments(ctx, judgments)
    n_rejected = write_rejects(ctx, JOB, {"esci.judgments_json": rejected})
    details, phrase = catalog_report(judgments["product_id"], catalog_ids(ctx))
    details.update({"input": "judgments-json", "queries": int(judgments["query"].nunique()), "ratings_read": len(ratings),
                    "labels": judgments["label"].value_counts().to_dict(),
                    "rejects_by_reason": rejected["reason"].value_counts().to_dict()})
    return JobResult(
        rows_in=len(ratings), rows_out=written, rows_rejected=n_rejected, details=details,
        summary=f"ESCI judgments JSON: {details['queries']} queries, {len(ratings)} ratings -> judgments {written}, "
                f"{n_rejected} rejected; {phrase}",
    )


def run(ctx: JobContext) -> JobResult:
    grades = ctx.settings.labels.named("esci").grades
    kind, location = source(ctx.settings)
    return import_parquet(ctx, location, grades) if kind == "parquet" else import_json(ctx, location, grades)
