"""The frozen BM25 statistics of a version at catalog scale (udfs.lexical): rare tokens pruned within a stated idf
bound, a binary file of hashed tokens that scores as the JSON does, and versions written with the JSON still loading.
No Spark: the Spark computation is tests/test_baselines.py's."""

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from plumbing.errors import ModelError
from udfs.card import ModelCard
from udfs.lexical import (
    LEXICAL_FILE,
    LEXICAL_NPZ_FILE,
    Bm25Stats,
    HashedDocFreq,
    bm25_pair_scores,
    bm25_tokens,
    pruning_min_df,
    token_hash,
)
from udfs.model import load_model_version, read_lexical_stats, resolve_model_dir


def zipf_corpus(n_docs: int = 600, words: int = 20, seed: int = 3) -> list[str]:
    """Texts of power-law words (`w<rank>`, rank ~ rank^-1.3): a long tail of tokens in one or a few documents."""
    rng = np.random.default_rng(seed)
    ranks = np.floor((1 - rng.random((n_docs, words)) * (1 - 1e6 ** -0.3)) ** (-1 / 0.3)).astype(int)
    return [" ".join(f"w{r}" for r in row) for row in ranks]


def corpus_stats(texts: list[str]) -> Bm25Stats:
    tokens = bm25_tokens(texts)
    doc_freq = Counter(t for doc in tokens for t in set(doc))
    return Bm25Stats(len(texts), float(np.mean([len(doc) for doc in tokens])), dict(doc_freq))


def frequencies(stats: Bm25Stats) -> dict[str, int]:
    """The token -> frequency dict of statistics with token names."""
    assert isinstance(stats.doc_freq, dict)
    return stats.doc_freq


def judged_like_pairs(texts: list[str], seed: int = 5) -> tuple[list[str], list[str]]:
    """Queries of 1-3 words of one text (rare words included) and a word no text has, each against 10 texts."""
    rng = np.random.default_rng(seed)
    queries, product_texts = [], []
    for doc in rng.choice(len(texts), 60, replace=False):
        words = texts[doc].split()
        query = " ".join(rng.choice(words, rng.integers(1, 4), replace=False)) + (" zyxel" if doc % 3 == 0 else "")
        for other in [doc, *rng.choice(len(texts), 9, replace=False)]:
            queries.append(query)
            product_texts.append(texts[other])
    return queries, product_texts


def test_pruned_statistics_change_each_score_within_the_stated_idf_bound():
    texts = zipf_corpus()
    full = corpus_stats(texts)
    queries, product_texts = judged_like_pairs(texts)
    exact = bm25_pair_scores(full, queries, product_texts)
    query_tokens = dict(zip(queries, bm25_tokens(queries)))
    assert sum(df == 1 for df in frequencies(full).values()) > len(full.doc_freq) / 3  # a long tail to prune
    for min_df in (2, 3, 5, 20):
        pruned = full.pruned(min_df)
        assert pruned.min_df == min_df and min(frequencies(pruned).values()) >= min_df
        assert len(pruned.doc_freq) == sum(df >= min_df for df in frequencies(full).values())
        got = bm25_pair_scores(pruned.hashed(), queries, product_texts)
        # a catalog token changes idf by at most idf(1) - idf(min_df - 1); the query's tokens each add one such term
        # (times tf / (tf + norm) < 1) to the texts' BM25
        bound = np.array([len(query_tokens[q]) for q in queries]) * pruned.max_idf_error(in_corpus=True)
        assert np.all(np.abs(got - exact) <= bound + 1e-9)
        if min_df == 2:  # tokens of one document keep their idf exactly: every catalog text scores the same
            np.testing.assert_array_equal(got, exact)
        else:
            assert np.abs(got - exact).max() > 0
    # a token no document had counts as in min_df - 1 documents: within the out-of-corpus bound
    pruned = full.pruned(5)
    assert abs(pruned.idf("zyxel") - full.idf("zyxel")) <= pruned.max_idf_error(in_corpus=False) + 1e-12
    assert pruned.max_idf_error(in_corpus=False) > pruned.max_idf_error(in_corpus=True) > 0
    assert full.max_idf_error() == full.pruned(2).max_idf_error() == 0.0


