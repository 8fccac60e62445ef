"""The generic readers (no Spark): a catalog in JSON / JSON Lines / CSV / Parquet with a field mapping, and
judgments from Quepid CSV, TREC qrels, RRE ratings JSON and mapped CSV."""

import json

import pandas as pd
import pytest

from plumbing.errors import InputError
from relevance.data.readers import (
    CatalogMapping,
    catalog_from_records,
    judgments_from_labels,
    label_key,
    read_mapped_table,
    read_quepid_csv,
    read_query_texts,
    read_records,
    read_rre_ratings,
    read_trec_qrels,
)
from udfs.text import build_product_text

NOW = pd.Timestamp("2026-01-01", tz="UTC")
CHORUS = CatalogMapping.from_config({"product_id": "id", "brand": "supplier", "description": "short_description"},
                                    ["attr_t_", "attr_n_", "attr_b_"])
GRADES = {"0": 0, "1": 1, "2": 2, "3": 3}


def test_a_chorus_style_json_catalog_maps_prefixed_attributes_and_leaves_missing_parts_out(tmp_path):
    records = [
        {"id": "101", "title": "Xerox toner", "supplier": "Xerox", "short_description": "", "attr_t_product_colour": "Black",
         "attr_n_quantity_per_pack": 6.0, "attr_b_colour": True, "price": 10},
        {"id": 102, "title": "Laptop bag", "attr_n_width": 35.5},
        {"id": "103", "title": "   ", "supplier": "Nobody"},
        {"title": "no id"},
    ]
    (tmp_path / "1.json").write_text(json.dumps(records))
    catalog, rejected = catalog_from_records(read_records(tmp_path), CHORUS, NOW)
    assert catalog.product_id.tolist() == ["101", "102"]
    first, second = catalog.iloc[0], catalog.iloc[1]
    assert first.attributes == {"product colour": "Black", "quantity per pack": "6", "colour": "yes"}
    assert pd.isna(first.description) and pd.isna(first.category) and pd.isna(second.brand)
    assert second.attributes == {"width": "35.5"} and (catalog.updated_at == NOW).all()
    assert rejected.reason.tolist() == ["catalog record without a title (field 'title')",
                                        "catalog record without an id (field 'id')"]
    assert json.loads(rejected.raw.iloc[0])["supplier"] == "Nobody" and json.loads(rejected.raw.iloc[1])["_line"] == 4
    # the product text leaves the missing parts out: no "brand: nan", no empty category
    text = build_product_text(second.title, second.brand, second.category, second.attributes)
    assert text == "laptop bag | width: 35.5"


def test_jsonl_csv_and_parquet_catalogs_with_nested_attributes_and_category_lists(tmp_path):
    lines = [json.dumps({"sku": "a1", "name": "Red sofa", "cat": ["Home", "Sofas"], "attrs": {"color": "red", "seats": 3},
                         "brand": None}), "{not json", json.dumps({"sku": "a2", "name": "Lamp", "cat": "Home > Lamps"})]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    mapping = CatalogMapping.from_config({"product_id": "sku", "title": "name", "category": "cat", "attributes": "attrs"})
    catalog, rejected = catalog_from_records(read_records(tmp_path / "c.jsonl"), mapping, NOW)
    assert catalog.category.tolist() == ["Home > Sofas", "Home > Lamps"]
    assert catalog.attributes.iloc[0] == {"color": "red", "seats": "3"} and pd.isna(catalog.brand.iloc[0])
    assert rejected.reason.tolist() == ["line 2 is not a JSON object (JSONDecodeError)"]

    pd.DataFrame({"sku": ["b1", "b2"], "name": ["Mug", "Cup"], "updated": ["2025-05-01", "not a date"]}).to_csv(
        tmp_path / "c.csv", index=False)
    csv_mapping = CatalogMapping.from_config({"product_id": "sku", "title": "name", "updated_at": "updated"})
    catalog, rejected = catalog_from_records(read_records(tmp_path / "c.csv"), csv_mapping, NOW)
    assert catalog.updated_at.tolist() == [pd.Timestamp("2025-05-01", tz="UTC"), NOW] and rejected.empty

    pd.DataFrame({"sku": ["p1"], "name": ["Pan"], "cat": [["Kitchen", "Pans"]]}).to_parquet(tmp_path / "c.parquet")
    catalog, _ = catalog_from_records(read_records(tmp_path / "c.parquet"), mapping, NOW)
    assert catalog.category.tolist() == ["Kitchen > Pans"]


