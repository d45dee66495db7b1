"""FeatureBundle: per-modality feature matrices aligned to one list of sample names."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np


@dataclass
class ModalityFeatures:
    """``X [N, D]`` float32 and ``present [N]`` bool: a row whose feature is missing (no face, empty
    transcript, decode failure) is zero *and* marked absent, so fusion masks it."""

    X: np.ndarray
    present: np.ndarray
    source: str = ""

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])


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
        return FeatureBundle(names, {m: ModalityFeatures(f.X[idx], f.present[idx], f.source)
                                     for m, f in self.modalities.items()})

    def select(self, modalities: Sequence[str]) -> "FeatureBundle":
        unknown = set(modalities) - set(self.modalities)
        if unknown:
            raise KeyError(f"modalities {sorted(unknown)} not in the bundle ({sorted(self.modalities)})")
        return FeatureBundle(self.names, {m: self.modalities[m] for m in modalities})

    def coverage(self) -> Mapping[str, float]:
        return {m: float(f.present.mean()) if len(self.names) else 0.0 for m, f in self.modalities.items()}

    def __len__(self) -> int:
        return len(self.names)
