"""The two Delta writers together: each reads and writes the other's tables, every Delta reader here reads them,
an older schema takes new columns, and two writers of one partition give one clean conflict."""

import datetime as dt
import re
import threading
import time

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql.types import StructType

from plumbing.delta import WRITERS, Warehouse
from plumbing.errors import WarehouseError
from schemas.tables import RELEVANCE, TableSpec
from tests.test_delta import warehouse

NOW = dt.datetime(2025, 1, 7, 12, tzinfo=dt.timezone.utc)
OLD_RELEVANCE = TableSpec(RELEVANCE.name, StructType([f for f in RELEVANCE.schema.fields if f.name != "precision"]),
                          RELEVANCE.partition_by)  # `relevance` before it kept the precision column


def scored(ds: str, n: int, run_id: str = "run", spec: TableSpec = RELEVANCE) -> list[dict]:
    """`n` rows of `relevance` for day `ds`, holding the columns of `spec`."""
    full = [{"query_norm": f"q{i}", "product_id": f"p{i}", "score": i / 10, "grade_pred": i % 3,
             "model_version": "tiny", "precision": "fp32", "text_fingerprint": f"f{i}", "run_id": run_id,
             "scored_at": NOW + dt.timedelta(seconds=i), "reused": i % 2 == 0,
             "rank_diverse": i + 1 if i % 3 else None, "ds": ds} for i in range(n)]
    return [{c: row[c] for c in spec.columns} for row in full]


def frame(spark, records: list[dict], spec: TableSpec = RELEVANCE):
    return spark.createDataFrame([tuple(r[c] for c in spec.columns) for r in records], spec.schema)


def canonical(table: pa.Table) -> list[tuple]:
    """The rows of an Arrow table in `relevance`'s column order, timestamps in UTC, sorted: one form for every engine."""
    def value(v):
        if isinstance(v, dt.datetime):
            return (v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
        return v
    return sorted((tuple(value(row[c]) for c in RELEVANCE.columns) for row in table.to_pylist()), key=repr)


def engines(spark, path: str) -> dict[str, pa.Table]:
    """The table at `path` as each Delta reader here reads it."""
    root, name = path.rsplit("/", 1)
    assert name == RELEVANCE.name
    # DuckDB's own delta extension is downloaded from extensions.duckdb.org at run time, which this machine cannot
    # reach: DuckDB queries the table through the Arrow dataset of the files its Delta log references (deltalake)
    con = duckdb.connect()
    con.register("relevance", DeltaTable(path).to_pyarrow_dataset())
    return {
        "Warehouse delta-rs": Warehouse(spark, root, "delta-rs").read(RELEVANCE).toArrow(),
        "Warehouse delta-spark": warehouse(spark, root, "delta-spark").read(RELEVANCE).toArrow(),
        "deltalake": DeltaTable(path).to_pyarrow_table(),
        "polars": pl.read_delta(path).to_arrow(),
        "duckdb": con.sql("SELECT * FROM relevance").fetch_arrow_table(),
    }


@pytest.mark.parametrize("first, second", [("delta-rs", "delta-spark"), ("delta-spark", "delta-rs")])
def test_a_table_written_by_either_writer_is_written_and_read_by_the_other_and_every_reader(spark, tmp_path,
                                                                                             first, second):
    creator, other = warehouse(spark, tmp_path, first), warehouse(spark, tmp_path, second)
    creator.overwrite_partition(frame(spark, scored("2025-01-06", 3, "r1")), RELEVANCE, {"ds": "2025-01-06"}, "r1")
    creator.overwrite_partition(frame(spark, scored("2025-01-07", 2, "r1")), RELEVANCE, {"ds": "2025-01-07"}, "r1")
    # the other writer replaces a partition of files it did not write, and adds one
    other.overwrite_partition(frame(spark, scored("2025-01-07", 4, "r2")), RELEVANCE, {"ds": "2025-01-07"}, "r2")
    other.overwrite_partition(frame(spark, scored("2025-01-08", 1, "r2")), RELEVANCE, {"ds": "2025-01-08"}, "r2")
    table = DeltaTable(creator.path("relevance"))
    # a protocol without reader or writer features: every Delta reader and writer here supports it
    protocol = table.protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2), protocol
    assert table.version() == 3 and table.metadata().partition_columns == ["ds"]
    expected = canonical(pa.Table.from_pylist(
        scored("2025-01-06", 3, "r1") + scored("2025-01-07", 4, "r2") + scored("2025-01-08", 1, "r2")))
    for engine, read in engines(spark, creator.path("relevance")).items():
        assert canonical(read) == expected, engine


@pytest.mark.parametrize("writer", WRITERS)
def test_a_table_of_an_older_schema_keeps_its_rows_and_takes_the_new_column(spark, tmp_path, writer):
    wh = warehouse(spark, tmp_path, writer)
    old = scored("2025-01-06", 2, "r1", OLD_RELEVANCE)
    wh.overwrite_partition(frame(spark, old, OLD_RELEVANCE), OLD_RELEVANCE, {"ds": "2025-01-06"}, "r1")
    assert "precision" not in DeltaTable(wh.path("relevance")).schema().to_arrow().names
    assert wh.overwrite_partition(frame(spark, scored("2025-01-07", 3, "r2")), RELEVANCE, {"ds": "2025-01-07"}, "r2") == 3
    assert sorted(DeltaTable(wh.path("relevance")).schema().to_arrow().names) == sorted(RELEVANCE.columns)
    read = wh.read(RELEVANCE).select(*RELEVANCE.columns)
    expected = canonical(pa.Table.from_pylist([{**r, "precision": None} for r in old] + scored("2025-01-07", 3, "r2")))
    assert canonical(read.toArrow()) == expected
    assert canonical(DeltaTable(wh.path("relevance")).to_pyarrow_table()) == expected


