"""A query-log simulator for a catalog that has human ratings and no logs (Chorus / Icecat): `query_log` days made
from the `judgments` table, for the click-model job to read.

THIS IS A SIMULATION. Simulated logs are not real logs: every click here is drawn from the few assumptions below,
so a click model fitted to them recovers what was put in (the position bias, the grade-dependent click rates) and
says nothing about how real shoppers on this catalog behave. What it does show is how much a click model can learn
from a log of a given size, noise and bias, with real query and product texts and real grades behind it.

Usage (from the repository root; the warehouse of `--conf` must hold `judgments`, e.g. after `import-judgments`):

    .venv/bin/python bench/log_simulator.py --conf conf/chorus.yaml --ds 2026-12-01 [--set KNOB=VALUE ...]
        [--conf-set key.path=value ...]        simulate `days` days ending at --ds -> query_log (those ds replaced)
    .venv/bin/python -m jobs click-model --conf conf/chorus.yaml --ds 2026-12-01 --days 7
    .venv/bin/python bench/log_simulator.py --conf conf/chorus.yaml --ds 2026-12-01 --compare
        the click_labels of --ds against the grades the log was simulated from, and the fitted examination
        probabilities against 1/p^eta

Every knob is a field of `LogSimulation` (`--set p_click=0.05,0.2,0.45,0.7`; `--help` lists them).

What is assumed
---------------
- **Queries and candidates.** The queries are the judged ones (normalized as the rest of the project normalizes
  them, `udfs.text.normalize_text`, so a simulated search maps to its judgments' query_norm); a query's
  `user_query` is its most frequent raw judged text. Its candidates are its judged products, each with its judged
  grade (conflicting grades of a pair resolved as `build_pairs` resolves them: the most frequent, a tie to the
  lower). Unjudged products are never shown, unless `distractors` > 0: then that many catalog products the query's
  judgments do not name are added to its candidates as grade 0 (an unjudged product is taken as irrelevant, which a
  real one need not be). A query with fewer candidates than `page_size` shows all of them.
- **Popularity.** Searches pick a query by a Zipf law over the judged queries (weight 1/r^`zipf_exponent` for the
  r-th most popular; which query is r-th is drawn by the seed, not taken from any real traffic).
- **The production ranker** orders a query's candidates by grade + an error drawn once per (query, product) (sd
  `ranker_noise_sd`: the same mistakes every day, as a real ranker makes) + a jitter drawn per search (sd
  `search_noise_sd`: personalization, freshness, A/B tests; without it a product is always at one position and the
  position bias cannot be told from its attractiveness). A share `random_share` of searches is shown in random
  order (an exploration bucket). A text ranker such as BM25 is not simulated: its errors follow the texts, these
  follow nothing.
- **Position bias and clicks** follow the position-based model exactly: a result at position p is examined with
  probability 1/p^`examination_eta`, independently of the others and of what is above it; an examined result is
  clicked with probability `p_click[grade]`; a click is added to the cart with `p_cart[grade]`, a cart bought with
  `p_purchase[grade]`. So the PBM is the true model of these logs and the SDBN's cascade assumption (examined up to
  the last click) is not: a comparison on them favours the PBM by construction. Real users also skip, scan in
  blocks, reformulate, and click more or less by query and by what else is on the page; none of that is here.
- **Events** mirror the demo generator (`relevance/data/demo.py`): an `impression` row per shown product with its
  1-based position, then `click`, `add_to_cart` and `purchase` rows at the same product and position, a few seconds
  to minutes later (never past the search's day). Searches fall in sessions of up to 30 minutes
  (`searches_per_session` on average); each session belongs to a client drawn from
  days x searches_per_day / `searches_per_client` clients. Everything is drawn from one generator seeded by `seed`:
  the same judgments, knobs and end date give the same log, row for row.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import sys
import typing
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(ROOT))

from relevance.evaluation.ranking import ndcg_at_k, per_query_ranking_metrics, rank_query  # noqa: E402
from schemas.tables import QUERY_LOG  # noqa: E402
from udfs.text import normalize_text  # noqa: E402

JOB = "simulate-log"  # its row in `runs`
ACTIONS = ("impression", "click", "add_to_cart", "purchase")
_US_PER_S = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_S
_SESSION_US = 1800 * _US_PER_S


def _knob(default: Any, meaning: str) -> Any:
    return field(default=default, metadata={"meaning": meaning})


@dataclass(frozen=True)
class LogSimulation:
    """The simulation's knobs (each with its meaning; `--set NAME=VALUE` on the command line)."""

    days: int = _knob(7, "days simulated, ending at the end date (one query_log ds partition each)")
    searches_per_day: int = _knob(2000, "searches a day, over all queries")
    zipf_exponent: float = _knob(1.0, "query popularity: the r-th most popular judged query weighs 1/r^this "
                                      "(the order drawn by seed)")
    page_size: int = _knob(10, "results shown per search (all candidates when a query has fewer)")
    ranker_noise_sd: float = _knob(1.0, "production ranker: sd of the Gaussian error added to the true grade, "
                                        "drawn once per (query, product)")
    search_noise_sd: float = _knob(0.3, "production ranker: sd of the Gaussian jitter of its scores, drawn per search")
    random_share: float = _knob(0.0, "share of searches shown in random order (an exploration bucket)")
    examination_eta: float = _knob(0.8, "position bias: P(examined | position p) = 1 / p^eta")
    p_click: tuple[float, ...] = _knob((0.05, 0.2, 0.45, 0.7), "P(click | examined) by grade 0, 1, 2, ...")
    p_cart: tuple[float, ...] = _knob((0.02, 0.05, 0.15, 0.3), "P(add_to_cart | click) by grade")
    p_purchase: tuple[float, ...] = _knob((0.1, 0.2, 0.4, 0.55), "P(purchase | add_to_cart) by grade")
    searches_per_client: float = _knob(6.0, "searches per client over the simulated days (the number of clients)")
    searches_per_session: float = _knob(2.5, "searches per session of up to 30 minutes, on average")
    distractors: int = _knob(0, "catalog products without a judgment added to each query's candidates as grade 0 "
                                "(0: judged products only)")
    seed: int = _knob(0, "the seed of every draw")

    def __post_init__(self) -> None:
        problems = [name for name, ok in (
            ("days >= 1", self.days >= 1), ("searches_per_day >= 1", self.searches_per_day >= 1),
            ("zipf_exponent >= 0", self.zipf_exponent >= 0), ("page_size >= 1", self.page_size >= 1),
            ("ranker_noise_sd >= 0", self.ranker_noise_sd >= 0), ("search_noise_sd >= 0", self.search_noise_sd >= 0),
            ("random_share in [0, 1]", 0 <= self.random_share <= 1), ("examination_eta >= 0", self.examination_eta >= 0),
            ("searches_per_client > 0", self.searches_per_client > 0),
            ("searches_per_session > 0", self.searches_per_session > 0), ("distractors >= 0", self.distractors >= 0),
        ) if not ok]
        for name in ("p_click", "p_cart", "p_purchase"):
            values = getattr(self, name)
            if not values or not all(0 <= v <= 1 for v in values):
                problems.append(f"{name}: probabilities in [0, 1], one per grade")
        if len({len(self.p_click), len(self.p_cart), len(self.p_purchase)}) != 1:
            problems.append("p_click, p_cart and p_purchase: one value per grade each, as many of each")
        if problems:
            raise ValueError("LogSimulation: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


def knob_help() -> str:
    """One line per knob: name, default, meaning."""
    defaults = LogSimulation().as_dict()
    return "\n".join(f"  {f.name} (default {json.dumps(defaults[f.name])}): {f.metadata['meaning']}"
                     for f in dataclasses.fields(LogSimulation))


def with_overrides(settings: LogSimulation, overrides: Iterable[str]) -> LogSimulation:
    """`settings` with `name=value` items applied (a tuple knob takes comma-separated numbers); ValueError names
    an unknown knob or a value that does not parse."""
    hints = typing.get_type_hints(LogSimulation)
    changes: dict[str, Any] = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in hints:
            raise ValueError(f"--set '{item}': expected NAME=VALUE with NAME one of "
                             f"{', '.join(f.name for f in dataclasses.fields(LogSimulation))}")
        kind = hints[name]
        try:
            if typing.get_origin(kind) is tuple:
                changes[name] = tuple(float(x) for x in raw.split(",") if x.strip())
            else:
                changes[name] = kind(raw.strip())
        except ValueError:
            raise ValueError(f"--set '{item}': '{raw}' is not of type {getattr(kind, '__name__', kind)}") from None
    return dataclasses.replace(settings, **changes)


# ---------------------------------------------------------------------------------------------------------------
# The simulation (pandas and numpy only)
# ---------------------------------------------------------------------------------------------------------------


def resolve_judgments(judgments: pd.DataFrame) -> pd.DataFrame:
    """One row per (query_norm, product_id): its grade and the query's `user_query` (its most frequent raw text,
    a tie to the smallest), sorted. Rows without a query (after normalization), product id or a grade >= 0 are
    left out; conflicting grades resolve to the most frequent, a tie to the lower (as build_pairs resolves them)."""
    missing = [c for c in ("query", "product_id", "grade") if c not in judgments.columns]
    if missing:
        raise ValueError(f"judgments lack columns {missing}")
    j = pd.DataFrame({"query": judgments["query"].astype(object), "product_id": judgments["product_id"].astype(object),
                      "grade": pd.to_numeric(judgments["grade"], errors="coerce")})
    j["query_norm"] = [normalize_text(q) for q in j["query"]]
    pid = j["product_id"].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())
    j = j[(j["query_norm"] != "") & (pid != "") & j["grade"].notna() & (j["grade"] >= 0)].assign(product_id=pid)
    if (j["grade"] != np.floor(j["grade"])).any():
        raise ValueError("judgments: grades must be whole numbers")
    j = j.assign(grade=j["grade"].astype(np.int64), query=j["query"].astype(str))
    votes = j.groupby(["query_norm", "product_id", "grade"]).size().rename("votes").reset_index()
    pairs = (votes.sort_values(["query_norm", "product_id", "votes", "grade"], ascending=[True, True, False, True],
                               kind="stable").drop_duplicates(["query_norm", "product_id"]))
    texts = j.groupby(["query_norm", "query"]).size().rename("n").reset_index()
    text = (texts.sort_values(["query_norm", "n", "query"], ascending=[True, False, True], kind="stable")
            .drop_duplicates("query_norm").set_index("query_norm")["query"])
    pairs["user_query"] = pairs["query_norm"].map(text)
    return pairs[["query_norm", "user_query", "product_id", "grade"]].sort_values(
        ["query_norm", "product_id"], kind="stable").reset_index(drop=True)


