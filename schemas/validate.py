"""Input validation: a job checks every input against its TableSpec before it writes anything."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ByteType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from schemas.tables import TableSpec

# Source types that convert to the contract type without losing information.
_WIDENINGS: dict[type[DataType], tuple[type[DataType], ...]] = {
    LongType: (ByteType, ShortType, IntegerType),
    DoubleType: (FloatType, ByteType, ShortType, IntegerType, LongType),
    TimestampType: (TimestampNTZType,),
}


class SchemaError(ValueError):
    """An input table does not match its contract; the message is one line naming table and column."""


def _compatible(actual: DataType, expected: DataType) -> bool:
    if actual == expected:
        return True
    return isinstance(actual, _WIDENINGS.get(type(expected), ()))


def check_schema(actual: StructType, spec: TableSpec, where: str = "") -> None:
    """Raise SchemaError when a required column is missing or any known column has the wrong type."""
    location = f" (in {where})" if where else ""
    present = {f.name: f.dataType for f in actual.fields}
    for name in spec.required:
        if name not in present:
            raise SchemaError(f"{spec.name}: required column '{name}' is missing{location}")
    for field in spec.schema.fields:
        if field.name in present and not _compatible(present[field.name], field.dataType):
            raise SchemaError(
                f"{spec.name}: column '{field.name}' has type {present[field.name].simpleString()}, "
                f"expected {field.dataType.simpleString()}{location}"
            )


def conform(df: DataFrame, spec: TableSpec, where: str = "") -> DataFrame:
    """Validate `df` against `spec`, then return exactly the contract columns, cast, with absent optional ones as null."""
    check_schema(df.schema, spec, where)
    present = set(df.columns)
    columns: list[Column] = [
        (F.col(f.name) if f.name in present else F.lit(None)).cast(f.dataType).alias(f.name)
        for f in spec.schema.fields
    ]
    return df.select(*columns)
