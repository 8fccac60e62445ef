"""The baselines the fine-tuned cross-encoder is audited against, scoring the same candidates.

* ``bm25``: lexical BM25 (bm25s, Lucene variant, k1=1.5, b=0.75, English stop words and
  Snowball stemming) of the normalized query against the product text the model sees,
  with corpus statistics from the whole catalog.
* ``zero_shot``: the base checkpoint without fine-tuning, used the way it was trained (a
  sentence-embedding bi-encoder): cosine of the mean-pooled embeddings of query and
  product text.

Both are pure functions of their inputs; neither reads tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
import torch

BM25, ZERO_SHOT = "bm25", "zero_shot"


def bm25_scores(corpus: dict[str, str], queries: Sequence[str], product_ids: Sequence[str]) -> np.ndarray:
    """BM25 score of each (query, product) candidate; `corpus` maps every catalog product id to its text.

    Candidates whose product is missing from the corpus score 0.
    """
    stemmer = Stemmer.Stemmer("english")
    ids = list(corpus)
    index = bm25s.BM25()
    index.index(bm25s.tokenize([corpus[i] for i in ids], stopwords="en", stemmer=stemmer, show_progress=False),
                show_progress=False)
    column = {product_id: n for n, product_id in enumerate(ids)}
    distinct = list(dict.fromkeys(queries))
    tokens = bm25s.tokenize(distinct, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)
    per_query = {query: index.get_scores(query_tokens) for query, query_tokens in zip(distinct, tokens)}
    return np.array([
        float(per_query[query][column[product_id]]) if product_id in column else 0.0
        for query, product_id in zip(queries, product_ids)
    ])


def _embed(tokenizer, encoder: torch.nn.Module, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    """L2-normalized mean-pooled token embeddings, batched by length."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def zero_shot_scores(base_dir: str | Path, queries: Sequence[str], texts: Sequence[str],
                     max_length: int = 128, batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of query and product text under the base checkpoint's sentence embeddings."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    encoder = AutoModel.from_pretrained(base_dir, local_files_only=True).eval()
    distinct = list(dict.fromkeys([*queries, *texts]))
    vectors = _embed(tokenizer, encoder, distinct, max_length, batch_size)
    row = {text: n for n, text in enumerate(distinct)}
    q = vectors[[row[t] for t in queries]]
    p = vectors[[row[t] for t in texts]]
    return (q * p).sum(axis=1).astype(float)
