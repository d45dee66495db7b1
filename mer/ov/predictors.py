"""Open-vocabulary predictors: from features or text to a list of emotion words per sample.

``ProbabilityVocabularyPredictor``
    A discrete model's class probabilities ``[N, C]`` plus a vocabulary mapping (class -> words):
    the words of the top class, and of every further class whose probability is at least
    ``min_prob``, up to ``max_classes`` classes.
``MultiLabelOVPredictor``
    A multi-label classifier over an emotion vocabulary learned from OV ground truth: words are
    reduced to group keys by a grouper's ``key`` (the offline grouper's, so ``joy``/``joyful``/
    ``happiness`` are one target), keys seen at least ``min_count`` times form the vocabulary,
    one-vs-rest logistic regression learns them from features; a sample gets its top-``k``
    keys whose probability clears ``threshold`` (the top one always), written as each key's most
    frequent surface word. ``k`` and ``threshold`` are picked by inner cross-validation on the
    training folds' MER2024 score (``select``).
``EmbeddingSimilarityPredictor``
    Zero-shot: the utterance and every vocabulary word are embedded by the offline text encoder
    (all-MiniLM-L6-v2, the ``minilm`` extractor's loader); the ``k`` words of highest cosine
    similarity, after subtracting each word's mean similarity over the corpus (so generic words do
    not win everywhere), are predicted.
``LLMOVPredictor``
    Optional: asks an OpenAI-compatible chat endpoint for the emotion words of a transcript
    (temperature 0, answers cached per sample in JSONL, like the LLM grouper).
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Callable, Mapping, Sequence

import numpy as np

from feature_extractors.base import build_extractor
from mer.ov.groupers import ChatClient, JsonlCache, OfflineGrouper
from mer.ov.io import parse_openset
from mer.ov.lexicon import normalise
from mer.ov.metric import mer2024_ov_score

DEFAULT_CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "neutral": ("calm",), "angry": ("angry",), "happy": ("happy",), "sad": ("sad",),
    "worried": ("worried",), "surprise": ("surprised",),
}
"""MER's six classes as OV words (neutral -> calm: the OV labels describe states, and the
official ground truth rarely says 'neutral')."""


class ProbabilityVocabularyPredictor:
    def __init__(self, classes: Sequence[str], class_words: Mapping[str, Sequence[str]] | None = None,
                 min_prob: float = 0.3, max_classes: int = 2) -> None:
        words = dict(class_words or DEFAULT_CLASS_WORDS)
        missing = [c for c in classes if c not in words]
        if missing:
            raise ValueError(f"no OV words for classes {missing}; pass class_words")
        self.classes = list(classes)
        self.class_words = words
        self.min_prob = min_prob
        self.max_classes = max_classes

    def predict(self, probs: np.ndarray, names: Sequence[str]) -> dict[str, list[str]]:
        probs = np.asarray(probs, dtype=float)
        if probs.shape != (len(names), len(self.classes)):
            raise ValueError(f"probabilities have shape {probs.shape}; expected "
                             f"({len(names)}, {len(self.classes)})")
        out = {}
        for name, p in zip(names, probs):
            order = np.argsort(-p)
            chosen = [order[0]] + [j for j in order[1:self.max_classes] if p[j] >= self.min_prob]
            out[name] = list(dict.fromkeys(w for j in chosen for w in self.class_words[self.classes[j]]))
        return out


class MultiLabelOVPredictor:
    def __init__(self, key: Callable[[str], str] | None = None, min_count: int = 3, k: int = 2,
                 threshold: float = 0.2, C: float = 1.0, seed: int = 0) -> None:
        self.key = key or OfflineGrouper().key
        self.min_count = min_count
        self.k = k
        self.threshold = threshold
        self.C = C
        self.seed = seed

    def fit(self, X: np.ndarray, words: Sequence[Sequence[str]]) -> "MultiLabelOVPredictor":
        from sklearn.linear_model import LogisticRegression  # deferred: loads sklearn only when used
        from sklearn.multiclass import OneVsRestClassifier  # deferred: loads sklearn only when used
        from sklearn.preprocessing import StandardScaler  # deferred: loads sklearn only when used

        keys_per_sample = [{self.key(w) for w in ws} for ws in words]
        counts = Counter(k for ks in keys_per_sample for k in ks)
        self.vocab_ = sorted(k for k, c in counts.items() if c >= self.min_count)
        if len(self.vocab_) < 2:
            raise ValueError(f"fewer than 2 emotion keys occur >= {self.min_count} times in the "
                             f"OV ground truth; lower min_count or give more samples")
        surface: dict[str, Counter] = {}
        for ws in words:
            for w in ws:
                surface.setdefault(self.key(w), Counter())[normalise(w)] += 1
        self.surface_ = {k: surface[k].most_common(1)[0][0] for k in self.vocab_}
        index = {k: i for i, k in enumerate(self.vocab_)}
        Y = np.zeros((len(words), len(self.vocab_)), dtype=int)
        for i, ks in enumerate(keys_per_sample):
            for k in ks:
                if k in index:
                    Y[i, index[k]] = 1
        self.scaler_ = StandardScaler().fit(X)
        keep = Y.sum(0) > 0
        self._cols = np.flatnonzero(keep)
        self.model_ = OneVsRestClassifier(LogisticRegression(C=self.C, max_iter=2000))
        self.model_.fit(self.scaler_.transform(X), Y[:, keep])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        P = np.zeros((len(X), len(self.vocab_)))
        P[:, self._cols] = self.model_.predict_proba(self.scaler_.transform(X))
        return P

    def decode(self, P: np.ndarray, names: Sequence[str], k: int | None = None,
               threshold: float | None = None) -> dict[str, list[str]]:
        k = self.k if k is None else k
        threshold = self.threshold if threshold is None else threshold
        out = {}
        for name, p in zip(names, P):
            order = np.argsort(-p)[:k]
            chosen = [order[0]] + [j for j in order[1:] if p[j] >= threshold]
            out[name] = [self.surface_[self.vocab_[j]] for j in chosen]
        return out

    def predict(self, X: np.ndarray, names: Sequence[str]) -> dict[str, list[str]]:
        return self.decode(self.predict_proba(X), names)

    def select(self, X: np.ndarray, words: Sequence[Sequence[str]], names: Sequence[str], grouper,
               ks=(1, 2, 3, 4), thresholds=(0.05, 0.1, 0.2, 0.3, 0.5), n_splits: int = 3
               ) -> "MultiLabelOVPredictor":
        """Choose ``k``/``threshold`` by inner CV (MER2024 score under ``grouper``), then fit."""
        from sklearn.model_selection import KFold  # deferred: loads sklearn only when used

        names = list(names)
        gold = {n: list(w) for n, w in zip(names, words)}
        oof: dict[int, tuple[np.ndarray, MultiLabelOVPredictor]] = {}
        for tr, va in KFold(n_splits, shuffle=True, random_state=self.seed).split(X):
            m = MultiLabelOVPredictor(self.key, self.min_count, self.k, self.threshold, self.C,
                                      self.seed).fit(X[tr], [words[i] for i in tr])
            oof[len(oof)] = (va, m)
        best = (-1.0, self.k, self.threshold)
        for k in ks:
            for t in thresholds:
                pred: dict[str, list[str]] = {}
                for va, m in oof.values():
                    pred.update(m.decode(m.predict_proba(X[va]), [names[i] for i in va], k, t))
                s = mer2024_ov_score(gold, pred, grouper).score
                if s > best[0]:
                    best = (s, k, t)
        self.inner_score_, self.k, self.threshold = best
        return self.fit(X, words)


def load_text_encoder():
    """The offline all-MiniLM-L6-v2 encoder, loaded the way the ``minilm`` extractor loads it."""
    encoder = build_extractor("minilm", {})
    encoder.setup("cpu")
    return encoder


class EmbeddingSimilarityPredictor:
    def __init__(self, vocabulary: Sequence[str], k: int = 2, center: bool = True,
                 encoder=None, template: str = "I feel {word}.") -> None:
        if not vocabulary:
            raise ValueError("the embedding predictor needs a non-empty emotion vocabulary")
        self.vocabulary = list(dict.fromkeys(normalise(w) for w in vocabulary))
        self.k = k
        self.center = center
        self.template = template
        self._encoder = encoder

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = load_text_encoder()
        return self._encoder

    def word_vectors(self) -> np.ndarray:
        return self.encoder.embed([self.template.format(word=w) for w in self.vocabulary])

    def predict_texts(self, texts: Sequence[str], names: Sequence[str],
                      text_vectors: np.ndarray | None = None) -> dict[str, list[str]]:
        """``texts`` are transcripts (an empty one gets the vocabulary's most typical word)."""
        W = self.word_vectors()
        T = text_vectors if text_vectors is not None else self._embed_texts(texts)
        sims = T @ W.T
        if self.center:
            sims = sims - sims.mean(0, keepdims=True)
        out = {}
        for name, s in zip(names, sims):
            out[name] = [self.vocabulary[j] for j in np.argsort(-s)[: self.k]]
        return out

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        dim = self.encoder.model.config.hidden_size
        T = np.zeros((len(texts), dim), dtype=np.float32)
        idx = [i for i, t in enumerate(texts) if t and t.strip()]
        if idx:
            T[idx] = self.encoder.embed([texts[i] for i in idx])
        return T


LLM_OV_PROMPT = (
    "Please assume the role of an expert in the field of emotions. Here is what a person says: "
    "\"{text}\". Which emotions does the speaker feel? Answer with a Python list of English "
    "emotion words only, for example ['happy', 'relaxed']. Output:"
)


class LLMOVPredictor:
    """Emotion words for a transcript from a chat model (OpenAI-compatible, temperature 0)."""

    def __init__(self, base_url: str, model: str, cache_path: str, api_key_env: str = "OPENAI_API_KEY",
                 prompt: str = LLM_OV_PROMPT) -> None:
        self.client = ChatClient(base_url, model, api_key_env)
        self.cache = JsonlCache(cache_path)
        self.prompt = prompt

    def predict_texts(self, texts: Sequence[str], names: Sequence[str]) -> dict[str, list[str]]:
        out = {}
        for name, text in zip(names, texts):
            key = json.dumps([self.client.model, name, text], ensure_ascii=False)
            answer = self.cache.get(key)
            if answer is None:
                answer = self.client.complete(self.prompt.format(text=text))
                self.cache.put(key, answer, sample=name)
            try:
                words = parse_openset(answer[answer.index("["):]) if "[" in answer else []
            except ValueError:
                words = []
            out[name] = [w.strip() for w in words if w.strip()]
        return out