def _with_distractors(rng: np.random.Generator, pairs: pd.DataFrame, n: int,
                      catalog_ids: Sequence[str] | None) -> pd.DataFrame:
    if n == 0:
        return pairs
    if catalog_ids is None:
        raise ValueError("distractors > 0 needs the catalog's product ids")
    pool = np.array(sorted({str(p) for p in catalog_ids}), dtype=object)
    extra = []
    for query_norm, group in pairs.groupby("query_norm", sort=True):
        judged = set(group["product_id"])
        drawn = pool[rng.choice(len(pool), size=min(len(pool), n + len(judged)), replace=False)]
        chosen = [p for p in drawn if p not in judged][:n]
        extra.append(pd.DataFrame({"query_norm": query_norm, "user_query": group["user_query"].iloc[0],
                                   "product_id": chosen, "grade": np.zeros(len(chosen), np.int64)}))
    return pd.concat([pairs, *extra], ignore_index=True).sort_values(
        ["query_norm", "product_id"], kind="stable").reset_index(drop=True)


def _uids(keys: Iterable[str]) -> np.ndarray:
    """Deterministic UUID-formatted ids derived from the keys."""
    return np.array([str(uuid.UUID(bytes=hashlib.md5(k.encode()).digest())) for k in keys], dtype=object)


