"""Click models: the position bias of the logs and each (query, product)'s relevance from a window of `query_log`
days, as Spark transformations (no I/O). `fit_click_models` is the whole computation the `click-model` job runs
between reading the window and writing `click_labels`, `click_model_positions` and `rejects`.

What is estimated, and how
--------------------------
Searches are read as UBI events: a search is a `query_id`; its results are the products with an impression or an
action in it, each at the position of its impression (or of an action where the impression carries none). A result
is *clicked* when the search has a click, add_to_cart or purchase on it (a cart implies a click); clicking twice
counts once. Carts and purchases count as stronger evidence: a clicked result weighs `cart_weight` clicks when it
was added to the cart and `purchase_weight` when it was bought (weights are per result, the highest applies).

- **PBM** (position-based model): P(click) = attractiveness(query, product) x examination(position). The
  examination probabilities are fitted by EM as Spark aggregations: the (query, product) attractiveness parameters
  stay in a DataFrame of one row per pair (its positions, impressions and clicks as arrays), each EM step computes
  the new attractiveness row by row and the new examination probabilities by one aggregation per position; only
  those per-position numbers (at most `max_position`) come to the driver. The top position's examination is held at
  1 (the model's scale). The rounds are extrapolated (SQUAREM, Varadhan & Roland 2008: three EM steps a round),
  falling back to plain EM steps when the likelihood drops; the fit stops when no examination probability moves
  more than `tolerance` in a round, or after `max_iterations` EM steps. Only pairs with at least
  `bias_min_impressions` impressions, shown at two positions or more and clicked at least once, fit the bias: a
  pair shown at one position says nothing about the bias (its attractiveness absorbs any), one never clicked says
  nothing either, and pairs seen a few times fit their own attractiveness to any bias (the incidental-parameter
  bias of the EM, large on real-sized logs).
  Each pair's relevance is then its attractiveness given the fitted bias: (weighted clicks + s * m) /
  (examined + s), where examined = the sum of the examination probabilities of its impressions (the expected number
  of times it was looked at) plus the extra weight of its carts and purchases, and the Beta prior has strength s =
  `prior_strength` and mean m = the window's attractiveness (sum of weighted clicks / sum of examined) among the
  pairs shown about as often (the same power of two of impressions: empirical Bayes by exposure, since pairs a
  ranker rarely shows are, in most logs, less attractive than those it shows often).
- **SDBN** (simplified dynamic Bayesian network, Chapelle & Zhang 2009; a cascade model): in a search with a click,
  the results up to the last clicked position were examined; the last click (in time: the order of clicks within
  the search) is the satisfied one. Attractiveness = weighted clicks / examined results, satisfaction = last clicks
  / clicks (both with Beta priors of strength `prior_strength`: attractiveness by exposure as above, satisfaction
  the window's), relevance = attractiveness x satisfaction. Searches without a click say nothing to the SDBN.

The interval of a relevance is the Wilson score interval at `confidence` of its posterior mean with the examined
impressions plus the prior's as the number of trials (`effective_impressions`); the SDBN's is its attractiveness's,
times its satisfaction. The click label (`label`) is the interval's lower end: ranked by it, a pair rises only as
far as its evidence carries it (on the demo's truth it ranks better than the posterior mean, which a pair seen a
few times can lift by chance, and better than CTR and CTR's own lower bound).

Logs as people have them (each said in the notes of the result):
- positions missing on some impressions: those results are examined with the window's mean examination
  probability (PBM) and only their clicks count as examined (SDBN); missing everywhere, or all 1: the position
  bias cannot be told from attractiveness, so none is assumed (examination 1 at every position) and the SDBN has
  nothing to order by (every result of a clicked search counts as examined);
- positions the fitted pairs do not connect to the top position (no pair seen at both): their examination is not
  identified and is carried from the nearest identified position above;
- a query searched once, a product shown at one position only: their labels rest on the fitted bias and the prior
  (wide intervals; `query_searches` says how much evidence the query had);
- a client that clicks thousands of times: its searches past `max_clicks_per_client` clicks in the window (in time
  order) are left out and their events rejected with the reason.
Events that cannot be read (no query_id or object_id, an unsupported action, text that is not UTF-8, an empty
query after normalization) are rejected; rows in = rows used + rows rejected.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from relevance.frames import not_utf8, raw_json, with_normalized_query
from relevance.settings import ClickModelSettings
from schemas.tables import CLICK_LABELS, CLICK_MODEL_POSITIONS, MAX_POSITION

ACTIONS = ("impression", "click", "add_to_cart", "purchase")
CLICK_ACTIONS = ("click", "add_to_cart", "purchase")
MODELS = ("pbm", "sdbn")
MAX_EXPOSURE_CLASS = 30  # pairs with 2^30 impressions or more share one prior mean
_EPS = 1e-6  # attractiveness and examination stay in [EPS, 1 - EPS] inside the EM
_DIGITS = 12  # per-position numbers are rounded on the driver, so that the fit does not depend on summation order


def window_days(end_ds: str, days: int) -> list[str]:
    """The `days` dates ending at `end_ds`, oldest first."""
    end = dt.date.fromisoformat(end_ds)
    return [(end - dt.timedelta(days=days - 1 - i)).isoformat() for i in range(days)]


# ---------------------------------------------------------------------------------------------------------------
# Events -> results of searches
# ---------------------------------------------------------------------------------------------------------------


# whitespace of every kind, as relevance.frames.is_blank counts it
_NOT_BLANK = r"[^\s\p{Z}\u0085\u200B\u200C\u200D\u2060\uFEFF]"


def is_blank(column: str) -> Column:
    """Null, empty or only whitespace of any kind: `relevance.frames.is_blank`, found by looking for the first
    character that is not blank (one step for an ordinary id, where replacing every blank costs a pass)."""
    return F.col(column).isNull() | ~F.col(column).rlike(_NOT_BLANK)


def classify_events(events: DataFrame) -> DataFrame:
    """The events with `query_norm`, `raw` and a `reason` (null when usable): a missing query_id or object_id, ids
    or text that are not UTF-8, an unsupported action, an empty query after normalization. Positions and
    timestamps are not reasons: a result without a position is handled by the models, a click without a time
    orders last."""
    staged = with_normalized_query(events.withColumn("raw", raw_json(events)), "user_query")
    reason = (
        F.when(is_blank("query_id"), "missing query_id")
        .when(is_blank("object_id"), "missing object_id (product id)")
        .when(not_utf8("user_query"), "user_query is not valid UTF-8")
        .when(not_utf8("query_id") | not_utf8("object_id") | not_utf8("action_name") | not_utf8("client_id"),
              "query_id, object_id, action_name or client_id is not valid UTF-8")
        .when(~F.col("action_name").isin(list(ACTIONS)) | F.col("action_name").isNull(),
              F.concat(F.lit("unsupported action_name '"), F.coalesce(F.col("action_name"), F.lit("null")), F.lit("'")))
        .when(is_blank("query_norm"), "empty query after normalization")
    )
    return staged.withColumn("reason", reason)


def search_results(events_ok: DataFrame, settings: ClickModelSettings) -> DataFrame:
    """One row per (query_id, product) with what the models read of it: its query and client, its position (the
    impression's, else an action's; null when none is in 1..MAX_POSITION) and `bucket` (positions past
    `max_position` in its bucket), whether it was clicked (a click, cart or purchase), carted, purchased, its
    evidence weight as clicks, its first click time; and, from its search, whether SDBN counts it examined
    (`sdbn_examined`: in a search with a click, at or above the last clicked position, or clicked) and whether it
    holds the search's last click in time (`last_click`; ties: the lower position, then the product id).

    The events are shuffled once, by search; the per-search steps reuse that partitioning."""
    action = F.col("action_name")
    position = F.when(F.col("position").between(1, MAX_POSITION), F.col("position"))
    clicked = action.isin(list(CLICK_ACTIONS))
    results = events_ok.repartition("query_id").groupBy("query_id", F.col("object_id").alias("product_id")).agg(
        F.min("query_norm").alias("query_norm"),
        F.min("client_id").alias("client_id"),
        F.coalesce(F.min(F.when(action == "impression", position)), F.min(position)).alias("position"),
        F.max(clicked).alias("clicked"),
        F.max(action.isin("add_to_cart", "purchase")).alias("carted"),
        F.max(action == "purchase").alias("purchased"),
        F.min(F.when(clicked, F.col("timestamp"))).alias("click_time"),
        F.min("timestamp").alias("seen_time"),
    ).withColumn("bucket", F.when(F.col("position").isNotNull(),  # least() skips a null
                                  F.least(F.col("position"), F.lit(settings.max_position))).cast("int"))
    search = Window.partitionBy("query_id")
    last_in_time = Window.partitionBy("query_id").orderBy(
        F.col("clicked").desc(), F.col("click_time").desc_nulls_last(), F.col("position").desc_nulls_last(),
        F.col("product_id").desc())
    last_position = F.max(F.when(F.col("clicked"), F.col("position"))).over(search)
    any_click = F.max("clicked").over(search)
    return (results.withColumn("weight", evidence_weight(settings))
            .withColumn("sdbn_examined", any_click & (F.col("clicked") | F.coalesce(
                F.col("position") <= last_position, F.lit(False))))
            .withColumn("last_click", F.col("clicked") & (F.row_number().over(last_in_time) == 1)))


@dataclass
class CappedClients:
    results: DataFrame  # the results of the searches kept
    dropped_searches: DataFrame  # query_id of each search left out
    clients: int  # clients capped
    clicks_left_out: int
    examples: list[str]  # a few capped client ids, the most clicks first


def cap_clients(results: DataFrame, max_clicks: int) -> CappedClients:
    """Each client's searches in time order (then by query_id) until its clicks in the window pass `max_clicks`;
    the searches after that are left out. Results without a client are never capped."""
    searches = results.groupBy("query_id").agg(F.min("client_id").alias("client_id"),
                                                F.min("seen_time").alias("seen_time"),
                                                F.sum(F.col("clicked").cast("long")).alias("clicks"))
    in_order = Window.partitionBy("client_id").orderBy(F.col("seen_time").asc_nulls_last(), "query_id") \
        .rowsBetween(Window.unboundedPreceding, 0)
    over = searches.where(F.col("client_id").isNotNull()) \
        .withColumn("_clicks_so_far", F.sum("clicks").over(in_order)).where(F.col("_clicks_so_far") > max_clicks)
    over = over.select("query_id", "client_id", "clicks").cache()
    per_client = over.groupBy("client_id").agg(F.sum("clicks").alias("clicks"))
    totals = per_client.agg(F.count("*"), F.sum("clicks")).collect()[0]
    if not totals[0]:
        over.unpersist()
        return CappedClients(results, over.select("query_id").limit(0), 0, 0, [])
    examples = [r["client_id"] for r in per_client.orderBy(F.col("clicks").desc(), "client_id").limit(3).collect()]
    dropped = over.select("query_id")
    return CappedClients(results.join(dropped, "query_id", "left_anti"), dropped, int(totals[0]), int(totals[1] or 0),
                         examples)


def evidence_weight(settings: ClickModelSettings) -> Column:
    """What a result weighs as clicks: 0 unclicked, 1 clicked, cart_weight carted, purchase_weight bought."""
    return (F.when(F.col("purchased"), F.lit(settings.purchase_weight))
            .when(F.col("carted"), F.lit(settings.cart_weight))
            .when(F.col("clicked"), F.lit(1.0)).otherwise(F.lit(0.0)))


def pair_position_cells(results: DataFrame) -> DataFrame:
    """The sufficient statistics of both models per (query_norm, product_id, bucket) (bucket null: results without
    a position): results n, clicks c, carts, purchases, weighted clicks, the extra weight of carts and purchases,
    the sum of positions, SDBN's examined results (weighted) and last clicks."""
    extra = F.when(F.col("clicked"), F.col("weight") - 1).otherwise(F.lit(0.0))
    return results.groupBy("query_norm", "product_id", "bucket").agg(
        F.count("*").cast("double").alias("n"),
        F.sum(F.col("clicked").cast("double")).alias("c"),
        F.sum(F.col("carted").cast("long")).alias("carts"),
        F.sum(F.col("purchased").cast("long")).alias("purchases"),
        F.sum("weight").alias("weighted_clicks"),
        F.sum(extra).alias("extra"),
        F.sum(F.col("position").cast("double")).alias("position_sum"),
        F.sum(F.when(F.col("sdbn_examined"), 1.0 + extra).otherwise(0.0)).alias("sdbn_examined"),
        F.sum(F.col("last_click").cast("double")).alias("last_clicks"),
    )


