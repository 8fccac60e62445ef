"""The model against another model version on the same judged candidates, and the regression gate.

Paired per-query deltas (this model - the other) of every ranking metric, per segment, with a
query-level bootstrap CI of the mean delta and a sign-flip randomization p-value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from relevance.evaluation.audit_rows import (
    MODEL,
    AuditSettings,
    JudgedEvaluation,
    metric_k,
    per_query_metrics,
    ranking_metric_columns,
)
from relevance.evaluation.intervals import bootstrap_mean_ci, paired_randomization_p_value

# purity: no pyspark torch transformers


def compare_rows(evaluation: JudgedEvaluation, other_scores: np.ndarray, other_version: str,
                 settings: AuditSettings) -> tuple[pd.DataFrame, dict]:
    """Model vs another model version on the same judged candidates: paired per-query deltas.

    `other_scores` are the other version's scores of `evaluation.candidates` (aligned with them). Rows carry
    metric `delta_<metric>` (current - other), a bootstrap CI of the mean delta and the sign-flip randomization
    p-value in `definition`; details count queries that got better or worse on each metric.
    """
    current = evaluation.per_query[MODEL].set_index("query")
    other_per_query = per_query_metrics(evaluation.candidates, other_scores, evaluation.judged, settings).set_index("query")
    rows, movement = [], {}
    for segment, members in evaluation.segments.items():
        queries = current.index[current.index.isin(members)]
        for metric in ranking_metric_columns(current):
            mine, other = current.loc[queries, metric], other_per_query.loc[queries, metric]
            delta = (mine - other).dropna().to_numpy()
            if len(delta) == 0:
                continue
            low, high = bootstrap_mean_ci(delta, settings.bootstrap_samples, settings.confidence, settings.seed)
            p_value = paired_randomization_p_value(delta, seed=settings.seed)
            rows.append({"system": MODEL, "segment": segment, "metric": f"delta_{metric}", "k": metric_k(metric),
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


def movement_line(other_version: str, metric: str, movement: dict) -> str:
    """How many queries got better and worse on `metric` against the other version, and the p-value."""
    moved = movement.get(metric, {})
    return (f"against {other_version}: {metric} better on {moved.get('better', 0)} queries, "
            f"worse on {moved.get('worse', 0)} (p={moved.get('p_value', float('nan')):.4f})")
