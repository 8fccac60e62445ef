"""Faults of issue 32, each reproduced and answered by the house rule: a malformed row goes to `rejects` with a
reason (rows in = rows out + rows rejected); a missing or empty input, a broken model or a bad setting stops the job
before it writes anything, with one line saying what and where; no table is replaced with less because its input
was unreadable. Spark tests run on local[2] against real Delta tables, through the CLI where a job is involved.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from jobs import build_pairs, score
from jobs.core.config import set_path
from plumbing.delta import MIN_VACUUM_RETENTION_HOURS, Warehouse, vacuum_retention_problem
from plumbing.errors import InputError, WarehouseError
from relevance.data.importers import EVENTS, QUERIES, iter_ubi_records, query_texts, read_ubi, ubi_query_log
from relevance.data.readers import CatalogMapping, catalog_from_records, read_records
from relevance.pairs import ACTION_COUNTS, LATER_ENTRY_USED, SAME_TIME_ENTRY_USED, catalog_texts
from relevance.settings import PairsSettings
from schemas.tables import CATALOG, JUDGMENTS
from tests.conftest import DEMO_DS, copy_warehouse, make_config, run
from tests.test_bad_inputs import UBI, cli, last_run, ndjson, one_error_line, rejects_of, row_counts, table
from udfs.card import ModelCard, finite_or_null
from udfs.lexical import LEXICAL_FILE, Bm25Stats
from udfs.model import ModelError, load_model_version

UTC = dt.timezone.utc


@pytest.fixture()
def cfg(tmp_path) -> dict:
    """An empty warehouse of the test's own."""
    return make_config(tmp_path / "warehouse", tmp_path / "models")


def strict_json(text: str):
    """JSON as RFC 8259 has it: a bare NaN / Infinity / -Infinity is an error, as in any non-Python reader."""
    def refuse(constant: str):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# ---- 1. vacuum with a short retention while a job writes ---------------------------------------------------------

def unreferenced_files(table_dir: Path) -> set[Path]:
    """The Parquet files under a table folder that its Delta log does not reference (yet)."""
    referenced = {Path(uri.removeprefix("file://")).resolve() for uri in DeltaTable(str(table_dir)).file_uris()}
    return {p.resolve() for p in table_dir.rglob("*.parquet")} - referenced


class PausedCommit:
    """Holds the delta-rs commit of one table's next write: its Parquet files are written (by the executors), its
    Delta log entry is not. `wait()` returns once the write has reached that point; `release()` lets it commit."""

    def __init__(self, monkeypatch, table_name: str) -> None:
        self.reached, self.go = threading.Event(), threading.Event()
        original = DeltaTable.create_write_transaction
        paused = self

        def create_write_transaction(self, *args, **kwargs):
            if table_name in self.table_uri and not paused.reached.is_set():
                paused.reached.set()
                assert paused.go.wait(600), "the test never released the commit"
            return original(self, *args, **kwargs)

        monkeypatch.setattr(DeltaTable, "create_write_transaction", create_write_transaction)

    def wait(self) -> None:
        assert self.reached.wait(600), "the write never reached its commit"

    def release(self) -> None:
        self.go.set()


def start_import_ubi(spark, cfg: dict) -> tuple[threading.Thread, dict]:
    """import-ubi (a real job: it replaces query_log, then writes rejects and runs) on a thread of its own."""
    from jobs import import_ubi

    outcome: dict = {}

    def job() -> None:
        try:
            outcome["result"] = run(spark, cfg, import_ubi, ds=None)
        except BaseException as exc:  # noqa: BLE001  reported by the test
            outcome["error"] = exc

    thread = threading.Thread(target=job, name="import-ubi", daemon=True)
    thread.start()
    return thread, outcome


def test_vacuum_refuses_a_retention_below_the_minimum_unless_unsafe():
    assert MIN_VACUUM_RETENTION_HOURS == 24
    assert vacuum_retention_problem(168) is None and vacuum_retention_problem(24) is None
    for hours in (0, 1, 23):
        problem = vacuum_retention_problem(hours)
        assert problem and f"refusing a vacuum retention of {hours} h, below the safe minimum of 24 h" in problem
        assert "--unsafe" in problem and "nothing was deleted" in problem
        assert vacuum_retention_problem(hours, unsafe=True) is None
    assert "0 hours or more" in str(vacuum_retention_problem(-1, unsafe=True))


