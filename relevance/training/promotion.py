"""The promotion gate: a new version is promoted only when its validation nDCG beats the zero-shot base's and the
promoted version's, measured on the same validation pairs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relevance.evaluation.baselines import zero_shot_scores
from relevance.evaluation.ranking import GainSpec
from relevance.settings import FinetuneSettings
from relevance.training.evaluate import ranking_quality
from udfs.model import ModelError, load_model_version, resolve_model_dir
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


def promotion_gate(new: float, rivals: Mapping[str, Any], settings: FinetuneSettings) -> tuple[bool, str]:
    """`promotion_decision` against `validation_rivals` with the settings' margin and --force-promote; with
    `finetune.promote` false a version that would be promoted is not, and the reason says so."""
    promoted, why = promotion_decision(new, rivals["zero_shot"], rivals["promoted"], settings.promotion_margin,
                                       settings.force_promote)
    if promoted and not settings.promote:
        return False, f"not promoted: finetune.promote is false ({why})"
    return promoted, why


def validation_rivals(val: pd.DataFrame, base_dir: Path, models_root: str, settings: FinetuneSettings,
                      relevant_min_grade: int, gain: GainSpec, storage_options: dict[str, str] | None = None,
                      cache_dir: str | None = None) -> dict[str, Any]:
    """Validation nDCG of what the new version must beat, on the same validation pairs: the zero-shot base and the
    promoted version (None when there is none yet)."""
    def quality(scores: np.ndarray) -> float:
        return ranking_quality(val, scores, settings.eval_k, relevant_min_grade, gain)

    rivals: dict[str, Any] = {
        "zero_shot": quality(zero_shot_scores(base_dir, val.query_norm.tolist(), val.product_text.tolist())),
        "promoted": None, "promoted_version": None}
    try:
        promoted = load_model_version(resolve_model_dir(models_root, "promoted", storage_options, cache_dir))
    except ModelError:
        return rivals  # nothing promoted yet (or it no longer loads): only the base to beat
    logits, _ = score_logits(promoted, val.query_norm.tolist(), val.product_text.tolist())
    rivals.update(promoted=quality(logits), promoted_version=promoted.version)
    return rivals
