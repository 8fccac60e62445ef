"""The diversity audit's rows: concentration of each system's top k and, on multi-intent queries, alpha-nDCG@k and
IA-nDCG@k (relevance.evaluation.diversity), per query and per segment with bootstrap CIs; and the trade-off of
maximal marginal relevance (relevance.evaluation.mmr) at a few lambdas.

Pure pandas (no Spark, no I/O): the audit hands in the judged evaluation (relevance.evaluation.audit_rows) and the
candidates' facets (product_facets of their catalog rows)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

# purity: no pyspark torch transformers
from relevance.evaluation.audit_rows import (
    MODEL,
    QUERY_SEGMENT,
    AuditSettings,
    JudgedEvaluation,
    mean_rows,
    per_query_metrics,
)
from relevance.evaluation.diversity import concentration_at_k, per_query_intent_metrics
from relevance.evaluation.mmr import mmr_order
from relevance.evaluation.ranking import gain, rank_query

FACETS = ("brand", "category", "product_type")
DIVERSITY_PREFIXES = ("distinct_", "top_brand_share@", "brand_entropy@", "alpha_ndcg@", "ia_ndcg@")
MMR_PREFIX = "model_mmr_lambda="
MMR_SYSTEM = MMR_PREFIX + "{:g}"


@dataclass(frozen=True)
class DiversitySettings:
    """k of the top; the facet a relevant product's intent is (product_type by default); alpha of alpha-nDCG."""

    k: int = 10
    intent: str = "product_type"
    alpha: float = 0.5

    def definition(self, metric: str, scope: str) -> str:
        top = f"top {self.k} by score desc, ties by product_id asc"
        texts = {
            "distinct_brands": f"distinct non-empty brands in the {top}",
            "distinct_categories": f"distinct top-level categories (first level of the category path) in the {top}",
            "distinct_types": f"distinct product types (the whole category path) in the {top}",
            "top_brand_share": f"count of the most frequent brand / products with a brand, in the {top}",
            "brand_entropy": f"Shannon entropy (bits) of the brand counts in the {top}",
            "alpha_ndcg": (f"alpha-nDCG (alpha={self.alpha}, Clarke et al. 2008): intent of a relevant judged product "
                           f"= its {self.intent}; gain sum_i J(d,i)(1-alpha)^(# of intent i ranked above); greedy "
                           f"ideal over the judged candidates (ndeval); queries whose relevant products span 2+ "
                           f"intents"),
            "ia_ndcg": (f"intent-aware nDCG (Agrawal et al. 2009): mean over the query's intents ({self.intent} of "
                        f"the relevant judged products, uniform weights) of nDCG counting only that intent's "
                        f"relevant products; queries whose relevant products span 2+ intents"),
        }
        return f"{texts[metric.split('@')[0]]}; queries: {scope}"


def product_facets(products: pd.DataFrame) -> pd.DataFrame:
    """(product_id, brand, category, product_type) from catalog rows (product_id, brand, category path): the
    category is the path's first level, the product type the whole path (its leaf names it); empty when missing."""
    path = products.category.fillna("").astype(str)
    levels = path.str.split(">")
    return pd.DataFrame({
        "product_id": products.product_id.astype(str),
        "brand": products.brand.fillna("").astype(str).str.strip(),
        "category": levels.str[0].fillna("").str.strip(),
        "product_type": levels.apply(lambda parts: " > ".join(p.strip() for p in parts if p.strip())),
    })


def ranked_tops(candidates: pd.DataFrame, scores: np.ndarray, k: int) -> pd.DataFrame:
    """The top k of each query's candidates by `scores` (aligned with `candidates`), with a `rank` column."""
    frame = candidates.assign(score=np.asarray(scores, dtype=float))
    tops = []
    for _, group in frame.groupby("query_norm", sort=True):
        order = rank_query(group.product_id.tolist(), group.score.to_numpy(float))[:k]
        tops.append(group.iloc[order].assign(rank=np.arange(1, len(order) + 1)))
    return pd.concat(tops, ignore_index=True) if tops else frame.assign(rank=pd.Series(dtype=int))


