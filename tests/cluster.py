"""A Spark standalone cluster on loopback for tests: one master and two workers started with `spark-class` from
the pip pyspark, each worker with its own work and local folders, and a clean environment (no project on its
path, no AWS credentials, no Hugging Face access): what an executor needs must reach it through spark-submit.

`spark_submit` builds the command a user runs against it (the README's cluster lines): the environment archive,
the project's zip, Delta's and hadoop-aws' packages. `Submission` runs one in the background (several at once);
`ExecutorKiller` kills an executor's JVM while it scores, as a machine lost in the middle of a job would.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
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
                 executor_env: dict[str, str], extra_conf: dict[str, str] | None = None) -> list[str]:
    """The spark-submit command of a job on the cluster: the README's lines, with each executor on one core
    (and `extra_conf`: `spark.cores.max`, ...)."""
    packages = [DELTA_SPARK_PACKAGE, HADOOP_AWS_PACKAGE] if writer == "delta-spark" else [HADOOP_AWS_PACKAGE]
    conf = {"spark.pyspark.python": "./env/bin/python", "spark.pyspark.driver.python": sys.executable,
            "spark.executor.cores": "1", "spark.executor.memory": EXECUTOR_MEMORY,
            # The fetch cache keeps a second copy of the 3 GB archive in each worker's local folder, for other
            # executors of the application on that machine; here there are none, and the disk is shared by all.
            "spark.files.useFetchCache": "false",
            **({k: v for k, v in delta_spark_settings().items() if k != "spark.jars.packages"}
               if writer == "delta-spark" else {}),
            **{f"spark.executorEnv.{k}": v for k, v in executor_env.items()}, **(extra_conf or {})}
    return [str(SPARK_HOME / "bin" / "spark-submit"), "--master", master_url, "--deploy-mode", "client",
            "--packages", ",".join(packages), "--py-files", str(py_files), "--archives", f"{env_archive}#env",
            *[arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")],
            *job_args]


@dataclass
class Submission:
    """A spark-submit running in the background, its output in `<folder>/out.log`, its working folder
    `<folder>/cwd` (empty: the driver must write nothing there)."""

    folder: Path
    process: subprocess.Popen
    started: float
    ended: float | None = None

    @classmethod
    def start(cls, command: list[str], folder: Path, env: dict[str, str]) -> Submission:
        (folder / "cwd").mkdir(parents=True)
        with (folder / "out.log").open("w") as out:
            process = subprocess.Popen(command, cwd=folder / "cwd", env=env, stdout=out, stderr=subprocess.STDOUT)
        return cls(folder, process, time.monotonic())

    def wait(self, timeout_s: float) -> int | None:
        """The exit status, or None (the submission killed) when it ran longer than `timeout_s` in all."""
        try:
            code = self.process.wait(timeout=max(1.0, self.started + timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        self.ended = time.monotonic() if self.ended is None else self.ended
        return code

    @property
    def output(self) -> str:
        return (self.folder / "out.log").read_text(errors="replace")

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


def proc_text(pid: int, name: str) -> str:
    """/proc/<pid>/<name> as text ('' for a process gone or not ours)."""
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_ids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def executor_pid(executor_dir: Path) -> int | None:
    """The executor JVM (CoarseGrainedExecutorBackend) the worker started in `executor_dir` (its working folder)."""
    for pid in process_ids():
        if "CoarseGrainedExecutorBackend" in proc_text(pid, "cmdline"):
            with contextlib.suppress(OSError):
                if Path(os.readlink(f"/proc/{pid}/cwd")) == executor_dir.resolve():
                    return pid
    return None


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (the executor's Python daemon and the workers it forked)."""
    children: dict[int, list[int]] = {}
    for child in process_ids():
        stat = proc_text(child, "stat")
        if stat:  # "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'
            children.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


TASK_STARTED = re.compile(r"Running task (\S+) in stage (\S+) \(TID (\d+)\)")
TASK_FINISHED = re.compile(r"Finished task \S+ in stage \S+ \(TID (\d+)\)")


def running_tasks(executor_log: str) -> dict[int, str]:
    """Tasks an executor's log shows started and not finished: TID -> `task 0.0 in stage 5.0 (TID 7)`."""
    finished = set(TASK_FINISHED.findall(executor_log))
    return {int(m[3]): f"task {m[1]} in stage {m[2]} (TID {m[3]})" for m in TASK_STARTED.finditer(executor_log)
            if m[3] not in finished}


@dataclass
class ExecutorKill:
    """What `ExecutorKiller` killed: the executor's folder (`<work>/app-*/<id>`), its JVM, the task it ran (Python
    with torch loaded: the scoring UDF) and when, in seconds after the killer started."""

    executor: Path
    pid: int
    task: str
    tid: int
    after_s: float
    python_pids: list[int]

    @property
    def executor_id(self) -> str:
        return self.executor.name

    @property
    def app_id(self) -> str:
        return self.executor.parent.name


class ExecutorKiller(threading.Thread):
    """Watches the executors of the applications started after it was made; SIGKILLs the JVM of the first one found
    running a task in a Python worker that has torch loaded (the scoring UDF imports torch; no earlier stage of
    `score` runs Python on an executor), as a machine lost in the middle of the scoring stage. `kill` says what
    it killed (None: nothing yet)."""

    POLL_S = 0.1

    def __init__(self, cluster: StandaloneCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.apps_before = {p.parent.name for per in cluster.executor_dirs() for p in per}
        self.started = time.monotonic()
        self.kill: ExecutorKill | None = None
        self.stopping = threading.Event()

    def stop(self) -> ExecutorKill | None:
        self.stopping.set()
        self.join()
        return self.kill

    def run(self) -> None:
        while not self.stopping.is_set() and self.kill is None:
            for executor in (p for per in self.cluster.executor_dirs() for p in per
                             if p.parent.name not in self.apps_before and (p / "stderr").is_file()):
                self.kill = self.kill_if_scoring(executor)
                if self.kill:
                    return
            time.sleep(self.POLL_S)

    def kill_if_scoring(self, executor: Path) -> ExecutorKill | None:
        running = running_tasks((executor / "stderr").read_text(errors="replace"))
        pid = executor_pid(executor) if running else None
        if pid is None:
            return None
        python = [p for p in descendants(pid) if "python" in proc_text(p, "cmdline")]
        if not any("libtorch" in proc_text(p, "maps") for p in python):
            return None
        os.kill(pid, signal.SIGKILL)
        tid = max(running)
        return ExecutorKill(executor, pid, running[tid], tid, time.monotonic() - self.started, python)
