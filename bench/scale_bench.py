"""Scale: the nightly's jobs at growing day sizes, and what grows with the day.

Usage (from the repository root):

    .venv/bin/python bench/scale_bench.py [--sizes 10000,100000,1000000] [--sample 4000]
                                          [--out bench/scale_results.json]

Method
------
Each size runs in a fresh Python process (so that peak memories start clean) with the embedded
default settings (conf/local.yaml: local Spark on every core, the default driver memory, the
delta-rs writer) and a warehouse in a temporary folder:

1. `generate-scale --pairs N` writes a catalog, one day's query log with N distinct
   (query, product) pairs, and a bounded set of judgments (`generate_scale.*` settings).
2. The nightly's jobs, one after another, as `nightly` runs them: `build_pairs`, `score`, `audit`,
   with a tiny random 2-layer BERT (`bench.models.make_tiny_model_version`), so that the
   plumbing, not the network, dominates.

Per job: wall time; driver Python peak RSS; JVM heap peak (the sum of the heap pools' peak use,
reset before the job; in local mode the JVM is the driver and the executors' task threads);
JVM peak RSS; executor Python peak RSS (the Python workers' peaks, summed); Delta data files
written and the Delta log commit time (`Warehouse.commits`). Peak RSS are Linux VmHWM values
reset before each job (/proc/<pid>/clear_refs). Growth exponent: log(t2 / t1) / log(n2 / n1)
between consecutive sizes.

Spark's overhead over scoring alone, with the real model: at the largest size, `--sample` pairs
of the day (every pair of whole queries, chosen by hash) are put in a day of their own and scored
twice with the base MiniLM as a bi-encoder model version (the shipped kind): by the `score` job
(read pairs, score in the pandas UDF on executors, write `relevance`) and by
`udfs.scorer.score_pairs` alone in this process (torch on every core, no Spark). Overhead =
job time / scorer time - 1, best of --rounds rounds each, taken in turn.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DS, SAMPLE_DS = "2025-01-07", "2025-01-08"
NIGHTLY_JOBS = ("build_pairs", "score", "audit")


def jvm_heap_pools(spark) -> list:
    jvm = spark.sparkContext._jvm
    return [pool for pool in jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
            if pool.getType().name() == "HEAP"]


def measured_job(ctx, module) -> dict[str, Any]:
    """Run one job as nightly does and measure it (see the module docstring)."""
    from bench.procmem import driver_peak_rss_mb, reset_peaks, spark_process_peaks
    from jobs.core.job import run_job

    pools = jvm_heap_pools(ctx.spark)
    for pool in pools:
        pool.resetPeakUsage()
    reset_peaks()
    commits_before = len(ctx.warehouse.commits)
    started = time.perf_counter()
    result = run_job(ctx.child(module.JOB), module.run)
    wall = time.perf_counter() - started
    peaks = spark_process_peaks()
    commits = ctx.warehouse.commits[commits_before:]
    return {
        "wall_s": round(wall, 2),
        "rows_in": result.rows_in, "rows_out": result.rows_out, "rows_rejected": result.rows_rejected,
        "driver_python_peak_mb": round(driver_peak_rss_mb(), 1),
        "jvm_heap_peak_mb": round(sum(pool.getPeakUsage().getUsed() for pool in pools) / 2**20, 1),
        "jvm_peak_rss_mb": round(sum(peaks["jvm"]), 1),
        "executor_python_peak_mb": round(sum(peaks["python_workers"]), 1),
        "files_written": sum(c.files for c in commits),
        "delta_commit_s": round(sum(c.commit_seconds or 0.0 for c in commits), 3),
        "tables_written": [c.table for c in commits],
    }


def overhead_sample(ctx, sample: int, rounds: int, models_root: Path) -> dict[str, Any]:
    """Spark's overhead over scoring alone with the real model, on `sample` pairs of the day (module docstring)."""
    import torch
    from pyspark.sql import functions as F

    from bench.models import make_base_bi_encoder_version
    from jobs import score
    from jobs.core.job import JobContext, run_job
    from relevance.frames import whole_queries_up_to
    from schemas.tables import PAIRS, RELEVANCE
    from udfs.model import load_model_version
    from udfs.scorer import score_pairs

    wh = ctx.warehouse
    model_dir = make_base_bi_encoder_version(models_root)
    pairs = wh.read(PAIRS, {"ds": DS})
    sampled = whole_queries_up_to(pairs, sample, seed=0).withColumn("ds", F.lit(SAMPLE_DS))
    wh.overwrite_partition(sampled, PAIRS, {"ds": SAMPLE_DS}, ctx.run_id)
    rows = wh.read(PAIRS, {"ds": SAMPLE_DS}).select("query_norm", "product_text").toPandas()
    settings = ctx.settings.replace("model.version", model_dir.name).replace("scoring.incremental", False)  # every round scores every pair
    torch.set_num_threads(os.cpu_count() or 1)
    model = load_model_version(model_dir, "cpu")
    job_times, scorer_times = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        result = run_job(JobContext(score.JOB, settings, ctx.spark, wh, SAMPLE_DS), score.run)
        job_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        scores, _ = score_pairs(model, rows.query_norm.tolist(), rows.product_text.tolist())
        scorer_times.append(time.perf_counter() - started)
    job_scores = wh.read(RELEVANCE, {"ds": SAMPLE_DS}).select("query_norm", "product_id", "score").toPandas()
    return {
        "pairs": len(rows), "model": f"{model_dir.name} (real MiniLM-L6, bi-encoder)", "rounds": rounds,
        "score_job_s": [round(t, 2) for t in job_times], "scorer_alone_s": [round(t, 2) for t in scorer_times],
        "overhead": round(min(job_times) / min(scorer_times) - 1.0, 4),
        "score_job_rows": result.rows_out, "scores_written": len(job_scores),
    }


