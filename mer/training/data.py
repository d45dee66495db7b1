"""A labelled (or unlabelled) set of rows as the estimator sees it: features + targets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mer.data.bundle import FeatureBundle


@dataclass
class Split:
    """``X``: features of N samples; ``y [N]`` int64 (-1 = unknown); ``v [N]`` float32 (nan = unknown);
    ``weight [N]`` optional per-sample loss weights."""

    X: FeatureBundle
    y: np.ndarray
    v: np.ndarray
    weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.X)
        if self.y.shape != (n,) or self.v.shape != (n,):
            raise ValueError(f"targets of shape {self.y.shape}/{self.v.shape} for {n} samples")

    def __len__(self) -> int:
        return len(self.X)

    @property
    def names(self) -> list[str]:
        return self.X.names

    def rows(self, idx: Sequence[int] | np.ndarray) -> "Split":
        idx = np.asarray(idx, dtype=np.int64)
        return Split(self.X.rows(idx), self.y[idx], self.v[idx],
                     None if self.weight is None else self.weight[idx])


def renamed(split: Split, suffix: str) -> Split:
    """The same rows named ``<name>@<suffix>`` (a corrupted copy must not share its clean row's name)."""
    X = FeatureBundle([f"{n}@{suffix}" for n in split.names], split.X.modalities)
    return Split(X, split.y, split.v, split.weight)


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
    from mer.data.bundle import ModalityFeatures

    names = [n for p in parts for n in p.names]
    X = FeatureBundle(names, {m: ModalityFeatures.concatenate([p.X.modalities[m] for p in parts])
                              for m in sorted(mods)})
    if len(set(names)) != len(names):
        raise ValueError("concatenated splits share sample names; rename one (training.data.renamed)")
    weight = None
    if any(p.weight is not None for p in parts):
        weight = np.concatenate([p.weight if p.weight is not None else np.ones(len(p), np.float32)
                                 for p in parts]).astype(np.float32)
    return Split(X, np.concatenate([p.y for p in parts]), np.concatenate([p.v for p in parts]), weight)
