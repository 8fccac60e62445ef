"""finetune: judgments + catalog -> a new model version (weights, tokenizer, model card), promoted when it wins.

Queries are split into train / validation / test (no query in two splits). Two kinds of
network (`finetune.kind`): a bi-encoder, the base sentence-embedding model itself fine-tuned
so that the cosine of query and product orders the pairs by grade (CoSENT loss; it starts
from the zero-shot quality), or a cross-encoder with a new head that learns graded relevance
(target = grade / top grade). Training runs a fixed number of epochs (the same model for the
same data, settings and seed, whatever the machine's load); the best epoch by validation
nDCG@10 is kept; Platt scaling on validation turns logits into the probability that a product
is relevant; thresholds are chosen on validation and metrics are reported on the held-out test
queries. The new version is promoted only when it beats the promoted version and the zero-shot
base on validation by `finetune.promotion_margin` (`--force-promote` overrides).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score

from jobs.baselines import zero_shot_scores
from jobs.build_pairs import catalog_texts, classify_judgments
from jobs.core.config import get, label_scheme, set_path
from jobs.core.job import JobContext, JobResult
from jobs.core.storage import storage_options_from_config
from jobs.metrics import (
    GainSpec,
    choose_threshold_max_f1,
    confusion_at_threshold,
    per_query_ranking_metrics,
    threshold_for_precision,
)
from jobs.transforms import rejects_frame, whole_queries_up_to
from schemas import conform
from schemas.tables import CATALOG, JUDGMENTS, REJECTS
from udfs.model import (
    BI_ENCODER,
    CROSS_ENCODER,
    MODEL_KINDS,
    LoadedModel,
    ModelError,
    load_model_version,
    load_network,
    promote,
    resolve_base_model,
    resolve_model_dir,
    save_model_version,
)
from udfs.scorer import EncodedPairs, calibrate, collate, encode_pairs, encode_texts, mean_pooled, score_logits
from udfs.text import PRODUCT_TEXT_MAX_WORDS

if TYPE_CHECKING:
    from transformers import PreTrainedModel

JOB = "finetune"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TrainSettings:
    """Fine-tuning settings; the defaults are conf/local.yaml's `finetune` section."""

    kind: str = BI_ENCODER  # bi_encoder | cross_encoder (udfs.model.MODEL_KINDS)
    seed: int = 13
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_length: int = 64  # tokens per text (bi-encoder) or per pair (cross-encoder)
    val_fraction: float = 0.15
    test_fraction: float = 0.35
    max_train_seconds: float = 1800.0  # a wall-clock limit: past it training stops and the job fails, nothing saved
    eval_k: int = 10
    train_precision: str = "auto"  # auto (bf16 autocast where the CPU has native bf16) | bf16 | fp32
    freeze_word_embeddings: bool = True
    patience: int = 2  # stop once this many epochs in a row bring no better validation nDCG
    cosent_scale: float = 20.0  # bi-encoder: CoSENT loss = log(1 + sum exp(scale * (cos_low - cos_high)))
    weight_mixes: tuple[float, ...] = (0.5, 0.75, 1.0)  # bi-encoder: fine-tuned shares of a base / fine-tuned mix
    batching: str = "query"  # query: each query's products together | length: random rows grouped by length
    max_examples: int = 200_000  # at most this many judged pairs reach the driver (whole queries, chosen by seed)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"finetune.kind must be one of {', '.join(MODEL_KINDS)}, not {self.kind!r}")


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


def data_fingerprint(examples: pd.DataFrame) -> str:
    """Hash of the exact training data (query, product, text, grade), order-independent."""
    rows = sorted(zip(examples.query_norm, examples.product_id, examples.product_text, examples.grade.astype(int)))
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def _predict_logits(tokenizer, network, frame: pd.DataFrame, max_length: int, kind: str = CROSS_ENCODER) -> np.ndarray:
    network.eval()
    model = LoadedModel("training", tokenizer, network, torch.device("cpu"), {"max_length": max_length, "kind": kind})
    logits, _ = score_logits(model, frame.query_norm.tolist(), frame.product_text.tolist())
    return logits


