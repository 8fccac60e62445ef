"""The import jobs (WANDS, ESCI, UBI): pure parsers, then each job on tiny fixtures and on the shared ESCI/UBI sample."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from jobs import build_pairs, import_esci, import_ubi, import_wands
from jobs.__main__ import main
from jobs.core.config import set_path
from plumbing.delta import Warehouse
from relevance.data.importers import (
    EVENTS,
    QUERIES,
    brand_from_features,
    bullet_points,
    category_path,
    event_position,
    iter_ubi_lines,
    parse_features,
    parse_timestamp,
    rating_label,
)
from relevance.frames import to_spark
from schemas.tables import CATALOG
from tests.conftest import SHARED_DATA, make_config, run, table

FIXTURES = Path(__file__).resolve().parent / "fixtures"
UBI = FIXTURES / "ubi"
UTC = "UTC"


def rejects_of(cfg: dict, job: str) -> pd.DataFrame:
    rejects = table(cfg, "rejects")
    return rejects[(rejects.job == job) & (rejects.ds == "all")]


def write_catalog(spark, cfg: dict, product_ids: list[str]) -> None:
    """A minimal catalog holding just these products."""
    frame = pd.DataFrame({"product_id": product_ids, "title": [f"product {p}" for p in product_ids], "description": "",
                          "brand": "", "category": "", "attributes": [{} for _ in product_ids],
                          "updated_at": pd.Timestamp("2025-01-01", tz=UTC)})
    Warehouse(spark, cfg["warehouse"]["root"], "delta-rs").replace(to_spark(spark, frame, CATALOG), CATALOG, "test-catalog")


@pytest.fixture()
def cfg(tmp_path) -> dict:
    """An empty warehouse of the test's own."""
    return make_config(tmp_path / "warehouse", tmp_path / "models")


def assert_counts_add_up(result) -> None:
    assert result.rows_in == result.rows_out + result.rows_rejected


# ---- pure parsers ----------------------------------------------------------------------

def test_wands_feature_and_category_parsing():
    features = parse_features("overallwidth:64.7|style:mid-century: modern||novalue:|Brand:Andover Mills")
    assert features == {"overallwidth": "64.7", "style": "mid-century: modern", "Brand": "Andover Mills"}
    assert brand_from_features(features) == "Andover Mills"
    assert brand_from_features({"manufacturer": "Zipcode Design"}) == "Zipcode Design"
    assert brand_from_features({"color": "red"}) == ""
    assert category_path("Furniture / Office Furniture /  Desks ") == "Furniture > Office Furniture > Desks"
    assert category_path("") == ""


def test_timestamps_positions_and_ratings():
    assert parse_timestamp("2025-01-07T23:59:30-02:00") == pd.Timestamp("2025-01-08T01:59:30", tz=UTC)
    assert parse_timestamp("2025-01-07T10:00:05.123Z") == pd.Timestamp("2025-01-07T10:00:05.123", tz=UTC)
    assert parse_timestamp("2025-01-07 10:00:00") == pd.Timestamp("2025-01-07T10:00:00", tz=UTC)  # naive = UTC
    assert parse_timestamp(1736244010000) == parse_timestamp(1736244010) == pd.Timestamp("2025-01-07T10:00:10", tz=UTC)
    assert parse_timestamp("yesterday afternoon") is None and parse_timestamp(None) is None
    event = {"event_attributes": {"position": {"ordinal": 0}}}
    assert event_position(event, base=0) == 1 and event_position(event, base=1) == 0
    assert event_position({"event_attributes": {"position": {"page_depth": 3}}}, base=0) is None
    assert [rating_label(r) for r in ("100.000", "10.000", "1.000", "0.000", "50.000", None)] == ["E", "S", "C", "I", None, None]
    assert bullet_points("  first point \n\n- second\nthird\nfourth", limit=3) == ["first point", "second", "third"]


