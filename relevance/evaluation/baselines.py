"""The baselines the fine-tuned cross-encoder is audited against, scoring the same candidates.

* ``bm25``: lexical BM25 (bm25s, Lucene variant, k1=1.5, b=0.75, English stop words and
  Snowball stemming) of the normalized query against the product text the model sees,
  with corpus statistics from the whole catalog. The audit uses ``bm25_scores_spark``, which
  computes the corpus statistics and the scores with Spark (tokenizing with bm25s on
  executors), so nothing on the driver grows with the catalog or the candidates;
  ``bm25_scores`` is the same score in memory with bm25s itself. ``bm25_corpus_stats`` freezes the
  corpus statistics for a model version that adds BM25 to its logit (udfs.lexical).
* ``zero_shot``: the base checkpoint without fine-tuning, used the way it was trained (a
  sentence-embedding bi-encoder): cosine of the mean-pooled embeddings of query and
  product text.

Both are pure functions of their inputs; neither reads tables. ``baseline_scores`` gives the audit the
configured ones for its candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np
import pandas as pd
import torch
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from relevance.evaluation.audit_rows import BM25, ZERO_SHOT
from relevance.settings import AuditConfig
from udfs.card import ModelCard
from udfs.lexical import (
    BM25_B,
    BM25_K1,
    Bm25Stats,
    HashedDocFreq,
    bm25_tokens,
    pruning_min_df,
    token_hash,
    token_hashes,
)
from udfs.model import BI_ENCODER, LoadedModel, load_network
from udfs.scorer import score_logits
from udfs.spark_udf import bm25_tokens_udf

# tokens per text of the zero-shot baseline where a caller passes none: the setting's default (audit.zero_shot_max_length)
ZERO_SHOT_MAX_LENGTH: int = AuditConfig.zero_shot_max_length


def bm25_scores(corpus: dict[str, str], queries: Sequence[str], product_ids: Sequence[str]) -> np.ndarray:
    """BM25 score of each (query, product) candidate; `corpus` maps every catalog product id to its text.

    Candidates whose product is missing from the corpus, or whose query has no token, score 0.
    """
    ids = list(corpus)
    index = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene")
    index.index(bm25_tokens([corpus[i] for i in ids]), show_progress=False)
    column = {product_id: n for n, product_id in enumerate(ids)}
    distinct = list(dict.fromkeys(queries))
    per_query = {query: index.get_scores(tokens) if tokens else np.zeros(len(ids))
                 for query, tokens in zip(distinct, bm25_tokens(distinct))}
    return np.array([
        float(per_query[query][column[product_id]]) if product_id in column else 0.0
        for query, product_id in zip(queries, product_ids)
    ])


def _corpus_documents(texts: DataFrame) -> tuple[DataFrame, int, float]:
    """The corpus's (product_id, tokens), its size and mean document length (empty documents count in both)."""
    docs = texts.select("product_id", bm25_tokens_udf("product_text").alias("tokens"))
    n_docs, avgdl = docs.agg(F.count("*"), F.avg(F.size("tokens"))).collect()[0]
    return docs, int(n_docs), float(avgdl or 0.0)


def bm25_corpus_stats(texts: DataFrame, min_df: int = 1, max_tokens: int | None = None) -> Bm25Stats:
    """The frozen BM25 statistics of a corpus, computed with Spark: texts are (product_id, product_text) of the whole
    catalog, one row per product. Tokens in fewer than `min_df` products are left out, and rarer ones still until at
    most `max_tokens` remain (udfs.lexical.pruning_min_df; a left-out token then counts as in min_df - 1 products).
    Only the kept tokens reach the driver, as Arrow, and are hashed there (udfs.lexical.HashedDocFreq): what the
    driver holds grows with `max_tokens`, not with the catalog."""
    docs, n_docs, avgdl = _corpus_documents(texts)
    doc_freq = (docs.select("product_id", F.explode(F.array_distinct("tokens")).alias("term"))
                .groupBy("term").agg(F.count("*").alias("df")))
    floor = max(1, min_df)
    if max_tokens is not None:
        doc_freq = doc_freq.persist(StorageLevel.MEMORY_AND_DISK)
        histogram = {int(row.df): int(row["count"]) for row in doc_freq.groupBy("df").count().collect()}
        floor = pruning_min_df(histogram, floor, max_tokens)
    try:
        kept = doc_freq.where(F.col("df") >= floor).toArrow()
    finally:
        doc_freq.unpersist()
    terms = kept.column("term").to_pylist()
    freqs = kept.column("df").to_numpy()
    del kept
    hashed = HashedDocFreq.from_keys(token_hashes(terms), freqs, lambda colliding: {
        term: int(df) for term, df in zip(terms, freqs) if token_hash(term) in colliding})
    return Bm25Stats(n_docs, avgdl, hashed, floor)