def per_query_diversity(candidates: pd.DataFrame, scores: np.ndarray, judged: pd.DataFrame,
                        settings: AuditSettings, diversity: DiversitySettings) -> pd.DataFrame:
    """One row per query of `candidates` (query_norm, product_id and the FACETS columns): the concentration of its
    top k by `scores` and, for multi-intent queries, alpha-nDCG@k and IA-nDCG@k against `judged` (query_norm,
    product_id, grade)."""
    k = diversity.k
    tops = ranked_tops(candidates, scores, k)
    concentration = pd.DataFrame([{"query_norm": query, **concentration_at_k(top, k)}
                                  for query, top in tops.groupby("query_norm", sort=True)])
    if concentration.empty:
        return concentration
    graded = candidates[["query_norm", "product_id", diversity.intent]].merge(
        judged[["query_norm", "product_id", "grade"]].drop_duplicates(["query_norm", "product_id"]),
        on=["query_norm", "product_id"], how="left")
    grades = graded.grade.to_numpy(float)
    intents = per_query_intent_metrics(pd.DataFrame({
        "query_norm": graded.query_norm, "product_id": graded.product_id,
        "score": pd.Series(np.asarray(scores, dtype=float)), "intent": graded[diversity.intent].fillna(""),
        "gain": np.nan_to_num(gain(grades, settings.gain), nan=0.0),
        "relevant": (np.nan_to_num(grades, nan=-1.0) >= settings.relevant_min_grade)
        & (graded[diversity.intent].fillna("") != "").to_numpy(),
    }), k, diversity.alpha)
    renamed = {f"{name}@k": f"{name}@{k}" for name in ("distinct_brand", "distinct_category", "distinct_product_type",
                                                       "top_brand_share", "brand_entropy", "alpha_ndcg", "ia_ndcg")}
    frame = concentration.merge(intents, on="query_norm", how="left").rename(columns=renamed)
    return frame.rename(columns={f"distinct_brand@{k}": f"distinct_brands@{k}",
                                 f"distinct_category@{k}": f"distinct_categories@{k}",
                                 f"distinct_product_type@{k}": f"distinct_types@{k}"})


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith((*DIVERSITY_PREFIXES, "ndcg@"))]


def summary_rows(per_query: pd.DataFrame, system: str, segments: dict[str, set[str]], settings: AuditSettings,
                 describe: Callable[[str], str]) -> list[dict]:
    """Mean of each metric per segment with its bootstrap CI (queries resampled), skipping NaN (queries where the
    metric is undefined) and empty segments."""
    columns = metric_columns(per_query)
    return [row for segment, queries in segments.items()
            for row in mean_rows(per_query[per_query.query_norm.isin(queries)], columns, system, segment, settings,
                                 describe)]


def diversity_audit(evaluation: JudgedEvaluation, facets: pd.DataFrame, settings: AuditSettings,
                    diversity: DiversitySettings) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The diversity rows of every system of the judged evaluation (per segment, and the model's per query as
    `query=<q>` segments) and each system's per-query frame (for the report)."""
    candidates = evaluation.candidates[["query_norm", "product_id"]].merge(facets, on="product_id", how="left")
    candidates[list(FACETS)] = candidates[list(FACETS)].fillna("")
    rows: list[dict] = []
    per_system: dict[str, pd.DataFrame] = {}
    describe = lambda metric: diversity.definition(metric, settings.scope)  # noqa: E731
    for system, scores in evaluation.systems.items():
        per_query = per_query_diversity(candidates, scores, evaluation.judged, settings, diversity)
        per_system[system] = per_query
        rows += summary_rows(per_query, system, evaluation.segments, settings, describe)
    model = per_system.get(MODEL)
    if model is not None:
        for record in model.to_dict("records"):
            for column in metric_columns(model):
                if not np.isnan(record[column]):
                    rows.append({"system": MODEL, "segment": f"{QUERY_SEGMENT}{record['query_norm']}",
                                 "metric": column, "k": int(column.split("@")[1]), "value": float(record[column]),
                                 "support": 1, "definition": describe(column)})
    return pd.DataFrame(rows), per_system


