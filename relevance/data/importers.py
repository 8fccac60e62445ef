"""Pure parsers for the public relevance data sets: WANDS, ESCI (parquet and search-relevance JSON) and UBI ndjson.

pandas in, pandas out: no Spark and no writes. Every parser returns the rows it could map,
shaped like a warehouse table, and the rows it could not, as a frame of `reason` and `raw`
(the input row as JSON) for the `rejects` table. The import jobs (`jobs/import_*.py`) do the I/O.

A file that cannot be used at all (missing, not UTF-8 JSON, a required column absent) raises InputError
naming the file, the column and the line; a row or line that cannot be used becomes a reject.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import pandas as pd

from plumbing.errors import InputError
from schemas.limits import MAX_EVENT_LEAD_DAYS, MAX_POSITION, MIN_EVENT_TIME
from udfs.text import is_missing

# purity: no pyspark torch transformers

REJECT_COLUMNS = ["reason", "raw"]
CATEGORY_SEPARATOR = " > "
LINE = "_line"  # the line of the input file a row came from (kept in rejects.raw)
# Whitespace of every kind, zero-width characters included: a title of tabs, newlines or NBSPs is blank.
_BLANK = re.compile(r"[\s\u200b\u200c\u200d\u2060\ufeff]+")


# ---- shared ----------------------------------------------------------------------------

def is_text(value: Any) -> TypeGuard[str]:
    """A str that can be written as UTF-8 (JSON may hold lone surrogates such as "\\ud800", which cannot)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def row_json(row: Mapping[str, Any]) -> str:
    """One input row as JSON, for `rejects.raw` (NaN written as null; text that is not valid Unicode escaped)."""
    clean = {str(k): (None if is_missing(v) else v) for k, v in row.items()}
    text = json.dumps(clean, sort_keys=True, default=str, ensure_ascii=False)
    return text if is_text(text) else json.dumps(clean, sort_keys=True, default=str)


def shown(values: pd.Series) -> pd.Series:
    """Each value as text for a reject reason: "null" for a missing one (text + NaN would be NaN: a reason lost)."""
    return pd.Series(["null" if is_missing(v) else str(v) for v in values], index=values.index, dtype=object)


