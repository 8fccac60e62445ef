"""Pure parsers for the public relevance data sets: WANDS, ESCI (parquet and search-relevance JSON) and UBI ndjson.

pandas in, pandas out: no Spark and no writes. Every parser returns the rows it could map,
shaped like a warehouse table, and the rows it could not, as a frame of `reason` and `raw`
(the input row as JSON) for the `rejects` table. The import jobs (`jobs/import_*.py`) do the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

REJECT_COLUMNS = ["reason", "raw"]
CATEGORY_SEPARATOR = " > "


# ---- shared ----------------------------------------------------------------------------

def row_json(row: Mapping[str, Any]) -> str:
    """One input row as JSON, for `rejects.raw` (NaN written as null)."""
    clean = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
    return json.dumps(clean, sort_keys=True, default=str, ensure_ascii=False)


def split_by_reason(frame: pd.DataFrame, reasons: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows whose reason is null, the others as rejects: `reason` + `raw`, the row as it was read)."""
    bad = reasons.notna()
    rejected = pd.DataFrame(
        {"reason": reasons[bad].astype(str).to_list(), "raw": [row_json(r) for r in frame[bad].to_dict("records")]},
        columns=REJECT_COLUMNS,
    )
    return frame[~bad].reset_index(drop=True), rejected


def first_reason(*checks: tuple[pd.Series, str | pd.Series]) -> pd.Series:
    """Per row, the first reason whose condition holds (null when none does), like a SQL CASE WHEN."""
    index = checks[0][0].index
    reason = pd.Series([None] * len(index), index=index, dtype=object)
    for condition, text in checks:
        hit = condition.fillna(False).astype(bool) & reason.isna()
        reason[hit] = text[hit] if isinstance(text, pd.Series) else text
    return reason


def blank(values: pd.Series) -> pd.Series:
    """Null, empty or whitespace-only."""
    return values.isna() | (values.astype(str).str.strip() == "")


def grade_of(labels: pd.Series, grades: Mapping[str, int]) -> pd.Series:
    """The configured grade of each label (nullable Int64; unknown labels are null)."""
    return labels.map(lambda label: grades.get(str(label).strip()) if pd.notna(label) else None).astype("Int64")


def missing_from_catalog(product_ids: Iterable[Any], catalog_ids: set[str] | None) -> int:
    """How many distinct product ids are not in the catalog (all of them when there is no catalog)."""
    ids = {str(p) for p in product_ids if not pd.isna(p)}
    return len(ids) if catalog_ids is None else len(ids - catalog_ids)


# ---- WANDS (Wayfair) -------------------------------------------------------------------

@dataclass
class WandsFiles:
    products: pd.DataFrame
    queries: pd.DataFrame
    labels: pd.DataFrame


def read_wands(folder: str | Path) -> WandsFiles:
    """The three tab-separated WANDS files of a folder, every column as text."""
    folder = Path(folder)

    def read(name: str) -> pd.DataFrame:
        return pd.read_csv(folder / name, sep="\t", dtype=str, keep_default_na=False)

    return WandsFiles(read("product.csv"), read("query.csv"), read("label.csv"))


def parse_features(text: str | None) -> dict[str, str]:
    """WANDS `product_features` "key:value|key:value" as a dict (a value may itself hold ':')."""
    features: dict[str, str] = {}
    for item in (text or "").split("|"):
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
    levels = [level.strip() for level in (hierarchy or "").split(separator)]
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
        (grade.isna(), "unknown label '" + labels["label"].astype(str) + "'"),
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


def select_locale(frame: pd.DataFrame, locale: str) -> tuple[pd.DataFrame, int]:
    """(rows of `locale`, how many rows of other locales were skipped)."""
    keep = frame["product_locale"].astype(str) == locale
    return frame[keep].reset_index(drop=True), int((~keep).sum())


