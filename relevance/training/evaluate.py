"""How a network in training is scored and measured: its logits on judged pairs, validation nDCG and the held-out
test metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from relevance.evaluation.classifier import confusion_at_threshold
from relevance.evaluation.ranking import GainSpec, per_query_ranking_metrics
from udfs.card import ModelCard
from udfs.lexical import Bm25Stats
from udfs.model import CROSS_ENCODER, LoadedModel
from udfs.scorer import score_logits


def predict_logits(tokenizer: Any, network: Any, frame: pd.DataFrame, max_length: int,
                   kind: str = CROSS_ENCODER, lexical: tuple[float, Bm25Stats | None] = (0.0, None)) -> np.ndarray:
    """The scorer's logits of the frame's (query_norm, product_text) pairs, the network put in eval mode; `lexical`
    (weight, frozen BM25 statistics) adds weight x BM25 as a version with that card would."""
    network.eval()
    card = ModelCard("training", kind=kind, max_length=max_length, lexical_weight=lexical[0])
    model = LoadedModel("training", tokenizer, network, torch.device("cpu"), card, lexical=lexical[1])
    logits, _ = score_logits(model, frame.query_norm.tolist(), frame.product_text.tolist())
    return logits


def per_query(frame: pd.DataFrame, scores: np.ndarray, ks: list[int], relevant_min_grade: int, gain: GainSpec) -> pd.DataFrame:
    """Per-query ranking metrics of judged pairs scored by `scores`."""
    pairs = {"query": frame.query_norm.values, "product_id": frame.product_id.values}
    ranked, judged = pd.DataFrame({**pairs, "score": scores}), pd.DataFrame({**pairs, "grade": frame.grade.values})
    return per_query_ranking_metrics(ranked, judged, ks, relevant_min_grade, gain)


def ranking_quality(frame: pd.DataFrame, scores: np.ndarray, k: int, relevant_min_grade: int, gain: GainSpec) -> float:
    """Mean nDCG@k over the frame's queries."""
    return float(per_query(frame, scores, [k], relevant_min_grade, gain)[f"ndcg@{k}"].mean())


def evaluate(frame: pd.DataFrame, scores: np.ndarray, threshold: float, relevant_min_grade: int, gain: GainSpec, ks: list[int]) -> dict[str, float]:
    """Held-out metrics of a scored frame: ranking (per query, averaged) and classification at the threshold."""
    by_query = per_query(frame, scores, ks, relevant_min_grade, gain)
    relevant = frame.grade.to_numpy() >= relevant_min_grade
    counts = confusion_at_threshold(scores, relevant, threshold)
    metrics = {c: float(by_query[c].mean()) for c in by_query.columns if "@" in c or c in ("map", "mrr")}
    metrics.update({"precision": counts.precision, "recall": counts.recall, "f1": counts.f1, "queries": int(len(by_query)),
                    "pairs": int(len(frame))})
    if relevant.min() != relevant.max():
        metrics["roc_auc"] = float(roc_auc_score(relevant, scores))
        metrics["average_precision"] = float(average_precision_score(relevant, scores))
    return metrics
