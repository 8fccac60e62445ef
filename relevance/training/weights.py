"""What validation chooses after training: the weight-space ensemble of the base and the fine-tuned bi-encoder
(WiSE-FT), and the weight of BM25 added to the logit."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from relevance.settings import FinetuneSettings, LabelScheme
from relevance.training.evaluate import predict_logits, ranking_quality
from relevance.training.history import LexicalChoice, WeightMix
from udfs.model import BI_ENCODER, load_network

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def mix_weights(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], share: float) -> dict[str, torch.Tensor]:
    """Weight-space ensemble (WiSE-FT): (1 - share) x base + share x fine-tuned, tensor by tensor (integer buffers such
    as position ids are taken from the fine-tuned state)."""
    return {name: (torch.lerp(base[name], value, share) if value.is_floating_point() else value)
            for name, value in tuned.items()}


def apply_weight_mix(network: PreTrainedModel, base_dir: str, share: float) -> PreTrainedModel:
    """`network` with its weights mixed with the base's at fine-tuned `share` (1: as it is)."""
    if share != 1.0:
        _, base = load_network(base_dir, "cpu", BI_ENCODER)
        network.load_state_dict(mix_weights(base.state_dict(), network.state_dict(), share))
    network.eval()
    return network


def choose_weight_mix(tokenizer: Any, network: PreTrainedModel, base_dir: str, val: pd.DataFrame, settings: FinetuneSettings,
                      scheme: LabelScheme, log: Callable[[str], None] = print) -> tuple[PreTrainedModel, WeightMix]:
    """For a bi-encoder, the mix of base and fine-tuned weights with the best validation nDCG (ties: the larger
    fine-tuned share). Small data fine-tunes forget part of what the base knew; a mix keeps it where that helps."""
    if settings.kind != BI_ENCODER or tuple(settings.weight_mixes) == (1.0,):
        return network, WeightMix()
    tuned = copy.deepcopy(network.state_dict())
    _, base = load_network(base_dir, "cpu", BI_ENCODER)
    base_state = base.state_dict()
    quality = {}
    for share in sorted(set(settings.weight_mixes) | {1.0}):
        network.load_state_dict(mix_weights(base_state, tuned, share))
        quality[share] = ranking_quality(val, predict_logits(tokenizer, network, val, settings.max_length, BI_ENCODER),
                                         settings.eval_k, scheme.relevant_min_grade, scheme.gain)
    best = max(quality, key=lambda share: (round(quality[share], 12), share))
    network.load_state_dict(mix_weights(base_state, tuned, best))
    network.eval()
    log(f"  weight mix: fine-tuned share {best:g} (validation nDCG@{settings.eval_k} by share: "
        + ", ".join(f"{k:g}: {v:.4f}" for k, v in quality.items()) + ")")
    return network, WeightMix(best, quality[best], {str(k): v for k, v in quality.items()})


def choose_lexical_weight(val: pd.DataFrame, logits: np.ndarray, bm25: np.ndarray, settings: FinetuneSettings,
                          scheme: LabelScheme, log: Callable[[str], None] = print) -> LexicalChoice:
    """The weight of BM25 added to the network's validation `logits` with the best validation nDCG among
    `finetune.lexical_weights` and 0 (ties: the smaller weight). The fine-tuned network ranks by meaning; on real
    catalogs an exact model number or brand in the text still tells, and a little BM25 puts it back."""
    quality = {weight: ranking_quality(val, logits + weight * bm25, settings.eval_k, scheme.relevant_min_grade, scheme.gain)
               for weight in sorted(set(settings.lexical_weights) | {0.0})}
    best = max(quality, key=lambda weight: (round(quality[weight], 12), -weight))
    log(f"  lexical weight: BM25 x {best:g} (validation nDCG@{settings.eval_k} by weight: "
        + ", ".join(f"{k:g}: {v:.4f}" for k, v in quality.items()) + ")")
    return LexicalChoice(best, quality[best], {str(k): v for k, v in quality.items()})