def import_paused_before_its_commit(spark, cfg, tmp_path, capsys, monkeypatch):
    """A second import-ubi of the same file, paused after writing its Parquet files and before its commit: the
    table's folder, the pause, the job's thread and outcome, and the files it has written (unreferenced yet)."""
    set_path(cfg, "imports.ubi.path", str(UBI / "bulk.ndjson"))
    assert cli(cfg, tmp_path, capsys, "import-ubi")[0] == 0
    query_log = Path(cfg["warehouse"]["root"]) / "query_log"
    paused = PausedCommit(monkeypatch, "query_log")
    thread, outcome = start_import_ubi(spark, cfg)
    paused.wait()
    return query_log, paused, thread, outcome, unreferenced_files(query_log)


def test_vacuum_during_a_running_write_is_refused_and_the_write_commits_whole(spark, cfg, tmp_path, capsys, monkeypatch):
    """The fault: `vacuum --retention-hours 0` while a job had written its Parquet files but not yet committed them
    deleted those files, and the job then committed a version pointing at missing files. Now such a retention is
    refused before Spark starts (exit 2) and deletes nothing; the job commits its files; and a vacuum at the allowed
    minimum still removes an orphan older than it."""
    query_log, paused, thread, outcome, written = import_paused_before_its_commit(spark, cfg, tmp_path, capsys,
                                                                                 monkeypatch)
    assert written and all(p.exists() for p in written)  # the running job's files (the previous version's are referenced)
    for hours in ("0", str(MIN_VACUUM_RETENTION_HOURS - 1)):
        code, out, err = cli(cfg, tmp_path, capsys, "vacuum", "--retention-hours", hours)
        assert code == 2 and out == ""
        one_error_line(err, "warehouse.vacuum_retention_hours: refusing a vacuum retention of "
                            f"{hours} h, below the safe minimum of {MIN_VACUUM_RETENTION_HOURS} h",
                       "nothing was deleted", "--unsafe")
    with pytest.raises(WarehouseError, match="below the safe minimum"):  # the library refuses too
        Warehouse(spark, cfg["warehouse"]["root"], "delta-rs").vacuum(0)
    assert all(p.exists() for p in written)
    # a dry run deletes nothing, so it may look at any retention: it lists the running job's files
    code, out, _ = cli(cfg, tmp_path, capsys, "vacuum", "--retention-hours", "0", "--dry-run")
    assert code == 0 and "would remove" in out and all(p.exists() for p in written)

    paused.release()
    thread.join(600)
    assert "error" not in outcome, outcome
    assert not unreferenced_files(query_log) & written  # committed: every file of the run is referenced now
    assert len(table(cfg, "query_log")) == 6  # and readable

    # the allowed minimum still removes an orphan older than it, and keeps a younger one and every referenced file
    folder = next(p for p in query_log.iterdir() if p.name.startswith("ds="))
    referenced = sorted(p.name for p in folder.iterdir())
    orphan, young = folder / "part-killed-run.snappy.parquet", folder / "part-a-job-still-running.snappy.parquet"
    shutil.copy(folder / referenced[0], orphan)
    shutil.copy(folder / referenced[0], young)
    old = (dt.datetime.now() - dt.timedelta(hours=MIN_VACUUM_RETENTION_HOURS + 1)).timestamp()
    os.utime(orphan, (old, old))
    code, out, _ = cli(cfg, tmp_path, capsys, "vacuum", "--retention-hours", str(MIN_VACUUM_RETENTION_HOURS))
    assert code == 0 and "removed" in out
    assert not orphan.exists() and young.exists() and all((folder / name).exists() for name in referenced)
    assert len(table(cfg, "query_log")) == 6


