"""audit: `relevance` + judgments (+ `pairs` for segments and the logged ranking) -> `relevance_audit`.

Per run, segment (all / head / torso / tail), system and metric, with query-level
bootstrap confidence intervals. Systems: the model (`model`) and the production
ranking seen in the logs (`logged_position`, by mean impression position), ranked
over the same candidates, so the model rows carry the logged ranking as baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from jobs.core.config import get, set_path
from jobs.core.job import JobContext, JobError, JobResult
from sklearn.metrics import average_precision_score, roc_auc_score

from jobs.metrics import (
    bootstrap_ci,
    bootstrap_grouped_ci,
    bootstrap_mean_ci,
    brier_score,
    confusion_at_threshold,
    expected_calibration_error,
    paired_randomization_p_value,
    per_query_ranking_metrics,
    threshold_for_precision,
)
from jobs.transforms import to_spark, with_normalized_query
from schemas import conform
from schemas.tables import JUDGMENTS, PAIRS, RELEVANCE, RELEVANCE_AUDIT

JOB = "audit"
MODEL, LOGGED = "model", "logged_position"
SEGMENTS = ("all", "head", "torso", "tail")


@dataclass(frozen=True)
class AuditSettings:
    ks: tuple[int, ...] = (5, 10)
    relevant_min_grade: int = 1
    gain: str = "linear"
    threshold: float = 0.5
    bootstrap_samples: int = 500
    confidence: float = 0.95
    seed: int = 0
    calibration_bins: int = 10
    target_precision: float = 0.9

    def definition(self, metric: str) -> str:
        ranking = (f"rank by score desc then product_id asc; unjudged = not relevant; relevant: grade >= "
                   f"{self.relevant_min_grade}; gain {self.gain}")
        if metric.startswith("precision@"):
            return f"relevant in top k / k; {ranking}"
        if metric.startswith("recall@"):
            return f"relevant in top k / relevant judged; queries without relevant excluded; {ranking}"
        if metric.startswith("ndcg@"):
            return f"DCG@k / ideal DCG@k over all judged grades; log2(rank+1) discount; {ranking}"
        if metric in ("map", "mrr"):
            return f"{'mean average precision' if metric == 'map' else 'mean reciprocal rank'}; {ranking}"
        if metric in ("brier", "ece"):
            return (f"{'Brier score' if metric == 'brier' else f'expected calibration error, {self.calibration_bins} equal-mass bins'}"
                    f" of judged scored pairs; relevant: grade >= {self.relevant_min_grade}")
        if metric in ("roc_auc", "average_precision"):
            return f"{metric} of judged scored pairs (score vs relevant: grade >= {self.relevant_min_grade})"
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


def _pair_metrics(settings: AuditSettings) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """Metrics of judged, scored pairs: f(scores, relevant) -> value."""

    def at_threshold(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
        return lambda scores, relevant: getattr(confusion_at_threshold(scores, relevant, settings.threshold), name)

    def ranked(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray], float]:
        return lambda scores, relevant: float(fn(relevant, scores)) if 0 < relevant.sum() < len(relevant) else float("nan")

    return {
        "precision": at_threshold("precision"),
        "recall": at_threshold("recall"),
        "f1": at_threshold("f1"),
        "roc_auc": ranked(roc_auc_score),
        "average_precision": ranked(average_precision_score),
        "brier": lambda scores, relevant: brier_score(scores, relevant),
        "ece": lambda scores, relevant: expected_calibration_error(scores, relevant, settings.calibration_bins),
    }


def _classifier_rows(scored: pd.DataFrame, segment: str, settings: AuditSettings) -> list[dict]:
    """Classifier metrics over judged, scored pairs; CIs by resampling whole queries."""
    scores = scored.score.to_numpy(dtype=float)
    relevant = scored.grade.to_numpy() >= settings.relevant_min_grade
    predicted = scores >= settings.threshold
    supports = {"precision": int(predicted.sum()), "recall": int(relevant.sum())}
    rows = []
    for metric, fn in _pair_metrics(settings).items():
        value = fn(scores, relevant)
        low, high = bootstrap_grouped_ci(scored.query_norm.to_numpy(), lambda r: fn(scores[r], relevant[r]),
                                         settings.bootstrap_samples, settings.confidence, settings.seed)
        rows.append({"system": MODEL, "segment": segment, "metric": metric, "k": None,
                     "threshold": settings.threshold if metric in ("precision", "recall", "f1") else None,
                     "value": value, "support": supports.get(metric, len(scored)), "ci_low": low, "ci_high": high,
                     "definition": settings.definition(metric)})
    threshold, precision, recall = threshold_for_precision(scores, relevant, settings.target_precision, settings.confidence)
    definition = (f"lowest threshold whose Wilson {settings.confidence:.0%} lower bound on precision reaches "
                  f"{settings.target_precision}; precision there {precision:.4f}")
    for metric, value in (("threshold_for_target_precision", threshold), ("recall_at_target_precision", recall)):
        rows.append({"system": MODEL, "segment": segment, "metric": metric, "k": None,
                     "threshold": None if np.isnan(threshold) else threshold, "value": value, "support": len(scored),
                     "ci_low": None, "ci_high": None, "definition": definition})
    return rows


def log_only_rows(behavior: pd.DataFrame, settings: AuditSettings) -> pd.DataFrame:
    """Audits from the logs alone: how much of what users saw, clicked or bought the model calls irrelevant.

    `behavior` has one row per pair with query_norm, segment, score, impressions, clicks,
    purchases and mean_position. Shares are weighted by events; CIs resample queries.
    """
    irrelevant = behavior.score.to_numpy(dtype=float) < settings.threshold
    measures = {f"irrelevant_impression_share@{k}": ("impressions", behavior.mean_position.le(k).to_numpy(), k)
                for k in settings.ks}
    measures["irrelevant_click_share"] = ("clicks", np.ones(len(behavior), bool), None)
    measures["irrelevant_purchase_share"] = ("purchases", np.ones(len(behavior), bool), None)
    rows = []
    for segment in SEGMENTS:
        in_segment = np.ones(len(behavior), bool) if segment == "all" else (behavior.segment == segment).to_numpy()
        for metric, (events, eligible, k) in measures.items():
            weights = behavior[events].to_numpy(dtype=float) * (eligible & in_segment)
            per_query = (
                pd.DataFrame({"query": behavior.query_norm.values, "flagged": weights * irrelevant, "all": weights})
                .groupby("query")[["flagged", "all"]].sum()
            )
            per_query = per_query[per_query["all"] > 0].to_numpy()
            if len(per_query) == 0:
                continue
            share = lambda m: m[:, 0].sum() / m[:, 1].sum()  # noqa: E731
            low, high = bootstrap_ci(per_query, share, settings.bootstrap_samples, settings.confidence, settings.seed)
            rows.append({"system": MODEL, "segment": segment, "metric": metric, "k": k, "threshold": settings.threshold,
                         "value": float(share(per_query)), "support": int(per_query[:, 1].sum()), "ci_low": low,
                         "ci_high": high, "definition": f"{events} on pairs scored below the threshold / all {events}"
                         + (f" at mean position <= {k}" if k else "") + "; from the logs alone, no judgments needed"})
    return pd.DataFrame(rows)


def worst_offenders(behavior: pd.DataFrame, threshold: float, limit: int = 10) -> pd.DataFrame:
    """The most-shown pairs the model calls irrelevant: where to look first."""
    flagged = behavior[(behavior.score < threshold) & (behavior.impressions > 0)]
    return flagged.sort_values(["impressions", "score"], ascending=[False, True]).head(limit)[
        ["query_norm", "product_id", "score", "impressions", "clicks", "mean_position", "segment"]]


def per_query_metrics(candidates: pd.DataFrame, scores: np.ndarray, judged: pd.DataFrame, settings: AuditSettings) -> pd.DataFrame:
    """Per-query ranking metrics of the candidates ranked by `scores` against the judgments."""
    ranked = pd.DataFrame({"query": candidates.query_norm.values, "product_id": candidates.product_id.values, "score": scores})
    return per_query_ranking_metrics(ranked, judged.rename(columns={"query_norm": "query"}), list(settings.ks),
                                     settings.relevant_min_grade, settings.gain)


def audit_rows(candidates: pd.DataFrame, judged: pd.DataFrame, settings: AuditSettings) -> pd.DataFrame:
    """Pure audit: candidates (query_norm, product_id, score, mean_position, segment) x judgments -> metric rows.

    `judged` holds (query_norm, product_id, grade); only queries with both candidates and
    judgments are evaluated.
    """
    judged_queries = set(judged.query_norm) & set(candidates.query_norm)
    candidates = candidates[candidates.query_norm.isin(judged_queries)]
    judged = judged[judged.query_norm.isin(judged_queries)]
    segment_of = candidates.groupby("query_norm").segment.first()
    systems = {
        MODEL: candidates.score.to_numpy(dtype=float),
        LOGGED: -candidates.mean_position.fillna(np.inf).to_numpy(dtype=float),
    }
    per_system = {name: per_query_metrics(candidates, scores, judged, settings) for name, scores in systems.items()}
    scored_judged = candidates.merge(judged, on=["query_norm", "product_id"], how="inner")
    rows: list[dict] = []
    for segment in SEGMENTS:
        for name, per_query in per_system.items():
            in_segment = per_query if segment == "all" else per_query[per_query["query"].map(segment_of) == segment]
            rows += _ranking_rows(in_segment, name, segment, settings)
        subset = scored_judged if segment == "all" else scored_judged[scored_judged.segment == segment]
        if len(subset):
            rows += _classifier_rows(subset, segment, settings)
    frame = pd.DataFrame(rows, columns=["system", "segment", "metric", "k", "threshold", "value", "support",
                                        "ci_low", "ci_high", "definition"])
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
    segment_of = candidates.groupby("query_norm").segment.first()
    metrics = [c for c in per_query["current"].columns if "@" in c or c in ("map", "mrr")]
    rows, movement = [], {}
    for segment in SEGMENTS:
        queries = per_query["current"].index if segment == "all" else \
            per_query["current"].index[per_query["current"].index.map(segment_of) == segment]
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


def format_summary(frame: pd.DataFrame, model_version: str, ds: str) -> str:
    """A readable table: model metric per segment, with the logged ranking in brackets."""
    model = frame[frame.system == MODEL].copy()
    if model.empty:
        return f"audit ds={ds}: no judged queries among the scored pairs; nothing to report"
    lines = [f"audit ds={ds} model={model_version}  value [95% CI] (logged ranking)", ""]
    segments = [s for s in SEGMENTS if s in set(model.segment)]
    header = f"{'metric':<32}" + "".join(f"{s:>30}" for s in segments)
    lines += [header, "-" * len(header)]
    for name in dict.fromkeys(model.metric):
        cells = []
        for segment in segments:
            row = model[(model.metric == name) & (model.segment == segment)]
            if row.empty:
                cells.append(f"{'-':>30}")
                continue
            r = row.iloc[0]
            base = f" ({r.baseline_value:.3f})" if pd.notna(r.baseline_value) else ""
            cells.append(f"{r.value:.3f} [{r.ci_low:.3f},{r.ci_high:.3f}]{base}".rjust(30))
        lines.append(f"{name:<32}" + "".join(cells))
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
    scheme = get(cfg, f"labels.schemes.{get(cfg, 'labels.scheme')}")
    return AuditSettings(
        ks=tuple(int(k) for k in get(cfg, "audit.ks", [5, 10])),
        relevant_min_grade=int(scheme["relevant_min_grade"]),
        gain=str(scheme.get("gain", "linear")),
        threshold=float(card_threshold),
        bootstrap_samples=int(get(cfg, "audit.bootstrap_samples", 500)),
        confidence=float(get(cfg, "audit.confidence", 0.95)),
        seed=int(get(cfg, "audit.seed", 0)),
        target_precision=float(get(cfg, "audit.target_precision", 0.9)),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Audit one day's relevance scores against human judgments into `relevance_audit`."
    parser.add_argument("--compare", metavar="MODEL_VERSION",
                        help="also score the judged candidates with this model version and report paired deltas")
    parser.add_argument("--fail-on-regression", dest="fail_on_regression", action="store_true",
                        help="exit non-zero when audit.regression.metric drops by more than audit.regression.margin")


def apply_arguments(cfg: dict, args: argparse.Namespace) -> None:
    if args.compare:
        set_path(cfg, "audit.compare", args.compare)
    if args.fail_on_regression:
        set_path(cfg, "audit.fail_on_regression", True)


def run(ctx: JobContext) -> JobResult:
    from udfs.model import load_model_version, read_card, resolve_model_dir
    from udfs.scorer import score_pairs

    wh, ds, spark = ctx.warehouse, ctx.ds, ctx.spark
    relevance = conform(wh.read(RELEVANCE, {"ds": ds}), RELEVANCE, wh.path(RELEVANCE.name))
    pairs = conform(wh.read(PAIRS, {"ds": ds}), PAIRS, wh.path(PAIRS.name))
    judgments_spec = replace(JUDGMENTS, name=str(get(ctx.cfg, "audit.judgments_table", JUDGMENTS.name)))
    judgments = (conform(wh.read(judgments_spec), judgments_spec, wh.path(judgments_spec.name))
                 if wh.exists(judgments_spec.name) else None)

    relevance = relevance.cache()
    rows_in = relevance.count()
    if rows_in == 0:
        raise FileNotFoundError(f"relevance has no rows for ds={ds} in {wh.path(RELEVANCE.name)} (run score first)")
    versions = [r[0] for r in relevance.select("model_version").distinct().collect()]
    model_version = versions[0]
    card = read_card(resolve_model_dir(get(ctx.cfg, "model.models_root"), model_version))
    settings = settings_from_config(ctx.cfg, card.get("threshold", 0.5))

    behavior = (
        relevance.join(pairs.where((F.col("impressions") > 0) | (F.col("clicks") > 0)), ["query_norm", "product_id"])
        .select("query_norm", "product_id", "segment", "score", "impressions", "clicks", "purchases", "mean_position")
        .toPandas()
    )
    frames = [log_only_rows(behavior, settings)]
    judged_queries_count, comparison, movement = 0, None, {}
    if judgments is not None:
        judged = with_normalized_query(judgments, "query").groupBy("query_norm", "product_id").agg(
            F.round(F.avg("grade")).cast("long").alias("grade"))
        candidates = (
            relevance.join(judged.select("query_norm").distinct(), "query_norm", "left_semi")
            .join(pairs.select("query_norm", "product_id", "mean_position", "segment", "product_text"),
                  ["query_norm", "product_id"], "left")
            .select("query_norm", "product_id", "score", "mean_position", "segment", "product_text")
            .toPandas()
        )
        judged_pd = judged.join(F.broadcast(relevance.select("query_norm").distinct()), "query_norm", "left_semi").toPandas()
        frames.insert(0, audit_rows(candidates, judged_pd, settings))
        judged_queries_count = int(candidates.query_norm.nunique())
        other_version = get(ctx.cfg, "audit.compare", None)
        if other_version:
            other = load_model_version(resolve_model_dir(get(ctx.cfg, "model.models_root"), str(other_version)))
            other_scores, _ = score_pairs(other, candidates.query_norm.tolist(), candidates.product_text.tolist())
            comparison, movement = compare_rows(candidates, judged_pd, other_scores, other.version, settings)
            frames.append(comparison)
    elif get(ctx.cfg, "audit.compare", None):
        raise FileNotFoundError(f"--compare needs judgments: no table at {wh.path(judgments_spec.name)}")
    frame = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    now = dt.datetime.now(dt.timezone.utc)
    frame = frame.assign(run_id=ctx.run_id, model_version=model_version, created_at=now, ds=ds)
    offenders = worst_offenders(behavior, settings.threshold)
    summary = format_summary(frame, model_version, ds) + "\n\nMost-shown pairs the model calls irrelevant:\n" + (
        offenders.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(offenders) else "(none)")
    report = write_markdown_report(wh.root, ds, model_version, ctx.run_id, summary)
    if report:
        summary += f"\n\nreport: {report}"
    audit_df = to_spark(spark, frame, RELEVANCE_AUDIT)
    written = wh.overwrite_partition(audit_df, RELEVANCE_AUDIT, {"ds": ds}, ctx.run_id)
    if comparison is not None:
        primary = str(get(ctx.cfg, "audit.regression.metric", "ndcg@10"))
        moved = movement.get(primary, {})
        summary += (f"\n\nagainst {get(ctx.cfg, 'audit.compare')}: {primary} better on {moved.get('better', 0)} queries, "
                    f"worse on {moved.get('worse', 0)} (p={moved.get('p_value', float('nan')):.4f})")
        failure = regression_failure(comparison, primary, float(get(ctx.cfg, "audit.regression.margin", 0.01)))
        if failure and get(ctx.cfg, "audit.fail_on_regression", False):
            print(summary)
            raise JobError(failure)
        if failure:
            summary += f"\n{failure} (not failing: --fail-on-regression not set)"
    return JobResult(
        rows_in=rows_in,
        rows_out=written,
        rows_rejected=0,
        model_version=model_version,
        details={"judged_queries": judged_queries_count, "threshold": settings.threshold, "report": report,
                 "compared_with": get(ctx.cfg, "audit.compare", None), "query_movement": movement,
                 "model_versions_in_partition": versions},
        summary=summary,
    )
