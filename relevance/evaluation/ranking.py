"""Ranking metrics per query: gains, nDCG, precision / recall / judged at k, average precision and reciprocal rank.

Pure functions on numpy arrays and pandas DataFrames (no Spark, no I/O), used by the
audit and by fine-tuning evaluation. Classifier metrics of judged pairs are in
``relevance.evaluation.classifier``, confidence intervals in ``relevance.evaluation.intervals``.

Definitions
-----------
* **Ranking per query**: products ordered by score descending, ties broken by
  ``product_id`` ascending (string order). NaN scores rank after every real score.
  trec_eval (and pytrec_eval / ir_measures' ``pytrec_eval`` provider) breaks ties by docno
  *descending* instead, so on tied scores the two rankings differ: set metrics at k
  (precision, recall, judged) can differ only when a group of tied products straddles
  rank k, order-sensitive ones (nDCG, AP, RR) whenever tied products hold different
  grades. Fed scores that follow our order strictly, trec_eval agrees to 1e-9
  (tests/test_trec_agreement.py).
* **Unjudged** products (ranked but without a judgment) count as non-relevant with gain 0.
* A product is **relevant** when ``grade >= relevant_min_grade``.
* **precision@k** = (# relevant in top k) / k. The denominator is k even when fewer than
  k products were ranked (trec_eval's P@k convention).
* **recall@k** = (# relevant in top k) / (# relevant judged products of the query).
* **judged@k** = (# judged products in top k) / min(k, # ranked): the share of what was
  shown that has a judgment, whatever its grade. Unlike precision@k, the denominator
  shrinks when fewer than k products were ranked, as ir_measures' ``Judged@k`` does
  (trec_eval has no such measure; ir_measures computes it in its own ``judged`` provider).
* **nDCG@k** = DCG@k / IDCG@k with DCG@k = sum_{i=1..k} gain(rank i) / log2(i + 1).
  IDCG@k uses all judged grades of the query, including judged products the model did
  not rank. Gain ``"linear"`` = grade (trec_eval's default), ``"exponential"`` =
  2^grade - 1, or a mapping grade -> gain such as ESCI's {3: 1.0, 2: 0.1, 1: 0.01, 0: 0.0}
  (keys may be ints or their strings; a grade missing from the mapping is a ValueError).
* **AP** = sum over ranks i holding a relevant product of precision@i, divided by the
  number of relevant judged products (trec_eval's MAP; relevant products that were not
  retrieved contribute 0). **RR** = 1 / rank of the first relevant product, 0 if none
  was retrieved.
* Queries with no relevant judged product get NaN for recall@k, AP (``map``) and RR
  (``mrr``), so ``nanmean`` over queries excludes them; trec_eval reports 0 for them and
  averages the 0 in. nDCG@k is NaN when IDCG@k = 0 (no judged product with a positive
  gain) where trec_eval reports 0. precision@k and judged@k are always defined.
* Only queries both ranked and judged are evaluated (trec_eval skips run queries missing
  from the qrels; ir_measures adds 0 rows for qrels queries missing from the run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

# purity: no pyspark torch transformers

GAIN_KINDS = ("linear", "exponential")
# "linear", "exponential" or a mapping grade -> gain (keys int or str, e.g. from YAML).
GainMapping = Mapping[int, float] | Mapping[str, float] | Mapping[int | str, float]
GainSpec = str | GainMapping

__all__ = [
    "GAIN_KINDS",
    "GainMapping",
    "GainSpec",
    "average_precision",
    "dcg_at_k",
    "gain",
    "judged_at_k",
    "ndcg_at_k",
    "per_query_ranking_metrics",
    "precision_at_k",
    "rank_query",
    "recall_at_k",
    "reciprocal_rank",
]


# --------------------------------------------------------------------------- helpers


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _discounts(n: int) -> np.ndarray:
    """1 / log2(i + 1) for ranks i = 1..n."""
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=float))


def _sorted_codes(values: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
    """Integer codes whose order matches the string order of ``values``."""
    codes, _ = pd.factorize(pd.Series(values).astype(str), sort=True)
    return codes


def _ranking_order(group_codes: np.ndarray, product_codes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row order: group ascending, then score descending (NaN last), then product id ascending."""
    scores = np.asarray(scores, dtype=float)
    is_nan = np.isnan(scores)
    neg = np.where(is_nan, 0.0, -scores)
    # np.lexsort sorts by the last key first.
    return np.lexsort((product_codes, neg, is_nan, group_codes))


