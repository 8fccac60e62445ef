"""The promotion gate: a new version is promoted only when its validation nDCG beats the zero-shot base's and the
promoted version's, measured on the same validation pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from relevance.evaluation.baselines import ZERO_SHOT_MAX_LENGTH, zero_shot_scores
from relevance.settings import FinetuneSettings, LabelScheme
from relevance.training.evaluate import ranking_quality
from relevance.training.history import Rivals
from udfs.model import LoadedModel, ModelError, load_model_version, resolve_model_dir
from udfs.scorer import score_logits


def promotion_decision(new: float, zero_shot: float, promoted: float | None, margin: float,
                       force: bool = False) -> tuple[bool, str]:
    """Whether a new version is promoted: its validation nDCG must beat the zero-shot base's and the promoted
    version's (when there is one) by `margin`; `force` promotes regardless. Returns (promote, why)."""
    rivals = {"the zero-shot base": zero_shot, **({"the promoted version": promoted} if promoted is not None else {})}
    short = [f"{name} ({value:.4f})" for name, value in rivals.items() if new < value + margin]
    if not short:
        return True, f"validation nDCG {new:.4f} beats " + " and ".join(
            f"{name} ({value:.4f})" for name, value in rivals.items()) + f" by at least {margin:g}"
    if force:
        return True, f"forced (--force-promote): validation nDCG {new:.4f} does not beat " + " or ".join(short) + f" by {margin:g}"
    return False, f"not promoted: validation nDCG {new:.4f} does not beat " + " or ".join(short) + f" by {margin:g}"


def promotion_gate(new: float, rivals: Rivals, settings: FinetuneSettings) -> tuple[bool, str]:
    """`promotion_decision` against the `rivals` with the settings' margin and --force-promote; with
    `finetune.promote` false a version that would be promoted is not, and the reason says so."""
    promoted, why = promotion_decision(new, rivals.zero_shot, rivals.promoted, settings.promotion_margin,
                                       settings.force_promote)
    if promoted and not settings.promote:
        return False, f"not promoted: finetune.promote is false ({why})"
    return promoted, why


def load_promoted(models_root: str, storage_options: dict[str, str] | None = None,
                  cache_dir: str | None = None) -> LoadedModel | None:
    """Load: the promoted version, or None when nothing is promoted yet (or it no longer loads)."""
    try:
        return load_model_version(resolve_model_dir(models_root, "promoted", storage_options, cache_dir))
    except ModelError:
        return None


def validation_rivals(val: pd.DataFrame, base_dir: Path, promoted: LoadedModel | None, settings: FinetuneSettings,
                      scheme: LabelScheme, zero_shot_max_length: int = ZERO_SHOT_MAX_LENGTH) -> Rivals:
    """Validation nDCG of what the new version must beat, on the same validation pairs: the zero-shot base (with
    `zero_shot_max_length` tokens per text) and the `promoted` version (load_promoted; None: only the base to beat)."""
    def quality(scores: np.ndarray) -> float:
        return ranking_quality(val, scores, settings.eval_k, scheme.relevant_min_grade, scheme.gain)

    zero_shot = quality(zero_shot_scores(base_dir, val.query_norm.tolist(), val.product_text.tolist(),
                                         zero_shot_max_length))
    if promoted is None:
        return Rivals(zero_shot)
    logits, _ = score_logits(promoted, val.query_norm.tolist(), val.product_text.tolist())
    return Rivals(zero_shot, quality(logits), promoted.version)
