"""Spark tests of each job on small generated data with a tiny random BERT (real Spark, real Delta tables)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake

from jobs import build_pairs, finetune, nightly, score
from jobs.__main__ import main
from jobs.core.job import JobError
from plumbing.delta import Warehouse
from relevance.settings import ARROW_BATCH_ROWS_KEY as ARROW_BATCH_ROWS
from schemas.tables import QUERY_LOG, TABLES
from tests.conftest import DEMO_DS, ROOT, make_config, run, settings_of, table
from udfs.model import load_model_version, resolve_model_dir
from udfs.scorer import score_pairs
from udfs.text import build_product_text, normalize_text

OUTPUT_TABLES = ("pairs", "relevance", "relevance_audit", "rejects")


def runs_of(cfg: dict, job: str) -> pd.DataFrame:
    runs = table(cfg, "runs")
    return runs[runs.job == job].sort_values("started_at")


def add_malformed_events(spark, cfg: dict) -> int:
    """Append events that must be rejected, each for a different reason, to the demo day."""
    ts = dt.datetime(2025, 1, 7, 10, tzinfo=dt.timezone.utc)
    good_product = table(cfg, "catalog").product_id.iloc[0]
    bad = [
        (None, "c", "s", "gray sofa", ts, "click", good_product, 1),      # missing query_id
        ("qx1", "c", "s", "gray sofa", ts, "hover", good_product, 1),     # unsupported action
        ("qx2", "c", "s", "gray sofa", ts, "impression", "NOPE-404", 1),  # product not in catalog
        ("qx3", "c", "s", "?!?", ts, "impression", good_product, 1),      # empty after normalization
        ("qx4", "c", "s", "gray sofa", ts, "impression", good_product, None),  # impression without position
        ("qx5", "c", "s", "gray sofa", None, "click", good_product, 2),   # missing timestamp
    ]
    rows = [(*r, DEMO_DS) for r in bad]
    df = spark.createDataFrame(rows, QUERY_LOG.schema)
    Warehouse(spark, cfg["warehouse"]["root"], "delta-rs").append(df, QUERY_LOG, "test-malformed")
    return len(bad)


def test_build_pairs_accounts_for_every_event(spark, fresh_warehouse):
    cfg = fresh_warehouse
    n_bad = add_malformed_events(spark, cfg)
    result = run(spark, cfg, build_pairs)

    events_of_day = table(cfg, "query_log").query("ds == @DEMO_DS")
    assert result.rows_in == len(events_of_day)
    assert result.rows_in == result.details["events_accepted"] + result.rows_rejected
    assert result.rows_rejected == n_bad
    rejects = table(cfg, "rejects")
    reasons = set(rejects[rejects.source_table == "query_log"].reason)
    assert reasons == {"missing query_id", "unsupported action_name 'hover'", "product not in catalog",
                       "empty query after normalization", "impression without a valid position", "missing timestamp"}
    assert all(json.loads(raw) for raw in rejects.raw)  # the raw row is kept

    pairs = table(cfg, "pairs")
    assert len(pairs) == result.rows_out and set(pairs.ds) == {DEMO_DS}
    assert set(pairs.segment) == {"head", "torso", "tail"}
    assert pairs.text_fingerprint.str.fullmatch(r"[0-9a-f]{32}").all()
    assert not pairs.duplicated(["query_norm", "product_id"]).any()
    logged = pairs[pairs.source == "log"]
    assert logged.impressions.sum() == (events_of_day.action_name == "impression").sum() - 3  # 3 bad impressions
    assert (logged.clicks <= logged.impressions).all() and logged.ctr_smoothed.between(0, 1).all()
    # the product text in pairs is exactly what the shared text function builds
    catalog = table(cfg, "catalog").set_index("product_id")
    sample = pairs.iloc[0]
    product = catalog.loc[sample.product_id]
    assert sample.product_text == build_product_text(product.title, product.brand, product.category,
                                                     dict(product.attributes), settings_of(cfg).pairs.product_text_max_words)
    assert all(q == normalize_text(q) for q in pairs.query_norm)


def test_score_matches_the_pure_scorer_and_records_throughput(spark, fresh_warehouse):
    cfg = fresh_warehouse
    run(spark, cfg, build_pairs)
    spark.conf.set(ARROW_BATCH_ROWS, "1234")  # the session's own Arrow batch size, restored after the job
    try:
        result = run(spark, cfg, score)
        assert spark.conf.get(ARROW_BATCH_ROWS) == "1234"
    finally:
        spark.conf.unset(ARROW_BATCH_ROWS)
    pairs, relevance = table(cfg, "pairs"), table(cfg, "relevance")
    assert result.rows_in == len(pairs) == result.rows_out + result.rows_rejected
    assert len(relevance) == len(pairs) and relevance.score.between(0, 1).all()
    assert set(relevance.model_version) == {"tiny-test"} and relevance.grade_pred.isin([0, 1, 2]).all()
    merged = relevance.merge(pairs, on=["query_norm", "product_id"]).head(50)
    model = load_model_version(resolve_model_dir(cfg["model"]["models_root"], "tiny-test"))
    expected, _ = score_pairs(model, merged.query_norm.tolist(), merged.product_text.tolist())
    np.testing.assert_allclose(merged.score.to_numpy(), expected, atol=1e-5)
    run_row = runs_of(cfg, "score").iloc[-1]
    assert run_row.status == "succeeded" and run_row.throughput_per_s > 0 and run_row.device == "cpu"


def test_nightly_end_to_end_is_idempotent(spark, fresh_warehouse):
    cfg = fresh_warehouse
    run(spark, cfg, nightly)
    first = {name: len(table(cfg, name)) for name in OUTPUT_TABLES}
    versions = {name: DeltaTable(str(Path(cfg["warehouse"]["root"]) / name)).version() for name in OUTPUT_TABLES}
    run(spark, cfg, nightly)
    second = {name: len(table(cfg, name)) for name in OUTPUT_TABLES}
    assert first == second and all(first[name] > 0 for name in ("pairs", "relevance", "relevance_audit"))
    for name in OUTPUT_TABLES:  # the second run committed again (a replace, not a no-op)
        assert DeltaTable(str(Path(cfg["warehouse"]["root"]) / name)).version() > versions[name]

    audit_rows = table(cfg, "relevance_audit")
    model_rows = audit_rows[audit_rows.system == "model"]
    assert {"all", "head", "torso", "tail"} <= set(model_rows.segment)
    assert {"precision@10", "recall@10", "ndcg@10", "precision", "recall", "f1", "roc_auc", "average_precision",
            "brier", "ece", "irrelevant_impression_share@10", "irrelevant_click_share"} <= set(model_rows.metric)
    assert (Path(cfg["warehouse"]["root"]) / "reports" / f"audit_{DEMO_DS}.md").is_file()
    with_ci = model_rows.dropna(subset=["ci_low", "ci_high"])
    assert len(with_ci) > 0 and (with_ci.ci_low <= with_ci.ci_high).all()
    means = with_ci[with_ci.metric.str.contains("@") & ~with_ci.metric.str.startswith("irrelevant")]  # per-query means
    assert (means.ci_low <= means.value + 1e-12).all() and (means.value <= means.ci_high + 1e-12).all()
    ranking = model_rows[model_rows.metric == "ndcg@10"]
    assert ranking.baseline.eq("logged_position").all() and ranking.baseline_value.notna().all()
    assert ranking.definition.str.contains("judged by table judgments").all()
    assert {"model", "bm25", "zero_shot", "logged_position"} <= set(audit_rows.system)
    assert {"category", "query_len", "query"} <= {s.split("=")[0] for s in model_rows.segment if "=" in s}
    html = (Path(cfg["warehouse"]["root"]) / "reports" / f"audit_{DEMO_DS}.html").read_text()
    assert html.count("<svg") >= 3 and "https://" not in html and "<script" not in html
    wh = Warehouse(spark, cfg["warehouse"]["root"], "delta-rs")
    for name in ("relevance", "pairs", "relevance_audit"):
        wh.read(TABLES[name]).createOrReplaceTempView(name)
    for path in sorted((ROOT / "sql").glob("*.sql")):  # the shipped downstream SQL runs on the real tables
        result = spark.sql(path.read_text().replace("${ds}", DEMO_DS)).collect()
        may_be_empty = {"model_vs_model_deltas", "irrelevant_in_top_slots"}  # no --compare; the tiny model may flag none
        assert result or path.stem in may_be_empty, f"{path.name} returned no rows"
    runs = table(cfg, "runs")
    assert (runs[runs.job.isin(["build_pairs", "score", "audit", "nightly"])].status == "succeeded").all()
    assert runs.job.value_counts()["nightly"] == 2


def test_wrong_schema_stops_before_writing_with_one_line(spark, fresh_warehouse, capsys, tmp_path):
    cfg = fresh_warehouse
    root = Path(cfg["warehouse"]["root"])
    broken = table(cfg, "query_log").assign(position=lambda f: f.position.astype(str))
    write_deltalake(str(root / "query_log"), broken, mode="overwrite", schema_mode="overwrite")
    conf = tmp_path / "conf.yaml"
    conf.write_text(json.dumps(cfg))  # JSON is YAML
    assert main(["build_pairs", "--conf", str(conf), "--ds", DEMO_DS]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "query_log: column 'position' has type string, expected bigint" in err and str(root / "query_log") in err
    assert not (root / "pairs").exists() and not (root / "rejects").exists()
    failed = runs_of(cfg, "build_pairs").iloc[-1]
    assert failed.status == "failed" and "position" in failed.error


def test_missing_model_stops_score_before_writing(spark, fresh_warehouse):
    cfg = fresh_warehouse
    run(spark, cfg, build_pairs)
    cfg = {**cfg, "model": {**cfg["model"], "version": "no-such-model"}}
    with pytest.raises(JobError, match="model version 'no-such-model' not found"):
        run(spark, cfg, score)
    assert not (Path(cfg["warehouse"]["root"]) / "relevance").exists()


def test_a_version_that_weighs_bm25_without_its_statistics_stops_score_before_writing(spark, fresh_warehouse,
                                                                                      tiny_model_root, tmp_path):
    cfg = fresh_warehouse
    run(spark, cfg, build_pairs)
    version = tmp_path / "tiny-lexical"
    shutil.copytree(tiny_model_root / "tiny-test", version)
    card = json.loads((version / "model_card.json").read_text())
    (version / "model_card.json").write_text(json.dumps({**card, "version": "tiny-lexical", "lexical_weight": 0.05}))
    cfg = {**cfg, "model": {**cfg["model"], "version": str(version)}}
    with pytest.raises(JobError, match="adds BM25 x 0.05 to the logit but bm25_stats.json does not load"):
        run(spark, cfg, score)
    assert not (Path(cfg["warehouse"]["root"]) / "relevance").exists()


def test_missing_day_is_a_clear_error(spark, fresh_warehouse):
    with pytest.raises(JobError, match="query_log has no events for ds=1999-01-01"):
        run(spark, fresh_warehouse, build_pairs, ds="1999-01-01")


def test_finetune_saves_a_versioned_model_that_score_uses(spark, fresh_warehouse, tiny_model_root):
    root = Path(fresh_warehouse["warehouse"]["root"])
    cfg = make_config(root, root / "models", **{
        "model.base": str(tiny_model_root / "tiny-test" / "model"),  # any local HF BERT folder works as a base
        "model.version": "promoted",
        "finetune.epochs": 1, "finetune.batch_size": 16, "finetune.max_length": 48, "finetune.version": "ft-test",
        "finetune.force_promote": True, "finetune.refit": True, "finetune.lexical_weights": [0.02, 0.2, 2.0],
    })
    result = run(spark, cfg, finetune, ds=None)
    assert result.model_version == "ft-test" and result.rows_in == result.rows_out + result.rows_rejected
    model_dir = Path(cfg["model"]["models_root"]) / "ft-test"
    card = json.loads((model_dir / "model_card.json").read_text())
    for key in ("base_model", "grades", "threshold", "grade_thresholds", "calibration", "data_fingerprint",
                "hyperparameters", "metrics", "training"):
        assert key in card
    assert 0 < card["threshold"] < 1 and "ndcg@10" in card["metrics"]["test"]
    assert (card["product_text_max_words"], card["product_text_description_words"]) == (64, 0)  # the text it trained on
    assert card["data"]["train"]["queries"] > 0 and card["data"]["test"]["queries"] > 0
    data = card["data"]
    assert card["training"]["refit"]["pairs"] == data["train"]["pairs"] + data["val"]["pairs"]  # saved: the refit
    assert (Path(cfg["model"]["models_root"]) / "PROMOTED").read_text().strip() == "ft-test"
    lexical = card["training"]["lexical"]  # chosen on validation; the catalog's BM25 statistics saved with it
    best = max(lexical["val_ndcg_by_weight"].values())
    assert lexical["weight"] > 0  # the tiny random network ranks the demo worse than BM25 does
    assert card["lexical_weight"] == lexical["weight"] and lexical["val_ndcg_by_weight"][str(lexical["weight"])] == best
    assert card["promotion"]["new"] == best  # the gate weighs the logit that is served
    assert (model_dir / "bm25_stats.npz").is_file() == (lexical["weight"] > 0)  # hashed tokens (udfs.lexical)
    assert lexical["statistics"]["min_df"] == 2 and not (model_dir / "bm25_stats.json").exists()
    run(spark, cfg, build_pairs)
    scored = run(spark, cfg, score)
    assert scored.model_version == "ft-test"
    served = table(cfg, "relevance").merge(table(cfg, "pairs"), on=["query_norm", "product_id"]).head(40)
    expected, _ = score_pairs(load_model_version(model_dir), served.query_norm.tolist(), served.product_text.tolist())
    np.testing.assert_allclose(served.score.to_numpy(), expected, atol=1e-5)
    other_text = make_config(root, root / "models", **{"model.version": "ft-test", "pairs.product_text_description_words": 8})
    with pytest.raises(JobError, match=r"ft-test was trained on other product texts .*product_text_description_words=8 \(trained with 0\)"):
        run(spark, other_text, score)  # before it writes: the model would score texts it never saw


def test_split_by_query_never_shares_a_query():
    from relevance.training.split import split_of

    queries = [f"query {i}" for i in range(2000)]
    splits = {q: split_of(q, 13, 0.15, 0.15) for q in queries}
    assert splits == {q: split_of(q, 13, 0.15, 0.15) for q in queries}  # deterministic
    shares = pd.Series(splits).value_counts(normalize=True)
    assert abs(shares["test"] - 0.15) < 0.03 and abs(shares["val"] - 0.15) < 0.03


def test_incremental_scoring_reuses_unchanged_pairs(spark, fresh_warehouse):
    cfg = fresh_warehouse
    run(spark, cfg, build_pairs)
    first = run(spark, cfg, score)
    assert first.rows_reused == 0 and first.details["pairs_scored"] == first.rows_out
    assert 0 < first.details["padding_efficiency"] <= 1 and first.details["truncation_rate"] is not None

    # change the title of a few products: only their pairs get a new fingerprint and a new score
    root = Path(cfg["warehouse"]["root"])
    catalog = table(cfg, "catalog").assign(attributes=lambda f: f.attributes.map(dict))  # Delta maps read as pairs
    changed = set(catalog.product_id.iloc[::20])
    catalog.loc[catalog.product_id.isin(changed), "title"] += " renamed"
    Warehouse(spark, str(root), "delta-rs").replace(
        spark.createDataFrame(catalog, schema=TABLES["catalog"].schema), TABLES["catalog"], "test-edit")
    run(spark, cfg, build_pairs)
    second = run(spark, cfg, score)
    pairs = table(cfg, "pairs")
    n_changed = pairs.product_id.isin(changed).sum()
    assert 0 < n_changed < len(pairs)
    assert second.details["pairs_scored"] == n_changed
    assert second.rows_reused == len(pairs) - n_changed == second.rows_out - n_changed
    relevance = table(cfg, "relevance")
    assert relevance.reused.sum() == second.rows_reused
    assert relevance.text_fingerprint.isin(pairs.text_fingerprint).all()
    assert runs_of(cfg, "score").iloc[-1].rows_reused == second.rows_reused


def test_incremental_scoring_reuses_only_scores_of_the_same_precision(spark, fresh_warehouse):
    cfg = fresh_warehouse
    run(spark, cfg, build_pairs)
    run(spark, cfg, score)
    assert set(table(cfg, "relevance").precision) == {"fp32"}
    int8 = {**cfg, "scoring": {**cfg.get("scoring", {}), "precision": "int8"}}
    first_int8 = run(spark, int8, score)  # fp32 scores of the same model are not int8 scores: all scored again
    assert first_int8.rows_reused == 0 and first_int8.details["pairs_scored"] == first_int8.rows_out
    assert set(table(cfg, "relevance").precision) == {"int8"}
    second_int8 = run(spark, int8, score)
    assert second_int8.rows_reused == second_int8.rows_out and second_int8.details["pairs_scored"] == 0

    # a relevance table from before the precision column (and rank_diverse): its rows are of unknown precision, so
    # none is reused
    root = Path(cfg["warehouse"]["root"]) / "relevance"
    write_deltalake(root, table(cfg, "relevance").drop(columns=["precision", "rank_diverse"]), mode="overwrite",
                    schema_mode="overwrite", partition_by=["ds"])
    after_upgrade = run(spark, int8, score)
    assert after_upgrade.rows_reused == 0 and set(table(cfg, "relevance").precision) == {"int8"}


def test_audit_compare_gate_sets_the_exit_code(spark, fresh_warehouse, tmp_path, capsys):
    cfg = fresh_warehouse
    run(spark, cfg, build_pairs)
    run(spark, cfg, score)
    conf = tmp_path / "conf.yaml"
    conf.write_text(json.dumps(cfg))
    base = ["audit", "--conf", str(conf), "--ds", DEMO_DS, "--compare", "tiny-test", "--fail-on-regression"]
    assert main(base) == 0  # the same model: every delta is 0, within the margin
    rows = table(cfg, "relevance_audit")
    delta = rows[(rows.metric == "delta_ndcg@10") & (rows.segment == "all")]
    assert len(delta) == 1 and delta.value.iloc[0] == 0 and delta.baseline.iloc[0] == "model:tiny-test"
    # a gate that demands an improvement of 0.5 must stop the nightly
    assert main(base + ["--set", "audit.regression.margin=-0.5"]) == 1
    assert "regression: ndcg@10 changed by +0.0000 against model:tiny-test, beyond the allowed drop of -0.5" in capsys.readouterr().err
    assert runs_of(cfg, "audit").iloc[-1].status == "failed"


def test_training_sees_exactly_the_text_and_token_ids_that_scoring_sees(spark, fresh_warehouse, tiny_model_root):
    """No train/serve skew: for every judged pair that build_pairs also emits, finetune's training example has
    the same normalized query and product text, and the token ids the trainer feeds the network are the ids the
    scorer feeds it (captured from the network's own forward calls, padding stripped)."""
    from relevance.pairs import catalog_texts, classify_judgments
    from relevance.settings import FinetuneSettings, LabelScheme, settings_from_mapping
    from relevance.training.loop import train_network
    from relevance.training.split import training_examples
    from udfs.scorer import score_logits

    cfg = fresh_warehouse
    run(spark, cfg, build_pairs)
    wh = Warehouse(spark, cfg["warehouse"]["root"], "delta-rs")
    texts, _ = catalog_texts(wh.read(TABLES["catalog"]), settings_from_mapping(cfg).pairs)
    examples, _ = training_examples(classify_judgments(wh.read(TABLES["judgments"]), texts), 200_000, seed=13)
    served = table(cfg, "pairs").query("ds == @DEMO_DS")[["query_norm", "product_id", "product_text"]]
    both = examples.merge(served, on=["query_norm", "product_id"], suffixes=("_train", "_serve"))
    assert len(both) >= 100
    assert (both.product_text_train == both.product_text_serve).all()

    model = load_model_version(resolve_model_dir(tiny_model_root, "tiny-test"))
    fed: dict[str, list[list[int]]] = {"train": [], "score": []}

    def capture(module, _args, kwargs):
        for ids, mask in zip(kwargs["input_ids"], kwargs["attention_mask"]):
            fed["train" if module.training else "score"].append(ids[mask.bool()].tolist())

    network = model.torch_network
    handle = network.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        train_network(model.tokenizer, network, both.rename(columns={"product_text_train": "product_text"}),
                      both.head(20).rename(columns={"product_text_train": "product_text"}),
                      FinetuneSettings(kind="cross_encoder", epochs=1, batch_size=16, max_length=model.max_length),
                      LabelScheme(grades={"irrelevant": 0, "partial": 1, "exact": 2}, relevant_min_grade=1),
                      log=lambda _: None)
        trained, fed["score"] = fed["train"], []
        network.eval()
        score_logits(model, both.query_norm.tolist(), both.product_text_serve.tolist(), batch_tokens=512)
    finally:
        handle.remove()
    assert len(trained) == len(both)  # one epoch: every training pair once
    assert sorted(fed["score"]) == sorted(map(list, dict.fromkeys(map(tuple, trained))))
    assert all(ids[0] == model.tokenizer.cls_token_id and ids.count(model.tokenizer.sep_token_id) == 2 for ids in trained)