# --------------------------------------------------------------------------- single-query metrics


def rank_query(product_ids: Sequence[str], scores: Sequence[float]) -> np.ndarray:
    """Indices of ``product_ids`` in ranked order (score desc, then product id asc)."""
    scores_arr = np.asarray(scores, dtype=float)
    if len(product_ids) != len(scores_arr):
        raise ValueError("product_ids and scores must have the same length")
    if len(scores_arr) == 0:
        return np.zeros(0, dtype=np.intp)
    codes = _sorted_codes(product_ids)
    return _ranking_order(np.zeros(len(scores_arr), dtype=np.intp), codes, scores_arr)


def _gain_table(mapping: GainMapping) -> dict[float, float]:
    """Grade -> gain with numeric keys; ``3`` and ``"3"`` are the same grade."""
    table: dict[float, float] = {}
    for key, value in mapping.items():
        try:
            grade = float(key)
        except (TypeError, ValueError):
            raise ValueError(f"gain mapping key {key!r} is not a numeric grade") from None
        g = float(value)
        if not np.isfinite(g):
            raise ValueError(f"gain for grade {key!r} must be finite, got {value!r}")
        if table.get(grade, g) != g:
            raise ValueError(f"gain mapping gives grade {key!r} two different gains")
        table[grade] = g
    return table


def _check_gain(kind: GainSpec) -> None:
    if isinstance(kind, Mapping):
        _gain_table(kind)
    elif kind not in GAIN_KINDS:
        raise ValueError(f"unknown gain kind {kind!r}; expected one of {GAIN_KINDS} or a grade -> gain mapping")


def gain(grades: np.ndarray, kind: GainSpec = "linear") -> np.ndarray:
    """Gain of each grade: ``linear`` = grade, ``exponential`` = 2^grade - 1, or ``kind[grade]``.

    NaN grades (unjudged) stay NaN. A grade missing from a mapping is a ValueError.
    """
    g = np.asarray(grades, dtype=float)
    if isinstance(kind, Mapping):
        table = _gain_table(kind)
        known = ~np.isnan(g)
        missing = sorted(set(np.unique(g[known]).tolist()) - table.keys())
        if missing:
            shown = int(missing[0]) if float(missing[0]).is_integer() else missing[0]
            raise ValueError(f"grade {shown} has no gain in the gain mapping {dict(kind)!r}")
        keys = np.array(sorted(table), dtype=float)
        values = np.array([table[k] for k in keys], dtype=float)
        out = np.full(g.shape, np.nan)
        out[known] = values[np.searchsorted(keys, g[known])]
        return out
    _check_gain(kind)
    return g if kind == "linear" else np.exp2(g) - 1.0


def dcg_at_k(gains_in_rank_order: np.ndarray, k: int) -> float:
    """DCG@k = sum_{i=1..k} gain_i / log2(i + 1) over the first k ranked gains."""
    k = _check_k(k)
    g = np.asarray(gains_in_rank_order, dtype=float)[:k]
    g = np.nan_to_num(g, nan=0.0)  # unjudged -> gain 0
    return float(np.sum(g * _discounts(len(g))))


def ndcg_at_k(ranked_gains: np.ndarray, judged_gains: np.ndarray, k: int) -> float:
    """nDCG@k; the ideal ranking sorts all judged gains of the query. NaN when IDCG@k = 0."""
    judged = np.asarray(judged_gains, dtype=float)
    judged = judged[~np.isnan(judged)]
    idcg = dcg_at_k(np.sort(judged)[::-1], k)
    if idcg <= 0.0:
        return float("nan")
    return dcg_at_k(ranked_gains, k) / idcg


