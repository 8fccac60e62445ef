"""The frozen BM25 statistics at catalog scale (issue 34, item 5): their size, the driver's cost to compute them, an
executor's time to load them, and what pruning rare tokens changes in the scores.

Usage (from the repository root):

    .venv/bin/python bench/lexical_stats_bench.py [--sizes 50000,500000,2000000] [--vocabularies scale,zipf]
                                                  [--out bench/lexical_stats_results.json]
    .venv/bin/python bench/lexical_stats_bench.py --loss [--weights 0.05,0.1] [--out bench/lexical_loss_results.json]

Sizes (`--sizes`), each vocabulary × size in a fresh process (clean JVM and driver peaks):

* Product texts: `scale` is generate-scale's catalog (relevance.data.scale.catalog) through the product text of
  build_pairs (relevance.pairs.catalog_texts). Its vocabulary is a few hundred words at any size (40 types, 30
  brands, 10 colours...): no rare tokens, unrealistic for this question, so `zipf` adds texts of 47 tokens each
  (Chorus / Icecat's mean) drawn i.i.d. from a power law over ranks, P(rank) ~ rank^-1.4, written `k<rank>`: at
  Chorus's 19,406 products that gives about as many distinct tokens as Chorus has (29k against 26.5k), and it grows
  faster with the catalog (Heaps exponent about 0.7 against Chorus's 0.56 on its own subsamples): an upper estimate.
  The texts are written to Parquet first, so generating them is not timed.
* `json (before)`: the code of main before this change (every token's document frequency collected as Rows into a
  dict on the driver, `Bm25Stats.to_json` into bm25_stats.json). Spark and its Python workers are warmed up on 2,000
  texts first. `npz full`: udfs / relevance now, nothing pruned
  (only (token, df) as Arrow to the driver, hashed there, bm25_stats.npz). `npz default`: the default settings
  (finetune.lexical_min_df 2, finetune.lexical_max_tokens 1,000,000). Per variant: wall time of the Spark
  computation on the driver, the driver Python's peak RSS (and its growth over the RSS before the step) and the JVM's (VmHWM reset before; in local mode the JVM
  is the driver and the executors' threads), the file's size and the number of tokens.
* Load on an executor: a fresh Python process that has imported udfs.lexical reads the file into Bm25Stats as
  udfs.model.read_lexical_stats does (best of 3, the file in the page cache), and its RSS growth; plus the pickled
  size of the statistics (the embedding path ships them to tasks inside the BM25 UDF's closure).
* Other pruning floors (min_df 3, 5, 10) are derived from the full frequencies in Python: tokens and file size.

Loss (`--loss`): on the demo's judged pairs (relevance.data.demo.generate_demo, seed 7, its whole catalog as the
corpus) and on Chorus / Icecat's (19,406 products, 3,668 human ratings, conf/chorus.yaml's product text), BM25 with
the full statistics against statistics pruned at min_df 2, 3, 5, 10, 20, 50: the largest absolute change of a pair's
BM25, the share of queries whose order changed, and nDCG@10 (the scheme's gain) of BM25 alone and of a final score
= the base model's zero-shot cosine + w × BM25 for each `--weights` w (conf/chorus.yaml tries 0 to 0.1; the demo's
own recipe adds no BM25, lexical_weights (0,), so its version has no statistics to prune: the zero-shot network stands
in for a fine-tuned one). The idf bound: a pruned token in the catalog changes idf by at most idf(1) - idf(min_df - 1).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.subprocesses import result_line, run_measured  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ZIPF_EXPONENT, ZIPF_RANKS, ZIPF_TOKENS_PER_TEXT = 1.4, 10**9, 47
DEFAULT_MIN_DF, DEFAULT_MAX_TOKENS = 2, 1_000_000
DERIVED_MIN_DFS = (2, 3, 5, 10)
LOSS_MIN_DFS = (2, 3, 5, 10, 20, 50)
CHORUS = ROOT.parent / "shared" / "data" / "chorus-icecat"


# ----------------------------------------------------------------------------- texts
def zipf_texts(spark, n: int, seed: int = 7, partitions: int = 8):
    """(product_id, product_text): `n` texts of ZIPF_TOKENS_PER_TEXT tokens `k<rank>`, rank ~ power law (see module)."""
    from pyspark.sql import functions as F

    a = ZIPF_EXPONENT
    scale = 1.0 - ZIPF_RANKS ** (1.0 - a)

    def token(i):
        u = F.shiftrightunsigned(F.xxhash64(F.lit(seed), F.lit("zipf"), F.col("id"), i), 11).cast("double") / float(1 << 53)
        rank = F.floor(F.pow(F.lit(1.0) - u * F.lit(scale), F.lit(1.0 / (1.0 - a)))).cast("long")
        return F.concat(F.lit("k"), rank.cast("string"))

    tokens = F.transform(F.sequence(F.lit(0), F.lit(ZIPF_TOKENS_PER_TEXT - 1)), token)
    return spark.range(n, numPartitions=partitions).select(
        F.format_string("Z%08d", F.col("id")).alias("product_id"), F.array_join(tokens, " ").alias("product_text"))


def scale_texts(spark, n: int, seed: int = 7, partitions: int = 8):
    """(product_id, product_text) of generate-scale's catalog of `n` products, as build_pairs makes them."""
    from relevance.data import scale
    from relevance.pairs import catalog_texts
    from relevance.settings import PairsSettings

    return catalog_texts(scale.catalog(spark, seed, n, "2025-01-07", partitions), PairsSettings())[0]


