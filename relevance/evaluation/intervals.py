"""Confidence intervals and tests: Wilson score intervals for proportions, query-level percentile bootstraps
and the paired sign-flip randomization test.

Pure functions on numpy arrays (no Spark, no I/O). The bootstrap resamples whole queries: rows
(one per query, or each row's query) are drawn with replacement from one seeded (n_boot, n) index
matrix, drawn in bounded blocks; the interval is the central ``confidence`` percentile range of the
resampled statistic. ``pair_metrics.bootstrap_weight_blocks`` draws the same kind of resample as
row weights, for metrics that take many resamples at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from statistics import NormalDist

import numpy as np
import pandas as pd

# purity: no pyspark torch transformers

__all__ = [
    "BOOTSTRAP_BLOCK_ENTRIES",
    "bootstrap_ci",
    "bootstrap_grouped_ci",
    "bootstrap_mean_ci",
    "paired_randomization_p_value",
    "percentile_interval",
    "wilson_center_half",
    "wilson_interval",
]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n = 0."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    center, half = wilson_center_half(np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64), confidence)
    return float(max(0.0, center - half)), float(min(1.0, center + half))


def wilson_center_half(successes: np.ndarray, n: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
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


def paired_randomization_p_value(differences: np.ndarray, n_permutations: int = 2000, seed: int = 0) -> float:
    """Two-sided sign-flip randomization test of mean(differences) = 0 (paired per query)."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return float("nan")
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_permutations, len(d)))
    permuted = np.abs((signs * d).mean(axis=1))
    return float((1 + np.sum(permuted >= abs(d.mean()) - 1e-15)) / (n_permutations + 1))
