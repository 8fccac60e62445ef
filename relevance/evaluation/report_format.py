"""How the audit report writes numbers: three decimals, counts with thousands separators, "–" for what is missing."""

from __future__ import annotations

from typing import Any

import pandas as pd

# purity: no pyspark torch transformers

DASH = "–"


def is_missing_value(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def fmt_number(value: Any, digits: int = 3) -> str:
    if is_missing_value(value):
        return DASH
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def fmt_count(value: Any) -> str:
    if is_missing_value(value):
        return DASH
    try:
        return f"{int(round(float(value))):,}"
    except (TypeError, ValueError):
        return str(value)


def fmt_interval(low: object, high: object) -> str:
    return "" if is_missing_value(low) or is_missing_value(high) else f"[{fmt_number(low)}, {fmt_number(high)}]"
