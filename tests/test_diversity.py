"""relevance.evaluation.diversity: alpha-nDCG@k against ndeval (ir_measures' pyndeval provider) and IA-nDCG@k against
trec_eval's nDCG@k (pytrec_eval) on per-intent qrels, per query on seeded random rankings; concentration on small
hand-checked tops."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from relevance.evaluation.diversity import (
    alpha_ndcg_at_k,
    brand_entropy,
    concentration_at_k,
    ideal_alpha_order,
    per_query_intent_metrics,
)

ir_measures = pytest.importorskip("ir_measures", reason="ir_measures (test extra) is not installed")
pytest.importorskip("pyndeval", reason="pyndeval (test extra: ndeval for alpha-nDCG) is not installed")
from ir_measures import alpha_nDCG, nDCG  # noqa: E402

RELEVANT_MIN_GRADE = 2


def random_candidates(seed: int, n_queries: int = 40) -> pd.DataFrame:
    """Queries of 3-25 candidates, 1-4 intents, grades 0-3 (relevant from 2), distinct scores."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        n, intents = int(rng.integers(3, 26)), [f"type{t}" for t in range(int(rng.integers(1, 5)))]
        for p in rng.permutation(n):
            grade = int(rng.integers(0, 4))
            rows.append({"query_norm": f"q{q:03d}", "product_id": f"p{p:03d}", "score": float(rng.normal()),
                         "intent": str(rng.choice(intents)), "grade": grade})
    frame = pd.DataFrame(rows)
    frame["relevant"] = frame.grade >= RELEVANT_MIN_GRADE
    frame["gain"] = frame.grade.astype(float)
    return frame


def strictly_decreasing_run(candidates: pd.DataFrame) -> pd.DataFrame:
    """The run in our ranking order (score desc, product_id asc) with strictly decreasing scores, so trec_eval's
    and ndeval's tie rules cannot reorder it."""
    ordered = candidates.sort_values(["query_norm", "score", "product_id"], ascending=[True, False, True])
    ordered = ordered.assign(rank=ordered.groupby("query_norm").cumcount())
    return pd.DataFrame({"query_id": ordered.query_norm, "doc_id": ordered.product_id,
                         "score": 1000.0 - ordered["rank"].astype(float)})


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("k", [5, 10])
def test_alpha_ndcg_equals_ndeval(seed: int, k: int) -> None:
    candidates = random_candidates(seed)
    ours = per_query_intent_metrics(candidates, k).set_index("query_norm")
    qrels = pd.DataFrame({"query_id": candidates.query_norm, "doc_id": candidates.product_id,
                          "iteration": candidates.intent, "relevance": candidates.relevant.astype(int)})
    theirs = {m.query_id: m.value for m in ir_measures.iter_calc([alpha_nDCG(alpha=0.5) @ k], qrels,
                                                                  strictly_decreasing_run(candidates))}
    multi = ours[ours.intents >= 2]
    assert len(multi) >= 15  # the comparison covers enough multi-intent queries
    for query, row in multi.iterrows():
        assert row["alpha_ndcg@k"] == pytest.approx(theirs[query], abs=1e-6), query
    assert ours[ours.intents < 2]["alpha_ndcg@k"].isna().all()


@pytest.mark.parametrize("seed", [4, 5])
def test_intent_aware_ndcg_equals_the_mean_of_trec_eval_ndcg_per_intent(seed: int) -> None:
    candidates, k = random_candidates(seed), 10
    ours = per_query_intent_metrics(candidates, k).set_index("query_norm")
    relevant = candidates[candidates.relevant]
    # one trec_eval query per (query, intent): that intent's relevant products with their grades
    qrels = pd.DataFrame({"query_id": relevant.query_norm + "|" + relevant.intent, "doc_id": relevant.product_id,
                          "relevance": relevant.grade.astype(int)})
    run = strictly_decreasing_run(candidates)
    per_intent_runs = [run.assign(query_id=run.query_id + "|" + intent)
                       for intent in sorted(candidates.intent.unique())]
    theirs = pd.Series({m.query_id: m.value for m in ir_measures.iter_calc(
        [nDCG @ k], qrels, pd.concat(per_intent_runs, ignore_index=True))})
    by_query = theirs.groupby(theirs.index.str.split("|").str[0]).mean()
    multi = ours[ours.intents >= 2]
    assert len(multi) >= 15
    for query, row in multi.iterrows():
        assert row["ia_ndcg@k"] == pytest.approx(by_query[query], abs=1e-9), query


def test_alpha_ndcg_rewards_covering_the_intents_first() -> None:
    # two intents, two relevant products each: alternating beats one intent after the other
    alternating = alpha_ndcg_at_k(["a", "b", "a", "b"], ["a", "a", "b", "b"], k=4)
    grouped = alpha_ndcg_at_k(["a", "a", "b", "b"], ["a", "a", "b", "b"], k=4)
    assert alternating == pytest.approx(1.0) and grouped < alternating
    assert ideal_alpha_order(["a", "a", "a", "b"], 3) == ["a", "b", "a"]
    assert math.isnan(alpha_ndcg_at_k([None, None], [], k=2))


def test_concentration_of_a_top() -> None:
    top = pd.DataFrame({"brand": ["acme"] * 6 + ["zeta"] * 2 + ["", None],
                        "category": ["Electronics"] * 10, "product_type": ["laptop"] * 5 + ["case"] * 5})
    row = concentration_at_k(top, 10)
    assert row["distinct_brand@k"] == 2 and row["distinct_category@k"] == 1 and row["distinct_product_type@k"] == 2
    assert row["top_brand_share@k"] == pytest.approx(6 / 8)  # of the 8 products with a brand
    assert row["brand_entropy@k"] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert brand_entropy(["x"] * 4) == 0.0 and brand_entropy(list("abcd")) == pytest.approx(2.0)
    assert concentration_at_k(top, 3)["shown@k"] == 3


