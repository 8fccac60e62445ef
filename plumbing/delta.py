"""Delta Lake reads and atomic writes under one warehouse root.

Two writers produce standard Delta tables:

* ``delta-rs`` (default, and wherever Delta's Spark jars are absent): executors write
  Parquet files with pyarrow into the table folder, the driver commits them in ONE
  Delta transaction with the ``deltalake`` package (remove actions included for a
  partition overwrite). Files of a run that dies before its commit are never
  referenced by the log, so readers do not see them.
* ``delta-spark`` (where ``io.delta:delta-spark`` is on the classpath and its session
  extension is configured): ``df.write.format("delta")`` with ``replaceWhere`` and ``mergeSchema``.

Both commit against the table version read when the write started: a writer that loses the race to
another one's commit on the same table or partition fails with one line (a WarehouseError) and commits
nothing of its run.

Reads always go through the Delta log, never by listing folders.

One rule guards every replace (a whole table or one partition): a table that holds rows is never
replaced by none, because an empty, unreadable or wrong-shaped input gives no rows; the Warehouse
refuses such a write before its commit unless `allow_empty_replace` is set (`--allow-empty`).
Files no Delta log references (orphans of killed runs, files of replaced versions) are removed by
`vacuum` once older than a retention period (MIN_VACUUM_RETENTION_HOURS at least, unless unsafe: a running job's
files are unreferenced until it commits).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, CommitProperties, Transaction, create_table_with_add_actions
from py4j.java_gateway import JavaObject, is_instance_of
from pyspark import SparkContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import LongType, StringType, StructField, StructType

from plumbing import storage
from plumbing.errors import WarehouseError, one_line
from schemas.tables import TableSpec

# Delta Lake's Spark jars for pyspark 4.1 (Scala 2.13). delta-spark 4.1.0 and 4.2.0, also built on Spark 4.1.0, fail on
# pyspark 4.1.4 (NoClassDefFoundError: org/apache/spark/sql/catalyst/plans/logical/IgnoreCachedData in the DeltaTable
# API and ALTER TABLE); 4.3.1 runs on it. 4.4.0 is built on Spark 4.2.
DELTA_SPARK_PACKAGE = "io.delta:delta-spark_2.13:4.3.1"
DELTA_SPARK_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
WRITERS = ("delta-rs", "delta-spark")

_WRITTEN_FILE_SCHEMA = StructType(
    [
        StructField("path", StringType()),
        StructField("size", LongType()),
        StructField("partition_values", StringType()),
        StructField("num_records", LongType()),
    ]
)


@dataclass(frozen=True)
class CommitStats:
    """One write of a table: rows and data files it added, its wall time, and the Delta log commit's share of it
    (None where the writer does not time it apart: delta-spark commits inside `save`)."""

    table: str
    rows: int
    files: int
    write_seconds: float
    commit_seconds: float | None


class PartitionMismatch(ValueError):
    """A partition overwrite was given rows of another partition (a bug in the calling job)."""


def delta_spark_available(spark: SparkSession) -> bool:
    """True when Delta's Spark classes are loadable and its SQL extension is configured."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if DELTA_SPARK_EXTENSION not in extensions:
        return False
    try:  # through Spark's class loader: jars of spark.jars.packages are not on the JVM's system class path
        spark.sparkContext._jvm.org.apache.spark.util.Utils.classForName(  # type: ignore[union-attr]
            "io.delta.tables.DeltaTable", True, False)
    except Exception:
        return False
    return True


def _where(spec: TableSpec, partition: dict[str, str] | None) -> str:
    """`rejects job=score, ds=2025-01-07`: a table, or one partition of it, in a message."""
    return spec.name + (" " + ", ".join(f"{k}={v}" for k, v in partition.items()) if partition else "")


