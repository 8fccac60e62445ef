"""What the network trains on (`finetune.sources`): the judged training pairs, the click labels the logs gave
(`click_labels`, written by the click-model job), or both.

Only training changes. The split is the judged queries' split; validation, the weight mix, the BM25 weight, the
calibration, the promotion gate and the held-out test metrics use human judgments only, never clicks.

- A click-labelled pair's target is its click label (the lower bound of its relevance interval, in [0, 1]) times the
  label scheme's top grade, so both sources share one scale.
- A pair that is judged in the training split keeps its human grade; its click label is left out.
- `finetune.click_queries`: `not_held_out` (the default) leaves out every click label of a validation or test query,
  so the gate and the held-out metrics measure queries the model never learned from ("new queries"); `all` keeps
  the click labels of every logged query, as a nightly has them ("seen queries"): the held-out metrics then say how
  the model does on queries it saw in the logs, though never their human grades.
- The loss only compares pairs of one source (a human grade and a click label are not one measurement), and weighs a
  click-labelled pair `finetune.click_weight` against 1 for a judged one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from relevance.settings import FinetuneSettings, LabelScheme

# purity: no pyspark torch transformers

JUDGMENTS, CLICKS = "judgments", "clicks"
SOURCE_GROUP = {JUDGMENTS: 0, CLICKS: 1}  # the loss compares pairs within one group
HELD_OUT_SPLITS = ("val", "test")
TRAINING_COLUMNS = ("query_norm", "product_id", "product_text", "grade")


def uses_judgments(tuning: FinetuneSettings) -> bool:
    return tuning.sources in (JUDGMENTS, "both")


def uses_clicks(tuning: FinetuneSettings) -> bool:
    return tuning.sources in (CLICKS, "both")


@dataclass(frozen=True)
class ClickExamples:
    """The click labels the job loaded: one row per (query_norm, product_id) with the product's text and its
    `label` (of a pair shown at least finetune.click_min_impressions times), at most finetune.max_click_examples
    (whole queries), and where they came from."""

    rows: pd.DataFrame
    table: str  # the click_labels table's path
    ds: str  # the partition read: the window's last day
    click_model: str  # pbm | sdbn
    available: int  # labelled pairs with a catalog text and enough impressions, before the cut to whole queries
    without_text: int  # labelled pairs whose product has no usable catalog text (left out)


@dataclass(frozen=True)
class SourcesRecord:
    """What trained the network, for the model card's `training.sources`."""

    sources: str
    judged_pairs: int
    judged_queries: int
    click_pairs: int = 0
    click_queries: int = 0
    click: dict[str, Any] | None = None  # the click labels' table, partition, model and what was left out

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"sources": self.sources, "judged_pairs": self.judged_pairs,
                                  "judged_queries": self.judged_queries}
        if self.click is not None:
            record |= {"click_pairs": self.click_pairs, "click_queries": self.click_queries, "click_labels": self.click}
        return record


def first_queries(rows: pd.DataFrame, max_queries: int | None, seed: int) -> pd.DataFrame:
    """`rows` of at most `max_queries` queries, the first in a seeded hash order of query_norm (None: all): the
    same seed keeps the same queries, and a larger limit keeps a superset (a learning curve's steps nest)."""
    if max_queries is None or rows.query_norm.nunique() <= max_queries:
        return rows
    queries = sorted(rows.query_norm.unique(), key=lambda q: hashlib.sha256(f"{seed}\x1f{q}".encode()).digest())
    return rows[rows.query_norm.isin(set(queries[:max_queries]))].reset_index(drop=True)


