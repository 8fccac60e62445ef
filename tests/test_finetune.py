"""Fine-tuning: the split by query, the training batches, bf16 training and distributed training."""

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from relevance.settings import FinetuneSettings, LabelScheme
from relevance.training.batches import shuffled_length_batches
from relevance.training.split import split_of

SCHEME = LabelScheme(grades={"irrelevant": 0, "partial": 1, "exact": 2}, relevant_min_grade=1)  # top grade 2, linear


def without_time_limit(settings: FinetuneSettings) -> FinetuneSettings:
    """`settings` with `max_train_seconds` None: no wall-clock limit."""
    unlimited: dict[str, Any] = {"max_train_seconds": None}
    return replace(settings, **unlimited)


def test_length_batches_cover_every_row_once_and_pad_less_than_random_batches():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 96, size=1000).tolist()
    batches = shuffled_length_batches(lengths, 32, torch.Generator().manual_seed(1), pool_batches=10)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert max(len(b) for b in batches) == 32 and len(batches) == 32  # ceil(1000 / 32)

    def padded(bs):
        return sum(len(b) * max(lengths[i] for i in b) for b in bs)

    random_batches = [list(range(i, min(i + 32, 1000))) for i in range(0, 1000, 32)]
    assert padded(batches) < 0.8 * padded(random_batches)
    again = shuffled_length_batches(lengths, 32, torch.Generator().manual_seed(1), pool_batches=10)
    assert again == batches  # seeded: the same epoch order


def test_split_by_query_is_deterministic_and_near_the_fractions():
    queries = [f"query {i}" for i in range(4000)]
    parts = [split_of(q, 13, 0.15, 0.35) for q in queries]
    assert parts == [split_of(q, 13, 0.15, 0.35) for q in queries]
    shares = {p: parts.count(p) / len(parts) for p in ("train", "val", "test")}
    assert abs(shares["test"] - 0.35) < 0.03 and abs(shares["val"] - 0.15) < 0.03


def test_distributed_training_with_torch_distributor_in_local_mode(spark, tiny_model_root):
    """Two TorchDistributor processes (gloo) train the tiny model on their shares of each epoch; the driver
    gets the best weights back, changed from the checkpoint it started from."""
    import pandas as pd

    from relevance.training.distributed import train_distributed
    from udfs.model import WEIGHTS_DIR, load_network, resolve_model_dir

    rng = np.random.default_rng(0)
    queries = [f"{color} {kind}" for color in ("red", "blue", "green", "black") for kind in ("sofa", "tee", "lamp", "mug")]
    rows = [(q, f"{c} {k} product", int(q.split()[1] == k) * (1 + int(q.split()[0] == c)))
            for q in queries for c in ("red", "blue") for k in ("sofa", "tee", "lamp", "mug")]
    frame = pd.DataFrame(rows, columns=["query_norm", "product_text", "grade"]).assign(
        product_id=lambda f: [f"p{i}" for i in range(len(f))])
    val_queries = set(rng.choice(queries, 4, replace=False))
    train, val = frame[~frame.query_norm.isin(val_queries)], frame[frame.query_norm.isin(val_queries)]
    base = resolve_model_dir(tiny_model_root, "tiny-test") / WEIGHTS_DIR
    settings = FinetuneSettings(epochs=2, batch_size=8, max_length=32, learning_rate=1e-3)  # a bi-encoder
    catalog = [[(kind, f"{color} {kind} product") for kind in ("sofa", "tee", "lamp", "mug")] for color in ("red", "blue")]
    _, network, history, stage = train_distributed(str(base), train.reset_index(drop=True), val.reset_index(drop=True),
                                                   settings, SCHEME, processes=2, catalog_batches=catalog)
    assert history.processes == 2 and 1 <= len(history.epochs) <= 2
    assert stage.steps == 2  # each process ran the catalog stage before the judgments
    assert all(np.isfinite(e.val_ndcg) for e in history.epochs)
    _, start = load_network(str(base), "cpu", "bi_encoder")
    changed = [not torch.equal(a, b) for a, b in zip(network.state_dict().values(), start.state_dict().values())]
    assert any(changed) and not network.training


