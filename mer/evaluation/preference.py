"""MER2026 MER-Prefer scores, as the organisers' code computes them.

Source: ``MER2026/MER2026_Track3/utils/common.py`` (MERTools HEAD ``89120b7``),
``func_two_class_preference_metric`` and ``func_three_class_preference_metric``; the track's
README (``MER2026/MER2026_Track3/README.md``) names the two-class weighted F1 (WAF) the primary
metric and accuracy the secondary one.

* ``twoclass``: pairs whose human answer is ``same`` are left out; a predicted ``same`` counts as
  ``a1``; weighted F1 and accuracy over ``a1`` / ``a2``.
* ``threeclass``: ``a1`` / ``a2`` / ``same`` as they are.

Pure functions: label strings in, floats out.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .metrics import accuracy, weighted_f1

PREFERENCE_LABELS: tuple[str, ...] = ("a1", "a2", "same")
"""The answers the official scorer knows (its ``label2idx``)."""

PREFERENCE_METRICS: tuple[str, ...] = ("twoclass", "threeclass")


def preference_scores(gold: Sequence[str], pred: Sequence[str], metric: str = "twoclass") -> dict[str, float]:
    """``{"waf", "acc", "n"}`` of predicted preferences against the human ones (module docstring);
    ``n`` is the number of pairs scored (two-class: the human ``same`` answers left out)."""
    if metric not in PREFERENCE_METRICS:
        raise ValueError(f"metric must be one of {PREFERENCE_METRICS}, got {metric!r}")
    g, p = np.asarray(list(gold), dtype=object), np.asarray(list(pred), dtype=object)
    if len(g) != len(p):
        raise ValueError(f"{len(g)} human answers but {len(p)} predictions")
    unknown = sorted({str(x) for x in np.concatenate([g, p]) if x not in PREFERENCE_LABELS})
    if unknown:
        raise ValueError(f"preferences must be one of {', '.join(PREFERENCE_LABELS)}; got {unknown[:5]}")
    if metric == "twoclass":
        keep = g != "same"
        g, p = g[keep], np.where(p[keep] == "same", "a1", p[keep])
    if len(g) == 0:
        return {"waf": float("nan"), "acc": float("nan"), "n": 0.0}
    g, p = g.astype(str), p.astype(str)
    return {"waf": weighted_f1(g, p), "acc": accuracy(g, p), "n": float(len(g))}