def test_max_tokens_raises_the_floor_until_the_tokens_fit():
    full = corpus_stats(zipf_corpus())
    for max_tokens in (10, 100, 500, 10**6):
        pruned = full.pruned(2, max_tokens)
        assert len(pruned.doc_freq) <= max_tokens and pruned.min_df >= 2
        looser = sum(df >= pruned.min_df - 1 for df in frequencies(full).values())
        assert pruned.min_df == 2 or looser > max_tokens  # the least floor that fits
    assert pruning_min_df({1: 10, 2: 5, 3: 1}, 1, None) == 1
    assert pruning_min_df({1: 10, 2: 5, 3: 1}, 1, 16) == 1
    assert pruning_min_df({1: 10, 2: 5, 3: 1}, 1, 6) == 2
    assert pruning_min_df({1: 10, 2: 5, 3: 1}, 1, 5) == 3  # all of one frequency or none of it
    assert pruning_min_df({1: 10, 2: 5, 3: 1}, 3, 100) == 3
    assert pruning_min_df({1: 10, 2: 5, 3: 1}, 1, 0) == 4


def test_binary_statistics_score_exactly_as_the_json_ones_when_nothing_is_pruned():
    texts = zipf_corpus()
    full = corpus_stats(texts)
    queries, product_texts = judged_like_pairs(texts)
    from_json = Bm25Stats.from_json(full.to_json())
    from_npz = Bm25Stats.from_npz(full.to_npz())
    assert isinstance(from_npz.doc_freq, HashedDocFreq) and len(from_npz.doc_freq) == len(full.doc_freq)
    assert (from_npz.documents, from_npz.mean_length, from_npz.min_df) == (full.documents, full.mean_length, 1)
    np.testing.assert_array_equal(bm25_pair_scores(from_npz, queries, product_texts),
                                  bm25_pair_scores(from_json, queries, product_texts))
    tokens = [*frequencies(full), "zyxel", "w1", ""]
    assert [from_npz.idf(t) for t in tokens] == [from_json.idf(t) for t in tokens]
    pruned = full.pruned(3)
    assert Bm25Stats.from_npz(pruned.to_npz()).idfs(tokens) == Bm25Stats.from_json(pruned.to_json()).idfs(tokens)


def test_colliding_token_keys_are_kept_by_name():
    """Two stored tokens sharing a 64-bit key (a chance of about n^2 / 2^65) keep their own frequencies."""
    keys, freqs = np.array([token_hash("sofa"), 42, 42]), np.array([3, 1, 7])
    hashed = HashedDocFreq.from_keys(keys, freqs, lambda colliding: {"alpha": 1, "beta": 7} if colliding == {42} else {})
    assert hashed.exact == {"alpha": 1, "beta": 7} and len(hashed) == 3
    assert [hashed.get(t) for t in ("sofa", "alpha", "beta", "gamma")] == [3, 1, 7, 0]
    stats = Bm25Stats(documents=40, mean_length=9.0, doc_freq=hashed)
    again = Bm25Stats.from_npz(stats.to_npz())
    assert again.doc_freq == hashed and again.idf("beta") == stats.idf("beta")
    with pytest.raises(ValueError, match="share keys"):
        HashedDocFreq.from_keys(keys, freqs)


@pytest.mark.parametrize("damage, problem", [
    (lambda data: data[:100], "not a .npz file"),
    (lambda data: b"PK" + b"\0" * 50, "not a .npz file"),
])
def test_a_damaged_binary_file_is_refused_saying_so(damage, problem):
    stats = Bm25Stats(documents=40, mean_length=9.0, doc_freq={"sofa": 3, "gray": 5})
    with pytest.raises(ValueError, match=problem):
        Bm25Stats.from_npz(damage(stats.to_npz()))


