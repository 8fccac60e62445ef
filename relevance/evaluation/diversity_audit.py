"""The audit's diversity part: the judged candidates' facets from the catalog (Spark, only the candidates' products
reach the driver), the serving bi-encoder's product embeddings for the MMR trade-off, and the rows, report tables
and summary text of relevance.evaluation.diversity_rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from relevance.evaluation.audit_rows import MODEL, AuditSettings, JudgedEvaluation
from relevance.evaluation.diversity_rows import (
    DiversitySettings,
    diversity_audit,
    mmr_tradeoff,
    most_concentrated,
    product_facets,
    ranked_tops,
)
from relevance.settings import DiversityAudit

if TYPE_CHECKING:
    from udfs.model import LoadedModel


@dataclass(frozen=True)
class DiversityPart:
    """The diversity rows (per system and segment, per query for the model, the MMR trade-off), the most concentrated
    queries with their top products (for the report) and the summary line."""

    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    concentrated: pd.DataFrame = field(default_factory=pd.DataFrame)
    note: str = ""


def candidate_facets(catalog: DataFrame, product_ids: list[str]) -> pd.DataFrame:
    """product_facets of the catalog rows of `product_ids` (the judged candidates: bounded by
    audit.max_judged_pairs), with each product's title for the report."""
    wanted = catalog.sparkSession.createDataFrame(pd.DataFrame({"product_id": sorted(set(product_ids))}))
    rows: pd.DataFrame = (catalog.join(F.broadcast(wanted), "product_id")
                          .select("product_id", "title", "brand", "category").dropDuplicates(["product_id"]).toPandas())
    return product_facets(rows).assign(title=rows["title"].fillna("").astype(str).to_numpy())


def product_vectors(model: LoadedModel, texts: list[str]) -> np.ndarray:
    """The serving bi-encoder's embeddings of the candidates' product texts (udfs.scorer.embed_texts: the vectors
    its scores are the cosines of)."""
    from udfs.scorer import embed_texts

    return embed_texts(model, texts)[0]


def diversity_part(evaluation: JudgedEvaluation | None, catalog: DataFrame | None, model: LoadedModel | None,
                   settings: AuditSettings, config: DiversityAudit) -> DiversityPart:
    """The diversity audit of the judged evaluation; empty (with the reason as its note) when it is off or there
    are no judged queries."""
    if not config.enabled:
        return DiversityPart(note="Diversity: off (audit.diversity.enabled=false).")
    if evaluation is None or catalog is None or evaluation.queries == 0:
        return DiversityPart(note="Diversity: no judged queries among the scored pairs; no diversity rows.")
    diversity = DiversitySettings(k=config.k, intent=config.intent, alpha=config.alpha)
    facets = candidate_facets(catalog, evaluation.candidates.product_id.astype(str).tolist())
    rows, per_system = diversity_audit(evaluation, facets.drop(columns="title"), settings, diversity)
    parts, trade = [rows], "no MMR trade-off (audit.diversity.mmr_lambdas is empty)"
    if config.mmr_lambdas and model is not None:
        vectors = product_vectors(model, evaluation.candidates.product_text.astype(str).tolist())
        parts.append(mmr_tradeoff(evaluation, facets.drop(columns="title"), vectors, settings, diversity,
                                  config.mmr_lambdas))
        trade = f"MMR trade-off at lambda {', '.join(f'{x:g}' for x in config.mmr_lambdas)}"
    elif config.mmr_lambdas:
        trade = "no MMR trade-off: the serving version is not a bi-encoder (no product embeddings)"
    tops = ranked_tops(evaluation.candidates[["query_norm", "product_id"]].merge(facets, on="product_id", how="left"),
                       evaluation.systems[MODEL], config.k)
    concentrated = (most_concentrated(per_system[MODEL], tops, config.k, config.report_queries)
                    if config.report_queries and not per_system[MODEL].empty else pd.DataFrame())
    multi = int(per_system[MODEL][f"alpha_ndcg@{config.k}"].notna().sum()) if not per_system[MODEL].empty else 0
    note = (f"Diversity of the top {config.k} on {evaluation.queries} judged queries ({multi} with relevant products "
            f"of 2+ {config.intent.replace('_', ' ')}s: alpha-nDCG and IA-nDCG); {trade}.")
    return DiversityPart(pd.concat([p for p in parts if not p.empty], ignore_index=True), concentrated, note)
