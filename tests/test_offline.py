"""A team with a catalog and judgments but no query log: import its own files, fine-tune, score and audit offline.

The catalog is a JSON array with the nulls real catalogs have (no category, no brand, no description on some
products); the judgments are a Quepid CSV export. Every job runs through, on real Spark and Delta tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from jobs import audit, build_pairs, finetune, import_catalog, import_judgments, score
from jobs.core.config import set_path
from relevance.data.demo import generate_demo
from tests.conftest import make_config, run

DS = "2026-12-01"


@pytest.fixture(scope="module")
def offline_files(tmp_path_factory) -> dict:
    """A demo catalog as JSON records with holes, and its judgments as a Quepid export."""
    folder = tmp_path_factory.mktemp("team-files")
    frames = generate_demo(seed=5, n_products=300, n_queries=60, n_days=1, searches_per_day=100, judged_queries=30,
                           judgments_per_query=10)
    records = []
    for n, row in enumerate(frames["catalog"].itertuples()):
        record = {"sku": row.product_id, "name": row.title, "maker": row.brand, "about": row.description,
                  "path": row.category.split(" > "), "specs": dict(row.attributes)}
        for key in (("path",), ("maker",), ("about", "specs"))[n % 3]:
            record.pop(key)  # a third without category, a third without brand, a third without description or attributes
        records.append(record)
    (folder / "catalog.json").write_text(json.dumps(records))
    judged = frames["judgments"].rename(columns={"product_id": "docid"}).assign(rating=lambda f: f.grade)
    judged[["query", "docid", "rating"]].to_csv(folder / "rated.csv", index=False)
    return {"catalog": folder / "catalog.json", "judgments": folder / "rated.csv", "rows": len(judged),
            "products": len(records)}


def test_offline_evaluation_runs_every_job_on_a_catalog_with_nulls(spark, tmp_path, tiny_model_root, offline_files):
    cfg = make_config(tmp_path / "warehouse", tmp_path / "models")
    for key, value in {
        "labels.scheme": "chorus", "model.base": str(tiny_model_root / "tiny-test" / "model"), "model.version": "promoted",
        "imports.catalog.path": str(offline_files["catalog"]),
        "imports.catalog.mapping": {"product_id": "sku", "title": "name", "brand": "maker", "description": "about",
                                    "category": "path", "attributes": "specs"},
        "imports.judgments.path": str(offline_files["judgments"]), "imports.judgments.format": "quepid",
        "finetune.epochs": 1, "finetune.batch_size": 16, "finetune.max_length": 48, "finetune.version": "offline-test",
        "finetune.force_promote": True,
    }.items():
        set_path(cfg, key, value)

    catalog = run(spark, cfg, import_catalog, ds=None)
    assert (catalog.rows_in, catalog.rows_out, catalog.rows_rejected) == (offline_files["products"],) * 2 + (0,)
    assert catalog.details["products_without"]["category"] == len(range(0, offline_files["products"], 3))
    judgments = run(spark, cfg, import_judgments, ds=None)
    assert judgments.rows_in == judgments.rows_out == offline_files["rows"] and judgments.details["missing_from_catalog"] == 0

    pairs = run(spark, cfg, build_pairs, ds=DS)
    assert "offline evaluation" in pairs.summary and pairs.rows_in == offline_files["rows"]
    assert pairs.rows_in == pairs.details["judgments_used"] + pairs.rows_rejected
    written = DeltaTable(str(tmp_path / "warehouse" / "pairs")).to_pandas()
    assert len(written) == pairs.rows_out and (written.source == "judgment").all() and written.segment.isna().all()
    assert not written.product_text.str.contains("nan").any() and not written.product_text.str.contains("brand: \\|").any()

    tuned = run(spark, cfg, finetune, ds=None)
    assert tuned.details["kind"] == "bi_encoder" and tuned.details["promoted"]
    card = json.loads((tmp_path / "models" / "offline-test" / "model_card.json").read_text())
    assert card["kind"] == "bi_encoder" and card["promotion"]["decision"].startswith(("validation", "forced"))
    assert card["training"]["catalog"]["steps"] > 0  # two thirds of the products have a category
    assert set(json.loads((tmp_path / "models" / "offline-test" / "split.json").read_text())) == {"train", "val", "test"}

    scored = run(spark, cfg, score, ds=DS)
    assert scored.rows_out == pairs.rows_out and scored.model_version == "offline-test"
    audited = run(spark, cfg, audit, ds=DS)
    assert "Log-only audits skipped" in audited.summary and audited.details["judged_queries"] > 0
    rows = DeltaTable(str(tmp_path / "warehouse" / "relevance_audit")).to_pandas()
    ndcg = rows[(rows.metric == "ndcg@10") & (rows.segment == "all")]
    assert set(ndcg.system) >= {"model", "bm25", "zero_shot"}
    assert not rows.metric.str.startswith("irrelevant_").any()  # nothing from logs that are not there
    assert pd.Series(ndcg.value).between(0, 1).all()


def test_no_log_and_no_judgments_is_a_clear_error(spark, tmp_path, offline_files):
    from jobs.core.job import JobError

    cfg = make_config(tmp_path / "warehouse", tmp_path / "models")
    set_path(cfg, "imports.catalog.path", str(offline_files["catalog"]))
    set_path(cfg, "imports.catalog.mapping", {"product_id": "sku", "title": "name"})
    run(spark, cfg, import_catalog, ds=None)
    with pytest.raises(JobError, match="nothing to pair: no query_log at .* and no judgments at"):
        run(spark, cfg, build_pairs, ds=DS)
    assert not (Path(tmp_path) / "warehouse" / "pairs").exists()
