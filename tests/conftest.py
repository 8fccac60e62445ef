"""Shared fixtures: one local[2] SparkSession, a tiny random BERT model version, small demo data.

Spark and torch are imported inside the fixtures that need them, so that the pure tests (`-m "not spark"`) start
without either. Markers (pyproject.toml): `spark` is added here to every test that uses the `spark` fixture,
directly or through another fixture; `slow` and `gpu` are set by the tests' modules."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import copy
from pathlib import Path

import pytest

from jobs.core.config import deep_merge, load_config, set_path
from relevance.settings import settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "esci-ubi-sample"
DEMO_DS = "2025-01-07"
SMALL_DEMO = {
    "generate.seed": 11,
    "generate.n_products": 400,
    "generate.n_queries": 80,
    "generate.n_days": 2,
    "generate.end_date": DEMO_DS,
    "generate.searches_per_day": 250,
    "generate.judged_queries": 40,
    "generate.judgments_per_query": 12,
}


@pytest.fixture(scope="session")
def spark():
    """One local[2] session for every test, with Delta's Spark jars and extension (so both writers run in it);
    where the jars cannot be fetched (no network, no Ivy cache) a plain one, and the delta-spark cases skip."""
    import warnings

    from jobs.core.spark import build_spark
    from plumbing.delta import DELTA_SPARK_PACKAGE
    from plumbing.errors import one_line

    # one JVM runs ~600 tests: 3g and a cleaner that runs every 5 minutes (not 30) keep its heap clear of the
    # broadcasts and shuffles that finished tests left behind
    cfg = {"spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "3g", "app_name": "relevance-tests",
                     "conf": {"spark.ui.showConsoleProgress": "false",  # no stage bars in the test log
                              "spark.cleaner.periodicGC.interval": "5min"}},
           "warehouse": {"writer": "delta-spark"}}
    try:
        session = build_spark(settings_of(cfg))
    except Exception as exc:  # the JVM did not start: Ivy could not resolve the package
        warnings.warn(f"{DELTA_SPARK_PACKAGE} could not be fetched, the delta-spark tests skip: {one_line(exc)}",
                      stacklevel=1)
        session = build_spark(settings_of({**cfg, "warehouse": {"writer": "delta-rs"}}))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory) -> Path:
    from bench.models import make_tiny_model_version

    root = tmp_path_factory.mktemp("models")
    make_tiny_model_version(root)
    return root


def settings_of(data: dict):
    """The typed settings of conf/local.yaml with `data` (a partial YAML-like mapping) merged over it."""
    return settings_from_mapping(deep_merge(load_config(ROOT / "conf" / "local.yaml"), data))


def make_config(warehouse: Path, models_root: Path, **overrides) -> dict:
    cfg = load_config(ROOT / "conf" / "local.yaml")
    set_path(cfg, "warehouse.root", str(warehouse))
    set_path(cfg, "warehouse.writer", "delta-rs")
    set_path(cfg, "model.models_root", str(models_root))
    set_path(cfg, "model.version", "tiny-test")
    set_path(cfg, "audit.bootstrap_samples", 100)
    for key, value in {**SMALL_DEMO, **overrides}.items():
        set_path(cfg, key, value)
    return cfg


def table(cfg: dict, name: str):
    """The warehouse table `name` of `cfg`, read whole with delta-rs (a pandas frame)."""
    from deltalake import DeltaTable

    return DeltaTable(str(Path(cfg["warehouse"]["root"]) / name)).to_pandas()


def with_settings(cfg: dict, **values) -> dict:
    """A copy of `cfg` with settings changed, each named with `__` for `.` (model__version=...)."""
    out = copy.deepcopy(cfg)
    for key, value in values.items():
        set_path(out, key.replace("__", "."), value)
    return out


def run(spark, cfg: dict, module, ds: str | None = DEMO_DS):
    """Run one job module through the same path as the CLI (records to `runs`)."""
    from jobs.core.job import JobContext, run_job
    from jobs.core.spark import open_warehouse

    settings = settings_from_mapping(copy.deepcopy(cfg))
    ctx = JobContext(job=module.JOB, settings=settings, spark=spark, warehouse=open_warehouse(spark, settings), ds=ds)
    return run_job(ctx, module.run)


@pytest.fixture(scope="session")
def demo_warehouse(spark, tmp_path_factory, tiny_model_root) -> dict:
    """A warehouse with small generated demo inputs; returns its config (tests copy it before changing it)."""
    from jobs import generate

    cfg = make_config(tmp_path_factory.mktemp("warehouse"), tiny_model_root)
    run(spark, cfg, generate, ds=None)
    return cfg


def copy_warehouse(cfg: dict, target: Path) -> dict:
    """A copy of the warehouse of `cfg` at `target`, and a config that points at it."""
    import shutil

    shutil.copytree(cfg["warehouse"]["root"], target)
    copied = copy.deepcopy(cfg)
    set_path(copied, "warehouse.root", str(target))
    return copied


@pytest.fixture()
def fresh_warehouse(demo_warehouse, tmp_path) -> dict:
    """A private copy of the demo inputs, so a test's writes never meet another test's."""
    return copy_warehouse(demo_warehouse, tmp_path / "warehouse")


@pytest.fixture(autouse=True)
def _drop_cached_frames(request):
    """Every Spark test leaves the shared JVM without cached blocks: they would fill its heap over the suite (CI's driver
    ran out of memory building a broadcast after three hundred tests)."""
    yield
    if "spark" in request.fixturenames:
        request.getfixturevalue("spark").catalog.clearCache()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)
