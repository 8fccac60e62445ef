"""relevance.evaluation.ranking against trec_eval (pytrec_eval via ir_measures) on seeded random runs.

Per query and to 1e-9, with the differences in convention asserted rather than hidden:

* trec_eval breaks score ties by docno *descending*, we by product_id ascending. Tied runs
  are therefore compared by feeding trec_eval strictly decreasing scores that follow our
  order; separate tests pin trec_eval's own tie rule and show that with raw tied scores
  set metrics at k differ only where a group of tied products straddles rank k.
* Queries without a relevant judged product: trec_eval gives recall, AP and RR 0, we give
  NaN (excluded from means). nDCG: trec_eval 0, we NaN, when no judged product has a
  positive gain (IDCG = 0).
* Query sets: we evaluate queries both ranked and judged; trec_eval skips run queries
  without qrels and ir_measures adds 0 rows for qrels queries without a run.
* Judged@k is not in trec_eval; it comes from ir_measures' own ``judged`` provider, which
  divides by min(k, run length) (and breaks ties by doc id ascending, like us).
* pytrec_eval only takes integer relevance, so float gains (ESCI 1.0 / 0.1 / 0.01 / 0) are
  compared as the integer gains 100 / 10 / 1 / 0: nDCG is invariant to scaling all gains.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

ir_measures = pytest.importorskip("ir_measures", reason="ir_measures (test extra) is not installed")
from ir_measures import AP, RR, Judged, P, R, nDCG  # noqa: E402

from relevance.evaluation.ranking import per_query_ranking_metrics  # noqa: E402

TOL = 1e-9
KS = [1, 3, 5, 10, 20]
ESCI_GAIN = {3: 1.0, 2: 0.1, 1: 0.01, 0: 0.0}
# nDCG gain kind -> (our gain_kind, the integer gains handed to trec_eval, None = its default)
GAINS = {
    "linear": ("linear", None),
    "exponential": ("exponential", {g: 2**g - 1 for g in range(4)}),
    "esci_mapping": (ESCI_GAIN, {g: round(100 * v) for g, v in ESCI_GAIN.items()}),
    "esci_mapping_str_keys": ({str(g): v for g, v in ESCI_GAIN.items()}, {g: round(100 * v) for g, v in ESCI_GAIN.items()}),
}


# ----------------------------------------------------------------------------- data


def make_case(seed: int, ties: bool, n_queries: int = 300) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random judgments (grades 0-3) and a random run over a pool of 40 products per query.

    Run lengths 1..25 (so many lists are shorter than k = 10 or 20), products drawn
    independently of the judged ones (so many are unjudged), some queries judged all-0 or
    all-1 (no relevant product at relevant_min_grade 1 or 2), and with ``ties`` scores in
    {0, .25, .5, .75, 1}. One query is only ranked, one only judged.
    """
    rng = np.random.default_rng(seed)
    pool = np.array([f"p{i}" for i in range(40)])  # "p10" < "p2": string order is not numeric order
    rows_r, rows_j = [], []
    for qi in range(n_queries):
        q = f"q{qi:03d}"
        n_ranked = int(rng.integers(1, 26))
        for pid in rng.choice(pool, size=n_ranked, replace=False):
            score = rng.integers(0, 5) / 4 if ties else rng.random()
            rows_r.append((q, pid, float(score)))
        judged = rng.choice(pool, size=int(rng.integers(1, 30)), replace=False)
        kind = qi % 10
        grades = (np.zeros(len(judged), int) if kind == 0 else np.ones(len(judged), int) if kind == 1
                  else rng.integers(0, 4, len(judged)))
        rows_j += [(q, pid, int(g)) for pid, g in zip(judged, grades)]
    rows_r.append(("run_only", "p1", 0.5))
    rows_j.append(("qrels_only", "p1", 3))
    ranked = pd.DataFrame(rows_r, columns=["query", "product_id", "score"])
    judged = pd.DataFrame(rows_j, columns=["query", "product_id", "grade"])
    return ranked, judged


def qrels_of(judged: pd.DataFrame) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for q, pid, g in judged.itertuples(index=False):
        out.setdefault(q, {})[pid] = int(g)
    return out


def run_of(ranked: pd.DataFrame) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for q, pid, s in ranked.itertuples(index=False):
        out.setdefault(q, {})[pid] = float(s)
    return out


def rescored(ranked: pd.DataFrame, product_ascending: bool) -> pd.DataFrame:
    """The run with scores n, n-1, ..., 1 following (score desc, product_id asc or desc)."""
    r = ranked.sort_values(["query", "score", "product_id"], ascending=[True, False, product_ascending])
    r = r.assign(score=-r.groupby("query").cumcount().astype(float))
    return r.reset_index(drop=True)