def test_training_autocast_follows_the_setting_and_the_cpu_flags(tmp_path):
    from relevance.training.loop import cpu_has_native_bf16, training_autocast

    with_bf16, without = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("flags\t\t: fpu sse2 avx2 avx512f\n")
    assert cpu_has_native_bf16(str(with_bf16)) and not cpu_has_native_bf16(str(without))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))
    assert training_autocast("bf16", str(without)) == torch.bfloat16 and training_autocast("fp32", str(with_bf16)) is None
    assert training_autocast("auto", str(with_bf16)) == torch.bfloat16 and training_autocast("auto", str(without)) is None
    with pytest.raises(ValueError, match="train_precision"):
        training_autocast("fp16")


def _toy_pairs():
    import pandas as pd

    rows = [(f"{c} {k}", f"{c2} {k2} product", int(k == k2) * (1 + int(c == c2)))
            for c in ("red", "blue") for k in ("sofa", "lamp", "mug") for c2 in ("red", "blue") for k2 in ("sofa", "lamp", "mug")]
    return pd.DataFrame(rows, columns=["query_norm", "product_text", "grade"]).assign(
        product_id=lambda f: [f"p{i}" for i in range(len(f))])


@pytest.mark.parametrize("kind", ["cross_encoder", "bi_encoder"])
def test_bf16_training_with_frozen_word_embeddings_learns_the_rest(tiny_model_root, kind):
    """bf16 autocast training runs on CPU for both kinds, keeps the word embeddings as they were, changes the other
    weights, and returns an fp32 network in eval mode."""
    from relevance.training.loop import seed_everything, train_network
    from udfs.model import WEIGHTS_DIR, load_network, resolve_model_dir

    frame = _toy_pairs()
    base = resolve_model_dir(tiny_model_root, "tiny-test") / WEIGHTS_DIR
    seed_everything(0)
    tokenizer, network = load_network(str(base), "cpu", kind)
    _, start = load_network(str(base), "cpu", kind)
    settings = FinetuneSettings(kind=kind, epochs=1, batch_size=8, max_length=32, learning_rate=1e-3, train_precision="bf16")
    network, history = train_network(tokenizer, network, frame, frame, settings, SCHEME, log=lambda _: None)
    assert history.autocast == "bfloat16" and len(history.epochs) == 1 and not network.training
    words, start_words = network.get_input_embeddings(), start.get_input_embeddings()
    assert isinstance(words, torch.nn.Embedding) and isinstance(start_words, torch.nn.Embedding)
    assert torch.equal(words.weight, start_words.weight)
    changed = [name for (name, p), q in zip(network.named_parameters(), start.parameters()) if not torch.equal(p, q)]
    assert changed and all("word_embeddings" not in name for name in changed)
    assert all(p.dtype == torch.float32 for p in network.parameters())


