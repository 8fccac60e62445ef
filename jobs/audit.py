"""audit: `relevance` + judgments (+ `pairs`, `catalog`) -> `relevance_audit` and an HTML/Markdown report.

Per run, segment, system and metric, with query-level bootstrap confidence intervals.
Systems, all ranked over the same candidates and judged on the same pairs: the model
(`model`), BM25 (`bm25`), the base checkpoint zero-shot (`zero_shot`) and the production
ranking seen in the logs (`logged_position`, by mean impression position). Segments: all,
head / torso / tail (query log frequency), category=<top category>, query_len=1..4+.
Judged metrics use only the queries the model was not trained or tuned on (its model
version's `split.json`); log-only audits use every scored pair of the day. Where the click-model job wrote
`click_labels` (a partition at most audit.click_labels_max_age_days before ds), the click audit adds the model's and
the logged ranking's nDCG@k against click labels on the day's queries without judgments.

The job reads the tables and the model versions (load), computes with relevance.evaluation.audit_plan (compute)
and writes `relevance_audit`, the reports and the thresholds (write).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from jobs.core.config import storage_options
from jobs.core.job import JobContext, JobError, JobResult
from plumbing import storage
from plumbing.errors import InputError
from relevance.evaluation.audit_plan import AuditInputs, AuditOutcome, compute
from relevance.evaluation.audit_rows import AuditSettings
from relevance.evaluation.click_agreement import click_report_note
from relevance.evaluation.summary import markdown_report, report_metrics, thresholds_document
from relevance.frames import to_spark
from relevance.scoring import serving_note
from relevance.settings import AuditConfig
from schemas.tables import CATALOG, CATALOG_TOPK, CLICK_LABELS, JUDGMENTS, PAIRS, RELEVANCE, RELEVANCE_AUDIT
from schemas.validate import conform

JOB = "audit"
FLAGS = ("audit.compare", "audit.fail_on_regression")  # --compare V[:PRECISION], --fail-on-regression


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Audit one day's relevance scores against human judgments into `relevance_audit`."


# ----------------------------------------------------------------------------- load


def judgments_table_named(table: str) -> bool:
    """Whether audit.judgments_table names a table of its own: one that is missing or empty then stops the audit
    (a typo must not turn the day's judged audit into a log-only one), where the default table's absence means
    the log-only audit."""
    return table != AuditConfig().judgments_table


def read_split(model_dir: Path) -> dict | None:
    path = Path(model_dir) / "split.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load(ctx: JobContext) -> AuditInputs:
    from udfs.card import BI_ENCODER
    from udfs.model import fetch_model_version, load_model_version, locate_model_version, read_card, resolve_model_dir

    wh, ds, settings = ctx.warehouse, ctx.require_ds(), ctx.settings
    relevance = conform(wh.read(RELEVANCE, {"ds": ds}), RELEVANCE, wh.path(RELEVANCE.name))
    pairs = conform(wh.read(PAIRS, {"ds": ds}), PAIRS, wh.path(PAIRS.name))
    judgments_spec = replace(JUDGMENTS, name=settings.audit.judgments_table)
    judgments = (conform(wh.read(judgments_spec), judgments_spec, wh.path(judgments_spec.name))
                 if wh.exists(judgments_spec.name) else None)
    if judgments is not None and not judgments.take(1):
        judgments = None  # an empty judgments table: the log-only audit, as without one
    if judgments is None and judgments_table_named(settings.audit.judgments_table):
        path = wh.path(judgments_spec.name)
        state = f"the table at {path} holds no rows" if wh.exists(judgments_spec.name) else f"no Delta table at {path}"
        raise InputError(f"audit.judgments_table '{judgments_spec.name}': {state}; nothing was written (name a table "
                         "that holds judgments, or leave audit.judgments_table unset for the log-only audit)")
    compared = settings.audit.compare
    if judgments is None and compared:
        raise FileNotFoundError(f"--compare needs judgments: no table at {wh.path(judgments_spec.name)}")
    catalog_topk = (conform(wh.read(CATALOG_TOPK, {"ds": ds}), CATALOG_TOPK, wh.path(CATALOG_TOPK.name))
                    if wh.exists(CATALOG_TOPK.name) else None)  # the retrieval audit (relevance.retrieval)
    catalog = (conform(wh.read(CATALOG), CATALOG, wh.path(CATALOG.name))
               if judgments is not None or catalog_topk is not None else None)  # judged audit; the report's titles
    click_labels = (conform(wh.read(CLICK_LABELS), CLICK_LABELS, wh.path(CLICK_LABELS.name))
                    if wh.exists(CLICK_LABELS.name) else None)  # the click audit picks its partition

    relevance = relevance.cache()
    rows_in = relevance.count()
    if rows_in == 0:
        raise FileNotFoundError(f"relevance has no rows for ds={ds} in {wh.path(RELEVANCE.name)} (run score first)")
    versions = [r[0] for r in relevance.select("model_version").distinct().collect()]
    options, cache_dir, models_root = storage_options(settings), settings.model.cache_dir, settings.model.models_root
    model_location = locate_model_version(models_root, versions[0], options)
    model_dir = fetch_model_version(model_location, options, cache_dir)
    card = read_card(model_dir)
    other_dir = other = None
    if compared:  # MODEL_VERSION[:PRECISION]
        version, _, precision = compared.partition(":")
        other_dir = resolve_model_dir(models_root, version, options, cache_dir)
        other = load_model_version(other_dir, "cpu", precision or "fp32")
    diversity = settings.audit.diversity
    serving_model = (load_model_version(model_dir, "cpu") if judgments is not None and diversity.enabled
                     and diversity.mmr_lambdas and card.kind == BI_ENCODER else None)  # the MMR trade-off's vectors
    return AuditInputs(
        relevance=relevance, rows_in=rows_in, versions=versions, pairs=pairs, judgments=judgments,
        judgments_table=judgments_spec.name, catalog=catalog, model_location=model_location, options=options,
        threshold=card.threshold,
        splits=[read_split(model_dir)] + ([read_split(other_dir)] if other_dir else []),
        other=other, serving=serving_note(card, settings.model.version), click_labels=click_labels,
        catalog_topk=catalog_topk, serving_model=serving_model,
    )


# ----------------------------------------------------------------------------- write


def write_markdown_report(root: str, ds: str, model_version: str, run_id: str, summary: str) -> str | None:
    """A short Markdown summary next to the tables (local warehouses only); returns its path."""
    if "://" in root:
        return None
    path = Path(root) / "reports" / f"audit_{ds}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_report(ds, model_version, run_id, summary))
    return str(path)


def write_thresholds(model_dir: str | Path, ds: str, run_id: str, frame: pd.DataFrame, settings: AuditSettings,
                     storage_options: dict[str, str] | None = None) -> str | Path | None:
    """The thresholds for the target precision, overall and per segment, next to the model version
    (`<version>/thresholds/<ds>.json`, a local folder or the version's URI on an object store); returns where they
    were written, None where the version is no local folder nor a URI."""
    document = thresholds_document(frame, ds, run_id, settings)
    if document is None or not (storage.is_remote(model_dir) or Path(model_dir).is_dir()):
        return None
    path = storage.join(model_dir, "thresholds", f"{ds}.json")
    storage.write_text(path, json.dumps(document, indent=1), storage_options)
    return path if storage.is_remote(path) else Path(path)


def write(ctx: JobContext, inputs: AuditInputs, outcome: AuditOutcome) -> JobResult:
    from relevance.evaluation.report_html import AuditReport, render_audit_html, write_html_report

    wh, ds, settings, frame = ctx.warehouse, ctx.require_ds(), outcome.settings, outcome.frame
    model_version, summary = inputs.model_version, f"serving: {inputs.serving}\n\n{outcome.summary}"
    markdown = write_markdown_report(wh.root, ds, model_version, ctx.run_id, summary)
    html = write_html_report(wh.root, ds, render_audit_html(AuditReport(
        ds=ds, model_version=model_version, run_id=ctx.run_id,
        created_at=outcome.created_at.isoformat(timespec="seconds"), metrics=report_metrics(frame),
        pr_curves=outcome.drawn.get("pr_curves", pd.DataFrame()),
        reliability=outcome.drawn.get("reliability", pd.DataFrame()),
        score_histograms=outcome.drawn.get("score_histograms", pd.DataFrame()), worst_offenders=outcome.offenders,
        threshold=settings.threshold, target_precision=settings.target_precision, summary_text=summary,
        click_note=click_report_note(outcome.click_note),
        retrieval_gaps=outcome.retrieval.gaps if outcome.retrieval is not None else pd.DataFrame(),
        retrieval_note=outcome.retrieval.note if outcome.retrieval is not None else "",
        concentrated=outcome.diversity.concentrated if outcome.diversity is not None else pd.DataFrame(),
        diversity_note=outcome.diversity.note if outcome.diversity is not None else "")))
    thresholds = write_thresholds(inputs.model_location, ds, ctx.run_id, frame, settings, inputs.options)
    reports = [str(path) for path in (html, markdown, thresholds) if path]
    if reports:
        summary += "\n\nreports and thresholds: " + ", ".join(reports)
    written = wh.overwrite_partition(to_spark(ctx.spark, frame, RELEVANCE_AUDIT), RELEVANCE_AUDIT, {"ds": ds}, ctx.run_id)
    if outcome.failure and ctx.settings.audit.fail_on_regression:
        print(summary)
        raise JobError(outcome.failure)
    if outcome.failure:
        summary += f"\n{outcome.failure} (not failing: --fail-on-regression not set)"
    return JobResult(
        rows_in=inputs.rows_in,
        rows_out=written,
        rows_rejected=0,
        model_version=model_version,
        details={"judged_queries": outcome.judged_queries, "query_scope": settings.scope,
                 "threshold": settings.threshold, "reports": reports, "compared_with": ctx.settings.audit.compare,
                 "query_movement": outcome.movement, "model_versions_in_partition": inputs.versions,
                 "serving": inputs.serving},
        summary=summary,
    )


def run(ctx: JobContext) -> JobResult:
    inputs = load(ctx)
    return write(ctx, inputs, compute(ctx.settings, ctx.require_ds(), ctx.run_id, inputs))
