"""Are two model versions trained with the same data, settings and seed the same model? Their scores on the
held-out test pairs of the first one's split, compared.

Usage (from the repository root), after two `finetune` runs with the same seed (say one on a quiet machine and one
while another process loads the CPU), each with its own `--set finetune.version=...`:

    .venv/bin/python bench/determinism_check.py WAREHOUSE_ROOT VERSION_A VERSION_B

Prints the number of pairs and queries, the largest absolute score difference, both training times and whether the
data fingerprints, calibrations and thresholds agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(ROOT))

from deltalake import DeltaTable  # noqa: E402

from udfs.model import load_model_version  # noqa: E402
from udfs.scorer import score_pairs  # noqa: E402


def main() -> None:
    root, first, second = sys.argv[1:4]
    split = json.loads((Path(root) / "models" / first / "split.json").read_text())
    pairs = DeltaTable(f"{root}/pairs").to_pandas()
    test = pairs[pairs.query_norm.isin(split["test"])].drop_duplicates(["query_norm", "product_id"])
    models = [load_model_version(Path(root) / "models" / version) for version in (first, second)]
    scores = [score_pairs(model, test.query_norm.tolist(), test.product_text.tolist())[0] for model in models]
    cards = [model.card for model in models]
    print(json.dumps({
        "pairs": len(test), "queries": int(test.query_norm.nunique()),
        "max_abs_diff": float(np.abs(scores[0] - scores[1]).max()),
        "train_seconds": [card.training["train_seconds"] for card in cards],
        "same_data_fingerprint": cards[0].data_fingerprint == cards[1].data_fingerprint,
        "same_calibration": cards[0].calibration == cards[1].calibration,
        "same_threshold": cards[0].threshold == cards[1].threshold,
    }, indent=1))


if __name__ == "__main__":
    main()