def _per_query(frame: pd.DataFrame, scores: np.ndarray, ks: list[int], relevant_min_grade: int, gain: GainSpec) -> pd.DataFrame:
    """Per-query ranking metrics of judged pairs scored by `scores`."""
    pairs = {"query": frame.query_norm.values, "product_id": frame.product_id.values}
    ranked, judged = pd.DataFrame({**pairs, "score": scores}), pd.DataFrame({**pairs, "grade": frame.grade.values})
    return per_query_ranking_metrics(ranked, judged, ks, relevant_min_grade, gain)


def ranking_quality(frame: pd.DataFrame, scores: np.ndarray, k: int, relevant_min_grade: int, gain: GainSpec) -> float:
    return float(_per_query(frame, scores, [k], relevant_min_grade, gain)[f"ndcg@{k}"].mean())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def cosent_loss(cosines: torch.Tensor, grades: torch.Tensor, scale: float) -> torch.Tensor:
    """CoSENT: log(1 + sum over pairs (i, j) with grade_i > grade_j of exp(scale * (cos_j - cos_i))). Every
    better-graded pair of the batch, also across queries, should have the higher cosine: a ranking loss that also
    keeps scores comparable between queries (one threshold serves all)."""
    differences = scale * (cosines[None, :] - cosines[:, None])  # [i, j] = scale * (cos_j - cos_i)
    ordered = differences[grades[:, None] > grades[None, :]]
    return torch.logsumexp(torch.cat([torch.zeros(1, dtype=ordered.dtype), ordered]), dim=0)


def batch_loss(model: torch.nn.Module, inputs: TrainingInputs, rows: list[int], targets: torch.Tensor, pad_id: int,
               settings: TrainSettings) -> torch.Tensor:
    """The training loss of one batch of row indices, for the kind of network `inputs` was encoded for."""
    if inputs.pairs is not None:
        logits = model(**collate(inputs.pairs, rows, pad_id)).logits[:, 0]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets[rows])
    assert inputs.texts is not None and inputs.query_row is not None and inputs.product_row is not None
    needed = list(dict.fromkeys([inputs.query_row[i] for i in rows] + [inputs.product_row[i] for i in rows]))
    where = {text: n for n, text in enumerate(needed)}
    vectors = mean_pooled(model, collate(inputs.texts, needed, pad_id))
    queries = vectors[[where[inputs.query_row[i]] for i in rows]]
    products = vectors[[where[inputs.product_row[i]] for i in rows]]
    return cosent_loss((queries * products).sum(dim=-1), targets[rows], settings.cosent_scale)


