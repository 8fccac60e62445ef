"""report_html: one self-contained HTML page for an audit run (inline CSS and SVG, no scripts, no network).

`render_audit_html` is pure: it turns an `AuditReport` (the audit job's frames) into plain data (`Section`s of
`Table`s, `Chart`s of SVG `Shape`s, ...) and renders it with the jinja2 template `templates/report.html.j2`,
autoescape on: queries are user input, and no markup is built from text in Python. The page's style is
`templates/report.css`, inlined by the template. `write_html_report` puts the page next to the tables of a
local warehouse.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from relevance.evaluation.report_format import DASH, fmt_count, fmt_interval, fmt_number, is_missing_value
from relevance.evaluation.svg_charts import Bars, Chart, Guide, Marker, Series, bar_chart, data_span, xy_chart

# purity: no pyspark torch transformers

__all__ = ["AuditReport", "render_audit_html", "write_html_report"]

MODEL = "model"
# The click audit's rows (relevance.evaluation.click_agreement, not imported: this module needs only pandas, jinja2
# and its templates, e.g. from a zip).
CLICK_PREFIX, CLICK_SYSTEMS = "click_ndcg@", (MODEL, "logged_position")
RETRIEVAL_PREFIX = "retrieval_"  # relevance.evaluation.retrieval_rows
# relevance.evaluation.diversity_rows' metrics and the MMR trade-off's systems (`model_mmr_lambda=<l>`)
DIVERSITY_PREFIXES = ("distinct_", "top_brand_share@", "brand_entropy@", "alpha_ndcg@", "ia_ndcg@")
MMR_PREFIX = "model_mmr_lambda="
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#999999")
METRIC_COLUMNS = ("system", "segment", "metric", "k", "threshold", "value", "support", "ci_low", "ci_high",
                  "definition")
# Display order of metric families; entries ending in "@" match every k.
METRIC_ORDER = ("ndcg@", "precision@", "recall@", "mrr", "map", "judged@", "roc_auc", "average_precision",
                "precision", "recall", "f1", "brier", "ece", "threshold_for_target_precision",
                "recall_at_target_precision")
LOWER_IS_BETTER = ("brier", "ece")
NO_DIRECTION = ("judged@", "threshold_for_target_precision")
SEGMENT_GROUPS = ("all", "head", "torso", "tail", "category=", "query_len=")
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class AuditReport:
    """Everything the page shows; the audit job builds it from one run's frames."""

    ds: str
    model_version: str
    run_id: str
    created_at: str
    metrics: pd.DataFrame
    pr_curves: pd.DataFrame
    reliability: pd.DataFrame
    score_histograms: pd.DataFrame
    worst_offenders: pd.DataFrame
    threshold: float
    target_precision: float
    summary_text: str
    click_note: str = ""  # the click section's note: the labels and queries it covered, what biases click labels
    retrieval_gaps: pd.DataFrame | None = None  # relevance.evaluation.retrieval_audit.largest_gaps
    retrieval_note: str = ""  # the retrieval audit's summary line (or why there is none)
    concentrated: pd.DataFrame | None = None  # relevance.evaluation.diversity_rows.most_concentrated
    diversity_note: str = ""  # the diversity audit's summary line (or why there is none)


# ---------------------------------------------------------------------------------------------- frames


def _usable(frame: pd.DataFrame | None, columns: Iterable[str]) -> pd.DataFrame | None:
    """The frame when it has rows and the columns a section needs, else None (the section says "no data")."""
    if not isinstance(frame, pd.DataFrame) or frame.empty or not set(columns) <= set(frame.columns):
        return None
    return frame


def _metrics_frame(metrics: pd.DataFrame | None) -> pd.DataFrame:
    """The metric rows with every optional column present (NaN when absent); empty when unusable."""
    frame = _usable(metrics, ("system", "segment", "metric", "value"))
    if frame is None:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    frame = frame.copy()
    for column in METRIC_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    for column in ("system", "segment", "metric"):
        frame[column] = frame[column].astype(str)
    return frame.reset_index(drop=True)


