"""The score benchmark's inputs: the demo's distinct impressed pairs and the bench model version (MiniLM-L6
with a seeded classification head)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from bench.models import BASE_MODEL
from relevance.data.demo import generate_demo
from udfs.card import ModelCard
from udfs.model import (
    load_network,
    quiet_transformers,
    resolve_base_model,
    save_model_version,
)
from udfs.runtime import DEFAULT_BATCH_BUDGET
from udfs.text import build_product_text, normalize_text

BENCH_VERSION = "bench-base"
MAX_LENGTH = 128
CHUNK_ROWS = 64  # naive UDF chunk, CrossEncoder and predict_batch_udf batch size
ARROW_BATCH_ROWS = 4096
BATCH_TOKENS, MAX_BATCH_ROWS = DEFAULT_BATCH_BUDGET["cpu"]  # what the score job uses on CPU
WARMUP_PAIRS = 64
BENCH_DS = "2025-01-07"
DEFAULT_PAIRS = 1500
DEFAULT_ROUNDS = 3

# --------------------------------------------------------------------------------------------
# Inputs: pairs and the model version
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    """(query_norm, product_text) pairs with their product ids; (query_norm, product_id) is unique."""

    queries: list[str]
    texts: list[str]
    product_ids: list[str]

    def __len__(self) -> int:
        return len(self.queries)

    def head(self, n: int) -> Pairs:
        return Pairs(self.queries[:n], self.texts[:n], self.product_ids[:n])

    def as_tuples(self) -> list[tuple[str, str]]:
        return list(zip(self.queries, self.texts))


def _impressions(demo: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Distinct (normalized query, product id) impressions of a demo query log."""
    log = demo["query_log"]
    shown = log.loc[log["action_name"] == "impression", ["user_query", "object_id"]]
    shown = shown.assign(query_norm=shown["user_query"].map(normalize_text))
    shown = shown.loc[shown["query_norm"] != "", ["query_norm", "object_id"]]
    return shown.drop_duplicates().reset_index(drop=True)


def _product_texts(catalog: pd.DataFrame) -> dict[str, str]:
    """product_id -> the product text the model sees (latest catalog row per product wins)."""
    latest = catalog.sort_values("updated_at").drop_duplicates("product_id", keep="last")
    return {
        row.product_id: build_product_text(row.title, row.brand, row.category, row.attributes)
        for row in latest.itertuples(index=False)
    }


def make_pairs(n_pairs: int, seed: int = 7) -> Pairs:
    """N distinct impressed (query, product) pairs of the demo traffic, in a seeded random order."""
    n_days = 3
    demo = generate_demo(seed=seed, n_days=n_days)
    shown = _impressions(demo)
    while len(shown) < n_pairs and n_days < 96:  # more days of traffic give more distinct pairs
        n_days *= 2
        demo = generate_demo(seed=seed, n_days=n_days)
        shown = _impressions(demo)
    texts = _product_texts(demo["catalog"])
    shown = shown[shown["object_id"].isin(texts.keys())].sample(frac=1.0, random_state=seed).head(n_pairs)
    ids = shown["object_id"].tolist()
    return Pairs(shown["query_norm"].tolist(), [texts[p] for p in ids], ids)


def make_bench_model(models_root: Path, seed: int = 0) -> Path:
    """The base MiniLM with a seeded random relevance head, saved once as a model version directory."""
    quiet_transformers()
    torch.manual_seed(seed)
    tokenizer, network = load_network(resolve_base_model(BASE_MODEL))
    card = ModelCard(version=BENCH_VERSION, base_model=BASE_MODEL, max_length=MAX_LENGTH, threshold=0.5,
                     calibration={"a": 1.0, "b": 0.0}, hyperparameters={"head": f"random, torch seed {seed}"})
    return Path(save_model_version(models_root, network, tokenizer, card))
