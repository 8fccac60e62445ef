"""The training data: judged pairs as examples, the deterministic split by query, and the data's fingerprint."""

from __future__ import annotations

import hashlib

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from relevance.frames import whole_queries_up_to

SPLITS = ("train", "val", "test")


def training_examples(classified: DataFrame, max_examples: int, seed: int) -> tuple[pd.DataFrame, int]:
    """Usable judgments as (query_norm, product_id, product_text, grade), and how many there were before the cut to
    `max_examples` (whole queries, `whole_queries_up_to`): the text is build_pairs' product text (catalog_texts) and
    the query its normalized query, so the model trains on what it will score. Duplicate judgments of one pair keep
    their mean grade, rounded."""
    usable = (classified.where(F.col("reason").isNull())
              .groupBy("query_norm", "product_id", "product_text").agg(F.avg("grade").alias("grade")))
    available = usable.count()
    if available > max_examples:
        usable = whole_queries_up_to(usable, max_examples, seed)
    frame: pd.DataFrame = usable.toPandas()
    examples = frame.sort_values(["query_norm", "product_id"], ignore_index=True)
    return examples.assign(grade=examples.grade.round().astype(int)), available


def split_of(query: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split by query: a hash of (seed, query) picks train, val or test."""
    digest = hashlib.sha256(f"{seed}\x1f{query}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def split_examples(examples: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float,
                   source: str) -> dict[str, pd.DataFrame]:
    """The examples in their splits (`split_of` each query; a `split` column is added to `examples`); a ValueError
    naming `source` (the judgments' table) when a split would be empty."""
    examples["split"] = [split_of(q, seed, val_fraction, test_fraction) for q in examples.query_norm]
    parts = {name: examples[examples.split == name].reset_index(drop=True) for name in SPLITS}
    if min(len(p) for p in parts.values()) == 0:
        raise ValueError(f"judgments in {source} are too few to split by query: "
                         + ", ".join(f"{n}={len(p)}" for n, p in parts.items()))
    return parts


def data_fingerprint(examples: pd.DataFrame, trained_on: pd.DataFrame | None = None) -> str:
    """Hash of the exact data (query, product, text, grade), order-independent: the judged examples and, when the
    network trains on other pairs than their training split (click labels, fewer queries), those pairs too."""
    rows: list[tuple] = sorted(zip(examples.query_norm, examples.product_id, examples.product_text,
                                   examples.grade.astype(int)))
    if trained_on is not None:
        weights = trained_on.weight if "weight" in trained_on.columns else [1.0] * len(trained_on)
        rows += [("trained on",), *sorted(zip(trained_on.query_norm, trained_on.product_id, trained_on.product_text,
                                              trained_on.grade.astype(float).round(6), weights))]
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