# ---------------------------------------------------------------------------------------------------------------
# PBM: the position bias by EM
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PositionBias:
    """The fitted examination probability per position (index = position; [0] unused) and how it was found."""

    examination: list[float]  # 1..max bucket present
    identified: list[bool]  # fitted (or the reference), per position; false where carried or no bias is assumed
    impressions: list[int]
    clicks: list[int]
    method: str  # "em" | "no bias"
    reason: str = ""  # why no bias, when none
    iterations: int = 0
    converged: bool = False
    fit_pairs: int = 0
    log_likelihood: float | None = None
    carried: dict[int, int] = field(default_factory=dict)  # unidentified position -> the position it is carried from
    reference: int | None = None  # the position held at 1 (the top one the fitting pairs reach)

    @property
    def positions(self) -> list[int]:
        return [p for p in range(1, len(self.examination)) if self.impressions[p] > 0]

    def as_details(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, "iterations": self.iterations,
                "converged": self.converged, "fit_pairs": self.fit_pairs, "log_likelihood": self.log_likelihood,
                "examination": {str(p): round(self.examination[p], 6) for p in self.positions},
                "unidentified_positions": {str(p): src for p, src in self.carried.items()}}


def _array_literal(values: list[float]) -> Column:
    return F.array(*[F.lit(float(v)) for v in values])


