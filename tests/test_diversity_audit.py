"""The audit's diversity part on a demo day (issue 35 items 1-2): a tiny bi-encoder version scores the day, the
audit job writes the diversity rows of every system, the MMR trade-off and the report's sections; the rows agree
with a pandas recount of the written tables."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from jobs import audit, build_pairs, score
from jobs.core.config import set_path
from tests.conftest import DEMO_DS, copy_warehouse, run, table

LAMBDAS = [1.0, 0.5]


@pytest.fixture(scope="module")
def audited(spark, demo_warehouse, tmp_path_factory) -> dict:
    from tests.test_embeddings import BI_VERSION, make_tiny_bi_encoder_version

    models = tmp_path_factory.mktemp("diversity_models")
    make_tiny_bi_encoder_version(models)
    cfg = copy.deepcopy(copy_warehouse(demo_warehouse, tmp_path_factory.mktemp("diversity") / "warehouse"))
    for key, value in {"model.models_root": str(models), "model.version": BI_VERSION, "audit.baselines": [],
                       "audit.bootstrap_samples": 20, "audit.retrieval.enabled": False,
                       "audit.diversity.mmr_lambdas": LAMBDAS, "audit.diversity.report_queries": 3}.items():
        set_path(cfg, key, value)
    for module in (build_pairs, score, audit):
        result = run(spark, cfg, module)
    return {"cfg": cfg, "summary": result.summary}


def test_diversity_rows_agree_with_a_recount_of_the_tables(audited):
    cfg = audited["cfg"]
    rows = table(cfg, "relevance_audit")
    rows = rows[rows.ds == DEMO_DS]
    model = rows[(rows.system == "model") & (rows.segment == "all")].set_index("metric")
    assert {"distinct_brands@10", "top_brand_share@10", "brand_entropy@10", "distinct_types@10",
            "alpha_ndcg@10", "ia_ndcg@10"} <= set(model.index)
    assert set(rows[rows.metric == "top_brand_share@10"].system) >= {"model", "logged_position"}
    # recount: the model's top 10 of each audited query (per-query rows name them) by score, ties by product_id
    per_query = rows[(rows.system == "model") & rows.segment.str.startswith("query=")
                     & (rows.metric == "top_brand_share@10")]
    queries = set(per_query.segment.str[len("query="):])
    relevance = table(cfg, "relevance")
    relevance = relevance[(relevance.ds == DEMO_DS) & relevance.query_norm.isin(queries)]
    brands = table(cfg, "catalog")[["product_id", "brand"]].drop_duplicates("product_id")
    tops = (relevance.merge(brands, on="product_id").sort_values(["query_norm", "score", "product_id"],
                                                                   ascending=[True, False, True])
            .groupby("query_norm").head(10))
    shares = tops[tops.brand.fillna("") != ""].groupby("query_norm").brand.agg(
        lambda b: b.value_counts().iloc[0] / len(b))
    assert len(queries) >= 5
    assert model.loc["top_brand_share@10", "value"] == pytest.approx(shares.mean())
    assert model.loc["top_brand_share@10", "support"] == len(shares)
    assert model.loc["top_brand_share@10", "ci_low"] <= model.loc["top_brand_share@10", "value"]


def test_the_mmr_trade_off_and_the_report(audited):
    cfg = audited["cfg"]
    rows = table(cfg, "relevance_audit")
    rows = rows[(rows.ds == DEMO_DS) & (rows.segment == "all")]
    plain = rows[(rows.system == "model") & (rows.metric == "ndcg@10")].value.item()
    traded = rows[rows.system.str.startswith("model_mmr_lambda=")].set_index(["system", "metric"])
    assert set(traded.index.get_level_values(0)) == {"model_mmr_lambda=1", "model_mmr_lambda=0.5"}
    assert traded.loc[("model_mmr_lambda=1", "ndcg@10"), "value"] == pytest.approx(plain)
    assert traded.loc[("model_mmr_lambda=1", "top_brand_share@10"), "value"] == pytest.approx(
        rows[(rows.system == "model") & (rows.metric == "top_brand_share@10")].value.item())
    assert np.isfinite(traded.loc[("model_mmr_lambda=0.5", "ndcg@10"), "value"])
    html = (Path(cfg["warehouse"]["root"]) / "reports" / f"audit_{DEMO_DS}.html").read_text()
    for title in ("Diversity of the top", "Diversity trade-off: ndcg@10 vs alpha_ndcg@10",
                  "Diversity trade-off: ndcg@10 vs top_brand_share@10", "Most concentrated queries"):
        assert title in html, title
    assert "MMR trade-off" in audited["summary"] and "Diversity of the top 10 on" in audited["summary"]
