"""The delta-rs writer: one commit per write, partition overwrite, nothing visible from a failed write."""

import datetime as dt
from pathlib import Path

import pytest
from deltalake import DeltaTable

from jobs.core.delta import Warehouse
from schemas.tables import REJECTS

NOW = dt.datetime(2025, 1, 7, 12, tzinfo=dt.timezone.utc)


def rows(spark, ds: str, n: int, job: str = "build_pairs"):
    data = [(job, "query_log", f"reason {i}", "{}", "run", NOW, ds) for i in range(n)]
    return spark.createDataFrame(data, REJECTS.schema)


def test_partition_overwrite_replaces_only_that_partition_in_one_commit(spark, tmp_path):
    wh = Warehouse(spark, tmp_path, "delta-rs")
    part = lambda ds: {"job": "build_pairs", "ds": ds}  # noqa: E731
    assert wh.overwrite_partition(rows(spark, "2025-01-01", 3), REJECTS, part("2025-01-01"), "r1") == 3
    assert wh.overwrite_partition(rows(spark, "2025-01-02", 2), REJECTS, part("2025-01-02"), "r2") == 2
    assert wh.overwrite_partition(rows(spark, "2025-01-01", 4), REJECTS, part("2025-01-01"), "r3") == 4
    table = DeltaTable(wh.path("rejects"))
    assert table.version() == 2  # create + two commits
    assert table.to_pandas().groupby("ds").size().to_dict() == {"2025-01-01": 4, "2025-01-02": 2}
    assert wh.read(REJECTS, part("2025-01-01")).count() == 4
    assert wh.overwrite_partition(rows(spark, "2025-01-01", 0), REJECTS, part("2025-01-01"), "r4") == 0
    assert wh.read(REJECTS).count() == 2
    # each write is recorded with the data files its commit added (counted in the log) and its timing
    assert [(c.table, c.rows) for c in wh.commits] == [("rejects", 3), ("rejects", 2), ("rejects", 4), ("rejects", 0)]
    log = Path(wh.path("rejects")) / "_delta_log"
    adds = [sum('"add"' in line for line in (log / f"{v:020d}.json").read_text().splitlines()) for v in range(4)]
    assert [c.files for c in wh.commits] == adds and adds[0] >= 1 and adds[3] == 0
    assert all(0 <= c.commit_seconds <= c.write_seconds for c in wh.commits)


def test_a_failed_write_leaves_the_table_as_it_was(spark, tmp_path):
    wh = Warehouse(spark, tmp_path, "delta-rs")
    part = {"job": "build_pairs", "ds": "2025-01-01"}
    wh.overwrite_partition(rows(spark, "2025-01-01", 3), REJECTS, part, "r1")
    files_before = set(Path(wh.path("rejects")).rglob("*.parquet"))
    with pytest.raises(ValueError, match="rows for partition"):
        # data files get written, but the commit is refused: rows of another day
        wh.overwrite_partition(rows(spark, "2025-01-09", 5), REJECTS, part, "r2")
    assert set(Path(wh.path("rejects")).rglob("*.parquet")) > files_before  # orphans exist on disk...
    assert DeltaTable(wh.path("rejects")).version() == 0
    assert wh.read(REJECTS).count() == 3  # ...but reads go through the log and never see them


def test_reading_a_missing_table_names_its_path(spark, tmp_path):
    wh = Warehouse(spark, tmp_path, "delta-rs")
    with pytest.raises(FileNotFoundError, match=f"rejects: no Delta table at {tmp_path}"):
        wh.read(REJECTS)


def test_delta_spark_writer_is_refused_without_its_jars(spark, tmp_path):
    assert Warehouse(spark, tmp_path, "auto").writer == "delta-rs"
    with pytest.raises(ValueError, match="delta-spark is not on the classpath"):
        Warehouse(spark, tmp_path, "delta-spark")
