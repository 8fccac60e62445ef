"""Pairs: the Spark transformations from one day's query log, catalog and judgments to `pairs` (no I/O).

Every event either contributes to a pair or comes back as a reject with a reason; `build_pairs` and
`offline_pairs` are the whole transformation the `build_pairs` job runs between reading and writing.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from relevance.frames import (
    is_blank,
    not_utf8,
    product_text_udf,
    raw_json,
    text_fingerprint,
    with_normalized_query,
)
from relevance.settings import LabelScheme, PairsSettings
from schemas.tables import CATALOG, JUDGMENTS, MAX_POSITION, PAIRS, QUERY_LOG

ACTION_COUNTS = {"impression": "impressions", "click": "clicks", "add_to_cart": "carts", "purchase": "purchases"}


@dataclass
class BuiltPairs:
    pairs: DataFrame
    rejects: dict[str, DataFrame]  # source table -> rows with `reason` and `raw`
    events_accepted: DataFrame


# The product text is cut at max_words x this many characters: a 1 MB single-token title must not travel whole
# into pairs (the tokenizer truncates it anyway). Fine-tuning, scoring and audits all take their text from here.
MAX_CHARS_PER_WORD = 32


def latest_entry_first() -> WindowSpec:
    """Each product_id's catalog entries, the latest `updated_at` first: rank 1 is the one used. Ties go by title,
    brand, category, description and attributes, in sort order, so the choice never depends on how Spark read the
    rows (entries equal in all of these give the same text: either is the same choice)."""
    return Window.partitionBy("product_id").orderBy(
        F.col("updated_at").desc_nulls_last(), *[F.col(c).asc_nulls_last() for c in ("title", "brand", "category",
                                                                                      "description")],
        F.to_json(F.col("attributes")).asc_nulls_last())


LATER_ENTRY_USED = "duplicate product_id (an entry with a later updated_at is used)"
SAME_TIME_ENTRY_USED = ("duplicate product_id (the entry used has the same updated_at, so nothing orders them: the "
                        "first by title, then brand, category, description and attributes, is used)")


def catalog_texts(catalog: DataFrame, settings: PairsSettings) -> tuple[DataFrame, DataFrame]:
    """(product_id, product_text) for usable catalog rows (latest `updated_at` wins), and the rejected rows. The text
    is `build_product_text` with the settings' word budgets (`product_text_max_words`, `product_text_description_words`).

    Rejected: no product_id, a blank title (whitespace of any kind counts as blank), a product_id, title or
    attribute name that is not valid UTF-8, and the other entries of a duplicated product_id (LATER_ENTRY_USED, or
    SAME_TIME_ENTRY_USED where the entry used has the same updated_at). Brand, category, description and
    attribute values that are not valid UTF-8 are repaired (U+FFFD); a null brand, category, description or
    attributes is left out."""
    with_reason = catalog.withColumn("raw", raw_json(catalog)).withColumn(
        "reason",
        F.when(is_blank("product_id"), "catalog row without product_id")
        .when(not_utf8("product_id"), "product_id is not valid UTF-8")
        .when(is_blank("title"), "catalog row without title")
        .when(not_utf8("title"), "title is not valid UTF-8")
        .when(F.exists(F.map_keys("attributes"), lambda k: ~F.is_valid_utf8(k)), "an attribute name is not valid UTF-8"),
    )
    usable = with_reason.where(F.col("reason").isNull())
    newest = (usable.withColumn("_rank", F.row_number().over(latest_entry_first()))
              .withColumn("_used_at", F.first("updated_at").over(latest_entry_first())))
    duplicates = newest.where(F.col("_rank") > 1).withColumn(
        "reason", F.when(F.col("updated_at").eqNullSafe(F.col("_used_at")), F.lit(SAME_TIME_ENTRY_USED))
        .otherwise(F.lit(LATER_ENTRY_USED))
    ).drop("_used_at")
    max_words, description_words = settings.product_text_max_words, settings.product_text_description_words
    # descriptions travel to the UDF only when the text takes them (they are the catalog's longest field)
    description = F.make_valid_utf8("description") if description_words > 0 else F.lit(None).cast("string")
    text = product_text_udf(max_words, description_words)(
        F.make_valid_utf8("title"), F.make_valid_utf8("brand"), F.make_valid_utf8("category"),
        description, F.transform_values("attributes", lambda _, value: F.make_valid_utf8(value)),
    )
    texts = newest.where(F.col("_rank") == 1).select(
        "product_id", F.substring(text, 1, max_words * MAX_CHARS_PER_WORD).alias("product_text"))
    rejected = with_reason.where(F.col("reason").isNotNull()).unionByName(duplicates.drop("_rank"))
    return texts, rejected.select("reason", "raw")


def classify_events(events: DataFrame, texts: DataFrame, max_position: int = MAX_POSITION) -> DataFrame:
    """Normalize queries and attach a `reason` (null for usable events) and the `raw` row.

    Rejected, first reason first: a missing query_id, object_id or timestamp; text that is not valid UTF-8; an
    unsupported action; an impression without a position >= 1; a position above `max_position`; a timestamp
    whose UTC date is not the event's ds; an empty normalized query; a product not in the catalog; and exact
    copies of another event (query_log has no event id: importers drop repeated ids, such as UBI's, before)."""
    valid_actions = list(ACTION_COUNTS)
    staged = with_normalized_query(events.withColumn("raw", raw_json(events)), "user_query")
    staged = staged.join(texts, staged.object_id == texts.product_id, "left").drop(texts.product_id)
    outside_ds = (F.date_format(F.col("timestamp"), "yyyy-MM-dd") != F.col("ds")) if "ds" in events.columns else F.lit(False)
    problem = (
        F.when(is_blank("query_id"), "missing query_id")
        .when(is_blank("object_id"), "missing object_id (product id)")
        .when(F.col("timestamp").isNull(), "missing timestamp")
        .when(not_utf8("user_query"), "user_query is not valid UTF-8")
        .when(not_utf8("query_id") | not_utf8("object_id") | not_utf8("action_name"),
              "query_id, object_id or action_name is not valid UTF-8")
        .when(~F.col("action_name").isin(valid_actions) | F.col("action_name").isNull(),
              F.concat(F.lit("unsupported action_name '"), F.coalesce(F.col("action_name"), F.lit("null")), F.lit("'")))
        .when((F.col("action_name") == "impression") & (F.col("position").isNull() | (F.col("position") < 1)),
              "impression without a valid position")
        .when(F.col("position") > max_position,
              F.concat(F.lit("implausible position "), F.col("position").cast("string"), F.lit(f" (above {max_position})")))
        .when(outside_ds, "timestamp outside the event's ds (UTC date)")
        .when(is_blank("query_norm"), "empty query after normalization")
        .when(F.col("product_text").isNull(), "product not in catalog")
    )
    copies = Window.partitionBy(F.sha2(F.col("raw"), 256)).orderBy(F.col("_problem").isNotNull(), "raw")
    duplicate = F.when(F.row_number().over(copies) > 1, "exact duplicate of another event")
    return (staged.withColumn("_problem", problem)
            .withColumn("reason", F.coalesce(F.col("_problem"), duplicate)).drop("_problem"))


def query_segments(events_ok: DataFrame, head_share: float, torso_share: float) -> DataFrame:
    """Searches per normalized query and its head / torso / tail segment by cumulative traffic share."""
    searches = events_ok.groupBy("query_norm").agg(F.countDistinct("query_id").alias("query_searches"))
    ranked = Window.orderBy(F.col("query_searches").desc(), F.col("query_norm"))
    total = searches.agg(F.sum("query_searches")).collect()[0][0] or 1
    before = F.coalesce(F.sum("query_searches").over(ranked.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0)) / F.lit(total)
    segment = F.when(before < head_share, "head").when(before < head_share + torso_share, "torso").otherwise("tail")
    return searches.withColumn("segment", segment)


def aggregate_behavior(events_ok: DataFrame, prior_weight: float) -> DataFrame:
    """Behavior counts, mean impression position and smoothed CTR per (query_norm, product_id)."""
    counts = [F.sum(F.when(F.col("action_name") == action, 1).otherwise(0)).cast("long").alias(name)
              for action, name in ACTION_COUNTS.items()]
    mean_position = F.avg(F.when(F.col("action_name") == "impression", F.col("position").cast("double")))
    pairs = events_ok.groupBy("query_norm", F.col("object_id").alias("product_id")).agg(
        *counts, mean_position.alias("mean_position"), F.first("product_text").alias("product_text")
    )
    totals = pairs.agg(F.sum("clicks"), F.sum("impressions")).collect()[0]
    prior = (totals[0] or 0) / totals[1] if totals[1] else 0.0
    smoothed = (F.col("clicks") + F.lit(prior_weight * prior)) / (F.col("impressions") + F.lit(prior_weight))
    return pairs.withColumn("ctr_smoothed", smoothed)


CONFLICT_RULE = "the most frequent grade of the pair, a tie to the lower grade"


def classify_judgments(judgments: DataFrame, texts: DataFrame, scheme: LabelScheme | None = None) -> DataFrame:
    """Judged (query, product) rows with normalized query, product text and a `reason` when unusable.

    Rejected: an empty query, no product_id, a null or negative grade; given the label `scheme`
    (`labels.schemes.<name>`), also a grade outside its grades, a label it does not know (a label that is the
    grade as a number is fine) or one it grades differently; a product not in the catalog. Conflicting grades
    of one (query_norm, product_id) are resolved by CONFLICT_RULE: the rows with another grade are rejected
    (and counted), so every usable pair carries one grade."""
    staged = with_normalized_query(judgments.withColumn("raw", raw_json(judgments)), "query")
    staged = staged.join(texts, "product_id", "left")
    grade = F.col("grade")
    problem = (
        F.when(not_utf8("query"), "query is not valid UTF-8")
        .when(is_blank("query_norm"), "empty query after normalization")
        .when(is_blank("product_id"), "missing product_id")
        .when(grade.isNull(), "missing grade")
        .when(grade < 0, F.concat(F.lit("negative grade "), grade.cast("string")))
    )
    if scheme is not None:
        grades = {str(label): int(value) for label, value in scheme.grades.items()}
        allowed = sorted(set(grades.values()))
        label = F.trim(F.col("label"))
        label_grade = F.try_element_at(F.create_map(*[F.lit(x) for item in grades.items() for x in item]), label)
        numeric_label = F.coalesce(label.try_cast("double") == grade.cast("double"), F.lit(False))
        problem = (
            problem.when(~grade.isin(allowed), F.concat(F.lit("grade "), grade.cast("string"),
                                                        F.lit(f" is not in the label scheme ({', '.join(map(str, allowed))})")))
            .when(~is_blank("label") & label_grade.isNull() & ~numeric_label,
                  F.concat(F.lit("unknown label '"), label, F.lit("'")))
            .when(~is_blank("label") & (label_grade != grade),
                  F.concat(F.lit("grade "), grade.cast("string"), F.lit(" disagrees with its label '"), label,
                           F.lit("' (graded "), label_grade.cast("string"), F.lit(")")))
        )
    problem = problem.when(F.col("product_text").isNull(), "product not in catalog")

    staged = staged.withColumn("_problem", problem)
    votes = F.sum(F.col("_problem").isNull().cast("int")).over(Window.partitionBy("query_norm", "product_id", "grade"))
    ballot = F.when(F.col("_problem").isNull(), F.struct((-F.col("_votes")).alias("votes"), grade.alias("grade")))
    resolved = F.min(ballot).over(Window.partitionBy("query_norm", "product_id"))["grade"]
    conflict = F.when(F.col("_problem").isNull() & (grade != F.col("_resolved")), F.concat(
        F.lit("grade "), grade.cast("string"), F.lit(" conflicts with other judgments of the pair (resolved to "),
        F.col("_resolved").cast("string"), F.lit(f": {CONFLICT_RULE})")))
    return (staged.withColumn("_votes", votes).withColumn("_resolved", resolved)
            .withColumn("reason", F.coalesce(F.col("_problem"), conflict)).drop("_problem", "_votes", "_resolved"))


def build_pairs(
    events: DataFrame, catalog: DataFrame, judgments: DataFrame | None, settings: PairsSettings, ds: str, run_id: str,
    scheme: LabelScheme | None = None,
) -> BuiltPairs:
    """The whole transformation, no I/O: events + catalog (+ judgments graded by the label `scheme`) -> pairs and
    rejects."""
    texts, catalog_rejects = catalog_texts(catalog, settings)
    events = classify_events(events, texts)
    events_ok = events.where(F.col("reason").isNull())
    rejects = {QUERY_LOG.name: events.where(F.col("reason").isNotNull()), CATALOG.name: catalog_rejects}

    behavior = aggregate_behavior(events_ok, settings.ctr_prior_weight).withColumn("source", F.lit("log"))
    if judgments is not None and settings.include_judged:
        judged = classify_judgments(judgments, texts, scheme)
        logged_queries = behavior.select("query_norm").distinct()
        judged_ok = judged.where(F.col("reason").isNull()).join(logged_queries, "query_norm", "left_semi")
        new_candidates = judged_ok.join(behavior.select("query_norm", "product_id"), ["query_norm", "product_id"], "left_anti")
        behavior = behavior.unionByName(judged_candidate_pairs(new_candidates))
        rejects[JUDGMENTS.name] = judged.where(F.col("reason").isNotNull())

    segments = query_segments(events_ok, settings.head_share, settings.torso_share)
    return BuiltPairs(finish_pairs(behavior.join(segments, "query_norm", "left"), ds, run_id), rejects, events_ok)


def judged_candidate_pairs(judged_ok: DataFrame) -> DataFrame:
    """Usable judged (query_norm, product_id, product_text) rows as candidate pairs without behavior (source
    `judgment`), one per pair."""
    zeros = {name: F.lit(0).cast("long") for name in ACTION_COUNTS.values()}
    return judged_ok.select("query_norm", "product_id", "product_text").distinct().select(
        "query_norm", "product_id", *[v.alias(k) for k, v in zeros.items()],
        F.lit(None).cast("double").alias("mean_position"), "product_text",
        F.lit(None).cast("double").alias("ctr_smoothed"), F.lit("judgment").alias("source"),
    )


def finish_pairs(pairs: DataFrame, ds: str, run_id: str) -> DataFrame:
    """The `pairs` columns: the text fingerprint, the run and the ds added."""
    return (
        pairs.withColumn("text_fingerprint", text_fingerprint(F.col("query_norm"), F.col("product_text")))
        .withColumn("run_id", F.lit(run_id))
        .withColumn("ds", F.lit(ds))
        .select(*PAIRS.columns)
    )


def offline_pairs(catalog: DataFrame, judgments: DataFrame, settings: PairsSettings, ds: str, run_id: str,
                  scheme: LabelScheme | None = None) -> BuiltPairs:
    """Offline evaluation, for a team with a catalog and judgments but no query log: every usable judged
    (query, product) is a candidate pair, without behavior counts or a frequency segment. `events_accepted`
    holds the judgments used."""
    texts, catalog_rejects = catalog_texts(catalog, settings)
    judged = classify_judgments(judgments, texts, scheme)
    judged_ok = judged.where(F.col("reason").isNull())
    pairs = judged_candidate_pairs(judged_ok).withColumn("query_searches", F.lit(None).cast("long")) \
        .withColumn("segment", F.lit(None).cast("string"))
    return BuiltPairs(finish_pairs(pairs, ds, run_id),
                      {JUDGMENTS.name: judged.where(F.col("reason").isNotNull()), CATALOG.name: catalog_rejects}, judged_ok)