def most_concentrated(per_query: pd.DataFrame, tops: pd.DataFrame, k: int, limit: int = 10) -> pd.DataFrame:
    """The `limit` queries whose top k has the largest top-brand share (then the fewest brands), with their top
    products (rank, product_id, brand, product_type): what the report lists."""
    share, brands = f"top_brand_share@{k}", f"distinct_brands@{k}"
    worst = (per_query.dropna(subset=[share]).sort_values([share, brands, "query_norm"], ascending=[False, True, True])
             .head(limit))
    return worst[["query_norm", share, brands]].merge(tops, on="query_norm").sort_values(
        [share, brands, "query_norm", "rank"], ascending=[False, True, True, True])


# ----------------------------------------------------------------------------- the MMR trade-off


def mmr_scores(candidates: pd.DataFrame, scores: np.ndarray, vectors: np.ndarray, lam: float) -> np.ndarray:
    """Scores aligned with `candidates` (query_norm, product_id) that rank each query in its MMR order at `lam`
    (relevance.evaluation.mmr over `vectors`, aligned with `candidates`): n - position within the query."""
    out = np.zeros(len(candidates))
    scores = np.asarray(scores, dtype=float)
    for _, where in candidates.reset_index(drop=True).groupby("query_norm", sort=True).indices.items():
        order = mmr_order(candidates.product_id.to_numpy()[where].tolist(), scores[where], vectors[where], lam)
        out[where[order]] = len(where) - np.arange(len(where))
    return out


def mmr_tradeoff(evaluation: JudgedEvaluation, facets: pd.DataFrame, vectors: np.ndarray, settings: AuditSettings,
                 diversity: DiversitySettings, lambdas: tuple[float, ...]) -> pd.DataFrame:
    """Rows of the model re-ranked by MMR at each lambda (system `model_mmr_lambda=<l>`, segment `all`): nDCG@k,
    alpha-nDCG@k, the top brand's share and distinct brands, each with its bootstrap CI, so the price of variety
    in relevance is in view. `vectors` are the candidates' product embeddings, aligned with the candidates."""
    k = diversity.k
    candidates = evaluation.candidates[["query_norm", "product_id"]].reset_index(drop=True)
    with_facets = candidates.merge(facets, on="product_id", how="left")
    with_facets[list(FACETS)] = with_facets[list(FACETS)].fillna("")
    everyone = {"all": set(candidates.query_norm)}
    rows: list[dict] = []
    for lam in lambdas:
        scores = mmr_scores(candidates, evaluation.systems[MODEL], vectors, lam)
        relevance = per_query_metrics(candidates, scores, evaluation.judged, settings)[["query", f"ndcg@{k}"]]
        variety = per_query_diversity(with_facets, scores, evaluation.judged, settings, diversity)
        per_query = variety[["query_norm", f"alpha_ndcg@{k}", f"top_brand_share@{k}", f"distinct_brands@{k}"]].merge(
            relevance.rename(columns={"query": "query_norm"}), on="query_norm", how="left")

        def describe(metric: str, lam: float = lam) -> str:
            what = (f"nDCG@{k} (as the judged audit's)" if metric.startswith("ndcg@")
                    else diversity.definition(metric, settings.scope))
            return f"{what}; the model's ranking re-ordered by MMR, lambda={lam:g} (relevance.evaluation.mmr)"

        rows += summary_rows(per_query, MMR_SYSTEM.format(lam), everyone, settings, describe)
    return pd.DataFrame(rows)
