"""The audit's results in words: the systems side by side, the model's summary table, the Markdown report and
the thresholds for the target precision (what serving reads). Pure functions of the audit rows."""

from __future__ import annotations

import textwrap

import pandas as pd

from relevance.evaluation.audit_rows import (
    BM25,
    CURVE_PREFIXES,
    FREQUENCY_SEGMENTS,
    LOGGED,
    MODEL,
    QUERY_SEGMENT,
    ZERO_SHOT,
    AuditSettings,
)
from relevance.evaluation.click_agreement import CLICK_BIAS, CLICK_PREFIX, CLICK_SYSTEMS
from relevance.evaluation.diversity_rows import DIVERSITY_PREFIXES, MMR_PREFIX
from relevance.evaluation.retrieval_rows import RETRIEVAL_PREFIX

# purity: no pyspark torch transformers

SYSTEMS = (MODEL, BM25, ZERO_SHOT, LOGGED)
COMPARED_METRICS = ("ndcg@10", "precision@10", "recall@10", "mrr", "roc_auc", "average_precision")
TARGET_PRECISION_METRICS = ("threshold_for_target_precision", "recall_at_target_precision")


def _cell(row: pd.Series | None, width: int) -> str:
    if row is None or pd.isna(row.value):
        return "-".rjust(width)
    interval = f" [{row.ci_low:.3f},{row.ci_high:.3f}]" if pd.notna(row.ci_low) else ""
    return f"{row.value:.3f}{interval}".rjust(width)


def format_comparison(frame: pd.DataFrame, scope: str) -> str:
    """The systems side by side on the same judged queries, per frequency segment."""
    systems = [s for s in SYSTEMS if s in set(frame.system)]
    indexed = {key: row for key, row in zip(zip(frame.system, frame.segment, frame.metric), frame.itertuples())}
    lines = [f"Systems compared on the same candidates, {scope}; value [95% CI]:"]
    for segment in FREQUENCY_SEGMENTS:
        queries = indexed.get((MODEL, segment, "ndcg@10"))
        if queries is None:
            continue
        lines += ["", f"{segment} ({int(queries.support)} queries)".ljust(20) + "".join(f"{s:>24}" for s in systems)]
        for metric in COMPARED_METRICS:
            lines.append(f"  {metric:<18}" + "".join(_cell(indexed.get((s, segment, metric)), 24) for s in systems))
    return "\n".join(lines)


def format_summary(frame: pd.DataFrame, model_version: str, ds: str) -> str:
    """A readable table: model metric per frequency segment, with the logged ranking in brackets."""
    model = frame[(frame.system == MODEL)
                  & ~frame.metric.str.startswith((*CURVE_PREFIXES, CLICK_PREFIX, RETRIEVAL_PREFIX,
                                                  *DIVERSITY_PREFIXES))].copy()
    if model.empty:
        return f"audit ds={ds}: no judged queries among the scored pairs; nothing to report"
    lines = [f"audit ds={ds} model={model_version}  value [95% CI] (logged ranking)", ""]
    segments = [s for s in FREQUENCY_SEGMENTS if s in set(model.segment)]
    header = f"{'metric':<32}" + "".join(f"{s:>30}" for s in segments)
    lines += [header, "-" * len(header)]
    indexed = {key: row for key, row in zip(zip(model.segment, model.metric), model.itertuples())}
    for name in dict.fromkeys(model.metric):
        cells = []
        for segment in segments:
            r = indexed.get((segment, name))
            base = f" ({r.baseline_value:.3f})" if r is not None and pd.notna(r.baseline_value) else ""
            cells.append(_cell(r, 30 - len(base)) + base)
        lines.append(f"{name:<32}" + "".join(cells))
    ndcg = model[(model.metric == "ndcg@10") & ~model.segment.isin(FREQUENCY_SEGMENTS)
                 & ~model.segment.str.startswith(QUERY_SEGMENT)]
    if len(ndcg):
        lines.append("\nmodel ndcg@10 by segment: " + ", ".join(
            f"{r.segment} {r.value:.3f} (n={int(r.support)})" for r in ndcg.itertuples()))
    queries = model[model.metric == "map"].set_index("segment").support
    lines.append("\njudged queries evaluated: " + ", ".join(f"{s} {int(queries[s])}" for s in segments if s in queries))
    return "\n".join(lines)


