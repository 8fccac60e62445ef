"""BM25's tokens (bm25s: lowercased words of 2+ characters, English stop words dropped, Snowball-stemmed), for
the in-memory and the Spark BM25 baselines alike. A module of its own, so that executors tokenizing a catalog
import bm25s and not torch."""

from __future__ import annotations

from collections.abc import Sequence

import bm25s
import pandas as pd
import Stemmer
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, StringType

BM25_K1, BM25_B = 1.5, 0.75
BM25_STOPWORDS, BM25_STEMMER = "en", "english"


def bm25_tokens(texts: Sequence[str]) -> list[list[str]]:
    """bm25s's tokens of each text."""
    return bm25s.tokenize(list(texts), stopwords=BM25_STOPWORDS, stemmer=Stemmer.Stemmer(BM25_STEMMER),
                          return_ids=False, show_progress=False)


@pandas_udf(ArrayType(StringType()))  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
def bm25_tokens_udf(texts: pd.Series) -> pd.Series:
    """bm25_tokens of a column of texts, computed on executors."""
    return pd.Series(bm25_tokens(texts.tolist()), index=texts.index)
