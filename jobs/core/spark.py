"""SparkSession construction from config (local by default, respects spark-submit's master)."""

from __future__ import annotations

import os
import sys
from typing import Any

from pyspark import SparkConf
from pyspark.sql import SparkSession

from jobs.core.config import get


def build_spark(cfg: dict[str, Any]) -> SparkSession:
    """Return the active SparkSession, creating it from `spark.*` config when none is running.

    Under spark-submit the master and resources come from the command line and are
    left alone; in plain `python -m jobs` the config's master is used.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(get(cfg, "spark.app_name", "relevance"))
    if not SparkConf().contains("spark.master"):
        builder = builder.master(get(cfg, "spark.master", "local[*]"))
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": str(get(cfg, "spark.shuffle_partitions", 8)),
        "spark.driver.memory": str(get(cfg, "spark.driver_memory", "4g")),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    }
    settings.update({k: str(v) for k, v in (get(cfg, "spark.conf", {}) or {}).items()})
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(get(cfg, "spark.log_level", "ERROR"))
    return spark
