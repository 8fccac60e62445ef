"""The audit's compute step: what the audit job loaded -> the `relevance_audit` rows, the curves the report draws,
the summary and the regression gate.

`compute` takes typed inputs (the settings tree, the day, the run's id and `AuditInputs`, which the job's load step
fills) and reads and writes nothing: the log-only audits (Spark aggregations, one row per query on the driver), the
judged audit of the held-out judged queries (the model against its baselines and the logged ranking, curves, and
with `audit.compare` the paired deltas against another model version), the click audit of the day's queries without
judgments (where a recent `click_labels` partition exists), then the summary.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from relevance.evaluation.audit_rows import (
    AuditSettings,
    JudgedEvaluation,
    audit_rows,
    audit_settings,
    curve_rows,
    curves,
    judged_evaluation,
    log_only_rows,
)
from relevance.evaluation.baselines import ZERO_SHOT, baseline_scores
from relevance.evaluation.behavior import behavior_per_query, worst_offenders
from relevance.evaluation.click_agreement import click_agreement_rows, click_note
from relevance.evaluation.click_ndcg import click_agreement, click_partition
from relevance.evaluation.compare import compare_rows, movement_line, regression_failure
from relevance.evaluation.diversity_audit import DiversityPart, diversity_part
from relevance.evaluation.held_out import held_out_candidates, judged_candidates
from relevance.evaluation.retrieval_audit import RetrievalPart, retrieval_part
from relevance.evaluation.summary import audit_summary, format_diversity
from relevance.pairs import catalog_texts
from relevance.settings import Settings
from schemas.tables import RELEVANCE_AUDIT

if TYPE_CHECKING:
    from udfs.model import LoadedModel


@dataclass(frozen=True)
class AuditInputs:
    """What the audit reads: the day's tables, the audited model version (where it lives, its card's threshold and
    training split) and, with --compare, the other version loaded for scoring."""

    relevance: DataFrame  # cached
    rows_in: int
    versions: list[str]  # model versions in the relevance partition; the first is audited
    pairs: DataFrame
    judgments: DataFrame | None  # None: no (or an empty) judgments table, the log-only audit
    judgments_table: str
    catalog: DataFrame | None  # read whenever there are judgments
    model_location: str  # thresholds go there
    options: dict[str, str]
    threshold: float
    splits: list[dict | None]  # the audited version's split.json, then the compared one's
    other: LoadedModel | None
    serving: str  # which model the audited scores came from, and why (relevance.scoring.serving_note)
    click_labels: DataFrame | None = None  # the whole click_labels table; None without one
    catalog_topk: DataFrame | None = None  # the ds partition of catalog_topk; None without one
    serving_model: LoadedModel | None = None  # the audited bi-encoder, for the MMR trade-off; None otherwise

    @property
    def model_version(self) -> str:
        return self.versions[0]


@dataclass(frozen=True)
class AuditOutcome:
    """What the audit found: the `relevance_audit` rows, the curves the report draws, the summary and the gate."""

    settings: AuditSettings
    frame: pd.DataFrame
    drawn: dict[str, pd.DataFrame]
    offenders: pd.DataFrame
    summary: str
    judged_queries: int
    movement: dict
    failure: str | None
    created_at: dt.datetime
    click_note: str = ""  # the click audit's labels and queries, or why there is none
    retrieval: RetrievalPart | None = None  # the catalog retrieval audit (its gaps go to the report)
    diversity: DiversityPart | None = None  # the diversity audit (its most concentrated queries go to the report)


@dataclass(frozen=True)
class LogOnlyPart:
    """The log-only audits: the day's scored, logged pairs (a Spark frame), their rows and how many queries."""

    behavior: DataFrame
    rows: pd.DataFrame
    queries: int


@dataclass(frozen=True)
class JudgedPart:
    """The judged audit: its rows (judged, curves, comparison; empty frames where there is none), the curves the
    report draws, the settings with the query scope, how many queries, and the comparison with another version."""

    settings: AuditSettings
    rows: pd.DataFrame
    curve_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    drawn: dict[str, pd.DataFrame] = field(default_factory=dict)
    queries: int = 0
    comparison: pd.DataFrame | None = None
    movement: dict = field(default_factory=dict)
    evaluation: JudgedEvaluation | None = None  # what the rows were computed from (the diversity audit's input)


def log_only_part(inputs: AuditInputs, settings: AuditSettings) -> LogOnlyPart:
    """The log-only audits of the day's scored pairs with an impression or a click (one row per query reaches the
    driver)."""
    behavior = (
        inputs.relevance.join(inputs.pairs.where((F.col("impressions") > 0) | (F.col("clicks") > 0)),
                              ["query_norm", "product_id"])
        .select("query_norm", "product_id", "segment", "score", "impressions", "clicks", "purchases", "mean_position")
    )
    per_query = behavior_per_query(behavior, settings.threshold, settings.ks).toPandas()
    return LogOnlyPart(behavior, log_only_rows(per_query, settings), len(per_query))