def bm25_scores_spark(texts: DataFrame, candidates: DataFrame) -> DataFrame:
    """BM25 (bm25s's Lucene variant) of candidates, computed with Spark; the same scores as `bm25_scores`.

    texts: (product_id, product_text) of the whole catalog, one row per product (the BM25 corpus);
    candidates: (query_norm, product_id, ...) rows to score.
    Returns candidates' (query_norm, product_id) with a double column `bm25`, one row per distinct candidate pair;
    a candidate whose product is not in the corpus scores 0.0. Only the corpus size and mean document length
    reach the driver.
    """
    pairs = candidates.select("query_norm", "product_id").distinct()
    query_terms = (  # a token repeated in a query counts once per repetition, as in bm25s
        pairs.select("query_norm").distinct()
        .select("query_norm", F.explode(bm25_tokens_udf("query_norm")).alias("term"))
        .groupBy("query_norm", "term").agg(F.count("*").alias("qtf"))
    )
    docs, n_docs, avgdl = _corpus_documents(texts)
    occurrences = (
        docs.select("product_id", F.size("tokens").alias("dl"), F.explode("tokens").alias("term"))
        .join(query_terms.select("term").distinct(), "term", "left_semi")
    )
    doc_freq = F.countDistinct("product_id")
    idf = occurrences.groupBy("term").agg(F.log(1 + (F.lit(n_docs) - doc_freq + 0.5) / (doc_freq + 0.5)).alias("idf"))
    tf = (
        occurrences.join(pairs.select("product_id").distinct(), "product_id", "left_semi")
        .groupBy("product_id", "dl", "term").agg(F.count("*").alias("tf"))
    )
    norm = F.lit(BM25_K1) * (1 - BM25_B + BM25_B * F.col("dl") / F.lit(avgdl))
    scores = (
        pairs.join(query_terms, "query_norm")
        .join(tf, ["product_id", "term"])
        .join(idf, "term")
        .groupBy("query_norm", "product_id")
        .agg(F.sum(F.col("qtf") * F.col("idf") * F.col("tf") / (F.col("tf") + norm)).alias("bm25"))
    )
    return pairs.join(scores, ["query_norm", "product_id"], "left").select(
        "query_norm", "product_id", F.coalesce("bm25", F.lit(0.0)).alias("bm25"))


def base_bi_encoder(base_dir: str | Path, max_length: int = ZERO_SHOT_MAX_LENGTH) -> LoadedModel:
    """The base checkpoint as what it is, a sentence-embedding bi-encoder, uncalibrated (its logit is the cosine)."""
    tokenizer, encoder = load_network(base_dir, "cpu", BI_ENCODER)
    return LoadedModel("zero-shot", tokenizer, encoder.eval(), torch.device("cpu"),
                       ModelCard("zero-shot", kind=BI_ENCODER, max_length=max_length))


def zero_shot_scores(base_dir: str | Path, queries: Sequence[str], texts: Sequence[str],
                     max_length: int = ZERO_SHOT_MAX_LENGTH) -> np.ndarray:
    """Cosine similarity of query and product text under the base checkpoint's sentence embeddings."""
    logits, _ = score_logits(base_bi_encoder(base_dir, max_length), list(queries), list(texts))
    return logits


def baseline_scores(names: Sequence[str], texts: DataFrame, candidates: pd.DataFrame,
                    base_dir: str | Path | None = None, max_length: int = ZERO_SHOT_MAX_LENGTH) -> dict[str, np.ndarray]:
    """Scores of the baselines `names` (audit.baselines) for the (judged, so bounded) candidates, aligned with them.

    `texts` (product_id, product_text) of the whole catalog are BM25's corpus, which stays in Spark; `base_dir` is the
    base checkpoint `zero_shot` uses (needed only then), with `max_length` tokens per text."""
    unknown = set(names) - {BM25, ZERO_SHOT}
    if unknown:
        raise ValueError(f"audit.baselines: unknown {sorted(unknown)}; expected {BM25!r} and/or {ZERO_SHOT!r}")
    scores = {}
    if BM25 in names:  # corpus statistics and scores computed by Spark; the candidates' scores come back
        keys = candidates[["query_norm", "product_id"]]
        bm25 = bm25_scores_spark(texts, texts.sparkSession.createDataFrame(keys)).toPandas()
        scores[BM25] = keys.merge(bm25, on=["query_norm", "product_id"], how="left").bm25.to_numpy(dtype=float)
    if ZERO_SHOT in names:
        if base_dir is None:
            raise ValueError(f"the {ZERO_SHOT!r} baseline needs the base checkpoint (base_dir)")
        scores[ZERO_SHOT] = zero_shot_scores(base_dir, candidates.query_norm.tolist(), candidates.product_text.tolist(),
                                             max_length)
    return scores
