"""BM25's tokens (bm25s: lowercased words of 2+ characters, English stop words dropped, Snowball-stemmed), for
the in-memory and the Spark BM25 baselines alike, and BM25 of single pairs under frozen corpus statistics (the
lexical term a model version may add to its logit). A module of its own, so that executors tokenizing a catalog
import bm25s and not torch; its Spark UDF is `udfs.spark_udf.bm25_tokens_udf`."""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


LEXICAL_FILE = "bm25_stats.json"  # a version's frozen BM25 statistics as JSON: versions written before LEXICAL_NPZ_FILE
LEXICAL_NPZ_FILE = "bm25_stats.npz"  # ... as hashed tokens and frequencies (numpy arrays): what finetune writes now
NPZ_FORMAT = "bm25-hashed-v1"


def token_hash(token: str) -> int:
    """A token's 64-bit key in the binary statistics: the first 8 bytes of its BLAKE2b digest (UTF-8), a signed
    little-endian integer (Spark's LongType). The same on every machine and Python, unlike `hash`."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def token_hashes(tokens: Sequence[str]) -> np.ndarray:
    """`token_hash` of each token, as int64."""
    return np.fromiter((token_hash(t) for t in tokens), dtype=np.int64, count=len(tokens))


@dataclass(frozen=True, eq=False)
class HashedDocFreq:
    """Document frequencies keyed by `token_hash`, in two arrays sorted by key (12 bytes a token, read without a
    dict of strings), plus the tokens whose keys collide with another stored token's, by name (`exact`; empty but
    for a chance of about n^2 / 2^65 for n tokens). A token neither holds is one the statistics do not have: with 64-bit
    keys a token outside them finds a stored token's key with a chance of about n / 2^64 (5e-14 for a million)."""

    keys: np.ndarray  # int64, strictly increasing
    freqs: np.ndarray  # uint32, the document frequency of each key
    exact: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, doc_freq: Mapping[str, int]) -> HashedDocFreq:
        tokens = list(doc_freq)
        keys = token_hashes(tokens)
        freqs = np.fromiter((doc_freq[t] for t in tokens), dtype=np.int64, count=len(tokens))
        return cls.from_keys(keys, freqs, lambda colliding: {t: doc_freq[t] for t, k in zip(tokens, keys)
                                                             if int(k) in colliding})

    @classmethod
    def from_keys(cls, keys: np.ndarray, freqs: np.ndarray,
                  tokens_of: Callable[[set[int]], dict[str, int]] | None = None) -> HashedDocFreq:
        """The frequencies of (key, frequency) rows, one per token; keys stored more than once (colliding tokens)
        are kept by name through `tokens_of` (their keys -> {token: frequency}), ValueError without it."""
        keys, freqs = np.asarray(keys, dtype=np.int64), np.asarray(freqs, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        keys, freqs = keys[order], freqs[order]
        repeated = np.zeros(len(keys), dtype=bool)
        if len(keys) > 1:
            same = keys[1:] == keys[:-1]
            repeated[1:] |= same
            repeated[:-1] |= same
        exact: dict[str, int] = {}
        if repeated.any():
            if tokens_of is None:
                raise ValueError(f"{int(repeated.sum())} tokens share keys and their names are unknown")
            exact = dict(tokens_of({int(k) for k in keys[repeated]}))
            keys, freqs = keys[~repeated], freqs[~repeated]
        return cls(keys, freqs.astype(np.uint32), exact)

    def lookup(self, tokens: Sequence[str], default: int) -> np.ndarray:
        """The document frequency of each token (`default` for a token the statistics do not hold)."""
        out = np.full(len(tokens), default, dtype=np.int64)
        if not len(tokens):
            return out
        keys = token_hashes(tokens)
        at = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        if len(self.keys):
            found = self.keys[at] == keys
            out[found] = self.freqs[at[found]]
        for row, token in enumerate(tokens):
            if token in self.exact:
                out[row] = self.exact[token]
        return out

    def get(self, token: str, default: int = 0) -> int:
        return int(self.lookup([token], default)[0])

    def __len__(self) -> int:
        return len(self.keys) + len(self.exact)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, HashedDocFreq) and np.array_equal(self.keys, other.keys)
                and np.array_equal(self.freqs, other.freqs) and self.exact == other.exact)

    __hash__ = None  # type: ignore[assignment]  # mutable arrays