def test_an_unsafe_vacuum_during_a_write_loses_its_files(spark, cfg, tmp_path, capsys, monkeypatch):
    """Why the minimum exists: with `--unsafe`, a retention of 0 deletes a running job's written, uncommitted files,
    and the version it then commits points at files that are gone."""
    query_log, paused, thread, outcome, written = import_paused_before_its_commit(spark, cfg, tmp_path, capsys,
                                                                                 monkeypatch)
    assert written
    code, out, err = cli(cfg, tmp_path, capsys, "vacuum", "--retention-hours", "0", "--unsafe")
    assert code == 0 and "removed" in out, err
    assert json.loads(last_run(cfg, "vacuum").details)["unsafe"] is True
    assert not any(p.exists() for p in written)
    paused.release()
    thread.join(600)
    assert "error" not in outcome, outcome
    with pytest.raises(Exception, match="(?i)not found|no such file"):
        table(cfg, "query_log")  # the committed version points at the deleted files


# ---- 2. audit with a named judgments table that is missing or empty ------------------------------------------------

@pytest.fixture(scope="module")
def scored(spark, demo_warehouse, tmp_path_factory) -> dict:
    """The demo inputs with pairs, relevance and one audit for DEMO_DS (the tiny model), in a warehouse of this
    module."""
    from jobs import audit

    cfg = copy_warehouse(demo_warehouse, tmp_path_factory.mktemp("scored") / "warehouse")
    run(spark, cfg, build_pairs)
    run(spark, cfg, score)
    run(spark, cfg, audit)
    return cfg


@pytest.fixture()
def scored_copy(scored, tmp_path) -> dict:
    return copy_warehouse(scored, tmp_path / "warehouse")


def test_audit_stops_before_writing_when_the_named_judgments_table_is_missing_or_empty(spark, scored_copy, tmp_path,
                                                                                        capsys):
    """The fault: `--set audit.judgments_table=<a table that does not exist>` replaced the day's judged
    relevance_audit with the log-only rows, exit 0. A table named on purpose must be there and hold judgments."""
    cfg = scored_copy
    root = Path(cfg["warehouse"]["root"])
    audit_rows = table(cfg, "relevance_audit")
    judged = audit_rows[audit_rows.ds == DEMO_DS]
    assert len(judged) > 100 and "bm25" in set(judged.system)  # a judged audit
    version = DeltaTable(str(root / "relevance_audit")).version()
    empty_spec = dataclasses.replace(JUDGMENTS, name="judgments_empty")
    Warehouse(spark, root, "delta-rs", allow_empty_replace=True).replace(
        spark.createDataFrame([], JUDGMENTS.schema), empty_spec, "test-empty")
    before = row_counts(cfg)

    for name, problem in (("judgments_typo", f"no Delta table at {root.resolve() / 'judgments_typo'}"),
                          ("judgments_empty", f"the table at {root.resolve() / 'judgments_empty'} holds no rows")):
        code, _, err = cli(cfg, tmp_path, capsys, "audit", "--ds", DEMO_DS, "--set", f"audit.judgments_table={name}")
        assert code == 1
        one_error_line(err, f"audit failed: audit.judgments_table '{name}': {problem}", "nothing was written")
        assert row_counts(cfg) == before
        assert DeltaTable(str(root / "relevance_audit")).version() == version
        assert last_run(cfg, "audit").status == "failed"
    # the default table missing is still the log-only audit (tests/test_bad_inputs.py, 10.)


# ---- 3. import-catalog of a folder with an entry it cannot read ------------------------------------------------------

@pytest.mark.parametrize("entry", ["dangling symlink", "folder"])
def test_import_catalog_stops_on_a_folder_entry_it_cannot_read(spark, cfg, tmp_path, capsys, entry):
    """The fault: a dangling symlink or a folder named `c.json` among the catalog files was skipped and the catalog
    replaced with the rest, exit 0."""
    folder = tmp_path / "catalog"
    folder.mkdir()
    for name, ids in (("a.jsonl", ["P1", "P2"]), ("b.jsonl", ["P3"])):
        (folder / name).write_text("".join(json.dumps({"product_id": i, "title": f"title {i}"}) + "\n" for i in ids))
    (folder / "notes.txt").write_text("not a catalog file: left alone")
    assert cli(cfg, tmp_path, capsys, "import-catalog", "--path", str(folder))[0] == 0
    assert row_counts(cfg) == {"catalog": 3}
    (folder / "b.jsonl").unlink()
    bad = folder / "c.json"
    if entry == "folder":
        bad.mkdir()
        problem = "a folder, not a file"
    else:
        bad.symlink_to(tmp_path / "gone.json")
        problem = f"a symbolic link to {tmp_path / 'gone.json'}, which does not exist"

    code, _, err = cli(cfg, tmp_path, capsys, "import-catalog", "--path", str(folder))
    assert code == 1
    one_error_line(err, f"import-catalog failed: {bad}: {problem}; nothing was imported from {folder}")
    assert row_counts(cfg) == {"catalog": 3}
    with pytest.raises(InputError, match=f"^{bad}: {problem}"):
        read_records(folder)


