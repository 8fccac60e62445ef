"""bench/log_simulator.py: a seeded, valid query_log whose position bias and clicks are the ones asked for (pandas
only, no Spark)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.log_simulator import (
    LogSimulation,
    compare_click_labels,
    daily_counts,
    examination_table,
    resolve_judgments,
    simulate_log,
    with_overrides,
)
from schemas.tables import QUERY_LOG
from udfs.text import normalize_text

END = "2026-12-01"


def judgments(queries: int = 20, per_query: int = 12, seed: int = 3) -> pd.DataFrame:
    """`queries` queries of `per_query` products each, grades 0-3 drawn by `seed`."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "query": np.repeat([f"Query {q}" for q in range(queries)], per_query),
        "product_id": [f"P{q:02d}{i:03d}" for q in range(queries) for i in range(per_query)],
        "grade": rng.integers(0, 4, queries * per_query),
    })


def small(**changes) -> LogSimulation:
    return LogSimulation(**{"days": 2, "searches_per_day": 300, **changes})


def test_the_same_seed_gives_the_same_log_and_another_seed_another():
    first = simulate_log(judgments(), small(), END)
    again = simulate_log(judgments().sample(frac=1.0, random_state=1), small(), END)  # row order does not matter
    pd.testing.assert_frame_equal(first, again)
    other = simulate_log(judgments(), small(seed=1), END)
    assert not first["object_id"].equals(other["object_id"].reindex(first.index))


def test_columns_and_dtypes_are_query_logs():
    log = simulate_log(judgments(), small(), END)
    assert list(log.columns) == QUERY_LOG.columns
    kinds = {f.name: f.dataType.typeName() for f in QUERY_LOG.schema.fields}
    for column, kind in kinds.items():
        dtype = log[column].dtype
        if kind == "string":
            assert pd.api.types.is_string_dtype(dtype) and log[column].map(type).eq(str).all(), column
        elif kind == "long":
            assert dtype == np.int64, column
        elif kind == "timestamp":
            assert str(dtype) == "datetime64[us, UTC]", column
        else:
            pytest.fail(f"unexpected type {kind} of {column}")
    assert not log.isna().any().any()
    assert set(log["action_name"]) == {"impression", "click", "add_to_cart", "purchase"}
    assert (log["timestamp"].dt.strftime("%Y-%m-%d") == log["ds"]).all()  # ds is the event's UTC date
    assert sorted(log["ds"].unique()) == ["2026-11-30", END]
    per_day = daily_counts(log)
    assert per_day["searches"].tolist() == [300, 300] and (per_day["events"] == log.groupby("ds").size()).all()


def test_every_action_has_its_impression_in_the_same_search_at_the_same_position():
    page = 8
    log = simulate_log(judgments(), small(page_size=page), END)
    shown = log[log["action_name"] == "impression"]
    key = ["query_id", "object_id", "position"]
    assert not shown.duplicated(key).any() and not shown.duplicated(["query_id", "position"]).any()
    assert shown["position"].between(1, page).all()
    per_search = shown.groupby("query_id")["position"].agg(["min", "max", "count"])
    assert (per_search["min"] == 1).all() and (per_search["max"] == per_search["count"]).all()  # 1..n, no gaps
    assert (per_search["count"] == page).all()  # every query has 12 candidates, more than a page
    impressions = shown.set_index(key)["timestamp"]
    for action, needs in (("click", "impression"), ("add_to_cart", "click"), ("purchase", "add_to_cart")):
        rows = log[log["action_name"] == action]
        assert len(rows) > 0, action
        before = log[log["action_name"] == needs].set_index(key)
        assert pd.MultiIndex.from_frame(rows[key]).isin(before.index).all(), f"{action} without a {needs}"
        assert not rows.duplicated(key).any()
        assert (rows.set_index(key)["timestamp"] >= impressions.reindex(rows.set_index(key).index)).all()
    assert (log.groupby("query_id")[["user_query", "client_id", "session_id"]].nunique() == 1).all().all()


def test_examination_at_each_position_of_a_noise_free_ranker_is_one_over_p_to_the_eta():
    """Every examined result clicked (p_click 1 at every grade), the ranker's order fixed: the click rate at
    position p is 1/p^eta. 20,000 searches: the rate's standard error is at most 0.0036, the tolerance 0.02."""
    eta = 0.7
    settings = LogSimulation(days=1, searches_per_day=20_000, ranker_noise_sd=0.0, search_noise_sd=0.0,
                             examination_eta=eta, p_click=(1.0,) * 4, p_cart=(0.0,) * 4, p_purchase=(0.0,) * 4)
    log = simulate_log(judgments(), settings, END)
    shown = log[log["action_name"] == "impression"].groupby("position").size()
    clicks = log[log["action_name"] == "click"].groupby("position").size().reindex(shown.index, fill_value=0)
    rate = (clicks / shown).to_numpy()
    expected = 1.0 / np.arange(1, 11) ** eta
    assert shown.index.tolist() == list(range(1, 11)) and (shown == 20_000).all()
    assert np.abs(rate - expected).max() < 0.02, np.round(rate - expected, 4)
    # the noise-free ranker shows each query's products by grade, best first
    first = log[(log["action_name"] == "impression")].merge(
        judgments().assign(query=lambda j: j["query"].map(normalize_text)).rename(columns={"query": "q"}),
        left_on="object_id", right_on="product_id")
    by_position = first.groupby(["query_id", "position"])["grade"].first().unstack()
    assert (by_position.diff(axis=1).iloc[:, 1:] <= 0).all().all()


