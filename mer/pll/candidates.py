"""Candidate-set labels: where partial labels come from, and how to measure them.

A candidate matrix ``S [N, C]`` is 0/1; row ``i`` lists the labels sample ``i`` may have.

* :func:`uniform_candidates` + :func:`swap_noise` (or both at once, :func:`noisy_candidates`):
  the ARNet/IRNet benchmark protocol. Every wrong label joins the true label's set independently
  with probability ``q``; then, with probability ``eta`` (drawn as ``u <= eta``), the true label
  is swapped for one label drawn uniformly from outside the set (the set keeps its size and
  loses the truth); a sample whose set already holds every label is left as it is.
* :func:`candidates_from_votes`: annotators' several votes per sample (every voted class).
* :func:`candidates_from_words`: open-vocabulary words mapped to classes through a word -> class
  table (unmapped words are ignored; a sample none of whose words map gets ``fallback``).
* :func:`candidate_stats`: average set size and, with the truth known, the fraction of sets
  containing it ("contains truth", the IRNet code's "bingo rate").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


def uniform_candidates(y: Sequence[int], n_classes: int, q: float,
                       rng: np.random.Generator) -> np.ndarray:
    """True label plus every wrong label independently with probability ``q``."""
    y = _labels(y, n_classes)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    S = (rng.uniform(0, 1, size=(len(y), n_classes)) < q).astype(np.float32)
    S[np.arange(len(y)), y] = 1.0
    return S


def swap_noise(y: Sequence[int], S: np.ndarray, eta: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``eta`` per sample, swap the true label for a random non-candidate."""
    y = _labels(y, S.shape[1])
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    S = np.array(S, dtype=np.float32, copy=True)
    if not (S[np.arange(len(y)), y] == 1).all():
        raise ValueError("every candidate set must contain its true label before noise is added")
    flip = rng.uniform(0, 1, size=len(y)) <= eta
    for i in np.flatnonzero(flip):
        outside = np.flatnonzero(S[i] == 0)
        if len(outside) == 0:       # every label is a candidate: nothing to swap in
            continue
        S[i, y[i]] = 0.0
        S[i, outside[rng.integers(len(outside))]] = 1.0
    return S


def noisy_candidates(y: Sequence[int], n_classes: int, q: float, eta: float,
                     seed: int = 0) -> np.ndarray:
    """The ARNet/IRNet noisy partial-label protocol with its own seeded generator."""
    rng = np.random.default_rng(seed)
    return swap_noise(y, uniform_candidates(y, n_classes, q, rng), eta, rng)


def candidates_from_votes(votes: Sequence[Sequence[str | int]], classes: Sequence[str],
                          names: Sequence[str] | None = None) -> np.ndarray:
    """One row per sample: every class some annotator voted for (strings or class indices)."""
    index = {c: i for i, c in enumerate(classes)}
    S = np.zeros((len(votes), len(classes)), dtype=np.float32)
    for i, vs in enumerate(votes):
        who = names[i] if names is not None else f"row {i}"
        if len(vs) == 0:
            raise ValueError(f"{who} has no annotator vote")
        for v in vs:
            j = v if isinstance(v, (int, np.integer)) else index.get(v)
            if j is None or not 0 <= int(j) < len(classes):
                raise ValueError(f"{who}: vote {v!r} is not one of {', '.join(classes)}")
            S[i, int(j)] = 1.0
    return S


def candidates_from_words(words: Sequence[Sequence[str]], word_to_class: Mapping[str, str],
                          classes: Sequence[str], fallback: str = "all",
                          names: Sequence[str] | None = None) -> np.ndarray:
    """Open-vocabulary words -> candidate classes via ``word_to_class`` (lower-cased keys).

    ``fallback`` for a sample with no mapped word: ``"all"`` (every class is a candidate) or
    ``"error"``."""
    if fallback not in ("all", "error"):
        raise ValueError(f"fallback must be 'all' or 'error', got {fallback!r}")
    index = {c: i for i, c in enumerate(classes)}
    bad = sorted({c for c in word_to_class.values() if c not in index})
    if bad:
        raise ValueError(f"word_to_class maps to unknown classes {bad}; classes: {', '.join(classes)}")
    S = np.zeros((len(words), len(classes)), dtype=np.float32)
    for i, ws in enumerate(words):
        for w in ws:
            c = word_to_class.get(w.lower().strip())
            if c is not None:
                S[i, index[c]] = 1.0
        if S[i].sum() == 0:
            if fallback == "error":
                who = names[i] if names is not None else f"row {i}"
                raise ValueError(f"{who}: none of the words {list(ws)} maps to a class")
            S[i] = 1.0
    return S


@dataclass(frozen=True)
class CandidateStats:
    avg_size: float
    contains_truth: float | None
    n_samples: int

    def __str__(self) -> str:
        truth = "" if self.contains_truth is None else f", contains truth {self.contains_truth:.3f}"
        return f"avg set size {self.avg_size:.2f}{truth} ({self.n_samples} samples)"


def candidate_stats(S: np.ndarray, y: Sequence[int] | None = None) -> CandidateStats:
    S = np.asarray(S)
    truth = None if y is None else float(S[np.arange(len(S)), np.asarray(y, dtype=int)].mean())
    return CandidateStats(float(S.sum(1).mean()), truth, len(S))


def _labels(y: Sequence[int], n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError("true labels must be a 1-D array of class indices")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    return y