# ---- 4. duplicate product ids without updated_at ---------------------------------------------------------------

def records(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{**row, "_line": n, "_file": "c.jsonl"} for n, row in enumerate(rows, start=1)]).astype(object)


def test_catalog_duplicates_nothing_orders_keep_the_first_in_the_file():
    now = pd.Timestamp("2025-01-07", tz="UTC")
    catalog, rejected = catalog_from_records(records([
        {"product_id": "P1", "title": "first"},
        {"product_id": "P1", "title": "second"},
        {"product_id": "P2", "title": "old", "updated_at": "2024-01-01"},
        {"product_id": "P2", "title": "new", "updated_at": "2024-06-01"},
        {"product_id": "P2", "title": "same time as old", "updated_at": "2024-01-01T00:00:00Z"},
        {"product_id": "P2", "title": "undated"},
        {"product_id": "P3", "title": "only"},
        {"product_id": "P1", "title": "third"},
    ]), CatalogMapping(), now)
    assert list(zip(catalog.product_id, catalog.title)) == [("P1", "first"), ("P2", "old"), ("P2", "new"), ("P3", "only")]
    reasons = dict(zip((json.loads(raw)["title"] for raw in rejected.raw), rejected.reason))
    first_kept = "duplicate product_id 'P1' (no updated_at to choose by; the first in the file is kept, at _line 1 of c.jsonl)"
    assert reasons == {
        "second": first_kept,
        "third": first_kept,
        "same time as old": "duplicate product_id 'P2' with the same updated_at 2024-01-01T00:00:00+00:00 as an earlier "
                            "entry (nothing to choose by; the first in the file is kept, at _line 3 of c.jsonl)",
        "undated": "duplicate product_id 'P2' without an updated_at, while other entries of it have one (the latest "
                   "dated entry is used)",
    }
    assert len(catalog) + len(rejected) == 8


def test_import_catalog_rejects_undated_duplicates_and_build_pairs_names_a_tie(spark, cfg, tmp_path, capsys):
    """The fault: two entries of one product_id without updated_at were both written; build_pairs then kept one of
    them arbitrarily and rejected the other as if "an entry with a later updated_at" existed."""
    path = ndjson(tmp_path / "catalog.jsonl", [json.dumps(r) for r in (
        {"product_id": "P1", "title": "Zebra Sofa"}, {"product_id": "P2", "title": "Oak Desk"},
        {"product_id": "P1", "title": "Acme Sofa"})])
    code, out, err = cli(cfg, tmp_path, capsys, "import-catalog", "--path", str(path))
    assert code == 0, err
    catalog = table(cfg, "catalog")
    assert dict(zip(catalog.product_id, catalog.title)) == {"P1": "Zebra Sofa", "P2": "Oak Desk"}  # the first P1
    rejects = rejects_of(cfg, "import-catalog")
    assert list(rejects.reason) == ["duplicate product_id 'P1' (no updated_at to choose by; the first in the file is "
                                    "kept, at _line 1 of catalog.jsonl)"]
    assert json.loads(rejects.raw.iloc[0])["title"] == "Acme Sofa"
    runs = last_run(cfg, "import-catalog")
    assert (runs.rows_in, runs.rows_out, runs.rows_rejected) == (3, 2, 1)

    # a catalog table written by something else may still hold such a tie: build_pairs names it for what it is
    # and uses the same entry whatever order Spark reads the rows in
    at = dt.datetime(2025, 1, 1, tzinfo=UTC)
    tied = [("P1", "Zebra Sofa", at), ("P1", "Acme Sofa", at), ("P1", "Old Sofa", at - dt.timedelta(days=1)),
            ("P2", "Oak Desk", at)]
    for rows in (tied, tied[::-1]):
        frame = spark.createDataFrame(
            [(p, t, None, None, None, None, u) for p, t, u in rows], CATALOG.schema).repartition(2)
        texts, rejected = catalog_texts(frame, PairsSettings())
        assert {r.product_id: r.product_text for r in texts.collect()}["P1"] == "acme sofa"
        assert sorted((r.reason, json.loads(r.raw)["title"]) for r in rejected.collect()) == sorted(
            [(SAME_TIME_ENTRY_USED, "Zebra Sofa"), (LATER_ENTRY_USED, "Old Sofa")])


