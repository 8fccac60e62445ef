"""The nightly on a Spark standalone cluster (a master and two workers on loopback, tests.cluster), submitted with
spark-submit as the README says: the Python environment shipped as an archive (`python -m jobs.core.package
--env`), the project's code as a zip, the warehouse and the model versions on an S3 server (moto, tests.object_store),
under each writer. The workers see nothing of the test's environment: no project on their path, no credentials
(those are in the job's config), their own folders; the driver runs in an empty folder and must leave it empty."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from jobs.core.config import set_path
from jobs.core.package import build_env_archive, build_py_files_zip
from plumbing import storage
from tests.cluster import StandaloneCluster, spark_submit, standalone_cluster
from tests.conftest import DEMO_DS, ROOT, make_config, run
from tests.object_store import S3Server, s3_root, s3_server

FIXTURES = (s3_server, s3_root)
SUBMIT_TIMEOUT_S = 1200
TABLES = ("query_log", "catalog", "judgments", "pairs", "relevance", "relevance_audit", "rejects", "runs")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform != "linux", reason="the standalone cluster scripts need Linux")]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Iterator[tuple[Path, Path]]:
    """The environment archive and the code zip, as `make env-archive` and `make package` build them; the
    archive (several GB) is removed after the module."""
    folder = tmp_path_factory.mktemp("dist")
    archive, code = folder / "env.tar.gz", folder / "relevance.zip"
    build_env_archive(archive, cpu_only=True)
    build_py_files_zip(code)
    yield archive, code
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[StandaloneCluster]:
    root = tmp_path_factory.mktemp("standalone")
    with standalone_cluster(root) as running:
        yield running


def executor_errors(cluster: StandaloneCluster) -> str:
    """The end of each executor's log, for a failure message."""
    return "\n".join(f"--- {d}:\n{(d / 'stderr').read_text(errors='replace')[-3000:]}"
                     for per in cluster.executor_dirs() for d in per if (d / "stderr").is_file())


def row_counts(warehouse: str, options: dict[str, str]) -> dict[str, int]:
    """Rows of each table of the warehouse, read by delta-rs (whichever writer wrote them)."""
    counts = {}
    for name in TABLES:
        path = storage.join(warehouse, name)
        if DeltaTable.is_deltatable(path, storage_options=options):
            counts[name] = len(DeltaTable(path, storage_options=options).to_pyarrow_table())
    return counts


@pytest.mark.parametrize("writer", ["delta-rs", "delta-spark"])
def test_nightly_on_a_standalone_cluster_with_an_archived_environment(spark, cluster: StandaloneCluster, shipped,
                                                                      s3_server: S3Server, s3_root: str,
                                                                      tiny_model_root: Path, tmp_path: Path,
                                                                      writer: str, request: pytest.FixtureRequest):
    from jobs import generate

    archive, code = shipped
    request.addfinalizer(cluster.remove_environments)  # logs stay, for a failure's message and a look afterwards
    options = s3_server.storage_options()
    models_root = storage.join(s3_root, "models")
    storage.copy_folder(tiny_model_root / "tiny-test", storage.join(models_root, "tiny-test"), {}, options)
    storage.write_text(storage.join(models_root, "PROMOTED"), "tiny-test\n", options)
    warehouse = storage.join(s3_root, "warehouse")
    cfg = make_config(tmp_path / "unused", tmp_path / "unused")
    for key, value in {"warehouse.root": storage.spark_uri(warehouse), "warehouse.storage_options": options,
                       "model.models_root": models_root, "model.version": "promoted",
                       "spark.shuffle_partitions": 4, "spark.driver_memory": "2g"}.items():
        set_path(cfg, key, value)
    run(spark, copy.deepcopy(cfg), generate, ds=None)  # the inputs, on the store (delta-rs, from this process)
    set_path(cfg, "warehouse.writer", writer)
    conf = tmp_path / "nightly.yaml"
    conf.write_text(yaml.safe_dump(cfg))

    driver_cwd, driver_cache, executor_cache = tmp_path / "cwd", tmp_path / "driver-cache", tmp_path / "executor-cache"
    driver_cwd.mkdir()
    command = spark_submit(cluster.master_url, archive, code, writer,
                           [str(ROOT / "jobs" / "__main__.py"), "nightly", "--conf", str(conf), "--ds", DEMO_DS],
                           {"HF_HUB_OFFLINE": "1", "RELEVANCE_MODEL_CACHE": str(executor_cache)})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYSPARK_", "PYTHONPATH"))}
    env.update(HF_HUB_OFFLINE="1", RELEVANCE_MODEL_CACHE=str(driver_cache))
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=driver_cwd, env=env, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"spark-submit did not finish in {SUBMIT_TIMEOUT_S}s: {str(exc.stderr or '')[-3000:]}")
    output = done.stdout + done.stderr
    if done.returncode != 0 and "unresolved dependency" in output.lower():
        pytest.skip(f"Spark's Ivy could not fetch the packages: {output[-500:]}")
    assert done.returncode == 0, (f"exit {done.returncode} after {time.perf_counter() - started:.0f}s, "
                                  f"{shutil.disk_usage(tmp_path).free / 2**30:.1f} GiB free under {tmp_path}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{executor_errors(cluster)}")
    summary = re.search(r"\[nightly\] run \S+: in (\d+), out (\d+), rejected (\d+)", output)
    assert summary, output[-3000:]
    events, scored, rejected = map(int, summary.groups())  # in: the day's log events; out: the pairs scored

    counts = row_counts(warehouse, options)
    print(f"\n{writer}: rows per table after one nightly on the cluster: {counts}")
    ds_rows = {name: len(DeltaTable(storage.join(warehouse, name), storage_options=options).to_pandas(
        partitions=[("ds", "=", DEMO_DS)])) for name in ("pairs", "relevance", "relevance_audit")}
    assert ds_rows["relevance"] == ds_rows["pairs"] == scored > 0 and ds_rows["relevance_audit"] > 0, ds_rows
    assert events > 0 and rejected == counts.get("rejects", 0), (events, rejected, counts)
    assert os.listdir(driver_cwd) == [], f"the driver wrote under its working directory: {os.listdir(driver_cwd)}"

    # each worker ran an executor of this application, in its own folder, with the environment unpacked there
    # (the workers' PATH has no torch: the tasks could only run in ./env/bin/python), and ran tasks on it
    app_id = re.findall(r"app-\d+-\d+", "\n".join(str(p) for per in cluster.executor_dirs() for p in per))
    latest = max(app_id)
    executors = [[p for p in per if p.parent.name == latest] for per in cluster.executor_dirs()]
    assert all(len(per) == 1 for per in executors), executors
    for (executor,) in executors:
        assert (executor / "env" / "bin" / "python").exists() and (executor / "relevance.zip").is_file()
        assert "Running task" in (executor / "stderr").read_text(errors="replace"), f"no task ran on {executor}"
    # the executors fetched the model version from the store once, into their machine's cache
    assert [p.name.startswith("tiny-test-") for p in executor_cache.iterdir()] == [True]