def test_training_is_the_same_for_the_same_seed_and_passes_no_time_limit_quietly(tiny_model_root, monkeypatch):
    """The same seed, data and settings give bit-identical weights (the schedule never depends on time), whether
    progress is shown or not and with or without a time limit; a run past max_train_seconds raises TrainingTimeLimit
    instead of training less, and with max_train_seconds None there is no limit."""
    from relevance.training import progress
    from relevance.training.loop import TrainingTimeLimit, seed_everything, train_network
    from udfs.model import WEIGHTS_DIR, load_network, resolve_model_dir

    frame = _toy_pairs()
    base = resolve_model_dir(tiny_model_root, "tiny-test") / WEIGHTS_DIR
    settings = FinetuneSettings(epochs=2, batch_size=8, max_length=32, learning_rate=1e-3, train_precision="fp32", patience=5)

    def trained(seed: int, tuning: FinetuneSettings = settings, log=lambda _: None) -> dict:
        seed_everything(seed)
        tokenizer, network = load_network(str(base), "cpu", tuning.kind)
        return train_network(tokenizer, network, frame, frame, tuning, SCHEME, log=log)[0].state_dict()

    first, again, other = trained(0), trained(0), trained(1)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)  # the seed matters
    lines: list[str] = []
    monkeypatch.setattr(progress, "PLAIN_EVERY_SECONDS", 0.0)  # a progress line after every step
    shown = trained(0, without_time_limit(settings), lines.append)
    assert any(line.startswith("  epoch 1/2: step 1/") and " left" in line for line in lines)
    assert all(torch.equal(first[name], shown[name]) for name in first)  # progress and no limit: the same model
    tokenizer, network = load_network(str(base), "cpu", settings.kind)
    with pytest.raises(TrainingTimeLimit, match="max_train_seconds=0 in epoch 1 of 2: stopped, no model version saved"):
        train_network(tokenizer, network, frame, frame, replace(settings, max_train_seconds=0.0), SCHEME,
                      log=lambda _: None)


def test_refit_trains_on_train_and_validation_keeps_the_last_epoch_and_applies_the_chosen_mix(tiny_model_root):
    """`finetune.refit`: a fresh start trained on train + validation pairs for every epoch (no early stopping), mixed
    with the base at the share given; the same inputs give the same weights."""
    from relevance.training.history import CatalogPlan, RefitHistory
    from relevance.training.loop import seed_everything
    from relevance.training.pipeline import TrainingPlan, refit_with_validation
    from relevance.training.sources import SourcesRecord
    from relevance.training.weights import mix_weights
    from udfs.model import BI_ENCODER, WEIGHTS_DIR, load_network, resolve_model_dir

    frame = _toy_pairs()
    train, val = frame[frame.query_norm.str.startswith("red")], frame[frame.query_norm.str.startswith("blue")]
    base = resolve_model_dir(tiny_model_root, "tiny-test") / WEIGHTS_DIR
    settings = FinetuneSettings(epochs=2, batch_size=8, max_length=32, learning_rate=1e-3, train_precision="fp32",
                                patience=1, catalog_steps=0)
    def refit(parts: dict, share: float) -> tuple[dict, RefitHistory]:
        seed_everything(0)
        plan = TrainingPlan(parts, parts["train"], SourcesRecord("judgments", len(parts["train"]), 2), "-", [],
                            CatalogPlan())
        network, history = refit_with_validation(base, plan, settings, SCHEME, share, log=lambda _: None)
        return network.state_dict(), history

    whole, history = refit({"train": train, "val": val}, 1.0)
    assert history.pairs == len(frame) and [e.epoch for e in history.epochs] == [1, 2] and history.share == 1.0
    assert history.to_dict()["epochs"][0]["val_ndcg@10"] == history.epochs[0].val_ndcg  # the card's keys
    again, _ = refit({"train": train, "val": val}, 1.0)
    assert all(torch.equal(whole[name], again[name]) for name in whole)
    half, _ = refit({"train": train, "val": val}, 0.5)
    _, base_network = load_network(str(base), "cpu", BI_ENCODER)
    expected = mix_weights(base_network.state_dict(), whole, 0.5)
    assert all(torch.allclose(half[name], expected[name]) for name in half)


def test_cosent_loss_is_small_when_cosines_follow_the_grades_and_large_otherwise():
    from relevance.training.loop import cosent_loss

    grades = torch.tensor([2.0, 1.0, 0.0])
    ordered, reversed_ = torch.tensor([0.9, 0.5, 0.1]), torch.tensor([0.1, 0.5, 0.9])
    assert cosent_loss(ordered, grades, 20.0) < 0.01 < 5.0 < cosent_loss(reversed_, grades, 20.0)
    # one misordered pair (i above j in grade, cos_j - cos_i = 0.2): log(1 + exp(20 * 0.2))
    assert cosent_loss(torch.tensor([0.3, 0.5]), torch.tensor([1.0, 0.0]), 20.0).item() == pytest.approx(
        math.log1p(math.exp(4.0)), rel=1e-6)
    assert cosent_loss(torch.tensor([0.3, 0.5]), torch.tensor([1.0, 1.0]), 20.0).item() == 0.0  # no ordered pair