def simulate_log(judgments: pd.DataFrame, settings: LogSimulation | None = None, end_date: str = "2026-12-01",
                 catalog_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """`settings.days` days of query_log events ending at `end_date` (inclusive), in QUERY_LOG's columns (ds = the
    search's UTC date), simulated from `judgments` (query, product_id, grade) as the module docstring says.
    Deterministic in (judgments, settings, end_date). `catalog_ids`: the products distractors are drawn from."""
    s = settings or LogSimulation()
    end = dt.date.fromisoformat(str(pd.Timestamp(end_date).date()))
    pairs = resolve_judgments(judgments)
    if pairs.empty:
        raise ValueError("no usable judgments (a query, a product id and a grade >= 0) to simulate a log from")
    top = int(pairs["grade"].max())
    if top >= len(s.p_click):
        raise ValueError(f"judgments hold grade {top}, but p_click, p_cart and p_purchase give {len(s.p_click)} "
                         f"grades (0..{len(s.p_click) - 1})")
    rng = np.random.default_rng(s.seed)
    pairs = _with_distractors(rng, pairs, s.distractors, catalog_ids)

    # candidates: (queries, cmax) matrices, row q = query q's products in product_id order
    queries = pd.Index(pd.unique(pairs["query_norm"]))
    q_of_pair = queries.get_indexer(pairs["query_norm"])
    n_cand = np.bincount(q_of_pair, minlength=len(queries))
    slot = pairs.groupby("query_norm", sort=False).cumcount().to_numpy()
    nq, cmax = len(queries), int(n_cand.max())
    grade_m = np.zeros((nq, cmax), np.int64)
    grade_m[q_of_pair, slot] = pairs["grade"].to_numpy()
    prod_m = np.full((nq, cmax), "", dtype=object)
    prod_m[q_of_pair, slot] = pairs["product_id"].to_numpy(dtype=object)
    is_cand = np.arange(cmax)[None, :] < n_cand[:, None]
    user_query = pairs.drop_duplicates("query_norm")["user_query"].to_numpy(dtype=object)
    ranker = grade_m + rng.normal(0.0, s.ranker_noise_sd, (nq, cmax))

    popularity = np.empty(nq)
    popularity[rng.permutation(nq)] = 1.0 / np.arange(1, nq + 1) ** s.zipf_exponent
    popularity /= popularity.sum()

    # searches, sorted by time
    n = s.days * s.searches_per_day
    day = np.repeat(np.arange(s.days), s.searches_per_day)
    end_us = int(np.datetime64(end.isoformat(), "us").astype(np.int64))
    day_start = end_us - (s.days - 1 - np.arange(s.days)) * _US_PER_DAY
    n_sessions = max(1, round(s.searches_per_day / s.searches_per_session))
    n_clients = max(1, round(n / s.searches_per_client))
    session = day * n_sessions + rng.integers(0, n_sessions, n)
    session_start = rng.integers(0, _US_PER_DAY - _SESSION_US, s.days * n_sessions)
    session_client = rng.integers(0, n_clients, s.days * n_sessions)
    time_us = day_start[day] + session_start[session] + rng.integers(0, _SESSION_US, n)
    query = rng.choice(nq, size=n, p=popularity)
    by_time = np.argsort(time_us, kind="stable")
    day, session, time_us, query = day[by_time], session[by_time], time_us[by_time], query[by_time]

    # the page of each search
    score = ranker[query] + rng.normal(0.0, s.search_noise_sd, (n, cmax))
    explore = rng.random(n) < s.random_share
    score[explore] = rng.random((int(explore.sum()), cmax))
    score = np.where(is_cand[query], score, -np.inf)
    page = min(s.page_size, cmax)
    shown_slot = np.argsort(-score, axis=1, kind="stable")[:, :page]
    shown = np.arange(page)[None, :] < n_cand[query][:, None]
    grade = np.where(shown, grade_m[query[:, None], shown_slot], 0)
    product = prod_m[query[:, None], shown_slot]

    # users: examination by position, clicks, carts and purchases by grade
    pos = np.broadcast_to(np.arange(1, page + 1), (n, page))
    examined = shown & (rng.random((n, page)) < 1.0 / pos ** s.examination_eta)
    click = examined & (rng.random((n, page)) < np.asarray(s.p_click)[grade])
    cart = click & (rng.random((n, page)) < np.asarray(s.p_cart)[grade])
    buy = cart & (rng.random((n, page)) < np.asarray(s.p_purchase)[grade])
    t0 = np.broadcast_to(time_us[:, None], (n, page))
    t_click = t0 + ((2 + rng.exponential(25, (n, page))) * _US_PER_S).astype(np.int64)
    t_cart = t_click + ((10 + rng.exponential(90, (n, page))) * _US_PER_S).astype(np.int64)
    t_buy = t_cart + ((30 + rng.exponential(300, (n, page))) * _US_PER_S).astype(np.int64)

    search = np.broadcast_to(np.arange(n)[:, None], (n, page))
    parts = [(shown, t0, 0), (click, t_click, 1), (cart, t_cart, 2), (buy, t_buy, 3)]
    s_idx = np.concatenate([search[m] for m, _, _ in parts])
    p = np.concatenate([pos[m] for m, _, _ in parts])
    prod = np.concatenate([product[m] for m, _, _ in parts])
    t = np.concatenate([tt[m] for m, tt, _ in parts])
    a = np.concatenate([np.full(int(m.sum()), code) for m, _, code in parts])
    t = np.minimum(t, day_start[day[s_idx]] + _US_PER_DAY - 1)  # never past the search's day
    order = np.lexsort((p, a, t, a > 0, s_idx))  # per search: its impressions, then its actions in time
    s_idx, p, prod, t, a = s_idx[order], p[order], prod[order], t[order], a[order]

    key = f"sim|{s.seed}|{end.isoformat()}"
    day_names = np.array([(end - dt.timedelta(days=s.days - 1 - d)).isoformat() for d in range(s.days)], dtype=object)
    query_ids = _uids(f"{key}|q|{i}" for i in range(n))
    session_ids = _uids(f"{key}|s|{x}" for x in range(s.days * n_sessions))
    client_names = np.array([f"sim-client-{c:06d}" for c in range(n_clients)], dtype=object)
    return pd.DataFrame({
        "query_id": query_ids[s_idx],
        "client_id": client_names[session_client[session[s_idx]]],
        "session_id": session_ids[session[s_idx]],
        "user_query": user_query[query[s_idx]],
        "timestamp": pd.Series(t.astype("datetime64[us]")).dt.tz_localize("UTC"),
        "action_name": np.array(ACTIONS, dtype=object)[a],
        "object_id": prod,
        "position": p.astype(np.int64),
        "ds": day_names[day[s_idx]],
    })[QUERY_LOG.columns]


def daily_counts(log: pd.DataFrame) -> pd.DataFrame:
    """Per ds: events, searches, searches with a click, and events of each action."""
    counts = log.groupby(["ds", "action_name"]).size().unstack(fill_value=0).reindex(columns=list(ACTIONS), fill_value=0)
    clicked = log[log["action_name"] == "click"].groupby("ds")["query_id"].nunique()
    return pd.DataFrame({
        "events": log.groupby("ds").size(),
        "searches": log.groupby("ds")["query_id"].nunique(),
        "clicked_searches": clicked.reindex(counts.index, fill_value=0),
        "impressions": counts["impression"], "clicks": counts["click"], "carts": counts["add_to_cart"],
        "purchases": counts["purchase"],
    }).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# The comparison: click labels against the grades, fitted examination against 1/p^eta
# ---------------------------------------------------------------------------------------------------------------


def _ndcg_shown(frame: pd.DataFrame, score: str, k: int) -> float:
    """Mean nDCG@k over queries, each query's shown pairs ranked by `score`, ideal = those pairs' grades."""
    values = []
    for _, group in frame.groupby("query_norm"):
        grades = group["grade"].to_numpy(float)
        order = rank_query(group["product_id"].to_numpy(), group[score].to_numpy())
        values.append(ndcg_at_k(grades[order], grades, k))
    return float(np.nanmean(values)) if values and not np.isnan(values).all() else float("nan")


def compare_click_labels(labels: pd.DataFrame, judgments: pd.DataFrame, *, min_searches: int = 20, k: int = 10,
                         ctr_prior_weight: float = 20.0, confidence: float = 0.9) -> dict[str, Any]:
    """nDCG@k against the judged grades of queries with >= `min_searches` searches in the window, for each way to
    rank a query's logged products: the PBM's click label (`label`, its interval's lower end) and posterior mean
    (`relevance`), the SDBN's label, CTR, smoothed CTR (build_pairs': weight `ctr_prior_weight`), CTR's own Wilson
    lower bound at `confidence`, and the production ranker (mean position). `ndcg_shown`: the ideal ranking is of
    the products the log showed (tests/test_click_model.py's comparison on the demo); `ndcg_judged`: of every judged
    product of the query (those never shown rank last). Logged products without a judgment count as grade 0 (the
    simulator showed them as such)."""
    truth = resolve_judgments(judgments)[["query_norm", "product_id", "grade"]]
    pbm = labels[labels["click_model"] == "pbm"].merge(truth, on=["query_norm", "product_id"], how="left")
    pbm["grade"] = pbm["grade"].fillna(0).astype(float)
    sdbn = labels[labels["click_model"] == "sdbn"].set_index(["query_norm", "product_id"])["label"]
    pbm["sdbn"] = sdbn.reindex(pd.MultiIndex.from_frame(pbm[["query_norm", "product_id"]])).to_numpy()
    pbm["ctr"] = pbm["clicks"] / pbm["impressions"]
    window_ctr = pbm["clicks"].sum() / pbm["impressions"].sum()
    pbm["ctr_smoothed"] = (pbm["clicks"] + ctr_prior_weight * window_ctr) / (pbm["impressions"] + ctr_prior_weight)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    ctr, n = pbm["ctr"], pbm["impressions"].astype(float)
    pbm["ctr_lower"] = (ctr + z * z / (2 * n) - z * np.sqrt(ctr * (1 - ctr) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    pbm["ranker"] = -pbm["mean_position"]
    busy = pbm[pbm["query_searches"] >= min_searches]
    judged = truth[truth["query_norm"].isin(busy["query_norm"])].rename(columns={"query_norm": "query"})
    names = ("label", "relevance", "sdbn", "ctr", "ctr_smoothed", "ctr_lower", "ranker")
    result: dict[str, Any] = {"k": k, "min_searches": min_searches, "queries": int(busy["query_norm"].nunique()),
                              "queries_with_a_gain": int(busy[busy["grade"] > 0]["query_norm"].nunique()),
                              "pairs": len(busy), "ndcg_shown": {}, "ndcg_judged": {}}
    for name in names:
        result["ndcg_shown"][name] = round(_ndcg_shown(busy, name, k), 4)
        ranked = busy[["query_norm", "product_id", name]].rename(columns={"query_norm": "query", name: "score"})
        per_query = per_query_ranking_metrics(ranked, judged, [k], relevant_min_grade=1)
        result["ndcg_judged"][name] = round(float(per_query[f"ndcg@{k}"].mean()), 4)
    return result


def examination_table(positions: pd.DataFrame, eta: float, max_position: int = 10) -> pd.DataFrame:
    """The fitted examination per position (click_model_positions, pbm) beside the simulated 1/p^eta."""
    fitted = positions[positions["click_model"] == "pbm"] if "click_model" in positions else positions
    fitted = fitted[fitted["position"] <= max_position].sort_values("position")
    true = 1.0 / fitted["position"].to_numpy(float) ** eta
    return pd.DataFrame({"position": fitted["position"].to_numpy(np.int64),
                         "fitted": fitted["examination"].to_numpy(float).round(4), "simulated": true.round(4),
                         "relative_error": (fitted["examination"].to_numpy(float) / true - 1).round(4)})


# ---------------------------------------------------------------------------------------------------------------
# The command line: the warehouse's judgments -> query_log; or the comparison
# ---------------------------------------------------------------------------------------------------------------


def _write_log(ctx: Any, simulation: LogSimulation) -> Any:
    """The body of the simulate-log run: read judgments (and the catalog's ids for distractors), simulate, replace
    the simulated ds partitions of query_log (one commit each)."""
    from jobs.core.job import JobResult
    from relevance.frames import to_spark
    from schemas.tables import CATALOG, JUDGMENTS

    wh, ds = ctx.warehouse, ctx.require_ds()
    judgments = wh.read(JUDGMENTS).select("query", "product_id", "grade").toPandas()
    catalog_ids = None
    if simulation.distractors:
        catalog_ids = [r["product_id"] for r in wh.read(CATALOG).select("product_id").collect()]
    log = simulate_log(judgments, simulation, ds, catalog_ids)
    per_day = daily_counts(log)
    for day in per_day.index:
        wh.check_replace(QUERY_LOG, int(per_day.loc[day, "events"]), {"ds": day}, "the simulation")
    written = {}
    for day, frame in log.groupby("ds", sort=True):
        written[str(day)] = wh.overwrite_partition(to_spark(ctx.spark, frame, QUERY_LOG), QUERY_LOG, {"ds": str(day)},
                                                   ctx.run_id)
    resolved = resolve_judgments(judgments)
    lines = [f"  {day}: {row.events} events, {row.searches} searches ({row.clicked_searches} with a click), "
             f"{row.clicks} clicks, {row.carts} carts, {row.purchases} purchases" for day, row in per_day.iterrows()]
    total = int(sum(written.values()))
    summary = (f"SIMULATED query_log (not a real log) from {len(resolved)} judged pairs of "
               f"{resolved['query_norm'].nunique()} queries: {total} events over {len(written)} days "
               f"{min(written)}..{max(written)} written to {wh.path(QUERY_LOG.name)}\n" + "\n".join(lines))
    details = {"simulated": True, "settings": simulation.as_dict(), "judgments_rows": len(judgments),
               "judged_pairs": len(resolved), "queries": int(resolved["query_norm"].nunique()),
               "per_day": {str(day): {k: int(v) for k, v in row.items()} for day, row in per_day.iterrows()}}
    return JobResult(rows_in=total, rows_out=total, details=details, summary=summary)


def _simulated_eta(wh: Any, ds: str, fallback: float) -> tuple[float, str]:
    """The examination eta of the latest successful simulate-log run of ds (from `runs`), else `fallback`."""
    from pyspark.sql import functions as F

    from schemas.tables import RUNS

    if wh.exists(RUNS.name):
        row = (wh.read(RUNS).where((F.col("job") == JOB) & (F.col("status") == "succeeded") & (F.col("ds") == ds))
               .orderBy(F.col("finished_at").desc()).select("details", "run_id").first())
        if row is not None:
            return float(json.loads(row["details"])["settings"]["examination_eta"]), f"simulate-log run {row['run_id']}"
    return fallback, "the settings given (no simulate-log run of this ds in runs)"


def _compare(settings: Any, wh: Any, ds: str, simulation: LogSimulation) -> None:
    from pyspark.sql import functions as F

    from schemas.tables import CLICK_LABELS, CLICK_MODEL_POSITIONS, JUDGMENTS

    labels = wh.read(CLICK_LABELS, {"ds": ds}).toPandas()
    if labels.empty:
        raise FileNotFoundError(f"no click_labels for ds {ds}: run `python -m jobs click-model --ds {ds}` first")
    positions = wh.read(CLICK_MODEL_POSITIONS, {"ds": ds}).where(F.col("click_model") == "pbm").toPandas()
    judgments = wh.read(JUDGMENTS).select("query", "product_id", "grade").toPandas()
    eta, source = _simulated_eta(wh, ds, simulation.examination_eta)
    print(f"SIMULATED log: the click_labels of ds {ds} against the grades it was simulated from")
    print(f"examination, fitted vs simulated 1/p^{eta:g} ({source}):")
    print(examination_table(positions, eta, simulation.page_size).to_string(index=False))
    comparison = compare_click_labels(labels, judgments, ctr_prior_weight=settings.pairs.ctr_prior_weight,
                                      confidence=settings.click_model.confidence)
    print(f"click_labels rows {len(labels)} ({int((labels['click_model'] == 'pbm').sum())} pairs x 2 models)")
    print(json.dumps(comparison, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/log_simulator.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Simulate query_log days from the warehouse's judgments (a SIMULATION: simulated logs are not "
                    "real logs), or compare the click labels fitted to them with the grades.",
        epilog="knobs (--set NAME=VALUE):\n" + knob_help())
    parser.add_argument("--conf", default="conf/local.yaml", help="config file of the warehouse (default: conf/local.yaml)")
    parser.add_argument("--ds", required=True, type=lambda v: dt.date.fromisoformat(v).isoformat(),
                        help="the last simulated day, YYYY-MM-DD")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a simulation knob (repeatable)")
    parser.add_argument("--conf-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, as the jobs' --set (repeatable)")
    parser.add_argument("--compare", action="store_true",
                        help="simulate nothing: compare the click_labels of --ds with the judgments and the fitted "
                             "examination with 1/p^eta")
    args = parser.parse_args(argv)

    from jobs.core.config import ConfigError, load_config
    from relevance.settings import settings_from_mapping

    try:
        simulation = with_overrides(LogSimulation(), args.set)
        settings = settings_from_mapping(load_config(args.conf, args.conf_set))
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from jobs.core.job import JobContext, JobError, run_job
    from jobs.core.spark import build_spark, open_warehouse

    spark = build_spark(settings)
    warehouse = open_warehouse(spark, settings)
    if args.compare:
        try:
            _compare(settings, warehouse, args.ds, simulation)
        except FileNotFoundError as exc:  # no click_labels, judgments or positions of that ds
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    ctx = JobContext(job=JOB, settings=settings, spark=spark, warehouse=warehouse, ds=args.ds)
    try:
        result = run_job(ctx, lambda c: _write_log(c, simulation))
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.summary)
    print(f"[{JOB}] run {ctx.run_id}: {result.rows_out} events; tables under {warehouse.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