def _metric_key(name: str, appearance: int) -> tuple:
    family = next((i for i, p in enumerate(METRIC_ORDER)
                   if (name.startswith(p) if p.endswith("@") else name == p)), len(METRIC_ORDER))
    k = name.split("@", 1)[1] if "@" in name else ""
    return family, int(k) if k.isdigit() else math.inf, appearance


def _ordered_metrics(names: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(names))
    return sorted(unique, key=lambda n: _metric_key(n, unique.index(n)))


def _ordered_segments(names: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(names))

    def key(segment: str) -> tuple:
        group = next((i for i, g in enumerate(SEGMENT_GROUPS)
                      if (segment.startswith(g) if g.endswith("=") else segment == g)), len(SEGMENT_GROUPS))
        return group, unique.index(segment)

    return sorted(unique, key=key)


def _ordered_systems(names: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(str(n) for n in names))
    return sorted(unique, key=lambda s: (s != MODEL, unique.index(s)))


def _system_colors(report: AuditReport) -> dict[str, str]:
    names: list[str] = []
    for frame in (report.metrics, report.pr_curves, report.reliability):
        if isinstance(frame, pd.DataFrame) and "system" in frame.columns:
            names += [str(s) for s in frame.system.dropna()]
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(_ordered_systems(names))}


def _higher_is_better(metric: str) -> bool | None:
    if any(metric.startswith(p) if p.endswith("@") else metric == p for p in NO_DIRECTION):
        return None
    return metric not in LOWER_IS_BETTER


# ---------------------------------------------------------------------------------------------- page data
# Plain data for the template (templates/macros.html.j2 draws each kind); text in it is escaped there.


@dataclass(frozen=True)
class Cell:
    text: str
    cls: str = ""
    title: str = ""  # hover text
    ci: str = ""  # a confidence interval, shown muted after the text


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[Cell]]


@dataclass(frozen=True)
class Definitions:
    """Collapsed metric definitions: (metric, [(segments, text)]); segments is "" when one text fits all."""

    summary: str
    terms: list[tuple[str, list[tuple[str, str]]]]


@dataclass(frozen=True)
class Section:
    """One <section>: its body is the first of table, chart, definitions, text that is set, else "no data"."""

    anchor: str
    title: str
    note: str = ""
    table: Table | None = None
    chart: Chart | None = None
    definitions: Definitions | None = None
    text: str = ""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> Table | None:
    """A table, or None (the section says "no data") without rows."""
    return Table(list(headers), [list(r) for r in rows]) if rows else None


# ---------------------------------------------------------------------------------------------- sections


def _meta(report: AuditReport) -> list[tuple[str, str]]:
    """The header's (label, value) pairs."""
    return [("ds", str(report.ds)), ("model version", str(report.model_version)), ("run id", str(report.run_id)),
            ("generated", str(report.created_at)), ("decision threshold", fmt_number(report.threshold, 4)),
            ("target precision", fmt_number(report.target_precision, 3))]


