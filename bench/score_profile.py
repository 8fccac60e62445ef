"""What the score benchmark measures besides speed: the pairs' token profile, the model's FLOPs, this machine's
matmul roofline and its description."""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.score_approaches import timed
from bench.score_inputs import Pairs
from udfs.scorer import encode_pairs

# --------------------------------------------------------------------------------------------
# Measurements around the approaches
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairProfile:
    lengths: list[int]  # tokens per pair as our scorer encodes it ([CLS] q [SEP] t [SEP], after truncation)
    truncated: np.ndarray  # bool per pair: the pair does not fit in max_length


def profile_pairs(tokenizer: Any, pairs: Pairs, max_length: int) -> PairProfile:
    encoded = encode_pairs(tokenizer, pairs.queries, pairs.texts, max_length)

    def token_counts(texts: Sequence[str]) -> dict[str, int]:
        distinct = list(dict.fromkeys(texts))
        return {t: len(ids) for t, ids in zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"])}

    q_len, t_len = token_counts(pairs.queries), token_counts(pairs.texts)
    truncated = np.array([q_len[q] + t_len[t] > max_length - 3 for q, t in zip(pairs.queries, pairs.texts)], dtype=bool)
    return PairProfile([len(ids) for ids in encoded.input_ids], truncated)


def model_flops(lengths: Sequence[int], config: Any) -> tuple[float, float]:
    """(encoder FLOPs on real tokens, FLOPs of the pooler + classifier head), multiply-add = 2 FLOPs."""
    h, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    encoder = layers * sum(8 * n * h * h + 4 * n * h * inner + 4 * n * n * h for n in lengths)
    head = len(lengths) * (2 * h * h + 2 * h)
    return float(encoder), float(head)


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of an n x n fp32 torch.mm with `threads` torch threads."""
    torch.set_num_threads(threads)
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = min(timed(lambda: torch.mm(a, b, out=out))[1] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    import pyspark
    import sentence_transformers
    import transformers

    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(), "cpu": cpu, "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__, "pyspark": pyspark.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "load_average_1_5_15_min_at_start": [round(x, 2) for x in os.getloadavg()],
    }
