"""The bi-encoder's catalog stage: pseudo-queries made from the catalog's own products (pure), and in-batch-negatives
training on them (a tiny random BERT: seeded, deterministic, bounded by the time limit, skipped for a
cross-encoder)."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from relevance.settings import FinetuneSettings
from relevance.training.catalog_queries import (
    category_leaf,
    distinct_query_batches,
    product_type,
    pseudo_query,
    pseudo_query_pairs,
)


def without_time_limit(settings: FinetuneSettings) -> FinetuneSettings:
    """`settings` with `max_train_seconds` None: no wall-clock limit."""
    unlimited: dict[str, Any] = {"max_train_seconds": None}
    return replace(settings, **unlimited)


def _product(n: int, **fields) -> dict:
    return {"title": f"item {n}", "brand": None, "category": None, "attributes": None, "product_text": f"text {n}", **fields}


def test_the_category_leaf_comes_first_then_the_product_type_and_nothing_else():
    never_brand = random.Random(0)
    assert category_leaf("Office > Desks") == "desks" and category_leaf(None) == "" and category_leaf(float("nan")) == ""
    assert product_type({"Product Type": "Notebook", "colour": "red"}) == "notebook"
    assert product_type({"device type": "keyboard"}) == "keyboard" and product_type(None) == "" and product_type({}) == ""
    attributes = {"product type": "notebook"}
    assert pseudo_query("HP", "Computers > Laptops", attributes, 0.0, never_brand) == "laptops"
    assert pseudo_query("HP", None, attributes, 0.0, never_brand) == "notebook"
    assert pseudo_query("HP", None, {"colour": "silver"}, 0.0, never_brand) == ""  # nothing says what it is
    assert pseudo_query("Acme", "Office > Desks", None, 1.0, never_brand) == "acme desks"
    assert pseudo_query(float("nan"), "Office > Desks", None, 1.0, never_brand) == "desks"  # a null brand


def test_pseudo_query_pairs_are_seeded_and_skip_products_that_give_none():
    products = [_product(n, category=f"shop > kind {n % 7}", brand="acme") for n in range(40)]
    products.append(_product(99))  # no category and no product type: no pseudo-query
    first = pseudo_query_pairs(products, 0.5, seed=1)
    assert first == pseudo_query_pairs(products, 0.5, seed=1) != pseudo_query_pairs(products, 0.5, seed=2)
    assert len(first) == 40 and "text 99" not in {text for _, text in first}
    branded = [q for q, _ in first if q.startswith("acme ")]
    assert 0 < len(branded) < 40  # about half prefixed with the brand


def test_batches_hold_distinct_pseudo_queries_are_full_and_stop_at_the_step_count():
    pairs = [(f"kind {n % 5}", f"text {n}") for n in range(100)]
    batches = distinct_query_batches(pairs, batch_size=4, steps=1000)
    assert batches and all(len(b) == 4 and len({q for q, _ in b}) == 4 for b in batches)
    assert len(distinct_query_batches(pairs, batch_size=4, steps=3)) == 3
    assert distinct_query_batches(pairs[:3], batch_size=4, steps=10) == []  # never a partial batch


def test_catalog_steps_must_be_sensible():
    from relevance.settings import ConfigError
    from tests.conftest import settings_of

    assert settings_of({"finetune": {"catalog_steps": 0}}).finetune.catalog_steps == 0
    with pytest.raises(ConfigError, match="catalog_steps"):
        settings_of({"finetune": {"catalog_steps": -1}})
    with pytest.raises(ConfigError, match="catalog_brand_share"):
        settings_of({"finetune": {"catalog_brand_share": 1.5}})
    with pytest.raises(ConfigError, match="catalog_min_coverage"):
        settings_of({"finetune": {"catalog_min_coverage": -0.1}})


def test_the_catalog_stage_is_skipped_when_few_sampled_products_say_what_they_are():
    from relevance.training.history import CatalogPlan
    from relevance.training.pipeline import catalog_batches

    tuning = FinetuneSettings(batch_size=4, catalog_steps=5)  # catalog_min_coverage 0.5
    mostly = [_product(n, category=f"shop > kind {n}") for n in range(30)] + [_product(100 + n) for n in range(10)]
    batches, plan = catalog_batches(mostly, tuning)
    assert len(batches) == 5 and plan == CatalogPlan(sampled_products=40, with_pseudo_query=30, coverage=0.75)
    assert plan.to_dict() == {"sampled_products": 40, "with_pseudo_query": 30, "coverage": 0.75}  # the card's keys
    few = [_product(n, attributes={"product type": f"kind {n}"}) for n in range(3)] + [_product(100 + n) for n in range(37)]
    batches, plan = catalog_batches(few, tuning)
    assert batches == [] and plan.skipped is not None
    assert plan.skipped.startswith("catalog stage skipped: 3 of 40 sampled products (8%) have")
    assert plan.to_dict()["skipped"] == plan.skipped
    assert len(catalog_batches(few, replace(tuning, catalog_min_coverage=0.0, batch_size=2))[0]) == 1  # a team may insist
    assert catalog_batches([], tuning) == ([], CatalogPlan())


def test_catalog_training_is_seeded_changes_the_network_and_stops_at_the_time_limit(tiny_model_root, monkeypatch):
    import torch

    from relevance.training import progress
    from relevance.training.catalog_training import starting_network
    from relevance.training.history import CatalogStage
    from relevance.training.loop import TrainingTimeLimit
    from udfs.model import WEIGHTS_DIR, load_network, resolve_model_dir

    base = str(resolve_model_dir(tiny_model_root, "tiny-test") / WEIGHTS_DIR)
    products = [_product(n, title=f"{w} thing {n}", category=f"shop > {w} {n}")
                for n, w in enumerate(["lamp", "desk", "chair", "rug", "sofa", "mug", "tent", "bike"] * 6)]
    batches = distinct_query_batches(pseudo_query_pairs(products, 0.3, seed=0), batch_size=8, steps=5)
    settings = FinetuneSettings(max_length=32, train_precision="fp32", catalog_learning_rate=1e-3)

    def started(seed: int, tuning: FinetuneSettings = settings, log=lambda _: None) -> tuple[dict, CatalogStage]:
        _, network, history = starting_network(base, replace(tuning, seed=seed), batches, log=log)
        return network.state_dict(), history

    (first, history), (again, _), (other, _) = started(0), started(0), started(1)
    assert history.steps == len(batches) == 5 and history.pairs == 40 and history.seconds is not None
    assert set(history.to_dict()) == {"steps", "pairs", "loss_first_steps", "loss_last_steps", "seconds"}
    assert all(torch.equal(first[name], again[name]) for name in first)
    lines: list[str] = []
    monkeypatch.setattr(progress, "PLAIN_EVERY_SECONDS", 0.0)  # a progress line after every step but the last
    shown, _ = started(0, without_time_limit(settings), lines.append)  # None: no time limit
    assert [line.split(",")[0] for line in lines[:4]] == [f"  catalog: step {n}/5 ({n / 5:.0%})" for n in range(1, 5)]
    assert all(torch.equal(first[name], shown[name]) for name in first)  # progress changes nothing
    _, base_network = load_network(base, "cpu", "bi_encoder")
    moved = [name for name, value in base_network.state_dict().items() if not torch.equal(value, first[name])]
    assert moved and all("word_embeddings" not in name for name in moved)  # frozen words, as in fine-tuning
    assert any(not torch.equal(first[name], other[name]) for name in first)  # the seed orders dropout
    _, _, skipped = starting_network(base, replace(settings, kind="cross_encoder"), batches, log=lambda _: None)
    assert skipped == CatalogStage() and skipped.to_dict() == {"steps": 0}
    with pytest.raises(TrainingTimeLimit, match="catalog passed finetune.max_train_seconds=0 after 1 of 5 steps"):
        starting_network(base, replace(settings, max_train_seconds=0.0), batches, log=lambda _: None)