def _comparable_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Ranking and classifier rows: not the log-only audits, the model-vs-model deltas nor the click audit."""
    names = metrics.metric
    return metrics[~names.str.startswith("irrelevant_") & ~names.str.startswith("delta_") & ~names.str.startswith(CLICK_PREFIX)
                   & ~names.str.startswith(RETRIEVAL_PREFIX) & ~names.str.startswith(DIVERSITY_PREFIXES)]


def _best_systems(cells: dict[str, pd.Series], metric: str) -> set[str]:
    direction = _higher_is_better(metric)
    values = {s: float(r.value) for s, r in cells.items() if not is_missing_value(r.value)}
    if direction is None or len(values) < 2:
        return set()
    best = max(values.values()) if direction else min(values.values())
    return {s for s, v in values.items() if abs(v - best) <= 1e-12}


def _systems_section(metrics: pd.DataFrame) -> Section:
    rows_all = _comparable_rows(metrics[metrics.segment == "all"])
    note = "segment all; value [CI]; shaded: best system on the row (lower is better for brier and ece)"
    if rows_all.empty:
        return Section("systems", "Systems compared")
    systems = _ordered_systems(rows_all.system)
    rows = []
    for metric in _ordered_metrics(rows_all.metric):
        subset = rows_all[rows_all.metric == metric]
        cells = {s: subset[subset.system == s].iloc[0] for s in systems if (subset.system == s).any()}
        best = _best_systems(cells, metric)
        definition = str(subset.definition.dropna().iloc[0]) if subset.definition.notna().any() else ""
        row = [Cell(metric, title=definition)]
        for system in systems:
            cell = cells.get(system)
            if cell is None:
                row.append(Cell(DASH, "num"))
            else:
                row.append(Cell(fmt_number(cell.value), "num best" if system in best else "num",
                                f"{system}: n={fmt_count(cell.support)}", fmt_interval(cell.ci_low, cell.ci_high)))
        rows.append(row)
    return Section("systems", "Systems compared", note, table=_table(["metric", *systems], rows))


def _ranking_metric(metrics: pd.DataFrame) -> str | None:
    names = [m for m in _ordered_metrics(metrics.metric) if m.startswith("ndcg@")]
    return "ndcg@10" if "ndcg@10" in names else (names[0] if names else None)


def _segments_section(metrics: pd.DataFrame, colors: dict[str, str]) -> Section:
    metric = _ranking_metric(metrics)
    title = "Ranking quality by segment"
    if metric is None:
        return Section("segments", title)
    rows = metrics[metrics.metric == metric]
    segments, systems = _ordered_segments(rows.segment), _ordered_systems(rows.system)
    series = [_system_bars(rows[rows.system == s], s, segments, colors.get(s, "#999999")) for s in systems]
    values = [v for b in series for v in (*b.values, *b.highs, *b.lows)]
    chart = bar_chart(segments, series, title=f"{metric} by segment", x_label=metric,
                           x_range=data_span(values, (0.0, 1.0)), caption=f"{metric} per segment and system; whiskers: CI")
    return Section("segments", title, chart=chart)


def _system_bars(rows: pd.DataFrame, system: str, segments: Sequence[str], color: str) -> Bars:
    by_segment = {seg: r for seg, r in zip(rows.segment, rows.itertuples(index=False))}
    picked = [by_segment.get(seg) for seg in segments]
    value = lambda r, name: np.nan if r is None else getattr(r, name)  # noqa: E731
    tips = tuple(f"{system} · {seg}: {fmt_number(value(r, 'value'))} {fmt_interval(value(r, 'ci_low'), value(r, 'ci_high'))}"
                 f" (n={fmt_count(value(r, 'support'))})" for seg, r in zip(segments, picked))
    return Bars(system, tuple(value(r, "value") for r in picked), tuple(value(r, "ci_low") for r in picked),
                 tuple(value(r, "ci_high") for r in picked), color, tips)


def _threshold_marker(curve: pd.DataFrame, threshold: float, color: str) -> list[Marker]:
    curve = curve.dropna(subset=["threshold", "precision", "recall"])
    if curve.empty or is_missing_value(threshold):
        return []
    point = curve.iloc[int(np.argmin(np.abs(curve.threshold.to_numpy(dtype=float) - float(threshold))))]
    label = f"threshold {fmt_number(threshold)}: P {fmt_number(point.precision)}, R {fmt_number(point.recall)}"
    return [Marker(float(point.recall), float(point.precision), label, color)]


def _pr_section(report: AuditReport, colors: dict[str, str]) -> Section:
    title = "Precision–recall curves"
    curves = _usable(report.pr_curves, ("system", "threshold", "precision", "recall"))
    if curves is None:
        return Section("pr-curves", title)
    curves = curves.sort_values(["system", "threshold"], kind="stable")
    systems = _ordered_systems(curves.system)
    series = [Series(s, tuple(part.recall), tuple(part.precision), colors.get(s, "#999999"))
              for s in systems for part in [curves[curves.system.astype(str) == s]]]
    model = curves[curves.system.astype(str) == MODEL]
    markers = _threshold_marker(model, report.threshold, colors.get(MODEL, PALETTE[0])) if not model.empty else []
    guides = [] if is_missing_value(report.target_precision) else [
        Guide((0.0, 1.0), (float(report.target_precision),) * 2, f"target precision {fmt_number(report.target_precision)}")]
    caption = "one curve per system over score thresholds; ◇ the model at its decision threshold; dashed: target precision"
    chart = xy_chart(series, title="precision vs recall", caption=caption, x_label="recall", y_label="precision",
                          x_range=(0.0, 1.0), y_range=(0.0, 1.0), guides=guides, markers=markers)
    return Section("pr-curves", title, chart=chart)


def _reliability_section(reliability: pd.DataFrame, colors: dict[str, str]) -> Section:
    title = "Reliability diagram"
    frame = _usable(reliability, ("system", "mean_score", "observed_rate", "count"))
    if frame is None:
        return Section("reliability", title)
    counts = pd.to_numeric(frame["count"], errors="coerce")
    largest = float(counts.max()) if counts.notna().any() and counts.max() > 0 else 1.0
    series = []
    for system in _ordered_systems(frame.system):
        part = frame[frame.system.astype(str) == system]
        sizes = tuple(3 + 9 * math.sqrt(max(float(c), 0) / largest) if not is_missing_value(c) else 3.0 for c in part["count"])
        tips = tuple(f"{system}: mean score {fmt_number(m)}, observed {fmt_number(o)}, n={fmt_count(c)}"
                     for m, o, c in zip(part.mean_score, part.observed_rate, part["count"]))
        series.append(Series(system, tuple(part.mean_score), tuple(part.observed_rate), colors.get(system, "#999999"),
                              "linepoints", sizes, tips))
    x_range = data_span(frame.mean_score, (0.0, 1.0))
    y_range = data_span(frame.observed_rate, (0.0, 1.0))
    low, high = max(x_range[0], y_range[0]), min(x_range[1], y_range[1])
    chart = xy_chart(series, title="reliability diagram", x_label="mean predicted score (bin)",
                          y_label="observed relevant rate", x_range=x_range, y_range=y_range,
                          guides=[Guide((low, high), (low, high), "perfect calibration")],
                          caption="equal-mass score bins; point area grows with the bin's pairs")
    return Section("reliability", title, chart=chart)


def _histogram_section(histograms: pd.DataFrame) -> Section:
    title = "Score distributions by grade"
    frame = _usable(histograms, ("system", "grade", "bin_low", "bin_high", "count"))
    if frame is None:
        return Section("score-distributions", title)
    systems = _ordered_systems(frame.system)
    system = MODEL if MODEL in systems else systems[0]
    frame = frame[frame.system.astype(str) == system].sort_values(["grade", "bin_low"])
    series = []
    for i, (grade, part) in enumerate(frame.groupby("grade", sort=True)):
        total = float(pd.to_numeric(part["count"], errors="coerce").sum()) or 1.0
        shares = tuple(float(c) / total if not is_missing_value(c) else 0.0 for c in part["count"])
        edges = (*part.bin_low.astype(float), float(part.bin_high.iloc[-1]))
        series.append(Series(f"grade {grade} (n={fmt_count(total)})", edges, shares, PALETTE[i % len(PALETTE)], "step"))
    heights = [h for s in series for h in s.y]
    chart = xy_chart(series, title=f"score distribution per grade ({system})", x_label="score",
                          y_label="share of the grade's pairs",
                          x_range=data_span([*frame.bin_low, *frame.bin_high], (0.0, 0.0)),
                          y_range=(0.0, max(heights, default=1.0) * 1.1 or 1.0),
                          caption=f"judged pairs scored by {system}; each grade normalised to its own total")
    return Section("score-distributions", title, chart=chart)


def _long_metric_table(rows: pd.DataFrame, with_definition: bool) -> Table | None:
    rows = rows.assign(_m=rows.metric.map({m: i for i, m in enumerate(_ordered_metrics(rows.metric))}),
                       _s=rows.segment.map({s: i for i, s in enumerate(_ordered_segments(rows.segment))}))
    out = []
    for r in rows.sort_values(["_m", "_s"], kind="stable").itertuples(index=False):
        sign = _sign(r)
        arrow = {"up": "▲ ", "down": "▼ "}.get(sign, "")
        cells = [Cell(r.metric), Cell(r.segment), Cell(arrow + fmt_number(r.value), f"num {sign}".strip()),
                 Cell(fmt_interval(r.ci_low, r.ci_high) or DASH, "num"), Cell(fmt_count(r.support), "num")]
        if with_definition:
            cells.append(Cell(DASH if is_missing_value(r.definition) else str(r.definition)))
        out.append(cells)
    headers = ["metric", "segment", "value", "CI", "support"] + (["definition"] if with_definition else [])
    return _table(headers, out)


def _sign(row) -> str:
    """For deltas: 'up' / 'down' when the CI excludes zero, else ''."""
    if not str(row.metric).startswith("delta_") or is_missing_value(row.ci_low) or is_missing_value(row.ci_high):
        return ""
    return "up" if row.ci_low > 0 else "down" if row.ci_high < 0 else ""


def _log_only_section(metrics: pd.DataFrame) -> Section:
    rows = metrics[metrics.metric.str.startswith("irrelevant_")]
    note = "share of what users saw, clicked or bought on pairs the model scores below the threshold; support: events"
    return Section("log-only", "Log-only audit", note, table=_long_metric_table(rows, False))


def _offenders_section(offenders: pd.DataFrame) -> Section:
    title = "Worst offenders"
    note = "most-shown pairs the model calls irrelevant"
    if not isinstance(offenders, pd.DataFrame) or offenders.empty:
        return Section("worst-offenders", title, note)
    columns: list[tuple[str, str, Callable[[Any], str], str]] = [
        ("query_norm", "query", str, ""), ("product_id", "product", str, ""), ("score", "score", fmt_number, "num"),
               ("impressions", "impressions", fmt_count, "num"), ("clicks", "clicks", fmt_count, "num"),
               ("mean_position", "mean position", lambda v: fmt_number(v, 1), "num"), ("segment", "segment", str, "")]
    rows = [[Cell(DASH if is_missing_value(record.get(c)) else fmt(record.get(c)), cls) for c, _, fmt, cls in columns]
            for record in offenders.to_dict("records")]
    return Section("worst-offenders", title, note, table=_table([h for _, h, _, _ in columns], rows))


def _click_section(metrics: pd.DataFrame, note: str) -> Section | None:
    """The click audit: click nDCG per segment of the model and the logged ranking, under `note` (the labels and
    queries it covered, what biases click labels); None (no section) without click rows: the plain-text summary
    says why there are none."""
    rows = metrics[metrics.metric.str.startswith(CLICK_PREFIX)]
    if rows.empty:
        return None
    systems = [s for s in CLICK_SYSTEMS if (rows.system == s).any()]
    indexed = {key: r for key, r in zip(zip(rows.system, rows.segment, rows.metric), rows.itertuples(index=False))}
    table = []
    for metric in _ordered_metrics(rows.metric):
        for segment in _ordered_segments(rows[rows.metric == metric].segment):
            cells = [indexed.get((s, segment, metric)) for s in systems]
            support = next((c.support for c in cells if c is not None), None)
            table.append([Cell(metric), Cell(segment), *[
                Cell(DASH, "num") if c is None else
                Cell(fmt_number(c.value), "num", f"{s}: n={fmt_count(c.support)}", fmt_interval(c.ci_low, c.ci_high))
                for s, c in zip(systems, cells)], Cell(fmt_count(support), "num")])
    return Section("click-agreement", "Click agreement on queries without judgments", note, table=_table(["metric", "segment", *systems, "queries"], table))


def _retrieval_section(metrics: pd.DataFrame, note: str) -> Section | None:
    """The catalog retrieval audit: its rows per segment (model and engine side by side); None (no section) when
    the run had no catalog_topk and no note."""
    rows = metrics[metrics.metric.str.startswith(RETRIEVAL_PREFIX)]
    if rows.empty:
        return Section("retrieval", "Recall beyond the shown set", note) if note else None
    return Section("retrieval", "Recall beyond the shown set", note,
                   table=_table(["metric", "system", "segment", "value", "CI", "queries"], [
                       [Cell(r.metric), Cell(r.system), Cell(r.segment), Cell(fmt_number(r.value), "num"),
                        Cell(fmt_interval(r.ci_low, r.ci_high) or DASH, "num"), Cell(fmt_count(r.support), "num")]
                       for r in rows.sort_values(["metric", "system", "segment"], kind="stable").itertuples()]))


def _gaps_section(gaps: pd.DataFrame | None) -> Section | None:
    """The logged queries with the most products the model ranks in its top and calls relevant but the engine never
    showed, each such product with its title: what a merchandiser can act on."""
    if not isinstance(gaps, pd.DataFrame) or gaps.empty:
        return None
    note = ("logged queries with the most products in the model's top (over the whole catalog) that the model calls "
            "relevant (score >= the decision threshold) and the engine never showed that day; gap: how many")
    rows = [[Cell(str(r.query_norm)), Cell(DASH if is_missing_value(r.segment) else str(r.segment)),
             Cell(fmt_count(r.query_searches), "num"), Cell(fmt_count(r.gap), "num"), Cell(fmt_count(r.rank), "num"),
             Cell(str(r.product_id)), Cell(DASH if is_missing_value(r.title) else str(r.title)),
             Cell(fmt_number(r.relevance_score), "num")] for r in gaps.itertuples()]
    return Section("retrieval-gaps", "Relevant products the engine never showed", note,
                   table=_table(["query", "segment", "searches", "gap", "model rank", "product", "title", "score"],
                                rows))


def _diversity_section(metrics: pd.DataFrame, note: str) -> Section | None:
    """Each system's diversity of the top k (segment all, value and CI); None (no section) without rows or note."""
    rows = metrics[metrics.metric.str.startswith(DIVERSITY_PREFIXES) & (metrics.segment == "all")
                   & ~metrics.system.str.startswith(MMR_PREFIX)]
    title = "Diversity of the top"
    if rows.empty:
        return Section("diversity", title, note) if note else None
    systems = _ordered_systems(rows.system)
    indexed = {key: r for key, r in zip(zip(rows.system, rows.metric), rows.itertuples(index=False))}
    table = []
    for metric in list(dict.fromkeys(rows.metric)):
        cells = [indexed.get((s, metric)) for s in systems]
        support = next((c.support for c in cells if c is not None), None)
        table.append([Cell(metric, title=str(next(c.definition for c in cells if c is not None))), *[
            Cell(DASH, "num") if c is None else
            Cell(fmt_number(c.value), "num", f"{s}: n={fmt_count(c.support)}", fmt_interval(c.ci_low, c.ci_high))
            for s, c in zip(systems, cells)], Cell(fmt_count(support), "num")])
    return Section("diversity", title, note, table=_table(["metric", *systems, "queries"], table))


