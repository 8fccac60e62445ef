"""Diversity of the top of a ranking: what it shows (brands, categories, product types) and how many intents it serves.

Pure functions on numpy arrays and pandas DataFrames (no Spark, no I/O). A query's candidates are ranked as in
``relevance.evaluation.ranking`` (score descending, ties by product_id ascending).

Definitions
-----------
* **Concentration at k**, on the top k of a ranking (fewer when fewer were ranked), of the products that carry the
  attribute (an empty or missing brand is not a brand): ``distinct_<attr>@k`` the number of distinct values;
  ``top_brand_share@k`` the most frequent brand's count / the number of products with a brand; ``brand_entropy@k``
  the Shannon entropy of the brand counts in bits (0 when one brand fills the top, log2(k) when all differ).
* **Intent** of a relevant judged product: its product type (or category; the audit's setting). A query is
  **multi-intent** when its relevant judged products span at least two intents; the intent-aware metrics are
  defined for those queries only (NaN otherwise).
* **alpha-nDCG@k** (Clarke et al., SIGIR 2008), binary per intent: J(d, i) = 1 when d is relevant and of intent i.
  The gain at rank r is sum_i J(d_r, i) (1 - alpha)^{c_i}, with c_i the number of products of intent i ranked above
  r; alpha-DCG@k = sum_{r<=k} gain_r / log2(r + 1); divided by the alpha-DCG@k of the greedy ideal ranking of all
  judged products (each step takes the product of the largest gain: what ndeval does). alpha = 0.5 by default.
  Checked against ndeval (ir_measures' pyndeval provider) in tests/test_diversity.py.
* **IA-nDCG@k** (intent-aware nDCG, Agrawal et al., WSDM 2009) = sum_i P(i | q) nDCG@k_i, where nDCG@k_i counts the
  graded gains of intent i's relevant products only (every other product gains 0, the ideal is intent i's own) and
  P(i | q) is uniform over the query's intents. Checked against trec_eval's nDCG@k (pytrec_eval) on per-intent qrels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# purity: no pyspark torch transformers
from relevance.evaluation.ranking import ndcg_at_k, rank_query

DEFAULT_ALPHA = 0.5
CONCENTRATION_ATTRIBUTES = ("brand", "category", "product_type")


def brand_entropy(brands: list[str]) -> float:
    """Shannon entropy in bits of the brand counts (0.0 for no brand or a single one)."""
    if not brands:
        return 0.0
    counts = np.unique(np.asarray(brands, dtype=object), return_counts=True)[1].astype(float)
    shares = counts / counts.sum()
    return float(-(shares * np.log2(shares)).sum()) + 0.0


def concentration_at_k(top: pd.DataFrame, k: int) -> dict[str, float]:
    """The concentration of one ranked top (rows in rank order, columns brand, category, product_type; the first k
    count): distinct values of each, the top brand's share and the brand entropy."""
    head = top.head(k)
    row: dict[str, float] = {"shown@k": float(len(head))}
    for attribute in CONCENTRATION_ATTRIBUTES:
        values = [v for v in head[attribute].tolist() if isinstance(v, str) and v]
        row[f"distinct_{attribute}@k"] = float(len(set(values)))
    brands = [v for v in head["brand"].tolist() if isinstance(v, str) and v]
    row["top_brand_share@k"] = (float(pd.Series(brands).value_counts().iloc[0]) / len(brands)) if brands else np.nan
    row["brand_entropy@k"] = brand_entropy(brands) if brands else np.nan
    return row


def alpha_dcg(ranked_intents: list[str | None], alpha: float, k: int) -> float:
    """alpha-DCG@k of a ranking given each ranked product's intent when relevant (None: not relevant)."""
    seen: dict[str, int] = {}
    total = 0.0
    for rank, intent in enumerate(ranked_intents[:k], start=1):
        if intent is None:
            continue
        total += (1.0 - alpha) ** seen.get(intent, 0) / np.log2(rank + 1.0)
        seen[intent] = seen.get(intent, 0) + 1
    return total


