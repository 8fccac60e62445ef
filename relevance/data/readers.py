"""Pure readers for a team's own files: a catalog in JSON, JSON Lines, CSV or Parquet with a field mapping, and
judgments as a Quepid CSV export, TREC qrels, Rated Ranking Evaluator ratings JSON, or CSV / Parquet with a mapping.

pandas in, pandas out: no Spark and no writes (`jobs/import_catalog.py` and `jobs/import_judgments.py` do the I/O).
Each returns the rows it could map, shaped like the warehouse table, and the rows it could not, as `reason` + `raw`
for `rejects`. A file that cannot be used at all raises InputError naming it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from plumbing.errors import InputError
from relevance.data.importers import (
    CATEGORY_SEPARATOR,
    LINE,
    blank,
    first_reason,
    read_json_file,
    read_text,
    shown,
    split_by_reason,
)
from udfs.text import is_missing

# purity: no pyspark torch transformers

RECORD_FORMATS = ("json", "jsonl", "csv", "parquet")
JUDGMENT_FORMATS = ("quepid", "trec", "rre", "csv", "parquet")
_EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


# ---- records from files ----------------------------------------------------------------------------------------

def record_format(path: Path, fmt: str = "auto") -> str:
    """The format of a file: `fmt` when given, else from its extension."""
    if fmt != "auto":
        if fmt not in RECORD_FORMATS:
            raise InputError(f"{path}: unknown format '{fmt}' (expected auto or one of {', '.join(RECORD_FORMATS)})")
        return fmt
    if path.suffix.lower() not in _EXTENSIONS:
        raise InputError(f"{path}: cannot tell the format from the extension '{path.suffix}' "
                         f"(set the format to one of {', '.join(RECORD_FORMATS)})")
    return _EXTENSIONS[path.suffix.lower()]


def input_files(path: str | Path) -> list[Path]:
    """A file, or the files of a folder whose extension names a known format (sorted by name).

    An entry of the folder whose name says it is input (a known extension) but that is no readable file (a
    dangling symlink, a folder named `c.json`, a socket) is an InputError naming it: skipping it would import the
    rest as if it were the whole catalog. Entries with other extensions are not input and are left alone."""
    path = Path(path)
    if path.is_dir():
        named = sorted(p for p in path.iterdir() if p.suffix.lower() in _EXTENSIONS)
        for entry in named:
            problem = _unreadable_entry(entry)
            if problem:
                raise InputError(f"{entry}: {problem}; nothing was imported from {path} (remove or fix it)")
        files = named
        if not files:
            raise InputError(f"{path}: the folder holds no {', '.join(sorted(_EXTENSIONS))} file")
        return files
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    return [path]


def _unreadable_entry(entry: Path) -> str | None:
    """Why a folder entry named like an input file cannot be read as one (None when it can)."""
    if entry.is_symlink() and not entry.exists():
        return f"a symbolic link to {os.readlink(entry)}, which does not exist"
    if entry.is_dir():
        return "a folder, not a file"
    if not entry.is_file():
        return "not a regular file"
    if not os.access(entry, os.R_OK):
        return "not readable by this user"
    return None


def _json_records(path: Path, lines: bool) -> list[dict[str, Any]]:
    if not lines:
        document = read_json_file(path)
        if isinstance(document, dict):  # {"products": [...]}-style: the first list of objects
            document = next((v for v in document.values() if isinstance(v, list)), [document])
        if not isinstance(document, list):
            raise InputError(f"{path}: expected a JSON array of objects, found a JSON {type(document).__name__}")
        return [{**item, LINE: n + 1} if isinstance(item, dict) else {"_value": json.dumps(item, default=str), LINE: n + 1}
                for n, item in enumerate(document)]
    records = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            records.append({"_value": raw.decode("utf-8", "replace")[:500], LINE: number,
                            "_problem": f"line {number} is not a JSON object ({type(exc).__name__})"})
            continue
        records.append({**item, LINE: number} if isinstance(item, dict) else
                       {"_value": json.dumps(item, default=str), LINE: number, "_problem": f"line {number} is not a JSON object"})
    return records


def read_records(path: str | Path, fmt: str = "auto") -> pd.DataFrame:
    """Every record of a file or folder as one row (object columns, `_line` = the record's line or position, and a
    `_problem` for a record that is not an object)."""
    frames = []
    for file in input_files(path):
        kind = record_format(file, fmt)
        try:
            if kind in ("json", "jsonl"):
                frame = pd.DataFrame(_json_records(file, kind == "jsonl"))
            elif kind == "csv":
                frame = pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
                frame[LINE] = range(2, len(frame) + 2)
            else:
                frame = pd.read_parquet(file)
                frame[LINE] = range(1, len(frame) + 1)
        except InputError:
            raise  # already names the file and the line
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{file}: cannot be read as {kind}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        frame["_file"] = file.name
        frames.append(frame.astype(object))
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if records.empty:
        raise InputError(f"{path}: holds no records")
    return records


# ---- catalog ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CatalogMapping:
    """Which source field feeds each catalog column. `category` may be a path ("A > B") or a list; `attributes` a
    nested object; fields starting with one of `attribute_prefixes` (e.g. Chorus's attr_t_, attr_n_, attr_b_)
    become attributes named by the rest of the field name."""

    product_id: str = "product_id"
    title: str = "title"
    description: str | None = "description"
    brand: str | None = "brand"
    category: str | None = "category"
    attributes: str | None = "attributes"
    attribute_prefixes: tuple[str, ...] = ()
    updated_at: str | None = "updated_at"

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any] | None, prefixes: Sequence[str] | None = None) -> CatalogMapping:
        mapping = dict(mapping or {})
        unknown = set(mapping) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"catalog mapping: unknown catalog column(s) {', '.join(sorted(unknown))} "
                             f"(expected {', '.join(cls.__dataclass_fields__)})")
        return cls(**{k: v for k, v in mapping.items() if k != "attribute_prefixes"},
                   attribute_prefixes=tuple(prefixes or mapping.get("attribute_prefixes") or ()))


def attribute_value(value: Any) -> str | None:
    """An attribute value as text: booleans as yes / no, whole numbers without ".0", lists joined; None if missing."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not is_missing(value):
        return f"{value:g}" if abs(value) < 1e15 else str(value)
    if isinstance(value, (list, tuple)):
        parts = [attribute_value(v) for v in value]
        return ", ".join(p for p in parts if p) or None
    if is_missing(value) or (hasattr(value, "__len__") and not isinstance(value, str) and len(value) == 0):
        return None
    text = str(value).strip()
    return text or None


def attributes_of(record: Mapping[str, Any], mapping: CatalogMapping) -> dict[str, str]:
    """The attributes of one record: its nested object (if mapped) plus its prefixed flat fields."""
    found: dict[str, str] = {}
    nested = record.get(mapping.attributes) if mapping.attributes else None
    named = [(str(key), value) for key, value in nested.items()] if isinstance(nested, Mapping) else []
    for name, value in record.items():
        prefix = next((p for p in mapping.attribute_prefixes if isinstance(name, str) and name.startswith(p)), None)
        if prefix is not None and len(name) > len(prefix):
            named.append((name[len(prefix):].replace("_", " "), value))
    for name, value in named:
        text = attribute_value(value)
        if text:
            found[name] = text
    return found


def category_text(value: Any) -> str | None:
    """A category path as "A > B > C" from a path string or a list of levels."""
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
        levels = [str(v).strip() for v in list(value) if not is_missing(v) and str(v).strip()]
        return CATEGORY_SEPARATOR.join(levels) or None
    return None if is_missing(value) or not str(value).strip() else str(value).strip()


def _text_or_none(value: Any) -> str | None:
    return None if is_missing(value) or not str(value).strip() else str(value).strip()


def catalog_from_records(records: pd.DataFrame, mapping: CatalogMapping, now: pd.Timestamp
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Records -> (`catalog` rows, rejects). A record without an id or a title is rejected; a missing description,
    brand, category or attribute is left empty (the product text leaves it out). `updated_at` is the mapped field
    when it parses, else `now`.

    Entries of one product_id that `updated_at` orders (each has its own) are all kept: build_pairs uses the latest.
    Those it cannot order are decided here, in file order (see duplicate_reasons)."""
    def column(name: str | None) -> pd.Series:
        return records[name] if name and name in records else pd.Series(None, index=records.index, dtype=object)

    ids = pd.Series([None if is_missing(v) else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip())
                     for v in column(mapping.product_id)], index=records.index, dtype=object)
    titles = column(mapping.title)
    problem = records["_problem"] if "_problem" in records else pd.Series(None, index=records.index, dtype=object)
    reasons = first_reason(
        (problem.notna(), problem.astype(object)),
        (blank(ids), f"catalog record without an id (field '{mapping.product_id}')"),
        (blank(titles.astype(object)), f"catalog record without a title (field '{mapping.title}')"),
    )
    updated = parse_times(column(mapping.updated_at))
    reasons = reasons.where(reasons.notna(), duplicate_reasons(ids, updated, reasons.isna(), records))
    catalog = pd.DataFrame({
        "product_id": ids,
        "title": [_text_or_none(v) for v in titles],
        "description": [_text_or_none(v) for v in column(mapping.description)],
        "brand": [_text_or_none(v) for v in column(mapping.brand)],
        "category": [category_text(v) for v in column(mapping.category)],
        "attributes": [attributes_of(r, mapping) for r in records.to_dict("records")],
        "updated_at": updated.fillna(now),
    })
    kept, _ = split_by_reason(catalog, reasons)
    _, rejected = split_by_reason(_without_problem(records), reasons)  # rejects keep the record as it was read
    return kept, rejected


def parse_times(values: pd.Series) -> pd.Series:
    """Timestamps (UTC) of a column of text or numbers; NaT where missing or unparsable. pandas takes the format of
    the first value for all: a value written otherwise ("2024-01-01" after "2024-01-01T10:00:00Z") is parsed alone."""
    parsed = pd.to_datetime(values, errors="coerce", utc=True)
    retry = parsed.isna() & ~values.map(is_missing).astype(bool)
    if retry.any():
        parsed[retry] = pd.to_datetime(values[retry], errors="coerce", utc=True, format="mixed")
    return parsed


def duplicate_reasons(ids: pd.Series, updated: pd.Series, usable: pd.Series, records: pd.DataFrame) -> pd.Series:
    """The reject reason of each usable record that repeats a product_id with nothing to choose between them by
    (None for the others), the first of them in file order being kept:

    * no entry of the id has an updated_at: all but the first are rejected;
    * an entry without an updated_at where another entry of the id has one: it is rejected (the dated ones order);
    * an entry with the same updated_at as an earlier entry of the id: it is rejected.

    Entries with distinct updated_at values are all kept: build_pairs uses the latest one."""
    reasons = pd.Series(None, index=ids.index, dtype=object)

    def location(row: Any) -> str:  # where the kept entry is: `_line` as in rejects.raw, and its file
        line = records[LINE][row] if LINE in records else row
        file = records["_file"][row] if "_file" in records else None
        return f"_line {line}" + ("" if is_missing(file) else f" of {file}")

    candidates = ids[usable.astype(bool)]
    candidates = candidates[candidates.duplicated(keep=False)]
    for product_id, rows in candidates.groupby(candidates, sort=False).groups.items():
        stamps = updated[rows]
        dated = stamps.notna()
        if not dated.any():
            first = rows[0]
            for row in rows[1:]:
                reasons[row] = (f"duplicate product_id '{product_id}' (no updated_at to choose by; the first in the "
                                f"file is kept, at {location(first)})")
            continue
        kept_at: dict[pd.Timestamp, Any] = {}
        for row in rows:
            stamp = stamps[row]
            if pd.isna(stamp):
                reasons[row] = (f"duplicate product_id '{product_id}' without an updated_at, while other entries of "
                                "it have one (the latest dated entry is used)")
            elif stamp in kept_at:
                reasons[row] = (f"duplicate product_id '{product_id}' with the same updated_at {stamp.isoformat()} as "
                                f"an earlier entry (nothing to choose by; the first in the file is kept, at "
                                f"{location(kept_at[stamp])})")
            else:
                kept_at[stamp] = row
    return reasons


# ---- judgments -------------------------------------------------------------------------------------------------

def label_key(value: Any) -> str | None:
    """A rating as the key of a label scheme: trimmed text, a whole number without ".0" ("3.0" -> "3")."""
    if is_missing(value):
        return None
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text or None
    return str(int(number)) if number.is_integer() else text


def read_quepid_csv(path: str | Path) -> pd.DataFrame:
    """A Quepid export (`query,docid,rating`, header line) -> rows of query, product_id, label, `_line`."""
    frame = _read_csv(path, ("query", "docid", "rating"))
    return pd.DataFrame({"query": frame["query"], "product_id": frame["docid"], "label": frame["rating"], LINE: frame[LINE],
                         "_problem": frame["_problem"]})


def read_mapped_table(path: str | Path, fmt: str, mapping: Mapping[str, str]) -> pd.DataFrame:
    """CSV or Parquet judgments with a mapping {query, product_id, label} -> source column."""
    wanted = {"query": "query", "product_id": "product_id", "label": "grade", **dict(mapping or {})}
    records = read_records(path, fmt)
    for column, source in wanted.items():
        if source not in records:
            found = ", ".join(c for c in records.columns if not str(c).startswith("_"))
            raise InputError(f"{path}: column '{source}' (mapped to judgments.{column}) is missing (columns found: {found})")
    return pd.DataFrame({column: records[source] for column, source in wanted.items()} | {LINE: records[LINE]})


def read_trec_qrels(path: str | Path, queries: Mapping[str, str]) -> pd.DataFrame:
    """TREC qrels (`query_id iteration doc_id relevance`, whitespace-separated) with the query texts by id."""
    rows = []
    for number, line in enumerate(_text_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            rows.append({"query": None, "product_id": None, "label": None, LINE: number,
                         "_problem": f"line {number} has {len(parts)} fields, not 4 (query_id iteration doc_id relevance)"})
            continue
        query_id, _, doc_id, relevance = parts
        text = queries.get(query_id)
        rows.append({"query": text, "product_id": doc_id, "label": relevance, LINE: number, "query_id": query_id,
                     "_problem": None if text else f"query id '{query_id}' has no text in the queries file"})
    return pd.DataFrame(rows, columns=["query", "product_id", "label", LINE, "query_id", "_problem"], dtype=object)


def read_query_texts(path: str | Path) -> dict[str, str]:
    """Query texts by id from a `query_id<TAB>text` file (TREC topics as TSV, MS MARCO style)."""
    texts = {}
    for number, line in enumerate(_text_lines(path), start=1):
        if not line.strip():
            continue
        query_id, sep, text = line.partition("\t")
        if not sep:
            raise InputError(f"{path}: line {number} is not 'query_id<TAB>query text'")
        texts[query_id.strip()] = text.strip()
    return texts


def read_rre_ratings(path: str | Path) -> pd.DataFrame:
    """Rated Ranking Evaluator ratings JSON: `query_groups` (top level or inside `topics`), each with `queries`
    (their `placeholders` hold the query text, `$query` or the first value) and `relevant_documents`, either
    {doc_id: {"gain": g}} or {g: [doc_id, ...]}. Documents not listed are unjudged."""
    document = read_json_file(path)
    if not isinstance(document, dict):
        raise InputError(f"{path}: expected an RRE ratings object, found a JSON {type(document).__name__}")
    groups = list(document.get("query_groups") or [])
    for topic in document.get("topics") or []:
        groups += list(topic.get("query_groups") or []) if isinstance(topic, dict) else []
    if not groups:
        raise InputError(f"{path}: no 'query_groups' (at the top level or inside 'topics'): not an RRE ratings file")
    rows: list[dict[str, Any]] = []
    for g, group in enumerate(groups):
        where = f"query_groups[{g}]"
        if not isinstance(group, dict):
            rows.append({LINE: where, "_problem": f"{where} is not an object"})
            continue
        ratings = list(_rre_documents(group.get("relevant_documents")))
        for q, query in enumerate(group.get("queries") or []):
            text = _rre_query_text(query)
            for doc_id, gain in ratings:
                rows.append({"query": text, "product_id": doc_id, "label": gain, LINE: f"{where}.queries[{q}]",
                             "query_group": group.get("name"),
                             "_problem": None if text else f"{where}.queries[{q}] has no query text in its placeholders"})
        if not ratings:
            rows.append({LINE: where, "query_group": group.get("name"), "_problem": f"{where} has no relevant_documents"})
    return pd.DataFrame(rows, columns=["query", "product_id", "label", LINE, "query_group", "_problem"], dtype=object)


def _rre_documents(documents: Any) -> Iterable[tuple[str, Any]]:
    if not isinstance(documents, dict):
        return
    for key, value in documents.items():
        if isinstance(value, dict):  # {doc_id: {"gain": 3}}
            yield str(key), value.get("gain")
        elif isinstance(value, list):  # {"3": [doc_id, ...]}
            for doc_id in value:
                yield str(doc_id), key


def _rre_query_text(query: Any) -> str | None:
    if not isinstance(query, dict):
        return None
    placeholders = query.get("placeholders") or {}
    if not isinstance(placeholders, dict) or not placeholders:
        return None
    value = placeholders.get("$query", next(iter(placeholders.values())))
    return None if is_missing(value) or not str(value).strip() else str(value)


def judgments_from_labels(rows: pd.DataFrame, grades: Mapping[str, int], source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of query, product_id, label -> (`judgments` graded by the scheme's `grades`, rejects). Rejected: a row
    the reader flagged, a blank query or product id, a label the scheme does not know."""
    labels = pd.Series([label_key(v) for v in rows["label"]], index=rows.index, dtype=object)
    keys = {label_key(k): int(v) for k, v in grades.items()}
    grade = pd.Series([keys.get(k) if k is not None else None for k in labels], index=rows.index, dtype=object)
    problem = rows["_problem"] if "_problem" in rows else pd.Series(None, index=rows.index, dtype=object)
    reasons = first_reason(
        (problem.notna(), problem.astype(object)),
        (blank(rows["query"].astype(object)), "judgment without a query"),
        (blank(rows["product_id"].astype(object)), "judgment without a product id"),
        (labels.isna(), "judgment without a rating"),
        (grade.isna(), "rating '" + shown(labels)
         + f"' is not in the label scheme ({', '.join(sorted(k for k in keys if k is not None))})"),
    )
    judgments = pd.DataFrame({
        "query": rows["query"].astype(object), "product_id": rows["product_id"].map(lambda v: None if is_missing(v) else str(v).strip()),
        "grade": grade, "label": labels, "source": source,
    })
    kept, _ = split_by_reason(judgments, reasons)
    _, rejected = split_by_reason(_without_problem(rows), reasons)
    return kept.astype({"grade": "int64"}), rejected


# ---- small file helpers ----------------------------------------------------------------------------------------

def _without_problem(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["_problem"]) if "_problem" in frame else frame


def _text_lines(path: str | Path) -> list[str]:
    return read_text(path).splitlines()


def _read_csv(path: str | Path, required: Sequence[str]) -> pd.DataFrame:
    """A comma-separated file with a header -> rows as text plus `_line`; InputError naming a missing column."""
    lines = _text_lines(path)
    if not lines:
        raise InputError(f"{path}: the file is empty (no header line)")
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = [h.strip() for h in next(reader)]
    for column in required:
        if column not in header:
            raise InputError(f"{path}: required column '{column}' is missing (columns found: {', '.join(header)})")
    rows: list[dict[str, Any]] = []
    for number, values in enumerate(reader, start=2):
        if not values:
            continue
        row: dict[str, Any] = dict(zip(header, values))
        row[LINE] = number
        if len(values) != len(header):
            row["_problem"] = f"line {number} has {len(values)} fields, not {len(header)}"
        rows.append(row)
    return pd.DataFrame(rows, columns=[*header, LINE, "_problem"], dtype=object)

