"""``tfidf``: TF-IDF bag of n-grams fitted on the training transcripts (no weights).

A lexical baseline that needs nothing but scikit-learn. It learns state from the corpus, so it is a
``needs_fit`` extractor: the pipeline calls ``fit(train_samples)`` before ``extract_batch``, and
``state_digest()`` (a hash of the fitted vocabulary and idf weights) enters the cache key, so
features from a different training set never share a cache entry.

Analyzer: word 1-2-grams for space-delimited languages; character 1-3-grams (``char_wb``) for
Chinese/Japanese, which have no word boundaries a regex could find. Output: float32 ``[V]``,
``V = len(vocabulary) <= max_features``, L2-normalised; a transcript whose n-grams are all
out of vocabulary gives the zero vector (it is a real transcript with no known terms, not a failure).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from feature_extractors.base import EXTRACTORS, Extractor
from feature_extractors.text import transcript_or_failure
from mer.core.failures import ExtractionFailure
from mer.core.samples import Sample

_ANALYZERS = ("auto", "word", "char")
_CHAR_LANGUAGES = frozenset({"chinese", "japanese"})


@EXTRACTORS.register("tfidf")
class TfidfText(Extractor):
    """Transcript -> ``[V]`` TF-IDF vector over the training vocabulary."""

    name: ClassVar[str] = "tfidf"
    modality: ClassVar[str] = "text"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    needs_fit: ClassVar[bool] = True

    @dataclass(frozen=True)
    class Config:
        language: str = "english"
        analyzer: str = "auto"                       # auto | word | char
        word_ngram_range: tuple[int, int] = (1, 2)
        char_ngram_range: tuple[int, int] = (1, 3)
        max_features: int = 2048
        min_df: int = 2                              # drop n-grams seen in a single transcript
        sublinear_tf: bool = True
        batch_size: int = 256

    def __init__(self, config: "TfidfText.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        if self.config.analyzer not in _ANALYZERS:
            raise ValueError(f"tfidf analyzer must be one of {_ANALYZERS}, got {self.config.analyzer!r}")
        self.vectorizer_ = None
        self._state_digest: str | None = None

    @property
    def resolved_analyzer(self) -> str:
        """``word`` or ``char`` (what ``auto`` means for this language)."""
        if self.config.analyzer != "auto":
            return self.config.analyzer
        return "char" if self.config.language.lower() in _CHAR_LANGUAGES else "word"

    @property
    def dim(self) -> int:
        self._check_fitted()
        return len(self.vectorizer_.vocabulary_)

    # --- learning ------------------------------------------------------------------------
    def fit(self, samples: Sequence[Sample]) -> "TfidfText":
        """Fit the vocabulary and idf on the samples' non-empty transcripts; returns ``self``."""
        from sklearn.feature_extraction.text import TfidfVectorizer  # deferred: loads sklearn only when used

        c = self.config
        texts = [t.strip() for t in (s.text(c.language) for s in samples) if t and t.strip()]
        if not texts:
            raise ValueError(f"tfidf.fit got {len(samples)} samples and none has a non-empty "
                             f"{c.language} transcript")
        char = self.resolved_analyzer == "char"
        vectorizer = TfidfVectorizer(
            analyzer="char_wb" if char else "word",
            ngram_range=tuple(c.char_ngram_range if char else c.word_ngram_range),
            max_features=c.max_features, min_df=c.min_df, sublinear_tf=c.sublinear_tf,
            norm="l2", dtype=np.float32)
        try:
            vectorizer.fit(texts)
        except ValueError as err:  # sklearn: "After pruning, no terms remain..."
            raise ValueError(f"tfidf.fit on {len(texts)} {c.language} transcripts kept no n-gram "
                             f"(min_df={c.min_df}); fit on more transcripts or lower min_df. "
                             f"scikit-learn said: {err}") from None
        self.vectorizer_ = vectorizer
        self._state_digest = _vectorizer_digest(vectorizer)
        return self

    def state_digest(self) -> str:
        """Hash of the fitted vocabulary and idf; ``"unfitted"`` before :meth:`fit`."""
        return self._state_digest or "unfitted"

    def _check_fitted(self) -> None:
        if self.vectorizer_ is None:
            raise RuntimeError("the tfidf extractor is not fitted: call fit(train_samples) first "
                               "(the pipeline fits it on the training split)")

    # --- work ----------------------------------------------------------------------------
    def setup(self, device: str = "cpu") -> None:
        self._check_fitted()   # fail before any work, not at the first batch with text
        super().setup(device)

    def load(self, sample: Sample) -> str | ExtractionFailure:
        """The stripped transcript (CPU stage)."""
        return transcript_or_failure(sample, self.config.language)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[str]) -> list[np.ndarray | ExtractionFailure]:
        """One ``[V]`` float32 vector per transcript, in order."""
        self._check_fitted()
        rows = self.vectorizer_.transform(list(inputs)).toarray().astype(np.float32)   # [B, V]
        return list(rows)


def _vectorizer_digest(vectorizer) -> str:
    """sha256 of the terms in column order and their idf weights."""
    h = hashlib.sha256()
    terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
    h.update(json.dumps(terms, ensure_ascii=False).encode())
    h.update(np.asarray(vectorizer.idf_, dtype=np.float64).tobytes())
    return h.hexdigest()
