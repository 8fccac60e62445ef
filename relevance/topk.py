"""Exact top-k by dot product of a query matrix against blocks of product vectors, in numpy (no Spark).

A task of the catalog retrieval (relevance.retrieval) holds every audited query's vector and sees its share of the
catalog as Arrow batches; `RunningTopK.add` folds each batch into the running top-k of every query, so a task's
memory is the queries' vectors, their top-k and one (query block x batch) score matrix, whatever the catalog's size.

Exact, in double: the float32 matrix product only selects candidates, those within SELECTION_MARGIN of a query's k-th
best (of this batch, or so far) are rescored in float64 and the top-k kept by (score desc, product_id asc). A float32
dot product of unit vectors of a few hundred dimensions is within about 1e-6 of the double one, so no product of the
exact top-k is left out by the selection (the margin is 100x that).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# purity: no pyspark torch transformers

SELECTION_MARGIN = 1e-4


def top_k_rows(rows: np.ndarray, scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The positions of the first k entries of each row, by score desc then id asc (entries of a row in any order)."""
    order = np.lexsort((ids, -scores, rows))
    sorted_rows = rows[order]
    starts = np.searchsorted(sorted_rows, sorted_rows, side="left")
    return order[np.arange(len(order)) - starts < k]


def exact_dots(q64: np.ndarray, p32: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """The float64 dot products of the (row, col) pairs, gathered `chunk` pairs at a time (bounded memory)."""
    out = np.empty(len(rows))
    for at in range(0, len(rows), chunk):
        r, c = rows[at:at + chunk], cols[at:at + chunk]
        out[at:at + chunk] = np.einsum("ij,ij->i", q64[r], p32[c].astype(np.float64))
    return out


class RunningTopK:
    """The exact top-k products of each of `queries` (n x d, L2-normalized or not: the dot product is the score) over
    the batches `add`ed so far."""

    def __init__(self, queries: np.ndarray, k: int, query_block: int = 1024) -> None:
        if k < 1 or query_block < 1:
            raise ValueError("k and query_block must be >= 1")
        self.q32 = np.ascontiguousarray(queries, dtype=np.float32)
        self.q64 = self.q32.astype(np.float64)
        self.k, self.block = int(k), int(query_block)
        n = len(self.q32)
        self.scores = np.full((n, self.k), -np.inf)  # each row sorted desc; -inf: an empty slot
        self.ids = np.full((n, self.k), "", dtype=object)
        self.products = 0
        self.rescored = 0  # candidates rescored in float64 (the selection's work)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Fold a batch of products (ids, and their vectors as a b x d matrix) into every query's top-k."""
        if len(ids) == 0:
            return
        p32 = np.ascontiguousarray(vectors, dtype=np.float32)
        if p32.ndim != 2 or p32.shape[1] != self.q32.shape[1]:
            raise ValueError(f"product vectors of shape {p32.shape} do not match queries of dimension "
                             f"{self.q32.shape[1]}")
        ids = np.asarray(ids, dtype=object)
        self.products += len(ids)
        b = len(ids)
        for start in range(0, len(self.q32), self.block):
            stop = min(start + self.block, len(self.q32))
            s = self.q32[start:stop] @ p32.T  # (block x b) float32
            floor = self.scores[start:stop, -1]  # each query's k-th best so far
            if np.isfinite(floor).all():  # the usual case after the first batch: no partial sort needed
                cut = floor - SELECTION_MARGIN
            else:
                kth = np.partition(s, b - self.k, axis=1)[:, b - self.k] if b > self.k else s.min(axis=1)
                cut = np.maximum(kth.astype(np.float64), floor) - SELECTION_MARGIN
            rows, cols = np.nonzero(s >= cut[:, None])
            if len(rows) == 0:
                continue
            exact = exact_dots(self.q64, p32, start + rows, cols)
            self.rescored += len(rows)
            self._merge(start, stop, rows, exact, ids[cols])

    def _merge(self, start: int, stop: int, rows: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> None:
        held = self.scores[start:stop]
        filled = np.isfinite(held)
        held_rows = np.nonzero(filled)[0]
        all_rows = np.concatenate([held_rows, rows])
        all_scores = np.concatenate([held[filled], scores])
        all_ids = np.concatenate([self.ids[start:stop][filled], ids])
        keep = top_k_rows(all_rows, all_scores, all_ids, self.k)  # in (row, score desc, id) order
        kept_rows = all_rows[keep]
        slot = np.arange(len(keep)) - np.searchsorted(kept_rows, kept_rows, side="left")
        new_scores = np.full_like(held, -np.inf)
        new_ids = np.full(held.shape, "", dtype=object)
        new_scores[kept_rows, slot] = all_scores[keep]
        new_ids[kept_rows, slot] = all_ids[keep]
        self.scores[start:stop], self.ids[start:stop] = new_scores, new_ids

    def results(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query index, product id, score) of every filled slot, by query then rank."""
        query, slot = np.nonzero(np.isfinite(self.scores))
        return query.astype(np.int64), self.ids[query, slot], self.scores[query, slot]

    def result_frames(self, rows_per_frame: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`results` in pieces of at most `rows_per_frame` rows."""
        query, ids, scores = self.results()
        for start in range(0, len(query), rows_per_frame):
            stop = start + rows_per_frame
            yield query[start:stop], ids[start:stop], scores[start:stop]


def brute_force_top_k(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference: every score in float64, sorted by (score desc, id asc) per query; (query, id, score)."""
    scores = np.asarray(queries, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64).T
    n, m = scores.shape
    rows = np.repeat(np.arange(n), m)
    flat_ids = np.tile(np.asarray(ids, dtype=object), n)
    keep = top_k_rows(rows, scores.ravel(), flat_ids, k)
    return rows[keep], flat_ids[keep], scores.ravel()[keep]
