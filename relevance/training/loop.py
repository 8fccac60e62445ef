"""The training loop: seeding, the autocast of the forward pass, the losses of both kinds of network, and the epochs
with early stopping by validation nDCG (in one process, or in each process of a torch.distributed group)."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from relevance.settings import FinetuneSettings, LabelScheme
from relevance.training.batches import (
    TrainingInputs,
    encode_training_inputs,
    linear_warmup_decay,
    query_batches,
    shuffled_length_batches,
)
from relevance.training.evaluate import predict_logits, ranking_quality
from relevance.training.history import EpochRecord, LoopHistory
from relevance.training.progress import StepProgress
from udfs.model import BI_ENCODER, CROSS_ENCODER
from udfs.scorer import collate, mean_pooled

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class TrainingTimeLimit(RuntimeError):
    """Training passed `finetune.max_train_seconds`: it stops, and no model version is saved."""


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bf16 dot products natively (AVX512-BF16 or AMX), so that bf16 autocast trains
    faster than fp32; elsewhere bf16 is emulated and slower."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def training_autocast(precision: str, cpuinfo: str = "/proc/cpuinfo") -> torch.dtype | None:
    """The autocast dtype of the training forward pass (None: plain fp32); `auto` is bf16 where the CPU of
    `cpuinfo` has native bf16. Weights, optimizer state and the saved model stay fp32, and validation, calibration
    and scoring run in fp32."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"finetune.train_precision must be auto, bf16 or fp32, not {precision!r}")
    if precision == "bf16" or (precision == "auto" and cpu_has_native_bf16(cpuinfo)):
        return torch.bfloat16
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosent_loss(cosines: torch.Tensor, grades: torch.Tensor, scale: float, weights: torch.Tensor | None = None,
                groups: torch.Tensor | None = None) -> torch.Tensor:
    """CoSENT: log(1 + sum over pairs (i, j) with grade_i > grade_j of w_i exp(scale * (cos_j - cos_i))). Every
    better-graded pair of the batch, also across queries, should have the higher cosine: a ranking loss that also
    keeps scores comparable between queries (one threshold serves all). With `groups`, only pairs of one group are
    compared (a human grade and a click label are not one measurement); `weights` (None: 1) weigh each pair by its
    better row's weight."""
    differences = scale * (cosines[None, :] - cosines[:, None])  # [i, j] = scale * (cos_j - cos_i)
    better = grades[:, None] > grades[None, :]
    if groups is not None:
        better &= groups[:, None] == groups[None, :]
    ordered = differences[better]
    if weights is not None:
        ordered = ordered + torch.log(weights)[:, None].expand_as(differences)[better].to(ordered.dtype)
    return torch.logsumexp(torch.cat([torch.zeros(1, dtype=ordered.dtype), ordered]), dim=0)


@dataclass(frozen=True)
class RowTargets:
    """What each training row is trained towards: its grade (a click label times the top grade for a click-labelled
    row), and with more than one source (relevance.training.sources) its loss weight and source group."""

    grades: torch.Tensor
    weights: torch.Tensor | None = None
    groups: torch.Tensor | None = None

    @classmethod
    def of(cls, train: pd.DataFrame, kind: str, top_grade: int) -> RowTargets:
        grades = train.grade.to_numpy(dtype=np.float32)
        targets = torch.tensor(grades / max(top_grade, 1) if kind == CROSS_ENCODER else grades)
        if "weight" not in train.columns:
            return cls(targets)
        return cls(targets, torch.tensor(train.weight.to_numpy(dtype=np.float32)),
                   torch.tensor(train.group.to_numpy(dtype=np.int64)))


def batch_loss(model: torch.nn.Module, inputs: TrainingInputs, rows: list[int], targets: RowTargets, pad_id: int,
               settings: FinetuneSettings) -> torch.Tensor:
    """The training loss of one batch of row indices, for the kind of network `inputs` was encoded for."""
    weights = targets.weights[rows] if targets.weights is not None else None
    if inputs.pairs is not None:
        logits = model(**collate(inputs.pairs, rows, pad_id)).logits[:, 0]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets.grades[rows], weight=weights)
    assert inputs.texts is not None and inputs.query_row is not None and inputs.product_row is not None
    needed = list(dict.fromkeys([inputs.query_row[i] for i in rows] + [inputs.product_row[i] for i in rows]))
    where = {text: n for n, text in enumerate(needed)}
    vectors = mean_pooled(model, collate(inputs.texts, needed, pad_id))
    queries = vectors[[where[inputs.query_row[i]] for i in rows]]
    products = vectors[[where[inputs.product_row[i]] for i in rows]]
    groups = targets.groups[rows] if targets.groups is not None else None
    return cosent_loss((queries * products).sum(dim=-1), targets.grades[rows], settings.cosent_scale, weights, groups)


def freeze_untrained(network: Any, settings: FinetuneSettings) -> None:
    """Freeze what training leaves as it is: the word embeddings with `freeze_word_embeddings`, and a bi-encoder's
    [CLS] pooler (mean pooling never uses it, and DDP wants no idle weights)."""
    if settings.freeze_word_embeddings:
        network.get_input_embeddings().weight.requires_grad_(False)
    if settings.kind == BI_ENCODER and getattr(network, "pooler", None) is not None:
        network.pooler.requires_grad_(False)


