"""Recall against the truth on the demo: what the engine showed and what the model retrieves over the whole catalog.

Usage (from the repository root):

    .venv/bin/python bench/retrieval_truth.py [--model base|finetuned] [--epochs N] [--k 50] [--out FILE]

Method
------
The demo's data (`generate` with its default sizes and seed: 3,000 products, 400 intents, 3 days) in a temporary
warehouse; a bi-encoder model version: `base` is the zero-shot base MiniLM saved as a bi-encoder version
(bench.models.make_base_bi_encoder_version, cosine calibrated as is), `finetuned` fine-tunes one as `make run` does
(`finetune` with the default settings, `--epochs` to change finetune.epochs); then for ds 2025-01-07 `build_pairs`, `score` (embedding path) and `retrieve` with
`audit.retrieval.queries` covering every logged query of the day.

The generator knows every product's true grade (relevance.data.demo.catalog_truth replays its catalog and intents
with the same seed, checked here against the `ground_truth` table it wrote: every grade equal). Per query of
`catalog_topk` (the day's logged and judged queries), relevant = true grade >= 1 (Partial or Exact) or = 2 (Exact):

- the engine: its shown set that day (the day's pairs with impressions > 0, all positions);
- the model: its top k over the whole catalog (catalog_topk), and its top n where n = the size of the engine's
  shown set for that query (the same budget as the engine);
- recall = |relevant ∩ set| / |relevant|, and the set's precision; means over queries.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DS = "2025-01-07"


def run_jobs(cfg: dict, model: str, epochs: int | None) -> dict[str, Any]:
    from jobs import build_pairs, finetune, generate, retrieve, score
    from jobs.core.config import set_path
    from jobs.core.job import JobContext, run_job
    from jobs.core.spark import build_spark, open_warehouse
    from relevance.settings import settings_from_mapping

    def job(module, ds: str | None = DS):
        settings = settings_from_mapping(copy.deepcopy(cfg))
        spark = build_spark(settings)
        ctx = JobContext(job=module.JOB, settings=settings, spark=spark, warehouse=open_warehouse(spark, settings),
                         ds=ds)
        started = time.perf_counter()
        result = run_job(ctx, module.run)
        print(f"[{module.JOB}] {time.perf_counter() - started:.0f}s {result.summary.splitlines()[0]}", flush=True)
        return result

    job(generate, None)
    if model == "base":
        from bench.models import make_base_bi_encoder_version

        version = make_base_bi_encoder_version(Path(cfg["model"]["models_root"]))
        set_path(cfg, "model.version", str(version))
    else:
        if epochs is not None:
            set_path(cfg, "finetune.epochs", epochs)
        job(finetune, None)
    job(build_pairs)
    job(score)
    return {"retrieve": job(retrieve).details}


def recall_figures(root: Path, k: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    from deltalake import DeltaTable

    from relevance.data.demo import catalog_truth
    from relevance.settings import GenerateSettings
    from udfs.text import normalize_text

    def table(name: str) -> pd.DataFrame:
        return DeltaTable(str(root / name)).to_pandas()

    g = GenerateSettings()
    truth = catalog_truth(g.seed, g.n_products, g.n_queries, g.end_date)
    written = table("ground_truth")
    written["query_norm"] = [normalize_text(q) for q in written["query"]]
    check = written.merge(truth, on=["query_norm", "product_id"], how="left", suffixes=("", "_truth"))
    mismatches = int((check.grade != check.grade_truth.fillna(0)).sum())
    if mismatches:
        raise SystemExit(f"catalog_truth disagrees with ground_truth on {mismatches} pairs")
    topk = table("catalog_topk")
    topk = topk[topk.ds == DS]
    pairs = table("pairs")
    pairs = pairs[pairs.ds == DS]
    shown = pairs[pairs.impressions > 0].groupby("query_norm").product_id.apply(set)
    rows = []
    for query, group in topk.sort_values(["query_norm", "rank"]).groupby("query_norm"):
        mine = truth[truth.query_norm == query]
        engine = shown.get(query, set())
        ranked = list(group.product_id)
        for level, relevant in (("grade>=1", set(mine.product_id)), ("grade=2", set(mine[mine.grade == 2].product_id))):
            if not relevant or not engine:
                continue
            budget = ranked[:len(engine)]
            rows.append({
                "query_norm": query, "level": level, "segment": group.segment.iloc[0], "relevant": len(relevant),
                "shown": len(engine), "engine_recall": len(relevant & engine) / len(relevant),
                "engine_precision": len(relevant & engine) / len(engine),
                "model_recall_at_k": len(relevant & set(ranked[:k])) / len(relevant),
                "model_precision_at_k": len(relevant & set(ranked[:k])) / k,
                "model_recall_at_shown": len(relevant & set(budget)) / len(relevant),
                "model_precision_at_shown": len(relevant & set(budget)) / len(budget),
                "relevant_found_by_model_not_shown": len((relevant & set(ranked[:k])) - engine),
            })
    per_query = pd.DataFrame(rows)
    summary = {}
    for (level, segment), part in [(key, p) for key, p in per_query.groupby(["level", "segment"], dropna=False)] + [
            ((level, "all"), p) for level, p in per_query.groupby("level")]:
        summary[f"{level} {segment}"] = {"queries": len(part), **{c: round(float(np.mean(part[c])), 4) for c in (
            "relevant", "shown", "engine_recall", "engine_precision", "model_recall_at_k", "model_precision_at_k",
            "model_recall_at_shown", "model_precision_at_shown", "relevant_found_by_model_not_shown")}}
    return {"ground_truth_pairs_checked": len(check), "truth_pairs": len(truth), "queries": int(topk.query_norm.nunique()),
            "k": k, "by_level_and_segment": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("base", "finetuned"), default="base")
    parser.add_argument("--epochs", type=int, default=None, help="finetune.epochs (default: the setting's)")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--out", default=None, help="default: bench/retrieval_truth_results.json (base) or "
                        "bench/retrieval_truth_finetuned.json")
    args = parser.parse_args()

    from jobs.core.config import load_config, set_path

    with tempfile.TemporaryDirectory(prefix="retrieval-truth-") as work:
        cfg = load_config(ROOT / "conf" / "local.yaml")
        set_path(cfg, "warehouse.root", str(Path(work) / "warehouse"))
        set_path(cfg, "model.models_root", str(Path(work) / "models"))
        set_path(cfg, "scoring.path", "embeddings")
        set_path(cfg, "audit.retrieval.k", args.k)
        set_path(cfg, "audit.retrieval.queries", 100000)  # every logged query of the day
        jobs = run_jobs(cfg, args.model, args.epochs)
        result = {"model": args.model, "epochs": args.epochs if args.model == "finetuned" else None, **jobs,
                  **recall_figures(Path(work) / "warehouse", args.k)}
    print(json.dumps(result["by_level_and_segment"], indent=1))
    out = args.out or str(ROOT / "bench" / ("retrieval_truth_results.json" if args.model == "base"
                                            else "retrieval_truth_finetuned.json"))
    Path(out).write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