def _at(values: Column, bucket: Column) -> Column:
    """The per-position array's value at a position (the arrays hold position p at index p, 0-based)."""
    return F.element_at(values, bucket + 1)


def _clip(column: Column, low: float = _EPS, high: float = 1 - _EPS) -> Column:
    return F.least(F.greatest(column, F.lit(low)), F.lit(high))


def _alpha_step(alpha: Column, gamma: Column) -> Column:
    """One EM step of a pair's attractiveness: the expected attracted impressions over its impressions."""
    def attracted(acc: Column, x: Column) -> Column:
        g = _at(gamma, x["p"])
        return acc + x["c"] + (x["n"] - x["c"]) * alpha * (1 - g) / (1 - alpha * g)
    return _clip(F.aggregate(F.col("cells"), F.lit(0.0), attracted) / F.col("n_total"))


def _examined(alpha: Column, g: Column, n: Column, c: Column) -> Column:
    """Expected examined impressions of a cell: clicked ones surely, the others with P(E=1 | no click)."""
    return c + (n - c) * g * (1 - alpha) / (1 - alpha * g)


def _log_likelihood(alpha: Column, g: Column, n: Column, c: Column) -> Column:
    p = _clip(alpha * g)
    return c * F.log(p) + (n - c) * F.log(1 - p)


@dataclass
class _Stats:
    gamma: list[float]
    log_likelihood: float
    pair_terms: tuple[float, float]


