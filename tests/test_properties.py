"""Property-based tests (hypothesis) of the importers and the text normalization on random and malformed input.

The properties are the contract of issue 15, checked on inputs nobody wrote by hand: parsers never raise on a bad
row (only InputError, on a file that cannot be used at all), every input row is either an output row or a reject
with a text reason (rows in = rows out + rows rejected), and what they output can be written as its table's schema.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql.pandas.types import to_arrow_schema

from plumbing.errors import InputError
from relevance.data.importers import (
    esci_judgments_from_ratings,
    iter_ubi_records,
    read_judgments_json,
    read_tsv,
    ubi_query_log,
    wands_catalog,
    wands_judgments,
)
from schemas.tables import CATALOG, JUDGMENTS, MAX_POSITION, MIN_EVENT_TIME, QUERY_LOG
from udfs.text import build_product_text, normalize_text

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = pd.Timestamp("2025-01-08T00:00:00", tz="UTC")
ACTIONS = ("impression", "click", "add_to_cart", "purchase")

texts = st.text(max_size=12)  # any code point, lone surrogates included
scalars = (st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
           | st.floats(allow_nan=True, allow_infinity=True) | texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                           max_leaves=8)
missing = st.sampled_from([None, float("nan")])


def writable(frame: pd.DataFrame, spec) -> pa.Table:
    """The frame as Arrow with the table's schema: what `to_spark` does before a write (raises if it cannot)."""
    return pa.Table.from_pandas(frame.reindex(columns=spec.columns), schema=to_arrow_schema(spec.schema), preserve_index=False)


def assert_rejects_are_text(rejects: pd.DataFrame) -> None:
    for reason, raw in zip(rejects.reason, rejects.raw):
        assert isinstance(reason, str) and reason and isinstance(raw, str)
        reason.encode("utf-8"), raw.encode("utf-8")  # noqa: B018 - writable as UTF-8


# ---- UBI --------------------------------------------------------------------------------

ubi_events = st.fixed_dictionaries({}, optional={
    "action_name": st.sampled_from([*ACTIONS, "search", ""]) | json_values,
    "query_id": st.sampled_from(["q1", "q2", "unknown"]) | json_values,
    "user_query": texts | json_values,
    "timestamp": st.sampled_from(["2025-01-07T10:00:00Z", "2025-01-07 23:59:59-02:00", 0, -1, 1736244010000,
                                  "9999-12-31T00:00:00Z", "soon", 1e30]) | json_values,
    "session_id": json_values,
    "client_id": json_values,
    "event_attributes": st.fixed_dictionaries({}, optional={
        "object": st.fixed_dictionaries({}, optional={"object_id": st.sampled_from(["P1", "P2", " "]) | json_values}),
        "position": st.fixed_dictionaries({}, optional={"ordinal": st.integers() | st.floats() | json_values}),
    }) | json_values,
})


@PROPERTY
@given(events=st.lists(ubi_events, max_size=12), ids=st.lists(st.sampled_from([None, "e1", "e2"]), max_size=12),
       base=st.sampled_from([0, 1]))
def test_ubi_events_are_mapped_or_rejected_and_the_log_is_writable(events, ids, base):
    ids = (ids + [None] * len(events))[: len(events)]
    log, rejects = ubi_query_log(events, {"q1": "gray sofa", "q2": "oak desk"}, ACTIONS, base, ids, NOW)
    assert len(log) + len(rejects) == len(events)
    assert_rejects_are_text(rejects)
    writable(log, QUERY_LOG)
    assert log.position.dropna().between(0, MAX_POSITION).all()
    assert ((log.timestamp >= pd.Timestamp(MIN_EVENT_TIME, tz="UTC")) & (log.timestamp <= NOW + pd.Timedelta(days=1))).all()
    assert (log.ds == log.timestamp.dt.strftime("%Y-%m-%d")).all()
    with_ids = [i for i, e in zip(ids, events) if i]
    assert len(log) <= len(events) - (len(with_ids) - len(set(with_ids)))  # a repeated id is never written twice


ubi_lines = st.lists(
    st.binary(max_size=30)
    | st.sampled_from([b'{"index": {"_index": "ubi_events", "_id": "a"}}', b'{"index": {"_index": "ubi_queries"}}',
                       b'{"query_id": "q1", "user_query": "sofa"}', b'{"action_name": "click", "query_id": "q1"}', b"",
                       b"[1, 2]", b'{"create": {"_index": 5}}'])
    | json_values.map(lambda v: json.dumps(v).encode()),
    max_size=15,
)


@PROPERTY
@given(lines=ubi_lines, kind=st.sampled_from([None, "queries", "events"]))
def test_every_ubi_line_is_a_document_an_action_or_an_unreadable_line(lines, kind):
    lines = [line.replace(b"\n", b" ") for line in lines]
    records = list(iter_ubi_records(lines, kind))
    assert len(records) <= sum(1 for line in lines if line.strip())
    for record in records:
        assert (record.document is None) == (record.problem is not None) or not isinstance(record.document, dict)
        if record.problem is not None:
            assert record.problem in ("line is not valid UTF-8", "line is not a JSON object")