def precision_at_k(ranked_relevant: np.ndarray, k: int) -> float:
    """(# relevant in top k) / k; the denominator stays k when fewer than k were ranked."""
    k = _check_k(k)
    rel = np.asarray(ranked_relevant, dtype=bool)[:k]
    return float(np.count_nonzero(rel)) / k


def judged_at_k(ranked_judged: np.ndarray, k: int) -> float:
    """(# judged in top k) / min(k, # ranked), as ir_measures' Judged@k; NaN if nothing ranked."""
    k = _check_k(k)
    judged = np.asarray(ranked_judged, dtype=bool)[:k]
    return float(np.count_nonzero(judged)) / len(judged) if len(judged) else float("nan")


def recall_at_k(ranked_relevant: np.ndarray, n_relevant: int, k: int) -> float:
    """(# relevant in top k) / n_relevant; NaN when the query has no relevant judged product."""
    k = _check_k(k)
    if n_relevant <= 0:
        return float("nan")
    rel = np.asarray(ranked_relevant, dtype=bool)[:k]
    return float(np.count_nonzero(rel)) / n_relevant


def average_precision(ranked_relevant: np.ndarray, n_relevant: int) -> float:
    """Average precision of one query's ranking (trec_eval's AP): the sum of precision@i at each relevant rank i,
    divided by n_relevant (NaN if 0). The pooled, threshold-free AP of judged pairs is
    ``pair_metrics.pooled_average_precision``."""
    if n_relevant <= 0:
        return float("nan")
    rel = np.asarray(ranked_relevant, dtype=bool)
    if not rel.any():
        return 0.0
    ranks = np.flatnonzero(rel) + 1
    hits = np.arange(1, len(ranks) + 1)
    return float(np.sum(hits / ranks)) / n_relevant


def reciprocal_rank(ranked_relevant: np.ndarray) -> float:
    """1 / rank of the first relevant product; 0 if none was retrieved."""
    rel = np.asarray(ranked_relevant, dtype=bool)
    if not rel.any():
        return 0.0
    return 1.0 / (int(np.argmax(rel)) + 1)


# --------------------------------------------------------------------------- all queries at once


def _metric_columns(ks: Sequence[int]) -> list[str]:
    cols = ["query", "n_ranked", "n_judged", "n_relevant"]
    for k in ks:
        cols += [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"judged@{k}"]
    return cols + ["map", "mrr"]


def _check_unique(df: pd.DataFrame, name: str) -> None:
    dup = df.duplicated(["query", "product_id"])
    if dup.any():
        first = df.loc[dup, ["query", "product_id"]].iloc[0].tolist()
        raise ValueError(
            f"{name} has {int(dup.sum())} duplicate (query, product_id) rows, e.g. {first}"
        )


