"""The audit's rows: per system, segment and metric, a value with its query-level confidence interval.

Systems, all ranked over the same candidates and judged on the same pairs: the model (`model`), the
baselines (`bm25`, `zero_shot`) and the production ranking seen in the logs (`logged_position`, by
mean impression position). Segments: all, head / torso / tail (query log frequency),
category=<top category>, query_len=1..4+, and query=<query_norm> for the per-query nDCG rows.
Log-only rows need no judgments: how much of what users saw, clicked or bought the model calls
irrelevant. Pure functions of pandas frames; the Spark aggregations that feed the log-only rows are in
`relevance.evaluation.behavior`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from relevance.evaluation import pair_metrics
from relevance.evaluation.classifier import (
    calibration_bins,
    counts_at_score_cuts,
    expected_calibration_error,
    threshold_for_precision,
)
from relevance.evaluation.intervals import bootstrap_ci, bootstrap_grouped_ci, bootstrap_mean_ci, wilson_interval
from relevance.evaluation.ranking import GainSpec, per_query_ranking_metrics
from relevance.settings import AuditConfig, LabelScheme

# purity: no pyspark torch transformers

MODEL, LOGGED = "model", "logged_position"
BM25, ZERO_SHOT = "bm25", "zero_shot"  # the baselines (relevance.evaluation.baselines)
FREQUENCY_SEGMENTS = ("all", "head", "torso", "tail")
CURVE_PREFIXES = ("pr_curve_", "reliability_")
QUERY_SEGMENT = "query="
MAX_CATEGORY_SEGMENTS = 12  # the largest top categories get a segment each; the rest are "category=other"
AUDIT_COLUMNS = ["system", "segment", "metric", "k", "threshold", "value", "support", "ci_low", "ci_high",
                 "definition", "baseline", "baseline_value"]


@dataclass(frozen=True)
class AuditSettings:
    ks: tuple[int, ...] = (5, 10)
    relevant_min_grade: int = 1
    gain: GainSpec = "linear"  # linear | exponential | {grade: gain}
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


def audit_settings(audit: AuditConfig, scheme: LabelScheme, threshold: float) -> AuditSettings:
    """The audit's settings: the `audit` section, the active label scheme and the model card's threshold."""
    return AuditSettings(
        ks=tuple(int(k) for k in audit.ks),
        relevant_min_grade=int(scheme.relevant_min_grade),
        gain=scheme.gain if isinstance(scheme.gain, dict) else str(scheme.gain),
        threshold=float(threshold),
        bootstrap_samples=int(audit.bootstrap_samples),
        confidence=float(audit.confidence),
        seed=int(audit.seed),
        target_precision=float(audit.target_precision),
        f_beta=float(audit.f_beta),
    )


def metric_k(name: str) -> int | None:
    """The k of a metric name (`ndcg@10` -> 10), None without one."""
    return int(name.split("@")[1]) if "@" in name else None


def ranking_metric_columns(per_query: pd.DataFrame) -> list[str]:
    """The metric columns of `per_query_ranking_metrics`' output (those at k, map and mrr)."""
    return [c for c in per_query.columns if "@" in c or c in ("map", "mrr")]


# ----------------------------------------------------------------------------- log-only audits


def log_only_measures(ks: Iterable[int]) -> dict[str, tuple[str, int | None]]:
    """The log-only measures: metric name -> (events column, top-k cut on the mean position or None)."""
    measures: dict[str, tuple[str, int | None]] = {f"irrelevant_impression_share@{k}": ("impressions", k) for k in ks}
    measures["irrelevant_click_share"] = ("clicks", None)
    measures["irrelevant_purchase_share"] = ("purchases", None)
    return measures


def log_only_rows(per_query: pd.DataFrame, settings: AuditSettings) -> pd.DataFrame:
    """Audits from the logs alone: how much of what users saw, clicked or bought the model calls irrelevant.

    `per_query` is `relevance.evaluation.behavior.behavior_per_query`'s output. Shares are weighted by events; CIs resample queries."""
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


# ----------------------------------------------------------------------------- systems, queries and segments


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


def judged_pairs_of(candidates: pd.DataFrame, judged: pd.DataFrame, systems: dict[str, np.ndarray]) -> pd.DataFrame:
    """Judged candidates with one score column per system."""
    scored = candidates[["query_norm", "product_id"]].assign(**{name: np.asarray(s, dtype=float) for name, s in systems.items()})
    return scored.merge(judged[["query_norm", "product_id", "grade"]], on=["query_norm", "product_id"], how="inner")


@dataclass(frozen=True)
class JudgedEvaluation:
    """What every judged audit row, curve and comparison is computed from, computed once.

    candidates / judged: those of the queries with both; systems: name -> scores aligned with `candidates`
    (the model, the baselines, the logged ranking, in that order); per_query: name -> its per-query ranking
    metrics; segments: segment name -> its queries; pairs: the judged candidates with a score column per system."""

    candidates: pd.DataFrame
    judged: pd.DataFrame
    systems: dict[str, np.ndarray]
    per_query: dict[str, pd.DataFrame]
    segments: dict[str, set[str]]
    pairs: pd.DataFrame

    @property
    def queries(self) -> int:
        """How many judged queries are evaluated."""
        return int(self.candidates.query_norm.nunique())


