"""The promotion gate: a new version is promoted only when it beats the zero-shot base and the promoted version on
the same validation pairs, on nDCG@eval_k and on average precision, each by more than the margin; validation too
small to decide, or with one grade only, refuses with a reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from relevance.settings import FinetuneSettings, LabelScheme
from relevance.training.evaluate import ranking_quality
from relevance.training.history import GateScores, Rivals
from udfs.model import LoadedModel, ModelError, load_model_version, resolve_model_dir
from udfs.scorer import score_logits

ZERO_SHOT_RIVAL, PROMOTED_RIVAL = "the zero-shot base", "the promoted version"


def gate_scores(val: pd.DataFrame, scores: np.ndarray, k: int, scheme: LabelScheme) -> GateScores:
    """nDCG@k (mean over queries) and average precision (over pairs) of `scores` on the validation pairs."""
    relevant = val.grade.to_numpy() >= scheme.relevant_min_grade
    ap = float(average_precision_score(relevant, scores)) if relevant.min() != relevant.max() else float("nan")
    return GateScores(ranking_quality(val, scores, k, scheme.relevant_min_grade, scheme.gain), ap)


def validation_refusal(val: pd.DataFrame, scheme: LabelScheme, min_queries: int) -> str | None:
    """Why the validation pairs cannot decide a promotion, or None: too few queries, or nothing to tell apart
    (one grade only, or no relevant or no irrelevant pair)."""
    queries = int(val.query_norm.nunique())
    if queries < min_queries:
        return (f"validation has {queries} queries, fewer than finetune.min_validation_queries={min_queries}: too few "
                "to decide")
    grades = sorted(int(g) for g in val.grade.unique())
    if len(grades) == 1:
        return f"every validation pair has grade {grades[0]}: there is nothing to rank"
    relevant = val.grade.to_numpy() >= scheme.relevant_min_grade
    if relevant.min() == relevant.max():
        kind = "relevant" if relevant.min() else "irrelevant"
        return f"every validation pair is {kind} (relevant from grade {scheme.relevant_min_grade}): nothing to tell apart"
    return None


def promotion_decision(new: GateScores, rivals: dict[str, GateScores], margin: float, force: bool = False,
                       refusal: str | None = None) -> tuple[bool, str]:
    """Whether a new version is promoted: it must beat every rival on nDCG and on average precision, each by MORE
    than `margin` (a tie is no win); `refusal` (validation_refusal) refuses whatever the scores; `force` promotes
    regardless. Returns (promote, why)."""
    def short_of(name: str, rival: GateScores) -> list[str]:
        return [f"{metric} {mine:.4f} vs {name}'s {theirs:.4f}"
                for metric, mine, theirs in (("nDCG", new.ndcg, rival.ndcg),
                                             ("AP", new.average_precision, rival.average_precision))
                if not mine > theirs + margin]

    short = [gap for name, rival in rivals.items() for gap in short_of(name, rival)]
    if refusal is None and not short:
        return True, (f"validation nDCG {new.ndcg:.4f} and AP {new.average_precision:.4f} beat "
                      + " and ".join(rivals) + f" by more than {margin:g}")
    reason = refusal or ("does not beat them by more than " + f"{margin:g}: " + "; ".join(short))
    if force:
        return True, f"forced (--force-promote): {reason}"
    return False, f"not promoted: {reason}"


def promotion_gate(new: GateScores, rivals: Rivals, settings: FinetuneSettings,
                   refusal: str | None = None) -> tuple[bool, str]:
    """`promotion_decision` against the `rivals` with the settings' margin and --force-promote; with
    `finetune.promote` false a version that would be promoted is not, and the reason says so."""
    named = {ZERO_SHOT_RIVAL: rivals.zero_shot, **({PROMOTED_RIVAL: rivals.promoted} if rivals.promoted else {})}
    promoted, why = promotion_decision(new, named, settings.promotion_margin, settings.force_promote, refusal)
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


def validation_rivals(val: pd.DataFrame, zero_shot_logits: np.ndarray, promoted: LoadedModel | None,
                      settings: FinetuneSettings, scheme: LabelScheme) -> Rivals:
    """What the new version must beat, on the same validation pairs: the zero-shot base (its logits given) and the
    `promoted` version (load_promoted; None: only the base to beat)."""
    zero_shot = gate_scores(val, zero_shot_logits, settings.eval_k, scheme)
    if promoted is None:
        return Rivals(zero_shot)
    logits, _ = score_logits(promoted, val.query_norm.tolist(), val.product_text.tolist())
    return Rivals(zero_shot, gate_scores(val, logits, settings.eval_k, scheme), promoted.version)
