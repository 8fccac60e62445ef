"""From logits to decisions, fitted on validation: Platt scaling into P(relevant), the decision threshold, a
threshold per grade and the threshold that meets a target precision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from relevance.evaluation.classifier import choose_threshold_max_f1, threshold_for_precision
from relevance.settings import LabelScheme
from udfs.card import calibrate

# purity: no pyspark torch transformers

TARGET_PRECISION_RULE = "lowest validation threshold whose Wilson 95% lower bound meets the target"


def fit_calibration(logits: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """Platt scaling: P(relevant) = sigmoid(a * logit + b), fitted on validation."""
    if relevant.min() == relevant.max():
        return {"a": 1.0, "b": 0.0}
    fitted = LogisticRegression(C=1e6).fit(logits.reshape(-1, 1), relevant.astype(int))
    return {"a": float(fitted.coef_[0][0]), "b": float(fitted.intercept_[0])}


def grade_thresholds(scores: np.ndarray, grades: np.ndarray, positive_grades: list[int], decision_grade: int, decision: float) -> dict[str, float]:
    """Minimum score per grade (F1-optimal on validation), non-decreasing with the grade."""
    thresholds: dict[str, float] = {}
    floor = 0.0
    for grade in sorted(positive_grades):
        t = decision if grade == decision_grade else choose_threshold_max_f1(scores, grades >= grade)
        floor = max(floor, float(t))
        thresholds[str(grade)] = floor
    return thresholds


@dataclass(frozen=True)
class ValidationCalibration:
    """What validation decides about a trained network's scores (the model card records all of it)."""

    platt: dict[str, float]  # {"a", "b"}: P(relevant) = sigmoid(a * logit + b)
    scores: np.ndarray  # the validation pairs' calibrated scores
    threshold: float  # the decision threshold: F1-optimal for relevant (grade >= relevant_min_grade)
    grade_thresholds: dict[str, float]  # grade -> minimum score, non-decreasing
    target_precision: dict[str, Any]  # the lowest threshold meeting a precision target, with its precision and recall


def calibrate_on_validation(logits: np.ndarray, grades: np.ndarray, scheme: LabelScheme,
                            target_precision: float) -> ValidationCalibration:
    """Fit the calibration and choose the thresholds on the validation pairs' logits and grades."""
    relevant = grades >= scheme.relevant_min_grade
    platt = fit_calibration(logits, relevant)
    scores = calibrate(logits, platt["a"], platt["b"])
    threshold = choose_threshold_max_f1(scores, relevant)
    positive = [g for g in sorted(set(scheme.grades.values())) if g > 0]
    by_grade = grade_thresholds(scores, grades, positive, scheme.relevant_min_grade, threshold)
    target_threshold, precision, recall = threshold_for_precision(scores, relevant, target_precision)
    target = {"target": target_precision, "threshold": target_threshold, "precision": precision, "recall": recall,
              "rule": TARGET_PRECISION_RULE}
    return ValidationCalibration(platt, scores, threshold, by_grade, target)
