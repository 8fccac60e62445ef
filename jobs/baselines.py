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

from udfs.model import BI_ENCODER, LoadedModel, load_network
from udfs.scorer import score_logits

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


def base_bi_encoder(base_dir: str | Path, max_length: int = 128) -> LoadedModel:
    """The base checkpoint as what it is, a sentence-embedding bi-encoder, uncalibrated (its logit is the cosine)."""
    tokenizer, encoder = load_network(base_dir, "cpu", BI_ENCODER)
    return LoadedModel("zero-shot", tokenizer, encoder.eval(), torch.device("cpu"),
                       {"kind": BI_ENCODER, "max_length": max_length})


def zero_shot_scores(base_dir: str | Path, queries: Sequence[str], texts: Sequence[str],
                     max_length: int = 128) -> np.ndarray:
    """Cosine similarity of query and product text under the base checkpoint's sentence embeddings."""
    logits, _ = score_logits(base_bi_encoder(base_dir, max_length), list(queries), list(texts))
    return logits
