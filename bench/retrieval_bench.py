"""Catalog retrieval at scale: exact top-k for Q queries over a catalog of N products, on executors, driver flat.

Usage (from the repository root):

    .venv/bin/python bench/retrieval_bench.py [--sizes 100000x1000,1000000x10000] [--dim 384] [--k 50]
                                              [--out bench/retrieval_results.json]

Method
------
Each size (N products x Q queries) runs in a fresh Python process (peak memories start clean) on local[*] with the
embedded default settings. What is measured is `relevance.retrieval.top_k_over_catalog`, the step `retrieve` runs
once every vector exists: the query matrix broadcast, each task's running top-k over its Arrow batches of product
vectors (relevance.topk: float32 selection, float64 rescoring), the window that keeps the global top-k, written to
Spark's `noop` sink so that every row is computed. The vectors are random unit vectors of `--dim` dimensions (the
base MiniLM's 384 by default), seeded: the product vectors are generated on executors from `spark.range` (no table:
reading 1.5 GB of Parquet would add I/O, not retrieval work); their generation alone is timed separately (the same
plan to Spark's noop sink, after a first pass that warms the workers) and reported as `generate_s`; `retrieval_s` is the measured wall time minus it. Embedding the
texts is not part of it: `retrieve` embeds only what `embeddings` lacks, as `score` does (bench/embeddings_bench.py
measures that). Peaks are Linux VmHWM values reset before the step: the driver's Python process (which holds the
query matrix), the JVM (in local mode the driver and the executors' task threads), the executors' Python workers
(which hold the query matrix, one block of scores and the running top-k each).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.subprocesses import result_line, run_measured  # noqa: E402


def product_vectors(spark, products: int, dim: int, partitions: int, seed: int):
    """(product_id, vector) of `products` random unit vectors, generated on executors (seeded per batch)."""
    import numpy as np
    import pyarrow as pa
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    schema = StructType([StructField("product_id", StringType()), StructField("vector", ArrayType(FloatType()))])

    def generate(batches):
        for batch in batches:
            ids = batch.column("id").to_numpy()
            if len(ids) == 0:
                continue
            rng = np.random.default_rng([seed, int(ids[0])])
            x = rng.standard_normal((len(ids), dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim).cast(pa.list_(pa.float32()))
            yield pa.RecordBatch.from_arrays([pa.array([f"P{i:08d}" for i in ids]), vectors],
                                             names=["product_id", "vector"])

    return spark.range(0, products, numPartitions=partitions).mapInArrow(generate, schema)


def run_one(products: int, queries: int, dim: int, k: int, seed: int) -> dict[str, Any]:
    import numpy as np

    from bench.procmem import driver_peak_rss_mb, reset_peaks, spark_process_peaks
    from bench.scale_bench import jvm_heap_pools
    from jobs.core.config import load_config
    from jobs.core.spark import build_spark
    from relevance.retrieval import top_k_over_catalog
    from relevance.settings import RetrievalAudit, settings_from_mapping

    settings = settings_from_mapping(load_config(ROOT / "conf" / "local.yaml"))
    spark = build_spark(settings)
    partitions = spark.sparkContext.defaultParallelism
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((queries, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    vectors = product_vectors(spark, products, dim, partitions, seed)
    block = RetrievalAudit().query_block

    vectors.write.format("noop").mode("overwrite").save()  # warms the workers
    started = time.perf_counter()
    vectors.write.format("noop").mode("overwrite").save()  # the generation alone, warm
    generate_s = time.perf_counter() - started

    pools = jvm_heap_pools(spark)
    for pool in pools:
        pool.resetPeakUsage()
    reset_peaks()
    started = time.perf_counter()
    top = top_k_over_catalog(spark, matrix, vectors, k, block, partitions)
    top.write.format("noop").mode("overwrite").save()
    wall = time.perf_counter() - started
    peaks = spark_process_peaks()
    rows = top.count()  # after the measurement: a second pass, not timed
    spark.stop()
    retrieval_s = max(wall - generate_s, 1e-9)
    return {
        "products": products, "queries": queries, "dim": dim, "k": k, "partitions": partitions,
        "query_block": block, "rows_out": rows, "wall_s": round(wall, 2), "generate_s": round(generate_s, 2),
        "retrieval_s": round(retrieval_s, 2),
        "dot_products_per_s": round(products * queries / retrieval_s),
        "gflops": round(2 * products * queries * dim / retrieval_s / 1e9, 1),
        "driver_python_peak_mb": round(driver_peak_rss_mb(), 1),
        "query_matrix_mb": round(matrix.nbytes / 2**20, 1),
        "jvm_heap_peak_mb": round(sum(pool.getPeakUsage().getUsed() for pool in pools) / 2**20, 1),
        "jvm_peak_rss_mb": round(sum(peaks["jvm"]), 1),
        "executor_python_peak_mb": round(sum(peaks["python_workers"]), 1),
        "executor_python_peaks_mb": peaks["python_workers"],
    }


def kernel_throughput(dim: int, k: int, queries: int = 1024, products: int = 100_000, seed: int = 0) -> dict:
    """relevance.topk alone in this process (one core's share, no Spark): dot products per second."""
    import numpy as np

    from relevance.settings import RetrievalAudit
    from relevance.topk import RunningTopK

    rng = np.random.default_rng(seed)
    q = rng.standard_normal((queries, dim), dtype=np.float32)
    p = rng.standard_normal((products, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    ids = np.array([f"P{i:08d}" for i in range(products)], dtype=object)
    top = RunningTopK(q, k, RetrievalAudit().query_block)
    started = time.perf_counter()
    for at in range(0, products, 10_000):
        top.add(ids[at:at + 10_000], p[at:at + 10_000])
    seconds = time.perf_counter() - started
    return {"queries": queries, "products": products, "seconds": round(seconds, 2),
            "dot_products_per_s": round(queries * products / seconds), "rescored": top.rescored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000x1000,100000x10000,1000000x1000,1000000x10000",
                        help="comma-separated PRODUCTSxQUERIES")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "bench" / "retrieval_results.json"))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # PRODUCTSxQUERIES, in this process
    args = parser.parse_args()
    if args.one:
        products, queries = (int(x) for x in args.one.split("x"))
        print(result_line(run_one(products, queries, args.dim, args.k, args.seed)))
        return
    results: dict[str, Any] = {"kernel": kernel_throughput(args.dim, args.k), "sizes": []}
    print(json.dumps(results["kernel"]), flush=True)
    for size in args.sizes.split(","):
        command = [sys.executable, str(Path(__file__).resolve()), "--one", size, "--dim", str(args.dim),
                   "--k", str(args.k), "--seed", str(args.seed)]
        measured = run_measured(command, f"retrieval {size}")
        print(json.dumps(measured), flush=True)
        results["sizes"].append(measured)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
