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
