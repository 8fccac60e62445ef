"""The click audit's rules and rows: the model's agreement with click labels on the day's queries without judgments.

The judged audit covers the judged sample; this covers the rest of the day's traffic. Per query, nDCG@k of a
ranking with the click label (`click_labels.label`, the lower end of the click model's relevance interval) as the
gain, over the query's candidates that have a label; the model's ranking and the logged one (by mean position, the
audit's `logged_position`) side by side. Click labels are not ground truth (CLICK_BIAS says why); the logged
ranking's own click nDCG shows how much of the agreement is agreement with the ranker that produced the log.

Pure functions of pandas frames; the Spark aggregation that feeds them (one row per query) is
`relevance.evaluation.click_ndcg`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from relevance.evaluation.audit_rows import FREQUENCY_SEGMENTS, LOGGED, MODEL, AuditSettings
from relevance.evaluation.intervals import bootstrap_mean_ci

# purity: no pyspark torch transformers

CLICK_METRIC = "click_ndcg"  # rows are click_ndcg@k
CLICK_PREFIX = f"{CLICK_METRIC}@"
CLICK_SYSTEMS = (MODEL, LOGGED)
MIN_LABELLED = 2  # a query needs this many labelled candidates to rank
RANKINGS = {MODEL: "score desc", LOGGED: "mean logged position asc, never shown last"}
CLICK_BIAS = (
    "Click labels are not ground truth: they exist only for products the production ranker showed, positions it "
    "showed more often get tighter intervals (so higher lower-bound labels), and the examination correction depends "
    "on the fitted position bias. Agreement with click labels therefore partly measures agreement with the old "
    "ranker; the logged ranking's own click nDCG shows how much."
)


def click_column(system: str, k: int) -> str:
    """The per-query column of a system's click nDCG at k."""
    return f"{system}:{CLICK_PREFIX}{k}"


@dataclass(frozen=True)
class ClickPartition:
    """Which `click_labels` partition the click audit uses: its ds, or None with the reason in `note`."""

    ds: str | None
    note: str


def choose_click_partition(latest: str | None, ds: str, max_age_days: int, table_exists: bool = True) -> ClickPartition:
    """The latest click_labels partition on or before the audit's `ds` (`latest`), when it is at most
    `max_age_days` days older; otherwise None, and why (one line)."""
    if not table_exists:
        return ClickPartition(None, "click agreement: no click labels were available (no click_labels table; the "
                                    "click-model job writes it)")
    if latest is None:
        return ClickPartition(None, f"click agreement: no click labels were available (click_labels has no partition "
                                    f"on or before ds={ds})")
    age = (dt.date.fromisoformat(ds) - dt.date.fromisoformat(latest)).days
    if age > max_age_days:
        return ClickPartition(None, f"click agreement: no click labels were available (the latest click_labels "
                                    f"partition on or before ds={ds} is ds={latest}, {age} days older; "
                                    f"audit.click_labels_max_age_days={max_age_days}; not used)")
    return ClickPartition(latest, f"click labels: click_labels ds={latest}" + (f" ({age} days before the audit)"
                                                                               if age else ""))


@dataclass(frozen=True)
class ClickScope:
    """What the click audit covered: the labels used and how many of the day's queries without judgments."""

    labels_ds: str
    click_model: str
    min_impressions: int
    judgments_table: str | None  # None: no judgments, every query of the day is without
    day_queries: int  # the day's scored queries without judgments
    unlabelled: int  # of those, with no labelled candidate
    one_labelled: int  # with one labelled candidate
    zero_ideal: int  # with 2+ labelled candidates, every label 0
    evaluated: int

    @property
    def queries(self) -> str:
        judged = f"without judgments in table {self.judgments_table}" if self.judgments_table else "(no judgments)"
        return (f"the day's scored queries {judged}: {self.evaluated} of {self.day_queries} evaluated; left out "
                f"{self.unlabelled} without a labelled candidate, {self.one_labelled} with one, {self.zero_ideal} "
                f"with every label 0")

    def definition(self, system: str, k: int) -> str:
        return (f"nDCG@{k} of the {system} ranking ({RANKINGS.get(system, system)}; ties by product_id asc) over the "
                f"query's candidates with a {self.click_model} click label of a pair shown >= {self.min_impressions} "
                f"times, gain = the click label (click_labels.label, the lower end of the relevance interval); ideal "
                f"DCG over the same labels; log2(rank+1) discount; click_labels ds={self.labels_ds}; queries: "
                f"{self.queries}; agreement with click labels, not ground truth (labels exist only where the logged "
                f"ranker showed products)")