def test_promotion_needs_a_strict_win_on_ndcg_and_average_precision_over_every_rival():
    from relevance.training.history import GateScores as G
    from relevance.training.promotion import promotion_decision

    base = {"the zero-shot base": G(0.75, 0.70)}
    assert promotion_decision(G(0.80, 0.75), base, margin=0.01)[0]
    assert not promotion_decision(G(0.80, 0.75), {"the zero-shot base": G(0.795, 0.70)}, margin=0.01)[0]
    promoted, why = promotion_decision(G(0.80, 0.69), base, margin=0.0)  # better nDCG, worse AP: not promoted
    assert not promoted and "AP 0.6900 vs the zero-shot base's 0.7000" in why and "nDCG" not in why
    assert not promotion_decision(G(0.75, 0.70), base, margin=0.0)[0]  # a tie is no win
    assert not promotion_decision(G(1.0, 1.0), {"the zero-shot base": G(1.0, 1.0)}, margin=0.0)[0]
    both = {**base, "the promoted version": G(0.81, 0.72)}
    promoted, why = promotion_decision(G(0.80, 0.75), both, margin=0.0)
    assert not promoted and "nDCG 0.8000 vs the promoted version's 0.8100" in why and "zero-shot" not in why
    assert promotion_decision(G(0.80, 0.75), both, margin=0.0, force=True) == (
        True, "forced (--force-promote): does not beat them by more than 0: nDCG 0.8000 vs the promoted version's 0.8100")
    refused = promotion_decision(G(0.9, 0.9), base, 0.0, refusal="every validation pair has grade 2: there is nothing to rank")
    assert refused == (False, "not promoted: every validation pair has grade 2: there is nothing to rank")


def test_validation_too_small_or_with_one_grade_refuses_with_a_reason():
    import pandas as pd

    from relevance.settings import LabelScheme
    from relevance.training.promotion import validation_refusal

    scheme = LabelScheme({"E": 3, "S": 2, "C": 1, "I": 0}, relevant_min_grade=2)
    frame = pd.DataFrame({"query_norm": [f"q{i // 2}" for i in range(40)], "grade": [3, 0] * 20})
    assert validation_refusal(frame, scheme, 10) is None
    assert "20 queries, fewer than finetune.min_validation_queries=30" in str(validation_refusal(frame, scheme, 30))
    assert validation_refusal(frame.assign(grade=3), scheme, 10) == "every validation pair has grade 3: there is nothing to rank"
    assert "every validation pair is irrelevant" in str(validation_refusal(frame.assign(grade=[1, 0] * 20), scheme, 10))


def test_learning_rate_warms_up_then_decays_to_zero():
    from relevance.training.batches import linear_warmup_decay

    factors = [linear_warmup_decay(step, 10, 100) for step in range(101)]
    assert factors[0] == 0.1 and factors[9] == 1.0 and factors[100] == 0.0
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))  # no increase after warm-up


def test_weight_mix_interpolates_float_weights_and_keeps_integer_buffers():
    from relevance.training.weights import mix_weights

    base = {"w": torch.tensor([0.0, 2.0]), "ids": torch.tensor([0, 1])}
    tuned = {"w": torch.tensor([1.0, 4.0]), "ids": torch.tensor([0, 1])}
    assert torch.equal(mix_weights(base, tuned, 0.0)["w"], base["w"])
    assert torch.equal(mix_weights(base, tuned, 1.0)["w"], tuned["w"])
    assert torch.equal(mix_weights(base, tuned, 0.5)["w"], torch.tensor([0.5, 3.0]))
    assert mix_weights(base, tuned, 0.5)["ids"].dtype == torch.int64