def judged_part(config: Settings, inputs: AuditInputs, settings: AuditSettings) -> JudgedPart:
    """The judged audit of the held-out judged queries: the model, its baselines and the logged ranking on the same
    candidates, the curves, and with audit.compare the paired deltas against the other version."""
    from udfs.model import resolve_base_model
    from udfs.scorer import score_pairs

    if inputs.judgments is None:
        return JudgedPart(settings, pd.DataFrame())
    assert inputs.catalog is not None  # read whenever there are judgments
    texts = catalog_texts(inputs.catalog, config.pairs)[0].cache()  # judged and BM25
    candidates, judged, scope = held_out_candidates(
        *judged_candidates(inputs.relevance, inputs.pairs, inputs.catalog, texts, inputs.judgments,
                           config.labels.active),
        inputs.splits, config.audit.max_judged_pairs, settings.seed)
    settings = replace(settings, scope=f"{scope}; judged by table {inputs.judgments_table}")
    queries = int(candidates.query_norm.nunique())
    names = config.audit.baselines
    baselines = (baseline_scores(names, texts, candidates,
                                 resolve_base_model(config.model.base) if ZERO_SHOT in names else None,
                                 config.audit.zero_shot_max_length)
                 if queries else {})
    evaluation = judged_evaluation(candidates, judged, settings, baselines)  # scores, per-query metrics, segments
    rows = audit_rows(evaluation, settings)
    drawn = curves(evaluation.pairs, list(evaluation.systems), settings) if queries else {}
    comparison: pd.DataFrame | None = None
    movement: dict = {}
    if inputs.other is not None:  # audit.compare is set
        other_scores, _ = score_pairs(inputs.other, evaluation.candidates.query_norm.tolist(),
                                      evaluation.candidates.product_text.tolist())
        comparison, movement = compare_rows(evaluation, other_scores, str(config.audit.compare), settings)
    return JudgedPart(settings, rows, curve_rows(drawn, settings) if queries else pd.DataFrame(), drawn, queries,
                      comparison, movement, evaluation)


def click_part(config: Settings, ds: str, inputs: AuditInputs, settings: AuditSettings) -> tuple[pd.DataFrame, str]:
    """The click audit of the day's queries without judgments against the latest click_labels partition on or before
    `ds` (within audit.click_labels_max_age_days): its rows (none without usable labels) and its summary line."""
    partition = click_partition(inputs.click_labels, ds, config.audit.click_labels_max_age_days)
    if inputs.click_labels is None or partition.ds is None:
        return pd.DataFrame(), partition.note
    agreement = click_agreement(inputs.relevance, inputs.pairs, inputs.judgments, inputs.judgments_table,
                                inputs.click_labels, partition.ds, config.audit.click_model,
                                config.audit.click_min_impressions, settings.ks)
    return click_agreement_rows(agreement.per_query, agreement.scope, settings), click_note(agreement.scope, partition)


def audit_frame(parts: list[pd.DataFrame], run_id: str, model_version: str, created_at: dt.datetime,
                ds: str) -> pd.DataFrame:
    """The `relevance_audit` rows: the parts in order, with every column of the table (log-only rows lack some)."""
    frame = pd.concat([f for f in parts if not f.empty], ignore_index=True)
    frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *RELEVANCE_AUDIT.columns])))
    return frame.assign(run_id=run_id, model_version=model_version, created_at=created_at, ds=ds)


def compute(config: Settings, ds: str, run_id: str, inputs: AuditInputs) -> AuditOutcome:
    """The audit of one day: log-only audits, the judged audit, the click audit, the summary and the regression
    gate."""
    settings = audit_settings(config.audit, config.labels.active, inputs.threshold)
    logged = log_only_part(inputs, settings)
    judged = judged_part(config, inputs, settings)
    clicks, click_line = click_part(config, ds, inputs, settings)
    retrieval = retrieval_part(inputs.catalog_topk, inputs.pairs, inputs.judgments, inputs.catalog,
                               inputs.model_version, ds, settings, config.audit.retrieval.top_share_k,
                               config.audit.retrieval.report_queries)
    settings = judged.settings
    diversity = diversity_part(judged.evaluation, inputs.catalog, inputs.serving_model, settings,
                               config.audit.diversity)
    comparison = judged.comparison if judged.comparison is not None else pd.DataFrame()
    now = dt.datetime.now(dt.timezone.utc)
    frame = audit_frame([judged.rows, logged.rows, judged.curve_rows, comparison, clicks, retrieval.rows,
                         diversity.rows], run_id, inputs.model_version, now, ds)
    offenders = worst_offenders(logged.behavior, settings.threshold)
    summary = audit_summary(frame, inputs.model_version, ds, settings.scope, judged.queries, offenders, logged.queries,
                            click_line)
    summary += "\n\n" + retrieval.note + "\n\n" + format_diversity(frame, diversity.note)
    failure = None
    if judged.comparison is not None:
        primary = config.audit.regression.metric
        summary += "\n\n" + movement_line(str(config.audit.compare), primary, judged.movement)
        failure = regression_failure(judged.comparison, primary, config.audit.regression.margin)
    return AuditOutcome(settings=settings, frame=frame, drawn=judged.drawn, offenders=offenders, summary=summary,
                        judged_queries=judged.queries, movement=judged.movement, failure=failure, created_at=now,
                        click_note=click_line, retrieval=retrieval, diversity=diversity)