def click_scope(per_query: pd.DataFrame, labels_ds: str, click_model: str, min_impressions: int,
                judgments_table: str | None) -> tuple[pd.DataFrame, ClickScope]:
    """The evaluable queries of `click_ndcg.click_ndcg_per_query`'s output (2+ labelled candidates, a label above 0)
    and the scope: how many of the day's queries without judgments were evaluated and why the others were not."""
    labelled = per_query.labelled.to_numpy(dtype=int)
    positive = per_query.label_sum.fillna(0).to_numpy(dtype=float) > 0
    kept = (labelled >= MIN_LABELLED) & positive
    scope = ClickScope(labels_ds, click_model, int(min_impressions), judgments_table, len(per_query),
                       int((labelled == 0).sum()), int(((labelled > 0) & (labelled < MIN_LABELLED)).sum()),
                       int(((labelled >= MIN_LABELLED) & ~positive).sum()), int(kept.sum()))
    return per_query[kept], scope


def _mean_row(values: np.ndarray, settings: AuditSettings) -> dict:
    low, high = bootstrap_mean_ci(values, settings.bootstrap_samples, settings.confidence, settings.seed)
    return {"value": float(values.mean()), "support": int(len(values)), "ci_low": low, "ci_high": high}


def click_agreement_rows(per_query: pd.DataFrame, scope: ClickScope, settings: AuditSettings) -> pd.DataFrame:
    """Per frequency segment (all, head, torso, tail), k and system: the mean click nDCG@k over the evaluable queries
    with a query-level bootstrap CI; support = queries. Model rows carry the logged ranking as their baseline.

    `per_query` holds the evaluable queries of `click_scope`: segment and a `click_column(system, k)` per system and k."""
    rows = []
    for segment in FREQUENCY_SEGMENTS:
        in_segment = per_query if segment == "all" else per_query[per_query.segment == segment]
        for k in settings.ks:
            values = {s: in_segment[click_column(s, k)].to_numpy(dtype=float) for s in CLICK_SYSTEMS}
            values = {s: v[~np.isnan(v)] for s, v in values.items()}
            found = {s: _mean_row(v, settings) for s, v in values.items() if len(v)}
            logged = found.get(LOGGED, {}).get("value")
            for system, measured in found.items():
                baseline = system == MODEL and logged is not None
                rows.append({"system": system, "segment": segment, "metric": f"{CLICK_PREFIX}{k}", "k": int(k),
                             "threshold": None, **measured, "definition": scope.definition(system, int(k)),
                             "baseline": LOGGED if baseline else None, "baseline_value": logged if baseline else None})
    return pd.DataFrame(rows)


def click_note(scope: ClickScope | None, partition: ClickPartition) -> str:
    """The click audit's line for the summary: the labels and queries it covered, or why there is none."""
    if scope is None:
        return partition.note
    return (f"click agreement against {scope.click_model} click labels of click_labels ds={scope.labels_ds} (pairs "
            f"shown >= {scope.min_impressions} times); {scope.queries}")


def click_report_note(note: str) -> str:
    """The HTML report's note over the click rows: the labels and queries they cover, and what biases click labels."""
    return f"{note}; value [CI]. {CLICK_BIAS}"