def concurrent_write_error(spec: TableSpec, partition: dict[str, str] | None, detail: str) -> WarehouseError:
    """The one line of a write that lost the race to another writer's commit."""
    target = "partition" if partition else "table"
    return WarehouseError(f"{_where(spec, partition)}: another writer committed to this {target} first, "
                          f"nothing of this run was committed; rerun once that writer has finished ({detail})")


def _java_causes(exc: BaseException) -> Iterator[JavaObject]:
    """The JVM exception behind a py4j or pyspark error, then each of its causes."""
    java = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    while java is not None:
        yield java
        java = java.getCause()


def java_concurrent_modification(exc: BaseException) -> str | None:
    """`Class: message` (first line) of the Delta ConcurrentModificationException family (ConcurrentAppend,
    ConcurrentDeleteRead, MetadataChanged, ProtocolChanged, ...) behind a py4j or pyspark error; else None."""
    for java in _java_causes(exc):
        if is_instance_of(SparkContext._gateway, java, "java.util.ConcurrentModificationException"):
            return str(java.toString()).strip().splitlines()[0]
    return None


def java_condition_line(exc: BaseException, condition: str) -> str | None:
    """The first line of the Spark error of `condition` (e.g. DELTA_REPLACE_WHERE_MISMATCH) behind `exc`; else None."""
    for java in _java_causes(exc):
        if is_instance_of(SparkContext._gateway, java, "org.apache.spark.SparkThrowable") \
                and java.getCondition() == condition:
            return str(java.getMessage()).strip().splitlines()[0]
    return None


def _replace_marker(partition: dict[str, str] | None, snapshot: DeltaTable | None) -> CommitProperties:
    """An application transaction naming what a delta-rs replace replaces (the partition, or the whole table).

    Two replaces of one partition started from the same version both carry it, so delta-rs's conflict check fails
    the later commit even where the partition held no files (else only removing the same files conflicts)."""
    app_id = "relevance-scoring replace " + (_partition_path(partition) if partition else "(table)")
    return CommitProperties(app_transactions=[Transaction(app_id, 0 if snapshot is None else snapshot.version() + 1)])


def _partition_path(partition_values: dict[str, str]) -> str:
    return "/".join(f"{k}={v}" for k, v in partition_values.items())