def train_network(
    tokenizer: Any, network: PreTrainedModel, train: pd.DataFrame, val: pd.DataFrame, top_grade: int,
    settings: TrainSettings, relevant_min_grade: int, gain: GainSpec, log=print,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Fine-tune `network` (of `settings.kind`) on the training pairs for `settings.epochs` epochs; returns (the best
    network by validation nDCG, history).

    The schedule depends on the data and settings only (never on time), so the same seed gives the same model on a
    busy machine; past `max_train_seconds` it raises TrainingTimeLimit instead of quietly training less. With
    `freeze_word_embeddings` the vocabulary's pretrained vectors stay as they are (words unseen in training keep
    their meaning, and steps are cheaper)."""
    world, rank = _world()
    if settings.freeze_word_embeddings:
        network.get_input_embeddings().weight.requires_grad_(False)
    if settings.kind == BI_ENCODER and getattr(network, "pooler", None) is not None:
        network.pooler.requires_grad_(False)  # mean pooling never uses the [CLS] pooler (and DDP wants no idle weights)
    autocast = training_autocast(settings.train_precision)
    model = torch.nn.parallel.DistributedDataParallel(network) if world > 1 else network
    inputs = encode_training_inputs(tokenizer, train, settings.kind, settings.max_length)
    grades = train.grade.to_numpy(dtype=np.float32)
    targets = torch.tensor(grades / max(top_grade, 1) if settings.kind == CROSS_ENCODER else grades)
    steps_per_epoch = math.ceil(len(train) / settings.batch_size) // world
    total_steps = steps_per_epoch * settings.epochs
    warmup = max(1, int(total_steps * settings.warmup_fraction))
    trained = [parameter for parameter in network.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_warmup_decay(step, warmup, total_steps))
    generator = torch.Generator().manual_seed(settings.seed)
    pad_id = tokenizer.pad_token_id or 0
    best_state, best_ndcg, history, stale, started = None, -1.0, [], 0, time.time()
    for epoch in range(settings.epochs):
        network.train()
        losses = []
        batches = (query_batches(train.query_norm.tolist(), settings.batch_size, generator) if settings.batching == "query"
                   else shuffled_length_batches(inputs.lengths, settings.batch_size, generator))  # the same on every rank
        for rows in batches[rank::world][: len(batches) // world]:  # each process its share, equal step counts
            with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                loss = batch_loss(model, inputs, rows, targets, pad_id, settings)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if _any_rank(time.time() - started > settings.max_train_seconds, world):
                raise TrainingTimeLimit(
                    f"fine-tuning passed finetune.max_train_seconds={settings.max_train_seconds:g} in epoch {epoch + 1} "
                    f"of {settings.epochs}: stopped, no model version saved (raise the limit or lower finetune.epochs)")
        val_logits = _predict_logits(tokenizer, network, val, settings.max_length, settings.kind)
        val_ndcg = _from_rank0(ranking_quality(val, val_logits, settings.eval_k, relevant_min_grade, gain), world)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), f"val_ndcg@{settings.eval_k}": val_ndcg,
                        "seconds": round(time.time() - started, 1)})
        log(f"  epoch {epoch + 1}: train loss {np.mean(losses):.4f}, val nDCG@{settings.eval_k} {val_ndcg:.4f}")
        if val_ndcg > best_ndcg:
            best_ndcg, best_state, stale = val_ndcg, copy.deepcopy(network.state_dict()), 0
        else:
            stale += 1
            if stale >= settings.patience:
                log(f"  validation nDCG did not improve for {stale} epoch(s): early stop")
                break
    assert best_state is not None, "no epoch gave a finite validation nDCG"
    network.load_state_dict(best_state)
    network.eval()
    return network, {"epochs": history, "best_val_ndcg": best_ndcg, "train_seconds": round(time.time() - started, 1),
                     "autocast": str(autocast).removeprefix("torch.") if autocast else "fp32"}


def _world() -> tuple[int, int]:
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


def _train_process(base_dir: str, train: pd.DataFrame, val: pd.DataFrame, top_grade: int, settings: TrainSettings,
                   relevant_min_grade: int, gain: GainSpec, weights_path: str) -> dict[str, Any]:
    """One TorchDistributor process: DDP over gloo; rank 0 saves the best weights to `weights_path`."""
    torch.distributed.init_process_group("gloo")
    try:
        rank = torch.distributed.get_rank()
        seed_everything(settings.seed)  # the same initial head on every rank
        tokenizer, network = load_network(base_dir, "cpu", settings.kind)
        network, history = train_network(tokenizer, network, train, val, top_grade, settings, relevant_min_grade,
                                         gain, log=print if rank == 0 else (lambda _: None))
        if rank == 0:
            torch.save(network.state_dict(), weights_path)
        return history
    finally:
        torch.distributed.destroy_process_group()


def train_distributed(base_dir: str, train: pd.DataFrame, val: pd.DataFrame, top_grade: int, settings: TrainSettings,
                      relevant_min_grade: int, gain: GainSpec, processes: int) -> tuple[Any, PreTrainedModel, dict[str, Any]]:
    """Data-parallel fine-tuning with `pyspark.ml.torch.distributor.TorchDistributor` in local mode (the processes
    run on the driver's machine, CPU, gloo): each process trains on its share of every epoch's batches, so the
    effective batch is `batch_size` x processes. Returns (tokenizer, best network, history)."""
    from pyspark.ml.torch.distributor import TorchDistributor

    with tempfile.TemporaryDirectory(prefix="finetune-ddp-") as work:
        weights_path = os.path.join(work, "best.pt")
        history = TorchDistributor(num_processes=processes, local_mode=True, use_gpu=False).run(
            _train_process, base_dir, train, val, top_grade, settings, relevant_min_grade, gain, weights_path)
        tokenizer, network = load_network(base_dir, "cpu", settings.kind)
        network.load_state_dict(torch.load(weights_path))
    network.eval()
    assert history is not None  # TorchDistributor returns rank 0's result: its history
    return tokenizer, network, {**history, "processes": processes}


def fit_calibration(logits: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """Platt scaling: P(relevant) = sigmoid(a * logit + b), fitted on validation."""
    if relevant.min() == relevant.max():
        return {"a": 1.0, "b": 0.0}
    fitted = LogisticRegression(C=1e6).fit(logits.reshape(-1, 1), relevant.astype(int))
    return {"a": float(fitted.coef_[0][0]), "b": float(fitted.intercept_[0])}


def grade_thresholds(scores: np.ndarray, grades: np.ndarray, positive_grades: list[int], decision_grade: int, decision: float) -> dict[str, float]:
    """Minimum score per grade (F1-optimal on validation), non-decreasing with the grade."""
    thresholds: dict[str, float] = {}
    floor = 0.0
    for grade in sorted(positive_grades):
        t = decision if grade == decision_grade else choose_threshold_max_f1(scores, grades >= grade)
        floor = max(floor, float(t))
        thresholds[str(grade)] = floor
    return thresholds


def evaluate(frame: pd.DataFrame, scores: np.ndarray, threshold: float, relevant_min_grade: int, gain: GainSpec, ks: list[int]) -> dict[str, float]:
    """Held-out metrics of a scored frame: ranking (per query, averaged) and classification at the threshold."""
    per_query = _per_query(frame, scores, ks, relevant_min_grade, gain)
    relevant = frame.grade.to_numpy() >= relevant_min_grade
    counts = confusion_at_threshold(scores, relevant, threshold)
    metrics = {c: float(per_query[c].mean()) for c in per_query.columns if "@" in c or c in ("map", "mrr")}
    metrics.update({"precision": counts.precision, "recall": counts.recall, "f1": counts.f1, "queries": int(len(per_query)),
                    "pairs": int(len(frame))})
    if relevant.min() != relevant.max():
        metrics["roc_auc"] = float(roc_auc_score(relevant, scores))
        metrics["average_precision"] = float(average_precision_score(relevant, scores))
    return metrics


def settings_from_config(cfg: dict) -> TrainSettings:
    fields = TrainSettings.__dataclass_fields__
    defaults: dict[str, Any] = {name: f.default for name, f in fields.items()}  # every field has a default
    values: dict[str, Any] = {name: type(default)(get(cfg, f"finetune.{name}")) if not isinstance(default, tuple)
                              else tuple(float(x) for x in get(cfg, f"finetune.{name}"))
                              for name, default in defaults.items() if get(cfg, f"finetune.{name}", None) is not None}
    return TrainSettings(**values)


def mix_weights(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], share: float) -> dict[str, torch.Tensor]:
    """Weight-space ensemble (WiSE-FT): (1 - share) x base + share x fine-tuned, tensor by tensor (integer buffers such
    as position ids are taken from the fine-tuned state)."""
    return {name: (torch.lerp(base[name], value, share) if value.is_floating_point() else value)
            for name, value in tuned.items()}


def choose_weight_mix(tokenizer: Any, network: PreTrainedModel, base_dir: str, val: pd.DataFrame, settings: TrainSettings,
                      relevant_min_grade: int, gain: GainSpec, log=print) -> tuple[PreTrainedModel, dict[str, Any]]:
    """For a bi-encoder, the mix of base and fine-tuned weights with the best validation nDCG (ties: the larger
    fine-tuned share). Small data fine-tunes forget part of what the base knew; a mix keeps it where that helps."""
    if settings.kind != BI_ENCODER or tuple(settings.weight_mixes) == (1.0,):
        return network, {"share": 1.0, "val_ndcg": None}
    tuned = copy.deepcopy(network.state_dict())
    _, base = load_network(base_dir, "cpu", BI_ENCODER)
    base_state = base.state_dict()
    quality = {}
    for share in sorted(set(settings.weight_mixes) | {1.0}):
        network.load_state_dict(mix_weights(base_state, tuned, share))
        quality[share] = ranking_quality(val, _predict_logits(tokenizer, network, val, settings.max_length, BI_ENCODER),
                                         settings.eval_k, relevant_min_grade, gain)
    best = max(quality, key=lambda share: (round(quality[share], 12), share))
    network.load_state_dict(mix_weights(base_state, tuned, best))
    network.eval()
    log(f"  weight mix: fine-tuned share {best:g} (validation nDCG@{settings.eval_k} by share: "
        + ", ".join(f"{k:g}: {v:.4f}" for k, v in quality.items()) + ")")
    return network, {"share": best, "val_ndcg": quality[best], "val_ndcg_by_share": {str(k): v for k, v in quality.items()}}


def promotion_decision(new: float, zero_shot: float, promoted: float | None, margin: float,
                       force: bool = False) -> tuple[bool, str]:
    """Whether a new version is promoted: its validation nDCG must beat the zero-shot base's and the promoted
    version's (when there is one) by `margin`; `force` promotes regardless. Returns (promote, why)."""
    rivals = {"the zero-shot base": zero_shot, **({"the promoted version": promoted} if promoted is not None else {})}
    short = [f"{name} ({value:.4f})" for name, value in rivals.items() if new < value + margin]
    if not short:
        return True, f"validation nDCG {new:.4f} beats " + " and ".join(
            f"{name} ({value:.4f})" for name, value in rivals.items()) + f" by at least {margin:g}"
    if force:
        return True, f"forced (--force-promote): validation nDCG {new:.4f} does not beat " + " or ".join(short) + f" by {margin:g}"
    return False, f"not promoted: validation nDCG {new:.4f} does not beat " + " or ".join(short) + f" by {margin:g}"


def validation_rivals(val: pd.DataFrame, base_dir: Path, models_root: str, settings: TrainSettings,
                      relevant_min_grade: int, gain: GainSpec, storage_options: dict[str, str] | None = None,
                      cache_dir: str | None = None) -> dict[str, Any]:
    """Validation nDCG of what the new version must beat, on the same validation pairs: the zero-shot base and the
    promoted version (None when there is none yet)."""
    def quality(scores: np.ndarray) -> float:
        return ranking_quality(val, scores, settings.eval_k, relevant_min_grade, gain)

    rivals: dict[str, Any] = {
        "zero_shot": quality(zero_shot_scores(base_dir, val.query_norm.tolist(), val.product_text.tolist())),
        "promoted": None, "promoted_version": None}
    try:
        promoted = load_model_version(resolve_model_dir(models_root, "promoted", storage_options, cache_dir))
    except ModelError:
        return rivals  # nothing promoted yet (or it no longer loads): only the base to beat
    logits, _ = score_logits(promoted, val.query_norm.tolist(), val.product_text.tolist())
    rivals.update(promoted=quality(logits), promoted_version=promoted.version)
    return rivals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fine-tune the model (finetune.kind: bi_encoder or cross_encoder) on judgments and save a new model version; "
        "it is promoted only when it beats the promoted version and the zero-shot base on validation. "
        "Name it with --set finetune.version=NAME (default: <kind>-<time>-<data fingerprint>)."
    )
    parser.add_argument("--force-promote", dest="force_promote", action="store_true",
                        help="promote the new version even when it does not beat the promoted one or the base")


