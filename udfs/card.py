"""The model card: what a model version is and how it was made, saved as `model_card.json` next to its weights.

Typed here (no torch, no Spark) for everyone who reads or writes one: fine-tuning writes it, the registry
(udfs.model) reads it, scoring takes the version, kind, calibration and thresholds from it, the audit its threshold.
Cards of older versions lack later fields: each has the default those versions meant (a card without `kind` is a
cross-encoder's). Keys this code does not know are kept in `extra` and written back as they were.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# purity: no pyspark torch transformers

# What a model version's network is: a cross-encoder reads the pair `[CLS] query [SEP] product [SEP]` and outputs
# one relevance logit; a bi-encoder embeds query and product apart (mean-pooled, L2-normalized) and its logit is
# their cosine, so each distinct query and product is embedded once.
CROSS_ENCODER, BI_ENCODER = "cross_encoder", "bi_encoder"
MODEL_KINDS = (CROSS_ENCODER, BI_ENCODER)
# What a version is: fine-tuned, or the base checkpoint itself (zero-shot, calibrated on validation), which serves
# when no fine-tuned version has been promoted, so that a team always has a servable model.
FINE_TUNED, BASE = "fine_tuned", "base"

# The max_length a card without one means: what scoring has read such a card as since the first version (every card
# finetune writes records its own, finetune.max_length). A name for old cards, not a default of the setting.
LEGACY_CARD_MAX_LENGTH = 128


class CardError(ValueError):
    """A model card that is not one (no version, a field of the wrong type)."""


@dataclass(frozen=True)
class ModelCard:
    version: str
    kind: str = CROSS_ENCODER
    # fine_tuned | base (the base checkpoint as it is, calibrated, serving until a fine-tuned version wins); None in
    # cards older than the field, all fine-tuned
    role: str | None = None
    base_model: str | None = None
    created_at: str | None = None
    run_id: str | None = None
    label_scheme: str | None = None
    grades: dict[str, int] = field(default_factory=dict)
    relevant_min_grade: int | None = None
    gain: Any = None  # linear | exponential | {grade: gain}
    max_length: int = LEGACY_CARD_MAX_LENGTH  # tokens per text (bi-encoder) or per pair (cross-encoder)
    product_text_max_words: int | None = None
    product_text_description_words: int | None = None
    # the logit is the network's plus this weight x BM25 of the pair under the version's frozen corpus statistics
    # (udfs.lexical.LEXICAL_FILE); 0, or None in cards older than the setting: the network's alone
    lexical_weight: float | None = None
    calibration: dict[str, float] = field(default_factory=dict)  # Platt scaling of the logit: sigmoid(a * x + b)
    validation_score_deciles: list[float] | None = None  # 11 values, min to max: the score-shift (PSI) reference
    threshold: float = 0.5  # the decision threshold chosen on validation
    grade_thresholds: dict[str, float] = field(default_factory=dict)  # grade -> lowest score predicted as it
    threshold_for_target_precision: Any = None
    data_fingerprint: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # pairs and queries per split
    split: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    promotion: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of newer cards, kept as they are

    def __post_init__(self) -> None:
        if not isinstance(self.version, str) or not self.version:
            raise CardError(f"a model card needs a version (text), not {self.version!r}")
        if self.kind not in MODEL_KINDS:
            raise CardError(f"model card {self.version}: kind must be one of {', '.join(MODEL_KINDS)}, not {self.kind!r}")
        if self.role not in (None, FINE_TUNED, BASE):
            raise CardError(f"model card {self.version}: role must be {FINE_TUNED} or {BASE}, not {self.role!r}")

    @property
    def is_base(self) -> bool:
        """The base checkpoint as it is (role `base`), not a fine-tuned version."""
        return self.role == BASE

    @property
    def platt(self) -> tuple[float, float]:
        """(a, b) of the calibration; (1, 0) for an uncalibrated version."""
        return float(self.calibration.get("a", 1.0)), float(self.calibration.get("b", 0.0))

    @property
    def promoted(self) -> bool:
        return bool(self.promotion.get("promoted", False))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """The card of a `model_card.json` mapping (CardError when it is not one)."""
        if not isinstance(data, Mapping):
            raise CardError(f"a model card is a JSON object, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {key: value for key, value in data.items() if key in known and value is not None}
        if "version" not in values:
            raise CardError(f"a model card needs a version (text); this one has {', '.join(sorted(data)) or 'no keys'}")
        try:
            for name, kind in (("max_length", int), ("threshold", float), ("lexical_weight", float)):
                if name in values:
                    values[name] = kind(values[name])
        except (TypeError, ValueError) as exc:
            raise CardError(f"model card {data.get('version')!r}: {exc}") from None
        return cls(**values, extra={key: value for key, value in data.items() if key not in known})

    def to_dict(self) -> dict[str, Any]:
        """The card as `model_card.json` holds it: its fields (those left unset omitted) and the kept extras."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None and v != {}}, **self.extra}

    def to_json(self) -> str:
        """The card as strict JSON (RFC 8259, which any JSON reader parses): a number that is not finite (a NaN
        metric, an infinite bound) is written as null, never as the bare `NaN` / `Infinity` Python would write."""
        return json.dumps(finite_or_null(self.to_dict()), indent=2, sort_keys=True, default=str, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """The card of a `model_card.json` text. Cards written before `to_json` was strict may hold bare `NaN`,
        `Infinity` or `-Infinity`: they are read as those numbers (CardError when the text is not JSON at all)."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CardError(f"a model card is JSON: {exc}") from None
        return cls.from_dict(data)


def finite_or_null(value: Any) -> Any:
    """`value` with every float that is not finite (NaN, infinities, numpy's included) replaced by None, through
    mappings, lists and tuples."""
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    if isinstance(value, np.ndarray):
        return finite_or_null(value.tolist())
    return value


def calibrate(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    """Platt scaling with a card's calibration: probability of relevance = sigmoid(a * logit + b)."""
    return 1.0 / (1.0 + np.exp(-(a * logits + b)))
