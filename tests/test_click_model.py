"""click-model: the PBM's position bias and the click labels against the demo generator's truth, and the logs people
have (positions missing or all 1, a query searched once, a client with 10,000 clicks, a product at one position)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable
from pyspark.sql import DataFrame

from jobs import click_model, generate
from jobs.__main__ import build_parser, flag_keys
from plumbing.delta import Warehouse
from relevance.click_model import ClickModelResult, fit_click_models, window_days
from relevance.evaluation.ranking import ndcg_at_k, rank_query
from relevance.frames import to_spark
from relevance.settings import ClickModelSettings
from schemas.tables import QUERY_LOG
from tests.conftest import make_config, run, settings_of
from udfs.text import normalize_text

DS = "2025-01-07"
# The demo generator's examination probability of position p (relevance/data/demo.py: _simulate_log).
TRUE_EXAMINATION = 1.0 / np.arange(1, 11) ** 0.8
# Enough searches that every position's clicks pin its examination down (40,000 searches of 200 queries over 5 days;
# the project's default seed, not chosen for the result).
DEMO = {"generate.seed": 7, "generate.n_products": 2000, "generate.n_queries": 200, "generate.n_days": 5,
        "generate.searches_per_day": 8000, "generate.judged_queries": 20, "generate.judgments_per_query": 5}


def table(root: str | Path, name: str) -> pd.DataFrame:
    return DeltaTable(str(Path(root) / name)).to_pandas()


def local(df: DataFrame) -> pd.DataFrame:
    frame: pd.DataFrame = df.toPandas()
    return frame


# ---------------------------------------------------------------------------------------------------------------
# Against the demo's truth
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_fit(spark, tmp_path_factory) -> dict:
    """The demo's 5 days generated, and click-model run over them once (both through the jobs)."""
    root = tmp_path_factory.mktemp("click_demo")
    cfg = make_config(root / "warehouse", root / "models", **DEMO, **{"click_model.days": 5})
    run(spark, cfg, generate, ds=None)
    result = run(spark, cfg, click_model, ds=DS)
    return {"cfg": cfg, "root": cfg["warehouse"]["root"], "result": result}


def test_pbm_recovers_the_demo_examination_probabilities(demo_fit):
    positions = table(demo_fit["root"], "click_model_positions").sort_values("position")
    fitted = positions.examination.to_numpy()[:10]
    relative = fitted / TRUE_EXAMINATION - 1  # both with position 1 = 1
    print("examination fitted:", np.round(fitted, 4).tolist(), "truth:", np.round(TRUE_EXAMINATION, 4).tolist(),
          "relative error:", np.round(relative, 4).tolist())
    assert positions.position.tolist()[:10] == list(range(1, 11))
    assert np.abs(relative).max() < 0.10
    assert positions.identified.all() and positions.examination.iloc[0] == 1.0
    details = demo_fit["result"].details
    assert details["pbm"]["method"] == "em" and details["pbm"]["converged"]
    runs = table(demo_fit["root"], "runs")
    recorded = json.loads(runs[runs.job == "click-model"].details.iloc[-1])
    assert recorded["pbm"]["examination"]["10"] == pytest.approx(fitted[9], abs=1e-6)  # also with the run


def ndcg_by_score(frame: pd.DataFrame, score: str, k: int = 10) -> float:
    values = []
    for _, group in frame.groupby("query_norm"):
        grades = group.grade.to_numpy(float)
        order = rank_query(group.product_id.to_numpy(), group[score].to_numpy())
        values.append(ndcg_at_k(grades[order], grades, k))
    return float(np.nanmean(values))