def _drop_local_checkpoint(frame: DataFrame) -> None:
    """Release the blocks a localCheckpoint stored. DataFrame.unpersist does not (the frame is not in the cache
    manager, and clearCache leaves it too); the RDD of its plan (a LogicalRDD) does."""
    plan = frame._jdf.queryExecution().analyzed()
    if plan.getClass().getSimpleName() == "LogicalRDD":
        plan.rdd().unpersist(False)


class _EmFit:
    """The EM over the frame of fitting pairs (`cells`: array of (p, n, c); `n_total`; `a`: the attractiveness),
    with the per-position numbers on the driver."""

    def __init__(self, pairs: DataFrame, size: int, ref: int, free: list[int], impressions: list[float]) -> None:
        self.size, self.ref, self.free, self.impressions = size, ref, free, impressions
        self.state = pairs
        self.replaced: DataFrame | None = None  # the state before `state`: dropped once `state` is stored

    def stats(self, frame: DataFrame, alpha: Column, gamma: list[float],
              pair_terms: tuple[Column, Column] | None = None) -> _Stats:
        """The M-step of the examination probabilities at (alpha, gamma) (one aggregation per position), the log
        likelihood there, and optional sums over pairs."""
        g_lit = _array_literal(gamma)
        exploded = frame.select(F.posexplode("cells").alias("i", "x"), alpha.alias("a"),
                                *([t.alias(f"t{k}") for k, t in enumerate(pair_terms)] if pair_terms else []))
        x, a = F.col("x"), F.col("a")
        g = _at(g_lit, x["p"])
        aggs = [F.sum(_examined(a, g, x["n"], x["c"])).alias("examined"),
                F.sum(_log_likelihood(a, g, x["n"], x["c"])).alias("ll")]
        if pair_terms:
            aggs += [F.sum(F.when(F.col("i") == 0, F.col(f"t{k}")).otherwise(0.0)).alias(f"t{k}")
                     for k in range(len(pair_terms))]
        rows = exploded.groupBy(x["p"].alias("p")).agg(*aggs).collect()
        new = list(gamma)
        for r in rows:
            p = int(r["p"])
            if p != self.ref and self.impressions[p] > 0:
                new[p] = round(min(max(r["examined"] / self.impressions[p], _EPS), 1.0), _DIGITS)
        terms = (round(sum(r["t0"] for r in rows), _DIGITS), round(sum(r["t1"] for r in rows), _DIGITS)) \
            if pair_terms else (0.0, 0.0)
        return _Stats(new, round(sum(r["ll"] for r in rows), 6), terms)

    def release_replaced(self) -> None:
        if self.replaced is not None:
            _drop_local_checkpoint(self.replaced)
            self.replaced = None

    def release(self) -> None:
        self.release_replaced()
        _drop_local_checkpoint(self.state)

    def run(self, gamma: list[float], max_steps: int, tolerance: float) -> tuple[list[float], int, bool, float]:
        """SQUAREM rounds of three EM steps from `gamma` (the attractiveness in the state's `a`); returns the
        examination probabilities, the EM steps taken, whether the fit converged and the final log likelihood."""
        steps, converged, previous_ll, max_step = 0, False, -math.inf, 64.0
        ll = -math.inf
        while steps + 3 <= max(max_steps, 3):
            state = self.state
            a0 = F.col("a")
            s1 = self.stats(state, a0, gamma)
            self.release_replaced()  # `state` is stored now: its lineage no longer reaches the state before it
            gamma1, ll = s1.gamma, s1.log_likelihood
            if ll < previous_ll - 1e-6 * abs(previous_ll):
                max_step = 1.0  # the extrapolation made the fit worse: plain EM steps from now on
            previous_ll = ll
            frame = state.withColumn("a1", _alpha_step(a0, _array_literal(gamma)))
            a1 = F.col("a1")
            a2 = _alpha_step(a1, _array_literal(gamma1))
            s2 = self.stats(frame, a1, gamma1, ((a1 - a0) ** 2, (a2 - 2 * a1 + a0) ** 2))
            gamma2 = s2.gamma
            r = [gamma1[p] - gamma[p] for p in self.free]
            v = [gamma2[p] - 2 * gamma1[p] + gamma[p] for p in self.free]
            r_norm = math.sqrt(sum(x * x for x in r) + s2.pair_terms[0])
            v_norm = math.sqrt(sum(x * x for x in v) + s2.pair_terms[1])
            step = -min(max(r_norm / v_norm, 1.0), max_step) if v_norm > 0 else -1.0
            step = round(step, 9)
            gamma_p = list(gamma)
            for p, rp, vp in zip(self.free, r, v):
                gamma_p[p] = round(min(max(gamma[p] - 2 * step * rp + step * step * vp, _EPS), 1.0), _DIGITS)
            extrapolated = frame.withColumn("a2", a2).withColumn(
                "ap", _clip(a0 - 2 * step * (a1 - a0) + step * step * (F.col("a2") - 2 * a1 + a0)))
            ap = F.col("ap")
            s3 = self.stats(extrapolated, ap, gamma_p)
            new_state = extrapolated.select("cells", "n_total", _alpha_step(ap, _array_literal(gamma_p)).alias("a"))
            self.replaced, self.state = state, new_state.localCheckpoint(eager=False)  # stored by the next
            # round's first aggregation
            steps += 3
            moved = max((abs(s3.gamma[p] - gamma[p]) for p in self.free), default=0.0)
            gamma = s3.gamma
            if moved < tolerance:
                converged = True
                break
        return gamma, steps, converged, ll


