"""Peak memory of this process and of the Spark processes it started, read from /proc (Linux).

`VmHWM` is a process's peak resident set size; writing 5 to /proc/<pid>/clear_refs resets it, so a benchmark can
measure one step at a time: `reset_peaks()` before the step, `spark_process_peaks()` and `driver_peak_rss_mb()`
after it.
"""

from __future__ import annotations

import os
from pathlib import Path


def _proc_parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return parents


def _proc_peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def driver_peak_rss_mb() -> float:
    """Peak RSS (MiB) of this process since it started or since the last `reset_peaks`."""
    return _proc_peak_mb(os.getpid()) or 0.0


def _spark_processes() -> dict[int, str]:
    """This process's descendants by role: jvm, pyspark_daemon or python_workers."""
    parents = _proc_parents()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    roles: dict[int, str] = {}
    stack = list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "java" in cmdline.split(" ")[0]:
            roles[pid] = "jvm"
        elif "pyspark.daemon" in cmdline:
            parent_cmd = Path(f"/proc/{parents.get(pid, 0)}/cmdline").read_bytes() if parents.get(pid) else b""
            roles[pid] = "python_workers" if b"pyspark.daemon" in parent_cmd else "pyspark_daemon"
    return roles


def spark_process_peaks() -> dict[str, list[float]]:
    """Peak RSS (VmHWM, MiB) of this process's descendants: the JVM, the pyspark daemon and its forked workers."""
    found: dict[str, list[float]] = {"jvm": [], "pyspark_daemon": [], "python_workers": []}
    for pid, role in _spark_processes().items():
        peak = _proc_peak_mb(pid)
        if peak is not None:
            found[role].append(round(peak, 1))
    return found


def reset_peaks() -> None:
    """Reset the peak RSS of this process and of its Spark processes (those that exist now)."""
    for pid in [os.getpid(), *_spark_processes()]:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            continue
