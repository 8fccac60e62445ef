"""The errors a job stops with, and the one line a user sees for any exception.

A job answers every input problem in one of two ways: the row goes to `rejects` with a reason, or the
job stops before writing anything with ONE line naming the file or table, the column, and the row or
line where known. These are the exceptions of the second kind; `one_line` turns any other exception
(a Python error raised inside a Spark worker included) into a single readable line.
"""

from __future__ import annotations

import re

# purity: no pyspark torch transformers


class InputError(ValueError):
    """An input file or table cannot be used at all; the message names it (and the column, line or row)."""


class WarehouseError(RuntimeError):
    """A write the warehouse refuses (it would lose rows) or cannot make (disk full, read-only, ...)."""


class ModelError(RuntimeError):
    """A model directory is missing, incomplete or does not load; the message names the path."""


# "OSError: [Errno 28] No space left on device", "KeyError: 'x'", "pyarrow.lib.ArrowInvalid: ..."
_PYTHON_ERROR = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Z]\w*(?:Error|Exception|Exit|Interrupt)): ?(.*)$")
_SPARK_WRAPPERS = ("PythonException", "Py4JJavaError", "SparkException", "SparkRuntimeException",
                   "AnalysisException", "IllegalArgumentException", "StreamingQueryException")


def python_error_line(text: str) -> str | None:
    """The last `SomeError: message` line of a traceback printed inside `text` (a Spark worker's), if any."""
    found = None
    for line in text.splitlines():
        match = _PYTHON_ERROR.match(line.strip())
        if match and match.group(1) not in _SPARK_WRAPPERS:
            found = f"{match.group(1)}: {match.group(2)}".strip().rstrip(":")
    return found


def one_line(exc: BaseException) -> str:
    """One line for any exception: our own errors' message as is; the innermost Python error of a Spark
    failure rather than Spark's wrapper text; else `Type: first line of the message`."""
    if isinstance(exc, (InputError, WarehouseError)):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = str(exc)
    name = type(exc).__name__
    if name in _SPARK_WRAPPERS or "Traceback (most recent call last)" in text:
        inner = python_error_line(text)
        if inner:
            return f"{inner} (raised in a Spark task)"
    lines = [line for line in (part.strip() for part in text.splitlines()) if line]
    return f"{name}: {lines[0]}" if lines else name
