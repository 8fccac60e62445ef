"""Unit tests for the synthetic demo data generator (relevance/data/demo.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from relevance.data.demo import TAXONOMY, generate_demo
from udfs.text import normalize_text

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = {
    "catalog": ["product_id", "title", "description", "brand", "category", "attributes", "updated_at"],
    "query_log": ["query_id", "client_id", "session_id", "user_query", "timestamp", "action_name", "object_id",
                  "position"],
    "judgments": ["query", "product_id", "grade", "label"],
    "ground_truth": ["query", "product_id", "grade"],
}
SMALL: dict[str, Any] = dict(n_products=400, n_queries=60, n_days=2, searches_per_day=200, judged_queries=20)


@pytest.fixture(scope="module")
def demo() -> dict[str, pd.DataFrame]:
    return generate_demo(judged_queries=120)  # the generate.* defaults, fewer judged queries than searched intents


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _assert_frames_equal(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key])


def test_columns_and_dtypes(demo):
    for name, cols in COLUMNS.items():
        assert list(demo[name].columns) == cols, name
    ql, cat = demo["query_log"], demo["catalog"]
    assert str(ql["timestamp"].dtype) == "datetime64[us, UTC]"
    assert str(cat["updated_at"].dtype) == "datetime64[us, UTC]"
    assert ql["position"].dtype == np.int64
    assert demo["judgments"]["grade"].dtype == np.int64
    assert demo["ground_truth"]["grade"].dtype == np.int64
    assert all(isinstance(a, dict) and all(isinstance(v, str) for v in a.values()) for a in cat["attributes"])
    assert cat["product_id"].is_unique and cat["product_id"].str.fullmatch(r"P\d{6}").all()
    assert set(ql["action_name"]) == {"impression", "click", "add_to_cart", "purchase"}


def test_sizes_follow_arguments(demo):
    assert len(demo["catalog"]) == 3000
    searches = demo["query_log"]["query_id"].nunique()
    assert searches == 3 * 1500
    assert demo["judgments"]["query"].nunique() == 120
    assert demo["judgments"].groupby("query").size().eq(20).all()


def test_same_seed_same_data_other_seed_differs():
    _assert_frames_equal(generate_demo(seed=3, **SMALL), generate_demo(seed=3, **SMALL))
    a, b = generate_demo(seed=3, **SMALL), generate_demo(seed=4, **SMALL)
    assert not a["catalog"]["title"].equals(b["catalog"]["title"])
    assert not a["query_log"]["user_query"].equals(b["query_log"]["user_query"])


def test_deterministic_across_hash_seeds():
    code = ("import hashlib, pandas as pd; from relevance.data.demo import generate_demo; "
            f"d = generate_demo(seed=5, **{SMALL!r}); "
            "print(hashlib.md5(b''.join(pd.util.hash_pandas_object(f.astype({'attributes': str}) if 'attributes' "
            "in f else f).to_numpy().tobytes() for f in d.values())).hexdigest())")
    outs = {
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout
        for h in (1, 2)
    }
    assert len(outs) == 1


def test_timestamps_within_requested_days(demo):
    ts = demo["query_log"]["timestamp"]
    assert ts.min() >= pd.Timestamp("2025-01-05", tz="UTC")
    assert ts.max() < pd.Timestamp("2025-01-08", tz="UTC")
    assert ts.dt.date.nunique() == 3
    assert (demo["catalog"]["updated_at"] < pd.Timestamp("2025-01-08", tz="UTC")).all()


def test_every_search_has_full_page_of_impressions(demo):
    imp = demo["query_log"][demo["query_log"]["action_name"] == "impression"]
    positions = imp.groupby("query_id")["position"].apply(lambda s: sorted(s.tolist()))
    assert positions.map(lambda p: p == list(range(1, 11))).all()
    assert not imp.duplicated(["query_id", "object_id"]).any()
    per_search = demo["query_log"].groupby("query_id")[["user_query", "session_id", "client_id"]].nunique()
    assert (per_search == 1).all().all()


def test_impressions_come_first_within_a_search(demo):
    ql = demo["query_log"].assign(is_event=lambda f: f["action_name"] != "impression")
    assert ql.groupby("query_id", sort=False)["is_event"].is_monotonic_increasing.all()
    order = {"impression": 0, "click": 1, "add_to_cart": 2, "purchase": 3}
    searches = ql["query_id"].drop_duplicates()
    assert ql.groupby("query_id", sort=False).ngroups == len(searches)  # each search's rows are contiguous
    assert (ql["query_id"] != ql["query_id"].shift()).sum() == len(searches)
    assert set(ql["action_name"].map(order)) == {0, 1, 2, 3}


def test_events_refer_to_impressed_products(demo):
    ql = demo["query_log"]
    imp = ql[ql["action_name"] == "impression"][["query_id", "object_id", "position", "timestamp"]]
    ev = ql[ql["action_name"] != "impression"]
    merged = ev.merge(imp, on=["query_id", "object_id"], how="left", suffixes=("", "_imp"), indicator=True)
    assert (merged["_merge"] == "both").all()
    assert (merged["position"] == merged["position_imp"]).all()
    assert (merged["timestamp"] >= merged["timestamp_imp"]).all()
    keys = {a: set(zip(g["query_id"], g["object_id"])) for a, g in ql.groupby("action_name")}
    assert keys["add_to_cart"] <= keys["click"]
    assert keys["purchase"] <= keys["add_to_cart"]


def test_judgments_grades_and_labels(demo):
    j = demo["judgments"]
    assert set(j["grade"]) <= {0, 1, 2}
    expected = j["grade"].map({2: "Exact", 1: "Partial", 0: "Irrelevant"})
    assert (j["label"] == expected).all()
    assert not j.duplicated(["query", "product_id"]).any()
    logged = set(demo["query_log"]["user_query"])
    assert set(j["query"]) <= logged
    assert (j.groupby("query")["grade"].nunique() >= 2).mean() > 0.9
    assert (j.groupby("query")["grade"].nunique() == 3).mean() > 0.5


def test_judged_queries_mix_head_and_tail(demo):
    ql = demo["query_log"]
    searches = ql.drop_duplicates("query_id")
    counts = searches.groupby(searches["user_query"].map(normalize_text)).size()
    judged = demo["judgments"]["query"].drop_duplicates().map(normalize_text)
    judged_counts = counts.reindex(judged).fillna(0)
    assert judged_counts.max() >= counts.quantile(0.95)
    assert (judged_counts <= 2).sum() >= 10


def test_label_noise_rate(demo):
    j = demo["judgments"].merge(demo["ground_truth"], on=["query", "product_id"], suffixes=("", "_true"))
    assert len(j) == len(demo["judgments"])
    flipped = (j["grade"] != j["grade_true"]).mean()
    assert 0.005 < flipped < 0.08
    clean = generate_demo(seed=2, label_noise=0.0, **SMALL)
    jc = clean["judgments"].merge(clean["ground_truth"], on=["query", "product_id"], suffixes=("", "_true"))
    assert (jc["grade"] == jc["grade_true"]).all()


def test_ground_truth_covers_impressions_and_judgments(demo):
    gt = demo["ground_truth"]
    assert not gt.duplicated(["query", "product_id"]).any()
    assert set(gt["grade"]) == {0, 1, 2}
    have = set(zip(gt["query"], gt["product_id"]))
    imp = demo["query_log"][demo["query_log"]["action_name"] == "impression"]
    assert set(zip(imp["user_query"], imp["object_id"])) <= have
    assert set(zip(demo["judgments"]["query"], demo["judgments"]["product_id"])) <= have


def test_same_intent_spelled_differently_gets_same_grades(demo):
    gt = demo["ground_truth"].assign(norm=lambda f: f["query"].map(normalize_text))
    per_norm = gt.groupby(["norm", "product_id"])["grade"].nunique()
    assert (per_norm == 1).all()
    raw_per_norm = gt.groupby("norm")["query"].nunique()
    assert (raw_per_norm > 1).any()


def test_position_bias(demo):
    ql = demo["query_log"]
    imp = ql[ql["action_name"] == "impression"].groupby("position").size()
    clk = ql[ql["action_name"] == "click"].groupby("position").size().reindex(imp.index, fill_value=0)
    ctr = clk / imp
    assert ctr.loc[1] > 2 * ctr.loc[10]


def test_clicks_depend_on_relevance(demo):
    ql, gt = demo["query_log"], demo["ground_truth"]
    imp = ql[ql["action_name"] == "impression"].merge(
        gt, left_on=["user_query", "object_id"], right_on=["query", "product_id"])
    clicked = set(zip(*ql.loc[ql["action_name"] == "click", ["query_id", "object_id"]].to_numpy().T))
    imp["clicked"] = [k in clicked for k in zip(imp["query_id"], imp["object_id"])]
    for lo, hi in ((1, 3), (4, 10)):
        band = imp[imp["position"].between(lo, hi)]
        rate = band.groupby("grade")["clicked"].mean()
        assert rate.loc[2] > 2 * rate.loc[0], (lo, hi, rate.to_dict())


def test_synonym_only_relevant_pairs_exist(demo):
    titles = demo["catalog"].set_index("product_id")["title"]
    gt = demo["ground_truth"]
    relevant = gt[gt["grade"] == 2]
    no_overlap = [not (_tokens(q) & _tokens(titles[p])) for q, p in zip(relevant["query"], relevant["product_id"])]
    assert sum(no_overlap) >= 20
    irrelevant = gt[gt["grade"] == 0]
    overlap = [bool(_tokens(q) & _tokens(titles[p])) for q, p in zip(irrelevant["query"], irrelevant["product_id"])]
    assert sum(overlap) >= 20  # lexical distractors exist too


def test_zipf_query_popularity(demo):
    searches = demo["query_log"].drop_duplicates("query_id")
    counts = searches.groupby(searches["user_query"].map(normalize_text)).size()
    assert counts.max() >= 20 * counts.median()
    assert (counts == 1).sum() > 20  # a real tail


def test_catalog_realism(demo):
    cat = demo["catalog"]
    n = len(cat)
    sparse = (cat["brand"] == "") & (cat["description"] == "")
    assert 0.01 * n < sparse.sum() < 0.08 * n
    dup_titles = cat[~sparse].duplicated(["title", "description"], keep=False)
    assert dup_titles.sum() >= 0.01 * n
    assert cat["category"].str.count(" > ").eq(2).all()
    assert cat["category"].str.split(" > ").str[0].nunique() == len(TAXONOMY)
    assert cat["brand"].replace("", np.nan).nunique() >= 35
    assert cat["category"].nunique() >= 30


def test_query_variety(demo):
    queries = demo["query_log"]["user_query"].drop_duplicates()
    assert queries.str.contains(r"\b(?:without|no|not|non)\b").any()
    assert queries.str.contains(r"[A-Z]").any()
    assert queries.str.contains(r"  |[!?.]$").any()
    synonyms = {s for top in TAXONOMY for t in top.types for s in t.synonyms}
    assert any(normalize_text(q).endswith(s) for q in queries for s in synonyms if " " not in s)


def test_negation_makes_matching_products_partial(demo):
    gt = demo["ground_truth"]
    attrs = demo["catalog"].set_index("product_id")["attributes"]
    neg = gt[gt["query"].map(normalize_text).str.contains(r" without ")]
    checked = 0
    for q, p, g in zip(neg["query"], neg["product_id"], neg["grade"]):
        value = normalize_text(q).split(" without ", 1)[1]
        if value in attrs[p].values() and g > 0:
            assert g == 1
            checked += 1
    assert checked > 0


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        generate_demo(n_products=0)
    with pytest.raises(ValueError):
        generate_demo(label_noise=1.5)


def test_accessories_share_words_with_their_type_but_are_irrelevant_to_it(demo):
    types = {t.category: t for top in TAXONOMY for t in top.types}
    assert len(types) == sum(len(top.types) for top in TAXONOMY)  # a category names one type
    cat = demo["catalog"].set_index("product_id")
    gt = demo["ground_truth"].assign(norm=lambda f: f["query"].map(normalize_text))
    product_type = gt["product_id"].map(cat["category"]).map(types)
    trapped = []  # (query, accessory product, grade) where the query names the parent type, not the accessory
    for query, product_id, ptype, grade in zip(gt["norm"], gt["product_id"], product_type, gt["grade"]):
        if ptype.accessory_for and re.search(rf"\b{re.escape(ptype.accessory_for)}\b", query):
            own_words = _tokens(" ".join((ptype.name,) + ptype.synonyms)) - _tokens(ptype.accessory_for)
            if not own_words & _tokens(query):
                trapped.append((query, product_id, grade))
    assert len(trapped) >= 50
    assert all(grade == 0 for _, _, grade in trapped), [t for t in trapped if t[2]][:5]
    shares_words = [bool(_tokens(q) & _tokens(cat.at[p, "title"])) for q, p, _ in trapped]
    assert np.mean(shares_words) > 0.9