def test_bulk_and_plain_ndjson_yield_the_same_documents():
    bulk = list(iter_ubi_lines((UBI / "bulk.ndjson").read_text().splitlines(), None))
    plain = [*iter_ubi_lines((UBI / "queries.ndjson").read_text().splitlines(), QUERIES),
             *iter_ubi_lines((UBI / "events.ndjson").read_text().splitlines(), EVENTS)]
    assert [(kind, doc) for kind, doc, _ in bulk] == [(kind, doc) for kind, doc, _ in plain]
    assert sum(kind == QUERIES for kind, _, _ in bulk) == 3 and sum(kind == EVENTS for kind, _, _ in bulk) == 10
    assert sum(doc is None for _, doc, _ in bulk) == 1  # the truncated line
    # without an action line or a file kind, the document's fields tell queries from events
    sniffed = list(iter_ubi_lines((UBI / "queries.ndjson").read_text().splitlines(), None))
    assert {kind for kind, _, _ in sniffed} == {QUERIES}


# ---- WANDS -----------------------------------------------------------------------------

def test_import_wands_writes_catalog_judgments_and_rejects(spark, cfg):
    set_path(cfg, "imports.wands.path", str(FIXTURES / "wands"))
    result = run(spark, cfg, import_wands, ds=None)

    assert (result.rows_in, result.rows_out, result.rows_rejected) == (4 + 7, 3 + 5, 1 + 2)
    assert_counts_add_up(result)
    catalog = table(cfg, "catalog").set_index("product_id")
    assert sorted(catalog.index) == ["101", "102", "103"]
    assert catalog.loc["101", "brand"] == "Zipcode Design" and catalog.loc["102", "brand"] == "Andover Mills"
    assert catalog.loc["103", "brand"] == ""
    assert catalog.loc["101", "category"] == "Furniture > Bedroom Furniture > Beds & Headboards > Beds"
    assert dict(catalog.loc["103", "attributes"]) == {"material": "oak", "style": "mid-century: modern"}
    assert catalog.updated_at.notna().all()

    judgments = table(cfg, "judgments")
    assert len(judgments) == 5 and set(judgments.source) == {"wands"}
    grades = dict(zip(judgments.label, judgments.grade))
    assert grades == cfg["labels"]["schemes"]["wands"]["grades"] == {"Exact": 2, "Partial": 1, "Irrelevant": 0}
    assert set(zip(judgments["query"], judgments.product_id)) >= {("gray sofa", "102"), ("oak desk", "103")}

    rejects = rejects_of(cfg, "import-wands")
    assert sorted(rejects.reason) == ["product without product_name", "query_id not in query.csv", "unknown label 'Maybe'"]
    assert set(rejects.source_table) == {"wands.product", "wands.label"}
    assert json.loads(rejects[rejects.reason == "unknown label 'Maybe'"].raw.iloc[0])["label"] == "Maybe"


# ---- ESCI ------------------------------------------------------------------------------

def write_esci_parquet(folder: Path) -> None:
    """A tiny ESCI download: five us examples (one with a bad label), one es example; three us products (one untitled), one es."""
    examples = pd.DataFrame({
        "example_id": range(6),
        "query": ["gray sofa", "gray sofa", "gray sofa", "gray sofa", "oak desk", "sofá gris"],
        "query_id": [1, 1, 1, 1, 2, 3],
        "product_id": ["B01", "B02", "B03", "B04", "B01", "B09"],
        "product_locale": ["us", "us", "us", "us", "us", "es"],
        "esci_label": ["E", "S", "C", "I", "X", "E"],
        "small_version": [1, 1, 0, 0, 1, 1],
        "large_version": 1,
        "split": "train",
    })
    products = pd.DataFrame({
        "product_id": ["B01", "B02", "B03", "B09"],
        "product_title": ["Gray Linen Sofa", "Blue Velvet Sofa", None, "Sofá gris"],
        "product_description": ["<p>Three seats</p>", None, "no title", ""],
        "product_bullet_point": ["Linen upholstery\nSolid wood frame\n\nThree seats\nEasy assembly", None, None, None],
        "product_brand": ["Andover Mills", None, "Acme", "Marca"],
        "product_color": ["Gray", None, "Red", "Gris"],
        "product_locale": ["us", "us", "us", "es"],
    })
    folder.mkdir(parents=True, exist_ok=True)
    examples.to_parquet(folder / "shopping_queries_dataset_examples.parquet")
    products.to_parquet(folder / "shopping_queries_dataset_products.parquet")