# ----------------------------------------------------------------------------- the statistics, before and now
def legacy_corpus_stats(texts):
    """relevance.evaluation.baselines.bm25_corpus_stats as main had it before this change: every token's document
    frequency collected as Rows into a dict on the driver."""
    from pyspark.sql import functions as F

    from relevance.evaluation.baselines import _corpus_documents
    from udfs.lexical import Bm25Stats

    docs, n_docs, avgdl = _corpus_documents(texts)
    doc_freq = (docs.select("product_id", F.explode(F.array_distinct("tokens")).alias("term"))
                .groupBy("term").agg(F.count("*").alias("df")).collect())
    return Bm25Stats(n_docs, avgdl, {row.term: int(row.df) for row in doc_freq})


def measured(step) -> tuple[Any, dict[str, Any]]:
    """Run `step()` with peaks reset; its result and {seconds, driver_python_peak_mb, jvm_peak_mb}."""
    from bench.procmem import driver_peak_rss_mb, reset_peaks, spark_process_peaks

    reset_peaks()
    before = driver_peak_rss_mb()  # just reset: the current RSS
    started = time.perf_counter()
    out = step()
    seconds = time.perf_counter() - started
    peaks = spark_process_peaks()
    return out, {"seconds": round(seconds, 2), "driver_python_peak_mb": round(driver_peak_rss_mb(), 1),
                 "driver_python_growth_mb": round(driver_peak_rss_mb() - before, 1),
                 "jvm_peak_mb": round(sum(peaks["jvm"]), 1)}


LOAD_SNIPPET = r"""
import json, sys, time, resource
from pathlib import Path
from udfs.lexical import Bm25Stats
def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
path = Path(sys.argv[1])
before = rss_mb()
times = []
for _ in range(3):
    started = time.perf_counter()
    stats = Bm25Stats.from_npz(path) if path.suffix == ".npz" else Bm25Stats.from_json(path.read_text())
    times.append(time.perf_counter() - started)
    if _ == 0:
        grown = rss_mb() - before
        kept = stats
print(json.dumps({"load_seconds": min(times), "rss_growth_mb": grown, "tokens": len(kept.doc_freq)}))
"""


def executor_load(path: Path) -> dict[str, Any]:
    """Load the file as an executor does, in a fresh process (see the module docstring)."""
    done = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, str(path)], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {"load_seconds": round(out["load_seconds"], 4), "load_rss_growth_mb": round(out["rss_growth_mb"], 1)}


def pickled(stats) -> dict[str, Any]:
    started = time.perf_counter()
    blob = pickle.dumps(stats)
    dumped = time.perf_counter() - started
    started = time.perf_counter()
    pickle.loads(blob)
    return {"pickle_mb": round(len(blob) / 2**20, 2), "pickle_seconds": round(dumped, 3),
            "unpickle_seconds": round(time.perf_counter() - started, 3)}


def file_row(name: str, path: Path, stats, timing: dict[str, Any] | None) -> dict[str, Any]:
    return {"variant": name, "file": path.name, "tokens": len(stats.doc_freq), "min_df": stats.min_df,
            "file_mb": round(path.stat().st_size / 2**20, 2), **(timing or {}), **executor_load(path), **pickled(stats)}


