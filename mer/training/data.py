"""A labelled (or unlabelled) set of rows as the estimator sees it: features + targets."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from mer.data.bundle import FeatureBundle, ModalityFeatures


@dataclass
class Split:
    """``X``: features of N samples; ``y [N]`` int64 (-1 = unknown); ``v [N]`` float32 (nan = unknown);
    ``weight [N]`` optional per-sample loss weights; ``targets``: more targets by name, row-aligned:
    ``arousal [N]`` float32 (nan = unknown) and ``frames [N, T]`` int64 per-frame classes on the
    time base of the frame-level features (-1 = unknown or padding).

    ``groups [N]`` optional speaker/session/dialogue of each row (str), what group-aware folds keep
    whole; ``protocol``: how cross-validation folds this split (:mod:`mer.training.folds`);
    ``valence_range``: set for sentiment data (valence the only target): the declared range, which
    the sentiment scores' bins follow."""

    X: FeatureBundle
    y: np.ndarray
    v: np.ndarray
    weight: np.ndarray | None = None
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    groups: np.ndarray | None = None
    protocol: str = "stratified"
    valence_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        n = len(self.X)
        if self.y.shape != (n,) or self.v.shape != (n,):
            raise ValueError(f"targets of shape {self.y.shape}/{self.v.shape} for {n} samples")
        for k, t in self.targets.items():
            if len(t) != n:
                raise ValueError(f"target {k!r} has {len(t)} rows for {n} samples")
        if self.groups is not None and len(self.groups) != n:
            raise ValueError(f"groups has {len(self.groups)} rows for {n} samples")

    def with_features(self, X: FeatureBundle) -> "Split":
        """The same rows and targets with other features (a modality subset, another level)."""
        return replace(self, X=X)

    def __len__(self) -> int:
        return len(self.X)

    @property
    def names(self) -> list[str]:
        return self.X.names

    def rows(self, idx: Sequence[int] | np.ndarray) -> "Split":
        idx = np.asarray(idx, dtype=np.int64)
        return Split(self.X.rows(idx), self.y[idx], self.v[idx],
                     None if self.weight is None else self.weight[idx],
                     {k: t[idx] for k, t in self.targets.items()},
                     None if self.groups is None else self.groups[idx], self.protocol, self.valence_range)


def renamed(split: Split, suffix: str) -> Split:
    """The same rows named ``<name>@<suffix>`` (a corrupted copy must not share its clean row's name)."""
    return split.with_features(FeatureBundle([f"{n}@{suffix}" for n in split.names], split.X.modalities))


def concat_splits(parts: Sequence[Split]) -> Split:
    """The rows of every part in order; parts have the same modalities and distinct names.
    Rows of a part without weights weigh 1 when any part has weights."""
    if not parts:
        raise ValueError("nothing to concatenate")
    if len(parts) == 1:
        return parts[0]
    mods = set(parts[0].X.modalities)
    for p in parts[1:]:
        if set(p.X.modalities) != mods:
            raise ValueError(f"cannot concatenate splits with modalities {sorted(mods)} and "
                             f"{sorted(p.X.modalities)}")

    names = [n for p in parts for n in p.names]
    X = FeatureBundle(names, {m: ModalityFeatures.concatenate([p.X.modalities[m] for p in parts])
                              for m in sorted(mods)})
    if len(set(names)) != len(names):
        raise ValueError("concatenated splits share sample names; rename one (training.data.renamed)")
    weight = None
    if any(p.weight is not None for p in parts):
        weight = np.concatenate([p.weight if p.weight is not None else np.ones(len(p), np.float32)
                                 for p in parts]).astype(np.float32)
    targets = {k: _concat_target(k, [p.targets.get(k) for p in parts], [len(p) for p in parts])
               for k in sorted({k for p in parts for k in p.targets})}
    groups = None
    if all(p.groups is not None for p in parts):
        groups = np.concatenate([p.groups for p in parts])
    return Split(X, np.concatenate([p.y for p in parts]), np.concatenate([p.v for p in parts]), weight, targets,
                 groups, parts[0].protocol, parts[0].valence_range)


def _concat_target(name: str, parts: Sequence[np.ndarray | None], sizes: Sequence[int]) -> np.ndarray:
    """One target over concatenated parts: unknown (nan / -1) where a part lacks it; per-frame
    targets padded with -1 to the longest."""
    known = [p for p in parts if p is not None]
    if known[0].ndim == 1:
        fill = np.nan if known[0].dtype.kind == "f" else -1
        return np.concatenate([p if p is not None else np.full(n, fill, known[0].dtype)
                               for p, n in zip(parts, sizes)])
    T = max(p.shape[1] for p in known)
    out = np.full((sum(sizes), T), -1, np.int64)
    row = 0
    for p, n in zip(parts, sizes):
        if p is not None:
            out[row:row + n, :p.shape[1]] = p
        row += n
    return out
