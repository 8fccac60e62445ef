"""The scoring benchmark at a tiny size: every approach scores every pair, as our scorer does (no timing checks)."""

import numpy as np
import torch

from bench.score_approaches import APPROACHES, REFERENCE, BenchContext
from bench.score_bench import measure
from bench.score_inputs import make_bench_model, make_pairs
from bench.score_profile import profile_pairs
from relevance.scoring import threads_per_task
from udfs.model import load_model_version


def test_every_approach_scores_every_pair_like_our_scorer(spark, tmp_path):
    pairs = make_pairs(40)
    assert len(pairs) == 40 and len(set(zip(pairs.queries, pairs.product_ids))) == 40
    model_dir = make_bench_model(tmp_path / "models")
    ctx = BenchContext(model_dir, torch.get_num_threads(), spark, threads_per_task(spark, "auto"))
    try:
        measured = measure(ctx, pairs, pairs.head(8), rounds=1)
    finally:
        ctx.release()

    assert set(measured) == set(APPROACHES)
    reference = measured[REFERENCE].scored.scores
    fits = ~profile_pairs(load_model_version(model_dir).tokenizer, pairs, ctx.max_length).truncated
    assert fits.any()
    for key, run in measured.items():
        scored = run.scored
        assert scored.scores.shape == (40,) and np.isfinite(scored.scores).all(), key
        np.testing.assert_allclose(scored.scores[fits], reference[fits], rtol=0, atol=1e-4, err_msg=key)
        if key != "predict_batch_udf":  # its token counts are not collected (see make_predict_batch_udf)
            assert scored.real_tokens is not None and scored.padded_tokens is not None, key
            assert 0 < scored.real_tokens <= scored.padded_tokens, key
