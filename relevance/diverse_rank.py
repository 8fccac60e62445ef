"""`rank_diverse` in `relevance`: each query's candidates re-ranked by maximal marginal relevance
(relevance.evaluation.mmr) over the model's product embeddings. Opt-in (`scoring.diverse_lambda`); the audit's MMR
trade-off (relevance.evaluation.diversity_rows) is what a team reads to choose the lambda."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from relevance.embeddings import PRODUCT, text_key
from relevance.evaluation.mmr import mmr_order

RANKS_SCHEMA = "query_norm string, product_id string, rank_diverse long"


def query_ranks(candidates: pd.DataFrame, lam: float, depth: int) -> pd.DataFrame:
    """One query's candidates (product_id, score, vector) -> (query_norm, product_id, rank_diverse), 1 first: the
    first `depth` picked by MMR at `lam`, the rest in score order (ties by product_id, as the audit ranks)."""
    order = mmr_order(candidates["product_id"].astype(str).tolist(), candidates["score"].to_numpy(dtype=float),
                      np.stack(candidates["vector"].to_numpy()), lam, depth)
    ranks = np.empty(len(candidates), dtype=np.int64)
    ranks[order] = np.arange(1, len(candidates) + 1)
    return pd.DataFrame({"query_norm": candidates["query_norm"].to_numpy(),
                         "product_id": candidates["product_id"].to_numpy(), "rank_diverse": ranks})


def scored_candidates(relevance: DataFrame, pairs: DataFrame) -> DataFrame:
    """The day's `relevance` rows (query_norm, product_id, score) with their pair's `product_text`, one per pair."""
    texts = pairs.select("query_norm", "product_id", "product_text").dropDuplicates(["query_norm", "product_id"])
    return (relevance.select("query_norm", "product_id", "score").dropDuplicates(["query_norm", "product_id"])
            .join(texts, ["query_norm", "product_id"]))


def candidate_product_texts(candidates: DataFrame) -> DataFrame:
    """The distinct product texts of `scored_candidates`, as relevance.embeddings.day_texts gives them."""
    texts = candidates.select(F.lit(PRODUCT).alias("kind"), F.col("product_text").alias("text")).distinct()
    return texts.withColumn("text_fingerprint", text_key(F.col("text")))


def with_rank_diverse(relevance: DataFrame, candidates: DataFrame, vectors: DataFrame, lam: float,
                      depth: int) -> DataFrame:
    """`relevance` with `rank_diverse` set from its `scored_candidates` and the product vectors of `vectors` (kind,
    text_fingerprint, vector). A row whose product text has no vector keeps a null rank (the caller counts them)."""
    products = vectors.where(F.col("kind") == PRODUCT).select(F.col("text_fingerprint").alias("_pkey"), "vector")
    with_vectors = (candidates.withColumn("_pkey", text_key(F.col("product_text"))).join(products, "_pkey")
                    .select("query_norm", "product_id", "score", "vector"))
    ranks = with_vectors.groupBy("query_norm").applyInPandas(lambda frame: query_ranks(frame, lam, depth), RANKS_SCHEMA)
    return relevance.drop("rank_diverse").join(ranks, ["query_norm", "product_id"], "left")
