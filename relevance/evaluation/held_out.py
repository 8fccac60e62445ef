"""The judged candidates an audit evaluates: every scored candidate of the day's judged queries, restricted to the
queries none of the audited models was trained or tuned on, brought to the driver within a bound."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from relevance.frames import whole_queries_up_to
from relevance.pairs import classify_judgments
from relevance.settings import LabelScheme


def judged_candidates(relevance: DataFrame, pairs: DataFrame, catalog: DataFrame, texts: DataFrame,
                      judgments: DataFrame, scheme: LabelScheme | None) -> tuple[DataFrame, DataFrame]:
    """(candidates, judged) of the day's judged queries: every scored candidate of each judged
    query with its logged position, frequency segment, product text and catalog category. The judgments are the
    ones build_pairs and finetune use (relevance.pairs.classify_judgments: grades in the label scheme, conflicting
    grades of a pair resolved by its declared rule); `texts` are relevance.pairs.catalog_texts of the catalog."""
    usable = classify_judgments(judgments, texts, scheme).where(F.col("reason").isNull())
    judged = usable.select("query_norm", "product_id", F.col("grade").cast("long").alias("grade")).distinct()
    judged = judged.join(F.broadcast(relevance.select("query_norm").distinct()), "query_norm", "left_semi")
    categories = catalog.groupBy("product_id").agg(F.max("category").alias("category"))
    candidates = (
        relevance.join(judged.select("query_norm").distinct(), "query_norm", "left_semi")
        .join(pairs.select("query_norm", "product_id", "mean_position", "segment", "product_text"),
              ["query_norm", "product_id"], "left")
        .join(categories, "product_id", "left")
        .select("query_norm", "product_id", "score", "mean_position", "segment", "product_text", "category")
    )
    return candidates, judged


def held_out_queries(splits: list[dict | None], queries: Iterable[str]) -> tuple[set[str], str]:
    """The queries none of the audited models was trained or tuned on, and a description of that scope.

    `splits` holds each model version's split.json ({"train": [...], "val": [...], "test": [...]}),
    None for a model trained elsewhere; without any, every query counts, and the scope says so.
    """
    queries = set(queries)
    known = [split for split in splits if split]
    if not known:
        return queries, "all judged queries (no model version records a training split)"
    seen = set().union(*(set(split.get("train", [])) | set(split.get("val", [])) for split in known))
    excluded = len(queries & seen)
    return queries - seen, f"judged queries outside the training and validation split of the audited model(s) ({excluded} excluded)"


def held_out_candidates(candidates: DataFrame, judged: DataFrame, splits: list[dict | None], max_pairs: int,
                        seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The candidates and judgments of the held-out judged queries (`held_out_queries`), in pandas, and the scope.

    Only the judged queries' names and the kept candidates reach the driver: past `max_pairs` candidates, whole
    queries are kept in a seeded order (`whole_queries_up_to`) and the scope says how many."""
    judged_queries = {row.query_norm for row in
                      candidates.join(judged, "query_norm", "left_semi").select("query_norm").distinct().collect()}
    queries, scope = held_out_queries(splits, judged_queries)
    chosen = candidates.sparkSession.createDataFrame([(q,) for q in sorted(queries)], "query_norm string")
    held = candidates.join(F.broadcast(chosen), "query_norm", "left_semi")
    if held.count() > max_pairs:
        held = whole_queries_up_to(held, max_pairs, seed)
        kept = held.select("query_norm").distinct().count()
        scope += f"; {kept} of these {len(queries)} queries, chosen by seed, to stay within audit.max_judged_pairs={max_pairs}"
    kept_queries = held.select("query_norm").distinct()
    candidates_frame: pd.DataFrame = held.toPandas()
    judged_frame: pd.DataFrame = judged.join(kept_queries, "query_norm", "left_semi").toPandas()
    candidates_frame = candidates_frame.sort_values(["query_norm", "product_id"], ignore_index=True)
    judged_frame = judged_frame.sort_values(["query_norm", "product_id"], ignore_index=True)
    return candidates_frame, judged_frame, scope
