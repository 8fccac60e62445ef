"""Bad inputs (issue 15): every problem gets one of two answers, on real Spark local[2] and real Delta tables.

Either the row goes to `rejects` with a reason (and is counted: rows in = rows out + rows rejected), or the job
stops before writing anything with ONE line naming the file or table, the column and the line or row, exit 1
(exit 2 for settings, before Spark starts). No table ever loses rows because an input was empty, unreadable or
of the wrong shape. Each test asserts the exit code, the message, the rejects, and the row counts of every table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from jobs import build_pairs, score
from jobs.__main__ import main
from jobs.core.config import set_path
from plumbing.delta import Warehouse
from plumbing.errors import InputError, WarehouseError, one_line
from relevance.data.importers import read_tsv, wands_judgments
from relevance.pairs import CONFLICT_RULE, MAX_CHARS_PER_WORD, catalog_texts, classify_judgments
from relevance.scoring import population_stability, score_shift, unusable_scores
from relevance.settings import LabelScheme, PairsSettings
from schemas.tables import CATALOG, JUDGMENTS, MAX_POSITION, QUERY_LOG
from tests.conftest import DEMO_DS, ROOT, copy_warehouse, make_config, run, settings_of, table
from udfs.model import ModelError, load_model_version, save_model_version

FIXTURES = Path(__file__).resolve().parent / "fixtures"
UBI = FIXTURES / "ubi"
UTC = dt.timezone.utc
NOW = dt.datetime(2025, 1, 7, 10, tzinfo=UTC)
_conf_numbers = itertools.count()


# ---- helpers ----------------------------------------------------------------------------

def row_counts(cfg: dict) -> dict[str, int]:
    """Rows of every data table under the warehouse (runs and rejects are logs: they grow by design)."""
    root = Path(cfg["warehouse"]["root"])
    names = sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir()) if root.is_dir() else []
    return {name: len(table(cfg, name)) for name in names if name not in ("runs", "rejects")}


def rejects_of(cfg: dict, job: str, ds: str = "all") -> pd.DataFrame:
    rejects = table(cfg, "rejects")
    return rejects[(rejects.job == job) & (rejects.ds == ds)]


def last_run(cfg: dict, job: str) -> pd.Series:
    runs = table(cfg, "runs")
    return runs[runs.job == job].sort_values("started_at").iloc[-1]


def cli(cfg: dict, tmp_path: Path, capsys, job: str, *argv: str) -> tuple[int, str, str]:
    """Run `python -m jobs <job> --conf <cfg as a file> ...` in this process (sharing its Spark session)."""
    conf = tmp_path / f"conf-{next(_conf_numbers)}.json"
    conf.write_text(json.dumps(cfg))  # JSON is YAML
    code = main([job, "--conf", str(conf), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, *fragments: str) -> str:
    """The single `error: ...` line a failed job prints, holding every fragment and no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "Python worker" not in err and "Pandas' object" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def ndjson(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def bulk(index: str, doc_id: str, document: dict) -> list[str]:
    return [json.dumps({"index": {"_index": index, "_id": doc_id}}), json.dumps(document)]


def event(query_id: str, timestamp, ordinal, action: str = "impression", product: str = "P1") -> dict:
    return {"action_name": action, "query_id": query_id, "session_id": "s1", "client_id": "c1", "timestamp": timestamp,
            "event_attributes": {"object": {"object_id": product, "object_id_field": "sku"}, "position": {"ordinal": ordinal}}}


@pytest.fixture()
def cfg(tmp_path) -> dict:
    """An empty warehouse of the test's own."""
    return make_config(tmp_path / "warehouse", tmp_path / "models")


# ---- 1. an empty input never replaces a table ----------------------------------------------

def test_empty_ubi_file_never_replaces_query_log(spark, cfg, tmp_path, capsys):
    assert cli(cfg, tmp_path, capsys, "import-ubi", "--path", str(UBI / "bulk.ndjson"))[0] == 0
    before = row_counts(cfg)
    assert before == {"query_log": 6}
    empty = ndjson(tmp_path / "empty.ndjson", [])

    code, _, err = cli(cfg, tmp_path, capsys, "import-ubi", "--path", str(empty))
    assert code == 1
    one_error_line(err, "import-ubi failed: query_log: refusing to replace 6 rows with 0 rows from", str(empty),
                   "nothing was written", "--allow-empty")
    assert row_counts(cfg) == before
    assert last_run(cfg, "import-ubi").status == "failed"
    assert len(rejects_of(cfg, "import-ubi")) == 4  # the previous import's rejects are kept too

    code, out, _ = cli(cfg, tmp_path, capsys, "import-ubi", "--path", str(empty), "--allow-empty")  # on purpose
    assert code == 0 and "in 0, out 0, rejected 0" in out
    assert row_counts(cfg) == {"query_log": 0}


def imported_wands_and_a_copy(cfg: dict, tmp_path: Path, capsys) -> tuple[dict[str, int], Path]:
    """Import the WANDS fixture, then copy it to a folder a test may spoil: (row counts after the import, the copy)."""
    assert cli(cfg, tmp_path, capsys, "import-wands", "--path", str(FIXTURES / "wands"))[0] == 0
    folder = tmp_path / "wands"
    shutil.copytree(FIXTURES / "wands", folder)
    return row_counts(cfg), folder


def test_wands_with_every_label_unknown_writes_neither_table(spark, cfg, tmp_path, capsys):
    """A replace of two tables stops before either when one of them would be emptied."""
    before, folder = imported_wands_and_a_copy(cfg, tmp_path, capsys)
    (folder / "label.csv").write_text("id\tquery_id\tproduct_id\tlabel\n0\t1\t102\tGood\n1\t2\t103\tBad\n")
    code, _, err = cli(cfg, tmp_path, capsys, "import-wands", "--path", str(folder))
    assert code == 1
    one_error_line(err, "judgments: refusing to replace 5 rows with 0 rows from", "label.csv (2 rejected)")
    assert row_counts(cfg) == before == {"catalog": 3, "judgments": 5}


# ---- 2. / 9. ESCI judgments JSON of the wrong shape ----------------------------------------

def test_esci_json_of_the_wrong_shape_stops_naming_the_file(spark, cfg, tmp_path, capsys):
    fixture = FIXTURES / "esci" / "judgments.json"
    assert cli(cfg, tmp_path, capsys, "import-esci", "--judgments-json", str(fixture))[0] == 0
    before = row_counts(cfg)
    assert before == {"judgments": 5}
    cases = {
        "no_ratings.json": (b'{"name": "ESCI", "ratings": []}', "no 'judgmentRatings' list", 'found keys "name", "ratings"'),
        "a_list.json": (b"[1, 2]", "no 'judgmentRatings' list", "found a JSON list"),
        "truncated.json": (b'{"judgmentRatings": [\n  {"query": "sofa", ', "not valid JSON at line 2 column", ""),
        "latin1.json": (b'{"judgmentRatings": [\n{"query": "sof\xe1"}]}', "line 2 is not valid UTF-8", ""),
        "empty_list.json": (b'{"judgmentRatings": []}', "judgments: refusing to replace 5 rows with 0 rows from", ""),
    }
    for name, (content, message, detail) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        code, _, err = cli(cfg, tmp_path, capsys, "import-esci", "--judgments-json", str(path))
        assert code == 1, name
        one_error_line(err, str(path), message, detail)
        assert row_counts(cfg) == before, name


def test_esci_json_entries_of_the_wrong_shape_are_rejected_one_by_one(spark, cfg, tmp_path, capsys):
    document = {"judgmentRatings": [
        5,
        {"query": "gray sofa"},
        {"query": "gray sofa", "ratings": [7, {"docId": "B1", "rating": "100.000"}, {"docId": 42, "rating": "1.000"}]},
        {"query": ["not", "text"], "ratings": [{"docId": "B2", "rating": "10.000"}]},
        {"query": "oak desk", "ratings": [{"docId": "B3", "rating": None}, {"docId": "B4", "rating": "NaN"}]},
    ]}
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(document))
    code, out, _ = cli(cfg, tmp_path, capsys, "import-esci", "--judgments-json", str(path))
    assert code == 0 and "in 8, out 2, rejected 6" in out
    assert sorted(table(cfg, "judgments").product_id) == ["42", "B1"]  # a numeric docId is an id all the same
    assert sorted(rejects_of(cfg, "import-esci").reason) == [
        "judgmentRatings[0] is not an object", "judgmentRatings[1] has no ratings list",
        "judgmentRatings[2].ratings[0] is not an object", "query is not text",
        "unknown rating 'NaN' (expected 100/10/1/0)", "unknown rating 'null' (expected 100/10/1/0)"]


