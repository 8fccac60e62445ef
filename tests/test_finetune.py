"""Pure parts of fine-tuning: the split by query and the training batches."""

import numpy as np
import torch

from jobs.finetune import shuffled_length_batches, split_of


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
