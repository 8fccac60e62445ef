"""The bi-encoder's first stage: in-batch-negatives training on the catalog's pseudo-queries
(relevance.training.catalog_queries), before the judgments. It adapts the base model to the catalog's products
and words with no label, and the judgments then teach it the team's notion of relevance."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from relevance.settings import FinetuneSettings
from relevance.training.history import CatalogStage
from relevance.training.loop import (
    TrainingTimeLimit,
    freeze_untrained,
    seed_everything,
    time_limit_passed,
    training_autocast,
    world_and_rank,
)
from relevance.training.progress import StepProgress
from udfs.model import BI_ENCODER, load_network
from udfs.scorer import collate, encode_texts, mean_pooled

PSEUDO_QUERY_MAX_TOKENS = 16


def in_batch_negatives_loss(queries: torch.Tensor, products: torch.Tensor, scale: float) -> torch.Tensor:
    """Cross-entropy of each (L2-normalized) query against every product of the batch, its own product the target:
    the other products are its negatives (multiple-negatives ranking)."""
    similarities = scale * queries @ products.T
    return torch.nn.functional.cross_entropy(similarities.float(), torch.arange(len(queries)))


def train_on_catalog(tokenizer: Any, network: Any, batches: Sequence[Sequence[tuple[str, str]]],
                     settings: FinetuneSettings, log: Callable[[str], None] = print) -> CatalogStage:
    """One pass over the pseudo-query batches at `catalog_learning_rate` (word embeddings and the pooler frozen, as
    in fine-tuning), showing its steps, loss and time left; returns what it did. The same batches and seed give the
    same weights; past `max_train_seconds` (when set) it raises TrainingTimeLimit."""
    if not batches:
        return CatalogStage()
    freeze_untrained(network, settings)
    trained = [parameter for parameter in network.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=settings.catalog_learning_rate, weight_decay=settings.weight_decay)
    autocast = training_autocast(settings.train_precision)
    pad_id = tokenizer.pad_token_id or 0
    network.train()
    losses, started = [], time.time()
    with StepProgress("catalog", len(batches), log, enabled=world_and_rank()[1] == 0) as progress:
        for batch in batches:
            rows = list(range(len(batch)))
            queries = encode_texts(tokenizer, [query for query, _ in batch], PSEUDO_QUERY_MAX_TOKENS)
            products = encode_texts(tokenizer, [text for _, text in batch], settings.max_length)
            with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                loss = in_batch_negatives_loss(mean_pooled(network, collate(queries, rows, pad_id)),
                                               mean_pooled(network, collate(products, rows, pad_id)), settings.cosent_scale)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            progress.step(losses[-1])
            if time_limit_passed(settings, started):
                raise TrainingTimeLimit(f"training on the catalog passed finetune.max_train_seconds="
                                        f"{settings.max_train_seconds:g} after {len(losses)} of {len(batches)} steps: "
                                        "stopped, no model version saved (raise the limit or lower finetune.catalog_steps)")
    network.eval()
    head, tail = float(np.mean(losses[:20])), float(np.mean(losses[-20:]))
    log(f"  catalog pseudo-queries: {len(batches)} steps of {len(batches[0])}, in-batch loss {head:.3f} -> {tail:.3f}")
    return CatalogStage(steps=len(batches), pairs=sum(len(b) for b in batches), loss_first_steps=round(head, 4),
                        loss_last_steps=round(tail, 4), seconds=round(time.time() - started, 1))


def starting_network(base_dir: str, settings: FinetuneSettings, catalog_batches: Sequence[Sequence[tuple[str, str]]],
                     log: Callable[[str], None] = print) -> tuple[Any, Any, CatalogStage]:
    """(tokenizer, network, catalog stage): the network fine-tuning starts from, seeded (a cross-encoder's new
    head comes from the seed) and, for a bi-encoder, first trained on the catalog's pseudo-query batches."""
    seed_everything(settings.seed)
    tokenizer, network = load_network(base_dir, "cpu", settings.kind)
    if settings.kind != BI_ENCODER or not catalog_batches:
        return tokenizer, network, CatalogStage()
    return tokenizer, network, train_on_catalog(tokenizer, network, catalog_batches, settings, log)