def test_esci_parquet_without_a_required_column_names_file_and_column(spark, cfg, tmp_path, capsys):
    folder = tmp_path / "esci"
    folder.mkdir()
    pd.DataFrame({"query": ["sofa"], "product_id": ["B1"], "product_locale": ["us"]}).to_parquet(
        folder / "shopping_queries_dataset_examples.parquet")
    pd.DataFrame({"product_id": ["B1"], "product_title": ["Sofa"], "product_locale": ["us"]}).to_parquet(
        folder / "shopping_queries_dataset_products.parquet")
    code, _, err = cli(cfg, tmp_path, capsys, "import-esci", "--path", str(folder))
    assert code == 1
    one_error_line(err, "shopping_queries_dataset_examples.parquet: required column 'esci_label' is missing",
                   "columns found: query, product_id, product_locale")
    (folder / "shopping_queries_dataset_examples.parquet").write_text("not parquet")
    code, _, err = cli(cfg, tmp_path, capsys, "import-esci", "--path", str(folder))
    assert code == 1
    one_error_line(err, "shopping_queries_dataset_examples.parquet: not a readable parquet file")
    assert row_counts(cfg) == {}


# ---- 3. / 9. WANDS: a quote, a bad byte, a short line, a missing column --------------------

WANDS_HEADER = "product_id\tproduct_name\tproduct_class\tcategory hierarchy\tproduct_description\tproduct_features"


