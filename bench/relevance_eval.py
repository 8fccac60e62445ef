"""Does the fine-tuned model beat BM25 and the zero-shot base on held-out judged queries? Over several query splits.

Usage (from the repository root), on a warehouse that already holds `catalog` and `judgments` (imported with the
project's own commands, e.g. `import-catalog` + `import-judgments` for Chorus / Icecat):

    .venv/bin/python bench/relevance_eval.py --conf conf/chorus.yaml --splits 1,2,3,4,5 --out bench/chorus_eval.json

For each split seed s, with the project's own CLI: `finetune` with `finetune.seed=s` (the seed picks the query split
and the training order) saving version `<prefix>-s` unpromoted, then `nightly` for a ds of its own with
`model.version=<prefix>-s`; the audit scores the held-out test queries of that split with the model, BM25 and the
zero-shot base and writes per-query nDCG rows to `relevance_audit`. This script then reads those rows (with the
deltalake package) and reports per split and overall: mean nDCG@10 per system, the mean per-query gain of the model
over zero-shot and over BM25 with a paired bootstrap CI (queries resampled), and the model's and zero-shot's ROC-AUC
and average precision. Without a query log the nightly is an offline evaluation of the judged candidates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(ROOT))

from bench.subprocesses import jobs_cli as cli  # noqa: E402
from jobs.core.config import load_settings  # noqa: E402
from relevance.evaluation.intervals import bootstrap_mean_ci  # noqa: E402
from udfs.model import read_card  # noqa: E402

SYSTEMS = ("model", "zero_shot", "bm25")


def audit_rows(root: str, ds: str) -> pd.DataFrame:
    from deltalake import DeltaTable

    return DeltaTable(f"{root}/relevance_audit").to_pandas(filters=[("ds", "=", ds)])


def split_report(rows: pd.DataFrame, k: int, n_boot: int) -> dict:
    """Per-system mean nDCG@k over the held-out queries, paired gains with bootstrap CIs, AUC and AP."""
    per_query = rows[rows.segment.str.startswith("query=") & (rows.metric == f"ndcg@{k}")]
    table = per_query.pivot_table(index="segment", columns="system", values="value").dropna()
    report: dict = {"queries": int(len(table))}
    for system in SYSTEMS:
        report[f"ndcg@{k}_{system}"] = float(table[system].mean())
    for rival in ("zero_shot", "bm25"):
        gains = (table["model"] - table[rival]).to_numpy()
        low, high = bootstrap_mean_ci(gains, n_boot, 0.95, seed=0)
        report[f"gain_vs_{rival}"] = {"mean": float(gains.mean()), "ci_low": low, "ci_high": high,
                                      "better": int((gains > 1e-12).sum()), "worse": int((gains < -1e-12).sum())}
    overall = rows[(rows.segment == "all") & rows.metric.isin(["roc_auc", "average_precision"]) & rows.k.isna()]
    for row in overall.itertuples():
        report[f"{row.metric}_{row.system}"] = float(row.value)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="conf/chorus.yaml")
    parser.add_argument("--splits", default="1,2,3,4,5", help="split seeds (finetune.seed)")
    parser.add_argument("--prefix", default="eval", help="model versions are named <prefix>-<seed>")
    parser.add_argument("--first-ds", default="2026-12-01", help="split i is audited under this ds + i days")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--set", action="append", default=[], help="extra config overrides for every job")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    settings = load_settings(args.conf, args.set)
    root = settings.warehouse.root
    first = dt.date.fromisoformat(args.first_ds)
    splits, all_rows = {}, []
    for i, seed in enumerate(int(s) for s in args.splits.split(",")):
        version, ds = f"{args.prefix}-{seed}", (first + dt.timedelta(days=i)).isoformat()
        card_path = Path(settings.model.models_root) / version / "model_card.json"
        train_s = None
        if not card_path.is_file():
            train_s = cli(args.conf, "finetune", sets=[*args.set, f"finetune.seed={seed}", f"finetune.version={version}",
                                                       "finetune.promote=false"])
        nightly_s = cli(args.conf, "nightly", "--ds", ds, sets=[*args.set, f"model.version={version}"])
        rows = audit_rows(root, ds)
        card = read_card(card_path.parent)
        report = split_report(rows, args.k, args.bootstrap)
        report.update({"version": version, "ds": ds, "finetune_wall_s": train_s, "nightly_wall_s": round(nightly_s, 1),
                       "train_seconds": card.training["train_seconds"], "epochs_run": len(card.training["epochs"]),
                       "catalog_seconds": card.training.get("catalog", {}).get("seconds", 0.0),
                       "refit_seconds": card.training.get("refit", {}).get("train_seconds", 0.0),
                       "kind": card.kind, "lexical_weight": card.lexical_weight,
                       "promotion_gate": card.promotion.get("decision")})
        splits[seed] = report
        per_query = rows[rows.segment.str.startswith("query=") & (rows.metric == f"ndcg@{args.k}")]
        all_rows.append(per_query.assign(split=seed))
        print(json.dumps({seed: report}, indent=1, default=str), flush=True)
    pooled = pd.concat(all_rows).pivot_table(index=["split", "segment"], columns="system", values="value").dropna()
    summary: dict = {f"mean_ndcg@{args.k}_{s}": float(np.mean([r[f"ndcg@{args.k}_{s}"] for r in splits.values()]))
                     for s in SYSTEMS}
    for rival in ("zero_shot", "bm25"):
        gains = (pooled["model"] - pooled[rival]).to_numpy()
        low, high = bootstrap_mean_ci(gains, args.bootstrap, 0.95, seed=0)
        summary[f"gain_vs_{rival}"] = {"mean_of_split_means": float(np.mean([r[f"gain_vs_{rival}"]["mean"] for r in splits.values()])),
                                       "pooled_query_mean": float(gains.mean()), "ci_low": low, "ci_high": high,
                                       "queries": int(len(gains))}
    for metric in ("roc_auc", "average_precision"):
        for system in ("model", "zero_shot", "bm25"):
            values = [v for r in splits.values() if (v := r.get(f"{metric}_{system}")) is not None]
            if values:
                summary[f"mean_{metric}_{system}"] = float(np.mean(values))
    result = {"conf": args.conf, "splits": splits, "summary": summary, "measured_at": dt.datetime.now().isoformat()}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