# ---- 5. a UBI event without action_name that carries user_query ----------------------------------------------------

NO_ACTION = {"query_id": "q1", "user_query": "gray sofa", "session_id": "s1", "client_id": "c1",
             "timestamp": "2025-01-07T10:00:02Z", "message_type": "INFO",
             "event_attributes": {"object": {"object_id": "P1", "object_id_field": "sku"}, "position": {"ordinal": 0}}}


def test_a_ubi_event_without_action_name_is_an_event_rejected_for_it(tmp_path):
    """The fault: in a file of queries and events without bulk lines, a document without `action_name` but with
    `user_query` was taken for a query: neither an event nor a reject. UBI's events carry user_query too; fields only
    events have (event_attributes, message_type, message, session_id) make it an event, rejected for its action."""
    query = {"application": "shop", "query_id": "q1", "client_id": "c1", "user_query": "gray sofa",
             "query_attributes": {}, "timestamp": "2025-01-07T10:00:00Z"}
    click = {**NO_ACTION, "action_name": "click"}
    lines = [json.dumps(d) for d in (query, click, NO_ACTION, {"user_query": "sofa", "query_id": "q9"}, {"x": 1})]
    assert [r.kind for r in iter_ubi_records(lines, None)] == [QUERIES, EVENTS, EVENTS, QUERIES, None]
    documents = read_ubi([(ndjson(tmp_path / "mixed.ndjson", list(lines)), None)])
    assert len(documents.queries) == 2 and documents.events == [click, NO_ACTION] and len(documents.unreadable) == 1
    log, rejected = ubi_query_log(documents.events, query_texts(documents.queries)[0], ACTION_COUNTS,
                                  now=pd.Timestamp("2025-01-08", tz="UTC"))
    assert list(log.action_name) == ["click"]
    assert list(rejected.reason) == ["event without a text action_name"]
    assert json.loads(rejected.raw.iloc[0]) == NO_ACTION


def test_import_ubi_counts_the_event_without_action_name_as_a_reject(spark, cfg, tmp_path, capsys):
    lines = [line for line in (UBI / "bulk.ndjson").read_text().splitlines() if '"index"' not in line]
    path = ndjson(tmp_path / "plain.ndjson", [*lines, json.dumps(NO_ACTION)])
    code, _, err = cli(cfg, tmp_path, capsys, "import-ubi", "--path", str(path))
    assert code == 0, err
    runs = last_run(cfg, "import-ubi")
    assert runs.rows_in == runs.rows_out + runs.rows_rejected
    assert "event without a text action_name" in set(rejects_of(cfg, "import-ubi").reason)
    assert json.loads(runs.details)["queries_read"] == 3  # the fixture's own queries, not a fourth


# ---- 6. BM25 statistics that parse but cannot be a corpus's ----------------------------------------------------------

def stats_json(**changes) -> str:
    data = json.loads(Bm25Stats(documents=40, mean_length=9.0, doc_freq={"sofa": 3, "gray": 5}).to_json())
    return json.dumps({**data, **changes})


@pytest.mark.parametrize("changes, problem", [
    ({"documents": 0}, "documents is 0, not a whole number of 1 or more"),
    ({"documents": -3}, "documents is -3, not a whole number of 1 or more"),
    ({"documents": 2.5}, "documents is 2.5, not a whole number of 1 or more"),
    ({"mean_length": -1.0}, "mean_length is -1.0, not a finite number of 0 or more"),
    ({"mean_length": "9"}, 'mean_length is "9", not a finite number of 0 or more'),
    ({"doc_freq": {"sofa": -1}}, 'doc_freq of "sofa" is -1, not a whole number from 0 to documents (40)'),
    ({"doc_freq": {"sofa": 41, "gray": 50}}, 'doc_freq of "sofa" is 41, not a whole number from 0 to documents (40); '
                                             "1 more such tokens"),
    ({"doc_freq": ["sofa"]}, "doc_freq is a JSON list, not an object of token: frequency"),
])
def test_bm25_statistics_that_cannot_be_a_corpus_are_refused_when_loaded(changes, problem):
    with pytest.raises(ValueError) as refused:
        Bm25Stats.from_json(stats_json(**changes))
    assert str(refused.value) == problem
    assert Bm25Stats.from_json(stats_json()).idf("sofa") > 0  # the valid file still loads