def test_query_batches_keep_each_querys_products_together_and_cover_every_row_once():
    from relevance.training.batches import query_batches

    queries = [f"q{i % 7}" for i in range(100)]  # 7 queries of 14 or 15 rows
    batches = query_batches(queries, 16, torch.Generator().manual_seed(3))
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert all(len(b) == 16 for b in batches[:-1]) and len(batches) == 7
    order = [queries[i] for b in batches for i in b]
    runs = [q for n, q in enumerate(order) if n == 0 or order[n - 1] != q]
    assert sorted(runs) == sorted(set(queries))  # each query's rows form one run: batches split queries only at their ends
    assert batches == query_batches(queries, 16, torch.Generator().manual_seed(3))  # the seed decides


def test_training_examples_are_bounded_by_whole_queries(spark):
    """More usable judgments than finetune.max_examples: whole queries are kept, chosen by seed, up to the bound."""
    from relevance.training.split import training_examples

    rows = [(f"q{q}", f"p{q}-{i}", f"text {i}", i % 3, None) for q in range(40) for i in range(1 + q % 7)]
    classified = spark.createDataFrame(rows, "query_norm string, product_id string, product_text string, grade long, "
                                             "reason string")
    everything, available = training_examples(classified, 10_000, seed=1)
    assert available == len(everything) == len(rows)
    kept, available = training_examples(classified, 50, seed=1)
    assert available == len(rows) and 40 < len(kept) <= 50  # queries hold at most 7 pairs, so the cut is near 50
    sizes = kept.groupby("query_norm").size()
    assert all(sizes[q] == 1 + int(q[1:]) % 7 for q in sizes.index)  # every kept query is whole
    assert training_examples(classified, 50, seed=1)[0].equals(kept)
    assert set(training_examples(classified, 50, seed=2)[0].query_norm) != set(kept.query_norm)


def test_finetune_settings_come_from_the_config_and_its_overrides_typed():
    """The trainer reads ctx.settings.finetune: conf/local.yaml's values with --set overrides, typed as the trainer
    uses them (a YAML list becomes a tuple of floats, 1e-4 a float); a value the trainer cannot use is refused."""
    from jobs.core.config import load_settings
    from relevance.settings import ConfigError
    from tests.conftest import ROOT

    conf = ROOT / "conf" / "local.yaml"
    tuning = load_settings(conf, ["finetune.kind=cross_encoder", "finetune.epochs=1", "finetune.learning_rate=1e-4",
                                  "finetune.weight_mixes=[1]", "finetune.version=ft-1", "finetune.processes=2"]).finetune
    assert tuning == replace(load_settings(conf).finetune, kind="cross_encoder", epochs=1, learning_rate=1e-4,
                             weight_mixes=(1.0,), version="ft-1", processes=2)
    assert isinstance(tuning.learning_rate, float) and tuning.weight_mixes == (1.0,) and isinstance(tuning.weight_mixes[0], float)
    with pytest.raises(ConfigError, match="finetune.kind"):
        load_settings(conf, ["finetune.kind=svm"])
    with pytest.raises(ConfigError, match="finetune.val_fraction"):
        load_settings(conf, ["finetune.val_fraction=0.5", "finetune.test_fraction=0.5"])