def run_one(vocabulary: str, n: int, work: Path) -> dict[str, Any]:
    """One vocabulary at one size, in this (fresh) process."""
    from jobs.core.config import load_config, set_path
    from jobs.core.spark import build_spark
    from relevance.evaluation.baselines import bm25_corpus_stats
    from relevance.settings import settings_from_mapping
    from udfs.lexical import Bm25Stats

    cfg = load_config(ROOT / "conf" / "local.yaml")
    set_path(cfg, "warehouse.root", str(work / "warehouse"))
    settings = settings_from_mapping(cfg)
    spark = build_spark(settings)
    texts_dir = str(work / f"texts-{vocabulary}-{n}")
    make = zipf_texts if vocabulary == "zipf" else scale_texts
    started = time.perf_counter()
    make(spark, n).write.mode("overwrite").parquet(texts_dir)
    generated = time.perf_counter() - started
    texts = spark.read.parquet(texts_dir)
    legacy_corpus_stats(texts.limit(2000))  # warm Spark and the Python workers up, so the first variant is not slower
    bm25_corpus_stats(texts.limit(2000), DEFAULT_MIN_DF, DEFAULT_MAX_TOKENS)

    rows = []
    legacy, timing = measured(lambda: legacy_corpus_stats(texts))
    path = work / f"{vocabulary}-{n}-bm25_stats.json"
    written, write_timing = measured(lambda: path.write_text(legacy.to_json()))
    timing["write_seconds"] = write_timing["seconds"]
    rows.append(file_row("json (before)", path, legacy, timing))

    for name, min_df, max_tokens in (("npz full", 1, None), ("npz default", DEFAULT_MIN_DF, DEFAULT_MAX_TOKENS)):
        stats, timing = measured(lambda: bm25_corpus_stats(texts, min_df, max_tokens))  # noqa: B023
        path = work / f"{vocabulary}-{n}-{min_df}-bm25_stats.npz"
        _, write_timing = measured(lambda: path.write_bytes(stats.to_npz()))  # noqa: B023
        timing["write_seconds"] = write_timing["seconds"]
        rows.append(file_row(name, path, stats, timing))
        if min_df == 1:  # the same frequencies as the JSON's, hashed
            assert stats.doc_freq == legacy.hashed().doc_freq, "npz full differs from the JSON's frequencies"
            assert (stats.documents, stats.mean_length) == (legacy.documents, legacy.mean_length)

    for min_df in DERIVED_MIN_DFS:  # from the full frequencies, in Python
        pruned = legacy.pruned(min_df)
        path = work / f"{vocabulary}-{n}-derived-{min_df}-bm25_stats.npz"
        path.write_bytes(pruned.to_npz())
        rows.append({"variant": f"npz min_df {min_df}", "tokens": len(pruned.doc_freq), "min_df": min_df,
                     "file_mb": round(path.stat().st_size / 2**20, 2), **executor_load(path)})

    frequencies = Counter(legacy.doc_freq.values())
    spark.stop()
    return {"vocabulary": vocabulary, "products": n, "generate_seconds": round(generated, 1),
            "documents": legacy.documents, "mean_length": round(legacy.mean_length, 2),
            "distinct_tokens": len(legacy.doc_freq), "df1_share": round(frequencies[1] / max(len(legacy.doc_freq), 1), 3),
            "variants": rows, "roundtrip_ok": Bm25Stats.from_npz(legacy.to_npz()).doc_freq == legacy.hashed().doc_freq}


# ----------------------------------------------------------------------------- loss of pruning
def chorus_frame() -> tuple[dict[str, str], Any, Any]:
    """Chorus / Icecat: {product_id: product text} (conf/chorus.yaml's text), the judged pairs and the scheme."""
    import pandas as pd

    from jobs.core.config import load_settings
    from udfs.text import build_product_text, normalize_text

    settings = load_settings(ROOT / "conf" / "chorus.yaml")
    pairs = settings.pairs
    texts = {}
    for part in sorted((CHORUS / "products").glob("*.json")):
        for p in json.loads(part.read_text()):
            attributes = {key.split("_", 2)[2].replace("_", " "): str(value) for key, value in p.items()
                          if key.startswith(("attr_t_", "attr_n_", "attr_b_"))}
            texts[str(p["id"])] = build_product_text(p.get("title"), p.get("supplier"), None, attributes,
                                                     pairs.product_text_max_words, p.get("short_description"),
                                                     pairs.product_text_description_words)
    rated = pd.read_csv(CHORUS / "judgments" / "Broad_Query_Set_rated.csv", dtype={"docid": str})
    frame = pd.DataFrame({"query_norm": rated["query"].map(normalize_text), "product_id": rated["docid"],
                          "grade": rated["rating"].astype(int)})
    frame = frame[frame.product_id.isin(texts)].reset_index(drop=True)
    return texts, frame, settings.labels.active


def demo_frame() -> tuple[dict[str, str], Any, Any]:
    """The demo (seed 7, `make run`'s): {product_id: product text} of its catalog, its judged pairs, the scheme."""
    from jobs.core.config import load_settings
    from relevance.data.demo import generate_demo
    from udfs.text import build_product_text, normalize_text

    settings = load_settings(ROOT / "conf" / "local.yaml")
    data = generate_demo(seed=settings.generate.seed)
    pairs = settings.pairs
    texts = {str(r.product_id): build_product_text(r.title, r.brand, r.category, r.attributes,
                                                   pairs.product_text_max_words, r.description,
                                                   pairs.product_text_description_words)
             for r in data["catalog"].itertuples()}
    judged = data["judgments"]
    frame = judged.assign(query_norm=judged["query"].map(normalize_text))[["query_norm", "product_id", "grade"]]
    frame = frame[frame.product_id.isin(texts)].drop_duplicates(["query_norm", "product_id"]).reset_index(drop=True)
    return texts, frame, settings.labels.active