def lexical_version(models_root: Path, tiny_model_root: Path, stats: str) -> Path:
    """A copy of the tiny version whose card weighs BM25, with `stats` as its bm25_stats.json."""
    version = models_root / "tiny-lexical"
    shutil.copytree(tiny_model_root / "tiny-test", version)
    card = json.loads((version / "model_card.json").read_text())
    (version / "model_card.json").write_text(json.dumps({**card, "version": "tiny-lexical", "lexical_weight": 0.25}))
    (version / LEXICAL_FILE).write_text(stats)
    return version


def test_wrong_bm25_statistics_stop_score_before_writing_naming_the_version_and_the_file(spark, scored_copy,
                                                                                          tiny_model_root, tmp_path,
                                                                                          capsys):
    """The fault: a bm25_stats.json with 0 documents and a negative frequency stopped score with `ValueError: math
    domain error`, naming neither the version nor the file."""
    cfg = scored_copy
    models_root = tmp_path / "models"
    version = lexical_version(models_root, tiny_model_root, stats_json(documents=0, doc_freq={"sofa": -1}))
    with pytest.raises(ModelError, match=f"model version {version}: .* {LEXICAL_FILE} does not load "
                                         r"\(documents is 0, not a whole number of 1 or more\)"):
        load_model_version(version)
    set_path(cfg, "model.models_root", str(models_root))
    before = row_counts(cfg)
    relevance_version = DeltaTable(str(Path(cfg["warehouse"]["root"]) / "relevance")).version()
    code, _, err = cli(cfg, tmp_path, capsys, "score", "--ds", DEMO_DS, "--set", "model.version=tiny-lexical")
    assert code == 1
    one_error_line(err, "score failed: ModelError:", str(version), LEXICAL_FILE, "documents is 0")
    assert "math domain error" not in err
    assert row_counts(cfg) == before
    assert DeltaTable(str(Path(cfg["warehouse"]["root"]) / "relevance")).version() == relevance_version


# ---- 7. a model card with NaN ---------------------------------------------------------------------------------

def test_a_model_card_is_written_as_strict_json_and_old_cards_with_nan_still_read(tmp_path):
    """The fault: a card holding a NaN metric was written with a bare `NaN`, which is not JSON to any reader but
    Python's."""
    import numpy as np

    card = ModelCard(version="v1", calibration={"a": 1.5, "b": float("-inf")},
                     validation_score_deciles=[0.1, float("nan"), 0.9],
                     metrics={"test": {"ndcg@10": float("nan"), "mrr": np.float32(0.25), "recall": float("inf")}},
                     extra={"history": (1.0, math.nan)})
    text = card.to_json()
    data = strict_json(text)
    assert data["metrics"]["test"] == {"ndcg@10": None, "mrr": 0.25, "recall": None}
    assert data["calibration"] == {"a": 1.5, "b": None} and data["validation_score_deciles"] == [0.1, None, 0.9]
    assert data["history"] == [1.0, None]
    assert ModelCard.from_json(text).metrics["test"]["ndcg@10"] is None
    assert finite_or_null({"x": [np.nan, 2]}) == {"x": [None, 2]}

    old = '{"version": "old", "threshold": 0.4, "metrics": {"test": {"ndcg@10": NaN, "gain": Infinity}}}'
    read = ModelCard.from_json(old)
    assert read.threshold == 0.4 and math.isnan(read.metrics["test"]["ndcg@10"])
    assert math.isinf(read.metrics["test"]["gain"])
    strict_json(read.to_json())  # written back strict
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "model_card.json").write_text(old)
    from udfs.model import read_card

    assert math.isnan(read_card(folder).metrics["test"]["ndcg@10"])  # the registry reads such a card too