@contextmanager
def small_aggregations(spark: SparkSession, partitions: int) -> Iterator[None]:
    """The EM's aggregations are tiny (a few hundred per-position sums over a frame already in memory) and many: run
    them without adaptive query execution, which plans each shuffle as a stage of its own (about half the time of
    each step here), on as many shuffle partitions as the frame has; the session's settings are restored after."""
    conf = spark.conf
    keys = ("spark.sql.adaptive.enabled", "spark.sql.shuffle.partitions")
    before = {key: conf.get(key, None) for key in keys}
    conf.set("spark.sql.adaptive.enabled", "false")
    conf.set("spark.sql.shuffle.partitions", str(max(1, partitions)))
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                conf.unset(key)
            else:
                conf.set(key, value)


def _components(edges: list[tuple[int, int]]) -> Callable[[int], int]:
    """Union-find over positions linked by a pair seen at both; returns the root of a position."""
    parent: dict[int, int] = {}

    def root(p: int) -> int:
        parent.setdefault(p, p)
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for a, b in sorted(edges):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return root


def fit_position_bias(position_cells: DataFrame, settings: ClickModelSettings) -> PositionBias:
    """The PBM's examination probability per position, by EM over the pairs that can tell it (see the module's
    docstring); `position_cells` as `pair_position_cells` makes them."""
    cells = position_cells.where(F.col("bucket").isNotNull()).select(
        "query_norm", "product_id", F.col("bucket").alias("p"), "n", "c")
    per_position = cells.groupBy("p").agg(F.sum("n").alias("n"), F.sum("c").alias("c")).collect()
    size = settings.max_position + 1
    impressions, clicks = [0] * size, [0] * size
    for r in per_position:
        impressions[int(r["p"])], clicks[int(r["p"])] = int(r["n"]), int(r["c"])
    present = [p for p in range(1, size) if impressions[p] > 0]

    def no_bias(reason: str) -> PositionBias:
        top = (present[-1] if present else 1) + 1
        return PositionBias([1.0] * top, [False] * top, impressions[:top], clicks[:top], "no bias", reason)

    if not present:
        return no_bias("no impression has a position: the position bias cannot be told from attractiveness, none "
                       "is assumed")
    if len(present) == 1:
        return no_bias(f"every impression is at position {present[0]}: the position bias cannot be told from "
                       "attractiveness, none is assumed")
    pairs = cells.groupBy("query_norm", "product_id").agg(
        F.sort_array(F.collect_list(F.struct("p", "n", "c"))).alias("cells"),
        F.sum("n").alias("n_total"), F.sum("c").alias("c_total"))
    fitting = pairs.where((F.size("cells") >= 2) & (F.col("c_total") > 0)
                          & (F.col("n_total") >= settings.bias_min_impressions)).select("cells", "n_total", "c_total")
    fitting = fitting.cache()
    edges = [(int(r["a"]), int(r["b"])) for r in fitting.select(
        F.col("cells")[0]["p"].alias("a"), F.explode(F.slice("cells", 2, size)).alias("x"))
        .select("a", F.col("x")["p"].alias("b")).distinct().collect()]
    if not edges:
        fitting.unpersist()
        return no_bias(f"no pair was shown at two positions or more with {settings.bias_min_impressions} impressions "
                       "and a click: the position bias cannot be told from attractiveness, none is assumed")
    root = _components(edges)
    ref = min(p for edge in edges for p in edge)
    connected = sorted({p for edge in edges for p in edge if root(p) == root(ref)})
    fitting = fitting.where(_at(_array_literal([1.0 if p in connected else 0.0 for p in range(size)]),
                                F.col("cells")[0]["p"]) > 0)
    fit_counts = fitting.select(F.inline("cells")).groupBy("p").agg(F.sum("n").alias("n"), F.sum("c").alias("c")) \
        .collect()
    fit_n = [0.0] * size
    fit_c = [0.0] * size
    for r in fit_counts:
        fit_n[int(r["p"])], fit_c[int(r["p"])] = float(r["n"]), float(r["c"])
    # start: each position's CTR relative to the reference's among the fitting pairs; attractiveness clicks over
    # expected examinations under it
    gamma = [1.0] * size
    for p in connected:
        if p != ref:
            gamma[p] = round(min(max((fit_c[p] / fit_n[p]) / max(fit_c[ref] / fit_n[ref], _EPS), 0.05), 1.0),
                             _DIGITS)
    g0 = _array_literal(gamma)
    expected = F.aggregate(F.col("cells"), F.lit(0.0), lambda acc, x: acc + x["n"] * _at(g0, x["p"]))
    partitions = max(1, position_cells.sparkSession.sparkContext.defaultParallelism)
    start = fitting.select("cells", "n_total", _clip(F.col("c_total") / expected).alias("a")).repartition(partitions)
    start = start.localCheckpoint(eager=True)
    fit_pairs = start.count()
    em = _EmFit(start, size, ref, [p for p in connected if p != ref], fit_n)
    fitting.unpersist()
    with small_aggregations(position_cells.sparkSession, partitions):
        gamma, steps, converged, ll = em.run(gamma, settings.max_iterations, settings.tolerance)
    em.release()

    # positions the fit does not reach: carried from the nearest identified position above (or 1.0 above all)
    top = present[-1] + 1
    examination, identified, carried = [1.0] * top, [False] * top, {}
    last_identified: int | None = None
    for p in range(1, top):
        if p in connected:
            examination[p], identified[p], last_identified = gamma[p], True, p
        elif impressions[p] > 0:
            examination[p] = examination[last_identified] if last_identified is not None else 1.0
            carried[p] = last_identified if last_identified is not None else 0
        elif last_identified is not None:
            examination[p] = examination[last_identified]
    return PositionBias(examination, identified, impressions[:top], clicks[:top], "em", "", steps, converged,
                        fit_pairs, ll, carried, ref)