def _tradeoff_section(metrics: pd.DataFrame, x_metric: str, x_label: str, anchor: str) -> Section | None:
    """nDCG@k against a diversity metric for the model re-ranked by MMR at each lambda (one point per lambda,
    its CIs in the tooltip); None without trade-off rows."""
    rows = metrics[metrics.system.str.startswith(MMR_PREFIX) & (metrics.segment == "all")]
    ndcg = next((m for m in _ordered_metrics(rows.metric) if m.startswith("ndcg@")), None)
    x_name = next((m for m in rows.metric.unique() if m.startswith(x_metric)), None)
    if ndcg is None or x_name is None:
        return None
    by = {key: r for key, r in zip(zip(rows.system, rows.metric), rows.itertuples(index=False))}
    points = [(system[len(MMR_PREFIX):], by[(system, x_name)], by[(system, ndcg)])
              for system in dict.fromkeys(rows.system) if (system, x_name) in by and (system, ndcg) in by]
    tips = tuple(f"lambda {lam}: {ndcg} {fmt_number(y.value)} {fmt_interval(y.ci_low, y.ci_high)}, {x_name} "
                 f"{fmt_number(x.value)} {fmt_interval(x.ci_low, x.ci_high)} (n={fmt_count(y.support)})"
                 for lam, x, y in points)
    series = [Series("model + MMR", tuple(float(x.value) for _, x, _ in points), tuple(float(y.value) for _, _, y in points),
                     PALETTE[0], "linepoints", tuple(4.0 for _ in points), tips)]
    whiskers = [Guide((float(x.value), float(x.value)), (float(y.ci_low), float(y.ci_high)), color="#999999")
                for _, x, y in points if not (is_missing_value(y.ci_low) or is_missing_value(y.ci_high))]
    whiskers += [Guide((float(x.ci_low), float(x.ci_high)), (float(y.value), float(y.value)), color="#999999")
                 for _, x, y in points if not (is_missing_value(x.ci_low) or is_missing_value(x.ci_high))]
    ends = [points[0], points[-1]] if len(points) > 1 else points  # the first and last lambda are labelled
    markers = [Marker(float(x.value), float(y.value), f"λ={lam}", PALETTE[0]) for lam, x, y in ends]
    xs = [v for _, x, _ in points for v in (x.value, x.ci_low, x.ci_high) if not is_missing_value(v)]
    ys = [v for _, _, y in points for v in (y.value, y.ci_low, y.ci_high) if not is_missing_value(v)]
    caption = ("the model's ranking re-ordered by maximal marginal relevance at each lambda (1: as scored; ◇ the first "
               "and last lambda); grey dashes: 95% CIs of both metrics; hover a point for its values")
    chart = xy_chart(series, title=f"{ndcg} vs {x_name}", caption=caption, x_label=x_label, y_label=ndcg,
                     x_range=_padded_span(xs), y_range=_padded_span(ys), guides=whiskers, markers=markers)
    return Section(anchor, f"Diversity trade-off: {ndcg} vs {x_name}", chart=chart)


