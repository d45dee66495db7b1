"""Scoring predictions (probabilities + valences) with the official metrics, for selection and reports."""
from __future__ import annotations

import numpy as np

from .metrics import emotion_metrics


def score_predictions(y_true: np.ndarray, probs: np.ndarray, v_true: np.ndarray | None = None,
                      v_pred: np.ndarray | None = None) -> dict[str, float]:
    """Official metrics over the rows whose label is known (``y_true >= 0``).

    Valence metrics (``mse``, ``combined``) are added when predictions and at least one known
    true valence exist."""
    known = y_true >= 0
    if not known.any():
        return {}
    y_pred = probs.argmax(1)
    vt = vp = None
    if v_true is not None and v_pred is not None:
        vk = known & np.isfinite(v_true)
        if vk.any():
            vt, vp = v_true[vk], v_pred[vk]
            m = emotion_metrics(y_true[known], y_pred[known])
            mv = emotion_metrics(y_true[vk], y_pred[vk], vt, vp)
            m.update({"mse": mv["mse"], "combined": m["wf1"] - 0.25 * mv["mse"]})
            return m
    return emotion_metrics(y_true[known], y_pred[known])


def score_for_selection(metric: str, y_true, probs, v_true=None, v_pred=None) -> float:
    """The epoch-selection score (higher is better): ``wf1``, ``acc`` or ``combined``."""
    scores = score_predictions(y_true, probs, v_true, v_pred)
    if metric not in scores:
        raise ValueError(f"selection metric {metric!r} is not available here ({sorted(scores)}); "
                         "'combined' needs valence labels")
    return scores[metric]
