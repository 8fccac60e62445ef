"""Both Delta writers: one commit per write, partition overwrite, nothing visible from a failed write, the guard
against replacing rows with none."""

import datetime as dt
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from deltalake import DeltaTable

from jobs.core.spark import session_settings
from plumbing.delta import DELTA_SPARK_PACKAGE, WRITERS, Warehouse, delta_spark_available
from plumbing.errors import WarehouseError
from schemas.tables import JUDGMENTS, QUERY_LOG, REJECTS
from tests.conftest import settings_of

NOW = dt.datetime(2025, 1, 7, 12, tzinfo=dt.timezone.utc)


def warehouse(spark, root, writer: str, **options) -> Warehouse:
    """A Warehouse writing with `writer`; a delta-spark case skips where the session runs without Delta's jars."""
    if writer == "delta-spark" and not delta_spark_available(spark):
        pytest.skip(f"{DELTA_SPARK_PACKAGE} is not loaded: its jars could not be fetched (see the spark fixture)")
    return Warehouse(spark, root, writer, **options)


def rows(spark, ds: str, n: int, job: str = "build_pairs"):
    data = [(job, "query_log", f"reason {i}", "{}", "run", NOW, ds) for i in range(n)]
    return spark.createDataFrame(data, REJECTS.schema)


def log_adds(table_dir: str, versions: int) -> list[int]:
    """The data files each of the first `versions` commits of a table added, read from its Delta log."""
    log = Path(table_dir) / "_delta_log"
    return [sum('"add"' in line for line in (log / f"{v:020d}.json").read_text().splitlines()) for v in range(versions)]


@pytest.mark.parametrize("writer", WRITERS)
def test_partition_overwrite_replaces_only_that_partition_in_one_commit(spark, tmp_path, writer):
    wh = warehouse(spark, tmp_path, writer)
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
    adds = log_adds(wh.path("rejects"), 4)
    assert [c.files for c in wh.commits] == adds and adds[0] >= 1 and adds[3] == 0
    if writer == "delta-rs":
        assert all(c.commit_seconds is not None and 0 <= c.commit_seconds <= c.write_seconds for c in wh.commits)
    else:  # delta-spark commits inside `save`: no separate commit time
        assert all(c.commit_seconds is None and c.write_seconds > 0 for c in wh.commits)


@pytest.mark.parametrize("writer", WRITERS)
def test_a_failed_write_leaves_the_table_as_it_was(spark, tmp_path, writer):
    wh = warehouse(spark, tmp_path, writer)
    part = {"job": "build_pairs", "ds": "2025-01-01"}
    wh.overwrite_partition(rows(spark, "2025-01-01", 3), REJECTS, part, "r1")
    files_before = set(Path(wh.path("rejects")).rglob("*.parquet"))
    with pytest.raises(ValueError, match=r"rejects: rows for .*partition.* in a write of partition"):
        # rows of another day: data files may get written, but the commit is refused
        wh.overwrite_partition(rows(spark, "2025-01-09", 5), REJECTS, part, "r2")
    if writer == "delta-rs":
        assert set(Path(wh.path("rejects")).rglob("*.parquet")) > files_before  # orphans exist on disk...
    assert DeltaTable(wh.path("rejects")).version() == 0
    assert wh.read(REJECTS).count() == 3  # ...but reads go through the log and never see them


@pytest.mark.parametrize("writer", WRITERS)
def test_reading_a_missing_table_names_its_path(spark, tmp_path, writer):
    wh = warehouse(spark, tmp_path, writer)
    with pytest.raises(FileNotFoundError, match=f"rejects: no Delta table at {tmp_path}"):
        wh.read(REJECTS)


@pytest.mark.parametrize("writer", WRITERS)
def test_a_table_or_partition_holding_rows_is_never_replaced_by_none(spark, tmp_path, writer):
    wh = warehouse(spark, tmp_path, writer)
    judgments = lambda n: spark.createDataFrame(  # noqa: E731
        [(f"q{i}", f"p{i}", 1, "Exact", "test") for i in range(n)], JUDGMENTS.schema)
    events = lambda ds, n: spark.createDataFrame(  # noqa: E731
        [(f"e{i}", "c", "s", "sofa", NOW, "impression", f"p{i}", i + 1, ds) for i in range(n)], QUERY_LOG.schema)
    wh.replace(judgments(3), JUDGMENTS, "r1")
    wh.overwrite_partition(events("2025-01-07", 2), QUERY_LOG, {"ds": "2025-01-07"}, "r1")
    with pytest.raises(WarehouseError, match="^judgments: refusing to replace 3 rows with 0 rows"):
        wh.replace(judgments(0), JUDGMENTS, "r2")
    with pytest.raises(WarehouseError, match="^query_log ds=2025-01-07: refusing to replace 2 rows with 0 rows"):
        wh.overwrite_partition(events("2025-01-07", 0), QUERY_LOG, {"ds": "2025-01-07"}, "r2")
    assert wh.overwrite_partition(events("2025-01-08", 0), QUERY_LOG, {"ds": "2025-01-08"}, "r2") == 0  # held none
    assert DeltaTable(wh.path("judgments")).version() == 0 and wh.read(JUDGMENTS).count() == 3
    assert wh.read(QUERY_LOG, {"ds": "2025-01-07"}).count() == 2
    on_purpose = warehouse(spark, tmp_path, writer, allow_empty_replace=True)
    assert on_purpose.replace(judgments(0), JUDGMENTS, "r3") == 0
    assert on_purpose.read(JUDGMENTS).count() == 0 and DeltaTable(wh.path("judgments")).version() == 1


def test_auto_picks_delta_spark_only_where_its_jars_are_loaded(spark, tmp_path):
    plain: Any = SimpleNamespace(conf=SimpleNamespace(get=lambda key, default=None: default))  # no Delta extension set
    assert Warehouse(plain, tmp_path, "auto").writer == "delta-rs"
    with pytest.raises(ValueError, match=re.escape(f"{DELTA_SPARK_PACKAGE} is not on the classpath")):
        Warehouse(plain, tmp_path, "delta-spark")
    expected = "delta-spark" if delta_spark_available(spark) else "delta-rs"
    assert Warehouse(spark, tmp_path, "auto").writer == expected


def test_the_delta_spark_writer_brings_its_jars_unless_spark_submit_started_the_jvm():
    delta = {"warehouse": {"writer": "delta-spark"}, "spark": {"conf": {"spark.sql.shuffle.partitions": 3}}}
    settings = session_settings(settings_of(delta), submitted=False)
    assert settings["spark.jars.packages"] == DELTA_SPARK_PACKAGE
    assert settings["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert settings["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert settings["spark.sql.shuffle.partitions"] == "3"  # spark.conf wins
    assert "spark.jars.packages" not in session_settings(settings_of(delta), submitted=True)  # --packages is the user's
    for writer in ("auto", "delta-rs"):
        assert "spark.jars.packages" not in session_settings(settings_of({"warehouse": {"writer": writer}}), submitted=False)