def test_card_hyperparameters_are_the_settings_that_decide_the_weights():
    """The card's `hyperparameters` record what decides the weights (the keys and defaults cards have always had),
    not how the run was driven (threads, processes, promotion, the version's name)."""
    from relevance.training.card import hyperparameters

    expected = {"kind": "bi_encoder", "seed": 13, "epochs": 3, "batch_size": 32, "learning_rate": 5e-5,
                "weight_decay": 0.01, "warmup_fraction": 0.1, "max_length": 64, "val_fraction": 0.15,
                "test_fraction": 0.35, "max_train_seconds": FinetuneSettings().max_train_seconds, "eval_k": 10, "train_precision": "auto",
                "freeze_word_embeddings": True, "patience": 2, "cosent_scale": 20.0, "weight_mixes": (0.5, 0.75, 1.0),
                "lexical_weights": (0.0,), "lexical_min_df": 2, "lexical_max_tokens": 1_000_000, "batching": "query",
                "max_examples": 200_000, "catalog_steps": 300, "catalog_learning_rate": 2e-5,
                "catalog_brand_share": 0.3, "catalog_min_coverage": 0.5, "refit": False,
                "sources": "judgments", "max_train_queries": None, "click_model": "pbm", "click_labels_ds": None,
                "click_min_impressions": 10, "click_weight": 1.0, "click_queries": "not_held_out",
                "max_click_examples": 100_000}
    assert hyperparameters(FinetuneSettings()) == expected
    driven = replace(FinetuneSettings(), threads=4, processes=2, promote=False, promotion_margin=0.1, force_promote=True,
                     version="v1")
    assert hyperparameters(driven) == expected
    assert hyperparameters(replace(FinetuneSettings(), epochs=1))["epochs"] == 1


def test_promotion_gate_applies_the_margin_force_and_promote_settings():
    from relevance.training.history import GateScores as G
    from relevance.training.history import Rivals
    from relevance.training.promotion import promotion_gate

    rivals = Rivals(zero_shot=G(0.70, 0.6), promoted=G(0.78, 0.7), promoted_version="v0")
    assert promotion_gate(G(0.80, 0.8), rivals, FinetuneSettings()) == (
        True, "validation nDCG 0.8000 and AP 0.8000 beat the zero-shot base and the promoted version by more than 0")
    promoted, why = promotion_gate(G(0.80, 0.8), rivals, replace(FinetuneSettings(), promotion_margin=0.05))
    assert not promoted and why.startswith("not promoted:") and "the promoted version's 0.7800" in why
    assert promotion_gate(G(0.80, 0.8), rivals, replace(FinetuneSettings(), promotion_margin=0.05, force_promote=True))[0]
    promoted, why = promotion_gate(G(0.80, 0.8), Rivals(zero_shot=G(0.70, 0.6)), replace(FinetuneSettings(), promote=False))
    assert not promoted and why == ("not promoted: finetune.promote is false (validation nDCG 0.8000 and AP 0.8000 beat "
                                    "the zero-shot base by more than 0)")


def test_split_examples_keeps_queries_whole_and_names_the_table_when_a_split_is_empty():
    import pandas as pd

    from relevance.training.split import split_examples

    examples = pd.DataFrame({"query_norm": [f"q{i // 3}" for i in range(300)], "product_id": [f"p{i}" for i in range(300)]})
    parts = split_examples(examples, 13, 0.15, 0.35, "warehouse/judgments")
    assert sum(len(p) for p in parts.values()) == 300 and set(parts) == {"train", "val", "test"}
    queries = [set(p.query_norm) for p in parts.values()]
    assert all(not (a & b) for n, a in enumerate(queries) for b in queries[n + 1:])  # no query in two splits
    assert all((p.split == name).all() for name, p in parts.items())
    with pytest.raises(ValueError, match=r"judgments in warehouse/judgments are too few to split by query: train=\d+, val=0"):
        split_examples(examples.head(3), 13, 0.0, 0.35, "warehouse/judgments")


