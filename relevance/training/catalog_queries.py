"""Weak supervision from the catalog: pseudo-queries made from each product's own fields, with no judgment.

A team's catalog is far larger than its judgments. Each product that says what it is gives one (pseudo-query,
product text) pair: the leaf of its category ("desks"), else its product-type attribute ("notebook"), some of them
prefixed with the brand ("acme desks"). A product with neither gives none: spans of titles were tried as a fallback
and made the fine-tuned model worse on real ratings (Chorus / Icecat, which has no categories). Batches hold
distinct pseudo-queries, so the other products of a batch are its negatives. Pure functions: the same products and
seed give the same pairs and batches."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from udfs.text import is_missing, normalize_text

# purity: no pyspark torch transformers

# attributes that name what a product is, in the order they are looked for
PRODUCT_TYPE_ATTRIBUTES = ("product type", "device type")


def category_leaf(category: Any) -> str:
    """The last level of a `a > b > c` category path, normalized ("" when there is none)."""
    if is_missing(category) or not str(category).strip():
        return ""
    return normalize_text(str(category).split(">")[-1])


def product_type(attributes: Mapping[str, Any] | None) -> str:
    """The product-type attribute's value, normalized ("" when there is none)."""
    if is_missing(attributes) or not attributes:
        return ""
    named = {normalize_text(str(k)): v for k, v in dict(attributes).items() if k and not is_missing(v)}
    return next((normalize_text(str(named[key])) for key in PRODUCT_TYPE_ATTRIBUTES if named.get(key)), "")


def pseudo_query(brand: Any, category: Any, attributes: Mapping[str, Any] | None, brand_share: float,
                 rng: random.Random) -> str:
    """A product's pseudo-query (see the module's docstring); "" when the product gives none."""
    brand_text = normalize_text(brand)
    kind = category_leaf(category) or product_type(attributes)
    if kind and brand_text and rng.random() < brand_share:
        return f"{brand_text} {kind}"
    return kind


def pseudo_query_pairs(products: Sequence[Mapping[str, Any]], brand_share: float, seed: int) -> list[tuple[str, str]]:
    """(pseudo-query, product_text) of each product (brand, category, attributes, product_text) that gives one, in
    a seeded random order."""
    rng = random.Random(seed)
    pairs = [(query, str(p["product_text"])) for p in products
             if (query := pseudo_query(p.get("brand"), p.get("category"), p.get("attributes"), brand_share, rng))]
    rng.shuffle(pairs)
    return pairs


def distinct_query_batches(pairs: Sequence[tuple[str, str]], batch_size: int, steps: int) -> list[list[tuple[str, str]]]:
    """Up to `steps` full batches in the pairs' order with no pseudo-query twice in a batch (a repeat is skipped),
    so that every other product of a batch is a fair negative."""
    batches: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for query, text in pairs:
        if len(batches) == steps:
            break
        if any(query == q for q, _ in current):
            continue
        current.append((query, text))
        if len(current) == batch_size:
            batches.append(current)
            current = []
    return batches
