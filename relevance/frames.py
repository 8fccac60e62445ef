"""Spark column helpers shared by several jobs (the pure text functions live in udfs.text)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StringType

from schemas.tables import TableSpec
from udfs.text import build_product_text, normalize_text


@pandas_udf(StringType())  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
def normalize_text_udf(texts: pd.Series) -> pd.Series:
    return texts.map(normalize_text)


def _as_mapping(value) -> Mapping[str, str]:
    """Spark maps arrive in pandas as dicts or as lists of (key, value) pairs."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    return dict(value)


def product_text_udf(max_words: int, description_words: int = 0):
    @pandas_udf(StringType())  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
    def product_text(titles: pd.Series, brands: pd.Series, categories: pd.Series, descriptions: pd.Series,
                     attributes: pd.Series) -> pd.Series:
        return pd.Series(
            [
                build_product_text(t, b, c, _as_mapping(a), max_words, d, description_words)
                for t, b, c, d, a in zip(titles, brands, categories, descriptions, attributes)
            ],
            index=titles.index,
        )

    return product_text


# Whitespace of every kind (Java regex): tabs, newlines, NBSP and other Unicode spaces, zero-width characters.
_BLANK_CHARS = r"[\s\p{Z}\u0085\u200B\u200C\u200D\u2060\uFEFF]"


def is_blank(column: str) -> Column:
    """Null, empty, or only whitespace of any kind (a title of tabs, newlines or NBSPs is blank)."""
    return F.col(column).isNull() | (F.regexp_replace(F.col(column), _BLANK_CHARS, "") == "")


def not_utf8(column: str) -> Column:
    """Present but not valid UTF-8 (a Parquet string column may hold any bytes; Python workers cannot decode them)."""
    return F.col(column).isNotNull() & ~F.is_valid_utf8(F.col(column))


def with_normalized_query(df: DataFrame, raw_column: str, out_column: str = "query_norm") -> DataFrame:
    """Add the normalized query, normalizing each distinct raw query once (bytes that are not UTF-8 reach the
    Python worker as U+FFFD, never as an undecodable string; callers reject such queries with `not_utf8`)."""
    distinct = df.select(raw_column).distinct().where(F.col(raw_column).isNotNull())
    mapping = distinct.withColumn(out_column, normalize_text_udf(F.make_valid_utf8(F.col(raw_column))))
    return df.join(F.broadcast(mapping), on=raw_column, how="left")


def text_fingerprint(query_norm: Column, product_text: Column) -> Column:
    """Hash of the exact query and product text the model sees."""
    return F.substring(F.sha2(F.concat_ws("\u001f", query_norm, product_text), 256), 1, 32)


def raw_json(df: DataFrame) -> Column:
    """The whole input row as JSON, for `rejects.raw` (bytes that are not UTF-8 shown as U+FFFD)."""
    return F.make_valid_utf8(F.to_json(F.struct(*[F.col(c) for c in df.columns])))


def rejects_frame(rejected: DataFrame, job: str, source_table: str, run_id: str, ds: str) -> DataFrame:
    """Shape rows carrying `reason` and `raw` columns into the `rejects` table's columns."""
    return rejected.select(
        F.lit(job).alias("job"),
        F.lit(source_table).alias("source_table"),
        F.col("reason"),
        F.col("raw"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("rejected_at"),
        F.lit(ds).alias("ds"),
    )


def to_spark(spark: SparkSession, frame: pd.DataFrame, spec: TableSpec) -> DataFrame:
    """A pandas frame (any extra columns dropped, missing ones null) as a DataFrame of the table's schema, via Arrow."""
    arrow = pa.Table.from_pandas(frame.reindex(columns=spec.columns), schema=to_arrow_schema(spec.schema), preserve_index=False)
    return spark.createDataFrame(arrow)


def whole_queries_up_to(rows: DataFrame, max_rows: int, seed: int) -> DataFrame:
    """`rows` (with a query_norm) cut to at most `max_rows` by keeping whole queries (rankings compare a query's
    products) in a seeded hash order: the same seed keeps the same queries. Only one row per query is ordered, on
    one partition; the rows themselves stay distributed."""
    per_query = rows.groupBy("query_norm").count().withColumn("_order", F.xxhash64(F.lit(seed), "query_norm"))
    running = F.sum("count").over(Window.orderBy("_order", "query_norm").rowsBetween(Window.unboundedPreceding, 0))
    kept = per_query.withColumn("_running", running).where(F.col("_running") <= max_rows).select("query_norm")
    return rows.join(kept, "query_norm", "left_semi")