# ---------------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------------


def _wilson(p: Column, n: Column, z: float) -> tuple[Column, Column]:
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * F.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return F.greatest(center - half, F.lit(0.0)), F.least(center + half, F.lit(1.0))


def exposure_class(impressions: Column) -> Column:
    """The power of two of a pair's impressions (0: 1 impression, 1: 2-3, 2: 4-7, ...): pairs shown about as often."""
    return F.least(F.floor(F.log2(F.greatest(impressions, F.lit(1)).cast("double"))), F.lit(MAX_EXPOSURE_CLASS)) \
        .cast("int")


def prior_means(stats: DataFrame, successes: str, trials: str) -> dict[int, float]:
    """Empirical Bayes: the pooled rate (sum of successes / sum of trials) of each exposure class, kept in
    [0.001, 0.999] (at most MAX_EXPOSURE_CLASS + 1 numbers to the driver)."""
    rows = stats.groupBy("exposure").agg(F.sum(successes).alias("s"), F.sum(trials).alias("t")).collect()
    pooled_s, pooled_t = sum(r["s"] or 0.0 for r in rows), sum(r["t"] or 0.0 for r in rows)
    overall = pooled_s / pooled_t if pooled_t > 0 else 0.5
    means = {int(r["exposure"]): (r["s"] / r["t"] if r["t"] else overall) for r in rows}
    return {k: round(min(max(v, 0.001), 0.999), _DIGITS) for k, v in means.items()}


def _class_lookup(means: dict[int, float]) -> Column:
    values = [means.get(k, 0.5) for k in range(MAX_EXPOSURE_CLASS + 1)]
    return _at(_array_literal(values), F.col("exposure"))


def _posterior(successes: Column, trials: Column, prior_mean: Column, strength: float) -> Column:
    return F.least((successes + strength * prior_mean) / (trials + strength), F.lit(1.0))


@dataclass
class ClickModelResult:
    """What `fit_click_models` computed: the `click_labels` and `click_model_positions` rows (without run_id and
    ds), the rejected events (`reason`, `raw`), the bias, and what the job reports."""

    labels: DataFrame
    positions: DataFrame
    rejects: DataFrame
    bias: PositionBias
    notes: list[str]
    details: dict[str, Any]


def pair_evidence(cells: DataFrame, bias: PositionBias, settings: ClickModelSettings) -> DataFrame:
    """Per pair: its counts, mean position and positions seen, and the evidence of both models: weighted clicks,
    PBM's examined impressions (the examination probability of each impression's position, the window's mean one
    for an impression without a position, plus the extra weight of carts and purchases), SDBN's examined results
    and last clicks."""
    exam = bias.examination + [bias.examination[-1]] * (settings.max_position + 1 - len(bias.examination))
    shown = sum(bias.impressions)
    mean_exam = sum(bias.examination[p] * bias.impressions[p] for p in range(1, len(bias.impressions))) / shown \
        if shown else 1.0
    examination = F.coalesce(_at(_array_literal(exam), F.col("bucket")), F.lit(round(mean_exam, _DIGITS)))
    with_position = F.col("bucket").isNotNull()
    return cells.groupBy("query_norm", "product_id").agg(
        F.sum("n").cast("long").alias("impressions"),
        F.sum("c").cast("long").alias("clicks"),
        F.sum("carts").alias("carts"),
        F.sum("purchases").alias("purchases"),
        (F.sum(F.when(with_position, F.col("position_sum"))) / F.sum(F.when(with_position, F.col("n"))))
        .alias("mean_position"),
        F.count(F.col("bucket")).alias("positions_seen"),
        F.sum("weighted_clicks").alias("weighted_clicks"),
        F.sum(F.col("n") * examination + F.col("extra")).alias("pbm_examined"),
        F.sum("sdbn_examined").alias("sdbn_examined"),
        F.sum("last_clicks").alias("last_clicks"),
    )


def _params(model: str, settings: ClickModelSettings, extra: dict[str, Any]) -> str:
    return json.dumps({"model": model, "cart_weight": settings.cart_weight, "purchase_weight": settings.purchase_weight,
                       "prior_strength": settings.prior_strength, "confidence": settings.confidence, **extra},
                      sort_keys=True)