# ---- tab-separated files (WANDS) --------------------------------------------------------

@PROPERTY
@given(lines=st.lists(st.binary(max_size=25) | st.lists(texts, min_size=3, max_size=3).map(
    lambda fields: "\t".join(f.replace("\n", " ").replace("\r", " ") for f in fields).encode("utf-8", "surrogatepass")),
    max_size=10))
def test_every_tsv_line_is_a_row_or_a_reject(tmp_path_factory, lines):
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    path = tmp_path_factory.mktemp("tsv") / "product.csv"
    path.write_bytes(b"\n".join([b"product_id\tproduct_name\tproduct_features", *lines]))
    rows, rejects = read_tsv(path, ["product_id", "product_name"])
    assert len(rows) + len(rejects) == sum(1 for line in lines if line)
    assert_rejects_are_text(rejects)
    catalog, catalog_rejects = wands_catalog(rows.assign(**{"product_description": "", "category hierarchy": ""}),
                                             pd.Timestamp("2025-01-01", tz="UTC"))
    assert len(catalog) + len(catalog_rejects) == len(rows)
    writable(catalog, CATALOG)


@PROPERTY
@given(labels=st.lists(st.tuples(st.sampled_from(["1", "2", "9"]), texts | missing,
                                 st.sampled_from(["Exact", "Partial", "Irrelevant", "Maybe", " exact "]) | texts | missing),
                       max_size=10))
def test_wands_labels_are_graded_or_rejected_with_a_reason(labels):
    frame = pd.DataFrame(labels, columns=["query_id", "product_id", "label"], dtype=object)
    queries = pd.DataFrame({"query_id": ["1", "2"], "query": ["gray sofa", " \u00a0 "]})
    judgments, rejects = wands_judgments(frame, queries, {"Exact": 2, "Partial": 1, "Irrelevant": 0})
    assert len(judgments) + len(rejects) == len(frame)
    assert_rejects_are_text(rejects)
    writable(judgments, JUDGMENTS)
    assert judgments.grade.isin([0, 1, 2]).all() and (judgments["query"] == "gray sofa").all()


# ---- ESCI judgments JSON ----------------------------------------------------------------

esci_documents = (json_values
                  | st.fixed_dictionaries({"judgmentRatings": json_values})
                  | st.fixed_dictionaries({"judgmentRatings": st.lists(st.fixed_dictionaries({}, optional={
                      "query": texts | json_values,
                      "ratings": st.lists(st.fixed_dictionaries({}, optional={
                          "docId": texts | json_values,
                          "rating": st.sampled_from(["100.000", "10.000", "1.000", "0.000", "50", 100, 0.0]) | json_values,
                      }) | json_values, max_size=4) | json_values,
                  }) | json_values, max_size=4)}))


@PROPERTY
@given(document=esci_documents)
def test_esci_json_is_read_or_refused_naming_the_file_and_every_rating_is_accounted_for(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("esci") / "judgments.json"
    path.write_text(json.dumps(document), encoding="utf-8", errors="surrogatepass")
    try:
        ratings = read_judgments_json(path)
    except InputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    judgments, rejects = esci_judgments_from_ratings(ratings, {"E": 3, "S": 2, "C": 1, "I": 0})
    assert len(judgments) + len(rejects) == len(ratings)
    assert_rejects_are_text(rejects)
    writable(judgments, JUDGMENTS)
    assert judgments.grade.isin([0, 1, 2, 3]).all()


# ---- text normalization -----------------------------------------------------------------

@PROPERTY
@given(text=texts | st.text(max_size=60) | missing)
def test_normalized_text_is_trimmed_lowercase_single_spaced_and_stable(text):
    out = normalize_text(text)
    assert isinstance(out, str) and out == out.strip() and "  " not in out and "\t" not in out and "\n" not in out
    assert normalize_text(out) == out
    if text is None or (isinstance(text, float) and math.isnan(text)):
        assert out == ""


@PROPERTY
@given(title=texts | missing, brand=texts | missing, category=texts | missing,
       attributes=st.none() | st.dictionaries(texts, texts | st.none(), max_size=4), max_words=st.integers(1, 20))
def test_product_text_never_says_nan_and_keeps_its_word_budget(title, brand, category, attributes, max_words):
    out = build_product_text(title, brand, category, attributes, max_words)
    assert isinstance(out, str) and len(out.split(" ")) <= max_words
    given_text = " ".join(str(v) for v in (title, brand, category, *(attributes or {}).keys(), *(attributes or {}).values())
                          if isinstance(v, str))
    if "nan" not in given_text.lower():
        assert "nan" not in out


@pytest.mark.parametrize("blank", ["", " ", "\t\n", "\u00a0", "\u2007\u200b", "\u3000\ufeff"])
def test_whitespace_of_every_kind_is_blank(blank):
    from relevance.data.importers import blank as is_blank

    assert is_blank(pd.Series([blank])).all()
