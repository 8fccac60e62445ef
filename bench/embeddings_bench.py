"""The embedding path of `score` against the pair path and the cross-encoder, on generate-scale days, in one run.

Usage (from the repository root):

    .venv/bin/python bench/embeddings_bench.py [--sizes 100000,1000000] [--sample 4000] [--change 0.05]
                                               [--out bench/embeddings_results.json]

Method
------
Each size runs in a fresh Python process with the embedded default settings (conf/local.yaml: local Spark on every
core, delta-rs) and a warehouse in a temporary folder, with the real base model:

1. `generate-scale --pairs N`, then `build_pairs`.
2. **embedding path**, the whole day (after a warm-up `score` of the sample, not reported, so that the Python
   workers have loaded the model before either path is timed): `score` with the base MiniLM as a bi-encoder model version (the shipped kind,
   `bench.models.make_base_bi_encoder_version`), `scoring.path=embeddings`, an empty `embeddings` table and no
   earlier scores: every distinct text of the day is embedded once, then pairs are scored by join and dot product.
3. **pair path** (today's bi-encoder job): `score` with `scoring.path=pairs` on a copy of the whole day (days up to
   `--full-pairs-max` pairs), else on a sample: `--sample` pairs of the day (every pair of whole queries, chosen by
   hash, `relevance.frames.whole_queries_up_to`) put in a day of their own, whose pairs/s times N is what the whole
   day would take (an extrapolation, said so; a sample repeats products less than its day, so it overstates the
   pair path's work where a task's cache would have caught the repeats). Its scores are compared with the embedding
   path's scores of the same pairs (max |difference|).
4. **cross-encoder**, on the sample: `score` with the base MiniLM and a seeded random head
   (`bench.score_inputs.make_bench_model`, max_length 128): the compute of a real cross-encoder; pairs/s times N is
   the whole day's extrapolated time.
5. **dot product**, Spark's higher-order functions against the numpy pandas UDF: the day's pairs joined with their
   vectors (all in the table now) and scored, `relevance.embeddings.plan_day_embeddings(..., dot=...)`, the sum of
   the scores computed twice each, in turn (best of two), nothing embedded.
6. **rerun, 5% of the products new or changed**: the titles of a seeded 5% of the catalog's products edited, then
   `build_pairs` and `score` (embedding path, incremental reuse on, as the nightly runs): only the changed
   products' texts are embedded, only their pairs scored.

Reported per step: wall time of the job, pairs/s (pairs scored / the job's scoring time, and pairs / wall), distinct
texts embedded, embed and join-and-dot seconds (from `runs.details`), and the machine's load average around it.
"""

from __future__ import annotations

import argparse
import copy
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DS, SAMPLE_DS, WHOLE_DS = "2025-01-07", "2025-01-08", "2025-01-09"  # the day; its sample; a copy of it
BI, CROSS = "base-bi-encoder", "bench-base"


