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


def test_distributed_training_with_torch_distributor_in_local_mode(spark, tiny_model_root):
    """Two TorchDistributor processes (gloo) train the tiny model on their shares of each epoch; the driver
    gets the best weights back, changed from the checkpoint it started from."""
    import pandas as pd

    from jobs.finetune import TrainSettings, train_distributed
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
    settings = TrainSettings(epochs=2, batch_size=8, max_length=32, learning_rate=1e-3)
    _, network, history = train_distributed(str(base), train.reset_index(drop=True), val.reset_index(drop=True), 2,
                                            settings, 1, "linear", processes=2)
    assert history["processes"] == 2 and 1 <= len(history["epochs"]) <= 2
    assert all(np.isfinite(e["val_ndcg@10"]) for e in history["epochs"])
    _, start = load_network(str(base))
    changed = [not torch.equal(a, b) for a, b in zip(network.state_dict().values(), start.state_dict().values())]
    assert any(changed) and not network.training