def test_clicks_carts_and_purchases_rise_with_the_grade():
    """Random order (positions independent of grades): clicks per impression follow p_click by grade."""
    settings = LogSimulation(days=1, searches_per_day=8000, random_share=1.0)
    log = simulate_log(judgments(), settings, END)
    grades = resolve_judgments(judgments()).set_index("product_id")["grade"]
    log["grade"] = log["object_id"].map(grades)
    counts = log.groupby(["grade", "action_name"]).size().unstack(fill_value=0)
    ctr = counts["click"] / counts["impression"]
    assert ctr.is_monotonic_increasing and ctr.iloc[-1] > 5 * ctr.iloc[0]
    mean_examination = log[log["action_name"] == "impression"]["position"].pipe(lambda p: (1.0 / p ** 0.8).mean())
    expected = np.asarray(settings.p_click) * mean_examination
    assert np.abs(ctr.to_numpy() / expected - 1).max() < 0.15, (ctr.to_numpy(), expected)
    assert (counts["add_to_cart"] / counts["click"]).is_monotonic_increasing
    assert counts.loc[3, "purchase"] > counts.loc[0, "purchase"]


def test_queries_are_normalized_as_the_project_does_and_grades_resolved_as_build_pairs():
    rows = pd.DataFrame({
        "query": ["Laptop ", "laptop", "LAPTOP!", "laptop", "  ", "mouse", "mouse"],
        "product_id": ["A", "A", "B", "A", "C", "D", None],
        "grade": [3, 1, 2, 1, 3, 0, 2],
    })
    pairs = resolve_judgments(rows)
    assert pairs[["query_norm", "product_id", "grade"]].values.tolist() == [
        ["laptop", "A", 1], ["laptop", "B", 2], ["mouse", "D", 0]]  # the most frequent grade of (laptop, A)
    assert pairs.set_index("query_norm")["user_query"].to_dict() == {"laptop": "laptop", "mouse": "mouse"}
    log = simulate_log(rows, small(searches_per_day=50), END)
    assert set(log["user_query"].map(normalize_text)) <= {"laptop", "mouse"}
    assert set(log["object_id"]) <= {"A", "B", "D"}
    # a query with fewer candidates than a page shows them all, at positions 1..n
    assert log[log["action_name"] == "impression"].groupby("query_id")["position"].max().max() == 2


def test_distractors_come_from_the_catalog_and_count_as_grade_zero():
    catalog = [f"X{i}" for i in range(50)] + ["P00000"]
    log = simulate_log(judgments(queries=3), small(distractors=4), END, catalog_ids=catalog)
    extra = set(log["object_id"]) - set(judgments(queries=3)["product_id"])
    assert extra and extra <= set(catalog)
    per_query = log[log["action_name"] == "impression"].groupby("user_query")["object_id"].nunique()
    assert (per_query <= 16).all()
    with pytest.raises(ValueError, match="catalog"):
        simulate_log(judgments(queries=3), small(distractors=4), END)


def test_settings_are_checked_and_overridden_from_the_command_line():
    with pytest.raises(ValueError, match="grade 3"):
        simulate_log(judgments(), small(p_click=(0.1, 0.5), p_cart=(0, 0), p_purchase=(0, 0)), END)
    with pytest.raises(ValueError, match="random_share"):
        LogSimulation(random_share=1.5)
    with pytest.raises(ValueError, match="as many"):
        LogSimulation(p_click=(0.1, 0.2))
    changed = with_overrides(LogSimulation(), ["days=3", "p_click=0.1,0.2,0.3,0.4", "ranker_noise_sd=0.5"])
    assert (changed.days, changed.p_click, changed.ranker_noise_sd) == (3, (0.1, 0.2, 0.3, 0.4), 0.5)
    with pytest.raises(ValueError, match="NAME=VALUE"):
        with_overrides(LogSimulation(), ["nope=1"])
    with pytest.raises(ValueError, match="not of type int"):
        with_overrides(LogSimulation(), ["days=many"])


def test_the_comparison_ranks_by_each_score_against_the_grades():
    j = judgments(queries=2, per_query=3)
    pairs = resolve_judgments(j)
    labels = pd.concat([pairs.assign(click_model=model) for model in ("pbm", "sdbn")], ignore_index=True)
    perfect = labels["grade"].astype(float)
    labels = labels.assign(label=perfect, relevance=perfect, clicks=(perfect * 10).astype(int), impressions=40,
                           mean_position=-perfect, query_searches=25)
    result = compare_click_labels(labels.drop(columns="grade"), j)
    assert result["queries"] == 2
    for name in ("label", "relevance", "sdbn", "ctr", "ranker"):
        assert result["ndcg_shown"][name] == pytest.approx(1.0) or np.isnan(result["ndcg_shown"][name]), name
    table = examination_table(pd.DataFrame({"click_model": "pbm", "position": [1, 2], "examination": [1.0, 0.5]}), 1.0)
    assert table["relative_error"].tolist() == [0.0, 0.0]