def timed_job(spark, cfg: dict, module, ds: str | None = DS) -> dict[str, Any]:
    """Run one job as the CLI does; its result, wall time and the load average before and after."""
    from jobs.core.job import JobContext, run_job
    from jobs.core.spark import open_warehouse
    from relevance.settings import settings_from_mapping

    settings = settings_from_mapping(copy.deepcopy(cfg))
    ctx = JobContext(job=module.JOB, settings=settings, spark=spark, warehouse=open_warehouse(spark, settings), ds=ds)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = run_job(ctx, module.run)
    wall = time.perf_counter() - started
    return {"result": result, "wall_s": round(wall, 2), "load_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)]}


def score_row(measured: dict[str, Any]) -> dict[str, Any]:
    """What one score run reports: pairs, times, pairs/s, texts embedded."""
    result, wall = measured["result"], measured["wall_s"]
    d = result.details
    scored = d["pairs_scored"]
    row = {"path": d["scoring_path"], "pairs_in_day": result.rows_out, "pairs_scored": scored,
           "pairs_reused": result.rows_reused, "job_wall_s": wall, "scoring_s": d["scoring_seconds"],
           "pairs_per_s_scoring": round(scored / d["scoring_seconds"], 1) if d["scoring_seconds"] else None,
           "pairs_per_s_job": round(result.rows_out / wall, 1), "load_1min": measured["load_1min"]}
    if d["scoring_path"] == "embeddings":
        row |= {key: d[key] for key in ("distinct_texts", "texts_embedded", "queries_embedded", "products_embedded",
                                        "embed_seconds", "join_dot_seconds")}
    return row


def with_settings(cfg: dict, **values: Any) -> dict:
    from jobs.core.config import set_path

    out = copy.deepcopy(cfg)
    for key, value in values.items():
        set_path(out, key, value)
    return out


def dot_timings(spark, cfg: dict) -> dict[str, Any]:
    """Join and dot product of the whole day with each dot implementation, nothing left to embed (best of two)."""
    from pyspark.sql import functions as F

    from jobs.core.spark import open_warehouse
    from relevance.embeddings import plan_day_embeddings
    from relevance.scoring import scorer_spec
    from relevance.settings import settings_from_mapping
    from schemas.tables import EMBEDDINGS, PAIRS
    from udfs.model import load_model_version, locate_model_version

    settings = settings_from_mapping(copy.deepcopy(cfg))
    wh = open_warehouse(spark, settings)
    model_dir = locate_model_version(settings.model.models_root, BI)
    model = load_model_version(model_dir)
    spec = scorer_spec(spark, settings.scoring, model_dir, {}, None)
    pairs = wh.read(PAIRS, {"ds": DS}).cache()
    pairs.count()
    table = wh.read(EMBEDDINGS, {"model_version": BI})
    times: dict[str, list[float]] = {"spark": [], "pandas": []}
    rows = 0
    for _ in range(2):  # in turn, so that both see the same load
        for dot in times:
            planned = plan_day_embeddings(pairs, None, table, spec, model.card, model.lexical, "fp32", "dot-bench", DS,
                                          spark.sparkContext.defaultParallelism, dot=dot)
            started = time.perf_counter()
            # an aggregate of the score itself: a bare count() would let Spark prune the dot product away
            row = planned.day.fresh.agg(F.count("score").alias("n"), F.sum("score").alias("total")).collect()[0]
            times[dot].append(round(time.perf_counter() - started, 2))
            rows = row["n"]
    out: dict[str, Any] = {dot: {"seconds": t, "pairs": rows, "pairs_per_s": round(rows / min(t), 1)}
                           for dot, t in times.items()}
    pairs.unpersist()
    return out


def change_products(spark, cfg: dict, share: float) -> int:
    """Edit the titles of a seeded `share` of the catalog's products (a Spark rewrite: no driver loop)."""
    from pyspark.sql import functions as F

    from jobs.core.spark import open_warehouse
    from relevance.settings import settings_from_mapping
    from schemas.tables import CATALOG

    wh = open_warehouse(spark, settings_from_mapping(copy.deepcopy(cfg)))
    catalog = wh.read(CATALOG).cache()
    chosen = (F.abs(F.xxhash64(F.lit(11), "product_id")) % 10_000) < int(share * 10_000)
    edited = catalog.withColumn("title", F.when(chosen, F.concat("title", F.lit(" (new edition)"))).otherwise(F.col("title")))
    changed = catalog.where(chosen).count()
    wh.replace(edited.localCheckpoint(), CATALOG, "bench-edit")
    catalog.unpersist()
    return changed


def run_one_size(pairs: int, work: Path, sample: int, change: float, full_pairs_max: int) -> dict[str, Any]:
    """Generate a day of `pairs` pairs and measure every path on it, in this (fresh) process."""
    from pyspark.sql import functions as F

    from bench.models import make_base_bi_encoder_version
    from bench.score_inputs import make_bench_model
    from jobs import build_pairs, generate_scale, score
    from jobs.core.config import load_config, set_path
    from jobs.core.spark import build_spark, open_warehouse
    from relevance.frames import whole_queries_up_to
    from relevance.settings import settings_from_mapping
    from schemas.tables import PAIRS, RELEVANCE

    cfg = load_config(ROOT / "conf" / "local.yaml")
    models_root = work / "models"
    make_base_bi_encoder_version(models_root, BI)
    make_bench_model(models_root)
    for key, value in {"warehouse.root": str(work / "warehouse"), "model.models_root": str(models_root),
                       "model.version": BI, "generate_scale.pairs": pairs}.items():
        set_path(cfg, key, value)
    settings = settings_from_mapping(cfg)
    spark = build_spark(settings)
    wh = open_warehouse(spark, settings)
    steps: dict[str, Any] = {}
    steps["generate_scale_s"] = timed_job(spark, cfg, generate_scale)["wall_s"]
    steps["build_pairs_s"] = timed_job(spark, cfg, build_pairs)["wall_s"]

    day = wh.read(PAIRS, {"ds": DS})
    sampled = whole_queries_up_to(day, sample, seed=0).withColumn("ds", F.lit(SAMPLE_DS))
    wh.overwrite_partition(sampled, PAIRS, {"ds": SAMPLE_DS}, "bench-sample")
    # warm-up, not reported: the Python workers load the bi-encoder once, for whichever path comes first
    timed_job(spark, with_settings(cfg, **{"scoring.path": "pairs", "scoring.incremental": False}), score, SAMPLE_DS)

    embeddings = with_settings(cfg, **{"scoring.path": "embeddings", "scoring.incremental": False})
    steps["embeddings"] = score_row(timed_job(spark, embeddings, score))

    whole = pairs <= full_pairs_max  # the pair path on the whole day (a copy of it), else on the sample
    pairs_ds = WHOLE_DS if whole else SAMPLE_DS
    if whole:
        wh.overwrite_partition(day.withColumn("ds", F.lit(WHOLE_DS)), PAIRS, {"ds": WHOLE_DS}, "bench-whole")
    by_pairs = score_row(timed_job(spark, with_settings(cfg, **{"scoring.path": "pairs", "scoring.incremental": False}),
                                   score, pairs_ds))
    by_pairs["whole_day"] = whole
    by_pairs["whole_day_s_extrapolated"] = None if whole else round(pairs / by_pairs["pairs_per_s_scoring"], 1)
    steps["pairs_path"] = by_pairs
    a = wh.read(RELEVANCE, {"ds": pairs_ds}).select("query_norm", "product_id", F.col("score").alias("a"))
    b = wh.read(RELEVANCE, {"ds": DS}).select("query_norm", "product_id", F.col("score").alias("b"))
    diff = a.join(b, ["query_norm", "product_id"]).agg(
        F.count(F.lit(1)).alias("n"), F.max(F.abs(F.col("a") - F.col("b"))).alias("d")).collect()[0]
    steps["pairs_vs_embeddings"] = {"pairs_compared": diff["n"], "max_abs_score_difference": diff["d"]}

    cross = with_settings(cfg, **{"model.version": CROSS, "scoring.path": "auto", "scoring.incremental": False})
    crossed = score_row(timed_job(spark, cross, score, SAMPLE_DS))
    crossed["whole_day_s_extrapolated"] = round(pairs / crossed["pairs_per_s_scoring"], 1)
    steps["cross_encoder_sample"] = crossed

    steps["dot"] = dot_timings(spark, embeddings)

    steps["products_changed"] = change_products(spark, cfg, change)
    steps["rerun_build_pairs_s"] = timed_job(spark, cfg, build_pairs)["wall_s"]
    steps["rerun"] = score_row(timed_job(spark, with_settings(cfg, **{"scoring.path": "embeddings"}), score))
    result = {"pairs": pairs, "steps": steps,
              "spark": {"master": spark.sparkContext.master, "default_parallelism": spark.sparkContext.defaultParallelism}}
    spark.stop()
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = ["| day | run | pairs scored | job s | pairs/s (scoring) | texts embedded | embed s | join+dot s | load |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for size in result["sizes"]:
        s = size["steps"]
        whole = s["pairs_path"]["whole_day"]
        for name, label in (("embeddings", "embedding path, whole day"),
                            ("pairs_path", "pair path, whole day" if whole else "pair path, sample"),
                            ("cross_encoder_sample", "cross-encoder, sample"), ("rerun", "rerun, 5% products changed")):
            r = s[name]
            lines.append(f"| {size['pairs']:,} | {label} | {r['pairs_scored']:,} | {r['job_wall_s']:.1f} | "
                         f"{r['pairs_per_s_scoring'] or 0:,.0f} | {r.get('texts_embedded', '-')} | "
                         f"{r.get('embed_seconds', '-')} | {r.get('join_dot_seconds', '-')} | {r['load_1min']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="day sizes in distinct pairs, comma-separated")
    parser.add_argument("--sample", type=int, default=4000, help="pairs of whole queries for the pair path and the "
                        "cross-encoder")
    parser.add_argument("--full-pairs-max", type=int, default=200_000, help="days up to this many pairs are scored "
                        "whole by the pair path too; larger ones on the sample")
    parser.add_argument("--change", type=float, default=0.05, help="share of products changed before the rerun")
    parser.add_argument("--out", default="bench/embeddings_results.json")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(result_line(run_one_size(args.one, Path(args.work), args.sample, args.change, args.full_pairs_max)))
        return 0
    measured = []
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="embeddings-bench-") as work:
            command = [sys.executable, __file__, "--one", str(n), "--work", work, "--sample", str(args.sample),
                       "--change", str(args.change), "--full-pairs-max", str(args.full_pairs_max)]
            measured.append(run_measured(command, f"embeddings bench at {n} pairs"))
            print(f"{n} pairs done in {measured[-1]['process_wall_s']}s", flush=True)
    result = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
              "load_average_at_end": list(os.getloadavg()), "sizes": measured}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