# ----------------------------------------------------------------------------- MMR and the audit's rows
def test_mmr_lambda_one_is_the_plain_ranking_and_lower_lambdas_spread_the_top() -> None:
    from relevance.evaluation.mmr import mmr_order

    ids = ["a", "b", "c", "d"]
    scores = np.array([0.90, 0.89, 0.50, 0.88])
    vectors = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.99, 0.05]])  # a, b, d near-duplicates; c apart
    assert mmr_order(ids, scores, vectors, 1.0).tolist() == [0, 1, 3, 2]
    assert mmr_order(ids, scores, vectors, 0.5).tolist()[:2] == [0, 2]  # c comes second: it is unlike a
    assert mmr_order(ids, scores, vectors, 0.5).tolist() == mmr_order(ids, scores, vectors, 0.5).tolist()
    with pytest.raises(ValueError, match="lambda"):
        mmr_order(ids, scores, vectors, 1.5)


def small_evaluation():
    from relevance.evaluation.audit_rows import AuditSettings, judged_evaluation

    # q1: the model puts three acme laptops first; the relevant products span laptops and cases (two intents)
    candidates = pd.DataFrame({
        "query_norm": ["q1"] * 5 + ["q2"] * 3,
        "product_id": ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"],
        "score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.9, 0.8, 0.7],
        "mean_position": [1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 2.0, 3.0],
        "segment": ["head"] * 5 + ["tail"] * 3,
    })
    judged = pd.DataFrame({"query_norm": ["q1"] * 5 + ["q2"] * 3,
                           "product_id": ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"],
                           "grade": [2, 2, 0, 2, 0, 2, 2, 2]})
    facets = pd.DataFrame({"product_id": ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"],
                           "brand": ["acme", "acme", "acme", "zeta", "", "b1", "b2", "b3"],
                           "category": ["Electronics"] * 8,
                           "product_type": ["Electronics > Laptops"] * 3 + ["Electronics > Cases"] * 2
                           + ["Electronics > Phones"] * 3})
    settings = AuditSettings(ks=(10,), relevant_min_grade=1, bootstrap_samples=50)
    return judged_evaluation(candidates, judged, settings), facets, settings


def test_diversity_rows_of_a_hand_checked_audit() -> None:
    from relevance.evaluation.audit_rows import LOGGED, MODEL
    from relevance.evaluation.diversity_rows import DiversitySettings, diversity_audit, product_facets

    evaluation, facets, settings = small_evaluation()
    rows, per_system = diversity_audit(evaluation, facets, settings, DiversitySettings(k=10))
    q1 = per_system[MODEL].set_index("query_norm").loc["q1"]
    assert q1["distinct_brands@10"] == 2 and q1["top_brand_share@10"] == pytest.approx(3 / 4)
    assert q1["distinct_types@10"] == 2
    # relevant: p1, p2 (laptops), p4 (case); ranked p1 p2 p3 p4 p5; alpha = 0.5
    alpha_dcg = 1 + 0.5 / np.log2(3) + 1 / np.log2(5)
    ideal = 1 + 1 / np.log2(3) + 0.5 / np.log2(4)  # laptop, case, laptop
    assert q1["alpha_ndcg@10"] == pytest.approx(alpha_dcg / ideal)
    assert np.isnan(per_system[MODEL].set_index("query_norm").loc["q2", "alpha_ndcg@10"])  # one intent
    assert set(rows.system) == {MODEL, LOGGED}
    everyone = rows[(rows.system == MODEL) & (rows.segment == "all") & (rows.metric == "distinct_brands@10")]
    assert everyone.value.item() == pytest.approx((2 + 3) / 2) and everyone.support.item() == 2
    assert (rows.segment == "query=q1").any() and rows.definition.str.contains("queries:").all()
    catalog = pd.DataFrame({"product_id": ["x"], "brand": [None], "category": ["Kitchen > Storage > Mug Racks"]})
    assert product_facets(catalog).iloc[0].to_dict() == {
        "product_id": "x", "brand": "", "category": "Kitchen", "product_type": "Kitchen > Storage > Mug Racks"}


def test_mmr_tradeoff_at_lambda_one_is_the_model() -> None:
    from relevance.evaluation.audit_rows import MODEL
    from relevance.evaluation.diversity_rows import DiversitySettings, mmr_tradeoff

    evaluation, facets, settings = small_evaluation()
    vectors = np.eye(8)[[0, 0, 0, 1, 1, 2, 3, 4]] + 0.01  # laptops alike, cases alike
    rows = mmr_tradeoff(evaluation, facets, vectors, settings, DiversitySettings(k=10), (1.0, 0.3)).set_index(
        ["system", "metric"])
    model_ndcg = evaluation.per_query[MODEL]["ndcg@10"].mean()
    assert rows.loc[("model_mmr_lambda=1", "ndcg@10"), "value"] == pytest.approx(model_ndcg)
    # at 0.3 the case p4 comes second in q1: alpha-nDCG rises
    assert rows.loc[("model_mmr_lambda=0.3", "alpha_ndcg@10"), "value"] > rows.loc[
        ("model_mmr_lambda=1", "alpha_ndcg@10"), "value"]
