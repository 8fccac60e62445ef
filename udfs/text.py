"""Text normalization and the product text the model sees.

One place for both: fine-tuning, scoring and build_pairs all call these functions,
so the text a model is trained on is byte-for-byte the text it scores.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping

# purity: no pyspark torch transformers

# Characters kept inside words ("t-shirt", "55\"", "1/2", "o'neill", "4.5", "h&m", "100%").
_NOT_KEPT = re.compile(r"[^\w\s\-'./&+%]")
_SPACES = re.compile(r"\s+")
_EDGE_PUNCT = re.compile(r"(?<!\w)[\-'./&+]+|[\-'./&+]+(?!\w)")

# Attributes shown to the model first, in this order; others follow alphabetically.
KEY_ATTRIBUTES = ("type", "color", "material", "size", "style", "pattern", "features")


# Words of product text kept by default (`pairs.product_text_max_words`), in training and scoring alike.
PRODUCT_TEXT_MAX_WORDS = 64


def is_missing(value: object) -> bool:
    """None, NaN (how pandas passes a null string to a UDF) or pandas' NA / NaT."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")  # pandas' NA and NaT, without importing pandas here


def normalize_text(text: str | None) -> str:
    """Unicode-normalize, lowercase, drop punctuation that carries no meaning, collapse spaces.

    A missing value (None, NaN, pandas NA) is the empty string, never "nan"."""
    if is_missing(text) or not text:
        return ""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = _NOT_KEPT.sub(" ", text)
    text = _EDGE_PUNCT.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _truncate_words(text: str, max_words: int) -> str:
    words = text.split(" ")
    return text if len(words) <= max_words else " ".join(words[:max_words])


def _ordered_attributes(attributes: Mapping[str, str] | None) -> list[tuple[str, str]]:
    if is_missing(attributes) or not attributes:
        return []
    items = {normalize_text(k): normalize_text(v) for k, v in dict(attributes).items() if k and not is_missing(v)}
    first = [(k, items[k]) for k in KEY_ATTRIBUTES if items.get(k)]
    rest = sorted((k, v) for k, v in items.items() if k not in KEY_ATTRIBUTES and v)
    return first + rest


def build_product_text(
    title: str | None,
    brand: str | None,
    category: str | None,
    attributes: Mapping[str, str] | None,
    max_words: int = PRODUCT_TEXT_MAX_WORDS,
    description: str | None = None,
    description_words: int = 0,
) -> str:
    """The product side of a (query, product) pair: title, brand, category, the first `description_words` words of
    the description (0: none, the default), key attributes.

    Capped at `max_words` words (the tokenizer's token budget truncates further). A missing part
    (None or NaN: real catalogs have products without brand, category, description or attributes) is left out.
    """
    parts = [normalize_text(title)]
    brand_norm = normalize_text(brand)
    if brand_norm:
        parts.append(f"brand: {brand_norm}")
    category_text = "" if is_missing(category) else str(category)
    levels = [normalize_text(level) for level in category_text.split(">")]
    levels = [level for level in levels if level]
    if levels:
        parts.append("category: " + " > ".join(levels[-2:]))
    if description_words > 0:
        parts.append(_truncate_words(normalize_text(description), description_words))
    attrs = _ordered_attributes(attributes)
    if attrs:
        parts.append(", ".join(f"{k}: {v}" for k, v in attrs))
    text = " | ".join(p for p in parts if p)
    return _truncate_words(text, max_words)
