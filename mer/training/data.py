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