def test_wands_lines_are_read_one_by_one(spark, cfg, tmp_path, capsys):
    folder = tmp_path / "wands"
    shutil.copytree(FIXTURES / "wands", folder)
    products = [
        WANDS_HEADER,
        "1\tsolid wood bed\tBeds\tFurniture / Beds\ta bed\tcolor:natural",
        '2\t"24 inch tv stand\tTV Stands\tFurniture / TV Stands\t24" wide\tcolor:black',  # opens a quote
        "3\tgray linen sofa\tSofas\tFurniture / Sofas\tthree seats\tBrand:Andover Mills",
        '4\t"quoted name"\tDesks\tFurniture / Desks\t\t',
        "5\toak writing desk\tDesks\tFurniture / Desks\tcaf\xe9 style\tmaterial:oak",  # written as latin-1 below
        "6\tfloor lamp\tLamps\tLighting / Lamps",  # two fields short
        "7\t\t \t\tno name",  # one field short
        "8\t\u00a0\t\tLighting\tnbsp title\t",
    ]
    data = "\n".join(products).encode("utf-8").replace("caf\xe9".encode("utf-8"), b"caf\xe9")
    (folder / "product.csv").write_bytes(data)
    code, out, _ = cli(cfg, tmp_path, capsys, "import-wands", "--path", str(folder))
    assert code == 0
    catalog = table(cfg, "catalog").set_index("product_id")
    assert sorted(catalog.index) == ["1", "2", "3", "4"]
    assert catalog.loc["2", "title"] == '"24 inch tv stand' and catalog.loc["3", "title"] == "gray linen sofa"
    assert catalog.loc["4", "title"] == "quoted name"  # a field wrapped whole in quotes loses them
    rejects = rejects_of(cfg, "import-wands")
    products_rejected = rejects[rejects.source_table == "wands.product"]
    by_line = {json.loads(r.raw)["_line"]: r.reason for r in products_rejected.itertuples()}
    assert by_line == {6: "line is not valid UTF-8", 7: "line has 4 tab-separated fields, the header 6",
                       8: "line has 5 tab-separated fields, the header 6", 9: "product without product_name"}
    assert json.loads(products_rejected[products_rejected.reason == "line is not valid UTF-8"].raw.iloc[0])["text"].startswith("5\toak")
    run_row = last_run(cfg, "import-wands")
    assert run_row.rows_in == 8 + 7 and run_row.rows_out == 4 + 5 and run_row.rows_rejected == 4 + 2
    assert run_row.rows_in == run_row.rows_out + run_row.rows_rejected


def test_wands_without_a_required_column_stops_naming_file_and_column(spark, cfg, tmp_path, capsys):
    before, folder = imported_wands_and_a_copy(cfg, tmp_path, capsys)
    (folder / "product.csv").write_text("product_id\ttitle\n1\tbed\n")
    code, _, err = cli(cfg, tmp_path, capsys, "import-wands", "--path", str(folder))
    assert code == 1
    one_error_line(err, f"{folder / 'product.csv'}: required column 'product_name' is missing (columns found: product_id, title)")
    (folder / "product.csv").unlink()
    code, _, err = cli(cfg, tmp_path, capsys, "import-wands", "--path", str(folder))
    assert code == 1
    one_error_line(err, f"{folder / 'product.csv'}: cannot be read (No such file or directory)")
    assert row_counts(cfg) == before


def test_a_reject_reason_is_never_nan():
    """pandas 3 keeps NaN through astype(str): "text" + NaN was NaN, and a row with a NaN reason passed as valid."""
    labels = pd.DataFrame({"query_id": ["1", "1", "1"], "product_id": ["a", "b", "c"],
                           "label": pd.array(["Exact", None, "Maybe"], dtype="str")})
    queries = pd.DataFrame({"query_id": ["1"], "query": ["sofa"]})
    judgments, rejected = wands_judgments(labels, queries, {"Exact": 2, "Partial": 1, "Irrelevant": 0})
    assert list(judgments.product_id) == ["a"]
    assert sorted(rejected.reason) == ["unknown label 'Maybe'", "unknown label 'null'"]