def esci_judgments(examples: pd.DataFrame, grades: Mapping[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ESCI examples (one locale) -> (`judgments` rows, rejects)."""
    grade = grade_of(examples["esci_label"], grades)
    reasons = first_reason(
        (blank(examples["query"]), "empty query"),
        (blank(examples["product_id"]), "missing product_id"),
        (grade.isna(), "unknown esci_label '" + examples["esci_label"].astype(str) + "'"),
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
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()


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


def read_judgments_json(path: str | Path) -> pd.DataFrame:
    """OpenSearch search-relevance judgments ({"judgmentRatings": [{query, ratings: [{docId, rating}]}]}), one row per rating."""
    document = json.loads(Path(path).read_text())
    rows = [
        {"query": entry.get("query"), "docId": rating.get("docId"), "rating": rating.get("rating")}
        for entry in document.get("judgmentRatings", [])
        for rating in entry.get("ratings", [])
    ]
    return pd.DataFrame(rows, columns=["query", "docId", "rating"])


def rating_label(rating: Any) -> str | None:
    """An ESCI label from a numeric rating ("100.000" -> "E"); None when it is not one of 100/10/1/0."""
    try:
        return ESCI_RATING_LABELS.get(float(rating))
    except (TypeError, ValueError):
        return None


def esci_judgments_from_ratings(ratings: pd.DataFrame, grades: Mapping[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Search-relevance ratings -> (`judgments` rows, labelled E/S/C/I, graded by the esci scheme; rejects)."""
    examples = pd.DataFrame({
        "query": ratings["query"],
        "product_id": ratings["docId"],
        "esci_label": ratings["rating"].map(rating_label),
    })
    reasons = first_reason(
        (blank(examples["query"]), "empty query"),
        (blank(examples["product_id"]), "missing docId"),
        (examples["esci_label"].isna(), "unknown rating '" + ratings["rating"].astype(str) + "' (expected 100/10/1/0)"),
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


def _kind_of_index(index_name: str | None) -> str | None:
    name = (index_name or "").lower()
    return QUERIES if "quer" in name else EVENTS if "event" in name else None


def _kind_of_document(document: dict[str, Any]) -> str | None:
    return EVENTS if "action_name" in document else QUERIES if "user_query" in document else None


def _bulk_action(document: Any) -> dict[str, Any] | None:
    """The metadata of an OpenSearch bulk action line ({"index": {"_index": ...}}), else None."""
    if not isinstance(document, dict) or len(document) != 1:
        return None
    action = document.get("index") or document.get("create")
    return action if isinstance(action, dict) and "_index" in action else None


def iter_ubi_lines(lines: Iterable[str], default_kind: str | None) -> Iterator[tuple[str | None, Any, str]]:
    """(kind, document or None, line) per document line of UBI ndjson, plain or OpenSearch bulk format.

    In bulk format an action line ({"index": {"_index": "ubi_events", ...}}) names the kind of the
    document on the next line; otherwise the file's kind (`default_kind`) or the document's fields do.
    """
    pending: str | None = None
    for line in lines:
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            yield pending or default_kind, None, line
            pending = None
            continue
        action = _bulk_action(document)
        if action is not None:
            pending = _kind_of_index(action["_index"]) or default_kind
            continue
        kind = pending or default_kind or (_kind_of_document(document) if isinstance(document, dict) else None)
        pending = None
        yield kind, document, line


def read_ubi(paths: Iterable[tuple[str | Path, str | None]]) -> UbiDocuments:
    """Read UBI ndjson files, each given with its kind (QUERIES, EVENTS, or None when the file holds both)."""
    queries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    unreadable: list[dict[str, str]] = []
    for path, default_kind in paths:
        with open(path, encoding="utf-8") as handle:
            for kind, document, line in iter_ubi_lines(handle, default_kind):
                if not isinstance(document, dict):
                    unreadable.append({"reason": "line is not a JSON object", "raw": line.strip()})
                elif kind == QUERIES:
                    queries.append(document)
                elif kind == EVENTS:
                    events.append(document)
                else:
                    unreadable.append({"reason": "neither a UBI query nor a UBI event", "raw": line.strip()})
    return UbiDocuments(queries, events, pd.DataFrame(unreadable, columns=REJECT_COLUMNS))


def parse_timestamp(value: Any) -> pd.Timestamp | None:
    """A UBI timestamp as a UTC pd.Timestamp: ISO 8601 text (naive means UTC) or epoch seconds/milliseconds."""
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
            number = float(value)
            return pd.Timestamp(number, unit="ms" if number > 1e11 else "s", tz="UTC")
        stamp = pd.Timestamp(str(value).strip())
    except (ValueError, OverflowError):
        return None
    if pd.isna(stamp):
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def query_texts(queries: list[dict[str, Any]]) -> tuple[dict[str, str], int]:
    """query_id -> user_query (the earliest query document wins a duplicate), and how many query_ids had conflicting texts."""
    texts: dict[str, set[str]] = {}
    first: dict[str, tuple[pd.Timestamp, str]] = {}
    oldest = pd.Timestamp.max.tz_localize("UTC")
    for query in queries:
        query_id, text = query.get("query_id"), query.get("user_query")
        if not query_id or not isinstance(text, str) or not text.strip():
            continue
        texts.setdefault(query_id, set()).add(text)
        stamp = parse_timestamp(query.get("timestamp")) or oldest
        if query_id not in first or stamp < first[query_id][0]:
            first[query_id] = (stamp, text)
    return {q: text for q, (_, text) in first.items()}, sum(len(t) > 1 for t in texts.values())


def _nested(document: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def event_position(event: dict[str, Any], base: int) -> int | None:
    """The 1-based position of an event's object, from `event_attributes.position.ordinal`.

    UBI's ordinal is the object's index in the result list; the ESCI UBI sample generator
    writes it 0-based (the first hit has ordinal 0), so with base=0 we add 1 to make the
    `query_log.position` contract's 1-based rank. Pass base=1 for sources that log ranks.
    """
    ordinal = _nested(event, "event_attributes", "position", "ordinal")
    if ordinal is None:
        ordinal = event.get("position") if not isinstance(event.get("position"), dict) else None
    try:
        return int(ordinal) + (1 - base) if ordinal is not None and float(ordinal) == int(ordinal) else None
    except (TypeError, ValueError):
        return None


def _event_object_id(event: dict[str, Any]) -> str | None:
    object_id = _nested(event, "event_attributes", "object", "object_id") or event.get("object_id")
    if object_id is None or not str(object_id).strip():
        return None
    return str(object_id).strip()


def _event_session_id(event: dict[str, Any]) -> str | None:
    return event.get("session_id") or _nested(event, "event_attributes", "session_id")


def map_ubi_event(
    event: dict[str, Any], queries: Mapping[str, str], product_actions: Iterable[str], position_base: int
) -> tuple[dict[str, Any] | None, str | None]:
    """One UBI event -> (`query_log` row, None) or (None, the reason it cannot be mapped).

    The user_query is its query document's (by query_id), else the event's own `user_query`.
    """
    query_id = event.get("query_id")
    user_query = queries.get(query_id) if query_id else None
    if not user_query and isinstance(event.get("user_query"), str) and event["user_query"].strip():
        user_query = event["user_query"]
    if not user_query:
        return None, "event without a known query (its query_id is not in the UBI queries)"
    timestamp = parse_timestamp(event.get("timestamp"))
    if timestamp is None:
        return None, "unparsable timestamp"
    action = event.get("action_name")
    object_id = _event_object_id(event)
    if object_id is None and action in set(product_actions):
        return None, f"missing object_id for action '{action}'"
    row = {
        "query_id": str(query_id),
        "client_id": event.get("client_id"),
        "session_id": _event_session_id(event),
        "user_query": user_query,
        "timestamp": timestamp,
        "action_name": action,
        "object_id": object_id,
        "position": event_position(event, position_base),
        "ds": timestamp.strftime("%Y-%m-%d"),
    }
    return row, None


def ubi_query_log(
    events: list[dict[str, Any]], queries: Mapping[str, str], product_actions: Iterable[str], position_base: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """UBI events -> (`query_log` rows, rejects)."""
    product_actions = tuple(product_actions)
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    for event in events:
        row, reason = map_ubi_event(event, queries, product_actions, position_base)
        if row is not None:
            rows.append(row)
        else:
            rejected.append({"reason": reason, "raw": row_json(event)})
    columns = ["query_id", "client_id", "session_id", "user_query", "timestamp", "action_name", "object_id", "position", "ds"]
    log = pd.DataFrame(rows, columns=columns)
    log["timestamp"] = pd.to_datetime(log["timestamp"], utc=True)
    log["position"] = log["position"].astype("Int64")
    return log, pd.DataFrame(rejected, columns=REJECT_COLUMNS)