def per_query_ranking_metrics(
    ranked: pd.DataFrame,
    judged: pd.DataFrame,
    ks: Sequence[int],
    relevant_min_grade: int,
    gain_kind: GainSpec = "linear",
) -> pd.DataFrame:
    """Ranking metrics per query for queries present in both ``ranked`` and ``judged``.

    ``ranked``: columns query, product_id, score. ``judged``: query, product_id, grade.
    Each (query, product_id) must appear at most once in each frame (ValueError otherwise).
    Returns one row per query (sorted by query) with n_ranked, n_judged, n_relevant,
    precision@k / recall@k / ndcg@k / judged@k for each k, map and mrr (see module
    docstring). ``gain_kind``: "linear", "exponential" or a mapping grade -> gain.
    """
    ks = [_check_k(k) for k in ks]
    _check_gain(gain_kind)
    for df, name, cols in ((ranked, "ranked", ("query", "product_id", "score")),
                           (judged, "judged", ("query", "product_id", "grade"))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{name} is missing columns {missing}")

    queries = pd.Index(pd.unique(ranked["query"])).intersection(pd.Index(pd.unique(judged["query"])))
    queries = queries.sort_values()
    columns = _metric_columns(ks)
    if len(queries) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "query" else float) for c in columns})
    nq = len(queries)

    r = ranked.loc[ranked["query"].isin(queries), ["query", "product_id", "score"]]
    j = judged.loc[judged["query"].isin(queries), ["query", "product_id", "grade"]]
    j = j[j["grade"].notna()]
    _check_unique(r, "ranked")
    _check_unique(j, "judged")

    # --- ranked side: order rows, attach grades, rank within query
    r_q = queries.get_indexer(r["query"])
    r_order = _ranking_order(r_q, _sorted_codes(r["product_id"].to_numpy()), r["score"].to_numpy())
    r = r.iloc[r_order]
    r_q = r_q[r_order]
    grades = r.merge(j, on=["query", "product_id"], how="left")["grade"].to_numpy(dtype=float)

    n_ranked = np.bincount(r_q, minlength=nq)
    starts = np.cumsum(n_ranked) - n_ranked
    rank = np.arange(len(r_q)) - starts[r_q] + 1
    judged_mask = ~np.isnan(grades)
    rel = judged_mask & (np.where(judged_mask, grades, -np.inf) >= relevant_min_grade)
    g = np.where(judged_mask, gain(grades, gain_kind), 0.0)
    disc = 1.0 / np.log2(rank + 1.0)

    # --- judged side: counts and ideal ordering
    j_q = queries.get_indexer(j["query"])
    j_grades = j["grade"].to_numpy(dtype=float)
    n_judged = np.bincount(j_q, minlength=nq)
    n_relevant = np.bincount(j_q, weights=(j_grades >= relevant_min_grade), minlength=nq)
    j_gain = gain(j_grades, gain_kind)
    ideal_order = np.lexsort((-j_gain, j_q))
    j_q_ideal = j_q[ideal_order]
    j_starts = np.cumsum(n_judged) - n_judged
    ideal_rank = np.arange(len(j_q_ideal)) - j_starts[j_q_ideal] + 1
    ideal_weighted = j_gain[ideal_order] / np.log2(ideal_rank + 1.0)

    has_rel = n_relevant > 0
    safe_n_rel = np.where(has_rel, n_relevant, 1.0)
    out: dict[str, object] = {
        "query": queries.to_numpy(),
        "n_ranked": n_ranked,
        "n_judged": n_judged,
        "n_relevant": n_relevant.astype(np.int64),
    }
    for k in ks:
        top = rank <= k
        hits = np.bincount(r_q, weights=rel & top, minlength=nq)
        dcg = np.bincount(r_q, weights=g * disc * top, minlength=nq)
        idcg = np.bincount(j_q_ideal, weights=ideal_weighted * (ideal_rank <= k), minlength=nq)
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = np.where(has_rel, hits / safe_n_rel, np.nan)
        out[f"ndcg@{k}"] = np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan)
        shown = np.bincount(r_q, weights=judged_mask & top, minlength=nq)
        out[f"judged@{k}"] = shown / np.minimum(n_ranked, k)  # n_ranked >= 1 for every query here

    # AP: precision at each relevant rank = (relevant so far in the query) / rank
    cum_rel = np.cumsum(rel)
    rel_before_query = np.concatenate(([0], cum_rel))[starts]
    hits_so_far = cum_rel - rel_before_query[r_q]
    ap_sum = np.bincount(r_q, weights=np.where(rel, hits_so_far / rank, 0.0), minlength=nq)
    out["map"] = np.where(has_rel, ap_sum / safe_n_rel, np.nan)

    first_rel = np.full(nq, np.inf)
    np.minimum.at(first_rel, r_q[rel], rank[rel].astype(float))
    out["mrr"] = np.where(has_rel, 1.0 / first_rel, np.nan)  # 1/inf = 0 when none retrieved

    return pd.DataFrame(out)[columns]
