"""The retrieval audit's rows: what the model finds over the whole catalog (`catalog_topk`) against what the engine
showed that day (the day's `pairs` with impressions), by segment.

- `retrieval_unshown_share@T` (system model): per logged query, the share of the model's top T (audit.retrieval.
  top_share_k) that the engine never showed that day; the mean over queries.
- `retrieval_shown_recall@K` (system logged_position, judged queries logged that day): recall of the engine's shown
  set against the model's retrieval, |shown ∩ model top-K| / K (the reference is the model's top K).
- `retrieval_judged_recall@K` (judged queries logged that day with a judged-relevant product): the reference is the
  judged-relevant products (grade >= relevant_min_grade); the model's value is |relevant ∩ model top-K| / |relevant|,
  the engine's (system logged_position) |relevant ∩ shown that day| / |relevant|, on the same queries. Judgments were
  drawn mostly from what the engine showed (the demo: 60% of them), which favours the engine.

Pure functions of pandas frames (one row per query); the Spark aggregation that feeds them is
`relevance.evaluation.retrieval_audit`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from relevance.evaluation.audit_rows import FREQUENCY_SEGMENTS, LOGGED, MODEL, AuditSettings
from relevance.evaluation.intervals import bootstrap_mean_ci

# purity: no pyspark torch transformers

RETRIEVAL_PREFIX = "retrieval_"
UNSHOWN, SHOWN_RECALL, JUDGED_RECALL = "retrieval_unshown_share", "retrieval_shown_recall", "retrieval_judged_recall"


def _mean_row(values: np.ndarray, settings: AuditSettings) -> dict:
    low, high = bootstrap_mean_ci(values, settings.bootstrap_samples, settings.confidence, settings.seed)
    return {"value": float(values.mean()), "support": int(len(values)), "ci_low": low, "ci_high": high}


def _segments(per_query: pd.DataFrame):
    for segment in FREQUENCY_SEGMENTS:
        part = per_query if segment == "all" else per_query[per_query.segment == segment]
        if len(part):
            yield segment, part


def definitions(k: int, top: int, model_version: str, relevant_min_grade: int) -> dict[str, str]:
    where = f"catalog_topk of model {model_version}: its top {k} over the whole catalog by cosine"
    shown = "shown = the day's pairs hold the (query, product) with impressions > 0"
    return {
        UNSHOWN: f"share of the model's top {top} that the engine never showed that day, mean over the day's logged "
                 f"queries in catalog_topk; {where}; {shown}; support: queries",
        SHOWN_RECALL: f"|engine's shown set ∩ model top {k}| / {k}: recall of what the engine showed against the "
                      f"model's retrieval, mean over judged queries logged that day; {where}; {shown}",
        JUDGED_RECALL: f"recall of the judged-relevant products (grade >= {relevant_min_grade}): model = |relevant ∩ "
                       f"model top {k}| / |relevant|; logged_position = |relevant ∩ engine's shown set| / |relevant| "
                       f"(its whole shown set, not cut at {k}); judged queries logged that day with a judged-relevant "
                       f"product; judgments mostly come from shown products, which favours the engine; {where}; "
                       f"{shown}",
    }


def retrieval_rows(per_query: pd.DataFrame, k: int, top: int, model_version: str,
                   settings: AuditSettings) -> pd.DataFrame:
    """The retrieval rows per frequency segment (all, head, torso, tail), each a mean over queries with a query-level
    bootstrap CI; support = queries.

    `per_query`: query_norm, segment, query_searches, judged, top_n (products in the model's top `top`),
    top_unshown (of those, never shown), topk_n, topk_shown (of the model's top k, shown), relevant (judged-relevant
    products, 0 without), model_hits (relevant in the model's top k), engine_hits (relevant the engine showed)."""
    text = definitions(k, top, model_version, settings.relevant_min_grade)
    rows = []
    logged = per_query[per_query.query_searches > 0]
    for segment, part in _segments(logged[logged.top_n > 0]):
        share = (part.top_unshown / part.top_n).to_numpy(dtype=float)
        rows.append({"system": MODEL, "segment": segment, "metric": f"{UNSHOWN}@{top}", "k": int(top),
                     **_mean_row(share, settings), "definition": text[UNSHOWN]})
    judged = logged[logged.judged.astype(bool)]
    for segment, part in _segments(judged[judged.topk_n > 0]):
        recall = (part.topk_shown / float(k)).to_numpy(dtype=float)
        rows.append({"system": LOGGED, "segment": segment, "metric": f"{SHOWN_RECALL}@{k}", "k": int(k),
                     **_mean_row(recall, settings), "definition": text[SHOWN_RECALL]})
    for segment, part in _segments(judged[judged.relevant > 0]):
        model = (part.model_hits / part.relevant).to_numpy(dtype=float)
        engine = (part.engine_hits / part.relevant).to_numpy(dtype=float)
        engine_row = _mean_row(engine, settings)
        rows.append({"system": MODEL, "segment": segment, "metric": f"{JUDGED_RECALL}@{k}", "k": int(k),
                     **_mean_row(model, settings), "definition": text[JUDGED_RECALL], "baseline": LOGGED,
                     "baseline_value": engine_row["value"]})
        rows.append({"system": LOGGED, "segment": segment, "metric": f"{JUDGED_RECALL}@{k}", "k": int(k),
                     **engine_row, "definition": text[JUDGED_RECALL]})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["threshold"] = None
    return frame


def retrieval_line(frame: pd.DataFrame, queries: int, k: int, top: int) -> str:
    """The summary's retrieval line: the never-shown share and the judged recall of both, segment all."""
    def value(metric: str, system: str) -> str:
        row = frame[(frame.metric == metric) & (frame.system == system) & (frame.segment == "all")]
        if row.empty:
            return "n/a"
        r = row.iloc[0]
        return f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] (n={int(r.support)})"

    if frame.empty:
        return f"catalog retrieval: {queries} queries in catalog_topk, none logged or judged with support"
    return (f"catalog retrieval (top {k} over the whole catalog, {queries} queries): model top-{top} never shown by "
            f"the engine {value(f'{UNSHOWN}@{top}', MODEL)}; engine's shown set recall of the model's top {k} "
            f"{value(f'{SHOWN_RECALL}@{k}', LOGGED)}; judged-relevant recall: model top {k} "
            f"{value(f'{JUDGED_RECALL}@{k}', MODEL)}, engine shown {value(f'{JUDGED_RECALL}@{k}', LOGGED)}")
