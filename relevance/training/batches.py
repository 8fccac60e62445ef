"""Training batches: the rows of each epoch in batches (by query or by length), the learning-rate schedule, and the
training pairs encoded with the scorer's own encoders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from udfs.model import CROSS_ENCODER
from udfs.scorer import EncodedPairs, encode_pairs, encode_texts


def shuffled_length_batches(lengths: list[int], batch_size: int, generator: torch.Generator,
                            pool_batches: int = 50) -> list[list[int]]:
    """One epoch of training batches: rows shuffled, then sorted by length within pools of `pool_batches`
    batches so that a batch pads little, and the batches shuffled again (every row once per epoch)."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def query_batches(queries: list[str], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of training batches that keep each query's judged products together (queries in random order,
    rows shuffled within a query, a query larger than a batch split across batches): a ranking loss then compares
    the products of one query, which is what the audit's nDCG measures."""
    rows_of: dict[str, list[int]] = {}
    for row, query in enumerate(queries):
        rows_of.setdefault(query, []).append(row)
    groups = list(rows_of.values())
    batches: list[list[int]] = []
    current: list[int] = []
    for g in torch.randperm(len(groups), generator=generator).tolist():
        rows = [groups[g][i] for i in torch.randperm(len(groups[g]), generator=generator).tolist()]
        while rows:
            room = batch_size - len(current)
            current += rows[:room]
            rows = rows[room:]
            if len(current) == batch_size:
                batches.append(current)
                current = []
    return batches + ([current] if current else [])


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then linear decay to zero at step `total`."""
    return min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))


@dataclass
class TrainingInputs:
    """A training set encoded for one kind of network, and the row lengths the batches are grouped by."""

    lengths: list[int]
    pairs: EncodedPairs | None = None  # cross-encoder: [CLS] query [SEP] product [SEP] per row
    texts: EncodedPairs | None = None  # bi-encoder: [CLS] text [SEP] per distinct query and product text
    query_row: list[int] | None = None  # bi-encoder: row -> index of its query in `texts`
    product_row: list[int] | None = None  # bi-encoder: row -> index of its product text in `texts`


def encode_training_inputs(tokenizer: Any, train: pd.DataFrame, kind: str, max_length: int) -> TrainingInputs:
    """Encode the training pairs with the scorer's own encoders, so the network trains on the token ids it scores."""
    if kind == CROSS_ENCODER:
        pairs = encode_pairs(tokenizer, train.query_norm.tolist(), train.product_text.tolist(), max_length)
        return TrainingInputs([len(ids) for ids in pairs.input_ids], pairs=pairs)
    distinct = list(dict.fromkeys([*train.query_norm, *train.product_text]))
    texts = encode_texts(tokenizer, distinct, max_length)
    row = {text: n for n, text in enumerate(distinct)}
    product_row = [row[t] for t in train.product_text]
    return TrainingInputs([len(texts.input_ids[n]) for n in product_row], texts=texts,
                          query_row=[row[q] for q in train.query_norm], product_row=product_row)