def ideal_alpha_order(relevant_intents: list[str], k: int) -> list[str | None]:
    """The greedy ideal ranking's intents: each step the relevant product with the largest gain, i.e. of the
    intent shown least so far among those with products left (one intent per product)."""
    left = pd.Series(relevant_intents, dtype=object).value_counts().to_dict()
    shown = {intent: 0 for intent in left}
    order: list[str | None] = []
    while len(order) < k and any(left.values()):
        intent = min((i for i, n in left.items() if n), key=lambda i: (shown[i], str(i)))
        order.append(intent)
        shown[intent] += 1
        left[intent] -= 1
    return order


def alpha_ndcg_at_k(ranked_intents: list[str | None], judged_relevant_intents: list[str], k: int,
                    alpha: float = DEFAULT_ALPHA) -> float:
    """alpha-nDCG@k (module docstring); NaN without a relevant judged product."""
    ideal = alpha_dcg(ideal_alpha_order(judged_relevant_intents, k), alpha, k)
    return alpha_dcg(ranked_intents, alpha, k) / ideal if ideal > 0 else np.nan


def intent_aware_ndcg_at_k(ranked_intents: list[str | None], ranked_gains: np.ndarray,
                           judged_relevant: pd.DataFrame, k: int) -> float:
    """IA-nDCG@k with a uniform P(i | q) (module docstring). `ranked_intents` and `ranked_gains` are in rank order;
    `judged_relevant` has one row per relevant judged product (intent, gain)."""
    intents = sorted(judged_relevant.intent.unique())
    if not intents:
        return np.nan
    ranked = np.asarray(ranked_intents, dtype=object)
    values = []
    for intent in intents:
        gains = np.where(ranked == intent, ranked_gains, 0.0)
        values.append(ndcg_at_k(gains, judged_relevant.gain[judged_relevant.intent == intent].to_numpy(float), k))
    return float(np.nanmean(values))


def per_query_intent_metrics(candidates: pd.DataFrame, k: int, alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
    """alpha-nDCG@k, IA-nDCG@k and the number of intents per query of `candidates` (query_norm, product_id, score,
    intent, gain, relevant: one row per ranked candidate; gain 0 and relevant False where unjudged). Judged
    products the ranking lacks are not in `candidates`, so the ideal is the candidates' own (the audit ranks every
    judged candidate). Queries with fewer than two relevant intents get NaN metrics."""
    rows = []
    for query, group in candidates.groupby("query_norm", sort=True):
        order = rank_query(group.product_id.tolist(), group.score.to_numpy(float))
        ranked = group.iloc[order]
        relevant = ranked[ranked.relevant.astype(bool)]
        n_intents = relevant.intent.nunique()
        if n_intents < 2:
            rows.append({"query_norm": query, "intents": n_intents, "alpha_ndcg@k": np.nan, "ia_ndcg@k": np.nan})
            continue
        ranked_intents = [i if r else None for i, r in zip(ranked.intent.tolist(), ranked.relevant.astype(bool))]
        rows.append({
            "query_norm": query, "intents": n_intents,
            "alpha_ndcg@k": alpha_ndcg_at_k(ranked_intents, relevant.intent.tolist(), k, alpha),
            "ia_ndcg@k": intent_aware_ndcg_at_k(ranked_intents, ranked.gain.to_numpy(float),
                                                relevant[["intent", "gain"]], k),
        })
    return pd.DataFrame(rows, columns=["query_norm", "intents", "alpha_ndcg@k", "ia_ndcg@k"])


__all__ = ["CONCENTRATION_ATTRIBUTES", "DEFAULT_ALPHA", "alpha_dcg", "alpha_ndcg_at_k", "brand_entropy",
           "concentration_at_k", "ideal_alpha_order", "intent_aware_ndcg_at_k",
           "per_query_intent_metrics"]