def _padded_span(values: list[float]) -> tuple[float, float]:
    """The values' range widened by a tenth on each side: a trade-off's points sit close together, and a chart from
    0 to 1 would hide their differences."""
    lo, hi = data_span(values, (min(values, default=0.0), max(values, default=1.0)))
    pad = max(0.1 * (hi - lo), 0.005)
    return lo - pad, hi + pad


def _concentrated_section(concentrated: pd.DataFrame | None) -> Section | None:
    """The judged queries whose model top is most concentrated on one brand, with their top products."""
    if not isinstance(concentrated, pd.DataFrame) or concentrated.empty:
        return None
    share = next(c for c in concentrated.columns if c.startswith("top_brand_share@"))
    note = f"judged queries with the largest top-brand share in the model's top {share.split('@')[1]}, then the fewest brands"
    rows = [[Cell(str(r["query_norm"])), Cell(fmt_number(r[share]), "num"), Cell(fmt_count(r["rank"]), "num"),
             Cell(str(r["product_id"])), Cell(str(r["brand"]) or DASH), Cell(str(r["product_type"]) or DASH),
             Cell(str(r.get("title", "")) or DASH)] for r in concentrated.to_dict("records")]
    return Section("concentrated", "Most concentrated queries", note,
                   table=_table(["query", "top brand share", "rank", "product", "brand", "type", "title"], rows))