def judged_evaluation(candidates: pd.DataFrame, judged: pd.DataFrame, settings: AuditSettings,
                      baselines: dict[str, np.ndarray] | None = None) -> JudgedEvaluation:
    """Candidates (query_norm, product_id, score, mean_position, segment[, category]) x judgments -> the systems'
    scores, their per-query metrics, the segments and the judged pairs.

    `judged` holds (query_norm, product_id, grade); only queries with both candidates and judgments are
    evaluated. `baselines` maps extra system names to scores aligned with `candidates`; the model (`score`)
    and the logged ranking (`mean_position`) are always included."""
    judged_queries = set(judged.query_norm) & set(candidates.query_norm)
    keep = candidates.query_norm.isin(judged_queries).to_numpy()
    candidates = candidates[keep]
    judged = judged[judged.query_norm.isin(judged_queries)]
    systems = {
        MODEL: candidates.score.to_numpy(dtype=float),
        **{name: np.asarray(scores, dtype=float)[keep] for name, scores in (baselines or {}).items()},
        LOGGED: logged_scores(candidates.mean_position),
    }
    return JudgedEvaluation(
        candidates=candidates,
        judged=judged,
        systems=systems,
        per_query={name: per_query_metrics(candidates, scores, judged, settings) for name, scores in systems.items()},
        segments=query_segments(candidates, judged, settings.relevant_min_grade),
        pairs=judged_pairs_of(candidates, judged, systems),
    )


# ----------------------------------------------------------------------------- judged audit rows


def mean_rows(per_query: pd.DataFrame, columns: list[str], system: str, segment: str, settings: AuditSettings,
              describe: Callable[[str], str] | None = None) -> list[dict]:
    """One row per metric column of `per_query` (one row per query): its mean over the queries where it is defined
    (not NaN) with a query-bootstrap CI, and its definition (`describe`, else the settings'); none where no query
    has it."""
    rows = []
    for column in columns:
        values = per_query[column].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        if len(values) == 0:
            continue
        low, high = bootstrap_mean_ci(values, settings.bootstrap_samples, settings.confidence, settings.seed)
        rows.append({"system": system, "segment": segment, "metric": column,
                     "k": metric_k(column), "value": float(values.mean()), "support": int(len(values)),
                     "ci_low": low, "ci_high": high, "definition": (describe or settings.definition)(column)})
    return rows


def _ranking_rows(per_query: pd.DataFrame, system: str, segment: str, settings: AuditSettings) -> list[dict]:
    return mean_rows(per_query, ranking_metric_columns(per_query), system, segment, settings)


def _classifier_rows(judged_pairs: pd.DataFrame, system: str, segment: str, settings: AuditSettings) -> list[dict]:
    """Classifier metrics of judged pairs; CIs by resampling whole queries. Baselines get the threshold-free ones."""
    scores = judged_pairs[system].to_numpy(dtype=float)
    relevant = judged_pairs.grade.to_numpy() >= settings.relevant_min_grade
    metrics = {"roc_auc": pair_metrics.roc_auc, "average_precision": pair_metrics.pooled_average_precision}
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


def audit_rows(evaluation: JudgedEvaluation, settings: AuditSettings) -> pd.DataFrame:
    """The judged audit rows: ranking metrics of every system per segment, classifier metrics of the judged pairs
    (threshold ones for the model only), per-query nDCG; model rows carry the logged ranking as their baseline."""
    judged_pairs = evaluation.pairs
    rows: list[dict] = []
    for segment, queries in evaluation.segments.items():
        subset = judged_pairs[judged_pairs.query_norm.isin(queries)]
        for name, per_query in evaluation.per_query.items():
            rows += _ranking_rows(per_query[per_query["query"].isin(queries)], name, segment, settings)
            if len(subset):
                rows += _classifier_rows(subset, name, segment, settings)
    rows += _per_query_rows(evaluation.per_query, settings)
    frame = pd.DataFrame(rows, columns=AUDIT_COLUMNS[:-2])
    logged = frame[frame.system == LOGGED].set_index(["segment", "metric", "k"]).value
    keys = list(zip(frame.segment, frame.metric, frame.k))
    frame["baseline"] = [LOGGED if system == MODEL and key in logged.index else None for system, key in zip(frame.system, keys)]
    frame["baseline_value"] = [logged.get(key) if b else None for b, key in zip(frame.baseline, keys)]
    return frame


# ----------------------------------------------------------------------------- curves


def _curve_points(scores: np.ndarray, relevant: np.ndarray, max_points: int = 101) -> pd.DataFrame:
    """Precision and recall at up to `max_points` distinct thresholds, evenly spread over the ranked pairs."""
    thresholds, tp, fp = counts_at_score_cuts(scores, relevant)
    chosen = np.unique(np.linspace(0, len(thresholds) - 1, min(max_points, len(thresholds))).round().astype(int))
    tp, predicted = tp[chosen], (tp + fp)[chosen]
    return pd.DataFrame({"threshold": thresholds[chosen], "precision": tp / predicted,
                         "recall": tp / max(relevant.sum(), 1)})


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