def loss_on(name: str, texts: dict[str, str], frame, scheme, weights: list[float]) -> dict[str, Any]:
    import numpy as np

    from relevance.evaluation.baselines import zero_shot_scores
    from relevance.training.evaluate import ranking_quality
    from udfs.lexical import Bm25Stats, bm25_pair_scores, bm25_tokens
    from udfs.model import OFFLINE_BASE_MODEL, resolve_base_model

    tokens = bm25_tokens(list(texts.values()))
    doc_freq = Counter(t for doc in tokens for t in set(doc))
    full = Bm25Stats(len(tokens), float(np.mean([len(d) for d in tokens])), dict(doc_freq))
    queries, product_texts = frame.query_norm.tolist(), [texts[p] for p in frame.product_id]
    bm25_full = bm25_pair_scores(full, queries, product_texts)
    started = time.perf_counter()
    cosine = zero_shot_scores(resolve_base_model(OFFLINE_BASE_MODEL), queries, product_texts)
    zero_shot_seconds = time.perf_counter() - started
    k, relevant, gain = 10, scheme.relevant_min_grade, scheme.gain

    def order_changed(a, b) -> float:
        changed = [not np.array_equal(np.argsort(-a[idx], kind="stable"), np.argsort(-b[idx], kind="stable"))
                   for idx in frame.groupby("query_norm").indices.values()]
        return float(np.mean(changed))

    rows = []
    for min_df in (1, *LOSS_MIN_DFS):
        stats = full.pruned(min_df)
        bm25 = bm25_pair_scores(stats.hashed(), queries, product_texts)
        row: dict[str, Any] = {
            "min_df": min_df, "tokens": len(stats.doc_freq), "max_idf_error": round(stats.max_idf_error(), 4),
            "max_abs_bm25_change": float(np.abs(bm25 - bm25_full).max()),
            "pairs_changed": int((bm25 != bm25_full).sum()),
            "queries_reordered_bm25": round(order_changed(bm25, bm25_full), 4),
            "ndcg@10_bm25": round(ranking_quality(frame, bm25, k, relevant, gain), 4)}
        for w in weights:
            final, final_full = cosine + w * bm25, cosine + w * bm25_full
            row[f"ndcg@10_zero_shot+{w:g}bm25"] = round(ranking_quality(frame, final, k, relevant, gain), 4)
            row[f"queries_reordered_zero_shot+{w:g}bm25"] = round(order_changed(final, final_full), 4)
        rows.append(row)
    return {"data": name, "products": len(texts), "judged_pairs": len(frame), "queries": int(frame.query_norm.nunique()),
            "distinct_tokens": len(doc_freq), "df1_share": round(sum(v == 1 for v in doc_freq.values()) / len(doc_freq), 3),
            "ndcg@10_zero_shot": round(ranking_quality(frame, cosine, k, relevant, gain), 4),
            "zero_shot_seconds": round(zero_shot_seconds, 1), "by_min_df": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50000,500000,2000000")
    parser.add_argument("--vocabularies", default="scale,zipf")
    parser.add_argument("--loss", action="store_true", help="measure the loss of pruning instead of the sizes")
    parser.add_argument("--weights", default="0.05,0.1", help="--loss: BM25 weights of the final score")
    parser.add_argument("--out", default=None)
    parser.add_argument("--one", nargs=3, metavar=("VOCABULARY", "N", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(result_line(run_one(args.one[0], int(args.one[1]), Path(args.one[2]))), flush=True)
        return
    if args.loss:
        weights = [float(w) for w in args.weights.split(",") if w]
        results: dict[str, Any] = {"weights": weights, "loss": [loss_on("demo", *demo_frame(), weights)]}
        if CHORUS.is_dir():
            results["loss"].append(loss_on("chorus", *chorus_frame(), weights))
        out = Path(args.out or ROOT / "bench" / "lexical_loss_results.json")
    else:
        results = {"sizes": []}
        with tempfile.TemporaryDirectory(prefix="lexical-bench-") as work:
            for vocabulary in args.vocabularies.split(","):
                for n in [int(s) for s in args.sizes.split(",")]:
                    one = run_measured([sys.executable, __file__, "--one", vocabulary, str(n), work],
                                       f"{vocabulary} {n}")
                    print(json.dumps(one), flush=True)
                    results["sizes"].append(one)
        out = Path(args.out or ROOT / "bench" / "lexical_stats_results.json")
    results["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["cpus"] = os.cpu_count()
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