def test_import_esci_parquet_writes_judgments_and_catalog(spark, cfg, tmp_path):
    write_esci_parquet(tmp_path / "esci")
    set_path(cfg, "imports.esci.path", str(tmp_path / "esci"))
    result = run(spark, cfg, import_esci, ds=None)

    assert (result.rows_in, result.rows_out, result.rows_rejected) == (5 + 3, 4 + 2, 1 + 1)
    assert_counts_add_up(result)
    assert result.details["skipped_other_locales"] == 2
    judgments = table(cfg, "judgments")
    assert dict(zip(judgments.label, judgments.grade)) == {"E": 3, "S": 2, "C": 1, "I": 0}
    assert set(judgments.source) == {"esci"} and set(judgments["query"]) == {"gray sofa"}
    catalog = table(cfg, "catalog").set_index("product_id")
    assert sorted(catalog.index) == ["B01", "B02"]
    assert catalog.loc["B01", "brand"] == "Andover Mills" and catalog.loc["B02", "brand"] == ""
    assert dict(catalog.loc["B01", "attributes"]) == {
        "color": "Gray", "bullet_1": "Linen upholstery", "bullet_2": "Solid wood frame", "bullet_3": "Three seats"}
    assert dict(catalog.loc["B02", "attributes"]) == {}
    rejects = rejects_of(cfg, "import-esci")
    assert sorted(rejects.reason) == ["product without product_title", "unknown esci_label 'X'"]


def test_import_esci_judgments_json_reports_products_missing_from_catalog(spark, cfg):
    set_path(cfg, "imports.esci.judgments_json", str(FIXTURES / "esci" / "judgments.json"))
    result = run(spark, cfg, import_esci, ds=None)  # no catalog yet: every judged product is missing

    assert (result.rows_in, result.rows_out, result.rows_rejected) == (7, 5, 2)
    assert_counts_add_up(result)
    assert result.details["missing_from_catalog"] == result.details["distinct_products"] == 4
    assert result.details["catalog_exists"] is False and "4 of 4 product ids are missing" in result.summary
    judgments = table(cfg, "judgments")
    assert sorted(judgments.label) == ["C", "E", "E", "I", "S"] and set(judgments.source) == {"esci"}
    assert sorted(rejects_of(cfg, "import-esci").reason) == [
        "missing docId", "unknown rating '50.000' (expected 100/10/1/0)"]

    write_catalog(spark, cfg, ["B000SOFA01", "B000DESK01", "OTHER"])
    again = run(spark, cfg, import_esci, ds=None)
    assert again.details["missing_from_catalog"] == 2 and again.details["catalog_exists"] is True
    assert len(table(cfg, "judgments")) == 5  # replaced, not appended


# ---- UBI -------------------------------------------------------------------------------

UBI_REASONS = ["event without a known query (its query_id is not in the UBI queries)", "line is not a JSON object",
               "missing object_id for action 'click'", "unparsable timestamp"]


def test_import_ubi_maps_events_and_rejects_the_malformed(spark, cfg):
    set_path(cfg, "imports.ubi.path", str(UBI / "bulk.ndjson"))
    result = run(spark, cfg, import_ubi, ds=None)

    assert (result.rows_in, result.rows_out, result.rows_rejected) == (10, 6, 4)
    assert_counts_add_up(result)
    assert sorted(rejects_of(cfg, "import-ubi").reason) == UBI_REASONS
    log = table(cfg, "query_log").sort_values(["timestamp", "action_name"]).reset_index(drop=True)
    assert log.ds.value_counts().to_dict() == {"2025-01-07": 4, "2025-01-08": 2}
    assert dict(zip(log.query_id, log.user_query)) == {"q1": "gray sofa", "q2": "oak desk"}
    impressions = log[log.action_name == "impression"]
    assert dict(zip(impressions.object_id, impressions.position)) == {"P1": 1, "P2": 2, "P3": 1}  # 0-based ordinals + 1
    cart = log[log.action_name == "add_to_cart"].iloc[0]
    assert cart.timestamp == pd.Timestamp("2025-01-07T10:00:10", tz=UTC)  # epoch milliseconds
    late = log[log.object_id == "P3"].iloc[0]  # 23:59:30 at -02:00 is the next UTC day
    assert late.ds == "2025-01-08" and late.session_id == "s2"
    search = log[log.action_name == "search"].iloc[0]
    assert pd.isna(search.object_id) and pd.isna(search.position)
    # no catalog yet: all three logged products are reported missing, without failing
    assert result.details["missing_from_catalog"] == 3 and result.details["catalog_exists"] is False