def _parquet_file_writer(table_dir: str, partition_by: list[str], run_id: str,
                         storage_options: dict[str, str] | None = None):
    """Build the mapInArrow function that writes one Parquet file per task and partition value, into a local
    table folder or one on an object store (`storage.write_parquet` with `storage_options`)."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        groups: dict[tuple[str, ...], list[pa.Table]] = {}
        for batch in batches:
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch])
            if not partition_by:
                groups.setdefault((), []).append(table)
                continue
            keys = pa.Table.from_arrays([table.column(c) for c in partition_by], names=partition_by)
            for key in keys.group_by(partition_by).aggregate([]).to_pylist():
                mask = None
                for column in partition_by:
                    cond = pa.compute.equal(table.column(column), key[column])
                    mask = cond if mask is None else pa.compute.and_(mask, cond)
                part_key = tuple(str(key[c]) for c in partition_by)
                groups.setdefault(part_key, []).append(table.filter(mask))
        rows = []
        for part_key, tables in groups.items():
            values = dict(zip(partition_by, part_key))
            data = pa.concat_tables(tables).drop_columns(partition_by)
            relative_dir = _partition_path(values)
            name = f"part-{run_id}-{uuid.uuid4().hex}.snappy.parquet"
            relative = f"{relative_dir}/{name}" if relative_dir else name
            size = storage.write_parquet(data, storage.join(table_dir, relative), storage_options)
            rows.append(
                {
                    "path": relative,
                    "size": size,
                    "partition_values": json.dumps(values),
                    "num_records": data.num_rows,
                }
            )
        yield pa.RecordBatch.from_pylist(rows, schema=to_arrow_schema(_WRITTEN_FILE_SCHEMA))

    return write


class Warehouse:
    """The tables under one root folder (local, or `s3://` / `s3a://` on an object store reached with
    `storage_options`), read and written through the Delta log."""

    def __init__(self, spark: SparkSession, root: str | Path, writer: str = "auto", allow_empty_replace: bool = False,
                 storage_options: dict[str, str] | None = None) -> None:
        self.spark = spark
        self.root = warehouse_root(root)
        # delta-rs / pyarrow options of a remote root; a local root takes none (AWS_* variables must not reach it)
        self.storage_options = dict(storage_options or {}) if storage.is_remote(self.root) else {}
        self.allow_empty_replace = allow_empty_replace
        self.commits: list[CommitStats] = []  # every write of this Warehouse, in order
        if writer == "auto":
            writer = "delta-spark" if delta_spark_available(spark) else "delta-rs"
        if writer not in WRITERS:
            raise ValueError(f"unknown Delta writer '{writer}', expected one of {', '.join(WRITERS)} or auto")
        if writer == "delta-spark" and not delta_spark_available(spark):
            raise ValueError(f"writer delta-spark asked for, but {DELTA_SPARK_PACKAGE} is not on the classpath "
                             "(or its SQL extension is not configured)")
        self.writer = writer

    def path(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.path(table), storage_options=self._options())

    def _options(self) -> dict[str, str] | None:
        """The storage options deltalake calls take (None for a local root)."""
        return self.storage_options or None

    def spark_path(self, table: str) -> str:
        """The table folder as Spark names it (`s3a://` on an object store)."""
        return storage.spark_uri(self.path(table))

    # ---- reads -------------------------------------------------------------------------
    def read(self, spec: TableSpec, partition: dict[str, str] | None = None) -> DataFrame:
        """Read the committed files of a table (optionally one partition) as a DataFrame.

        Columns are the table's own (as stored); validate with `schemas.conform`.
        """
        if not self.exists(spec.name):
            raise FileNotFoundError(f"{spec.name}: no Delta table at {self.path(spec.name)}")
        if self.writer == "delta-spark":
            df = self.spark.read.format("delta").load(self.spark_path(spec.name))
        else:
            df = self._read_with_delta_rs(spec, partition)
        for column, value in (partition or {}).items():
            df = df.where(F.col(column) == value)
        return df

    def _read_with_delta_rs(self, spec: TableSpec, partition: dict[str, str] | None) -> DataFrame:
        table = self.delta_table(spec.name)
        stored = pa.schema(table.schema().to_arrow())
        spark_schema = self.spark.createDataFrame([], from_arrow_schema(stored)).schema
        filters = None
        if partition and set(partition) <= set(table.metadata().partition_columns):
            filters = [(k, "=", v) for k, v in partition.items()]
        files = [storage.spark_uri(uri) for uri in table.file_uris(partition_filters=filters)]
        if not files:
            return self.spark.createDataFrame([], spark_schema)
        return (
            self.spark.read.schema(spark_schema)
            .option("basePath", self.spark_path(spec.name))
            .parquet(*files)
            .select(*spark_schema.fieldNames())
        )

    def rows_held(self, spec: TableSpec, partition: dict[str, str] | None = None) -> int:
        """Rows the table (or one partition) holds now, from the Delta log's per-file record counts."""
        if not self.exists(spec.name):
            return 0
        rows = 0
        for action in pa.table(self.delta_table(spec.name).get_add_actions(flatten=True)).to_pylist():
            if any(str(action.get(f"partition.{k}")) != str(v) for k, v in (partition or {}).items()):
                continue
            if action.get("num_records") is None:  # a file without statistics: count the rows themselves
                return self.read(spec, partition).count()
            rows += int(action["num_records"])
        return rows

    # ---- the guard against losing rows -------------------------------------------------
    def check_replace(self, spec: TableSpec, new_rows: int, partition: dict[str, str] | None = None,
                      source: str = "") -> None:
        """Refuse (WarehouseError) to replace a table or partition that holds rows with none, unless
        `allow_empty_replace`. Jobs that know their row counts call it for every table before writing any;
        every replace calls it again just before its commit."""
        if new_rows > 0 or self.allow_empty_replace or spec.may_be_emptied:
            return
        held = self.rows_held(spec, partition)
        if held > 0:
            where = _where(spec, partition)
            origin = f" from {source}" if source else ""
            raise WarehouseError(
                f"{where}: refusing to replace {held} rows with 0 rows{origin} (empty, unreadable or wrong-shaped input?); "
                f"nothing was written. Rerun with --allow-empty to empty it on purpose")

    # ---- writes ------------------------------------------------------------------------
    def overwrite_partition(self, df: DataFrame, spec: TableSpec, partition: dict[str, str], run_id: str) -> int:
        """Replace exactly one partition of `spec` with `df` in one commit; returns rows written."""
        if set(partition) != set(spec.partition_by):
            raise ValueError(f"{spec.name}: partition {partition} does not name all of {spec.partition_by}")
        return self._write(df, spec, "overwrite", partition, run_id)

    def replace(self, df: DataFrame, spec: TableSpec, run_id: str) -> int:
        """Replace the whole table with `df` in one commit; returns rows written."""
        return self._write(df, spec, "overwrite", None, run_id)

    def append(self, df: DataFrame, spec: TableSpec, run_id: str) -> int:
        """Append `df` to `spec` in one commit; returns rows written."""
        return self._write(df, spec, "append", None, run_id)

    def _write(self, df: DataFrame, spec: TableSpec, mode: str, partition: dict[str, str] | None, run_id: str) -> int:
        df = df.select(*spec.columns)
        started = time.perf_counter()
        try:
            if self.writer == "delta-spark":
                rows, files, commit_seconds = self._write_with_delta_spark(df, spec, mode, partition, run_id)
            else:
                rows, files, commit_seconds = self._write_with_delta_rs(df, spec, mode, partition, run_id)
            self.commits.append(CommitStats(spec.name, rows, files, time.perf_counter() - started, commit_seconds))
            return rows
        except (WarehouseError, PartitionMismatch):
            raise
        except Exception as exc:
            raise WarehouseError(f"{spec.name}: computing or writing its rows failed, nothing was committed: "
                                 f"{one_line(exc)}{storage_problem(self.path(spec.name))}") from exc

    def _write_with_delta_rs(
        self, df: DataFrame, spec: TableSpec, mode: str, partition: dict[str, str] | None, run_id: str
    ) -> tuple[int, int, float]:
        table_dir = self.path(spec.name)
        partition_by = list(spec.partition_by)
        # the version this write commits against, read before any file is written: another writer's commit in
        # the meantime then conflicts with this one instead of being silently replaced by it
        snapshot = self.delta_table(spec.name) if self.exists(spec.name) else None
        writer = _parquet_file_writer(table_dir, partition_by, run_id, self.storage_options)
        written = df.mapInArrow(writer, _WRITTEN_FILE_SCHEMA).collect()
        if mode == "overwrite":
            self.check_replace(spec, sum(row.num_records for row in written), partition)
        now_ms = int(time.time() * 1000)
        actions = []
        for row in written:
            values = json.loads(row.partition_values)
            if partition and values != {k: str(v) for k, v in partition.items()}:
                raise PartitionMismatch(f"{spec.name}: rows for partition {values} in a write of partition {partition}")
            actions.append(
                AddAction(
                    path=row.path,
                    size=row.size,
                    partition_values=values,
                    modification_time=now_ms,
                    data_change=True,
                    stats=json.dumps({"numRecords": row.num_records}),
                )
            )
        schema = DeltaSchema.from_arrow(to_arrow_schema(spec.schema))
        properties = _replace_marker(partition, snapshot) if mode == "overwrite" else None
        commit_started = time.perf_counter()
        try:
            if snapshot is None:
                create_table_with_add_actions(table_dir, schema, actions, mode="error", partition_by=partition_by or None,
                                              name=spec.name, storage_options=self._options(),
                                              commit_properties=properties)
            else:
                filters = [(k, "=", str(v)) for k, v in partition.items()] if partition else None
                snapshot.create_write_transaction(list(actions), mode=mode, schema=schema, partition_by=partition_by or None,
                                                  partition_filters=filters, commit_properties=properties)
        except DeltaError as exc:  # a conflict, or the table another writer created since this write started
            if snapshot is None and self.exists(spec.name):
                self._commit_to_table_created_meanwhile(spec, actions, mode, partition, schema, properties, exc)
            elif isinstance(exc, CommitFailedError):
                raise concurrent_write_error(spec, partition, one_line(exc)) from exc
            else:
                raise
        return sum(row.num_records for row in written), len(actions), time.perf_counter() - commit_started

    def _commit_to_table_created_meanwhile(self, spec: TableSpec, actions: list[AddAction], mode: str,
                                           partition: dict[str, str] | None, schema: DeltaSchema,
                                           properties: CommitProperties | None, lost: DeltaError) -> None:
        """Another writer created the table after this write found none (two nightlies of different days on a new
        warehouse): commit to it as to any existing table, unless that writer's rows are what this write replaces
        (the whole table, or this very partition), which is a conflict like any other."""
        created = self.delta_table(spec.name)
        filters = [(k, "=", str(v)) for k, v in partition.items()] if partition else None
        if mode == "overwrite" and (partition is None or created.file_uris(partition_filters=filters)):
            raise concurrent_write_error(spec, partition, one_line(lost)) from lost
        try:
            created.create_write_transaction(list(actions), mode=mode, schema=schema,
                                             partition_by=list(spec.partition_by) or None,
                                             partition_filters=filters, commit_properties=properties)
        except CommitFailedError as exc:
            raise concurrent_write_error(spec, partition, one_line(exc)) from exc

    def _write_with_delta_spark(self, df: DataFrame, spec: TableSpec, mode: str, partition: dict[str, str] | None,
                                run_id: str) -> tuple[int, int, None]:
        path = self.spark_path(spec.name)
        if mode == "overwrite" and not self.allow_empty_replace and not spec.may_be_emptied \
                and self.rows_held(spec, partition):
            self.check_replace(spec, df.limit(1).count(), partition)  # evaluates df only where rows could be lost
        marker = f"{run_id} {uuid.uuid4().hex}"  # this write's commit in the table history
        # mergeSchema: a spec gains columns over time; a table written with fewer takes the new ones (null in old rows)
        writer = df.write.format("delta").mode(mode).option("mergeSchema", "true").option("userMetadata", marker)
        if spec.partition_by:
            writer = writer.partitionBy(*spec.partition_by)
        if partition:
            writer = writer.option("replaceWhere", " AND ".join(f"{k} = '{v}'" for k, v in partition.items()))
        try:
            writer.save(path)
        except Exception as exc:
            conflict = java_concurrent_modification(exc)
            if conflict:
                raise concurrent_write_error(spec, partition, conflict) from exc
            mismatch = java_condition_line(exc, "DELTA_REPLACE_WHERE_MISMATCH")
            if mismatch:
                raise PartitionMismatch(f"{spec.name}: rows for another partition in a write of partition {partition} "
                                        f"({mismatch})") from exc
            raise
        history = (self.spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 100")
                   .where(F.col("userMetadata") == marker).collect())
        metrics = (history[0].operationMetrics or {}) if history else {}  # no commit: the write changed nothing
        return int(metrics.get("numOutputRows", 0)), int(metrics.get("numFiles", 0)), None

    def delta_table(self, table: str) -> DeltaTable:
        return DeltaTable(self.path(table), storage_options=self._options())

    # ---- clean-up ----------------------------------------------------------------------
    def table_names(self) -> list[str]:
        """The Delta tables under the root (a local root is listed; on an object store, the known tables)."""
        if storage.is_remote(self.root):
            from schemas.tables import TABLES

            return [name for name in TABLES if self.exists(name)]
        root = Path(self.root)
        return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir()) if root.is_dir() else []

    def vacuum(self, retention_hours: int = 168, dry_run: bool = False, unsafe: bool = False) -> dict[str, list[str]]:
        """Delete, per table, the files no Delta log entry references (orphans of killed runs, files of replaced
        versions) that are older than `retention_hours`; returns the files (to be) removed per table.

        A retention below MIN_VACUUM_RETENTION_HOURS is refused (WarehouseError) unless `unsafe` or `dry_run`: a
        running job's files are not referenced until it commits (see vacuum_retention_problem)."""
        problem = vacuum_retention_problem(retention_hours, unsafe or dry_run)
        if problem:
            raise WarehouseError(f"vacuum of {self.root}: {problem}")
        removed = {}
        for name in self.table_names():
            removed[name] = self.delta_table(name).vacuum(
                retention_hours=int(retention_hours), dry_run=dry_run, enforce_retention_duration=False, full=True)
        return removed


