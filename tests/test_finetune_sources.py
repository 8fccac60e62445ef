"""Fine-tuning from the logs (`finetune.sources`, relevance.training.sources): what trains the network when click
labels join the judgments, what is left out, the loss that keeps the two sources apart, and the finetune job reading
`click_labels` (validation, the gate and the test metrics stay on judgments)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from relevance.settings import FinetuneSettings, LabelScheme
from relevance.training.loop import cosent_loss
from relevance.training.sources import (
    CLICKS,
    JUDGMENTS,
    SOURCE_GROUP,
    ClickExamples,
    first_queries,
    plus_judged,
    training_pairs,
)
from tests.conftest import DEMO_DS, make_config, run

SCHEME = LabelScheme(grades={"irrelevant": 0, "partial": 1, "relevant": 2, "exact": 3}, relevant_min_grade=2)


def judged(queries: list[str], products: int = 3, grade: int = 2) -> pd.DataFrame:
    return pd.DataFrame([{"query_norm": q, "product_id": f"{q}-p{i}", "product_text": f"text {q} {i}", "grade": grade}
                         for q in queries for i in range(products)])


def clicks_of(rows: list[tuple[str, str, float]]) -> ClickExamples:
    frame = pd.DataFrame([{"query_norm": q, "product_id": p, "product_text": f"click text {p}", "label": label,
                           "impressions": 50} for q, p, label in rows])
    return ClickExamples(frame, "/wh/click_labels", "2025-01-07", "pbm", len(frame), 0)


PARTS = {"train": judged(["a", "b"]), "val": judged(["v"]), "test": judged(["t"])}
CLICKS_ROWS = clicks_of([("a", "a-p0", 0.9),  # judged in train: its human grade serves
                         ("a", "a-new", 0.3),  # an unjudged product of a judged training query
                         ("z", "z-p0", 0.6),  # a logged query nobody judged
                         ("v", "v-p1", 0.8), ("t", "t-p2", 0.1)])  # held-out queries' click labels


def tuning(**changes) -> FinetuneSettings:
    return dataclasses.replace(FinetuneSettings(), **changes)


def test_judgments_only_trains_on_the_training_split_as_it_is():
    train, record = training_pairs(PARTS, None, tuning(), SCHEME)
    assert train is PARTS["train"] and "weight" not in train.columns
    assert record.to_dict() == {"sources": "judgments", "judged_pairs": 6, "judged_queries": 2}
    with pytest.raises(ValueError, match="finetune.sources=both needs click labels"):
        training_pairs(PARTS, None, tuning(sources="both"), SCHEME)


def test_both_keeps_human_grades_and_leaves_held_out_queries_clicks_out():
    train, record = training_pairs(PARTS, CLICKS_ROWS, tuning(sources="both", click_weight=0.5), SCHEME)
    by_pair = train.set_index(["query_norm", "product_id"])
    assert by_pair.loc[("a", "a-p0"), "grade"] == 2.0 and by_pair.loc[("a", "a-p0"), "group"] == SOURCE_GROUP[JUDGMENTS]
    assert by_pair.loc[("a", "a-new"), "grade"] == pytest.approx(0.9)  # label 0.3 x top grade 3
    assert by_pair.loc[("z", "z-p0"), "weight"] == 0.5 and by_pair.loc[("z", "z-p0"), "group"] == SOURCE_GROUP[CLICKS]
    assert not train.query_norm.isin(["v", "t"]).any()  # not_held_out: validation and test queries never train
    assert (record.judged_pairs, record.click_pairs, record.click_queries) == (6, 2, 2)
    assert record.click is not None and record.click["judged_pairs_left_out"] == 1
    assert record.click["held_out_queries_left_out"] == 2 and record.click["held_out_queries_kept"] == 0
    assert train.equals(train.sort_values(["query_norm", "product_id", "group"], ignore_index=True))


def test_all_queries_keeps_the_held_out_queries_click_labels_never_their_grades():
    train, record = training_pairs(PARTS, CLICKS_ROWS, tuning(sources="both", click_queries="all"), SCHEME)
    held_out = train[train.query_norm.isin(["v", "t"])]
    assert sorted(held_out.product_id) == ["t-p2", "v-p1"] and set(held_out.group) == {SOURCE_GROUP[CLICKS]}
    assert held_out.grade.tolist() == pytest.approx([0.3, 2.4])  # click labels x 3, not the judged grade 2
    assert record.click is not None and record.click["held_out_queries_kept"] == 2


def test_clicks_only_trains_on_no_human_grade():
    train, record = training_pairs(PARTS, CLICKS_ROWS, tuning(sources="clicks"), SCHEME)
    assert set(train.group) == {SOURCE_GROUP[CLICKS]} and record.judged_pairs == 0
    assert ("a", "a-p0") in set(zip(train.query_norm, train.product_id))  # the judged pair's click label trains
    with pytest.raises(ValueError, match="no training pair is left"):
        training_pairs(PARTS, clicks_of([("v", "v-p0", 0.5)]), tuning(sources="clicks"), SCHEME)


def test_fewer_training_queries_nest_and_leave_validation_alone():
    parts = {**PARTS, "train": judged([f"q{i}" for i in range(40)])}
    sizes = {n: set(training_pairs(parts, None, tuning(max_train_queries=n), SCHEME)[0].query_norm) for n in (5, 10, 20)}
    assert [len(s) for s in sizes.values()] == [5, 10, 20] and sizes[5] < sizes[10] < sizes[20]
    assert first_queries(parts["train"], 100, 13) is parts["train"]
    assert set(first_queries(parts["train"], 5, 14).query_norm) != sizes[5]  # the seed picks them


def test_a_refit_adds_the_validation_pairs_to_the_judgments_group():
    train, _ = training_pairs(PARTS, CLICKS_ROWS, tuning(sources="both"), SCHEME)
    both = plus_judged(train, PARTS["val"])
    added = both.iloc[len(train):]
    assert len(added) == 3 and set(added.group) == {SOURCE_GROUP[JUDGMENTS]} and set(added.weight) == {1.0}
    assert list(plus_judged(PARTS["train"], PARTS["val"]).columns) == list(PARTS["train"].columns)


def test_the_loss_compares_pairs_of_one_source_and_weighs_them():
    cosines = torch.tensor([0.2, 0.6, 0.4, 0.1])
    grades = torch.tensor([2.0, 1.0, 3.0, 0.5])
    groups = torch.tensor([0, 0, 1, 1])
    within = cosent_loss(cosines, grades, 20.0, groups=groups)
    # only (0 over 1) and (2 over 3) are compared: log(1 + e^{20 (0.6-0.2)} + e^{20 (0.1-0.4)})
    expected = torch.logsumexp(torch.tensor([0.0, 20 * 0.4, 20 * -0.3]), dim=0)
    assert within.item() == pytest.approx(expected.item(), rel=1e-5)
    weighted = cosent_loss(cosines, grades, 20.0, weights=torch.tensor([0.5, 0.5, 1.0, 1.0]), groups=groups)
    assert weighted.item() == pytest.approx(torch.logsumexp(torch.tensor([0.0, 20 * 0.4 + torch.log(
        torch.tensor(0.5)).item(), 20 * -0.3]), dim=0).item(), rel=1e-5)
    ones = torch.ones(4)
    assert cosent_loss(cosines, grades, 20.0, ones, torch.zeros(4, dtype=torch.long)).item() == pytest.approx(
        cosent_loss(cosines, grades, 20.0).item(), rel=1e-6)  # one source, weight 1: the plain loss


# ---------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------


def test_finetune_from_click_labels_records_them_and_evaluates_on_judgments(spark, fresh_warehouse, tiny_model_root):
    from jobs import click_model, finetune

    root = Path(fresh_warehouse["warehouse"]["root"])
    models = root / "sources-models"
    fast = {"model.base": str(tiny_model_root / "tiny-test" / "model"), "finetune.epochs": 1,
            "finetune.batch_size": 16, "finetune.max_length": 48, "finetune.catalog_steps": 0,
            "finetune.promote": False, "finetune.click_min_impressions": 2}
    cfg = make_config(root, models, **fast, **{"finetune.sources": "both", "finetune.version": "ft-both"})
    with pytest.raises(Exception, match="no click_labels table at .*click-model"):
        run(spark, cfg, finetune, ds=None)
    assert not models.exists()  # stopped before writing anything

    run(spark, cfg, click_model, ds=DEMO_DS)
    result = run(spark, cfg, finetune, ds=None)
    sources = result.details["sources"]
    assert sources["sources"] == "both" and sources["click_pairs"] > 0 and sources["judged_pairs"] > 0
    assert sources["click_labels"]["ds"] == DEMO_DS and sources["click_labels"]["held_out_queries_kept"] == 0
    card = json.loads((models / "ft-both" / "model_card.json").read_text())
    assert card["training"]["sources"] == sources
    split = json.loads((models / "ft-both" / "split.json").read_text())
    # the held-out queries are judged ones: the split and the test metrics know nothing of click-only queries
    assert card["data"]["test"]["queries"] == len(split["test"]) and card["metrics"]["test"]["queries"] > 0
    assert card["data"]["train"]["pairs"] == sources["judged_pairs"]  # the card's split counts judged pairs only
