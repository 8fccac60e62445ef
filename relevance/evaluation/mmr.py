"""Maximal marginal relevance (Carbonell and Goldstein, SIGIR 1998) over a query's candidates, and its trade-off.

Pure numpy (no Spark, no I/O). Each step picks the candidate maximizing
``lambda * score - (1 - lambda) * max cosine to the products already picked``; lambda = 1 is the plain ranking
(score desc, ties by product_id asc, as relevance.evaluation.ranking), lower lambdas trade relevance for variety. The
score is the model's calibrated probability (in [0, 1], like a cosine), the similarity the cosine of the model's
product embeddings."""

from __future__ import annotations

import numpy as np

# purity: no pyspark torch transformers
from relevance.evaluation.ranking import rank_query

DEFAULT_LAMBDAS = (1.0, 0.9, 0.8, 0.7, 0.5)


def mmr_order(product_ids: list[str], scores: np.ndarray, vectors: np.ndarray, lam: float,
              depth: int | None = None) -> np.ndarray:
    """Indices of the candidates in MMR order, the first `depth` (None: all) picked greedily and the rest in plain
    score order. `vectors` are the candidates' embeddings (rows, any norm: they are normalized here). Ties go to the
    earlier candidate of the plain ranking, so the order is deterministic."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"MMR lambda must be in [0, 1], got {lam}")
    base = rank_query(product_ids, np.asarray(scores, dtype=float).tolist())
    n = len(base)
    depth = n if depth is None else min(depth, n)
    if lam == 1.0 or n < 2:
        return base
    relevance = np.nan_to_num(np.asarray(scores, dtype=float)[base], nan=-np.inf)
    unit = np.asarray(vectors, dtype=np.float64)[base]
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    picked: list[int] = []
    closest = np.full(n, -np.inf)  # max cosine of each candidate to the picked ones
    free = np.ones(n, dtype=bool)
    for _ in range(depth):
        redundancy = np.where(np.isfinite(closest), closest, 0.0)
        value = np.where(free, lam * relevance - (1.0 - lam) * redundancy, -np.inf)
        best = int(np.argmax(value))  # the first maximum: the earlier in plain order
        picked.append(best)
        free[best] = False
        closest = np.maximum(closest, similarity[best])
    rest = [i for i in range(n) if free[i]]
    return base[np.array(picked + rest, dtype=np.intp)]
