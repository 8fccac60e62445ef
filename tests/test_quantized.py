"""The int8 CPU path (udfs.quantized): agreement with fp32, the cached export, and precision errors.

Tolerances, on 400 demo pairs (`make_pairs(400)`), scored by `score_pairs` in fp32 and int8
(measured with torch 2.13, onnxruntime 1.32, 300 to 600 pairs):

* Real base model (MiniLM-L6 + seeded random head, `make_bench_model`): max |Δprob| 1.7e-3 to
  2.2e-3 (mean 5e-4), asserted <= 5e-3; Spearman 0.991 to 0.992, asserted >= 0.98 (Kendall 0.92);
  max |Δlogit| 0.36 to 0.45 of the fp32 logits' standard deviation, asserted <= 0.6. The random
  head leaves every probability in 0.49..0.52 (logit sd 0.02), so Δprob is small in absolute terms:
  the scale-free checks (rank correlation, Δlogit / sd) are the ones that carry over to a trained head.
* Tiny random BERT (`make_tiny_model_version`): max |Δprob| 1.2e-4, asserted <= 5e-4. Its fp32
  logits barely vary between pairs (sd < 1e-4, below int8 resolution), so ranks are not compared.
* int8 scores depend slightly on batch composition (activations are quantized per batch tensor):
  the same pairs in other batches move by up to 2.3e-3 (fp32: 1e-8), asserted <= 5e-3.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bench.models import make_tiny_model_version
from bench.quantized_bench import agreement
from bench.score_inputs import make_bench_model, make_pairs
from udfs import quantized, spark_udf
from udfs.model import LoadedModel, load_model_version
from udfs.scorer import score_pairs
from udfs.spark_udf import ScorerSpec, worker_model

N_PAIRS = 400


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(N_PAIRS)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model_version(tmp_path_factory.mktemp("quantized-tiny"))


@pytest.fixture(scope="module")
def tiny_int8(tiny_dir) -> LoadedModel:
    return load_model_version(tiny_dir, "cpu", "int8")


def scores(model: LoadedModel, pairs, **kwargs) -> np.ndarray:
    return score_pairs(model, pairs.queries, pairs.texts, **kwargs)[0]


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_tiny_model_int8_scores_stay_within_5e_4_of_fp32(tiny_dir, tiny_int8, pairs):
    assert tiny_int8.precision == "int8" and isinstance(tiny_int8.network, quantized.OnnxNetwork)
    fp32, int8 = scores(load_model_version(tiny_dir), pairs), scores(tiny_int8, pairs)
    assert int8.shape == (N_PAIRS,) and np.all((int8 > 0) & (int8 < 1))
    assert agreement(fp32, int8)["max_abs_diff"] <= 5e-4


def test_base_model_int8_scores_and_ranks_agree_with_fp32(tmp_path_factory, pairs):
    model_dir = make_bench_model(tmp_path_factory.mktemp("quantized-base"))
    fp32_model, int8_model = load_model_version(model_dir), load_model_version(model_dir, "cpu", "int8")
    fp32, int8 = scores(fp32_model, pairs), scores(int8_model, pairs)
    measured = agreement(fp32, int8)
    assert measured["max_abs_diff"] <= 5e-3, measured
    assert measured["spearman"] >= 0.98, measured
    assert np.abs(logit(int8) - logit(fp32)).max() <= 0.6 * logit(fp32).std(), measured
    rebatched = scores(int8_model, pairs, batch_tokens=1024)  # other batch sizes and neighbours
    assert np.abs(rebatched - int8).max() <= 5e-3


def test_int8_export_is_cached_and_rebuilt_when_the_weights_change(tiny_dir, tiny_int8, monkeypatch, pairs):
    cached = tiny_dir / quantized.ONNX_DIR / quantized.INT8_FILE
    assert cached.is_file() and not list(cached.parent.glob(".export-*"))  # no leftover temp folders
    exports = []
    real_export = quantized.export_onnx
    def recorded_export(*args):
        exports.append(args)
        return real_export(*args)

    monkeypatch.setattr(quantized, "export_onnx", recorded_export)

    again = load_model_version(tiny_dir, "cpu", "int8")
    assert exports == []
    np.testing.assert_array_equal(scores(again, pairs), scores(tiny_int8, pairs))

    weights = next((tiny_dir / "model").glob("*.safetensors")).stat().st_mtime
    os.utime(cached, (weights - 60, weights - 60))  # a cache older than the weights is rebuilt
    load_model_version(tiny_dir, "cpu", "int8")
    assert len(exports) == 1 and cached.stat().st_mtime > weights
    load_model_version(tiny_dir, "cpu", "int8")
    assert len(exports) == 1


def test_bad_precision_or_int8_off_cpu_is_a_clear_error(tiny_dir):
    with pytest.raises(ValueError, match="unknown precision 'fp64': expected one of fp32, int8, bf16, fp16"):
        load_model_version(tiny_dir, "cpu", "fp64")
    with pytest.raises(ValueError, match="precision 'int8' runs on CPU only"):
        load_model_version(tiny_dir, torch.device("cuda", 0), "int8")
    with pytest.raises(ValueError, match="precision 'int8' runs on CPU only"):
        ScorerSpec(model_dir=str(tiny_dir), device="cuda", precision="int8")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        ScorerSpec(model_dir=str(tiny_dir), precision="int4")


def test_worker_model_is_cached_per_precision(tiny_dir, tiny_int8, monkeypatch):
    monkeypatch.setattr(spark_udf, "_WORKER_MODELS", spark_udf.OrderedDict())
    threads = torch.get_num_threads()  # worker_model sets this process's threads to threads_per_task
    try:
        fp32 = worker_model(ScorerSpec(model_dir=str(tiny_dir), device="cpu"))
        int8 = worker_model(ScorerSpec(model_dir=str(tiny_dir), device="auto", precision="int8"))
        assert (fp32.precision, int8.precision, int8.device.type) == ("fp32", "int8", "cpu")
        assert worker_model(ScorerSpec(model_dir=str(tiny_dir), device="cpu", precision="int8")) is int8
    finally:
        torch.set_num_threads(threads)