def test_catalog_files_that_cannot_be_used_stop_with_the_file_named(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_records(tmp_path / "missing.json")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(InputError, match="empty.json: holds no records"):
        read_records(tmp_path / "empty.json")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(InputError, match="cannot tell the format from the extension '.txt'"):
        read_records(tmp_path / "x.txt")
    with pytest.raises(InputError, match="unknown catalog column"):
        CatalogMapping.from_config({"colour": "c"})


def test_quepid_export_grades_through_the_label_scheme_and_rejects_what_it_cannot_map(tmp_path):
    path = tmp_path / "rated.csv"
    path.write_text('query,docid,rating\nlaptop,1,3\n"usb, cable",2,0\nlaptop,3,7\n,4,1\nlaptop,5,\nlaptop,6,2.0\nlaptop,7\n')
    judgments, rejected = judgments_from_labels(read_quepid_csv(path), GRADES, "quepid:chorus")
    assert judgments[["query", "product_id", "grade", "label"]].values.tolist() == [
        ["laptop", "1", 3, "3"], ["usb, cable", "2", 0, "0"], ["laptop", "6", 2, "2"]]
    assert rejected.reason.tolist() == ["rating '7' is not in the label scheme (0, 1, 2, 3)", "judgment without a query",
                                        "judgment without a rating", "line 8 has 2 fields, not 3"]
    (tmp_path / "bad.csv").write_text("query,doc,rating\n")
    with pytest.raises(InputError, match="required column 'docid' is missing"):
        read_quepid_csv(tmp_path / "bad.csv")


def test_trec_qrels_take_query_texts_from_a_queries_file(tmp_path):
    (tmp_path / "q.tsv").write_text("q1\tgaming laptop\nq2\tred sofa\n")
    (tmp_path / "qrels").write_text("q1 0 d1 2\nq2 0 d2 0\nq3 0 d3 1\nq1 0 d4\n")
    rows = read_trec_qrels(tmp_path / "qrels", read_query_texts(tmp_path / "q.tsv"))
    judgments, rejected = judgments_from_labels(rows, {"0": 0, "1": 1, "2": 2}, "trec")
    assert judgments[["query", "product_id", "grade"]].values.tolist() == [["gaming laptop", "d1", 2], ["red sofa", "d2", 0]]
    assert rejected.reason.tolist() == ["query id 'q3' has no text in the queries file",
                                        "line 4 has 3 fields, not 4 (query_id iteration doc_id relevance)"]


def test_rre_ratings_in_both_relevant_document_layouts(tmp_path):
    ratings = {"index": "products", "id_field": "id", "topics": [{"description": "t", "query_groups": [
        {"name": "laptops", "queries": [{"template": "q.json", "placeholders": {"$query": "laptop"}}],
         "relevant_documents": {"d1": {"gain": 3}, "d2": {"gain": 1}}}]}],
        "query_groups": [{"name": "sofas", "queries": [{"placeholders": {"$query": "sofa"}}, {"placeholders": {}}],
                          "relevant_documents": {"2": ["d3", "d4"]}}]}
    (tmp_path / "ratings.json").write_text(json.dumps(ratings))
    judgments, rejected = judgments_from_labels(read_rre_ratings(tmp_path / "ratings.json"), GRADES, "rre")
    assert judgments[["query", "product_id", "grade"]].values.tolist() == [
        ["sofa", "d3", 2], ["sofa", "d4", 2], ["laptop", "d1", 3], ["laptop", "d2", 1]]
    assert rejected.reason.str.contains("has no query text").sum() == 2
    (tmp_path / "other.json").write_text(json.dumps({"judgmentRatings": []}))
    with pytest.raises(InputError, match="no 'query_groups'"):
        read_rre_ratings(tmp_path / "other.json")


def test_mapped_csv_judgments_and_label_keys(tmp_path):
    pd.DataFrame({"q": ["mug"], "pid": [7], "score": ["Exact"]}).to_csv(tmp_path / "j.csv", index=False)
    rows = read_mapped_table(tmp_path / "j.csv", "csv", {"query": "q", "product_id": "pid", "label": "score"})
    judgments, _ = judgments_from_labels(rows, {"Exact": 2, "Partial": 1, "Irrelevant": 0}, "csv")
    assert judgments[["query", "product_id", "grade", "label"]].values.tolist() == [["mug", "7", 2, "Exact"]]
    with pytest.raises(InputError, match="column 'grade' \\(mapped to judgments.label\\) is missing"):
        read_mapped_table(tmp_path / "j.csv", "csv", {"query": "q", "product_id": "pid"})
    assert [label_key(v) for v in ("3", "3.0", 3.0, " E ", "2.5", None)] == ["3", "3", "3", "E", "2.5", None]


def test_an_empty_or_broken_json_catalog_is_named_once_with_its_line(tmp_path):
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(InputError) as raised:
        read_records(tmp_path / "empty.json")
    assert str(raised.value) == f"{tmp_path / 'empty.json'}: not valid JSON at line 1 column 1: Expecting value"
