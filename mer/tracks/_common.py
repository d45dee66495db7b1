"""What the strategies outside the supervised family (open vocabulary, partial labels) share.

:class:`FlatFeatures` is how strategies without the fusion model see a sample: every feature stream
pooled to one vector (frame-level streams: the mean over valid frames), standardised with the
training rows' statistics over the rows that have that stream, an absent stream's block set to
zero (its training mean) and one presence indicator per stream appended. Standardisation uses
no labels, so fitting it on the whole training split does not leak labels into any fold.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from mer.data.frames import masked_mean
from mer.training.standardize import mean_and_scale

log = logging.getLogger("mer")


class FlatFeatures:
    """Every stream of a FeatureBundle as one standardised vector per row (see the module docstring)."""

    def fit(self, bundle) -> "FlatFeatures":
        self.streams_ = sorted(bundle.modalities)
        self.stats_ = {}
        for m in self.streams_:
            X, present = _pooled(bundle.modalities[m])
            self.stats_[m] = mean_and_scale(X[present] if present.any() else X, add_to_std=1e-6)
        return self

    def transform(self, bundle) -> np.ndarray:
        blocks = []
        for m in self.streams_:
            X, present = _pooled(bundle.modalities[m])
            mean, std = self.stats_[m]
            Z = np.where(present[:, None], (X - mean) / std, 0.0)
            blocks += [Z, present[:, None].astype(np.float64)]
        return np.concatenate(blocks, 1).astype(np.float32) if blocks else np.zeros((len(bundle.names), 0), np.float32)

    def describe(self) -> str:
        return " + ".join(f"{m} ({len(self.stats_[m][0])})" for m in self.streams_) + \
            f" + {len(self.streams_)} presence indicator(s)"


def _pooled(f) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(f.X, dtype=np.float64)
    present = np.asarray(f.present, dtype=bool)
    if X.ndim == 3:      # frame level: mean over the valid frames
        X = masked_mean(X, np.asarray(f.lengths), dtype=np.float64)
    return X, present


def safe_name(text: str) -> str:
    """A predictor/method label as an MLflow metric name piece."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in str(text))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return (float(v.mean()), float(v.std())) if len(v) else (float("nan"), float("nan"))