# The shortest retention `vacuum` accepts without `unsafe` (Delta's own retentionDurationCheck refuses less than
# 168 h by default). Writers put their Parquet files into the table folder BEFORE the commit that references them,
# so until a job commits, its files look exactly like orphans: a vacuum with a retention shorter than the time a
# job takes from its first file to its commit deletes them, and the job then commits a version pointing at missing
# files. A reader still reading a version that a later commit replaced needs that version's files as well. 24 h is
# above any job of this project (a nightly's score on a cluster takes hours, not a day) with room for a retry of the
# same night and for clocks that disagree; the default retention stays 7 days (warehouse.vacuum_retention_hours).
MIN_VACUUM_RETENTION_HOURS = 24


def vacuum_retention_problem(retention_hours: int, unsafe: bool = False) -> str | None:
    """Why `vacuum` must not run with this retention (None when it may): a negative one never; one below
    MIN_VACUUM_RETENTION_HOURS only when `unsafe` (no job is writing to the warehouse)."""
    if retention_hours < 0:
        return f"vacuum retention must be 0 hours or more, not {retention_hours}"
    if retention_hours < MIN_VACUUM_RETENTION_HOURS and not unsafe:
        return (f"refusing a vacuum retention of {retention_hours} h, below the safe minimum of "
                f"{MIN_VACUUM_RETENTION_HOURS} h: it would delete the files of a job still running (written, not yet "
                f"committed), and that job would then commit a version pointing at missing files; nothing was deleted. "
                f"Use {MIN_VACUUM_RETENTION_HOURS} h or more, or --unsafe when no job is writing to the warehouse")
    return None


def warehouse_root(root: str | Path) -> str:
    """The root as deltalake and pyarrow name it: an object-store URI with `s3a://` / `s3n://` as `s3://` (no
    trailing slash), a local path absolute and resolved."""
    if storage.is_remote(root):
        return storage.normalize_uri(root).rstrip("/")
    return str(Path(storage.local_path(root)).resolve())


def storage_problem(path: str) -> str:
    """A hint on why a local warehouse path cannot be written ("" when none is found or it is remote)."""
    if storage.is_remote(path):
        return ""
    if Path(path).is_file():
        return f" ({path} is a file, not a table folder)"
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f" ({folder} is on a read-only file system)"
        if shutil.disk_usage(folder).free < 1 << 20:
            return f" (no space left on the device holding {folder})"
        if not os.access(folder, os.W_OK):
            return f" ({folder} is not writable by this user)"
    except OSError:
        return ""
    return ""


