"""What several benchmarks do in a process of their own: the project's CLI (`python -m jobs ...`), and one measured
size run by the benchmark script itself (`--one ...`), whose result comes back as a `RESULT <json>` line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT = "RESULT "


def result_line(result: Any) -> str:
    """The line a `--one` run prints for `run_measured` to read."""
    return RESULT + json.dumps(result, default=str)


def run_measured(command: list[str], what: str) -> dict[str, Any]:
    """Run a benchmark's `--one` command in a fresh process (so each size starts from a clean JVM and driver); its
    RESULT line, with the process's wall time added as `process_wall_s`. Exits with the output's tail when it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{what} failed (exit {done.returncode})")
    line = [x for x in done.stdout.splitlines() if x.startswith(RESULT)][-1]
    return json.loads(line[len(RESULT):]) | {"process_wall_s": round(time.perf_counter() - started, 1)}


def jobs_cli(conf: str, *args: str, sets: list[str], show_lines: int = 1) -> float:
    """Run `python -m jobs ... --conf conf --set ...`; prints the last `show_lines` lines of its output and returns
    its wall time; exits with its output when it fails."""
    started = time.time()
    command = [sys.executable, "-m", "jobs", *args, "--conf", conf, *[x for s in sets for x in ("--set", s)]]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print("\n".join(done.stdout.strip().splitlines()[-show_lines:]), flush=True)
    return time.time() - started