def _comparison_section(metrics: pd.DataFrame) -> Section | None:
    """Model-vs-model deltas; None (no section at all) when the run compared nothing."""
    rows = metrics[metrics.metric.str.startswith("delta_")]
    if rows.empty:
        return None
    note = "paired per-query change of this model against the compared version; ▲/▼ colour: CI excludes zero"
    return Section("comparison", "Comparison with another model version", note, table=_long_metric_table(rows, True))


def _definitions_section(metrics: pd.DataFrame) -> Section:
    rows = metrics[metrics.definition.notna()]
    if rows.empty:
        return Section("definitions", "Definitions")
    terms = []
    for metric in _ordered_metrics(rows.metric):
        subset = rows[rows.metric == metric]
        texts = list(dict.fromkeys(subset.definition.astype(str)))
        entries = []
        for text in texts:  # one text per distinct definition; several are labelled with the segments they cover
            where = _ordered_segments(subset[subset.definition.astype(str) == text].segment) if len(texts) > 1 else []
            entries.append((", ".join(where), text))
        terms.append((metric, entries))
    summary = f"Every metric's definition ({len(set(rows.metric))} metrics)"
    return Section("definitions", "Definitions", definitions=Definitions(summary, terms))


# ---------------------------------------------------------------------------------------------- entry points