@dataclass(frozen=True)
class Bm25Stats:
    """BM25's corpus statistics, frozen: the number of documents, their mean length in tokens and each token's
    document frequency. With them BM25 of a (query, product text) pair is a function of the pair alone, so a model
    version that adds it to its logit scores a pair the same on any executor and any night.

    `doc_freq` maps tokens to frequencies (a dict, as JSON holds it) or hashed tokens to them (HashedDocFreq, as the
    binary file holds them). Statistics may leave out the rare tokens (`pruned`): those in fewer than `min_df`
    documents. A token they do not hold counts as in `missing_df` = min_df - 1 documents (0 when nothing was pruned:
    a token no document had counts as in none)."""

    documents: int
    mean_length: float
    doc_freq: Mapping[str, int] | HashedDocFreq
    min_df: int = 1  # tokens in fewer documents than this are left out (1: none)

    @property
    def missing_df(self) -> int:
        """The document frequency of a token the statistics do not hold."""
        return self.min_df - 1

    def idf(self, token: str) -> float:
        """Lucene's idf (bm25s's `lucene` method) of the token's document frequency (`missing_df` when not held)."""
        return lucene_idf(self.documents, self.doc_freq.get(token, self.missing_df))

    def idfs(self, tokens: Sequence[str]) -> dict[str, float]:
        """`idf` of each distinct token, looked up at once."""
        distinct = list(dict.fromkeys(tokens))
        if isinstance(self.doc_freq, HashedDocFreq):
            freqs = [int(df) for df in self.doc_freq.lookup(distinct, self.missing_df)]
        else:
            freqs = [self.doc_freq.get(t, self.missing_df) for t in distinct]
        return {t: lucene_idf(self.documents, df) for t, df in zip(distinct, freqs)}

    def pruned(self, min_df: int = 1, max_tokens: int | None = None) -> Bm25Stats:
        """These statistics without the tokens in fewer than `min_df` documents, raised (`pruning_min_df`) until at
        most `max_tokens` tokens remain. Needs token names (a dict `doc_freq`)."""
        if isinstance(self.doc_freq, HashedDocFreq):
            raise ValueError("hashed statistics are pruned where they are computed (pruning_min_df), not afterwards")
        floor = pruning_min_df(Counter(self.doc_freq.values()), max(min_df, self.min_df), max_tokens)
        return Bm25Stats(self.documents, self.mean_length, {t: df for t, df in self.doc_freq.items() if df >= floor},
                         floor)

    def hashed(self) -> Bm25Stats:
        """The same statistics with hashed tokens (what LEXICAL_NPZ_FILE holds)."""
        if isinstance(self.doc_freq, HashedDocFreq):
            return self
        return Bm25Stats(self.documents, self.mean_length, HashedDocFreq.from_mapping(self.doc_freq), self.min_df)

    def max_idf_error(self, in_corpus: bool = True) -> float:
        """The most the idf of one token can differ from its idf under the unpruned statistics: a pruned token was
        in 1 to min_df - 1 documents (`in_corpus`), or in none (a product text newer than the statistics)."""
        if self.min_df <= 1:
            return 0.0
        return lucene_idf(self.documents, 1 if in_corpus else 0) - lucene_idf(self.documents, self.missing_df)

    def describe(self) -> dict[str, Any]:
        """What a model card records of them."""
        return {"documents": self.documents, "mean_length": self.mean_length, "tokens": len(self.doc_freq),
                "min_df": self.min_df, "max_idf_error": self.max_idf_error()}

    def to_json(self) -> str:
        if isinstance(self.doc_freq, HashedDocFreq):
            raise ValueError("hashed statistics have no token names to write as JSON: use to_npz")
        pruned = {"min_df": self.min_df} if self.min_df != 1 else {}
        return json.dumps({"documents": self.documents, "mean_length": self.mean_length, "k1": BM25_K1, "b": BM25_B,
                           **pruned, "doc_freq": dict(sorted(self.doc_freq.items()))})

    def to_npz(self) -> bytes:
        """The statistics as LEXICAL_NPZ_FILE holds them: an uncompressed .npz of `keys` (int64, sorted token hashes),
        `freqs` (uint32) and `meta` (JSON: format, documents, mean length, k1, b, min_df and the colliding tokens)."""
        hashed = self.hashed().doc_freq
        assert isinstance(hashed, HashedDocFreq)
        meta = {"format": NPZ_FORMAT, "documents": self.documents, "mean_length": self.mean_length, "k1": BM25_K1,
                "b": BM25_B, "min_df": self.min_df, "exact": dict(sorted(hashed.exact.items()))}
        buffer = io.BytesIO()
        np.savez(buffer, keys=hashed.keys, freqs=hashed.freqs.astype(np.uint32), meta=np.array(json.dumps(meta)))
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, data: bytes | str | Path) -> Bm25Stats:
        """The statistics of `to_npz`'s bytes (or file); ValueError saying what is wrong, as `from_json`."""
        content = data if isinstance(data, bytes) else Path(data).read_bytes()
        if not content.startswith(b"PK\x03\x04"):
            raise ValueError("not a .npz file (no zip header)")
        try:
            with np.load(io.BytesIO(content), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in ("keys", "freqs", "meta") if name in npz.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"not a .npz file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        missing = [name for name in ("keys", "freqs", "meta") if name not in arrays]
        if missing:
            raise ValueError(f"no {', '.join(missing)} array")
        keys, freqs, meta = arrays["keys"], arrays["freqs"], json.loads(str(arrays["meta"]))
        if not isinstance(meta, dict) or meta.get("format") != NPZ_FORMAT:
            raise ValueError(f"meta's format is {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                             f"not {NPZ_FORMAT}")
        documents, mean_length, min_df = _checked_counts(meta, ("documents", "mean_length"))
        exact = meta.get("exact", {})
        if not isinstance(exact, dict):
            raise ValueError("exact is not an object of token: frequency")
        if keys.dtype != np.int64 or keys.ndim != 1 or freqs.ndim != 1 or len(freqs) != len(keys) \
                or freqs.dtype.kind not in "iu":
            raise ValueError(f"keys ({keys.dtype}, {keys.shape}) and freqs ({freqs.dtype}, {freqs.shape}) are not "
                             "two int arrays of one length")
        if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):
            raise ValueError("keys are not strictly increasing")
        freqs = freqs.astype(np.int64)
        out_of_range = (freqs < 0) | (freqs > documents)
        if out_of_range.any():
            raise ValueError(f"{int(out_of_range.sum())} frequencies are not from 0 to documents ({documents}), e.g. "
                             f"{int(freqs[out_of_range][0])}")
        _check_doc_freq(list(exact.items()), documents)
        return cls(documents, mean_length, HashedDocFreq(keys, freqs.astype(np.uint32),
                                                         {str(k): int(v) for k, v in exact.items()}), min_df)

    @classmethod
    def from_json(cls, text: str) -> Bm25Stats:
        """The statistics of `to_json`'s text; ValueError saying what is wrong when the text parses but cannot be
        statistics of a corpus (no documents, a negative or fractional count, a frequency above the documents, a
        mean length that is negative or not finite), which would score NaN or fail inside a Spark task."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found a JSON {type(data).__name__}")
        documents, mean_length, min_df = _checked_counts(data, ("documents", "mean_length", "doc_freq"))
        doc_freq = data["doc_freq"]
        if not isinstance(doc_freq, dict):
            raise ValueError(f"doc_freq is a JSON {type(doc_freq).__name__}, not an object of token: frequency")
        _check_doc_freq(list(doc_freq.items()), documents)
        return cls(documents, mean_length, {str(k): int(v) for k, v in doc_freq.items()}, min_df)


def _checked_counts(data: dict[str, Any], required: tuple[str, ...]) -> tuple[int, float, int]:
    """(documents, mean_length, min_df) of a statistics file's header, checked (ValueError)."""
    if (data.get("k1"), data.get("b")) != (BM25_K1, BM25_B):
        raise ValueError(f"BM25 statistics for k1={data.get('k1')}, b={data.get('b')}; this code uses "
                         f"k1={BM25_K1}, b={BM25_B}")
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    documents, mean_length, min_df = data["documents"], data["mean_length"], data.get("min_df", 1)
    if not _whole(documents) or documents < 1:
        raise ValueError(f"documents is {json.dumps(documents)}, not a whole number of 1 or more")
    if isinstance(mean_length, bool) or not isinstance(mean_length, (int, float)) or not 0 <= mean_length < math.inf:
        raise ValueError(f"mean_length is {json.dumps(mean_length)}, not a finite number of 0 or more")
    if not _whole(min_df) or not 1 <= min_df <= documents + 1:
        raise ValueError(f"min_df is {json.dumps(min_df)}, not a whole number from 1 to documents + 1")
    return int(documents), float(mean_length), int(min_df)


def _check_doc_freq(items: list[tuple[Any, Any]], documents: int) -> None:
    bad = [(token, df) for token, df in items if not _whole(df) or not 0 <= df <= documents]
    if bad:
        token, df = bad[0]
        raise ValueError(f"doc_freq of {json.dumps(token)} is {json.dumps(df)}, not a whole number from 0 to "
                         f"documents ({documents})" + (f"; {len(bad) - 1} more such tokens" if len(bad) > 1 else ""))


def lucene_idf(documents: int, df: int) -> float:
    """Lucene's idf of a token in `df` of `documents` documents."""
    return math.log(1.0 + (documents - df + 0.5) / (df + 0.5))


def pruning_min_df(df_counts: Mapping[int, int], min_df: int = 1, max_tokens: int | None = None) -> int:
    """The least document frequency a token needs to be kept: `min_df`, raised until at most `max_tokens` tokens
    remain (`df_counts`: how many tokens have each document frequency). Tokens of one frequency are kept or left out
    together, so fewer than `max_tokens` may remain."""
    floor = max(1, min_df)
    if max_tokens is None:
        return floor
    kept = sum(n for df, n in df_counts.items() if df >= floor)
    for df in sorted(df_counts):
        if kept <= max_tokens:
            break
        if df >= floor:
            kept -= df_counts[df]
            floor = df + 1
    return floor


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
    idf = stats.idfs([t for query in dict.fromkeys(queries) for t in tokens[query]])
    scores = np.zeros(len(queries))
    for row, (query, text) in enumerate(zip(queries, texts)):
        tf, length = counts[text], len(tokens[text])
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / stats.mean_length) if stats.mean_length else BM25_K1
        scores[row] = sum(idf[t] * tf[t] / (tf[t] + norm) for t in tokens[query] if tf[t])
    return scores