def time_limit_passed(settings: FinetuneSettings, started: float) -> bool:
    """Whether training started at `started` (time.time()) has passed `finetune.max_train_seconds` (None: no
    limit, never)."""
    limit = settings.max_train_seconds
    return limit is not None and time.time() - started > limit


def train_network(
    tokenizer: Any, network: PreTrainedModel, train: pd.DataFrame, val: pd.DataFrame, settings: FinetuneSettings,
    scheme: LabelScheme, log: Callable[[str], None] = print, keep_last: bool = False,
) -> tuple[PreTrainedModel, LoopHistory]:
    """Fine-tune `network` (of `settings.kind`) on the training pairs, graded by `scheme`, for `settings.epochs`
    epochs; returns (the best network by validation nDCG, its history), or with `keep_last` the network after the
    last epoch (no early stopping: for a refit whose training pairs include the validation pairs).

    The schedule depends on the data and settings only (never on time), so the same seed gives the same model on a
    busy machine; past `max_train_seconds` (when set) it raises TrainingTimeLimit instead of quietly training less.
    With `freeze_word_embeddings` the vocabulary's pretrained vectors stay as they are (words unseen in training keep
    their meaning, and steps are cheaper). Each epoch shows its steps, loss and time left (relevance.training.progress;
    in a distributed group, rank 0's)."""
    world, rank = world_and_rank()
    freeze_untrained(network, settings)
    autocast = training_autocast(settings.train_precision)
    model = torch.nn.parallel.DistributedDataParallel(network) if world > 1 else network
    inputs = encode_training_inputs(tokenizer, train, settings.kind, settings.max_length)
    targets = RowTargets.of(train, settings.kind, scheme.top_grade)
    steps_per_epoch = math.ceil(len(train) / settings.batch_size) // world
    total_steps = steps_per_epoch * settings.epochs
    warmup = max(1, int(total_steps * settings.warmup_fraction))
    trained = [parameter for parameter in network.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_warmup_decay(step, warmup, total_steps))
    generator = torch.Generator().manual_seed(settings.seed)
    pad_id = tokenizer.pad_token_id or 0
    limited = settings.max_train_seconds is not None  # the same on every rank: all of them check, or none
    best_state, best_ndcg, history, stale, started = None, -1.0, [], 0, time.time()
    for epoch in range(settings.epochs):
        network.train()
        losses = []
        batches = (query_batches(train.query_norm.tolist(), settings.batch_size, generator) if settings.batching == "query"
                   else shuffled_length_batches(inputs.lengths, settings.batch_size, generator))  # the same on every rank
        mine = batches[rank::world][: len(batches) // world]  # each process its share, equal step counts
        with StepProgress(f"epoch {epoch + 1}/{settings.epochs}", len(mine), log, enabled=rank == 0) as progress:
            for rows in mine:
                with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                    loss = batch_loss(model, inputs, rows, targets, pad_id, settings)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(loss.item())
                progress.step(losses[-1])
                if limited and _any_rank(time_limit_passed(settings, started), world):
                    raise TrainingTimeLimit(
                        f"fine-tuning passed finetune.max_train_seconds={settings.max_train_seconds:g} in epoch "
                        f"{epoch + 1} of {settings.epochs}: stopped, no model version saved (raise the limit or lower "
                        "finetune.epochs)")
        val_logits = predict_logits(tokenizer, network, val, settings.max_length, settings.kind)
        val_ndcg = _from_rank0(ranking_quality(val, val_logits, settings.eval_k, scheme.relevant_min_grade, scheme.gain),
                               world)
        history.append(EpochRecord(epoch + 1, float(np.mean(losses)), val_ndcg, round(time.time() - started, 1),
                                   settings.eval_k))
        log(f"  epoch {epoch + 1}: train loss {np.mean(losses):.4f}, val nDCG@{settings.eval_k} {val_ndcg:.4f}")
        if keep_last:
            best_ndcg, best_state = val_ndcg, network.state_dict()
        elif val_ndcg > best_ndcg:
            best_ndcg, best_state, stale = val_ndcg, copy.deepcopy(network.state_dict()), 0
        else:
            stale += 1
            if stale >= settings.patience:
                log(f"  validation nDCG did not improve for {stale} epoch(s): early stop")
                break
    assert best_state is not None, "no epoch gave a finite validation nDCG"
    network.load_state_dict(best_state)
    network.eval()
    return network, LoopHistory(tuple(history), best_ndcg, round(time.time() - started, 1),
                                str(autocast).removeprefix("torch.") if autocast else "fp32")


def world_and_rank() -> tuple[int, int]:
    """(world size, rank) of the torch.distributed group this process is in; (1, 0) outside one."""
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_world_size(), distributed.get_rank()
    return 1, 0


def _any_rank(flag: bool, world: int) -> bool:
    """True on every process when it is true on any (so that all stop at the same step)."""
    if world == 1:
        return flag
    value = torch.tensor([float(flag)])
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def _from_rank0(value: float, world: int) -> float:
    if world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    torch.distributed.broadcast(tensor, src=0)
    return float(tensor.item())
