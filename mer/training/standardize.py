"""Per-column standardisation statistics: the one place mer computes ``(mean, scale)`` for
``(x - mean) / scale``, used by the fusion estimator, :class:`mer.tracks._common.FlatFeatures` and
the partial-label learners.

Callers differ in how they keep a (near-)constant column finite, and each keeps its own rule:
``unit_std_below`` sets such a column's scale to 1 (it is centred, never blown up: the fusion
estimator), ``add_to_std`` adds a small epsilon to every std (the flat-vector strategies and the
partial-label learners).
"""
from __future__ import annotations

import numpy as np


def mean_and_scale(rows: np.ndarray, *, add_to_std: float = 0.0, unit_std_below: float | None = None,
                   dtype: np.dtype | type | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [D], scale [D])`` of ``rows [N, D]``, computed in the rows' dtype and returned as
    ``dtype`` (default: the rows' dtype).

    ``scale`` is the std (population, ``ddof=0``), set to 1 where it is under ``unit_std_below``,
    plus ``add_to_std``. No rows: mean 0 and scale 1 (standardising is then the identity)."""
    rows = np.asarray(rows)
    dtype = rows.dtype if dtype is None else np.dtype(dtype)
    if len(rows) == 0:
        return np.zeros(rows.shape[-1], dtype), np.ones(rows.shape[-1], dtype)
    mean = rows.mean(0).astype(dtype)
    scale = rows.std(0).astype(dtype)
    if unit_std_below is not None:
        scale[scale < unit_std_below] = 1.0
    if add_to_std:
        scale = scale + add_to_std
    return mean, scale