def test_validation_calibration_turns_logits_into_probabilities_and_rising_grade_thresholds():
    from relevance.settings import LabelScheme
    from relevance.training.calibration import calibrate_on_validation

    rng = np.random.default_rng(0)
    grades = rng.integers(0, 3, size=400)
    logits = grades * 2.0 + rng.normal(0, 1.0, size=400)
    scheme = LabelScheme(grades={"irrelevant": 0, "partial": 1, "exact": 2}, relevant_min_grade=1)
    calibration = calibrate_on_validation(logits, grades, scheme, target_precision=0.9)
    assert calibration.platt["a"] > 0 and ((calibration.scores > 0) & (calibration.scores < 1)).all()
    assert list(calibration.grade_thresholds) == ["1", "2"]
    assert calibration.grade_thresholds["1"] <= calibration.grade_thresholds["2"]
    assert calibration.grade_thresholds["1"] == max(0.0, calibration.threshold)  # the decision threshold is grade 1's
    target = calibration.target_precision
    chosen = calibration.scores >= target["threshold"]
    assert target["target"] == 0.9 and target["precision"] >= 0.9
    assert target["precision"] == pytest.approx((grades[chosen] >= 1).mean())  # the precision at that threshold
    assert target["recall"] == pytest.approx(chosen[grades >= 1].mean())


def test_lexical_weight_is_the_one_validation_prefers_and_zero_when_bm25_does_not_help():
    from relevance.training.weights import choose_lexical_weight

    val = pd.DataFrame({"query_norm": ["a"] * 4 + ["b"] * 4, "product_id": list("wxyzwxyz"),
                        "grade": [2, 0, 1, 0, 0, 2, 0, 1]})
    logits = np.array([0.1, 0.3, 0.2, 0.0, 0.5, 0.4, 0.1, 0.0])  # each query's best product ranked second or third
    bm25 = np.array([3.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.5])
    settings = FinetuneSettings(lexical_weights=(0.05, 0.2, 1.0))
    scheme = replace(SCHEME, gain="exponential")
    quiet = lambda _: None  # noqa: E731
    chosen = choose_lexical_weight(val, logits, bm25, settings, scheme, log=quiet)
    by_weight = chosen.val_ndcg_by_weight
    assert chosen.weight == 1.0 and by_weight["0.0"] < by_weight["0.05"] < by_weight["0.2"] < by_weight["1.0"]
    perfect = val.grade.to_numpy(dtype=float)  # the network alone ranks perfectly; small weights tie with it
    kept = choose_lexical_weight(val, perfect, bm25[::-1], settings, scheme, log=quiet)
    assert kept.weight == 0.0 and kept.val_ndcg == 1.0 and kept.val_ndcg_by_weight["1.0"] < 1.0


