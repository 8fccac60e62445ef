"""What a fine-tuned model version records: its name, its model card (udfs.card.ModelCard) and the
queries of each split (split.json, so audits can evaluate on queries the model never saw)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from relevance.settings import FinetuneSettings, Settings
from relevance.training.calibration import ValidationCalibration
from relevance.training.history import Rivals, TrainingHistory
from udfs.card import BASE, BI_ENCODER, FINE_TUNED, ModelCard

# purity: no pyspark torch transformers

SPLIT_FILE = "split.json"
# settings that drive the run, not the weights: recorded elsewhere in the card (promotion, version, training
# history's processes) or not at all (threads)
RUN_SETTINGS = ("threads", "processes", "promote", "promotion_margin", "min_validation_queries", "force_promote", "version")


def version_name(settings: FinetuneSettings, fingerprint: str, now: dt.datetime) -> str:
    """`finetune.version`, else <bi|ce>-<UTC time>-<data fingerprint>."""
    prefix = "bi" if settings.kind == BI_ENCODER else "ce"
    return settings.version or f"{prefix}-{now.strftime('%Y%m%d%H%M%S')}-{fingerprint[:8]}"


def hyperparameters(settings: FinetuneSettings) -> dict[str, Any]:
    """The fine-tuning settings that decide the weights, as the card's `hyperparameters`."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name not in RUN_SETTINGS}


def split_queries(parts: Mapping[str, pd.DataFrame]) -> str:
    """The split file: the sorted queries of each split."""
    return json.dumps({name: sorted(p.query_norm.unique()) for name, p in parts.items()}, indent=0)


def served_fields(settings: Settings, version: str, created_at: dt.datetime, run_id: str, fingerprint: str,
                  parts: Mapping[str, pd.DataFrame], calibration: ValidationCalibration,
                  test_metrics: dict[str, float]) -> dict[str, Any]:
    """What every version's card records, fine-tuned or base: identity, label scheme, product texts, calibration
    and thresholds fitted on validation, the data and its split, and the held-out test metrics."""
    scheme = settings.labels.active
    return dict(
        version=version, base_model=settings.model.base, created_at=created_at.isoformat(), run_id=run_id,
        label_scheme=settings.labels.scheme, grades=dict(scheme.grades), relevant_min_grade=scheme.relevant_min_grade,
        gain=scheme.gain, product_text_max_words=settings.pairs.product_text_max_words,
        product_text_description_words=settings.pairs.product_text_description_words,
        calibration=dict(calibration.platt),
        validation_score_deciles=[float(q) for q in np.quantile(calibration.scores, np.linspace(0.0, 1.0, 11))],
        threshold=float(calibration.threshold), grade_thresholds=calibration.grade_thresholds,
        threshold_for_target_precision=calibration.target_precision, data_fingerprint=fingerprint,
        data={name: {"pairs": len(p), "queries": int(p.query_norm.nunique())} for name, p in parts.items()},
        split={"rule": "sha256(seed, query_norm) picks train / val / test", "queries_file": SPLIT_FILE},
        metrics={"test": test_metrics},
    )


def base_model_card(settings: Settings, version: str, created_at: dt.datetime, run_id: str, fingerprint: str,
                    parts: Mapping[str, pd.DataFrame], calibration: ValidationCalibration,
                    test_metrics: dict[str, float], why: str) -> ModelCard:
    """The card of the base checkpoint saved as a version (role `base`): zero-shot, at the zero-shot baseline's
    tokens per text, with the calibration, thresholds and held-out metrics of the same split a fine-tuned version
    has; promoted because `why`."""
    return ModelCard(
        **served_fields(settings, version, created_at, run_id, fingerprint, parts, calibration, test_metrics),
        kind=BI_ENCODER, role=BASE, max_length=settings.audit.zero_shot_max_length, lexical_weight=0.0,
        training={"fine_tuned": False, "note": "the base checkpoint as it is; only its calibration is fitted"},
        promotion={"promoted": True, "decision": f"the zero-shot base serves: {why}"},
    )


def model_card(settings: Settings, version: str, created_at: dt.datetime, run_id: str, fingerprint: str,
               parts: Mapping[str, pd.DataFrame], history: TrainingHistory, calibration: ValidationCalibration,
               test_metrics: dict[str, float], rivals: Rivals, promoted: bool, why: str) -> ModelCard:
    """The model card of a new version: its base, label scheme, calibration and thresholds, data, settings, training
    history, promotion decision and held-out test metrics."""
    tuning = settings.finetune
    return ModelCard(
        **served_fields(settings, version, created_at, run_id, fingerprint, parts, calibration, test_metrics),
        kind=tuning.kind, role=FINE_TUNED, max_length=tuning.max_length,
        lexical_weight=float(history.lexical_weight), hyperparameters=hyperparameters(tuning),
        training=history.to_dict(),
        promotion={"metrics": f"val ndcg@{tuning.eval_k} and average precision", "new": history.best_val_ndcg,
                   **rivals.to_dict(), "margin": tuning.promotion_margin, "promoted": promoted, "decision": why},
    )
