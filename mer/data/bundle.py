"""FeatureBundle: per-modality features aligned to one list of sample names.

A modality is utterance level (``X [N, D]``) or frame level (``X [N, T, D]`` padded, with
``lengths [N]``: the real steps of each row; :mod:`mer.data.sequences` pads, aligns and windows).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .frames import align_lengths, align_to_times, masked_mean, reference_times


@dataclass
class ModalityFeatures:
    """``X [N, D]`` float32 and ``present [N]`` bool: a row whose feature is missing (no face, empty
    transcript, decode failure) is zero *and* marked absent, so fusion masks it.

    Frame level: ``X [N, T, D]`` zero-padded and ``lengths [N]`` int64 (0 for an absent row);
    ``present`` is then ``lengths > 0``. ``times [N, T]`` float64, when known: each step's time in
    seconds from the start of the sample's media (:mod:`mer.core.timebase`), NaN past a row's
    length and throughout a row whose times are unknown; None when no row has times."""

    X: np.ndarray
    present: np.ndarray
    source: str = ""
    lengths: np.ndarray | None = None
    times: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.lengths is not None:
            if self.X.ndim != 3 or self.lengths.shape != (self.X.shape[0],):
                raise ValueError(f"frame-level features need X [N, T, D] and lengths [N], got "
                                 f"{self.X.shape} and {self.lengths.shape}")
            if np.any(self.lengths > self.X.shape[1]):
                raise ValueError("a sequence is longer than the padded width")
            if np.any((self.lengths > 0) != self.present):
                raise ValueError("present must be lengths > 0 at frame level")
            if self.times is not None and self.times.shape != self.X.shape[:2]:
                raise ValueError(f"step times {self.times.shape} do not match X {self.X.shape}")
        elif self.X.ndim != 2:
            raise ValueError(f"utterance-level features need X [N, D], got {self.X.shape}; "
                             "frame-level features need lengths")
        elif self.times is not None:
            raise ValueError("utterance-level features have no step times")

    @property
    def dim(self) -> int:
        return int(self.X.shape[-1])

    @property
    def is_sequence(self) -> bool:
        return self.lengths is not None

    def step_times(self, i: int) -> np.ndarray | None:
        """Row ``i``'s step times ``[lengths[i]]`` when known, else None."""
        if self.times is None or self.lengths is None:
            return None
        t = self.times[i, :int(self.lengths[i])]
        return t if len(t) and np.isfinite(t).all() else None

    def rows(self, idx: np.ndarray) -> "ModalityFeatures":
        lengths = None if self.lengths is None else self.lengths[idx]
        X = self.X[idx]
        times = None if self.times is None else self.times[idx]
        if lengths is not None and len(lengths):
            X = X[:, :max(int(lengths.max()), 1)]    # no all-padding tail
            times = None if times is None else times[:, :X.shape[1]]
        return ModalityFeatures(X, self.present[idx], self.source, lengths, times)

    def pooled(self) -> "ModalityFeatures":
        """Utterance level: a frame-level modality becomes the mean over its real steps."""
        if self.lengths is None:
            return self
        return ModalityFeatures(masked_mean(self.X, self.lengths), self.present.copy(), self.source)

    def as_sequence(self) -> "ModalityFeatures":
        """Frame level: an utterance-level modality becomes a sequence of one step."""
        if self.lengths is not None:
            return self
        return ModalityFeatures(self.X[:, None, :], self.present.copy(), self.source,
                                self.present.astype(np.int64))

    @staticmethod
    def concatenate(parts: Sequence["ModalityFeatures"]) -> "ModalityFeatures":
        """Rows of every part in order (frame level: padded to the widest part)."""
        if all(p.lengths is None for p in parts):
            return ModalityFeatures(np.concatenate([p.X for p in parts]),
                                    np.concatenate([p.present for p in parts]), parts[0].source)
        parts = [p.as_sequence() for p in parts]
        T = max(p.X.shape[1] for p in parts)
        X = np.concatenate([np.pad(p.X, ((0, 0), (0, T - p.X.shape[1]), (0, 0))) for p in parts])
        times = None
        if any(p.times is not None for p in parts):
            times = np.concatenate([np.pad(p.times, ((0, 0), (0, T - p.X.shape[1])), constant_values=np.nan)
                                    if p.times is not None else np.full(p.X.shape[:1] + (T,), np.nan) for p in parts])
        return ModalityFeatures(X, np.concatenate([p.present for p in parts]), parts[0].source,
                                np.concatenate([p.lengths for p in parts]), times)


