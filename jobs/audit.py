"""audit: `relevance` + judgments (+ `pairs`, `catalog`) -> `relevance_audit` and an HTML/Markdown report.

Per run, segment, system and metric, with query-level bootstrap confidence intervals.
Systems, all ranked over the same candidates and judged on the same pairs: the model
(`model`), BM25 (`bm25`), the base checkpoint zero-shot (`zero_shot`) and the production
ranking seen in the logs (`logged_position`, by mean impression position). Segments: all,
head / torso / tail (query log frequency), category=<top category>, query_len=1..4+.
Judged metrics use only the queries the model was not trained or tuned on (its model
version's `split.json`); log-only audits use every scored pair of the day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import pair_metrics
from jobs.baselines import BM25, ZERO_SHOT
from jobs.core.config import get, label_scheme, set_path
from jobs.core.job import JobContext, JobError, JobResult
from jobs.metrics import (
    bootstrap_ci,
    bootstrap_grouped_ci,
    bootstrap_mean_ci,
    calibration_bins,
    expected_calibration_error,
    paired_randomization_p_value,
    per_query_ranking_metrics,
    ranked_by_score,
    threshold_for_precision,
    wilson_interval,
)
from jobs.transforms import to_spark, whole_queries_up_to
from schemas import conform
from schemas.tables import CATALOG, JUDGMENTS, PAIRS, RELEVANCE, RELEVANCE_AUDIT
from udfs.text import PRODUCT_TEXT_MAX_WORDS

JOB = "audit"
MODEL, LOGGED = "model", "logged_position"
SYSTEMS = (MODEL, BM25, ZERO_SHOT, LOGGED)
FREQUENCY_SEGMENTS = ("all", "head", "torso", "tail")
CURVE_PREFIXES = ("pr_curve_", "reliability_")
QUERY_SEGMENT = "query="
MAX_CATEGORY_SEGMENTS = 12  # the largest top categories get a segment each; the rest are "category=other"
COMPARED_METRICS = ("ndcg@10", "precision@10", "recall@10", "mrr", "roc_auc", "average_precision")
AUDIT_COLUMNS = ["system", "segment", "metric", "k", "threshold", "value", "support", "ci_low", "ci_high",
                 "definition", "baseline", "baseline_value"]


@dataclass(frozen=True)
class AuditSettings:
    ks: tuple[int, ...] = (5, 10)
    relevant_min_grade: int = 1
    gain: str | dict = "linear"  # linear | exponential | {grade: gain}
    threshold: float = 0.5
    bootstrap_samples: int = 500
    confidence: float = 0.95
    seed: int = 0
    calibration_bins: int = 10
    target_precision: float = 0.9
    f_beta: float = 0.5
    scope: str = "all judged queries"

    def definition(self, metric: str) -> str:
        return f"{self._definition(metric)}; queries: {self.scope}"

    def _definition(self, metric: str) -> str:
        ranking = (f"rank by score desc then product_id asc; unjudged = not relevant; relevant: grade >= "
                   f"{self.relevant_min_grade}; gain {self.gain}")
        if metric.startswith("precision@"):
            return f"relevant in top k / k (k even when fewer are ranked); {ranking}"
        if metric.startswith("recall@"):
            return f"relevant in top k / relevant judged; queries without relevant excluded; {ranking}"
        if metric.startswith("ndcg@"):
            return f"DCG@k / ideal DCG@k over all judged grades; log2(rank+1) discount; {ranking}"
        if metric.startswith("judged@"):
            return f"judged products in top k / k; {ranking}"
        if metric in ("map", "mrr"):
            return f"{'mean average precision' if metric == 'map' else 'mean reciprocal rank'}; {ranking}"
        if metric in ("brier", "ece"):
            return (f"{'Brier score' if metric == 'brier' else f'expected calibration error, {self.calibration_bins} equal-mass bins'}"
                    f" of judged scored pairs; relevant: grade >= {self.relevant_min_grade}")
        if metric in ("roc_auc", "average_precision"):
            return (f"{metric} of judged scored pairs (score vs relevant: grade >= {self.relevant_min_grade}; ties grouped); "
                    "CI: query-level bootstrap")
        return (f"{metric} of judged scored pairs at score >= threshold {self.threshold:.4f}; relevant: grade >= "
                f"{self.relevant_min_grade}; CI: query-level bootstrap")


def _metric_k(name: str) -> int | None:
    return int(name.split("@")[1]) if "@" in name else None


def _ranking_rows(per_query: pd.DataFrame, system: str, segment: str, settings: AuditSettings) -> list[dict]:
    rows = []
    for column in [c for c in per_query.columns if "@" in c or c in ("map", "mrr")]:
        values = per_query[column].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        if len(values) == 0:
            continue
        low, high = bootstrap_mean_ci(values, settings.bootstrap_samples, settings.confidence, settings.seed)
        rows.append({"system": system, "segment": segment, "metric": column,
                     "k": _metric_k(column), "value": float(values.mean()), "support": int(len(values)),
                     "ci_low": low, "ci_high": high, "definition": settings.definition(column)})
    return rows


def log_only_measures(ks: Iterable[int]) -> dict[str, tuple[str, int | None]]:
    """The log-only measures: metric name -> (events column, top-k cut on the mean position or None)."""
    measures: dict[str, tuple[str, int | None]] = {f"irrelevant_impression_share@{k}": ("impressions", k) for k in ks}
    measures["irrelevant_click_share"] = ("clicks", None)
    measures["irrelevant_purchase_share"] = ("purchases", None)
    return measures


def behavior_per_query(behavior: DataFrame, threshold: float, ks: Iterable[int]) -> DataFrame:
    """Per (query_norm, segment), a Spark aggregation over the day's scored, logged pairs: for each log-only measure,
    the events on pairs scored below `threshold` (`flagged:<metric>`) and all its events (`all:<metric>`).

    `behavior` has one row per pair with query_norm, segment, score, impressions, clicks, purchases and
    mean_position. One row per query comes out, so the driver never holds the day's pairs."""
    flagged = F.col("score") < threshold
    sums = []
    for metric, (events, k) in log_only_measures(ks).items():
        counted = F.col(events) if k is None else F.when(F.col("mean_position") <= k, F.col(events))
        sums += [F.sum(F.when(flagged, counted).otherwise(0)).cast("double").alias(f"flagged:{metric}"),
                 F.sum(F.coalesce(counted, F.lit(0))).cast("double").alias(f"all:{metric}")]
    return behavior.groupBy("query_norm", "segment").agg(*sums)