class _Terminal:
    """A stream that says it is a terminal and keeps what is written to it."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_progress_is_a_bar_on_a_terminal_and_plain_periodic_lines_elsewhere():
    import io

    from relevance.training.progress import StepProgress, duration

    now = [0.0]
    lines: list[str] = []
    with StepProgress("epoch 1/3", 10, lines.append, stream=io.StringIO(), every_seconds=30.0, clock=lambda: now[0]) as plain:
        for step in range(10):
            now[0] += 10.0  # 10 s a step: a line every third step
            plain.step(float(step))
    assert plain.bar is None and len(lines) == 3  # at steps 3, 6 and 9; none after the last step
    assert lines[0] == "  epoch 1/3: step 3/10 (30%), loss 1.0000, 30s elapsed, about 1m10s left"
    assert plain.mean_loss == 4.5 and duration(3725) == "1h02m" and duration(42.4) == "42s"

    terminal = _Terminal()
    with StepProgress("catalog", 4, lines.append, stream=terminal) as bar:  # type: ignore[arg-type]
        for _ in range(4):
            bar.step(0.5)
        assert bar.bar is not None and bar.bar.n == 4 and bar.bar.postfix == "loss 0.5000"
    assert "  catalog:" in terminal.text and bar.bar is None and len(lines) == 3  # a bar (closed), no lines
    quiet = _Terminal()
    with StepProgress("epoch 1/1", 4, lines.append, stream=quiet, every_seconds=0.0, enabled=False) as off:  # type: ignore[arg-type]
        off.step(1.0)
    assert quiet.text == "" and len(lines) == 3  # another rank's progress: nothing shown


def test_the_model_card_is_built_from_the_typed_history_with_the_keys_cards_have_always_had():
    import datetime as dt

    from relevance.training.calibration import ValidationCalibration
    from relevance.training.card import model_card
    from relevance.training.history import (
        CatalogPlan,
        CatalogStage,
        EpochRecord,
        GateScores,
        LexicalChoice,
        LoopHistory,
        Rivals,
        TrainingHistory,
        WeightMix,
    )
    from tests.conftest import settings_of
    from udfs.card import ModelCard

    loop = LoopHistory((EpochRecord(1, 0.9, 0.61, 1.5), EpochRecord(2, 0.7, 0.64, 3.0)), 0.64, 3.1, "fp32")
    history = TrainingHistory(loop, CatalogStage(steps=4, pairs=64, loss_first_steps=2.5, loss_last_steps=2.4, seconds=1.2),
                              CatalogPlan(128, 128, 1.0), WeightMix(0.75, 0.66, {"0.75": 0.66, "1.0": 0.64}))
    assert history.best_val_ndcg == 0.66 and history.lexical_weight == 0.0 and history.catalog_seconds == 1.2
    assert history.to_dict() == {
        "epochs": [{"epoch": 1, "train_loss": 0.9, "val_ndcg@10": 0.61, "seconds": 1.5},
                   {"epoch": 2, "train_loss": 0.7, "val_ndcg@10": 0.64, "seconds": 3.0}],
        "best_val_ndcg": 0.66, "train_seconds": 3.1, "autocast": "fp32",
        "catalog": {"sampled_products": 128, "with_pseudo_query": 128, "coverage": 1.0, "steps": 4, "pairs": 64,
                    "loss_first_steps": 2.5, "loss_last_steps": 2.4, "seconds": 1.2},
        "weight_mix": {"share": 0.75, "val_ndcg": 0.66, "val_ndcg_by_share": {"0.75": 0.66, "1.0": 0.64}}}
    history = replace(history, lexical=LexicalChoice(0.2, 0.7, {"0.0": 0.66, "0.2": 0.7}))
    assert history.best_val_ndcg == 0.7 and history.to_dict()["lexical"]["weight"] == 0.2

    settings = settings_of({})
    frame = pd.DataFrame({"query_norm": ["a", "a", "b"], "product_id": ["p", "q", "p"], "grade": [2, 0, 1]})
    calibration = ValidationCalibration({"a": 2.0, "b": -1.0}, np.linspace(0.1, 0.9, 5), 0.5, {"1": 0.5, "2": 0.7},
                                        {"target": 0.9, "threshold": 0.8})
    created = dt.datetime(2025, 1, 7, tzinfo=dt.timezone.utc)
    card = model_card(settings, "v1", created, "run-1", "abc", {"train": frame, "val": frame, "test": frame}, history,
                      calibration, {"ndcg@10": 0.8}, Rivals(GateScores(0.6, 0.5), GateScores(0.65, 0.55), "v0"), True,
                      "beats both")
    assert card.training == history.to_dict() and card.lexical_weight == 0.2 and card.threshold == 0.5
    assert card.promotion == {"metrics": "val ndcg@10 and average precision", "new": 0.7, "zero_shot": 0.6,
                              "zero_shot_average_precision": 0.5, "promoted_ndcg": 0.65,
                              "promoted_average_precision": 0.55, "promoted": True, "promoted_version": "v0",
                              "margin": settings.finetune.promotion_margin, "decision": "beats both"}
    assert card.data["train"] == {"pairs": 3, "queries": 2} and card.created_at == "2025-01-07T00:00:00+00:00"
    assert card.grades == settings.labels.active.grades and card.extra == {}
    assert ModelCard.from_dict(card.to_dict()) == card  # what is saved reads back as the same card