def test_read_tsv_counts_every_line(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_bytes(b"a\tb\r\n1\t2\r\n\r\n3\n\xff\t4\n\"5\"\t\"six \"\"6\"\"\"\n")
    rows, rejected = read_tsv(path, ["a", "b"])
    assert rows[["a", "b"]].values.tolist() == [["1", "2"], ["5", 'six "6"']] and list(rows._line) == [2, 6]
    assert list(rejected.reason) == ["line has 1 tab-separated fields, the header 2", "line is not valid UTF-8"]
    with pytest.raises(InputError, match=r"x.tsv: required column 'c' is missing \(columns found: a, b\)"):
        read_tsv(path, ["c"])


# ---- 5. / 9. UBI: bad bytes, implausible timestamps and positions, duplicates ---------------

def test_ubi_events_that_cannot_be_true_are_rejected(spark, cfg, tmp_path, capsys):
    query = {"query_id": "q1", "client_id": "c1", "user_query": "gray sofa", "timestamp": "2025-01-07T10:00:00Z"}
    lines: list[str | bytes] = [
        *bulk("ubi_queries", "query-1", query),
        *bulk("ubi_events", "e1", event("q1", "2025-01-07T10:00:01Z", 0)),
        *bulk("ubi_events", "e1", event("q1", "2025-01-07T10:00:09Z", 1)),   # the same id again
        *bulk("ubi_events", "e2", event("q1", "2025-01-07T10:00:02Z", 1e20)),  # OverflowError before
        *bulk("ubi_events", "e3", event("q1", "2025-01-07T10:00:02Z", 2 ** 62)),
        *bulk("ubi_events", "e4", event("q1", "2025-01-07T10:00:02Z", -3)),
        *bulk("ubi_events", "e5", event("q1", "2025-01-07T10:00:02Z", 1.5)),
        *bulk("ubi_events", "e6", event("q1", 0, 2)),                          # 1970-01-01
        *bulk("ubi_events", "e7", event("q1", -1, 2)),                         # 1969-12-31
        *bulk("ubi_events", "e8", event("q1", "9999-12-31T00:00:00Z", 2)),
        *bulk("ubi_events", "e9", event("q1", 1e30, 2)),
        json.dumps({"index": {"_index": "ubi_events", "_id": "e10"}}),
        json.dumps(event("q1", "2025-01-07T10:00:03Z", 2)).encode().replace(b"P1", b"P\xff1"),  # one bad byte
        *bulk("ubi_events", "e11", event("q1", "2025-01-07T10:00:05Z", 0, "click")),
        *bulk("ubi_events", "e12", {**event("q1", "2025-01-07T10:00:06Z", 0), "action_name": {"a": 1}}),
    ]
    path = ndjson(tmp_path / "ubi.ndjson", lines)
    code, out, _ = cli(cfg, tmp_path, capsys, "import-ubi", "--path", str(path))
    assert code == 0 and "in 13, out 2, rejected 11" in out
    log = table(cfg, "query_log")
    assert set(log.ds) == {"2025-01-07"}  # no 1969-12-31 or 9999-12-31 partition
    assert sorted(log.position.tolist()) == [1, 1]
    position = f"(expected a whole number 0..{MAX_POSITION})"
    timestamp = "(before 2000-01-01 or in the future)"
    assert sorted(rejects_of(cfg, "import-ubi").reason) == sorted([
        "duplicate event_id 'e1' (the first is kept)",
        f"implausible position ordinal 1e+20 {position}", f"implausible position ordinal {2 ** 62} {position}",
        f"implausible position ordinal -3 {position}", f"implausible position ordinal 1.5 {position}",
        f"implausible timestamp 1970-01-01T00:00:00+00:00 {timestamp}",
        f"implausible timestamp 1969-12-31T23:59:59+00:00 {timestamp}",
        f"implausible timestamp 9999-12-31T00:00:00+00:00 {timestamp}",
        "unparsable timestamp", "line is not valid UTF-8", "event without a text action_name"])
    unreadable = json.loads(rejects_of(cfg, "import-ubi").query("reason == 'line is not valid UTF-8'").raw.iloc[0])
    assert unreadable["file"] == "ubi.ndjson" and unreadable["line"] == 24


def test_ubi_exact_duplicates_without_ids_are_rejected(spark, cfg, tmp_path, capsys):
    queries = ndjson(tmp_path / "q.ndjson", [json.dumps({"query_id": "q1", "user_query": "gray sofa"})])
    same = json.dumps(event("q1", "2025-01-07T10:00:01Z", 0))
    events = ndjson(tmp_path / "e.ndjson", [same, same, json.dumps(event("q1", "2025-01-07T10:00:01Z", 1, product="P2"))])
    code, out, _ = cli(cfg, tmp_path, capsys, "import-ubi", "--queries", str(queries), "--events", str(events))
    assert code == 0 and "in 3, out 2, rejected 1" in out
    assert list(rejects_of(cfg, "import-ubi").reason) == ["exact duplicate of an earlier event"]


# ---- 5. / 7. / 8. build_pairs: events outside their day, duplicates, positions, bad bytes, bad titles ----

def append_rows(spark, cfg: dict, spec, rows: list[dict]) -> None:
    frame = spark.createDataFrame([tuple(r.get(c) for c in spec.columns) for r in rows], spec.schema)
    Warehouse(spark, cfg["warehouse"]["root"], "delta-rs").append(frame, spec, "test-bad-rows")


def test_build_pairs_rejects_what_cannot_be_true_and_survives_bad_text(spark, fresh_warehouse, tmp_path, capsys):
    cfg = fresh_warehouse
    day = table(cfg, "query_log").query("ds == @DEMO_DS")
    good = {k: (v.item() if hasattr(v, "item") else v) for k, v in day[day.action_name == "impression"].iloc[0].items()}
    base = {**good, "timestamp": NOW, "query_id": "bad-1"}
    append_rows(spark, cfg, CATALOG, [
        {"product_id": "NULLS", "title": "plain lamp", "brand": None, "category": None, "attributes": None,
         "updated_at": NOW},
        {"product_id": "TABS", "title": "\t\n\t", "brand": "x", "category": "a", "attributes": {}, "updated_at": NOW},
        {"product_id": "NBSP", "title": "\u00a0\u2007\u200b", "brand": "x", "category": "a", "attributes": {},
         "updated_at": NOW},
        {"product_id": "HUGE", "title": "x" * 1_000_000, "brand": "x", "category": "a", "attributes": {}, "updated_at": NOW},
    ])
    append_rows(spark, cfg, QUERY_LOG, [
        {**base, "timestamp": dt.datetime(1970, 1, 1, tzinfo=UTC)},
        {**base, "timestamp": dt.datetime(9999, 12, 31, tzinfo=UTC)},
        {**base, "timestamp": dt.datetime(2025, 1, 8, 0, 0, 1, tzinfo=UTC)},
        {**base, "position": 2 ** 62},
        {**base, "query_id": "dup"}, {**base, "query_id": "dup"},                 # one exact duplicate
        {**base, "query_id": "nulls", "object_id": "NULLS", "user_query": "plain lamp"},
        {**base, "query_id": "huge", "object_id": "HUGE", "user_query": "huge"},
    ])
    # a query that is not valid UTF-8: Parquet strings may hold any bytes (Spark casts binary to string unchecked)
    bad_bytes = (spark.createDataFrame([tuple(base.get(c) for c in QUERY_LOG.columns)], QUERY_LOG.schema)
                 .withColumn("user_query", F.unhex(F.lit("67726179FF736F6661")).cast("string")))
    Warehouse(spark, cfg["warehouse"]["root"], "delta-rs").append(bad_bytes, QUERY_LOG, "test-bad-bytes")
    before = row_counts(cfg)

    code, out, err = cli(cfg, tmp_path, capsys, "build_pairs", "--ds", DEMO_DS)
    assert code == 0, err
    rejects = rejects_of(cfg, "build_pairs", DEMO_DS)
    events = rejects[rejects.source_table == "query_log"].reason.value_counts().to_dict()
    assert events == {"timestamp outside the event's ds (UTC date)": 3, f"implausible position {2 ** 62} (above {MAX_POSITION})": 1,
                      "exact duplicate of another event": 1, "user_query is not valid UTF-8": 1}
    catalog = rejects[rejects.source_table == "catalog"].reason.value_counts().to_dict()
    assert catalog == {"catalog row without title": 2}
    run_row = last_run(cfg, "build_pairs")
    details = json.loads(run_row.details)
    assert run_row.rows_in == len(day) + 9 == details["events_accepted"] + run_row.rows_rejected
    assert run_row.rows_rejected == 6
    pairs = table(cfg, "pairs").set_index("product_id")
    assert pairs.loc["NULLS", "product_text"] == "plain lamp"  # no "brand: nan", no "category: nan"
    assert len(pairs.loc["HUGE", "product_text"]) == settings_of(cfg).pairs.product_text_max_words * MAX_CHARS_PER_WORD
    after = row_counts(cfg)
    assert {k: v for k, v in after.items() if k != "pairs"} == before


def test_catalog_texts_of_bad_rows(spark):
    rows = [("1", "Sofa", None, None, None), ("2", " \t ", "b", "c", {}), ("3", "\u3000", "b", "c", {}),
            ("4", "Lamp", None, "A > B", {"color": None, "size": "xl"}), (None, "x", "b", "c", {})]
    catalog = spark.createDataFrame([(pid, title, "", brand, category, attributes, NOW)
                                     for pid, title, brand, category, attributes in rows], CATALOG.schema)
    texts, rejected = catalog_texts(catalog, PairsSettings())
    assert dict(texts.collect()) == {"1": "sofa", "4": "lamp | category: a > b | size: xl"}
    assert sorted(r.reason for r in rejected.collect()) == ["catalog row without product_id", "catalog row without title",
                                                            "catalog row without title"]


# ---- 6. / 9. judgments out of the label scheme, conflicting grades ---------------------------

def test_judgments_out_of_scheme_and_conflicting_grades_are_rejected_with_reasons(spark):
    scheme = LabelScheme(grades={"Exact": 2, "Partial": 1, "Irrelevant": 0}, relevant_min_grade=1)
    rows = [
        ("sofa", "p1", 99, "Exact"), ("sofa", "p2", -1, None), ("sofa", "p3", None, "Exact"),
        ("sofa", "p4", 1, "Maybe"), ("sofa", "p5", 2, "Partial"), ("sofa", "p6", 2, "2.0"), ("sofa", "p7", 1, None),
        ("desk", "p1", 2, "Exact"), ("desk", "p1", 2, "Exact"), ("desk", "p1", 1, "Partial"),   # 2 wins 2 to 1
        ("Desk!", "p2", 2, "Exact"), ("desk", "p2", 0, "Irrelevant"),                           # a tie: the lower wins
        ("lamp", "p9", 1, "Partial"),                                                            # p9 not in the catalog
    ]
    judgments = spark.createDataFrame([(*r, "test") for r in rows], JUDGMENTS.schema)
    texts = spark.createDataFrame([(f"p{i}", f"product {i}") for i in range(1, 8)], "product_id string, product_text string")
    classified = {(r.query, r.product_id, r.grade, r.label): r.reason
                  for r in classify_judgments(judgments, texts, scheme).collect()}
    conflict = "conflicts with other judgments of the pair (resolved to {}: " + CONFLICT_RULE + ")"
    assert classified == {
        ("sofa", "p1", 99, "Exact"): "grade 99 is not in the label scheme (0, 1, 2)",
        ("sofa", "p2", -1, None): "negative grade -1",
        ("sofa", "p3", None, "Exact"): "missing grade",
        ("sofa", "p4", 1, "Maybe"): "unknown label 'Maybe'",
        ("sofa", "p5", 2, "Partial"): "grade 2 disagrees with its label 'Partial' (graded 1)",
        ("sofa", "p6", 2, "2.0"): None,
        ("sofa", "p7", 1, None): None,
        ("desk", "p1", 2, "Exact"): None,
        ("desk", "p1", 1, "Partial"): "grade 1 " + conflict.format(2),
        ("Desk!", "p2", 2, "Exact"): "grade 2 " + conflict.format(0),
        ("desk", "p2", 0, "Irrelevant"): None,
        ("lamp", "p9", 1, "Partial"): "product not in catalog",
    }
    # without the scheme (how build_pairs and finetune call it today), null and negative grades are still rejected
    plain = {(r.query, r.product_id, r.grade): r.reason for r in classify_judgments(judgments, texts).collect()}
    assert plain[("sofa", "p3", None)] == "missing grade" and plain[("sofa", "p2", -1)] == "negative grade -1"


def test_build_pairs_rejects_judgments_without_a_usable_grade(spark, fresh_warehouse, tmp_path, capsys):
    cfg = fresh_warehouse
    judged = table(cfg, "judgments").iloc[0]
    append_rows(spark, cfg, JUDGMENTS, [{**judged.to_dict(), "grade": None}, {**judged.to_dict(), "grade": -1}])
    code, _, err = cli(cfg, tmp_path, capsys, "build_pairs", "--ds", DEMO_DS)
    assert code == 0, err
    rejects = rejects_of(cfg, "build_pairs", DEMO_DS)
    assert {"missing grade", "negative grade -1"} <= set(rejects[rejects.source_table == "judgments"].reason)


# ---- 4. the model is probed before relevance is written --------------------------------------

@pytest.fixture(scope="module")
def scored(spark, demo_warehouse, tmp_path_factory) -> dict:
    """The demo inputs with pairs and relevance for DEMO_DS (the tiny model), in a warehouse of this module."""
    cfg = copy_warehouse(demo_warehouse, tmp_path_factory.mktemp("scored") / "warehouse")
    run(spark, cfg, build_pairs)
    run(spark, cfg, score)
    return cfg


@pytest.fixture()
def scored_copy(scored, tmp_path) -> dict:
    return copy_warehouse(scored, tmp_path / "warehouse")


def broken_versions(models_root: Path, tiny_model_root: Path) -> None:
    """Model versions that load but cannot be trusted: no tokenizer files, NaN weights, a constant output."""
    import torch

    shutil.copytree(tiny_model_root / "tiny-test", models_root / "no-tokenizer")
    for name in ("vocab.txt", "tokenizer.json"):
        (models_root / "no-tokenizer" / "model" / name).unlink(missing_ok=True)
    card = json.loads((models_root / "no-tokenizer" / "model_card.json").read_text())
    (models_root / "no-tokenizer" / "model_card.json").write_text(json.dumps({**card, "version": "no-tokenizer"}))
    model = load_model_version(tiny_model_root / "tiny-test")
    network, head = model.torch_network, model.torch_network.classifier
    assert isinstance(head, torch.nn.Linear)
    for version, fill in (("nan-weights", float("nan")), ("constant", 0.0)):
        with torch.no_grad():
            head.weight.fill_(fill)
        save_model_version(models_root, network, model.tokenizer, dataclasses.replace(model.card, version=version))


@pytest.mark.parametrize("version, message", [
    ("no-tokenizer", "its tokenizer has 5 tokens for a network of 30522 (tokenizer files such as vocab.txt"),
    ("nan-weights", "model nan-weights: 8 of 8 probe scores are NaN or infinite"),
    ("constant", "model constant: it gives every probe pair the same score"),
])
def test_a_model_that_cannot_be_trusted_never_writes_relevance(spark, scored_copy, tiny_model_root, tmp_path, capsys,
                                                                version, message):
    cfg = scored_copy
    models_root = tmp_path / "models"
    models_root.mkdir()
    broken_versions(models_root, tiny_model_root)
    set_path(cfg, "model.models_root", str(models_root))
    before = row_counts(cfg)
    relevance_version = DeltaTable(str(Path(cfg["warehouse"]["root"]) / "relevance")).version()
    code, _, err = cli(cfg, tmp_path, capsys, "score", "--ds", DEMO_DS, "--set", f"model.version={version}")
    assert code == 1
    one_error_line(err, "score failed: ModelError:", message)
    assert row_counts(cfg) == before
    assert DeltaTable(str(Path(cfg["warehouse"]["root"]) / "relevance")).version() == relevance_version
    assert last_run(cfg, "score").status == "failed"


def test_scores_that_are_not_probabilities_are_counted_and_the_shift_is_measured(spark):
    frame = spark.createDataFrame([(0.1,), (float("nan"),), (None,), (1.5,), (0.9,)], "score double")
    assert unusable_scores(frame) == 3
    assert population_stability([0.1] * 10, [0.1] * 10) == 0
    deciles = [i / 10 for i in range(11)]
    uniform = spark.createDataFrame([((i + 0.5) / 100,) for i in range(100)], "score double")
    assert score_shift(uniform, deciles) == 0 and score_shift(uniform, None) is None
    squeezed = spark.createDataFrame([(0.95,)] * 100, "score double")
    shift = score_shift(squeezed, deciles)
    assert shift is not None and shift > 2  # every score in the top decile: far from validation


def test_score_reports_the_probe_and_the_distribution_check(scored):
    details = json.loads(last_run(scored, "score").details)
    assert 0 < details["probe_min"] < details["probe_max"] < 1
    assert details["score_psi_vs_validation"] == "the model card has no validation_score_deciles"


# ---- 10. audit without judgments ------------------------------------------------------------

def test_audit_without_or_with_empty_judgments_is_the_log_only_audit(spark, scored_copy, tmp_path, capsys):
    cfg = scored_copy
    root = Path(cfg["warehouse"]["root"])
    empty = spark.createDataFrame([], JUDGMENTS.schema)
    Warehouse(spark, root, "delta-rs", allow_empty_replace=True).replace(empty, JUDGMENTS, "test-empty")
    for state in ("empty", "absent"):
        if state == "absent":
            shutil.rmtree(root / "judgments")
        code, out, err = cli(cfg, tmp_path, capsys, "audit", "--ds", DEMO_DS)
        assert code == 0, (state, err)
        audit_rows = table(cfg, "relevance_audit").query("ds == @DEMO_DS")
        assert {"irrelevant_impression_share@10", "irrelevant_click_share"} <= set(audit_rows.metric), state
        assert json.loads(last_run(cfg, "audit").details)["judged_queries"] == 0


# ---- 11. a warehouse that cannot be written -------------------------------------------------

def test_an_unwritable_table_is_one_line_naming_it_and_nothing_is_committed(spark, cfg, tmp_path, capsys):
    root = Path(cfg["warehouse"]["root"])
    root.mkdir(parents=True)
    (root / "query_log").write_text("a file where the table's folder belongs")
    code, _, err = cli(cfg, tmp_path, capsys, "import-ubi", "--path", str(UBI / "bulk.ndjson"))
    assert code == 1
    one_error_line(err, "import-ubi failed: query_log: computing or writing its rows failed, nothing was committed:",
                   f"({root.resolve() / 'query_log'} is a file, not a table folder)")
    assert (root / "query_log").read_text().startswith("a file")


def test_one_line_digs_the_python_error_out_of_a_spark_failure():
    class PythonException(Exception):
        pass

    worker = PythonException("\n  An exception was thrown from the Python worker. Please see the stack trace below.\n"
                             "Traceback (most recent call last):\n  File \"x.py\", line 3, in write\n"
                             "OSError: [Errno 28] No space left on device\n")
    assert one_line(worker) == "OSError: [Errno 28] No space left on device (raised in a Spark task)"
    assert one_line(KeyError("product_name")) == "KeyError: 'product_name'"
    assert one_line(WarehouseError("catalog: refusing\nsecond line")) == "catalog: refusing"


# ---- 12. settings are checked before Spark starts --------------------------------------------

@pytest.mark.parametrize("setting, message", [
    ("scoring.devise=cuda", "error: unknown setting 'scoring.devise'; did you mean 'scoring.device'?"),
    ("scoring.arrow_batch_rows=many", "error: setting 'scoring.arrow_batch_rows' must be an integer (its default is 4096), not \"many\""),
    ("scoring.device=gpu", "error: setting 'scoring.device' must be auto | cpu | cuda (its default is \"auto\"), not \"gpu\""),
    ("audit.ks=[5, ten]", "error: setting 'audit.ks' must be a list (each an integer) (its default is [5, 10]), not [5, \"ten\"]"),
    ("labels.scheme=esci2", "error: label scheme 'esci2' is not defined under labels.schemes (defined: chorus, esci, wands)"),
    ("scoring.incremental=sometimes", "error: setting 'scoring.incremental' must be true or false (its default is true), not \"sometimes\""),
    ("pairs.ctr_prior_weight=[1]", "error: setting 'pairs.ctr_prior_weight' must be a number (its default is 20.0), not [1]"),
    ("warehouse=/tmp", "error: setting 'warehouse' must be a mapping"),
    ("nonsense=1", "error: unknown setting 'nonsense'; the settings are listed in relevance/settings.py"),
])
def test_unknown_settings_and_wrong_types_exit_2_before_spark_starts(setting, message):
    env = {**os.environ, "JAVA_HOME": "/nonexistent", "PATH": os.path.dirname(sys.executable)}  # no Java to start
    out = subprocess.run([sys.executable, "-m", "jobs", "score", "--ds", DEMO_DS, "--set", setting], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith(message) and out.stderr.count("\n") == 1


def test_valid_overrides_of_every_kind_are_accepted():
    from jobs.core.config import load_settings

    settings = load_settings(ROOT / "conf" / "local.yaml", [
        "scoring.batch_tokens=4096", "model.version=2025", "finetune.learning_rate=1", "audit.ks=[1, 3]",
        "spark.conf.spark.executor.cores=4", "labels.schemes.mine={grades: {good: 1}, relevant_min_grade: 1}",
        "imports.ubi.path=/x", "finetune.version=v1", "audit.compare=null", "scoring.batch_tokens=auto"])
    assert settings.spark.conf == {"spark.executor.cores": 4} and settings.scoring.batch_tokens == "auto"
    assert settings.model.version == "2025" and settings.finetune.learning_rate == 1.0 and settings.audit.ks == (1, 3)
    assert settings.labels.named("mine").grades == {"good": 1} and settings.audit.compare is None


def test_a_ds_that_is_not_a_date_is_refused():
    with pytest.raises(SystemExit) as exit_:
        main(["build_pairs", "--ds", "2025-01-07' OR '1'='1"])
    assert exit_.value.code == 2


# ---- model versions: complete or absent, readable by other users; vacuum ---------------------

def test_a_model_version_is_written_whole_with_readable_permissions(tmp_path, tiny_model_root):
    model = load_model_version(tiny_model_root / "tiny-test")
    split = json.dumps({"train": ["a"], "val": ["b"], "test": ["c"]})
    path = save_model_version(tmp_path, model.torch_network, model.tokenizer, dataclasses.replace(model.card, version="v1"),
                              extra_files={"split.json": split})
    assert isinstance(path, Path) and (path / "split.json").read_text() == split
    for folder, _, files in os.walk(path):
        assert os.stat(folder).st_mode & 0o777 == 0o755
        assert all(os.stat(os.path.join(folder, f)).st_mode & 0o777 == 0o644 for f in files)
    with pytest.raises(ModelError, match="must be a relative path inside the version"):
        save_model_version(tmp_path, model.torch_network, model.tokenizer, dataclasses.replace(model.card, version="v2"),
                           extra_files={"../escape.json": "{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]  # no half-written version, no staging folder


def test_vacuum_removes_only_old_unreferenced_files(spark, cfg, tmp_path, capsys):
    assert cli(cfg, tmp_path, capsys, "import-ubi", "--path", str(UBI / "bulk.ndjson"))[0] == 0
    folder = Path(cfg["warehouse"]["root"]) / "query_log" / "ds=2025-01-07"
    referenced = sorted(p.name for p in folder.iterdir())
    orphan, fresh = folder / "part-killed-run.snappy.parquet", folder / "part-running-job.snappy.parquet"
    shutil.copy(folder / referenced[0], orphan)
    shutil.copy(folder / referenced[0], fresh)
    old = (dt.datetime.now() - dt.timedelta(days=8)).timestamp()
    os.utime(orphan, (old, old))
    before = row_counts(cfg)
    code, out, _ = cli(cfg, tmp_path, capsys, "vacuum", "--dry-run")
    assert code == 0 and "would remove" in out and orphan.exists()
    code, out, _ = cli(cfg, tmp_path, capsys, "vacuum")
    assert code == 0
    assert not orphan.exists() and fresh.exists() and all((folder / name).exists() for name in referenced)
    assert row_counts(cfg) == before