def log_only_rows(per_query: pd.DataFrame, settings: AuditSettings) -> pd.DataFrame:
    """Audits from the logs alone: how much of what users saw, clicked or bought the model calls irrelevant.

    `per_query` is `behavior_per_query`'s output. Shares are weighted by events; CIs resample queries."""
    rows = []
    for segment in FREQUENCY_SEGMENTS:
        in_segment = per_query if segment == "all" else per_query[per_query.segment == segment]
        for metric, (events, k) in log_only_measures(settings.ks).items():
            sums = in_segment[[f"flagged:{metric}", f"all:{metric}"]].to_numpy(dtype=float)
            sums = sums[sums[:, 1] > 0]
            if len(sums) == 0:
                continue
            share = lambda m: m[:, 0].sum() / m[:, 1].sum()  # noqa: E731
            low, high = bootstrap_ci(sums, share, settings.bootstrap_samples, settings.confidence, settings.seed)
            rows.append({"system": MODEL, "segment": segment, "metric": metric, "k": k, "threshold": settings.threshold,
                         "value": float(share(sums)), "support": int(sums[:, 1].sum()), "ci_low": low,
                         "ci_high": high, "definition": f"{events} on pairs scored below the threshold / all {events}"
                         + (f" at mean position <= {k}" if k else "") + "; from the logs alone, no judgments needed"})
    return pd.DataFrame(rows)


OFFENDER_COLUMNS = ["query_norm", "product_id", "score", "impressions", "clicks", "mean_position", "segment"]


def worst_offenders(behavior: DataFrame, threshold: float, limit: int = 10) -> pd.DataFrame:
    """The most-shown pairs the model calls irrelevant: where to look first (only `limit` rows reach the driver)."""
    flagged = behavior.where((F.col("score") < threshold) & (F.col("impressions") > 0))
    return (flagged.orderBy(F.desc("impressions"), "score", "query_norm", "product_id")
            .limit(limit).select(*OFFENDER_COLUMNS).toPandas())


def per_query_metrics(candidates: pd.DataFrame, scores: np.ndarray, judged: pd.DataFrame, settings: AuditSettings) -> pd.DataFrame:
    """Per-query ranking metrics of the candidates ranked by `scores` against the judgments."""
    ranked = pd.DataFrame({"query": candidates.query_norm.values, "product_id": candidates.product_id.values, "score": scores})
    return per_query_ranking_metrics(ranked, judged.rename(columns={"query_norm": "query"}), list(settings.ks),
                                     settings.relevant_min_grade, settings.gain)


def logged_scores(mean_position: pd.Series) -> np.ndarray:
    """The production ranking as a score: higher for a better mean position; never-shown candidates last (tied)."""
    position = mean_position.to_numpy(dtype=float)
    worst = np.nanmax(position) + 1.0 if np.isfinite(position).any() else 1.0
    return -np.where(np.isnan(position), worst, position)


def top_category(category: object) -> str:
    """The first level of a category path ("Furniture > Sofas" or "Furniture / Sofas" -> "furniture")."""
    text = str(category or "").replace("/", ">").split(">")[0].strip().lower()
    return text or "unknown"


def query_length_segment(query: str) -> str:
    words = len(query.split())
    return f"query_len={words if words < 4 else '4+'}"


