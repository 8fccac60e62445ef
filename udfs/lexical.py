"""BM25's tokens (bm25s: lowercased words of 2+ characters, English stop words dropped, Snowball-stemmed), for
the in-memory and the Spark BM25 baselines alike, and BM25 of single pairs under frozen corpus statistics (the
lexical term a model version may add to its logit). A module of its own, so that executors tokenizing a catalog
import bm25s and not torch; its Spark UDF is `udfs.spark_udf.bm25_tokens_udf`."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import Stemmer

# purity: no pyspark torch transformers

BM25_K1, BM25_B = 1.5, 0.75
BM25_STOPWORDS, BM25_STEMMER = "en", "english"


def bm25_tokens(texts: Sequence[str]) -> list[list[str]]:
    """bm25s's tokens of each text."""
    return bm25s.tokenize(list(texts), stopwords=BM25_STOPWORDS, stemmer=Stemmer.Stemmer(BM25_STEMMER),
                          return_ids=False, show_progress=False)


LEXICAL_FILE = "bm25_stats.json"  # a model version's frozen BM25 corpus statistics, when its card weighs BM25


@dataclass(frozen=True)
class Bm25Stats:
    """BM25's corpus statistics, frozen: the number of documents, their mean length in tokens and each token's
    document frequency. With them BM25 of a (query, product text) pair is a function of the pair alone, so a model
    version that adds it to its logit scores a pair the same on any executor and any night."""

    documents: int
    mean_length: float
    doc_freq: dict[str, int]

    def idf(self, token: str) -> float:
        """Lucene's idf (bm25s's `lucene` method); a token no document had counts as in none."""
        df = self.doc_freq.get(token, 0)
        return math.log(1.0 + (self.documents - df + 0.5) / (df + 0.5))

    def to_json(self) -> str:
        return json.dumps({"documents": self.documents, "mean_length": self.mean_length, "k1": BM25_K1, "b": BM25_B,
                           "doc_freq": dict(sorted(self.doc_freq.items()))})

    @classmethod
    def from_json(cls, text: str) -> Bm25Stats:
        """The statistics of `to_json`'s text; ValueError saying what is wrong when the text parses but cannot be
        statistics of a corpus (no documents, a negative or fractional count, a frequency above the documents, a
        mean length that is negative or not finite), which would score NaN or fail inside a Spark task."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found a JSON {type(data).__name__}")
        if (data.get("k1"), data.get("b")) != (BM25_K1, BM25_B):
            raise ValueError(f"BM25 statistics for k1={data.get('k1')}, b={data.get('b')}; this code uses "
                             f"k1={BM25_K1}, b={BM25_B}")
        missing = [key for key in ("documents", "mean_length", "doc_freq") if key not in data]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        documents, mean_length, doc_freq = data["documents"], data["mean_length"], data["doc_freq"]
        if not _whole(documents) or documents < 1:
            raise ValueError(f"documents is {json.dumps(documents)}, not a whole number of 1 or more")
        if isinstance(mean_length, bool) or not isinstance(mean_length, (int, float)) or not 0 <= mean_length < math.inf:
            raise ValueError(f"mean_length is {json.dumps(mean_length)}, not a finite number of 0 or more")
        if not isinstance(doc_freq, dict):
            raise ValueError(f"doc_freq is a JSON {type(doc_freq).__name__}, not an object of token: frequency")
        bad = [(token, df) for token, df in doc_freq.items() if not _whole(df) or not 0 <= df <= documents]
        if bad:
            token, df = bad[0]
            raise ValueError(f"doc_freq of {json.dumps(token)} is {json.dumps(df)}, not a whole number from 0 to "
                             f"documents ({documents})" + (f"; {len(bad) - 1} more such tokens" if len(bad) > 1 else ""))
        return cls(int(documents), float(mean_length), {str(k): int(v) for k, v in doc_freq.items()})


def _whole(value: object) -> bool:
    """A JSON whole number (3 or 3.0; not true, 2.5, NaN or text)."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def bm25_pair_scores(stats: Bm25Stats, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """BM25 (bm25s's Lucene variant) of each (query, product text) pair under the frozen corpus `stats`; equal to
    bm25s's score when `stats` are those of the corpus it indexed. Each distinct text is tokenized once."""
    if len(queries) != len(texts):
        raise ValueError(f"{len(queries)} queries but {len(texts)} product texts")
    if not queries:
        return np.zeros(0)
    distinct = list(dict.fromkeys([*queries, *texts]))
    tokens = dict(zip(distinct, bm25_tokens(distinct)))
    counts = {text: Counter(tokens[text]) for text in dict.fromkeys(texts)}
    scores = np.zeros(len(queries))
    for row, (query, text) in enumerate(zip(queries, texts)):
        tf, length = counts[text], len(tokens[text])
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / stats.mean_length) if stats.mean_length else BM25_K1
        scores[row] = sum(stats.idf(t) * tf[t] / (tf[t] + norm) for t in tokens[query] if tf[t])
    return scores