@dataclass
class FeatureBundle:
    names: list[str]
    modalities: dict[str, ModalityFeatures] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m, f in self.modalities.items():
            if f.X.shape[0] != len(self.names) or f.present.shape != (len(self.names),):
                raise ValueError(f"modality {m}: {f.X.shape[0]} rows for {len(self.names)} names")
        self._index = {n: i for i, n in enumerate(self.names)}

    @property
    def dims(self) -> dict[str, int]:
        return {m: f.dim for m, f in self.modalities.items()}

    def take(self, names: Sequence[str]) -> "FeatureBundle":
        """Rows for ``names`` in that order (joined by name, never by position)."""
        missing = [n for n in names if n not in self._index]
        if missing:
            raise KeyError(f"{len(missing)} names not in the bundle, e.g. {missing[:3]}")
        idx = np.array([self._index[n] for n in names], dtype=np.int64)
        return self.rows(idx, names=list(names))

    def rows(self, idx: np.ndarray, names: Sequence[str] | None = None) -> "FeatureBundle":
        names = list(names) if names is not None else [self.names[i] for i in idx]
        return FeatureBundle(names, {m: f.rows(idx) for m, f in self.modalities.items()})

    def select(self, modalities: Sequence[str]) -> "FeatureBundle":
        unknown = set(modalities) - set(self.modalities)
        if unknown:
            raise KeyError(f"modalities {sorted(unknown)} not in the bundle ({sorted(self.modalities)})")
        return FeatureBundle(self.names, {m: self.modalities[m] for m in modalities})

    @property
    def has_sequences(self) -> bool:
        return any(f.is_sequence for f in self.modalities.values())

    def pooled(self) -> "FeatureBundle":
        """Every frame-level modality mean-pooled over its real steps (utterance level)."""
        if not self.has_sequences:
            return self
        return FeatureBundle(self.names, {m: f.pooled() for m, f in self.modalities.items()})

    def as_sequences(self) -> "FeatureBundle":
        """Every modality at frame level (utterance-level ones as one-step sequences)."""
        return FeatureBundle(self.names, {m: f.as_sequence() for m, f in self.modalities.items()})

    def aligned(self, to: str | int, method: str = "auto") -> "FeatureBundle":
        """Frame-level modalities resampled to a common time base per sample: the steps of
        modality ``to`` (or a fixed number of steps). Where both a stream's and the reference's
        step times are known the stream is taken at the reference's times, else by share of
        length (:func:`mer.data.frames.align_to_times`); see :mod:`mer.data.sequences`."""
        seq = {m: f for m, f in self.modalities.items() if f.is_sequence}
        if not seq:
            return self
        lengths_by = {m: f.lengths for m, f in seq.items()}
        targets = align_lengths(lengths_by, to)
        at = reference_times({m: f.times for m, f in seq.items()}, lengths_by, to)
        mods = dict(self.modalities)
        for m, f in seq.items():
            X, lengths, times = align_to_times(f.X, f.lengths, f.times, np.where(f.present, targets, 0), at, method)
            mods[m] = ModalityFeatures(X, lengths > 0, f.source, lengths, times)
        return FeatureBundle(self.names, mods)

    def coverage(self) -> Mapping[str, float]:
        return {m: float(f.present.mean()) if len(self.names) else 0.0 for m, f in self.modalities.items()}

    def __len__(self) -> int:
        return len(self.names)