def _wait_for(flag, seconds: float = 120):
    """A mapInArrow pass-through that signals it started (`flag`.started) and holds its rows until `flag` exists."""
    started = flag.with_name(flag.name + ".started")

    def passthrough(batches):
        started.touch()
        deadline = time.monotonic() + seconds
        while not flag.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{flag} never appeared")
            time.sleep(0.05)
        yield from batches

    return passthrough, started


@pytest.mark.parametrize("seed", ["2025-01-07", "2025-01-06", None], ids=["partition-held-rows", "partition-empty",
                                                                       "no-table"])
@pytest.mark.parametrize("writer", WRITERS)
def test_two_writers_of_one_partition_give_one_clean_conflict(spark, tmp_path, writer, seed):
    part = {"ds": "2025-01-07"}
    seeder = warehouse(spark, tmp_path / "wh", writer)
    seeded = scored(seed, 2, "seed") if seed else []
    if seed:  # the partition, another one, or nothing was written before the two writers start
        seeder.overwrite_partition(frame(spark, seeded), RELEVANCE, {"ds": seed}, "seed")
    # writer A starts first (reads the table version), and its one task holds its rows until B has committed;
    # allow_empty_replace: A's delta-spark guard would evaluate the rows, and so wait, before A's write starts
    b_committed = tmp_path / "b-committed"
    passthrough, a_started = _wait_for(b_committed)
    rows_a = frame(spark, scored("2025-01-07", 3, "run-a")).coalesce(1)
    rows_a = rows_a.mapInArrow(passthrough, rows_a.schema)
    a, b = warehouse(spark, tmp_path / "wh", writer, allow_empty_replace=True), warehouse(spark, tmp_path / "wh", writer)
    outcome: dict[str, object] = {}

    def write_a():
        try:
            outcome["a"] = a.overwrite_partition(rows_a, RELEVANCE, part, "run-a")
        except Exception as exc:  # the outcome is checked below
            outcome["a"] = exc

    thread = threading.Thread(target=write_a)
    thread.start()
    deadline = time.monotonic() + 120
    while not a_started.exists() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a_started.exists(), outcome
    assert b.overwrite_partition(frame(spark, scored("2025-01-07", 4, "run-b")), RELEVANCE, part, "run-b") == 4
    b_committed.touch()
    thread.join(timeout=300)
    error = outcome["a"]
    assert isinstance(error, WarehouseError), error
    assert re.fullmatch(r"relevance ds=2025-01-07: another writer committed to this partition first, nothing of "
                        r"this run was committed; rerun once that writer has finished \(.+\)", str(error)), str(error)
    table = DeltaTable(seeder.path("relevance"))
    assert table.version() == (1 if seed else 0)  # the seed and B; nothing of A
    expected = seeded if seed != "2025-01-07" else []
    assert canonical(table.to_pyarrow_table()) == canonical(pa.Table.from_pylist(expected + scored("2025-01-07", 4, "run-b")))
    assert [c.rows for c in b.commits] == [4] and a.commits == []


@pytest.mark.parametrize("other_day, conflict", [("2025-01-06", False), ("2025-01-07", True)])
def test_a_table_created_by_another_writer_meanwhile(spark, tmp_path, monkeypatch, other_day, conflict):
    """Two nightlies of different days on a new warehouse: both find no `relevance` table and both create it. The one
    that loses the creation commits its partition to the table the other made (it failed before: "A Delta Lake table
    already exists"); where the other wrote the very partition this one replaces, that is a conflict, one line."""
    import plumbing.delta as delta

    root = str(tmp_path)
    original = delta.create_table_with_add_actions

    def other_writer_first(*args, **kwargs):
        monkeypatch.setattr(delta, "create_table_with_add_actions", original)
        Warehouse(spark, root, "delta-rs").overwrite_partition(frame(spark, scored(other_day, 2, "other")), RELEVANCE,
                                                               {"ds": other_day}, "other")
        return original(*args, **kwargs)

    monkeypatch.setattr(delta, "create_table_with_add_actions", other_writer_first)
    wh = Warehouse(spark, root, "delta-rs")
    write = lambda: wh.overwrite_partition(frame(spark, scored("2025-01-07", 3, "mine")), RELEVANCE,  # noqa: E731
                                           {"ds": "2025-01-07"}, "mine")
    if conflict:
        with pytest.raises(WarehouseError, match="another writer committed to this partition first"):
            write()
        assert sorted(DeltaTable(f"{root}/relevance").to_pandas().run_id) == ["other", "other"]
    else:
        assert write() == 3
        rows = DeltaTable(f"{root}/relevance").to_pandas()
        assert sorted(zip(rows.ds, rows.run_id)) == [("2025-01-06", "other")] * 2 + [("2025-01-07", "mine")] * 3
