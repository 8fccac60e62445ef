"""A Spark standalone cluster on loopback for tests: one master and two workers started with `spark-class` from
the pip pyspark, each worker with its own work and local folders, and a clean environment (no project on its
path, no AWS credentials, no Hugging Face access): what an executor needs must reach it through spark-submit.

`spark_submit` builds the command a user runs against it (the README's cluster lines): the environment archive,
the project's zip, Delta's and hadoop-aws' packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

from jobs.core.spark import HADOOP_AWS_PACKAGE, delta_spark_settings
from plumbing.delta import DELTA_SPARK_PACKAGE

SPARK_HOME = Path(pyspark.__file__).parent
START_TIMEOUT_S = 180
WORKER_MEMORY = "3g"
EXECUTOR_MEMORY = "2g"
EXECUTOR_LOGS = ("stdout", "stderr")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def daemon_environment() -> dict[str, str]:
    """What a cluster machine's daemons have: Java, a PATH without this virtualenv, a home; nothing of the test's."""
    env = {k: os.environ[k] for k in ("JAVA_HOME", "HOME", "LANG", "TMPDIR") if k in os.environ}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return {**env, "SPARK_HOME": str(SPARK_HOME), "SPARK_DAEMON_MEMORY": "512m", "SPARK_NO_DAEMONIZE": "1"}


@dataclass
class StandaloneCluster:
    """A running master and its workers; their logs and work folders live under `root`."""

    root: Path
    master_url: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)
    worker_dirs: list[Path] = field(default_factory=list)

    def start(self, workers: int = 2, cores_per_worker: int = 1) -> None:
        port = free_port()
        self.master_url = f"spark://127.0.0.1:{port}"
        self._launch("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                                "--webui-port", str(free_port())], "I have been elected leader")
        for index in range(workers):
            work = self.root / f"worker-{index}"
            (work / "local").mkdir(parents=True)
            self.worker_dirs.append(work)
            self._launch(f"worker-{index}",
                         ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores",
                          str(cores_per_worker), "--memory", WORKER_MEMORY, "--work-dir", str(work / "work"),
                          "--webui-port", str(free_port()), self.master_url],
                         "Successfully registered with master", {"SPARK_LOCAL_DIRS": str(work / "local")})

    def _launch(self, name: str, args: list[str], ready: str, extra_env: dict[str, str] | None = None) -> None:
        log = self.root / f"{name}.log"
        with log.open("w") as out:
            self.processes.append(subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], cwd=self.root,
                                                   env={**daemon_environment(), **(extra_env or {})},
                                                   stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + START_TIMEOUT_S
        while ready not in log.read_text(errors="replace"):
            if self.processes[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the standalone {name} did not start (exit {self.processes[-1].poll()}): "
                                   f"{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def remove_environments(self) -> None:
        """Delete what the executors fetched: the unpacked environment (GBs each), the jars (0.7 GB with hadoop-aws'
        SDK bundle) and the code zip; their logs stay."""
        for fetched in (p for per in self.executor_dirs() for executor in per for p in executor.iterdir()
                        if p.name not in EXECUTOR_LOGS):
            shutil.rmtree(fetched, ignore_errors=True) if fetched.is_dir() else fetched.unlink(missing_ok=True)

    def executor_dirs(self) -> list[list[Path]]:
        """Per worker, the folders of the executors it ran (`<work>/app-*/<executor id>`)."""
        return [sorted(p for p in (work / "work").glob("app-*/*") if p.is_dir()) for work in self.worker_dirs]


@contextlib.contextmanager
def standalone_cluster(root: Path, workers: int = 2) -> Iterator[StandaloneCluster]:
    cluster = StandaloneCluster(root)
    try:
        cluster.start(workers)
        yield cluster
    finally:
        cluster.stop()


def spark_submit(master_url: str, env_archive: Path, py_files: Path, writer: str, job_args: list[str],
                 executor_env: dict[str, str]) -> list[str]:
    """The spark-submit command of a job on the cluster: the README's lines, with each executor on one core."""
    packages = [DELTA_SPARK_PACKAGE, HADOOP_AWS_PACKAGE] if writer == "delta-spark" else [HADOOP_AWS_PACKAGE]
    conf = {"spark.pyspark.python": "./env/bin/python", "spark.pyspark.driver.python": sys.executable,
            "spark.executor.cores": "1", "spark.executor.memory": EXECUTOR_MEMORY,
            # The fetch cache keeps a second copy of the 3 GB archive in each worker's local folder, for other
            # executors of the application on that machine; here there are none, and the disk is shared by all.
            "spark.files.useFetchCache": "false",
            **({k: v for k, v in delta_spark_settings().items() if k != "spark.jars.packages"}
               if writer == "delta-spark" else {}),
            **{f"spark.executorEnv.{k}": v for k, v in executor_env.items()}}
    return [str(SPARK_HOME / "bin" / "spark-submit"), "--master", master_url, "--deploy-mode", "client",
            "--packages", ",".join(packages), "--py-files", str(py_files), "--archives", f"{env_archive}#env",
            *[arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")],
            *job_args]