def test_import_ubi_cli_with_separate_plain_files(spark, cfg, tmp_path, capsys):
    set_path(cfg, "imports.ubi.path", str(UBI / "bulk.ndjson"))
    run(spark, cfg, import_ubi, ds=None)
    from_bulk = table(cfg, "query_log")

    write_catalog(spark, cfg, ["P1", "P2"])
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps(cfg))  # JSON is YAML
    argv = ["import-ubi", "--conf", str(conf), "--queries", str(UBI / "queries.ndjson"), "--events", str(UBI / "events.ndjson")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 of 3 product ids are missing from the catalog" in out and "in 10, out 6, rejected 4" in out
    columns = ["query_id", "action_name", "object_id", "position", "timestamp", "ds"]
    key = ["timestamp", "action_name", "object_id"]
    pd.testing.assert_frame_equal(table(cfg, "query_log")[columns].sort_values(key).reset_index(drop=True),
                                  from_bulk[columns].sort_values(key).reset_index(drop=True))
    assert sorted(rejects_of(cfg, "import-ubi").reason) == UBI_REASONS  # the partition was replaced, not appended

    assert main(argv + ["--position-base", "1"]) == 0
    impressions = table(cfg, "query_log").query("action_name == 'impression'")
    assert dict(zip(impressions.object_id, impressions.position)) == {"P1": 0, "P2": 1, "P3": 0}
    assert main(["import-ubi", "--conf", str(conf), "--queries", str(UBI / "queries.ndjson")]) == 2


# ---- the shared ESCI / UBI sample ------------------------------------------------------

SAMPLE_DAY = "2024-12-10"


@pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"shared ESCI/UBI sample not found at {SHARED_DATA}")
def test_shared_sample_imports_and_feeds_build_pairs(spark, cfg):
    set_path(cfg, "imports.esci.judgments_json", str(SHARED_DATA / "esci_us_judgments.json"))
    esci = run(spark, cfg, import_esci, ds=None)
    assert esci.details["queries"] == 150 and esci.rows_in == 6678 and esci.rows_rejected == 0
    assert_counts_add_up(esci)
    assert esci.details["missing_from_catalog"] == esci.details["distinct_products"] > 0  # there is no catalog

    # a catalog that knows two of the products shown on the sample's first day, so that day builds some pairs
    write_catalog(spark, cfg, ["B07CVR21VN", "B074WGMRCC"])
    set_path(cfg, "imports.ubi.path", str(SHARED_DATA / "ubi_queries_events.ndjson"))
    ubi = run(spark, cfg, import_ubi, ds=None)
    assert ubi.details["queries_read"] == 473 and ubi.details["events_read"] == 3448 and ubi.rows_in == 3448
    assert_counts_add_up(ubi)
    assert ubi.rows_out > 2000 and set(ubi.details["rejects_by_reason"]) <= set(UBI_REASONS)
    assert 0 < ubi.details["missing_from_catalog"] == ubi.details["distinct_products"] - 2
    assert SAMPLE_DAY in ubi.details["days"]

    pairs = run(spark, cfg, build_pairs, ds=SAMPLE_DAY)
    day_events = table(cfg, "query_log").query("ds == @SAMPLE_DAY")
    assert pairs.rows_in == len(day_events) == pairs.details["events_accepted"] + pairs.rows_rejected
    assert pairs.rows_out > 0 and pairs.rows_rejected > 0
    rejects = table(cfg, "rejects").query("job == 'build_pairs' and ds == @SAMPLE_DAY and source_table == 'query_log'")
    assert set(rejects.reason) == {"product not in catalog"}
    assert {json.loads(raw)["object_id"] for raw in rejects.raw}.isdisjoint({"B07CVR21VN", "B074WGMRCC"})