def query_segments(candidates: pd.DataFrame, judged: pd.DataFrame, relevant_min_grade: int) -> dict[str, set[str]]:
    """Segment name -> its queries: all; head / torso / tail (query log frequency); query_len=1..4+;
    category=<top category> when candidates carry `category` (the most common top category of the
    query's relevant judged products, else of all its candidates; ties alphabetical; beyond the
    MAX_CATEGORY_SEGMENTS largest, "other")."""
    queries = set(candidates.query_norm)
    segments: dict[str, set[str]] = {"all": queries}
    frequency = candidates.groupby("query_norm").segment.first()
    for name in FREQUENCY_SEGMENTS[1:]:
        segments[name] = set(frequency.index[frequency == name])
    if "category" in candidates.columns:
        labelled = candidates[["query_norm", "product_id", "category"]].merge(judged, on=["query_norm", "product_id"], how="left")
        labelled["top"] = labelled.category.map(top_category)
        labelled["weight"] = np.where(labelled.grade.fillna(-1) >= relevant_min_grade, 1.0, 1e-3)
        votes = labelled.groupby(["query_norm", "top"]).weight.sum().reset_index()
        chosen = votes.sort_values(["query_norm", "weight", "top"], ascending=[True, False, True]).groupby("query_norm").top.first()
        counts = chosen.value_counts()
        largest = set(sorted(counts.index, key=lambda c: (-counts[c], c))[:MAX_CATEGORY_SEGMENTS])
        chosen = chosen.where(chosen.isin(largest), "other")
        for category, members in sorted(chosen.groupby(chosen).groups.items()):
            segments[f"category={category}"] = set(members)
    lengths: dict[str, set[str]] = {}
    for query in queries:
        lengths.setdefault(query_length_segment(query), set()).add(query)
    segments.update(sorted(lengths.items()))
    return {name: members for name, members in segments.items() if members}


def _curve_points(scores: np.ndarray, relevant: np.ndarray, max_points: int = 101) -> pd.DataFrame:
    """Precision and recall at up to `max_points` distinct thresholds, evenly spread over the ranked pairs."""
    order, ordered, last_of_value = ranked_by_score(scores)
    hits, cuts = relevant[order], np.flatnonzero(last_of_value)
    cuts = cuts[np.unique(np.linspace(0, len(cuts) - 1, min(max_points, len(cuts))).round().astype(int))]
    tp = np.cumsum(hits)[cuts]
    return pd.DataFrame({"threshold": ordered[cuts], "precision": tp / (cuts + 1), "recall": tp / max(hits.sum(), 1)})


def curves(judged_pairs: pd.DataFrame, systems: list[str], settings: AuditSettings) -> dict[str, pd.DataFrame]:
    """What the report draws over all judged pairs: PR curves per system, the model's reliability bins
    and score histograms per grade."""
    relevant = judged_pairs.grade.to_numpy() >= settings.relevant_min_grade
    pr = [_curve_points(judged_pairs[s].to_numpy(dtype=float), relevant).assign(system=s) for s in systems]
    reliability = calibration_bins(judged_pairs[MODEL].to_numpy(dtype=float), relevant, settings.calibration_bins)
    edges = np.linspace(0.0, 1.0, 21)
    histograms = [
        pd.DataFrame({"system": MODEL, "grade": int(grade), "bin_low": edges[:-1], "bin_high": edges[1:],
                      "count": np.histogram(group[MODEL].clip(0, 1), bins=edges)[0]})
        for grade, group in judged_pairs.groupby("grade")
    ]
    return {
        "pr_curves": pd.concat(pr, ignore_index=True) if pr else pd.DataFrame(),
        "reliability": reliability.assign(system=MODEL) if len(reliability) else reliability,
        "score_histograms": pd.concat(histograms, ignore_index=True) if histograms else pd.DataFrame(),
    }


def curve_rows(drawn: dict[str, pd.DataFrame], settings: AuditSettings) -> pd.DataFrame:
    """The PR curves and reliability bins as `relevance_audit` rows (segment all)."""
    rows = []
    for point in drawn["pr_curves"].itertuples():
        for metric in ("precision", "recall"):
            rows.append({"system": point.system, "segment": "all", "metric": f"pr_curve_{metric}", "k": None,
                         "threshold": point.threshold, "value": getattr(point, metric), "support": None,
                         "definition": f"{metric} of judged pairs scored >= threshold (one point of the PR curve); "
                                       f"relevant: grade >= {settings.relevant_min_grade}"})
    for b in drawn["reliability"].itertuples():
        low, high = wilson_interval(int(round(b.observed_rate * b.count)), int(b.count), settings.confidence)
        for metric, value in (("reliability_mean_score", b.mean_score), ("reliability_observed_rate", b.observed_rate)):
            rows.append({"system": MODEL, "segment": "all", "metric": metric, "k": int(b.bin), "threshold": None,
                         "value": float(value), "support": int(b.count),
                         "ci_low": low if metric.endswith("rate") else None, "ci_high": high if metric.endswith("rate") else None,
                         "definition": f"equal-mass calibration bin k (of {settings.calibration_bins}, by score): "
                                       "mean predicted probability / observed rate of relevant (Wilson CI)"})
    return pd.DataFrame(rows)