def split_by_reason(frame: pd.DataFrame, reasons: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows whose reason is null, the others as rejects: `reason` + `raw`, the row as it was read)."""
    bad = reasons.notna()
    rejected = pd.DataFrame(
        {"reason": reasons[bad].astype(str).to_list(), "raw": [row_json(r) for r in frame[bad].to_dict("records")]},
        columns=REJECT_COLUMNS,
    )
    return frame[~bad].reset_index(drop=True), rejected


def first_reason(*checks: tuple[pd.Series, str | pd.Series]) -> pd.Series:
    """Per row, the first reason whose condition holds (null when none does), like a SQL CASE WHEN.

    A row whose condition holds always gets a reason: a reason that came out null reads "invalid row"."""
    index = checks[0][0].index
    reason = pd.Series([None] * len(index), index=index, dtype=object)
    for condition, text in checks:
        hit = condition.astype(object).fillna(False).astype(bool) & reason.isna()
        if isinstance(text, pd.Series):
            reason[hit] = [t if isinstance(t, str) else "invalid row" for t in text[hit]]
        else:
            reason[hit] = text
    return reason


def blank(values: pd.Series) -> pd.Series:
    """Null, empty, or only whitespace of any kind (tabs, newlines, NBSP, zero-width characters)."""
    return pd.Series([is_missing(v) or not _BLANK.sub("", str(v)) for v in values], index=values.index, dtype=bool)


def not_text(values: pd.Series) -> pd.Series:
    """Present but not writable text (a number or a list where text belongs, a lone surrogate)."""
    return pd.Series([not is_missing(v) and not is_text(v) for v in values], index=values.index, dtype=bool)


def require_columns(frame: pd.DataFrame, required: Sequence[str], where: str) -> None:
    """InputError naming the file and the first required column it lacks."""
    for column in required:
        if column not in frame.columns:
            found = ", ".join(str(c) for c in frame.columns if c != LINE) or "none"
            raise InputError(f"{where}: required column '{column}' is missing (columns found: {found})")


def with_optional(frame: pd.DataFrame, columns: Sequence[str], fill: Any = None) -> pd.DataFrame:
    """The frame with absent optional columns added, filled with `fill`."""
    missing = [c for c in columns if c not in frame.columns]
    return frame.assign(**{c: fill for c in missing}) if missing else frame


def read_tsv(path: str | Path, required: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A tab-separated file with a header line -> (one row per line, every column as text plus `_line`; rejects).

    No quoting: a field is what lies between two tabs, so an inch mark that opens a field ("24 inch tv stand)
    stays in its field instead of swallowing the following lines; a field wrapped whole in double quotes loses
    them ("" inside is one "). A line that is not valid UTF-8 or has the wrong number of fields is rejected
    (counted, with its line number), never the whole file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise InputError(f"{path}: the file is empty (no header line)")
    try:
        header_text = lines[0].rstrip(b"\r").decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: line 1 (the header) is not valid UTF-8 (byte {exc.start})") from None
    header = [_unquote(name.strip()) for name in header_text.split("\t")]
    rows, rejected = [], []
    for number, raw in enumerate(lines[1:], start=2):
        raw = raw.rstrip(b"\r")
        if not raw:
            continue  # an empty line holds no row
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            rejected.append({"reason": "line is not valid UTF-8",
                             "raw": row_json({LINE: number, "byte": exc.start, "text": raw.decode("utf-8", "replace")})})
            continue
        fields = text.split("\t")
        if len(fields) != len(header):
            rejected.append({"reason": f"line has {len(fields)} tab-separated fields, the header {len(header)}",
                             "raw": row_json({LINE: number, "text": text})})
            continue
        rows.append([_unquote(f) for f in fields] + [number])
    frame = pd.DataFrame(rows, columns=[*header, LINE], dtype=object)
    require_columns(frame, required, str(path))
    return frame, pd.DataFrame(rejected, columns=REJECT_COLUMNS)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('""', '"')
    return value


def grade_of(labels: pd.Series, grades: Mapping[str, int]) -> pd.Series:
    """The configured grade of each label (nullable Int64; unknown labels are null)."""
    return pd.Series([None if is_missing(label) else grades.get(str(label).strip()) for label in labels],
                     index=labels.index, dtype=object).astype("Int64")


def missing_from_catalog(product_ids: Iterable[Any], catalog_ids: set[str] | None) -> int:
    """How many distinct product ids are not in the catalog (all of them when there is no catalog)."""
    ids = {str(p) for p in product_ids if not is_missing(p)}
    return len(ids) if catalog_ids is None else len(ids - catalog_ids)


# ---- WANDS (Wayfair) -------------------------------------------------------------------

WANDS_COLUMNS = {  # file -> (required columns, optional ones)
    "product.csv": (("product_id", "product_name"), ("product_description", "product_features", "category hierarchy")),
    "query.csv": (("query_id", "query"), ()),
    "label.csv": (("query_id", "product_id", "label"), ()),
}


@dataclass
class WandsFiles:
    products: pd.DataFrame
    queries: pd.DataFrame
    labels: pd.DataFrame
    unreadable: dict[str, pd.DataFrame] = field(default_factory=dict)  # file -> lines that could not be read


def read_wands(folder: str | Path) -> WandsFiles:
    """The three tab-separated WANDS files of a folder, every column as text (absent optional columns empty)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (expected one holding product.csv, query.csv and label.csv)")
    frames, unreadable = {}, {}
    for name, (required, optional) in WANDS_COLUMNS.items():
        frame, rejected = read_tsv(folder / name, required)
        frames[name], unreadable[name] = with_optional(frame, optional, ""), rejected
    return WandsFiles(frames["product.csv"], frames["query.csv"], frames["label.csv"], unreadable)


def parse_features(text: str | None) -> dict[str, str]:
    """WANDS `product_features` "key:value|key:value" as a dict (a value may itself hold ':')."""
    features: dict[str, str] = {}
    for item in ("" if is_missing(text) else str(text)).split("|"):
        key, sep, value = item.partition(":")
        if sep and key.strip() and value.strip():
            features[key.strip()] = value.strip()
    return features


def brand_from_features(features: Mapping[str, str]) -> str:
    """The "brand" (else "manufacturer") feature, matched case-insensitively; "" when absent."""
    by_key = {k.strip().lower(): v for k, v in features.items()}
    return by_key.get("brand") or by_key.get("manufacturer") or ""


