"""Nightly rerun cost: the score job after 5% of the pairs changed, against the full scoring run.

Usage (from the repository root):

    .venv/bin/python bench/incremental_bench.py [--products 1500] [--change 0.05] [--out bench/incremental_results.json]

Method: a demo warehouse (the generator at the given size) and the benchmark model of
bench/score_bench.py (MiniLM-L6 with a seeded head, so the compute is the real model's);
build_pairs + score for one ds with incremental scoring (the full run: nothing to reuse);
then the titles of products are edited until about `--change` of the day's pairs carry a
new text fingerprint, build_pairs runs again, and score runs again (the nightly rerun). Both
score runs are timed end to end (job wall time, including reading, the reuse join and the
Delta commit) and by their scoring time as recorded in `runs.details`. The job also checks that
exactly the changed pairs were scored.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from jobs import build_pairs, generate, score  # noqa: E402
from jobs.core.config import load_config, set_path  # noqa: E402
from jobs.core.job import JobContext, run_job  # noqa: E402
from jobs.core.spark import build_spark, open_warehouse  # noqa: E402
from plumbing.delta import Warehouse  # noqa: E402
from relevance.settings import settings_from_mapping  # noqa: E402
from schemas.tables import TABLES  # noqa: E402

DS = "2025-01-07"


def run(spark, cfg: dict, module, ds: str | None = DS):
    settings = settings_from_mapping(copy.deepcopy(cfg))
    ctx = JobContext(job=module.JOB, settings=settings, spark=spark, warehouse=open_warehouse(spark, settings), ds=ds)
    started = time.perf_counter()
    result = run_job(ctx, module.run)
    return result, time.perf_counter() - started


def products_to_change(pairs: pd.DataFrame, share: float) -> set[str]:
    """A seeded random set of products whose pairs add up to at most `share` of the day's pairs."""
    per_product = pairs.groupby("product_id").size().sample(frac=1.0, random_state=0)
    covered = per_product.cumsum() / len(pairs)
    return set(per_product.index[covered <= share])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=1500)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--change", type=float, default=0.05)
    parser.add_argument("--out", default="bench/incremental_results.json")
    args = parser.parse_args()

    from bench.score_inputs import make_bench_model

    work = Path(tempfile.mkdtemp(prefix="incremental-bench-"))
    cfg = load_config(ROOT / "conf" / "local.yaml")
    for key, value in {"warehouse.root": str(work / "warehouse"), "warehouse.writer": "delta-rs",
                       "model.models_root": str(work / "models"), "model.version": "bench-base",
                       "generate.n_products": args.products, "generate.n_queries": args.queries,
                       "generate.n_days": 1, "generate.end_date": DS, "spark.master": "local[2]"}.items():
        set_path(cfg, key, value)
    make_bench_model(work / "models")
    spark = build_spark(settings_from_mapping(cfg))
    run(spark, cfg, generate, ds=None)
    run(spark, cfg, build_pairs)
    full, full_wall = run(spark, cfg, score)

    wh = Warehouse(spark, cfg["warehouse"]["root"], "delta-rs")
    pairs: pd.DataFrame = wh.read(TABLES["pairs"], {"ds": DS}).select("product_id").toPandas()
    changed = products_to_change(pairs, args.change)
    catalog: pd.DataFrame = wh.read(TABLES["catalog"]).toPandas()
    catalog = catalog.assign(attributes=lambda f: f.attributes.map(dict))
    catalog.loc[catalog.product_id.isin(changed), "title"] += " (new edition)"
    wh.replace(spark.createDataFrame(catalog, schema=TABLES["catalog"].schema), TABLES["catalog"], "bench-edit")
    run(spark, cfg, build_pairs)
    rerun, rerun_wall = run(spark, cfg, score)
    expected = int(pairs.product_id.isin(changed).sum())
    if rerun.details["pairs_scored"] != expected:
        raise SystemExit(f"rerun scored {rerun.details['pairs_scored']} pairs, expected the {expected} changed ones")

    results = {
        "pairs": full.rows_out, "changed_pairs": expected, "changed_share": round(expected / full.rows_out, 4),
        "full": {"job_seconds": round(full_wall, 2), "scoring_seconds": full.details["scoring_seconds"],
                 "pairs_scored": full.details["pairs_scored"]},
        "rerun": {"job_seconds": round(rerun_wall, 2), "scoring_seconds": rerun.details["scoring_seconds"],
                  "pairs_scored": rerun.details["pairs_scored"], "pairs_reused": rerun.rows_reused},
    }
    results["rerun_over_full_job"] = round(rerun_wall / full_wall, 3)
    results["rerun_over_full_scoring"] = round(rerun.details["scoring_seconds"] / full.details["scoring_seconds"], 3)
    spark.stop()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
