import pytest
from pyspark.sql.types import IntegerType, StringType, StructField, StructType, TimestampType

from schemas.tables import QUERY_LOG, TABLES
from schemas.validate import SchemaError, check_schema, conform


def struct(**types):
    return StructType([StructField(name, dtype) for name, dtype in types.items()])


GOOD = dict(query_id=StringType(), user_query=StringType(), timestamp=TimestampType(), action_name=StringType(),
            object_id=StringType(), position=IntegerType())


def test_every_design_table_has_a_schema():
    assert set(TABLES) >= {"query_log", "catalog", "judgments", "pairs", "relevance", "relevance_audit", "runs", "rejects"}
    assert {"query_norm", "product_id", "score", "grade_pred", "model_version", "text_fingerprint", "run_id",
            "scored_at"} <= set(TABLES["relevance"].columns)


def test_missing_column_is_one_line_naming_table_column_and_place():
    schema = struct(**{k: v for k, v in GOOD.items() if k != "timestamp"})
    with pytest.raises(SchemaError) as err:
        check_schema(schema, QUERY_LOG, "/wh/query_log")
    assert str(err.value) == "query_log: required column 'timestamp' is missing (in /wh/query_log)"


def test_wrong_type_is_reported_and_widening_is_accepted():
    check_schema(struct(**GOOD), QUERY_LOG)  # int position widens to bigint
    with pytest.raises(SchemaError, match="query_log: column 'position' has type string, expected bigint"):
        check_schema(struct(**{**GOOD, "position": StringType()}), QUERY_LOG)


def test_conform_casts_and_fills_optional_columns(spark):
    df = spark.createDataFrame([("q1", "sofa", None, "click", "P1", 2)], struct(**GOOD))
    out = conform(df, QUERY_LOG)
    assert out.columns == QUERY_LOG.columns
    row = out.first()
    assert row is not None and row.position == 2 and row.client_id is None