def fit_click_models(events: DataFrame, settings: ClickModelSettings, window: list[str]) -> ClickModelResult:
    """The whole computation, no I/O: the window's `query_log` events -> click labels of both models, the
    position table, the rejected events and the notes on the logs (see the module's docstring)."""
    classified = classify_events(events)
    rejects = classified.where(F.col("reason").isNotNull()).select("reason", "raw")
    events_ok = classified.where(F.col("reason").isNull())
    results = search_results(events_ok, settings).cache()
    capped = cap_clients(results, settings.max_clicks_per_client)
    if capped.clients:
        reason = (f"client over the click cap: its searches after {settings.max_clicks_per_client} clicks in the "
                  "window are left out (click_model.max_clicks_per_client)")
        left_out = events_ok.join(capped.dropped_searches, "query_id", "left_semi")
        rejects = rejects.unionByName(left_out.select(F.lit(reason).alias("reason"), "raw"))
    kept = capped.results
    cells = pair_position_cells(kept).cache()
    searches = kept.groupBy("query_norm").agg(F.countDistinct("query_id").alias("query_searches"),
                                              F.countDistinct(F.when(F.col("clicked"), F.col("query_id")))
                                              .alias("clicked_searches")).cache()
    cells.count(), searches.count()  # both stored before the results they come from are let go
    results.unpersist()

    bias = fit_position_bias(cells, settings)
    pairs = pair_evidence(cells, bias, settings).join(searches.select("query_norm", "query_searches"), "query_norm") \
        .withColumn("exposure", exposure_class(F.col("impressions"))).cache()
    z = NormalDist().inv_cdf(0.5 + settings.confidence / 2)
    s = settings.prior_strength
    common = ["query_norm", "product_id", "query_searches", "impressions", "clicks", "carts", "purchases",
              "mean_position", "weighted_clicks"]

    pbm_means = prior_means(pairs, "weighted_clicks", "pbm_examined")
    prior = _class_lookup(pbm_means)
    relevance = _posterior(F.col("weighted_clicks"), F.col("pbm_examined"), prior, s)
    effective = F.col("pbm_examined") + s
    low, high = _wilson(relevance, effective, z)
    pbm_params = _params("pbm", settings, {
        "examination": [round(x, 6) for x in bias.examination[1:]], "bias": bias.method,
        "em_steps": bias.iterations, "converged": bias.converged, "bias_min_impressions": settings.bias_min_impressions,
        "max_position": settings.max_position,
        "prior_means_by_exposure": {str(k): round(v, 6) for k, v in sorted(pbm_means.items())}})
    pbm_rows = pairs.select(*common, F.lit("pbm").alias("click_model"), F.col("pbm_examined").alias("examined"),
                            effective.alias("effective_impressions"), relevance.alias("attractiveness"),
                            F.lit(None).cast("double").alias("satisfaction"), relevance.alias("relevance"),
                            low.alias("ci_low"), high.alias("ci_high"), low.alias("label"), prior.alias("prior_mean"),
                            F.lit(pbm_params).alias("model_params"))

    sdbn_means = prior_means(pairs, "weighted_clicks", "sdbn_examined")
    sat_totals = pairs.agg(F.sum("last_clicks"), F.sum("clicks")).collect()[0]
    sat_mean = round(min(max((sat_totals[0] or 0.0) / sat_totals[1], 0.001), 0.999), _DIGITS) if sat_totals[1] else 0.5
    a_prior = _class_lookup(sdbn_means)
    attractiveness = _posterior(F.col("weighted_clicks"), F.col("sdbn_examined"), a_prior, s)
    satisfaction = _posterior(F.col("last_clicks"), F.col("clicks").cast("double"), F.lit(sat_mean), s)
    s_effective = F.col("sdbn_examined") + s
    a_low, a_high = _wilson(attractiveness, s_effective, z)
    sdbn_params = _params("sdbn", settings, {
        "satisfaction_prior_mean": round(sat_mean, 6),
        "prior_means_by_exposure": {str(k): round(v, 6) for k, v in sorted(sdbn_means.items())},
        "positions": "logged" if bias.positions else "none"})
    sdbn_rows = pairs.select(*common, F.lit("sdbn").alias("click_model"), F.col("sdbn_examined").alias("examined"),
                             s_effective.alias("effective_impressions"), attractiveness.alias("attractiveness"),
                             satisfaction.alias("satisfaction"), (attractiveness * satisfaction).alias("relevance"),
                             (a_low * satisfaction).alias("ci_low"), (a_high * satisfaction).alias("ci_high"),
                             (a_low * satisfaction).alias("label"),
                             a_prior.alias("prior_mean"), F.lit(sdbn_params).alias("model_params"))
    labels = pbm_rows.unionByName(sdbn_rows).withColumn("window_start", F.lit(window[0])) \
        .withColumn("window_end", F.lit(window[-1])).withColumn("window_days", F.lit(len(window)))

    positions = events.sparkSession.createDataFrame(
        [(p, float(bias.examination[p]), int(bias.impressions[p]), int(bias.clicks[p]),
          bias.clicks[p] / bias.impressions[p], bool(bias.identified[p]), _position_source(bias, p))
         for p in bias.positions],
        "position long, examination double, impressions long, clicks long, ctr double, identified boolean, "
        "source string") \
        .withColumn("click_model", F.lit("pbm")).withColumn("window_start", F.lit(window[0])) \
        .withColumn("window_end", F.lit(window[-1]))

    facts = _log_facts(cells, pairs, searches, capped, bias, settings)
    return ClickModelResult(labels.select(*[c for c in CLICK_LABELS.columns if c not in ("run_id", "ds")]),
                            positions.select(*[c for c in CLICK_MODEL_POSITIONS.columns if c not in ("run_id", "ds")]),
                            rejects, bias, facts["notes"], facts["details"] | {
                                "pbm": bias.as_details() | {"prior_means_by_exposure": pbm_means},
                                "sdbn": {"prior_means_by_exposure": sdbn_means, "satisfaction_prior_mean": sat_mean}})