def format_click_agreement(frame: pd.DataFrame, note: str) -> str:
    """The click audit: click nDCG of the model and the logged ranking per frequency segment, the labels and queries
    it covered, and what click labels are biased by; without click rows, `note` alone (one line)."""
    rows = frame[frame.metric.str.startswith(CLICK_PREFIX) & frame.system.isin(CLICK_SYSTEMS)]
    if rows.empty:
        return note
    indexed = {key: row for key, row in zip(zip(rows.system, rows.segment, rows.metric), rows.itertuples())}
    metrics = list(dict.fromkeys(rows.metric))
    lines = ["Click agreement on the day's queries without judgments (nDCG@k, click labels as gains); value [95% CI]:",
             *textwrap.wrap(note, 118, initial_indent="  ", subsequent_indent="  ")]
    for segment in FREQUENCY_SEGMENTS:
        queries = [int(r.support) for r in rows[rows.segment == segment].itertuples()]
        if not queries:
            continue
        lines += ["", f"{segment} ({max(queries)} queries)".ljust(20) + "".join(f"{s:>24}" for s in CLICK_SYSTEMS)]
        for metric in metrics:
            lines.append(f"  {metric:<18}" + "".join(_cell(indexed.get((s, segment, metric)), 24) for s in CLICK_SYSTEMS))
    return "\n".join([*lines, "", *textwrap.wrap(CLICK_BIAS, 118)])


def format_diversity(frame: pd.DataFrame, note: str) -> str:
    """The diversity rows in words: each system's top-k concentration and intent metrics (segment all), then the MMR
    trade-off per lambda; `note` (what was covered, or why nothing) first."""
    rows = frame[(frame.segment == "all") & frame.metric.str.startswith(DIVERSITY_PREFIXES)]
    if rows.empty:
        return note
    indexed = {key: row for key, row in zip(zip(rows.system, rows.metric), rows.itertuples())}
    systems = [s for s in SYSTEMS if (rows.system == s).any()]
    lines = [note, "", f"{'metric':<24}" + "".join(f"{s:>24}" for s in systems)]
    for metric in dict.fromkeys(rows[rows.system.isin(systems)].metric):
        lines.append(f"{metric:<24}" + "".join(_cell(indexed.get((s, metric)), 24) for s in systems))
    mmr = frame[frame.system.str.startswith(MMR_PREFIX) & (frame.segment == "all")]
    if len(mmr):
        metrics = sorted(dict.fromkeys(mmr.metric), key=lambda m: not m.startswith("ndcg@"))  # nDCG first
        traded = {key: row for key, row in zip(zip(mmr.system, mmr.metric), mmr.itertuples())}
        lines += ["", "MMR trade-off (the model's ranking re-ordered; lambda 1 = as scored):",
                  f"{'lambda':<10}" + "".join(f"{m:>24}" for m in metrics)]
        for system in dict.fromkeys(mmr.system):
            lines.append(f"{system[len(MMR_PREFIX):]:<10}" + "".join(_cell(traded.get((system, m)), 24) for m in metrics))
    return "\n".join(lines)


def audit_summary(frame: pd.DataFrame, model_version: str, ds: str, scope: str, judged_queries: int,
                  offenders: pd.DataFrame, logged_queries: int, click_note: str | None = None) -> str:
    """The run's summary: the systems compared (when queries were judged), the model's table, the most-shown
    pairs the model calls irrelevant (when the day has logged impressions or clicks) and, given `click_note`, the
    click audit (`format_click_agreement`)."""
    return "\n\n".join(part for part in (
        format_comparison(frame, scope) if judged_queries else "",
        format_summary(frame, model_version, ds),
        "Most-shown pairs the model calls irrelevant:\n" + (
            offenders.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(offenders) else "(none)")
        if logged_queries else "Log-only audits skipped: no logged impressions or clicks for this ds (offline evaluation).",
        format_click_agreement(frame, click_note) if click_note is not None else "",
    ) if part)


def markdown_report(ds: str, model_version: str, run_id: str, summary: str) -> str:
    """The Markdown report of a run: its summary under a title."""
    return f"# Relevance audit {ds}\n\nmodel `{model_version}`, run `{run_id}`\n\n```\n{summary}\n```\n"


def report_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows the HTML report tabulates: neither curve points nor per-query rows."""
    return frame[~frame.metric.str.startswith(CURVE_PREFIXES) & ~frame.segment.str.startswith(QUERY_SEGMENT)]


def thresholds_document(frame: pd.DataFrame, ds: str, run_id: str, settings: AuditSettings) -> dict | None:
    """The thresholds for the target precision, overall and per segment (None without any such row)."""
    rows = frame[(frame.system == MODEL) & frame.metric.isin(TARGET_PRECISION_METRICS)]
    if rows.empty:
        return None
    per_segment = {segment: {r.metric.replace("_at_target_precision", "").replace("_for_target_precision", ""):
                             (None if pd.isna(r.value) else float(r.value)) for r in group.itertuples()}
                   for segment, group in rows.groupby("segment")}
    return {"ds": ds, "run_id": run_id, "target_precision": settings.target_precision,
            "confidence": settings.confidence, "queries": settings.scope,
            "rule": "lowest threshold whose Wilson lower bound on precision reaches the target",
            "segments": per_segment}
