"""The pure batch scorer: (queries, product texts) -> calibrated relevance probabilities.

No Spark here: the pandas UDF only adapts this function, and benchmarks and tests
call it directly. Pair and text encoding are shared with fine-tuning, so training and
scoring see identical token ids. Two model kinds: a cross-encoder scores each distinct
pair; a bi-encoder embeds each distinct query and product text once and scores the cosine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from udfs.card import calibrate
from udfs.lexical import bm25_pair_scores
from udfs.model import BI_ENCODER, HALF_PRECISIONS, LoadedModel, ModelError
from udfs.runtime import batch_budget

# purity: no pyspark


@dataclass
class EncodedPairs:
    """Token ids of [CLS] query [SEP] product [SEP] per pair, plus where the query part ends."""

    input_ids: list[list[int]]
    query_lengths: list[int]  # tokens with token_type 0 ([CLS] + query + [SEP])
    truncated: int


def _token_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> dict[str, list[int]]:
    """Tokenize each distinct text once (no special tokens)."""
    distinct = list(dict.fromkeys(texts))
    encoded = tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []
    return dict(zip(distinct, encoded))


def encode_pairs(tokenizer: PreTrainedTokenizerBase, queries: Sequence[str], texts: Sequence[str], max_length: int) -> EncodedPairs:
    """Build BERT pair inputs from cached per-text token ids; the product side is truncated first."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    query_ids, text_ids = _token_ids(tokenizer, queries), _token_ids(tokenizer, texts)
    budget = max_length - 3
    pairs, query_lengths, truncated = [], [], 0
    for query, text in zip(queries, texts):
        q, t = query_ids[query], text_ids[text]
        if len(q) + len(t) > budget:
            truncated += 1
            if len(q) > budget // 2:  # only an extreme query loses tokens, and keeps half the budget
                q = q[: budget // 2]
            t = t[: budget - len(q)]
        pairs.append([cls_id, *q, sep_id, *t, sep_id])
        query_lengths.append(len(q) + 2)
    return EncodedPairs(pairs, query_lengths, truncated)


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> EncodedPairs:
    """Single-text BERT inputs `[CLS] text [SEP]` (one token type), truncated to `max_length`: what a bi-encoder
    embeds."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids, truncated = [], 0
    token_ids = _token_ids(tokenizer, texts)
    for text in texts:
        tokens = token_ids[text]
        if len(tokens) > max_length - 2:
            truncated += 1
            tokens = tokens[: max_length - 2]
        ids.append([cls_id, *tokens, sep_id])
    return EncodedPairs(ids, [len(row) for row in ids], truncated)


def mean_pooled(network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A bi-encoder's embeddings of a collated batch: token states averaged over the real tokens, L2-normalized
    (the sentence-embedding convention of the base checkpoint). Differentiable: fine-tuning uses it too."""
    hidden = network(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


def collate(encoded: EncodedPairs, rows: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the selected pairs to their longest member: input_ids, token_type_ids, attention_mask."""
    width = max(len(encoded.input_ids[i]) for i in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    token_types = torch.zeros((len(rows), width), dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for out_row, i in enumerate(rows):
        ids = encoded.input_ids[i]
        input_ids[out_row, : len(ids)] = torch.tensor(ids)
        token_types[out_row, encoded.query_lengths[i] : len(ids)] = 1
        attention[out_row, : len(ids)] = 1
    return {"input_ids": input_ids, "token_type_ids": token_types, "attention_mask": attention}


def token_budget_batches(lengths: Sequence[int], batch_tokens: int, max_rows: int) -> list[list[int]]:
    """Sort rows by length and pack them so that rows x longest row <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[i]  # ascending order: the newest row is the longest in the batch
        if current and ((len(current) + 1) * width > batch_tokens or len(current) >= max_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass
class ScoreStats:
    pairs: int
    unique_pairs: int
    real_tokens: int
    padded_tokens: int
    truncated: int

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0


def _autocast(model: LoadedModel) -> contextlib.AbstractContextManager:
    """bf16 / fp16 autocast on the GPU for a half-precision model; nothing otherwise."""
    if model.device.type == "cuda" and model.precision in HALF_PRECISIONS:
        return torch.autocast(device_type="cuda", dtype=HALF_PRECISIONS[model.precision])
    return contextlib.nullcontext()


class EmbeddingCache:
    """A bi-encoder's embeddings of the texts it has seen, so that a text repeated across the Arrow batches of one
    Spark task is embedded once. At most `max_entries` (then it starts over): memory stays bounded. Keep one per
    task, not per worker, so that a task's scores depend only on its own rows, never on which tasks ran before."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self.vectors: dict[str, np.ndarray] = {}

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        if len(self.vectors) + len(texts) > self.max_entries:
            self.vectors.clear()
        self.vectors.update(zip(texts[:self.max_entries], vectors[:self.max_entries]))


def score_logits(
    model: LoadedModel,
    queries: Sequence[str],
    texts: Sequence[str],
    batch_tokens: int | None = None,
    max_batch_rows: int | None = None,
    cache: EmbeddingCache | None = None,
) -> tuple[np.ndarray, ScoreStats]:
    """The model's relevance logit for each (query, product text) pair, in input order: the network's, plus the
    card's lexical weight x BM25 under the version's frozen statistics when it has one. Batches: see `batch_budget`
    (None: the device's default). A bi-encoder reuses and fills `cache`."""
    if len(queries) != len(texts):
        raise ValueError(f"{len(queries)} queries but {len(texts)} product texts")
    logits, stats = _network_logits(model, queries, texts, batch_tokens, max_batch_rows, cache)
    if model.card.lexical_weight:
        if model.lexical is None:
            raise ModelError(f"model {model.version}: its card adds BM25 x {model.card.lexical_weight:g} to the logit "
                             "but it was loaded without the BM25 statistics")
        logits = logits + model.card.lexical_weight * bm25_pair_scores(model.lexical, queries, texts)
    return logits, stats


def _network_logits(model: LoadedModel, queries: Sequence[str], texts: Sequence[str], batch_tokens: int | None,
                    max_batch_rows: int | None, cache: EmbeddingCache | None) -> tuple[np.ndarray, ScoreStats]:
    """The network's logit of each pair: a bi-encoder's cosine, a cross-encoder's head."""
    if model.kind == BI_ENCODER:
        return _cosine_logits(model, queries, texts, batch_tokens, max_batch_rows, cache)
    keys = list(zip(queries, texts))
    distinct = list(dict.fromkeys(keys))
    position = {key: i for i, key in enumerate(distinct)}
    encoded = encode_pairs(model.tokenizer, [q for q, _ in distinct], [t for _, t in distinct], model.max_length)
    logits, padded = _forward(model, encoded, lambda batch: model.network(**batch).logits[:, 0:1], batch_tokens,
                              max_batch_rows)
    stats = ScoreStats(len(keys), len(distinct), sum(map(len, encoded.input_ids)), padded, encoded.truncated)
    return logits[[position[key] for key in keys], 0].astype(np.float64), stats


def _forward(model: LoadedModel, encoded: EncodedPairs, head, batch_tokens: int | None,
             max_batch_rows: int | None) -> tuple[np.ndarray, int]:
    """`head(batch)` for every encoded row, in token-budget batches on the model's device: (outputs in row order,
    padded tokens computed)."""
    lengths = [len(ids) for ids in encoded.input_ids]
    outputs: np.ndarray | None = None
    padded = 0
    pad_id = model.tokenizer.pad_token_id or 0
    on_gpu = model.device.type == "cuda"
    with torch.inference_mode(), _autocast(model):
        for rows in token_budget_batches(lengths, *batch_budget(model.device.type, batch_tokens, max_batch_rows)):
            batch = {k: (v.pin_memory() if on_gpu else v).to(model.device, non_blocking=on_gpu)
                     for k, v in collate(encoded, rows, pad_id).items()}
            padded += batch["input_ids"].numel()
            values = head(batch).float().cpu().numpy()
            if outputs is None:
                outputs = np.zeros((len(lengths), values.shape[1]), dtype=np.float32)
            outputs[rows] = values
    return (outputs if outputs is not None else np.zeros((0, 1), dtype=np.float32)), padded


def _cosine_logits(model: LoadedModel, queries: Sequence[str], texts: Sequence[str], batch_tokens: int | None,
                   max_batch_rows: int | None, cache: EmbeddingCache | None = None) -> tuple[np.ndarray, ScoreStats]:
    """A bi-encoder's logit of each pair: the cosine of the query's and the product text's embeddings, each distinct
    text embedded once (once per `cache`, when given)."""
    known = cache.vectors if cache is not None else {}
    distinct = [text for text in dict.fromkeys([*queries, *texts]) if text not in known]
    encoded = encode_texts(model.tokenizer, distinct, model.max_length)
    network = model.torch_network  # a bi-encoder is never int8 (ONNX)
    vectors, padded = _forward(model, encoded, lambda batch: mean_pooled(network, batch), batch_tokens,
                               max_batch_rows)
    fresh = dict(zip(distinct, vectors))
    if cache is not None:
        cache.add(distinct, vectors)
    embedding = lambda text: fresh[text] if text in fresh else known[text]  # noqa: E731
    q = np.array([embedding(x) for x in queries], dtype=np.float64).reshape(len(queries), -1)
    t = np.array([embedding(x) for x in texts], dtype=np.float64).reshape(len(texts), -1)
    logits = (q * t).sum(axis=1) if len(queries) else np.zeros(0)
    stats = ScoreStats(len(queries), len(set(zip(queries, texts))), sum(map(len, encoded.input_ids)), padded,
                       encoded.truncated)
    return logits, stats


def score_pairs(
    model: LoadedModel,
    queries: Sequence[str],
    texts: Sequence[str],
    batch_tokens: int | None = None,
    max_batch_rows: int | None = None,
    cache: EmbeddingCache | None = None,
) -> tuple[np.ndarray, ScoreStats]:
    """Calibrated probability of relevance for each (query, product text) pair, in input order."""
    logits, stats = score_logits(model, queries, texts, batch_tokens, max_batch_rows, cache)
    return calibrate(logits, *model.calibration), stats


# ----------------------------------------------------------------------------- a bi-encoder's texts, embedded apart
@dataclass
class EmbedStats:
    """What one `embed_texts` call computed: texts embedded, real and padded tokens, texts cut at max_length."""

    texts: int
    real_tokens: int
    padded_tokens: int
    truncated: int


def embed_texts(model: LoadedModel, texts: Sequence[str], batch_tokens: int | None = None,
                max_batch_rows: int | None = None) -> tuple[np.ndarray, list[int], EmbedStats]:
    """A bi-encoder's embedding of each text, in input order: float32 rows, mean-pooled and L2-normalized exactly as
    `score_logits` embeds them (`encode_texts` at the card's max_length, `mean_pooled`, the same batches and
    autocast), so that the cosine of two rows, plus the lexical term and the calibration, is that pair's score.
    Also each text's tokens (special tokens included, after truncation). Each distinct text is embedded once."""
    if model.kind != BI_ENCODER:
        raise ModelError(f"model {model.version} is a {model.kind}: only a bi-encoder embeds texts apart")
    distinct = list(dict.fromkeys(texts))
    encoded = encode_texts(model.tokenizer, distinct, model.max_length)
    network = model.torch_network
    vectors, padded = _forward(model, encoded, lambda batch: mean_pooled(network, batch), batch_tokens,
                               max_batch_rows)
    position = {text: i for i, text in enumerate(distinct)}
    rows = [position[text] for text in texts]
    tokens = [len(encoded.input_ids[i]) for i in rows]
    stats = EmbedStats(len(distinct), sum(map(len, encoded.input_ids)), padded, encoded.truncated)
    return (vectors[rows] if len(rows) else np.zeros((0, 0), dtype=np.float32)), tokens, stats