def _position_source(bias: PositionBias, p: int) -> str:
    if bias.method == "no bias":
        return "no bias assumed"
    if p in bias.carried:
        return f"not identified: carried from position {bias.carried[p]}" if bias.carried[p] else \
            "not identified: no identified position above, 1 assumed"
    return "reference (held at 1)" if p == bias.reference else "fitted by EM"


def _log_facts(cells: DataFrame, pairs: DataFrame, searches: DataFrame, capped: CappedClients, bias: PositionBias,
               settings: ClickModelSettings) -> dict[str, Any]:
    """What the logs were like and how each kind of trouble was handled: counts (a handful of numbers) and notes."""
    f = pairs.agg(F.count("*").alias("pairs"),
                  F.sum(F.when(F.col("positions_seen") == 1, 1).otherwise(0)).alias("one_position"),
                  F.sum("impressions").alias("results")).collect()[0]
    q = searches.agg(F.count("*").alias("queries"), F.sum("query_searches").alias("searches"),
                     F.sum("clicked_searches").alias("clicked"),
                     F.sum(F.when(F.col("query_searches") == 1, 1).otherwise(0)).alias("searched_once")).collect()[0]
    no_position = int(cells.where(F.col("bucket").isNull()).agg(F.sum("n")).collect()[0][0] or 0)
    notes = []
    if bias.method == "no bias":
        notes.append(f"PBM: {bias.reason}; SDBN: " + (
            "no positions, so only clicked results count as examined" if not bias.positions else
            "every result of a clicked search at or above the last click counts as examined"))
    else:
        shown = " ".join(f"{bias.examination[p]:.3f}" for p in bias.positions[:10])
        notes.append(f"PBM: position bias fitted by EM on {bias.fit_pairs} pairs in {bias.iterations} steps "
                     f"({'converged' if bias.converged else 'not converged: click_model.max_iterations reached'}); "
                     f"examination at positions {bias.positions[0]}..: {shown}")
        if bias.carried:
            notes.append(f"{len(bias.carried)} positions not linked to the top one by any fitting pair (e.g. "
                         f"{min(bias.carried)}): examination carried from the nearest identified position above")
    if no_position:
        notes.append(f"{no_position} of {f['results']} results without a position: PBM examines them with the "
                     "window's mean examination probability, SDBN counts them examined only when clicked")
    if q["searched_once"]:
        notes.append(f"{q['searched_once']} of {q['queries']} queries searched once: their labels rest on one search "
                     "and the prior (wide intervals; see query_searches)")
    if f["one_position"]:
        notes.append(f"{f['one_position']} of {f['pairs']} pairs shown at one position only: they do not fit the "
                     "bias; their attractiveness rests on the bias fitted from other pairs")
    if capped.clients:
        notes.append(f"{capped.clients} clients over {settings.max_clicks_per_client} clicks in the window (e.g. "
                     f"{capped.examples[0]}): {capped.clicks_left_out} clicks in their later searches left out")
    n_searches, clicked = int(q["searches"] or 0), int(q["clicked"] or 0)
    if n_searches - clicked:
        notes.append(f"{n_searches - clicked} of {n_searches} searches without a click: evidence for PBM, none for "
                     "SDBN")
    details = {"searches": n_searches, "searches_with_click": clicked, "results": int(f["results"] or 0),
               "results_without_position": no_position, "pairs": int(f["pairs"]), "queries": int(q["queries"]),
               "queries_searched_once": int(q["searched_once"] or 0), "pairs_at_one_position": int(f["one_position"] or 0),
               "clients_capped": capped.clients, "clients_capped_examples": capped.examples,
               "clicks_left_out_by_cap": capped.clicks_left_out}
    return {"notes": notes, "details": details}


def usable_labels(labels: DataFrame, labels_ds: str, click_model: str, min_impressions: int) -> DataFrame:
    """(query_norm, product_id, label) of a `click_labels` table: the `click_model`'s labels of partition `labels_ds`
    of pairs shown at least `min_impressions` times (what the audit and fine-tuning use)."""
    return (labels.where((F.col("ds") == F.lit(labels_ds)) & (F.col("click_model") == F.lit(click_model))
                         & (F.col("impressions") >= min_impressions) & F.col("label").isNotNull())
            .select("query_norm", "product_id", F.col("label").cast("double").alias("label")))
