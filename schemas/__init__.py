"""Table contracts (Spark schemas) and input validation."""

from schemas.tables import TABLES, TableSpec
from schemas.validate import SchemaError, check_schema, conform

__all__ = ["TABLES", "TableSpec", "SchemaError", "check_schema", "conform"]