def run_one_size(pairs: int, work: Path, sample: int, rounds: int) -> dict[str, Any]:
    """Generate a day of `pairs` pairs and run the nightly's jobs on it, measured; in this (fresh) process."""
    from bench.models import make_tiny_model_version
    from jobs import audit, build_pairs, generate_scale, score
    from jobs.core.config import load_config, set_path
    from jobs.core.job import JobContext
    from jobs.core.spark import build_spark, open_warehouse
    from relevance.settings import settings_from_mapping

    cfg = load_config(ROOT / "conf" / "local.yaml")
    models_root = work / "models"
    make_tiny_model_version(models_root, "tiny-scale")
    set_path(cfg, "warehouse.root", str(work / "warehouse"))
    set_path(cfg, "model.models_root", str(models_root))
    set_path(cfg, "model.version", "tiny-scale")
    set_path(cfg, "generate_scale.pairs", pairs)
    settings = settings_from_mapping(cfg)
    spark = build_spark(settings)
    ctx = JobContext(job="scale-bench", settings=settings, spark=spark, warehouse=open_warehouse(spark, settings), ds=DS)
    modules = {"generate_scale": generate_scale, "build_pairs": build_pairs, "score": score, "audit": audit}
    jobs = {name: measured_job(ctx, module) for name, module in modules.items()}
    result = {"pairs": jobs["build_pairs"]["rows_out"], "jobs": jobs,
              "spark": {"master": spark.sparkContext.master, "driver_memory": settings.spark.driver_memory,
                        "default_parallelism": spark.sparkContext.defaultParallelism}}
    if sample:
        result["overhead"] = overhead_sample(ctx, sample, rounds, models_root)
    spark.stop()
    return result


def growth(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per job, the growth exponent of wall time between consecutive sizes, and the memory ratios."""
    out: dict[str, Any] = {}
    for low, high in zip(sizes, sizes[1:]):
        span = f"{low['pairs']}->{high['pairs']}"
        scale = math.log(high["pairs"] / low["pairs"])
        out[span] = {job: {
            "time_exponent": round(math.log(high["jobs"][job]["wall_s"] / low["jobs"][job]["wall_s"]) / scale, 3),
            "driver_python_peak_ratio": round(high["jobs"][job]["driver_python_peak_mb"]
                                              / low["jobs"][job]["driver_python_peak_mb"], 3),
            "jvm_heap_peak_ratio": round(high["jobs"][job]["jvm_heap_peak_mb"] / low["jobs"][job]["jvm_heap_peak_mb"], 3),
        } for job in high["jobs"]}
    return out


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| pairs | job | wall s | driver Python peak MiB | JVM heap peak MiB | JVM RSS peak MiB | "
             "executor Python peak MiB | files | Delta commit s |", "|---|---|---|---|---|---|---|---|---|"]
    for size in result["sizes"]:
        for job, m in size["jobs"].items():
            lines.append(f"| {size['pairs']:,} | {job} | {m['wall_s']:.1f} | {m['driver_python_peak_mb']:.0f} | "
                         f"{m['jvm_heap_peak_mb']:.0f} | {m['jvm_peak_rss_mb']:.0f} | {m['executor_python_peak_mb']:.0f} | "
                         f"{m['files_written']} | {m['delta_commit_s']:.2f} |")
    lines += ["", "| between | job | time exponent | driver Python peak ratio | JVM heap peak ratio |", "|---|---|---|---|---|"]
    for span, jobs in result["growth"].items():
        for job, g in jobs.items():
            lines.append(f"| {span} | {job} | {g['time_exponent']:.2f} | {g['driver_python_peak_ratio']:.2f} | "
                         f"{g['jvm_heap_peak_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="day sizes in distinct pairs, comma-separated")
    parser.add_argument("--sample", type=int, default=4000, help="pairs for the real-model overhead (0: skip)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the overhead measurement")
    parser.add_argument("--out", default="bench/scale_results.json")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(result_line(run_one_size(args.one, Path(args.work), args.sample, args.rounds)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    measured = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="scale-bench-") as work:
            sample = args.sample if n == max(sizes) else 0
            command = [sys.executable, __file__, "--one", str(n), "--work", work, "--sample", str(sample),
                       "--rounds", str(args.rounds)]
            measured.append(run_measured(command, f"scale bench at {n} pairs"))
            print(f"{n} pairs: " + ", ".join(f"{j} {m['wall_s']:.1f}s" for j, m in measured[-1]["jobs"].items()), flush=True)
    result = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
              "load_average_at_end": list(os.getloadavg()), "sizes": measured, "growth": growth(measured)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    if "overhead" in measured[-1]:
        o = measured[-1]["overhead"]
        print(f"\nSpark overhead over scoring alone ({o['pairs']} pairs, {o['model']}): {o['overhead']:+.1%} "
              f"(score job {min(o['score_job_s'])}s vs scorer {min(o['scorer_alone_s'])}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