def _classifier_rows(judged_pairs: pd.DataFrame, system: str, segment: str, settings: AuditSettings) -> list[dict]:
    """Classifier metrics of judged pairs; CIs by resampling whole queries. Baselines get the threshold-free ones."""
    scores = judged_pairs[system].to_numpy(dtype=float)
    relevant = judged_pairs.grade.to_numpy() >= settings.relevant_min_grade
    metrics = {"roc_auc": pair_metrics.roc_auc, "average_precision": pair_metrics.average_precision}
    if system == MODEL:
        metrics = {**pair_metrics.at_threshold(settings.threshold, settings.f_beta), **metrics, "brier": pair_metrics.brier}
    weights = lambda: pair_metrics.bootstrap_weight_blocks(  # noqa: E731  (the same draws for every metric)
        judged_pairs.query_norm.to_numpy(), settings.bootstrap_samples, settings.seed)
    threshold_metrics = set(pair_metrics.at_threshold(settings.threshold, settings.f_beta))
    predicted = scores >= settings.threshold
    supports = {"precision": int(predicted.sum()), "recall": int(relevant.sum())}
    rows = []
    for metric, fn in metrics.items():
        value, low, high = pair_metrics.value_and_interval(fn, scores, relevant, weights(), settings.confidence)
        rows.append({"system": system, "segment": segment, "metric": metric, "k": None,
                     "threshold": settings.threshold if metric in threshold_metrics else None,
                     "value": value, "support": supports.get(metric, len(judged_pairs)), "ci_low": low, "ci_high": high,
                     "definition": settings.definition(metric)})
    if system != MODEL:
        return rows
    ece = lambda r: expected_calibration_error(scores[r], relevant[r], settings.calibration_bins)  # noqa: E731
    low, high = bootstrap_grouped_ci(judged_pairs.query_norm.to_numpy(), ece, settings.bootstrap_samples,
                                     settings.confidence, settings.seed)
    rows.append({"system": MODEL, "segment": segment, "metric": "ece", "k": None, "threshold": None,
                 "value": ece(np.arange(len(scores))), "support": len(scores), "ci_low": low, "ci_high": high,
                 "definition": settings.definition("ece")})
    threshold, precision, recall = threshold_for_precision(scores, relevant, settings.target_precision, settings.confidence)
    definition = (f"lowest threshold whose Wilson {settings.confidence:.0%} lower bound on precision reaches "
                  f"{settings.target_precision}; precision there {precision:.4f}")
    for metric, value in (("threshold_for_target_precision", threshold), ("recall_at_target_precision", recall)):
        rows.append({"system": MODEL, "segment": segment, "metric": metric, "k": None,
                     "threshold": None if np.isnan(threshold) else threshold, "value": value, "support": len(judged_pairs),
                     "ci_low": None, "ci_high": None, "definition": definition})
    return rows


def _per_query_rows(per_system: dict[str, pd.DataFrame], settings: AuditSettings) -> list[dict]:
    """nDCG at the largest k of every judged query and system (segment `query=<query_norm>`): the worst queries."""
    metric = f"ndcg@{max(settings.ks)}"
    return [
        {"system": system, "segment": f"{QUERY_SEGMENT}{query}", "metric": metric, "k": max(settings.ks),
         "value": float(value), "support": 1, "definition": f"one query's {settings.definition(metric)}"}
        for system, per_query in per_system.items()
        for query, value in zip(per_query["query"], per_query[metric]) if not np.isnan(value)
    ]


def judged_pairs_of(candidates: pd.DataFrame, judged: pd.DataFrame, systems: dict[str, np.ndarray]) -> pd.DataFrame:
    """Judged candidates with one score column per system."""
    scored = candidates[["query_norm", "product_id"]].assign(**{name: np.asarray(s, dtype=float) for name, s in systems.items()})
    return scored.merge(judged[["query_norm", "product_id", "grade"]], on=["query_norm", "product_id"], how="inner")