def apply_arguments(cfg: dict, args: argparse.Namespace) -> None:
    if getattr(args, "force_promote", False):
        set_path(cfg, "finetune.force_promote", True)


def run(ctx: JobContext) -> JobResult:
    cfg, wh = ctx.cfg, ctx.warehouse
    settings = settings_from_config(cfg)
    scheme = label_scheme(cfg)
    relevant_min_grade, gain = int(scheme["relevant_min_grade"]), scheme.get("gain", "linear")
    grades = sorted({int(g) for g in scheme["grades"].values()})
    base_name = str(get(cfg, "model.base"))
    base_dir = resolve_base_model(base_name)
    models_root = str(get(cfg, "model.models_root"))
    storage_options = storage_options_from_config(cfg)
    torch.set_num_threads(int(get(cfg, "finetune.threads", 0) or 0) or os.cpu_count() or 1)

    judgments = conform(wh.read(JUDGMENTS), JUDGMENTS, wh.path(JUDGMENTS.name))
    catalog = conform(wh.read(CATALOG), CATALOG, wh.path(CATALOG.name))
    max_words = int(get(cfg, "pairs.product_text_max_words", PRODUCT_TEXT_MAX_WORDS))
    classified = classify_judgments(judgments, catalog_texts(catalog, max_words)[0], scheme).cache()
    rows_in = classified.count()
    examples, available = training_examples(classified, settings.max_examples, settings.seed)
    if len(examples) < available:
        print(f"finetune: {available} usable judged pairs, more than finetune.max_examples={settings.max_examples}: "
              f"training on the {len(examples)} pairs of whole queries chosen by seed {settings.seed}")
    rejected = classified.where(F.col("reason").isNotNull())
    examples["split"] = [split_of(q, settings.seed, settings.val_fraction, settings.test_fraction) for q in examples.query_norm]
    parts = {name: examples[examples.split == name].reset_index(drop=True) for name in SPLITS}
    if min(len(p) for p in parts.values()) == 0:
        raise ValueError(f"judgments in {wh.path(JUDGMENTS.name)} are too few to split by query: "
                         + ", ".join(f"{n}={len(p)}" for n, p in parts.items()))
    fingerprint = data_fingerprint(examples)
    print(f"finetune: {len(examples)} judged pairs ({', '.join(f'{n} {len(p)}' for n, p in parts.items())}) "
          f"from {base_name}, a {settings.kind}")

    processes = int(get(cfg, "finetune.processes", 1))
    if processes > 1:
        tokenizer, network, history = train_distributed(str(base_dir), parts["train"], parts["val"], max(grades), settings,
                                                        relevant_min_grade, gain, processes)
    else:
        seed_everything(settings.seed)
        tokenizer, network = load_network(str(base_dir), "cpu", settings.kind)  # a new head is initialised from the seed
        network, history = train_network(
            tokenizer, network, parts["train"], parts["val"], max(grades), settings, relevant_min_grade, gain
        )
    network, history["weight_mix"] = choose_weight_mix(tokenizer, network, str(base_dir), parts["val"], settings,
                                                       relevant_min_grade, gain)
    if history["weight_mix"]["val_ndcg"] is not None:  # the validation quality of the weights kept
        history["best_val_ndcg"] = history["weight_mix"]["val_ndcg"]
    val_logits = _predict_logits(tokenizer, network, parts["val"], settings.max_length, settings.kind)
    calibration = fit_calibration(val_logits, parts["val"].grade.to_numpy() >= relevant_min_grade)
    val_scores = calibrate(val_logits, calibration["a"], calibration["b"])
    threshold = choose_threshold_max_f1(val_scores, parts["val"].grade.to_numpy() >= relevant_min_grade)
    thresholds = grade_thresholds(val_scores, parts["val"].grade.to_numpy(), [g for g in grades if g > 0],
                                  relevant_min_grade, threshold)
    target = float(get(cfg, "audit.target_precision", 0.9))
    target_threshold, target_precision, target_recall = threshold_for_precision(
        val_scores, parts["val"].grade.to_numpy() >= relevant_min_grade, target)
    test_logits = _predict_logits(tokenizer, network, parts["test"], settings.max_length, settings.kind)
    test_scores = calibrate(test_logits, calibration["a"], calibration["b"])
    ks = [int(k) for k in get(cfg, "audit.ks", [5, 10])]
    test_metrics = evaluate(parts["test"], test_scores, threshold, relevant_min_grade, gain, ks)

    rivals = validation_rivals(parts["val"], base_dir, models_root, settings, relevant_min_grade, gain,
                               storage_options, get(cfg, "model.cache_dir", None))
    margin = float(get(cfg, "finetune.promotion_margin", 0.0))
    promoted, why = promotion_decision(history["best_val_ndcg"], rivals["zero_shot"], rivals["promoted"], margin,
                                       bool(get(cfg, "finetune.force_promote", False)))
    if promoted and not get(cfg, "finetune.promote", True):
        promoted, why = False, f"not promoted: finetune.promote is false ({why})"
    prefix = "bi" if settings.kind == BI_ENCODER else "ce"
    version = get(cfg, "finetune.version", None) or (
        f"{prefix}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d%H%M%S')}-{fingerprint[:8]}"
    )
    card = {
        "version": version,
        "kind": settings.kind,
        "base_model": base_name,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "run_id": ctx.run_id,
        "label_scheme": get(cfg, "labels.scheme"),
        "grades": scheme["grades"],
        "relevant_min_grade": relevant_min_grade,
        "gain": gain,
        "max_length": settings.max_length,
        "product_text_max_words": max_words,
        "calibration": calibration,
        "validation_score_deciles": [float(q) for q in np.quantile(val_scores, np.linspace(0.0, 1.0, 11))],
        "threshold": float(threshold),
        "grade_thresholds": thresholds,
        "threshold_for_target_precision": {"target": target, "threshold": target_threshold,
                                           "precision": target_precision, "recall": target_recall,
                                           "rule": "lowest validation threshold whose Wilson 95% lower bound meets the target"},
        "data_fingerprint": fingerprint,
        "data": {name: {"pairs": len(p), "queries": int(p.query_norm.nunique())} for name, p in parts.items()},
        "split": {"rule": "sha256(seed, query_norm) picks train / val / test", "queries_file": "split.json"},
        "hyperparameters": settings.__dict__,
        "training": history,
        "promotion": {"metric": f"val ndcg@{settings.eval_k}", "new": history["best_val_ndcg"], **rivals,
                      "margin": margin, "promoted": promoted, "decision": why},
        "metrics": {"test": test_metrics},
    }
    # the queries of each part, so audits can evaluate on queries the model never saw
    split = json.dumps({name: sorted(p.query_norm.unique()) for name, p in parts.items()}, indent=0)
    path = save_model_version(models_root, network, tokenizer, card, extra_files={"split.json": split},
                              storage_options=storage_options)
    wh.overwrite_partition(rejects_frame(rejected, JOB, JUDGMENTS.name, ctx.run_id, ctx.ds or "all"), REJECTS,
                           {"job": JOB, "ds": ctx.ds or "all"}, ctx.run_id)
    if promoted:
        promote(models_root, version, storage_options)
    print(f"finetune: {why}")
    rows_used = int(classified.where(F.col("reason").isNull()).count())
    return JobResult(
        rows_in=rows_in,
        rows_out=rows_used,
        rows_rejected=rows_in - rows_used,
        model_version=version,
        throughput_per_s=len(parts["train"]) * len(history["epochs"]) / max(history["train_seconds"], 1e-9),
        device="cpu",
        details={"model_dir": str(path), "kind": settings.kind, "unique_pairs": len(examples), "usable_pairs": available,
                 "train_seconds": history["train_seconds"], "test": test_metrics, "threshold": threshold,
                 "promoted": promoted, "promotion": card["promotion"]},
        summary=f"model {version} ({settings.kind}) saved to {path}; held-out nDCG@{ks[-1]} "
        f"{test_metrics.get(f'ndcg@{ks[-1]}', float('nan')):.3f}, F1 {test_metrics['f1']:.3f} at threshold {threshold:.3f}; "
        f"trained in {history['train_seconds']:.0f}s; {'promoted' if promoted else 'NOT promoted'} ({why})",
    )
