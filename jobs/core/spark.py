"""SparkSession construction from config (local by default, respects spark-submit's master)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

from pyspark.sql import SparkSession

from jobs.core.config import storage_options
from plumbing import storage
from plumbing.delta import DELTA_SPARK_EXTENSION, DELTA_SPARK_PACKAGE, Warehouse
from relevance.settings import Settings

# Hadoop's S3A connector (s3a:// reads) of the hadoop-client pyspark 4.1.4 bundles (3.4.2); it brings the AWS SDK v2
# `bundle` jar (about 640 MB, fetched once by Spark's Ivy into ~/.ivy2.5.2).
HADOOP_AWS_PACKAGE = "org.apache.hadoop:hadoop-aws:3.4.2"


def delta_spark_settings() -> dict[str, str]:
    """Spark settings that fetch Delta's jars (Spark's Ivy, cached under ~/.ivy2*) and load its SQL extension
    and catalog; they take effect only in a session whose JVM is started with them."""
    return {
        "spark.jars.packages": DELTA_SPARK_PACKAGE,
        "spark.sql.extensions": DELTA_SPARK_EXTENSION,
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    }


def launched_by_spark_submit() -> bool:
    """True when this Python runs inside a JVM that spark-submit started (its --packages and --conf rule)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def uses_object_store(settings: Settings) -> bool:
    """True when the warehouse root or the models root is an object-store URI (s3://, s3a://, ...)."""
    return any(storage.is_remote(root) for root in (settings.warehouse.root, settings.model.models_root))


def object_store_settings(settings: Settings) -> dict[str, str]:
    """Hadoop S3A settings (`spark.hadoop.fs.s3a.*`) for the store of `warehouse.storage_options` / AWS_* variables;
    {} where neither root is on an object store."""
    if not uses_object_store(settings):
        return {}
    return storage.hadoop_s3a_settings(storage_options(settings))


def session_settings(config: Settings, submitted: bool) -> dict[str, str]:
    """The Spark settings of a new session from config: `spark.*`, Delta's jars and extension where the config asks
    for the delta-spark writer and this process starts the JVM (`submitted` False), hadoop-aws and the S3A settings
    where a root is on an object store (`object_store_settings`), then `spark.conf` over all."""
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": str(config.spark.shuffle_partitions),
        "spark.driver.memory": config.spark.driver_memory,
        "spark.ui.enabled": "false",
        # the stage progress bar (score, audit: minutes of work) where stderr is a terminal; a log file gets none
        "spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower(),
        "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
        # Spark SQL's own catalog folder (managed tables, which this project never makes): by default
        # `./spark-warehouse`, which the session creates in whatever folder the driver was started from.
        "spark.sql.warehouse.dir": os.path.join(tempfile.gettempdir(), "relevance-spark-sql-warehouse"),
    }
    packages = []
    if config.warehouse.writer == "delta-spark" and not submitted:
        settings.update(delta_spark_settings())
        packages.append(DELTA_SPARK_PACKAGE)
    if uses_object_store(config):
        if not submitted:
            packages.append(HADOOP_AWS_PACKAGE)
        settings.update(object_store_settings(config))
    if packages:
        settings["spark.jars.packages"] = ",".join(packages)
    settings.update({k: str(v) for k, v in config.spark.conf.items()})
    return settings


def build_spark(settings: Settings) -> SparkSession:
    """Return the active SparkSession, creating it from `spark.*` config when none is running.

    Under spark-submit the master, resources and packages come from the command line and are
    left alone; in plain `python -m jobs` the config's master is used, and
    `warehouse.writer: delta-spark` adds Delta's jars and extension (`delta_spark_settings`).
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    submitted = launched_by_spark_submit()
    builder = SparkSession.builder.appName(settings.spark.app_name)
    if not submitted:
        builder = builder.master(settings.spark.master)
    for key, value in session_settings(settings, submitted).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    return spark


@contextlib.contextmanager
def session_setting(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """`key` set to `value` for the block, then what it was before (unset if it was unset): a job's runtime setting
    does not leak into the next job of the same session."""
    previous = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def open_warehouse(spark: SparkSession, settings: Settings) -> Warehouse:
    """The warehouse the settings name (`warehouse.*`)."""
    return Warehouse(spark, settings.warehouse.root, settings.warehouse.writer,
                     allow_empty_replace=settings.warehouse.allow_empty_replace,
                     storage_options=storage_options(settings))