@functools.cache
def _template() -> jinja2.Template:
    """The page template. PackageLoader reads it from the `jobs` package as a folder or inside a zip
    (zipimport, as with spark-submit --py-files)."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader("relevance.evaluation", "templates"), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                     keep_trailing_newline=True)
    return environment.get_template(TEMPLATE)


def render_audit_html(report: AuditReport) -> str:
    """One self-contained HTML document for the run: inline CSS and SVG, no scripts, no external references."""
    metrics = _metrics_frame(report.metrics)
    colors = _system_colors(report)
    ranked = metrics[~metrics.system.str.startswith(MMR_PREFIX)]  # the systems as scored
    sections = [
        _systems_section(ranked),
        _segments_section(ranked, colors),
        _pr_section(report, colors),
        _reliability_section(report.reliability, colors),
        _histogram_section(report.score_histograms),
        _log_only_section(metrics),
        _offenders_section(report.worst_offenders),
        _click_section(metrics, report.click_note),
        _retrieval_section(metrics, report.retrieval_note),
        _gaps_section(report.retrieval_gaps),
        _diversity_section(metrics, report.diversity_note),
        _tradeoff_section(metrics, "alpha_ndcg@", "alpha-nDCG (intents covered)", "tradeoff-intents"),
        _tradeoff_section(metrics, "top_brand_share@", "top brand's share of the top", "tradeoff-brands"),
        _concentrated_section(report.concentrated),
        _comparison_section(metrics),
        _definitions_section(metrics),
        Section("summary", "Plain-text summary", text=report.summary_text),
    ]
    return _template().render(title=f"Relevance audit {report.ds} · {report.model_version}", ds=report.ds,
                              meta=_meta(report), sections=[s for s in sections if s is not None])


def write_html_report(root: str, ds: str, html: str) -> str | None:
    """Writes `<root>/reports/audit_<ds>.html` (local warehouses only; None for remote roots); returns its path."""
    if "://" in root:
        return None
    path = Path(root) / "reports" / f"audit_{ds}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return str(path)