def category_path(hierarchy: str | None, separator: str = "/") -> str:
    """A category hierarchy ("A / B / C") as the catalog's path ("A > B > C")."""
    levels = [level.strip() for level in ("" if is_missing(hierarchy) else str(hierarchy)).split(separator)]
    return CATEGORY_SEPARATOR.join(level for level in levels if level)


def wands_catalog(products: pd.DataFrame, updated_at: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """WANDS product.csv -> (`catalog` rows, rejects)."""
    reasons = first_reason(
        (blank(products["product_id"]), "product without product_id"),
        (blank(products["product_name"]), "product without product_name"),
    )
    ok, rejected = split_by_reason(products, reasons)
    features = ok["product_features"].map(parse_features)
    catalog = pd.DataFrame({
        "product_id": ok["product_id"].str.strip(),
        "title": ok["product_name"].str.strip(),
        "description": ok["product_description"].str.strip(),
        "brand": features.map(brand_from_features),
        "category": ok["category hierarchy"].map(category_path),
        "attributes": features,
        "updated_at": updated_at,
    })
    return catalog, rejected


def wands_judgments(labels: pd.DataFrame, queries: pd.DataFrame, grades: Mapping[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """WANDS label.csv joined to query.csv -> (`judgments` rows, rejects)."""
    query_text = labels["query_id"].map(queries.drop_duplicates("query_id").set_index("query_id")["query"])
    grade = grade_of(labels["label"], grades)
    reasons = first_reason(
        (query_text.isna(), "query_id not in query.csv"),
        (blank(query_text), "empty query"),
        (blank(labels["product_id"]), "missing product_id"),
        (grade.isna(), "unknown label '" + shown(labels["label"]) + "'"),
    )
    _, rejected = split_by_reason(labels, reasons)
    ok = reasons.isna()
    judgments = pd.DataFrame({
        "query": query_text[ok].str.strip(),
        "product_id": labels.loc[ok, "product_id"].str.strip(),
        "grade": grade[ok].astype("int64"),
        "label": labels.loc[ok, "label"].str.strip(),
        "source": "wands",
    }).reset_index(drop=True)
    return judgments, rejected


# ---- ESCI (Amazon Shopping Queries) ----------------------------------------------------

ESCI_EXAMPLES = "shopping_queries_dataset_examples.parquet"
ESCI_PRODUCTS = "shopping_queries_dataset_products.parquet"
# OpenSearch search-relevance judgments carry ESCI labels as numeric ratings.
ESCI_RATING_LABELS = {100.0: "E", 10.0: "S", 1.0: "C", 0.0: "I"}


ESCI_COLUMNS = {  # file -> (required columns, optional ones)
    ESCI_EXAMPLES: (("query", "product_id", "product_locale", "esci_label"), ()),
    ESCI_PRODUCTS: (("product_id", "product_title", "product_locale"),
                    ("product_description", "product_bullet_point", "product_brand", "product_color")),
}


def read_esci_parquet(path: str | Path) -> pd.DataFrame:
    """One ESCI parquet file, checked for its required columns (absent optional ones are null)."""
    path = Path(path)
    required, optional = ESCI_COLUMNS[path.name]
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # pyarrow's errors for a file that is not parquet
        raise InputError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    require_columns(frame, required, str(path))
    return with_optional(frame, optional)


def select_locale(frame: pd.DataFrame, locale: str) -> tuple[pd.DataFrame, int]:
    """(rows of `locale`, how many rows of other locales were skipped)."""
    keep = frame["product_locale"].astype(str) == locale
    return frame[keep].reset_index(drop=True), int((~keep).sum())


def esci_judgments(examples: pd.DataFrame, grades: Mapping[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ESCI examples (one locale) -> (`judgments` rows, rejects)."""
    grade = grade_of(examples["esci_label"], grades)
    reasons = first_reason(
        (blank(examples["query"]), "empty query"),
        (not_text(examples["query"]), "query is not text"),
        (blank(examples["product_id"]), "missing product_id"),
        (grade.isna(), "unknown esci_label '" + shown(examples["esci_label"]) + "'"),
    )
    ok, rejected = split_by_reason(examples, reasons)
    judgments = pd.DataFrame({
        "query": ok["query"].astype(str).str.strip(),
        "product_id": ok["product_id"].astype(str).str.strip(),
        "grade": grade[reasons.isna()].astype("int64").to_numpy(),
        "label": ok["esci_label"].astype(str).str.strip(),
        "source": "esci",
    })
    return judgments, rejected


def clean_text(value: Any) -> str:
    """A text cell stripped; "" for null or NaN."""
    return "" if is_missing(value) else str(value).strip()


def bullet_points(text: str | None, limit: int = 3, max_chars: int = 200) -> list[str]:
    """The first `limit` non-empty bullet points (one per line), each trimmed to `max_chars`."""
    bullets = [line.strip(" \t-•*") for line in clean_text(text).splitlines()]
    return [b[:max_chars].rstrip() for b in bullets if b][:limit]


def esci_attributes(color: str | None, bullets: str | None) -> dict[str, str]:
    """Catalog attributes of an ESCI product: its color and first bullet points ("bullet_1", ...)."""
    attributes = {"color": clean_text(color)} if clean_text(color) else {}
    attributes.update({f"bullet_{i}": b for i, b in enumerate(bullet_points(bullets), start=1)})
    return attributes


def esci_catalog(products: pd.DataFrame, updated_at: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ESCI products (one locale) -> (`catalog` rows, rejects). ESCI has no category: it is ""."""
    reasons = first_reason(
        (blank(products["product_id"]), "product without product_id"),
        (blank(products["product_title"]), "product without product_title"),
    )
    ok, rejected = split_by_reason(products, reasons)
    catalog = pd.DataFrame({
        "product_id": ok["product_id"].map(clean_text),
        "title": ok["product_title"].map(clean_text),
        "description": ok["product_description"].map(clean_text),
        "brand": ok["product_brand"].map(clean_text),
        "category": "",
        "attributes": [esci_attributes(c, b) for c, b in zip(ok["product_color"], ok["product_bullet_point"])],
        "updated_at": updated_at,
    })
    return catalog, rejected


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file; InputError naming the file (and the line) when it cannot be read or decoded."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line} is not valid UTF-8 (byte {exc.start})") from None


def read_json_file(path: str | Path) -> Any:
    """A JSON document; InputError naming the file (and the line and column) when it cannot be read."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to read") from None


def read_judgments_json(path: str | Path) -> pd.DataFrame:
    """OpenSearch search-relevance judgments ({"judgmentRatings": [{query, ratings: [{docId, rating}]}]}), one row per rating.

    A file without a `judgmentRatings` list raises InputError; an entry or rating of the wrong shape becomes a
    row whose `problem` says what is wrong (esci_judgments_from_ratings rejects it)."""
    document = read_json_file(path)
    entries = document.get("judgmentRatings") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        found = "a JSON " + type(document).__name__ if not isinstance(document, dict) else \
            "keys " + ", ".join(json.dumps(k)[:40] for k in list(document)[:8]) if document else "an empty object"
        raise InputError(f"{path}: no 'judgmentRatings' list (expected the OpenSearch search-relevance judgments "
                         f"format {{\"judgmentRatings\": [{{\"query\": ..., \"ratings\": [...]}}]}}; found {found})")
    rows: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            rows.append({"rating": _snippet(entry), "problem": f"judgmentRatings[{i}] is not an object"})
            continue
        ratings = entry.get("ratings")
        if not isinstance(ratings, list):
            rows.append({"query": entry.get("query"), "rating": _snippet(ratings),
                         "problem": f"judgmentRatings[{i}] has no ratings list"})
            continue
        for j, rating in enumerate(ratings):
            if isinstance(rating, dict):
                rows.append({"query": entry.get("query"), "docId": rating.get("docId"),
                             "rating": rating.get("rating")})
            else:
                rows.append({"query": entry.get("query"), "rating": _snippet(rating),
                             "problem": f"judgmentRatings[{i}].ratings[{j}] is not an object"})
    return pd.DataFrame(rows, columns=["query", "docId", "rating", "problem"], dtype=object)


def _snippet(value: Any, limit: int = 500) -> str:
    return json.dumps(value, default=str)[:limit]


def rating_label(rating: Any) -> str | None:
    """An ESCI label from a numeric rating ("100.000" -> "E"); None when it is not one of 100/10/1/0."""
    if isinstance(rating, bool):
        return None
    try:
        return ESCI_RATING_LABELS.get(float(rating))
    except (TypeError, ValueError, OverflowError):
        return None


def esci_judgments_from_ratings(ratings: pd.DataFrame, grades: Mapping[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Search-relevance ratings -> (`judgments` rows, labelled E/S/C/I, graded by the esci scheme; rejects)."""
    problem = ratings["problem"] if "problem" in ratings else pd.Series(None, index=ratings.index, dtype=object)
    examples = pd.DataFrame({
        "query": ratings["query"],
        "product_id": ratings["docId"].map(  # a whole-number docId is an id all the same
            lambda d: str(d) if isinstance(d, int) and not isinstance(d, bool) else d),
        "esci_label": ratings["rating"].map(rating_label),
    }, index=ratings.index)
    reasons = first_reason(
        (problem.notna(), problem),
        (blank(examples["query"]), "empty query"),
        (not_text(examples["query"]), "query is not text"),
        (blank(examples["product_id"]), "missing docId"),
        (not_text(examples["product_id"]), "docId is not text"),
        (examples["esci_label"].isna(), "unknown rating '" + shown(ratings["rating"]) + "' (expected 100/10/1/0)"),
    )
    judgments, _ = esci_judgments(examples[reasons.isna()], grades)
    _, rejected = split_by_reason(ratings, reasons)  # raw keeps the rating as it was in the file
    return judgments, rejected


# ---- UBI (OpenSearch User Behavior Insights) -------------------------------------------

QUERIES, EVENTS = "queries", "events"


@dataclass
class UbiDocuments:
    queries: list[dict[str, Any]]
    events: list[dict[str, Any]]
    unreadable: pd.DataFrame  # reason + raw, for lines that are neither a query nor an event
    event_ids: list[str | None] = field(default_factory=list)  # per event: its bulk `_id` (or own event_id), if any


@dataclass
class UbiLine:
    """One document line of a UBI file: its kind, the parsed document (None when unreadable) and where it was."""

    kind: str | None
    document: Any
    text: str
    number: int
    doc_id: str | None = None
    problem: str | None = None  # why the line is unreadable


def _kind_of_index(index_name: Any) -> str | None:
    name = (index_name if isinstance(index_name, str) else "").lower()
    return QUERIES if "quer" in name else EVENTS if "event" in name else None


# Fields only one kind of UBI document has (UBI spec 1.x): events carry `user_query` too (the ESCI UBI sample's
# do), so a document without `action_name` that has an event's fields is an event that lacks its action (and is
# rejected for it), not a second query.
UBI_EVENT_FIELDS = ("action_name", "event_attributes", "message_type", "message", "session_id")


def _kind_of_document(document: dict[str, Any]) -> str | None:
    """The kind of a UBI document read without a bulk index or a file kind: an event when it has any field only
    events have (UBI_EVENT_FIELDS), else a query when it has `user_query`, else neither."""
    if any(name in document for name in UBI_EVENT_FIELDS):
        return EVENTS
    return QUERIES if "user_query" in document else None


def _bulk_action(document: Any) -> dict[str, Any] | None:
    """The metadata of an OpenSearch bulk action line ({"index": {"_index": ...}}), else None."""
    if not isinstance(document, dict) or len(document) != 1:
        return None
    action = document.get("index") or document.get("create")
    return action if isinstance(action, dict) and "_index" in action else None


def id_text(value: Any) -> str | None:
    """An identifier as text: text or a whole number as it is written; None for anything else."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def iter_ubi_records(lines: Iterable[str | bytes], default_kind: str | None) -> Iterator[UbiLine]:
    """One UbiLine per document line of UBI ndjson, plain or OpenSearch bulk format (bytes are decoded per line,
    so one bad byte costs one line, not the file).

    In bulk format an action line ({"index": {"_index": "ubi_events", "_id": ...}}) names the kind and the id of
    the document on the next line; otherwise the file's kind (`default_kind`) or the document's fields do.
    """
    pending: str | None = None
    pending_id: str | None = None
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            raw = line
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                yield UbiLine(pending or default_kind, None, raw.decode("utf-8", "replace").strip(), number,
                              problem="line is not valid UTF-8")
                pending = pending_id = None
                continue
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except (ValueError, RecursionError):
            yield UbiLine(pending or default_kind, None, line.strip(), number, problem="line is not a JSON object")
            pending = pending_id = None
            continue
        action = _bulk_action(document)
        if action is not None:
            pending = _kind_of_index(action["_index"]) or default_kind
            pending_id = id_text(action.get("_id"))
            continue
        kind = pending or default_kind or (_kind_of_document(document) if isinstance(document, dict) else None)
        own_id = id_text(document.get("event_id")) if isinstance(document, dict) else None
        yield UbiLine(kind, document, line.strip(), number, pending_id or own_id,
                      None if isinstance(document, dict) else "line is not a JSON object")
        pending = pending_id = None


def iter_ubi_lines(lines: Iterable[str], default_kind: str | None) -> Iterator[tuple[str | None, Any, str]]:
    """(kind, document or None, line) per document line of UBI ndjson (see iter_ubi_records)."""
    for record in iter_ubi_records(lines, default_kind):
        yield record.kind, record.document, record.text


def read_ubi(paths: Iterable[tuple[str | Path, str | None]]) -> UbiDocuments:
    """Read UBI ndjson files, each given with its kind (QUERIES, EVENTS, or None when the file holds both)."""
    queries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    event_ids: list[str | None] = []
    unreadable: list[dict[str, str]] = []
    for path, default_kind in paths:
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        with handle:
            for record in iter_ubi_records(handle, default_kind):
                if record.problem is not None:
                    where = {"file": Path(path).name, "line": record.number, "text": record.text[:2000]}
                    unreadable.append({"reason": record.problem, "raw": row_json(where)})
                elif record.kind == QUERIES:
                    queries.append(record.document)
                elif record.kind == EVENTS:
                    events.append(record.document)
                    event_ids.append(record.doc_id)
                else:
                    unreadable.append({"reason": "neither a UBI query nor a UBI event", "raw": record.text})
    return UbiDocuments(queries, events, pd.DataFrame(unreadable, columns=REJECT_COLUMNS), event_ids)


def parse_timestamp(value: Any) -> pd.Timestamp | None:
    """A UBI timestamp as a UTC pd.Timestamp: ISO 8601 text (naive means UTC) or epoch seconds/milliseconds."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        if isinstance(value, (int, float)) or value.strip().isdigit():
            number = float(value)
            stamp = pd.Timestamp(number, unit="ms" if abs(number) > 1e11 else "s", tz="UTC")
        else:
            stamp = pd.Timestamp(value.strip())
    except (ValueError, OverflowError, TypeError):
        return None
    if pd.isna(stamp):
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def implausible_time(stamp: pd.Timestamp, now: pd.Timestamp) -> bool:
    """Before MIN_EVENT_TIME (epoch 0 and other placeholders) or more than MAX_EVENT_LEAD_DAYS after `now`."""
    return stamp < pd.Timestamp(MIN_EVENT_TIME, tz="UTC") or stamp > now + pd.Timedelta(days=MAX_EVENT_LEAD_DAYS)


def query_texts(queries: list[dict[str, Any]]) -> tuple[dict[str, str], int]:
    """query_id -> user_query (the earliest query document wins a duplicate), and how many query_ids had conflicting texts."""
    texts: dict[str, set[str]] = {}
    first: dict[str, tuple[pd.Timestamp, str]] = {}
    oldest = pd.Timestamp.max.tz_localize("UTC")
    for query in queries:
        query_id, text = id_text(query.get("query_id")), query.get("user_query")
        if not query_id or not is_text(text) or not text.strip():
            continue
        texts.setdefault(query_id, set()).add(text)
        stamp = parse_timestamp(query.get("timestamp")) or oldest
        if query_id not in first or stamp < first[query_id][0]:
            first[query_id] = (stamp, text)
    return {q: text for q, (_, text) in first.items()}, sum(len(t) > 1 for t in texts.values())


def _nested(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def ubi_position(event: dict[str, Any], base: int) -> tuple[int | None, str | None]:
    """(the 1-based position of an event's object, None) from `event_attributes.position.ordinal`, or
    (None, reason) for an ordinal no result list has (negative, fractional, not finite, above MAX_POSITION).

    UBI's ordinal is the object's index in the result list; the ESCI UBI sample generator
    writes it 0-based (the first hit has ordinal 0), so with base=0 we add 1 to make the
    `query_log.position` contract's 1-based rank. Pass base=1 for sources that log ranks.
    An event without a numeric ordinal has no position (None, None).
    """
    ordinal = _nested(event, "event_attributes", "position", "ordinal")
    if ordinal is None:
        ordinal = event.get("position") if not isinstance(event.get("position"), dict) else None
    if isinstance(ordinal, bool) or not isinstance(ordinal, (int, float, str)):
        return None, None
    try:
        number = float(ordinal)
    except (ValueError, OverflowError):
        return None, None
    if not math.isfinite(number) or number != int(number) or number < 0 or number + (1 - base) > MAX_POSITION:
        return None, f"implausible position ordinal {ordinal!r} (expected a whole number 0..{MAX_POSITION})"
    return int(number) + (1 - base), None


def event_position(event: dict[str, Any], base: int) -> int | None:
    """The 1-based position of an event's object (None when it has none or an implausible one; see ubi_position)."""
    return ubi_position(event, base)[0]


def _event_object_id(event: dict[str, Any]) -> str | None:
    nested = _nested(event, "event_attributes", "object", "object_id")
    return id_text(nested) if nested not in (None, "") else id_text(event.get("object_id"))


def _event_session_id(event: dict[str, Any]) -> str | None:
    return id_text(event.get("session_id")) or id_text(_nested(event, "event_attributes", "session_id"))


def map_ubi_event(
    event: dict[str, Any], queries: Mapping[str, str], product_actions: Iterable[str], position_base: int,
    now: pd.Timestamp | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """One UBI event -> (`query_log` row, None) or (None, the reason it cannot be mapped).

    The user_query is its query document's (by query_id), else the event's own `user_query`.
    """
    query_id = id_text(event.get("query_id"))
    user_query = queries.get(query_id) if query_id else None
    if not user_query and is_text(event.get("user_query")) and event["user_query"].strip():
        user_query = event["user_query"]
    if not user_query:
        return None, "event without a known query (its query_id is not in the UBI queries)"
    timestamp = parse_timestamp(event.get("timestamp"))
    if timestamp is None:
        return None, "unparsable timestamp"
    if implausible_time(timestamp, now if now is not None else pd.Timestamp.now(tz="UTC")):
        return None, f"implausible timestamp {timestamp.isoformat()} (before {MIN_EVENT_TIME} or in the future)"
    action = event.get("action_name")
    if not is_text(action) or not action.strip():
        return None, "event without a text action_name"
    object_id = _event_object_id(event)
    if object_id is None and action in set(product_actions):
        return None, f"missing object_id for action '{action}'"
    position, bad_position = ubi_position(event, position_base)
    if bad_position:
        return None, bad_position
    row = {
        "query_id": query_id,
        "client_id": id_text(event.get("client_id")),
        "session_id": _event_session_id(event),
        "user_query": user_query,
        "timestamp": timestamp,
        "action_name": action,
        "object_id": object_id,
        "position": position,
        "ds": timestamp.strftime("%Y-%m-%d"),
    }
    unwritable = [k for k, v in row.items() if isinstance(v, str) and not is_text(v)]
    if unwritable:
        return None, f"{unwritable[0]} is not valid Unicode text"
    return row, None


def ubi_query_log(
    events: list[dict[str, Any]], queries: Mapping[str, str], product_actions: Iterable[str], position_base: int = 0,
    event_ids: Sequence[str | None] | None = None, now: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """UBI events -> (`query_log` rows, rejects). A second event with the same id (the bulk `_id`), or without
    ids the same document again, is a duplicate: the first is kept."""
    product_actions = tuple(product_actions)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    ids = list(event_ids) if event_ids is not None else [None] * len(events)
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, str | None]] = []
    seen: set[str] = set()
    for event, event_id in zip(events, ids):
        row, reason = map_ubi_event(event, queries, product_actions, position_base, now)
        if row is not None:  # an accepted event claims its id (or its document), so a later copy is a duplicate
            key = f"id:{event_id}" if event_id else "doc:" + json.dumps(event, sort_keys=True, default=str)
            if key in seen:
                row, reason = None, (f"duplicate event_id '{event_id}' (the first is kept)" if event_id
                                     else "exact duplicate of an earlier event")
            seen.add(key)
        if row is not None:
            rows.append(row)
        else:
            rejected.append({"reason": reason, "raw": row_json(event)})
    columns = ["query_id", "client_id", "session_id", "user_query", "timestamp", "action_name", "object_id", "position", "ds"]
    log = pd.DataFrame(rows, columns=columns)
    log["timestamp"] = pd.to_datetime(log["timestamp"], utc=True)
    log["position"] = log["position"].astype("Int64")
    return log, pd.DataFrame(rejected, columns=REJECT_COLUMNS)

