"""Do the logs teach the model? Judgments only, clicks only and both, on the same held-out human-judged queries.

Usage (from the repository root):

    .venv/bin/python bench/logs_eval.py --warehouse /tmp/logs-demo31 --set generate.seed=31 --out bench/logs_eval.json

On the demo (or any warehouse with catalog, judgments and query_log: pass `--no-generate`), with the project's own
CLI: `generate`, `click-model` over the log's days, then one `finetune` per variant (unpromoted, each its own version;
an existing version is reused, so a run can be resumed). Every variant has the same split seed, so the same
validation and test queries. This script then scores the held-out test queries' judged pairs in-process with each
version, with BM25 and with the zero-shot base, and reports mean nDCG@10, and each variant's per-query gain over
judgments-only, zero-shot and BM25 with a paired bootstrap CI (queries resampled).

Variants (`finetune.sources`, `finetune.click_queries`, `finetune.max_train_queries`):
- judgments: the judged training queries only (today's recipe);
- clicks-new / both-new: click labels, with every validation and test query's clicks left out ("new queries");
- clicks-seen / both-seen: click labels of every logged query, as a nightly has them ("seen queries");
- judgments-N / both-new-N: the learning curve, N judged training queries (validation and test unchanged);
- clicks-then-judgments(-N): two stages, the judgments-only recipe started from the clicks-new variant's network
  (`model.base` set to it) instead of the base model: clicks as pre-training, judgments as fine-tuning.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(ROOT))

from bench.subprocesses import jobs_cli  # noqa: E402
from jobs.core.config import load_settings  # noqa: E402
from relevance.evaluation.intervals import bootstrap_mean_ci  # noqa: E402

MAIN_VARIANTS: dict[str, list[str]] = {
    "judgments": ["finetune.sources=judgments"],
    "clicks-new": ["finetune.sources=clicks"],
    "both-new": ["finetune.sources=both"],
    "clicks-seen": ["finetune.sources=clicks", "finetune.click_queries=all"],
    "both-seen": ["finetune.sources=both", "finetune.click_queries=all"],
}
CURVE_SIZES = (25, 50, 100)


def curve_variants(sizes: tuple[int, ...]) -> dict[str, list[str]]:
    return {f"{name}-{n}": [*MAIN_VARIANTS[name], f"finetune.max_train_queries={n}"]
            for n in sizes for name in ("judgments", "both-new")}


def staged_variants(sizes: tuple[int, ...]) -> dict[str, tuple[list[str], str]]:
    """Variants trained from another variant's network, name -> (their own settings, the variant they start from):
    clicks-then-judgments, on every judged training query and at each curve size."""
    own = ["finetune.sources=judgments"]
    return {"clicks-then-judgments": (own, "clicks-new"),
            **{f"clicks-then-judgments-{n}": ([*own, f"finetune.max_train_queries={n}"], "clicks-new") for n in sizes}}


def held_out_pairs(conf: str, sets: list[str]) -> tuple[pd.DataFrame, Any, Any]:
    """The judged pairs of the test split (the finetune job's own loading and split), the catalog's product texts
    (a Spark frame, BM25's corpus) and the settings."""
    from jobs import finetune
    from jobs.core.job import JobContext
    from jobs.core.spark import build_spark, open_warehouse
    from relevance.training.split import split_examples, training_examples

    settings = load_settings(conf, sets)
    spark = build_spark(settings)
    ctx = JobContext(job="logs-eval", settings=settings, spark=spark, warehouse=open_warehouse(spark, settings), ds=None)
    tuning = settings.finetune
    texts = finetune.read_catalog_texts(ctx).cache()
    examples, _ = training_examples(finetune.read_judged_pairs(ctx, texts), tuning.max_examples, tuning.seed)
    parts = split_examples(examples, tuning.seed, tuning.val_fraction, tuning.test_fraction, "judgments")
    return parts["test"], texts, settings


def per_query_ndcg(test: pd.DataFrame, scores: np.ndarray, settings: Any, k: int) -> pd.Series:
    from relevance.training.evaluate import per_query

    scheme = settings.labels.active
    table = per_query(test, scores, [k], scheme.relevant_min_grade, scheme.gain)
    return table.set_index("query")[f"ndcg@{k}"]


def version_scores(models_root: Path, version: str, test: pd.DataFrame) -> np.ndarray:
    from relevance.training.evaluate import predict_logits
    from udfs.model import load_model_version

    model = load_model_version(models_root / version)
    return predict_logits(model.tokenizer, model.torch_network, test, model.max_length, model.kind,
                          (model.card.lexical_weight or 0.0, model.lexical))


def paired(gains: np.ndarray, n_boot: int) -> dict[str, float]:
    low, high = bootstrap_mean_ci(gains, n_boot, 0.95, seed=0)
    return {"mean": round(float(gains.mean()), 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
            "better": int((gains > 1e-12).sum()), "worse": int((gains < -1e-12).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--warehouse", required=True, help="a scratch warehouse (its models under <it>/models)")
    parser.add_argument("--set", action="append", default=[], help="config overrides for every job")
    parser.add_argument("--no-generate", action="store_true", help="the warehouse already holds its inputs")
    parser.add_argument("--log-ds", default=None, help="click-model's --ds (default: generate.end_date)")
    parser.add_argument("--log-days", type=int, default=None, help="click-model's --days (default: generate.n_days)")
    parser.add_argument("--variants", default=",".join([*MAIN_VARIANTS, *curve_variants(CURVE_SIZES)]))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sets = [f"warehouse.root={args.warehouse}", f"model.models_root={args.warehouse}/models", *args.set]
    settings = load_settings(args.conf, sets)
    models_root = Path(settings.model.models_root)
    end, days = args.log_ds or settings.generate.end_date, args.log_days or settings.generate.n_days
    walls: dict[str, float] = {}
    if not args.no_generate and not (Path(args.warehouse) / "catalog").exists():
        walls["generate"] = jobs_cli(args.conf, "generate", sets=sets)
    if not (Path(args.warehouse) / "click_labels").exists():
        walls["click-model"] = jobs_cli(args.conf, "click-model", "--ds", end, "--days", str(days), sets=sets)
    staged = staged_variants(CURVE_SIZES)
    variants = {**MAIN_VARIANTS, **curve_variants(CURVE_SIZES),
                **{name: [*own, f"model.base={models_root / f'logs-{start}' / 'model'}"]
                   for name, (own, start) in staged.items()}}
    chosen = [v for v in args.variants.split(",") if v]
    for name in chosen:
        start = staged.get(name, (None, None))[1]
        if start and not (models_root / f"logs-{start}" / "model_card.json").is_file():
            raise SystemExit(f"variant {name} starts from {start}: list {start} before it")
        if not (models_root / f"logs-{name}" / "model_card.json").is_file():
            walls[name] = jobs_cli(args.conf, "finetune", sets=[*sets, *variants[name], f"finetune.version=logs-{name}",
                                                                "finetune.promote=false"], show_lines=3)

    from relevance.evaluation.baselines import baseline_scores
    from udfs.model import read_card, resolve_base_model

    test, texts, settings = held_out_pairs(args.conf, sets)
    base_dir = resolve_base_model(settings.model.base)
    baselines = baseline_scores(["bm25", "zero_shot"], texts, test, base_dir, settings.audit.zero_shot_max_length)
    ndcg = {name: per_query_ndcg(test, scores, settings, args.k) for name, scores in baselines.items()}
    cards = {}
    for name in chosen:
        ndcg[name] = per_query_ndcg(test, version_scores(models_root, f"logs-{name}", test), settings, args.k)
        cards[name] = read_card(models_root / f"logs-{name}")
    table = pd.DataFrame(ndcg).dropna()
    report: dict[str, Any] = {"test_queries": int(len(table)), "test_pairs": int(len(test)), "k": args.k,
                              "settings": sets, "measured_at": dt.datetime.now().isoformat(timespec="seconds"),
                              "wall_seconds": {k: round(v, 1) for k, v in walls.items()}, "systems": {}}
    for name in table.columns:
        row: dict[str, Any] = {f"ndcg@{args.k}": round(float(table[name].mean()), 4)}
        same_size = (name.replace("both-new-", "judgments-").replace("clicks-then-judgments-", "judgments-")
                     if name.startswith(("both-new-", "clicks-then-judgments-")) else None)
        for rival in ("judgments", "zero_shot", "bm25", same_size):  # a curve step against judgments at its size
            if rival and rival in table.columns and rival != name and name not in ("zero_shot", "bm25"):
                row[f"gain_vs_{rival}"] = paired((table[name] - table[rival]).to_numpy(), args.bootstrap)
        if name in cards:
            sources = cards[name].training.get("sources", {})
            row |= {"judged_train_pairs": sources.get("judged_pairs"), "judged_train_queries": sources.get("judged_queries"),
                    "click_pairs": sources.get("click_pairs", 0), "click_queries": sources.get("click_queries", 0),
                    "val_ndcg": cards[name].training.get("best_val_ndcg"),
                    "train_seconds": cards[name].training.get("train_seconds")}
        report["systems"][name] = row
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