def trec(measures: list, judged: pd.DataFrame, ranked: pd.DataFrame, provider: str = "pytrec_eval") -> pd.DataFrame:
    """Per-query values, one column per measure (its str), from an ir_measures provider."""
    prov = getattr(ir_measures, provider)
    rows = [(m.query_id, str(m.measure), m.value) for m in prov.iter_calc(measures, qrels_of(judged), run_of(ranked))]
    return pd.DataFrame(rows, columns=["query", "measure", "value"]).pivot(index="query", columns="measure", values="value")


def ideal_zero(judged: pd.DataFrame) -> pd.Series:
    """Per query: True when no judged grade is above 0, i.e. IDCG = 0 for every gain used here."""
    return ~(judged["grade"] > 0).groupby(judged["query"]).any()


def never(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(False, index=frame.index)


def assert_agree(ours: pd.Series, theirs: pd.Series, undefined: pd.Series, name: str) -> int:
    """Equal to TOL where ``undefined`` is False; where True ours is NaN and trec_eval's 0.

    Returns the number of queries in the declared-difference case.
    """
    theirs, undefined = theirs.reindex(ours.index), undefined.reindex(ours.index)
    assert theirs.notna().all(), f"{name}: trec_eval has no value for some queries"
    assert undefined.notna().all()
    d = ~undefined
    assert ours[d].notna().all(), f"{name}: NaN outside the declared cases: {list(ours[d][ours[d].isna()].index)[:5]}"
    diff = (ours[d] - theirs[d]).abs()
    assert diff.max() <= TOL, f"{name}: max |ours - trec_eval| = {diff.max():.3g} at {diff.idxmax()}"
    assert ours[undefined].isna().all(), f"{name}: expected NaN where undefined"
    assert (theirs[undefined] == 0.0).all(), f"{name}: trec_eval should give 0 where we give NaN"
    return int(undefined.sum())


def our_metrics(ranked, judged, relevant_min_grade, gain_kind="linear") -> pd.DataFrame:
    return per_query_ranking_metrics(ranked, judged, KS, relevant_min_grade, gain_kind).set_index("query")


# ----------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("ties", [False, True], ids=["distinct_scores", "tied_scores"])
@pytest.mark.parametrize("rel", [1, 2])
def test_binary_metrics_agree_with_trec_eval(ties: bool, rel: int):
    ranked, judged = make_case(seed=10 * rel + ties, ties=ties)
    ours = our_metrics(ranked, judged, rel)
    measures = [P(rel=rel) @ k for k in KS] + [R(rel=rel) @ k for k in KS] + [AP(rel=rel), RR(rel=rel)]
    # untied: raw scores; tied: our ranking as strictly decreasing scores
    theirs = trec(measures, judged, rescored(ranked, product_ascending=True) if ties else ranked)

    no_rel = ours["n_relevant"] == 0
    assert 20 <= no_rel.sum() < len(ours) - 100  # the declared case occurs, but not everywhere
    for k in KS:
        assert_agree(ours[f"precision@{k}"], theirs[str(P(rel=rel) @ k)], never(ours), f"P@{k}")
        assert_agree(ours[f"recall@{k}"], theirs[str(R(rel=rel) @ k)], no_rel, f"R@{k}")
    assert_agree(ours["map"], theirs[str(AP(rel=rel))], no_rel, "AP")
    assert_agree(ours["mrr"], theirs[str(RR(rel=rel))], no_rel, "RR")
    assert (ours["n_ranked"] < 20).sum() > 100  # short lists
    assert (ours["judged@20"] < 1).sum() > 100  # unjudged products in the run


@pytest.mark.parametrize("gain_name", list(GAINS))
@pytest.mark.parametrize("ties", [False, True], ids=["distinct_scores", "tied_scores"])
def test_ndcg_agrees_with_trec_eval(gain_name: str, ties: bool):
    gain_kind, trec_gains = GAINS[gain_name]
    ranked, judged = make_case(seed=7 + ties, ties=ties)
    ours = our_metrics(ranked, judged, relevant_min_grade=2, gain_kind=gain_kind)
    measures = [(nDCG if trec_gains is None else nDCG(gains=trec_gains)) @ k for k in KS]
    theirs = trec(measures, judged, rescored(ranked, product_ascending=True) if ties else ranked)
    zero = ideal_zero(judged)
    for k, m in zip(KS, measures):
        n_undefined = assert_agree(ours[f"ndcg@{k}"], theirs[str(m)], zero, f"nDCG@{k} {gain_name}")
        assert n_undefined >= 20


def test_ndcg_of_esci_mapping_differs_from_linear():
    """The mapping is really applied (the trec_eval comparison above would not notice a no-op)."""
    ranked, judged = make_case(seed=3, ties=False, n_queries=50)
    linear = our_metrics(ranked, judged, 2, "linear")["ndcg@5"]
    esci = our_metrics(ranked, judged, 2, ESCI_GAIN)["ndcg@5"]
    assert ((linear - esci).abs() > 1e-3).sum() > 10


@pytest.mark.parametrize("ties", [False, True], ids=["distinct_scores", "tied_scores"])
def test_judged_at_k_agrees_with_ir_measures(ties: bool):
    ranked, judged = make_case(seed=21 + ties, ties=ties)
    ours = our_metrics(ranked, judged, relevant_min_grade=1)
    measures = [Judged @ k for k in KS]
    # ir_measures' judged provider breaks ties by doc id ascending, as we do: raw scores
    for run in (ranked, rescored(ranked, product_ascending=True)):
        theirs = trec(measures, judged, run, provider="judged")
        for k in KS:
            assert_agree(ours[f"judged@{k}"], theirs[str(Judged @ k)], never(ours), f"Judged@{k}")
    # short, fully judged lists score 1: the denominator is the list length, not k
    assert ((ours["n_ranked"] < 20) & (ours["judged@20"] == 1.0)).any()


def test_query_sets_differ_only_as_declared():
    ranked, judged = make_case(seed=5, ties=False, n_queries=20)
    ours = our_metrics(ranked, judged, 1)
    theirs = trec([P @ 5, AP], judged, ranked)
    assert "run_only" not in ours.index and "run_only" not in theirs.index
    assert "qrels_only" not in ours.index
    assert theirs.loc["qrels_only"].tolist() == [0.0, 0.0]  # ir_measures fills in 0 for a missing run
    assert set(theirs.index) - set(ours.index) == {"qrels_only"}


# ----------------------------------------------------------------------------- tie-breaking


def test_trec_eval_breaks_ties_by_docno_descending():
    """Fed raw tied scores, trec_eval equals our metrics on the (score desc, docno desc) order."""
    ranked, judged = make_case(seed=31, ties=True)
    measures = [P(rel=2) @ k for k in KS] + [nDCG @ k for k in KS] + [AP(rel=2), RR(rel=2)]
    theirs = trec(measures, judged, ranked)
    ours_trec_order = our_metrics(rescored(ranked, product_ascending=False), judged, 2)
    ours = our_metrics(ranked, judged, 2)
    no_rel = ours["n_relevant"] == 0
    for k in KS:
        assert_agree(ours_trec_order[f"precision@{k}"], theirs[str(P(rel=2) @ k)], never(ours), f"P@{k}")
        assert_agree(ours_trec_order[f"ndcg@{k}"], theirs[str(nDCG @ k)], ideal_zero(judged), f"nDCG@{k}")
    assert_agree(ours_trec_order["map"], theirs[str(AP(rel=2))], no_rel, "AP")
    assert_agree(ours_trec_order["mrr"], theirs[str(RR(rel=2))], no_rel, "RR")
    # and that order is not ours: on raw tied scores the two really disagree
    assert ((ours["map"] - theirs[str(AP(rel=2))]).abs() > 1e-6).sum() > 50


def straddles(ranked: pd.DataFrame, k: int) -> pd.Series:
    """Per query: does some score shared by several products occur both at ranks <= k and > k?"""
    r = ranked.sort_values(["query", "score", "product_id"], ascending=[True, False, True])
    r = r.assign(rank=r.groupby("query").cumcount() + 1)
    by = r.groupby(["query", "score"])["rank"].agg(["min", "max"])
    cut = (by["min"] <= k) & (by["max"] > k)
    return cut.groupby(level="query").any()


@pytest.mark.parametrize("rel", [1, 2])
def test_raw_ties_change_set_metrics_only_when_ties_straddle_the_cutoff(rel: int):
    ranked, judged = make_case(seed=40 + rel, ties=True)
    ours = our_metrics(ranked, judged, rel)
    theirs = trec([P(rel=rel) @ k for k in KS] + [R(rel=rel) @ k for k in KS], judged, ranked)
    n_differ = 0
    for k in KS:
        cut = straddles(ranked, k).reindex(ours.index)
        for ours_col, m in ((f"precision@{k}", P(rel=rel) @ k), (f"recall@{k}", R(rel=rel) @ k)):
            diff = (ours[ours_col] - theirs[str(m)].reindex(ours.index)).abs()
            differs = diff > TOL  # NaN recall (no relevant product) compares False
            assert not (differs & ~cut).any(), f"{ours_col}: differs without a tie straddling k"
            assert (diff[~cut & ours[ours_col].notna()] <= TOL).all()
            n_differ += int(differs.sum())
        assert cut.any() and not cut.all()
    assert n_differ > 50  # the difference is real, not hypothetical