def click_training_rows(clicks: ClickExamples, parts: dict[str, pd.DataFrame], tuning: FinetuneSettings,
                        scheme: LabelScheme) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The click labels that train, as training rows (target: label x top grade), and what was left out: pairs
    judged in the training split (when judgments train too: their human grade serves) and, with `not_held_out`,
    every pair of a validation or test query."""
    rows = clicks.rows
    held_out = set().union(*(set(parts[name].query_norm) for name in HELD_OUT_SPLITS))
    of_held_out = rows.query_norm.isin(held_out).to_numpy()
    nothing = np.zeros(len(rows), dtype=bool)
    drop_held_out = of_held_out if tuning.click_queries == "not_held_out" else nothing
    judged = pd.MultiIndex.from_frame(parts["train"][["query_norm", "product_id"]])
    drop_judged = (pd.MultiIndex.from_frame(rows[["query_norm", "product_id"]]).isin(judged) if uses_judgments(tuning)
                   else nothing)
    kept = rows[~(drop_held_out | drop_judged)]
    training = pd.DataFrame({"query_norm": kept.query_norm, "product_id": kept.product_id,
                             "product_text": kept.product_text, "grade": kept.label.astype(float) * scheme.top_grade})
    left_out = {"table": clicks.table, "ds": clicks.ds, "click_model": clicks.click_model,
                "min_impressions": tuning.click_min_impressions, "weight": tuning.click_weight,
                "queries_policy": tuning.click_queries, "available_pairs": clicks.available,
                "loaded_pairs": len(rows), "without_catalog_text": clicks.without_text,
                "held_out_queries_left_out": int(drop_held_out.sum()), "judged_pairs_left_out": int(drop_judged.sum()),
                "held_out_queries_kept": int((of_held_out & ~drop_held_out).sum())}
    return training.reset_index(drop=True), left_out


def training_pairs(parts: dict[str, pd.DataFrame], clicks: ClickExamples | None, tuning: FinetuneSettings,
                   scheme: LabelScheme) -> tuple[pd.DataFrame, SourcesRecord]:
    """The pairs the network trains on, in (query_norm, product_id) order, and the record of them.

    From judgments only, the training split as it is (at most `finetune.max_train_queries` of its queries): the
    same rows and loss as before sources existed. With clicks, a `weight` and a `group` column are added (a judged
    pair weighs 1, a click-labelled one `click_weight`; the loss compares pairs of one group)."""
    judged = first_queries(parts["train"], tuning.max_train_queries, tuning.seed)
    if clicks is None:
        if uses_clicks(tuning):
            raise ValueError(f"finetune.sources={tuning.sources} needs click labels and none were loaded")
        return judged, SourcesRecord(tuning.sources, len(judged), int(judged.query_norm.nunique()))
    judged_rows = judged[list(TRAINING_COLUMNS)] if uses_judgments(tuning) else judged.iloc[0:0][list(TRAINING_COLUMNS)]
    click_rows, click_record = click_training_rows(clicks, {**parts, "train": judged_rows}, tuning, scheme)
    both = pd.concat([
        judged_rows.assign(grade=judged_rows.grade.astype(float), weight=1.0, group=SOURCE_GROUP[JUDGMENTS]),
        click_rows.assign(weight=tuning.click_weight, group=SOURCE_GROUP[CLICKS]),
    ], ignore_index=True).sort_values(["query_norm", "product_id", "group"], ignore_index=True)
    if both.empty:
        raise ValueError(f"finetune.sources={tuning.sources}: no training pair is left ({click_record})")
    record = SourcesRecord(tuning.sources, len(judged_rows), int(judged_rows.query_norm.nunique()), len(click_rows),
                           int(click_rows.query_norm.nunique()), click_record)
    return both, record


def plus_judged(train: pd.DataFrame, judged: pd.DataFrame) -> pd.DataFrame:
    """The training pairs and more judged pairs (a refit's validation pairs), those in the judgments group."""
    more = judged[list(TRAINING_COLUMNS)]
    if "weight" in train.columns:
        more = more.assign(grade=more.grade.astype(float), weight=1.0, group=SOURCE_GROUP[JUDGMENTS])
    return pd.concat([train, more], ignore_index=True)
