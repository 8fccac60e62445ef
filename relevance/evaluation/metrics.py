"""Offline relevance metrics: ranking metrics, threshold metrics and confidence intervals.

Pure functions on numpy arrays and pandas DataFrames (no Spark, no I/O), used by the
audit job and by fine-tuning evaluation.

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
* Threshold metrics: a product is *predicted* relevant when ``score >= threshold``.
  precision / recall / F-beta are NaN when their denominator is 0.
* Confidence intervals: Wilson score interval for proportions; query-level percentile
  bootstrap (rows = queries resampled with replacement) for everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

GAIN_KINDS = ("linear", "exponential")
# "linear", "exponential" or a mapping grade -> gain (keys int or str, e.g. from YAML).
GainMapping = Mapping[int, float] | Mapping[str, float] | Mapping[int | str, float]
GainSpec = str | GainMapping

__all__ = [
    "ConfusionCounts",
    "average_precision",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "choose_threshold_max_f1",
    "confusion_at_threshold",
    "dcg_at_k",
    "gain",
    "judged_at_k",
    "ndcg_at_k",
    "per_query_ranking_metrics",
    "precision_at_k",
    "rank_query",
    "recall_at_k",
    "reciprocal_rank",
    "wilson_interval",
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
    """Sum of precision@i at each relevant rank i, divided by n_relevant (NaN if 0)."""
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


# --------------------------------------------------------------------------- threshold metrics


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den > 0 else float("nan")


@dataclass(frozen=True)
class ConfusionCounts:
    """Binary confusion counts at one decision threshold."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp); NaN when nothing was predicted relevant."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """tp / (tp + fn); NaN when nothing is relevant."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """F1 = 2 tp / (2 tp + fp + fn); NaN when tp + fp + fn = 0."""
        return self.f_beta(1.0)

    def f_beta(self, beta: float) -> float:
        """(1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp); NaN when tp + fp + fn = 0."""
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta!r}")
        b2 = float(beta) ** 2
        return _ratio((1 + b2) * self.tp, (1 + b2) * self.tp + b2 * self.fn + self.fp)


def confusion_at_threshold(scores: np.ndarray, relevant: np.ndarray, threshold: float) -> ConfusionCounts:
    """Confusion counts when a product is predicted relevant iff ``score >= threshold``."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(relevant, dtype=bool)
    if s.shape != y.shape:
        raise ValueError("scores and relevant must have the same shape")
    pred = s >= threshold  # NaN scores are predicted non-relevant
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    tn = int(np.count_nonzero(~pred & ~y))
    return ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=tn)


def choose_threshold_max_f1(scores: np.ndarray, relevant: np.ndarray) -> float:
    """The score value that, used as ``score >= t``, maximizes F1; ties go to the higher t."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(relevant, dtype=bool)
    if s.shape != y.shape:
        raise ValueError("scores and relevant must have the same shape")
    valid = ~np.isnan(s)
    if not valid.any():
        raise ValueError("choose_threshold_max_f1 needs at least one non-NaN score")
    candidates = np.unique(s[valid])  # ascending
    pos_sorted = np.sort(s[valid & y])
    neg_sorted = np.sort(s[valid & ~y])
    n_pos = int(np.count_nonzero(y))  # includes relevant rows with NaN score (always missed)
    tp = len(pos_sorted) - np.searchsorted(pos_sorted, candidates, side="left")
    fp = len(neg_sorted) - np.searchsorted(neg_sorted, candidates, side="left")
    fn = n_pos - tp
    f1 = 2.0 * tp / (2.0 * tp + fp + fn)  # denominator >= 1: every candidate predicts a row
    best = np.flatnonzero(f1 == f1.max())[-1]  # highest threshold among ties
    return float(candidates[best])


# --------------------------------------------------------------------------- confidence intervals


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n = 0."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    center, half = _wilson_center_half(np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64), confidence)
    return float(max(0.0, center - half)), float(min(1.0, center + half))


def _wilson_center_half(successes: np.ndarray, n: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-width of the Wilson score interval (element-wise)."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    z2n = z * z / n
    center = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return center, half


def _prepare_rows(groups: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Rows to resample: 1-D metric values with NaNs dropped, or a 2-D (n_queries, m) array."""
    data = np.asarray(groups, dtype=float)
    if data.ndim == 1:
        return data[~np.isnan(data)]
    if data.ndim != 2:
        raise ValueError(f"bootstrap input must be 1-D or 2-D, got shape {data.shape}")
    return data


# Resample indices are drawn in blocks of at most this many entries, so that memory stays bounded however many
# queries there are (one block holds every resample when n_boot x n_queries is below it).
BOOTSTRAP_BLOCK_ENTRIES = 2_000_000


def _bootstrap_index_blocks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The (n_boot, n) resample index matrix of `seed`, yielded as consecutive blocks of rows."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    rows_per_block = max(1, BOOTSTRAP_BLOCK_ENTRIES // max(n, 1))
    for start in range(0, n_boot, rows_per_block):
        yield rng.integers(0, n, size=(min(rows_per_block, n_boot - start), n))


def percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` interval of resampled statistics (NaNs left out; NaN, NaN when none is left)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    stats = np.asarray(stats, dtype=float)
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    groups: Sequence[np.ndarray] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    vectorized: bool = False,
) -> tuple[float, float]:
    """Query-level percentile bootstrap CI of ``statistic``.

    ``groups`` is one row per query: a 1-D array of per-query metric values (NaNs are
    dropped first) or a 2-D array such as columns [tp, fp, fn]. Rows are resampled with
    replacement via one (n_boot, n) index matrix; ``statistic`` receives each resample
    with the input's shape. With ``vectorized=True`` it is called once on the stacked
    (n_boot, n[, m]) array and must return n_boot values (e.g. ``lambda a: a.mean(axis=1)``).
    Resamples whose statistic is NaN are ignored; returns (nan, nan) with no usable rows.
    """
    data = _prepare_rows(groups)
    n = data.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    parts = []
    for block in _bootstrap_index_blocks(n, n_boot, seed):
        if vectorized:
            part = np.asarray(statistic(data[block]), dtype=float)
            if part.shape != (len(block),):
                raise ValueError(f"vectorized statistic must return one value per resample ({len(block)}), "
                                 f"got shape {part.shape}")
        else:
            part = np.fromiter((statistic(data[row]) for row in block), dtype=float, count=len(block))
        parts.append(part)
    return percentile_interval(np.concatenate(parts), confidence)


def bootstrap_mean_ci(
    values: np.ndarray, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-query values (NaNs dropped), fully vectorized.

    Uses the same resamples as ``bootstrap_ci(values, np.mean, n_boot, confidence, seed)``.
    """
    data = _prepare_rows(np.asarray(values, dtype=float).ravel())
    if len(data) == 0:
        return float("nan"), float("nan")
    means = [data[block].mean(axis=1) for block in _bootstrap_index_blocks(len(data), n_boot, seed)]
    return percentile_interval(np.concatenate(means), confidence)


# ----------------------------------------------------------------------------- calibration


def brier_score(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Mean squared error between predicted probability and the 0/1 outcome."""
    scores, outcome = np.asarray(scores, dtype=float), np.asarray(relevant, dtype=float)
    return float(np.mean((scores - outcome) ** 2)) if len(scores) else float("nan")


def calibration_bins(scores: np.ndarray, relevant: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Equal-mass reliability bins (sorted by score): count, mean score, observed rate per bin."""
    scores, outcome = np.asarray(scores, dtype=float), np.asarray(relevant, dtype=float)
    order = np.argsort(scores, kind="stable")
    bins = np.array_split(order, min(n_bins, len(scores))) if len(scores) else []
    return pd.DataFrame(
        [{"bin": i, "count": len(b), "mean_score": scores[b].mean(), "observed_rate": outcome[b].mean()}
         for i, b in enumerate(bins) if len(b)]
    )


def expected_calibration_error(scores: np.ndarray, relevant: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-mass bins: count-weighted mean |observed rate - mean score|."""
    bins = calibration_bins(scores, relevant, n_bins)
    if bins.empty:
        return float("nan")
    return float(np.sum(bins["count"] * (bins.observed_rate - bins.mean_score).abs()) / bins["count"].sum())


def bootstrap_grouped_ci(
    groups: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI resampling whole groups (queries) of rows.

    ``groups`` gives each row's group; ``statistic`` receives the row indices of one
    resample (rows of a group drawn twice appear twice) and returns a float.
    """
    codes, _ = pd.factorize(pd.Series(groups), sort=True)
    if len(codes) == 0:
        return float("nan"), float("nan")
    members = pd.Series(np.arange(len(codes))).groupby(codes).apply(np.asarray).tolist()
    stats = [statistic(np.concatenate([members[g] for g in row]))
             for block in _bootstrap_index_blocks(len(members), n_boot, seed) for row in block]
    return percentile_interval(np.array(stats, dtype=float), confidence)


def ranked_by_score(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The order that sorts `scores` high to low (stable), the sorted scores, and the mask of the last position of
    each distinct score: the cuts where a threshold can fall (tied scores are never split by a threshold)."""
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    return order, ordered, np.r_[ordered[1:] != ordered[:-1], True]


def threshold_for_precision(
    scores: np.ndarray, relevant: np.ndarray, target: float, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Lowest threshold whose Wilson lower bound on precision reaches `target`.

    Returns (threshold, precision, recall) at that threshold (predicted relevant when
    score >= threshold), or (nan, nan, nan) when no threshold qualifies.
    """
    scores, relevant = np.asarray(scores, dtype=float), np.asarray(relevant, dtype=bool)
    order, sorted_scores, last_of_value = ranked_by_score(scores)
    hits = relevant[order]
    tp = np.cumsum(hits)[last_of_value]
    predicted = (np.flatnonzero(last_of_value) + 1).astype(float)
    thresholds = sorted_scores[last_of_value]
    center, half = _wilson_center_half(tp.astype(float), predicted, confidence)
    lower, p = center - half, tp / predicted
    qualifying = np.flatnonzero(lower >= target)
    if len(qualifying) == 0 or relevant.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    best = qualifying[-1]  # thresholds descend, so the last qualifying cut is the lowest threshold
    return float(thresholds[best]), float(p[best]), float(tp[best] / relevant.sum())


def paired_randomization_p_value(differences: np.ndarray, n_permutations: int = 2000, seed: int = 0) -> float:
    """Two-sided sign-flip randomization test of mean(differences) = 0 (paired per query)."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return float("nan")
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_permutations, len(d)))
    permuted = np.abs((signs * d).mean(axis=1))
    return float((1 + np.sum(permuted >= abs(d.mean()) - 1e-15)) / (n_permutations + 1))