def test_binary_statistics_out_of_range_are_refused():
    import io

    buffer = io.BytesIO()
    meta = {"format": "bm25-hashed-v1", "documents": 4, "mean_length": 3.0, "k1": 1.5, "b": 0.75, "min_df": 1}
    np.savez(buffer, keys=np.array([1, 2], dtype=np.int64), freqs=np.array([3, 9], dtype=np.uint32),
             meta=np.array(json.dumps(meta)))
    with pytest.raises(ValueError, match=r"1 frequencies are not from 0 to documents \(4\), e.g. 9"):
        Bm25Stats.from_npz(buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(buffer, keys=np.array([2, 1], dtype=np.int64), freqs=np.array([3, 1], dtype=np.uint32),
             meta=np.array(json.dumps(meta)))
    with pytest.raises(ValueError, match="keys are not strictly increasing"):
        Bm25Stats.from_npz(buffer.getvalue())


# ---- model versions: the new file, the old one ------------------------------------------------------------------------
def lexical_copy(tiny_model_root: Path, where: Path, files: dict[str, str | bytes]) -> Path:
    """A copy of the tiny version whose card adds BM25 x 0.25, with `files` (name -> content) beside it."""
    version = where / "tiny-lexical"
    shutil.copytree(tiny_model_root / "tiny-test", version)
    card = json.loads((version / "model_card.json").read_text())
    (version / "model_card.json").write_text(json.dumps({**card, "version": "tiny-lexical", "lexical_weight": 0.25}))
    for name, content in files.items():
        if isinstance(content, bytes):
            (version / name).write_bytes(content)
        else:
            (version / name).write_text(content)
    return version


def test_a_version_with_the_binary_file_scores_as_the_same_statistics_in_json(tiny_model_root, tmp_path):
    from udfs.scorer import score_pairs

    texts = zipf_corpus(200)
    stats = corpus_stats(texts)
    queries, product_texts = judged_like_pairs(texts)
    old = lexical_copy(tiny_model_root, tmp_path / "old", {LEXICAL_FILE: stats.to_json()})  # written before the .npz
    new = lexical_copy(tiny_model_root, tmp_path / "new", {LEXICAL_NPZ_FILE: stats.to_npz()})
    old_model, new_model = load_model_version(old), load_model_version(new)
    assert old_model.lexical is not None and new_model.lexical is not None
    assert isinstance(old_model.lexical.doc_freq, dict)  # the JSON still loads, as before
    assert isinstance(new_model.lexical.doc_freq, HashedDocFreq)
    old_scores, _ = score_pairs(old_model, queries, product_texts)
    new_scores, _ = score_pairs(new_model, queries, product_texts)
    np.testing.assert_array_equal(new_scores, old_scores)


def test_an_old_version_with_the_json_loads_and_a_damaged_binary_file_names_itself(tmp_path):
    card = ModelCard("v-old", lexical_weight=0.05)
    (tmp_path / LEXICAL_FILE).write_text(json.dumps({"documents": 40, "mean_length": 9.0, "k1": 1.5, "b": 0.75,
                                                     "doc_freq": {"sofa": 3}}))  # main's JSON: no min_df
    old = read_lexical_stats(tmp_path, card)
    assert old is not None and old.min_df == 1 and old.doc_freq == {"sofa": 3}
    assert old.idf("nope") == Bm25Stats(40, 9.0, {}).idf("nope")  # an unknown token counts as in no document
    assert read_lexical_stats(tmp_path, ModelCard("v-plain")) is None
    (tmp_path / LEXICAL_NPZ_FILE).write_bytes(b"not numpy")
    with pytest.raises(ModelError, match=rf"BM25 x 0.05 to the logit but {LEXICAL_NPZ_FILE} does not load \(not a "
                                         r"\.npz file"):
        read_lexical_stats(tmp_path, card)


def test_the_pruning_settings_are_range_checked_and_recorded_in_the_card():
    from relevance.settings import ConfigError, FinetuneSettings
    from relevance.training.card import hyperparameters
    from relevance.training.history import LexicalChoice
    from tests.conftest import settings_of

    assert (FinetuneSettings().lexical_min_df, FinetuneSettings().lexical_max_tokens) == (2, 1_000_000)
    for key, value in (("lexical_min_df", 0), ("lexical_max_tokens", 0), ("lexical_min_df", 1.5)):
        with pytest.raises(ConfigError, match=f"finetune.{key}"):
            settings_of({"finetune": {key: value}})
    tuning = settings_of({"finetune": {"lexical_min_df": 3, "lexical_max_tokens": 5000}}).finetune
    assert {k: hyperparameters(tuning)[k] for k in ("lexical_min_df", "lexical_max_tokens")} == {
        "lexical_min_df": 3, "lexical_max_tokens": 5000}
    described = corpus_stats(zipf_corpus()).pruned(3, 5000).describe()
    choice = LexicalChoice(0.05, 0.9, {"0.0": 0.8, "0.05": 0.9}, described)
    assert choice.to_dict()["statistics"]["min_df"] == 3 and choice.to_dict()["statistics"]["max_idf_error"] > 0
    assert "statistics" not in LexicalChoice(0.0, 0.8, {"0.0": 0.8}).to_dict()  # as cards had it


def test_a_model_loaded_on_an_executor_reads_the_binary_file_once(tiny_model_root, tmp_path):
    """resolve_model_dir and load_model_version (what worker_model calls) read the .npz of a version found by name."""
    stats = corpus_stats(zipf_corpus(100)).pruned(2)
    lexical_copy(tiny_model_root, tmp_path, {LEXICAL_NPZ_FILE: stats.to_npz()})
    loaded = load_model_version(resolve_model_dir(tmp_path, "tiny-lexical"))
    assert loaded.lexical is not None and loaded.lexical.min_df == 2 and len(loaded.lexical.doc_freq) == len(stats.doc_freq)