def test_click_labels_rank_better_than_ctr_on_the_noise_free_truth(demo_fit):
    labels = table(demo_fit["root"], "click_labels")
    truth = table(demo_fit["root"], "ground_truth")
    truth["query_norm"] = truth["query"].map(normalize_text)
    truth = truth.groupby(["query_norm", "product_id"], as_index=False).grade.max()
    pbm = labels[labels.click_model == "pbm"].merge(truth, on=["query_norm", "product_id"], how="left")
    assert pbm.grade.notna().all()  # the truth grades every shown pair
    sdbn = labels[labels.click_model == "sdbn"].set_index(["query_norm", "product_id"]).label
    pbm["sdbn"] = sdbn.reindex(pd.MultiIndex.from_frame(pbm[["query_norm", "product_id"]])).to_numpy()
    pbm["ctr"] = pbm.clicks / pbm.impressions
    window_ctr = pbm.clicks.sum() / pbm.impressions.sum()
    weight = settings_of({}).pairs.ctr_prior_weight  # build_pairs' smoothed CTR
    pbm["ctr_smoothed"] = (pbm.clicks + weight * window_ctr) / (pbm.impressions + weight)
    z = NormalDist().inv_cdf(0.5 + ClickModelSettings().confidence / 2)  # CTR's own lower bound, as the label's
    ctr, n = pbm.ctr, pbm.impressions.astype(float)
    pbm["ctr_lower"] = (ctr + z * z / (2 * n) - z * np.sqrt(ctr * (1 - ctr) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    busy = pbm[pbm.query_searches >= 20]
    scores = {name: ndcg_by_score(busy, name)
              for name in ("label", "relevance", "sdbn", "ctr", "ctr_smoothed", "ctr_lower")}
    print(f"nDCG@10 over {busy.query_norm.nunique()} queries with >= 20 searches:",
          {k: round(v, 4) for k, v in scores.items()})
    assert busy.query_norm.nunique() >= 100
    for baseline in ("ctr", "ctr_smoothed", "ctr_lower"):
        assert scores["label"] > scores[baseline] + 0.01, baseline


def test_click_labels_rows_and_columns(demo_fit):
    labels = table(demo_fit["root"], "click_labels")
    assert set(labels.click_model) == {"pbm", "sdbn"} and set(labels.ds) == {DS}
    assert not labels.duplicated(["query_norm", "product_id", "click_model"]).any()
    assert (labels.window_start == "2025-01-03").all() and (labels.window_end == DS).all()
    assert labels.relevance.between(0, 1).all()
    assert ((labels.ci_low <= labels.relevance + 1e-12) & (labels.relevance <= labels.ci_high + 1e-12)).all()
    assert (labels.label == labels.ci_low).all()
    assert (labels.clicks <= labels.impressions).all() and (labels.weighted_clicks >= labels.clicks).all()
    assert all(q == normalize_text(q) for q in labels.query_norm.unique())
    params = json.loads(labels[labels.click_model == "pbm"].model_params.iloc[0])
    assert params["model"] == "pbm" and len(params["examination"]) == 10 and params["purchase_weight"] == 4.0
    result = demo_fit["result"]
    assert result.rows_out == len(labels) == 2 * result.details["pairs"]


# ---------------------------------------------------------------------------------------------------------------
# The logs people have
# ---------------------------------------------------------------------------------------------------------------

T0 = dt.datetime(2025, 1, 7, 8, tzinfo=dt.timezone.utc)


def search_events(query_id: str, query: str, shown: Sequence[tuple[str, int | None]], clicked: set[str], *,
                  client: str | None = "client-1", bought: frozenset[str] = frozenset(), at: int = 0) -> list[dict]:
    """The events of one search: an impression per (product, position), a click per clicked product (in the order
    of `shown`), a cart and a purchase per bought one."""
    t = T0 + dt.timedelta(seconds=at)
    base = {"query_id": query_id, "client_id": client, "session_id": f"s-{query_id}", "user_query": query, "ds": DS}
    rows = [base | {"timestamp": t, "action_name": "impression", "object_id": p, "position": pos} for p, pos in shown]
    for i, (p, pos) in enumerate(shown):
        if p in clicked:
            rows.append(base | {"timestamp": t + dt.timedelta(seconds=5 + i), "action_name": "click", "object_id": p,
                                "position": pos})
        if p in bought:
            for j, action in enumerate(("add_to_cart", "purchase")):
                rows.append(base | {"timestamp": t + dt.timedelta(seconds=60 + i + j), "action_name": action,
                                    "object_id": p, "position": pos})
    return rows


def pbm_log(seed: int = 0, queries: int = 6, products: int = 5, searches: int = 80,
            fixed: tuple[str, int] | None = None) -> list[dict]:
    """A small log clicked as the PBM says (examination 1/p^0.8, attractiveness drawn per pair), each search showing
    its query's products in a random order; `fixed` = (product, position): that product always there."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for q in range(queries):
        names = [f"P{q}-{i}" for i in range(products)]
        attraction = dict(zip(names, rng.uniform(0.05, 0.8, products)))
        for s in range(searches):
            order = list(rng.permutation(names))
            if fixed is not None and fixed[0] in order:
                order.remove(fixed[0])
                order.insert(fixed[1] - 1, fixed[0])
            shown = [(p, i + 1) for i, p in enumerate(order)]
            clicked = {p for p, pos in shown if rng.random() < pos ** -0.8 and rng.random() < attraction[p]}
            rows += search_events(f"q{q}-s{s}", f"Query {q}", shown, clicked, client=f"client-{s % 7}", at=s)
    return rows


def fit(spark, rows: list[dict], **changes) -> ClickModelResult:
    settings = dataclasses.replace(ClickModelSettings(), max_iterations=60, **changes)
    events = to_spark(spark, pd.DataFrame(rows), QUERY_LOG)
    return fit_click_models(events, settings, window_days(DS, 1))


def labels_of(result: ClickModelResult, model: str = "pbm") -> pd.DataFrame:
    labels = local(result.labels)
    return labels[labels.click_model == model].set_index(["query_norm", "product_id"])


def test_positions_missing_everywhere_means_no_bias_and_says_so(spark):
    rows = [r | {"position": None} for r in pbm_log(queries=2, searches=30)]
    result = fit(spark, rows)
    assert result.bias.method == "no bias"
    assert any("no impression has a position" in note and "none is assumed" in note for note in result.notes)
    labels = labels_of(result)
    assert len(labels) == 10 and labels.relevance.between(0, 1).all()
    # examination 1 wherever the position is unknown: the evidence is the clicks over the impressions
    assert np.allclose(labels.examined, labels.impressions + labels.weighted_clicks - labels.clicks)
    sdbn = labels_of(result, "sdbn")
    assert (sdbn.examined == sdbn.weighted_clicks).all()  # only clicked results count as examined
    assert result.positions.count() == 0


def test_positions_missing_on_some_impressions_use_the_mean_examination(spark):
    rows = pbm_log(queries=3, searches=60)
    missing = {r["query_id"] for r in rows if r["query_id"].endswith("-s7")}
    rows = [r | {"position": None} if r["query_id"] in missing else r for r in rows]
    result = fit(spark, rows)
    assert result.bias.method == "em" and result.details["results_without_position"] == 15
    assert any("15 of 900 results without a position" in note for note in result.notes)


def test_all_positions_one_means_no_bias_and_says_so(spark):
    rows = [r | {"position": 1} for r in pbm_log(queries=2, searches=30)]
    result = fit(spark, rows)
    assert result.bias.method == "no bias" and result.bias.examination[1:] == [1.0]
    assert any("every impression is at position 1" in note for note in result.notes)
    assert any("every result of a clicked search at or above the last click counts as examined" in note
               for note in result.notes)
    sdbn = labels_of(result, "sdbn")
    clicked_searches = pd.DataFrame(rows).groupby("query_id").action_name.apply(lambda a: (a == "click").any())
    shown_in_clicked = len(clicked_searches[clicked_searches]) * 5
    assert sdbn.examined.sum() == pytest.approx(shown_in_clicked)  # every result of a clicked search, unweighted here
    positions = local(result.positions)
    assert positions.position.tolist() == [1] and positions.source.iloc[0] == "no bias assumed"


def test_a_query_searched_once_gets_a_wide_interval_and_a_note(spark):
    rows = pbm_log(queries=3, searches=60)
    rows += search_events("once-1", "Rare Query", [("R1", 1), ("R2", 2), ("R3", 3)], {"R2"})
    result = fit(spark, rows)
    rare = labels_of(result).loc["rare query"]
    assert (rare.query_searches == 1).all() and len(rare) == 3
    assert ((rare.ci_high - rare.ci_low) > 0.4).all()  # one search says little
    assert (rare.effective_impressions <= 1 + ClickModelSettings().prior_strength).all()
    assert rare.relevance["R2"] > rare.relevance["R1"]  # the clicked one, above the one skipped at the top
    assert result.details["queries_searched_once"] == 1
    assert any("1 of 4 queries searched once" in note for note in result.notes)


def test_a_client_with_ten_thousand_clicks_is_capped(spark):
    rows = pbm_log(queries=2, searches=60)
    products = [(f"B{i}", i + 1) for i in range(10)]
    for s in range(1000):  # 1,000 searches clicking all 10 results: 10,000 clicks
        rows += search_events(f"bot-{s}", "Query 0", products, {p for p, _ in products}, client="bot-1", at=1000 + s)
    result = fit(spark, rows, max_clicks_per_client=1000)
    assert result.details["clients_capped"] == 1 and result.details["clients_capped_examples"] == ["bot-1"]
    assert result.details["clicks_left_out_by_cap"] == 9000
    assert any("1 clients over 1000 clicks" in note and "9000 clicks" in note for note in result.notes)
    rejected = local(result.rejects)
    assert len(rejected) == 900 * 20 and rejected.reason.str.startswith("client over the click cap").all()
    labels = labels_of(result)
    assert labels.loc[("query 0", "B0")].clicks == 100  # its first 100 searches (1,000 clicks) are kept
    assert labels.loc[("query 0", "B0")].query_searches == 160


def test_a_product_shown_at_one_position_only_rests_on_the_fitted_bias(spark):
    rows = pbm_log(queries=4, searches=100, fixed=("P0-0", 3))
    result = fit(spark, rows)
    bias = result.bias
    assert bias.method == "em" and bias.identified[3]
    fixed = labels_of(result).loc[("query 0", "P0-0")]
    assert fixed.impressions == 100 and fixed.mean_position == 3
    extra = fixed.weighted_clicks - fixed.clicks
    assert fixed.examined == pytest.approx(100 * bias.examination[3] + extra)  # examined as position 3 is
    assert result.details["pairs_at_one_position"] == 1
    assert any("1 of 20 pairs shown at one position only" in note for note in result.notes)
    # the bias itself, on a small log: the right order and roughly the right size
    assert bias.examination[1] == 1.0 and bias.examination[1] > bias.examination[3] > bias.examination[5]
    assert bias.examination[5] == pytest.approx(5 ** -0.8, rel=0.35)


def test_a_position_no_fitting_pair_reaches_is_carried_from_the_one_above(spark):
    rows = pbm_log(queries=3, products=3, searches=60)  # positions 1..3, every product at each
    rng = np.random.default_rng(5)
    for first in [r for r in rows if r["action_name"] == "impression" and r["position"] == 1]:
        extra = first | {"object_id": f"X-{first['user_query']}", "position": 7}  # always at 7, alone
        rows.append(extra)
        if rng.random() < 0.3:
            rows.append(extra | {"action_name": "click", "timestamp": first["timestamp"] + dt.timedelta(seconds=30)})
    result = fit(spark, rows)
    bias = result.bias
    assert bias.method == "em" and bias.carried == {7: 3} and not bias.identified[7]
    assert bias.examination[7] == bias.examination[3] < bias.examination[2] < 1.0
    positions = local(result.positions).set_index("position")
    assert positions.source[7] == "not identified: carried from position 3" and positions.source[1] == \
        "reference (held at 1)"
    assert any("1 positions not linked to the top one" in note for note in result.notes)


def test_the_fit_is_deterministic(spark):
    rows = pbm_log(seed=3, queries=3, searches=60)
    first, second = fit(spark, rows), fit(spark, list(reversed(rows)))  # the same log in another order
    assert first.bias.method == "em" and first.bias.examination == second.bias.examination
    assert first.bias.iterations == second.bias.iterations
    columns = ["query_norm", "product_id", "click_model", "relevance", "label", "examined"]
    a, b = (local(r.labels)[columns].sort_values(columns[:3]).reset_index(drop=True) for r in (first, second))
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


def test_bad_events_are_rejected_and_counted(spark):
    rows = pbm_log(queries=1, searches=20)
    rows += [rows[0] | {"query_id": None}, rows[0] | {"action_name": "hover"}, rows[0] | {"user_query": "?!?"}]
    result = fit(spark, rows)
    reasons = set(local(result.rejects).reason)
    assert reasons == {"missing query_id", "unsupported action_name 'hover'", "empty query after normalization"}


# ---------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------


def test_click_model_job_writes_its_tables_and_accounts_for_every_event(spark, tmp_path):
    root = tmp_path / "warehouse"
    cfg = make_config(root, tmp_path / "models", **{"click_model.days": 2, "click_model.max_iterations": 30})
    day_before = (dt.date.fromisoformat(DS) - dt.timedelta(days=1)).isoformat()
    rows = pbm_log(queries=2, searches=40)
    rows = [r | {"ds": day_before, "timestamp": r["timestamp"] - dt.timedelta(days=1)}
            if int(r["query_id"].split("-s")[1]) % 2 else r for r in rows]  # odd searches the day before
    rows.append(rows[0] | {"object_id": None})
    Warehouse(spark, str(root), "delta-rs").replace(to_spark(spark, pd.DataFrame(rows), QUERY_LOG), QUERY_LOG, "t")
    result = run(spark, cfg, click_model, ds=DS)
    assert result.rows_in == len(rows) and result.rows_rejected == 1
    assert result.details["events_used"] == len(rows) - 1
    assert result.details["window"] == [day_before, DS] and result.details["days_without_events"] == []
    labels = table(root, "click_labels")
    assert result.rows_out == len(labels) == 20 and (labels.window_days == 2).all()
    assert table(root, "click_model_positions").run_id.unique().tolist() == labels.run_id.unique().tolist()
    rejects = table(root, "rejects")
    assert rejects.job.unique().tolist() == ["click-model"] and rejects.reason.tolist() == [
        "missing object_id (product id)"]
    first = len(labels)
    run(spark, cfg, click_model, ds=DS)  # a rerun replaces the day's rows
    assert len(table(root, "click_labels")) == first


def test_click_model_flags():
    modules = {click_model.JOB: click_model}
    args = build_parser(modules).parse_args(["click-model", "--ds", DS, "--days", "14", "--max-iterations", "90"])
    assert getattr(args, "click_model.days") == 14 and getattr(args, "click_model.max_iterations") == 90
    assert "click_model.days" in flag_keys(click_model)