def audit_rows(candidates: pd.DataFrame, judged: pd.DataFrame, settings: AuditSettings,
               systems: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Pure audit: candidates (query_norm, product_id, score, mean_position, segment[, category]) x judgments -> rows.

    `judged` holds (query_norm, product_id, grade); only queries with both candidates and
    judgments are evaluated. `systems` maps extra system names (baselines) to scores aligned
    with `candidates`; the model (`score`) and the logged ranking (`mean_position`) are always
    included. Every system is ranked over the same candidates and judged on the same pairs.
    """
    judged_queries = set(judged.query_norm) & set(candidates.query_norm)
    keep = candidates.query_norm.isin(judged_queries).to_numpy()
    candidates = candidates[keep]
    judged = judged[judged.query_norm.isin(judged_queries)]
    systems = {
        MODEL: candidates.score.to_numpy(dtype=float),
        **{name: np.asarray(scores, dtype=float)[keep] for name, scores in (systems or {}).items()},
        LOGGED: logged_scores(candidates.mean_position),
    }
    per_system = {name: per_query_metrics(candidates, scores, judged, settings) for name, scores in systems.items()}
    judged_pairs = judged_pairs_of(candidates, judged, systems)
    rows: list[dict] = []
    for segment, queries in query_segments(candidates, judged, settings.relevant_min_grade).items():
        subset = judged_pairs[judged_pairs.query_norm.isin(queries)]
        for name, per_query in per_system.items():
            rows += _ranking_rows(per_query[per_query["query"].isin(queries)], name, segment, settings)
            if len(subset):
                rows += _classifier_rows(subset, name, segment, settings)
    rows += _per_query_rows(per_system, settings)
    frame = pd.DataFrame(rows, columns=AUDIT_COLUMNS[:-2])
    logged = frame[frame.system == LOGGED].set_index(["segment", "metric", "k"]).value
    keys = list(zip(frame.segment, frame.metric, frame.k))
    frame["baseline"] = [LOGGED if system == MODEL and key in logged.index else None for system, key in zip(frame.system, keys)]
    frame["baseline_value"] = [logged.get(key) if b else None for b, key in zip(frame.baseline, keys)]
    return frame


def compare_rows(candidates: pd.DataFrame, judged: pd.DataFrame, other_scores: np.ndarray, other_version: str,
                 settings: AuditSettings) -> tuple[pd.DataFrame, dict]:
    """Model vs another model version on the same judged candidates: paired per-query deltas.

    Rows carry metric `delta_<metric>` (current - other), a bootstrap CI of the mean delta
    and the sign-flip randomization p-value in `definition`; details count queries that
    got better or worse on each metric.
    """
    per_query = {
        name: per_query_metrics(candidates, scores, judged, settings).set_index("query")
        for name, scores in (("current", candidates.score.to_numpy(dtype=float)), ("other", other_scores))
    }
    metrics = [c for c in per_query["current"].columns if "@" in c or c in ("map", "mrr")]
    rows, movement = [], {}
    for segment, members in query_segments(candidates, judged, settings.relevant_min_grade).items():
        queries = per_query["current"].index[per_query["current"].index.isin(members)]
        for metric in metrics:
            current, other = per_query["current"].loc[queries, metric], per_query["other"].loc[queries, metric]
            delta = (current - other).dropna().to_numpy()
            if len(delta) == 0:
                continue
            low, high = bootstrap_mean_ci(delta, settings.bootstrap_samples, settings.confidence, settings.seed)
            p_value = paired_randomization_p_value(delta, seed=settings.seed)
            rows.append({"system": MODEL, "segment": segment, "metric": f"delta_{metric}", "k": _metric_k(metric),
                         "threshold": None, "value": float(delta.mean()), "support": len(delta), "ci_low": low,
                         "ci_high": high, "baseline": f"model:{other_version}", "baseline_value": float(other.mean()),
                         "definition": f"mean per-query {metric} of this model minus {other_version}; "
                                       f"p={p_value:.4f} (paired sign-flip randomization test)"})
            if segment == "all":
                movement[metric] = {"better": int((delta > 1e-12).sum()), "worse": int((delta < -1e-12).sum()),
                                    "p_value": p_value}
    return pd.DataFrame(rows), movement


def regression_failure(comparison: pd.DataFrame, metric: str, margin: float) -> str | None:
    """The one-line reason to fail, when `metric` dropped by more than `margin` overall."""
    row = comparison[(comparison.metric == f"delta_{metric}") & (comparison.segment == "all")]
    if row.empty:
        return f"regression gate: no '{metric}' comparison to check"
    delta = float(row.value.iloc[0])
    if delta < -margin:
        return (f"regression: {metric} changed by {delta:+.4f} against {row.baseline.iloc[0]}, beyond the allowed "
                f"drop of {margin} (95% CI of the change [{row.ci_low.iloc[0]:+.4f}, {row.ci_high.iloc[0]:+.4f}])")
    return None


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
    model = frame[(frame.system == MODEL) & ~frame.metric.str.startswith(CURVE_PREFIXES)].copy()
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


def write_markdown_report(root: str, ds: str, model_version: str, run_id: str, summary: str) -> str | None:
    """A short Markdown summary next to the tables (local warehouses only); returns its path."""
    if "://" in root:
        return None
    path = Path(root) / "reports" / f"audit_{ds}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Relevance audit {ds}\n\nmodel `{model_version}`, run `{run_id}`\n\n```\n{summary}\n```\n")
    return str(path)


def settings_from_config(cfg: dict, card_threshold: float) -> AuditSettings:
    scheme = label_scheme(cfg)
    gain = scheme.get("gain", "linear")
    return AuditSettings(
        ks=tuple(int(k) for k in get(cfg, "audit.ks", [5, 10])),
        relevant_min_grade=int(scheme["relevant_min_grade"]),
        gain=gain if isinstance(gain, dict) else str(gain),
        threshold=float(card_threshold),
        bootstrap_samples=int(get(cfg, "audit.bootstrap_samples", 500)),
        confidence=float(get(cfg, "audit.confidence", 0.95)),
        seed=int(get(cfg, "audit.seed", 0)),
        target_precision=float(get(cfg, "audit.target_precision", 0.9)),
        f_beta=float(get(cfg, "audit.f_beta", 0.5)),
    )


def held_out_queries(splits: list[dict | None], queries: Iterable[str]) -> tuple[set[str], str]:
    """The queries none of the audited models was trained or tuned on, and a description of that scope.

    `splits` holds each model version's split.json ({"train": [...], "val": [...], "test": [...]}),
    None for a model trained elsewhere; without any, every query counts, and the scope says so.
    """
    queries = set(queries)
    known = [split for split in splits if split]
    if not known:
        return queries, "all judged queries (no model version records a training split)"
    seen = set().union(*(set(split.get("train", [])) | set(split.get("val", [])) for split in known))
    excluded = len(queries & seen)
    return queries - seen, f"judged queries outside the training and validation split of the audited model(s) ({excluded} excluded)"


def write_thresholds(model_dir: str | Path, ds: str, run_id: str, frame: pd.DataFrame, settings: AuditSettings,
                     storage_options: dict[str, str] | None = None) -> str | Path | None:
    """The thresholds for the target precision, overall and per segment, next to the model version
    (`<version>/thresholds/<ds>.json`, a local folder or the version's URI on an object store); returns where they
    were written, None where the version is no local folder nor a URI."""
    from jobs.core import storage

    rows = frame[(frame.system == MODEL) & frame.metric.isin(["threshold_for_target_precision", "recall_at_target_precision"])]
    if rows.empty or not (storage.is_remote(model_dir) or Path(model_dir).is_dir()):
        return None
    per_segment = {segment: {r.metric.replace("_at_target_precision", "").replace("_for_target_precision", ""):
                             (None if pd.isna(r.value) else float(r.value)) for r in group.itertuples()}
                   for segment, group in rows.groupby("segment")}
    path = storage.join(model_dir, "thresholds", f"{ds}.json")
    storage.write_text(path, json.dumps({"ds": ds, "run_id": run_id, "target_precision": settings.target_precision,
                                "confidence": settings.confidence, "queries": settings.scope,
                                "rule": "lowest threshold whose Wilson lower bound on precision reaches the target",
                                "segments": per_segment}, indent=1), storage_options)
    return path if storage.is_remote(path) else Path(path)


def read_split(model_dir: Path) -> dict | None:
    path = Path(model_dir) / "split.json"
    return json.loads(path.read_text()) if path.is_file() else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Audit one day's relevance scores against human judgments into `relevance_audit`."
    parser.add_argument("--compare", metavar="MODEL_VERSION[:PRECISION]",
                        help="also score the judged candidates with this model version (optionally in another "
                             "precision, e.g. V:int8) and report paired deltas")
    parser.add_argument("--fail-on-regression", dest="fail_on_regression", action="store_true",
                        help="exit non-zero when audit.regression.metric drops by more than audit.regression.margin")


def apply_arguments(cfg: dict, args: argparse.Namespace) -> None:
    if args.compare:
        set_path(cfg, "audit.compare", args.compare)
    if args.fail_on_regression:
        set_path(cfg, "audit.fail_on_regression", True)


def judged_candidates(relevance: DataFrame, pairs: DataFrame, catalog: DataFrame, texts: DataFrame,
                       judgments: DataFrame, scheme: dict) -> tuple[DataFrame, DataFrame]:
    """(candidates, judged) of the day's judged queries: every scored candidate of each judged
    query with its logged position, frequency segment, product text and catalog category. The judgments are the
    ones build_pairs and finetune use (build_pairs.classify_judgments: grades in the label scheme, conflicting
    grades of a pair resolved by its declared rule); `texts` are build_pairs.catalog_texts of the catalog."""
    from jobs.build_pairs import classify_judgments

    usable = classify_judgments(judgments, texts, scheme).where(F.col("reason").isNull())
    judged = usable.select("query_norm", "product_id", F.col("grade").cast("long").alias("grade")).distinct()
    judged = judged.join(F.broadcast(relevance.select("query_norm").distinct()), "query_norm", "left_semi")
    categories = catalog.groupBy("product_id").agg(F.max("category").alias("category"))
    candidates = (
        relevance.join(judged.select("query_norm").distinct(), "query_norm", "left_semi")
        .join(pairs.select("query_norm", "product_id", "mean_position", "segment", "product_text"),
              ["query_norm", "product_id"], "left")
        .join(categories, "product_id", "left")
        .select("query_norm", "product_id", "score", "mean_position", "segment", "product_text", "category")
    )
    return candidates, judged


def held_out_candidates(candidates: DataFrame, judged: DataFrame, splits: list[dict | None], max_pairs: int,
                        seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The candidates and judgments of the held-out judged queries (`held_out_queries`), in pandas, and the scope.

    Only the judged queries' names and the kept candidates reach the driver: past `max_pairs` candidates, whole
    queries are kept in a seeded order (`whole_queries_up_to`) and the scope says how many."""
    judged_queries = {row.query_norm for row in
                      candidates.join(judged, "query_norm", "left_semi").select("query_norm").distinct().collect()}
    queries, scope = held_out_queries(splits, judged_queries)
    chosen = candidates.sparkSession.createDataFrame([(q,) for q in sorted(queries)], "query_norm string")
    held = candidates.join(F.broadcast(chosen), "query_norm", "left_semi")
    if held.count() > max_pairs:
        held = whole_queries_up_to(held, max_pairs, seed)
        kept = held.select("query_norm").distinct().count()
        scope += f"; {kept} of these {len(queries)} queries, chosen by seed, to stay within audit.max_judged_pairs={max_pairs}"
    kept_queries = held.select("query_norm").distinct()
    candidates_frame: pd.DataFrame = held.toPandas()
    judged_frame: pd.DataFrame = judged.join(kept_queries, "query_norm", "left_semi").toPandas()
    candidates_frame = candidates_frame.sort_values(["query_norm", "product_id"], ignore_index=True)
    judged_frame = judged_frame.sort_values(["query_norm", "product_id"], ignore_index=True)
    return candidates_frame, judged_frame, scope


def baseline_scores(cfg: dict, texts: DataFrame, candidates: pd.DataFrame) -> dict[str, np.ndarray]:
    """Scores of the configured baselines (audit.baselines) for the (judged, so bounded) candidates; `texts`
    (product_id, product_text) of the whole catalog are BM25's corpus, which stays in Spark."""
    from jobs.baselines import bm25_scores_spark, zero_shot_scores
    from udfs.model import resolve_base_model

    names = list(get(cfg, "audit.baselines", [BM25, ZERO_SHOT]) or [])
    unknown = set(names) - {BM25, ZERO_SHOT}
    if unknown:
        raise ValueError(f"audit.baselines: unknown {sorted(unknown)}; expected {BM25!r} and/or {ZERO_SHOT!r}")
    scores = {}
    if BM25 in names:  # corpus statistics and scores computed by Spark; the candidates' scores come back
        keys = candidates[["query_norm", "product_id"]]
        bm25 = bm25_scores_spark(texts, texts.sparkSession.createDataFrame(keys)).toPandas()
        scores[BM25] = keys.merge(bm25, on=["query_norm", "product_id"], how="left").bm25.to_numpy(dtype=float)
    if ZERO_SHOT in names:
        base = resolve_base_model(str(get(cfg, "model.base")))
        scores[ZERO_SHOT] = zero_shot_scores(base, candidates.query_norm.tolist(), candidates.product_text.tolist())
    return scores


def run(ctx: JobContext) -> JobResult:
    from jobs.core.storage import storage_options_from_config
    from jobs.report_html import AuditReport, render_audit_html, write_html_report
    from udfs.model import fetch_model_version, load_model_version, locate_model_version, read_card, resolve_model_dir
    from udfs.scorer import score_pairs

    wh, ds, spark, cfg = ctx.warehouse, ctx.require_ds(), ctx.spark, ctx.cfg
    relevance = conform(wh.read(RELEVANCE, {"ds": ds}), RELEVANCE, wh.path(RELEVANCE.name))
    pairs = conform(wh.read(PAIRS, {"ds": ds}), PAIRS, wh.path(PAIRS.name))
    judgments_spec = replace(JUDGMENTS, name=str(get(cfg, "audit.judgments_table", JUDGMENTS.name)))
    judgments = (conform(wh.read(judgments_spec), judgments_spec, wh.path(judgments_spec.name))
                 if wh.exists(judgments_spec.name) else None)
    if judgments is not None and not judgments.take(1):
        judgments = None  # an empty judgments table: the log-only audit, as without one
    if judgments is None and get(cfg, "audit.compare", None):
        raise FileNotFoundError(f"--compare needs judgments: no table at {wh.path(judgments_spec.name)}")
    catalog = conform(wh.read(CATALOG), CATALOG, wh.path(CATALOG.name)) if judgments is not None else None

    relevance = relevance.cache()
    rows_in = relevance.count()
    if rows_in == 0:
        raise FileNotFoundError(f"relevance has no rows for ds={ds} in {wh.path(RELEVANCE.name)} (run score first)")
    versions = [r[0] for r in relevance.select("model_version").distinct().collect()]
    model_version = versions[0]
    options, cache_dir = storage_options_from_config(cfg), get(cfg, "model.cache_dir", None)
    model_location = locate_model_version(get(cfg, "model.models_root"), model_version, options)  # thresholds go there
    model_dir = fetch_model_version(model_location, options, cache_dir)
    card = read_card(model_dir)
    settings = settings_from_config(cfg, card.get("threshold", 0.5))

    behavior = (
        relevance.join(pairs.where((F.col("impressions") > 0) | (F.col("clicks") > 0)), ["query_norm", "product_id"])
        .select("query_norm", "product_id", "segment", "score", "impressions", "clicks", "purchases", "mean_position")
    )
    behavior_queries = behavior_per_query(behavior, settings.threshold, settings.ks).toPandas()
    frames = [log_only_rows(behavior_queries, settings)]
    drawn: dict[str, pd.DataFrame] = {}
    judged_queries_count, comparison = 0, None
    movement: dict = {}
    if judgments is not None:
        from jobs.build_pairs import catalog_texts

        assert catalog is not None  # read above whenever there are judgments
        texts = catalog_texts(catalog, int(get(cfg, "pairs.product_text_max_words", PRODUCT_TEXT_MAX_WORDS)))[0].cache()  # judged and BM25
        other_version = get(cfg, "audit.compare", None)
        other_dir = (resolve_model_dir(get(cfg, "model.models_root"), str(other_version).partition(":")[0], options,
                                       cache_dir) if other_version else None)
        splits = [read_split(model_dir)] + ([read_split(other_dir)] if other_dir else [])
        candidates, judged, scope = held_out_candidates(
            *judged_candidates(relevance, pairs, catalog, texts, judgments, label_scheme(cfg)), splits,
            int(get(cfg, "audit.max_judged_pairs")), settings.seed)
        settings = replace(settings, scope=f"{scope}; judged by table {judgments_spec.name}")
        judged_queries_count = int(candidates.query_norm.nunique())
        baselines = baseline_scores(cfg, texts, candidates) if judged_queries_count else {}
        frames.insert(0, audit_rows(candidates, judged, settings, baselines))
        if judged_queries_count:
            systems = {MODEL: candidates.score.to_numpy(dtype=float), **baselines,
                       LOGGED: logged_scores(candidates.mean_position)}
            drawn = curves(judged_pairs_of(candidates, judged, systems), list(systems), settings)
            frames.append(curve_rows(drawn, settings))
        if other_dir is not None:  # audit.compare is set
            other = load_model_version(other_dir, "cpu", str(other_version).partition(":")[2] or "fp32")
            other_scores, _ = score_pairs(other, candidates.query_norm.tolist(), candidates.product_text.tolist())
            comparison, movement = compare_rows(candidates, judged, other_scores, str(other_version), settings)
            frames.append(comparison)
    frame = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *RELEVANCE_AUDIT.columns])))  # log-only rows lack some
    now = dt.datetime.now(dt.timezone.utc)
    frame = frame.assign(run_id=ctx.run_id, model_version=model_version, created_at=now, ds=ds)
    offenders = worst_offenders(behavior, settings.threshold)
    summary = "\n\n".join(part for part in (
        format_comparison(frame, settings.scope) if judged_queries_count else "",
        format_summary(frame, model_version, ds),
        "Most-shown pairs the model calls irrelevant:\n" + (
            offenders.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(offenders) else "(none)")
        if len(behavior_queries) else "Log-only audits skipped: no logged impressions or clicks for this ds (offline evaluation).",
    ) if part)
    if comparison is not None:
        primary = str(get(cfg, "audit.regression.metric", "ndcg@10"))
        moved = movement.get(primary, {})
        summary += (f"\n\nagainst {other_version}: {primary} better on {moved.get('better', 0)} queries, "
                    f"worse on {moved.get('worse', 0)} (p={moved.get('p_value', float('nan')):.4f})")
        failure = regression_failure(comparison, primary, float(get(cfg, "audit.regression.margin", 0.01)))
    else:
        failure = None
    markdown = write_markdown_report(wh.root, ds, model_version, ctx.run_id, summary)
    html = write_html_report(wh.root, ds, render_audit_html(AuditReport(
        ds=ds, model_version=model_version, run_id=ctx.run_id, created_at=now.isoformat(timespec="seconds"),
        metrics=frame[~frame.metric.str.startswith(CURVE_PREFIXES) & ~frame.segment.str.startswith(QUERY_SEGMENT)],
        pr_curves=drawn.get("pr_curves", pd.DataFrame()),
        reliability=drawn.get("reliability", pd.DataFrame()),
        score_histograms=drawn.get("score_histograms", pd.DataFrame()), worst_offenders=offenders,
        threshold=settings.threshold, target_precision=settings.target_precision, summary_text=summary)))
    thresholds = write_thresholds(model_location, ds, ctx.run_id, frame, settings, options)
    reports = [str(path) for path in (html, markdown, thresholds) if path]
    if reports:
        summary += "\n\nreports and thresholds: " + ", ".join(reports)
    written = wh.overwrite_partition(to_spark(spark, frame, RELEVANCE_AUDIT), RELEVANCE_AUDIT, {"ds": ds}, ctx.run_id)
    if failure and get(cfg, "audit.fail_on_regression", False):
        print(summary)
        raise JobError(failure)
    if failure:
        summary += f"\n{failure} (not failing: --fail-on-regression not set)"
    return JobResult(
        rows_in=rows_in,
        rows_out=written,
        rows_rejected=0,
        model_version=model_version,
        details={"judged_queries": judged_queries_count, "query_scope": settings.scope, "threshold": settings.threshold,
                 "reports": reports, "compared_with": get(cfg, "audit.compare", None), "query_movement": movement,
                 "model_versions_in_partition": versions},
        summary=summary,
    )
