"""click-model at scale: wall time and driver memory on `generate-scale` days, and what grows with the log.

Usage (from the repository root):

    .venv/bin/python bench/click_model_bench.py [--sizes 10000,100000] [--demo-searches 0]
                                                [--out bench/click_model_results.json]

Method
------
Each size runs in a fresh Python process (so that peak memories start clean) with the embedded default settings
(conf/local.yaml: local Spark on every core, the default driver memory, the delta-rs writer) and a warehouse in a
temporary folder: `generate-scale --pairs N` writes one day (not measured), then `click-model --days 1` over it is
measured as `bench/scale_bench.py` measures a job: wall time, the driver's Python peak RSS, the JVM heap peak (in
local mode the JVM is the driver and the executors' task threads), the JVM peak RSS, the executors' Python peak
RSS; peaks are Linux VmHWM values reset before the job. Growth exponent: log(t2 / t1) / log(n2 / n1).

A `generate-scale` query shows its candidates at the same positions in every search, so the PBM's bias cannot be
fitted there (the job says so and assumes none): those days measure everything but the EM. `--demo-searches S`
adds the demo generator's log (`generate` with 200 queries, 2,000 products and S searches a day for 5 days, each
search's order jittered, so positions vary) to measure the EM too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.subprocesses import result_line, run_measured  # noqa: E402

DS = "2025-01-07"
DEMO_DAYS = 5


def run_one(kind: str, size: int, work: Path) -> dict[str, Any]:
    """Generate the data (not measured) and run click-model on it, measured; in this (fresh) process."""
    from bench.scale_bench import measured_job
    from jobs import click_model, generate, generate_scale
    from jobs.core.config import load_config, set_path
    from jobs.core.job import JobContext, run_job
    from jobs.core.spark import build_spark, open_warehouse
    from relevance.settings import settings_from_mapping
    from schemas.tables import RUNS

    cfg = load_config(ROOT / "conf" / "local.yaml")
    set_path(cfg, "warehouse.root", str(work / "warehouse"))
    if kind == "scale":
        set_path(cfg, "generate_scale.pairs", size)
        set_path(cfg, "click_model.days", 1)
    else:
        for key, value in {"generate.n_queries": 200, "generate.n_products": 2000, "generate.n_days": DEMO_DAYS,
                           "generate.searches_per_day": size, "generate.end_date": DS, "generate.judged_queries": 20,
                           "click_model.days": DEMO_DAYS}.items():
            set_path(cfg, key, value)
    settings = settings_from_mapping(cfg)
    spark = build_spark(settings)
    ctx = JobContext(job="click-model-bench", settings=settings, spark=spark,
                     warehouse=open_warehouse(spark, settings), ds=DS)
    started = time.perf_counter()
    made = run_job(ctx.child(generate_scale.JOB) if kind == "scale" else
                   JobContext(generate.JOB, settings, spark, ctx.warehouse, None),
                   generate_scale.run if kind == "scale" else generate.run)
    generated_s = time.perf_counter() - started
    measured = measured_job(ctx, click_model)
    run_row = ctx.warehouse.read(RUNS).where(f"job = '{click_model.JOB}'").orderBy("started_at", ascending=False).first()
    assert run_row is not None
    details = json.loads(run_row["details"])
    result = {
        "kind": kind, "size": size, "events": made.details["rows"]["query_log"],
        "generate_s": round(generated_s, 1), "click_model": measured,
        "pairs": details["pairs"], "searches": details["searches"],
        "pbm": {k: details["pbm"][k] for k in ("method", "reason", "iterations", "converged", "fit_pairs")}
        | {"examination_1_10": [details["pbm"]["examination"].get(str(p)) for p in range(1, 11)]},
        "notes": details["notes"],
        "spark": {"master": spark.sparkContext.master, "driver_memory": settings.spark.driver_memory,
                  "default_parallelism": spark.sparkContext.defaultParallelism},
    }
    spark.stop()
    return result


def growth(measured: list[dict[str, Any]]) -> dict[str, Any]:
    import math

    scale = [m for m in measured if m["kind"] == "scale"]
    out = {}
    for low, high in zip(scale, scale[1:]):
        ratio = math.log(high["pairs"] / low["pairs"])
        lo, hi = low["click_model"], high["click_model"]
        out[f"{low['pairs']}->{high['pairs']}"] = {
            "time_exponent": round(math.log(hi["wall_s"] / lo["wall_s"]) / ratio, 3),
            "driver_python_peak_ratio": round(hi["driver_python_peak_mb"] / lo["driver_python_peak_mb"], 3),
            "jvm_heap_peak_ratio": round(hi["jvm_heap_peak_mb"] / lo["jvm_heap_peak_mb"], 3)}
    return out


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| log | events | pairs | click-model wall s | driver Python peak MiB | JVM heap peak MiB | "
             "JVM RSS peak MiB | PBM |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for m in result["measured"]:
        c, pbm = m["click_model"], m["pbm"]
        fit = (f"EM, {pbm['fit_pairs']:,} pairs, {pbm['iterations']} steps" if pbm["method"] == "em"
               else "no bias (one position per pair)")
        log = f"generate-scale {m['size']:,} pairs" if m["kind"] == "scale" else \
            f"demo {DEMO_DAYS} days x {m['size']:,} searches"
        lines.append(f"| {log} | {m['events']:,} | {m['pairs']:,} | {c['wall_s']:.1f} | {c['driver_python_peak_mb']:.0f} "
                     f"| {c['jvm_heap_peak_mb']:.0f} | {c['jvm_peak_rss_mb']:.0f} | {fit} |")
    for span, g in result["growth"].items():
        lines.append(f"\n{span} pairs: time exponent {g['time_exponent']:.2f}, driver Python peak x"
                     f"{g['driver_python_peak_ratio']:.2f}, JVM heap peak x{g['jvm_heap_peak_ratio']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="generate-scale day sizes in pairs, comma-separated")
    parser.add_argument("--demo-searches", type=int, default=0, help="also the demo log, this many searches a day "
                                                                     "for 5 days (0: skip)")
    parser.add_argument("--out", default="bench/click_model_results.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: kind:size in this process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        kind, size = args.one.split(":")
        print(result_line(run_one(kind, int(size), Path(args.work))))
        return 0
    runs = [("scale", int(s)) for s in args.sizes.split(",") if s] + \
        ([("demo", args.demo_searches)] if args.demo_searches else [])
    measured = []
    for kind, size in runs:
        with tempfile.TemporaryDirectory(prefix="click-model-bench-") as work:
            measured.append(run_measured([sys.executable, __file__, "--one", f"{kind}:{size}", "--work", work],
                                         f"click-model bench on {kind} {size}"))
            print(f"{kind} {size}: click-model {measured[-1]['click_model']['wall_s']:.1f}s, driver Python peak "
                  f"{measured[-1]['click_model']['driver_python_peak_mb']:.0f} MiB", flush=True)
    result = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
              "load_average_at_end": list(os.getloadavg()), "measured": measured, "growth": growth(measured)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
