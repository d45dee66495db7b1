"""Scoring predictions (probabilities + valences) with the official metrics, for selection and reports."""
from __future__ import annotations

import numpy as np

from .metrics import LOWER_IS_BETTER, abaw_expr_score, ccc, emotion_metrics, mse, sentiment_metrics


def score_predictions(y_true: np.ndarray, probs: np.ndarray, v_true: np.ndarray | None = None,
                      v_pred: np.ndarray | None = None, valence_range=None) -> dict[str, float]:
    """Official metrics over the rows whose label is known (``y_true >= 0``).

    Valence metrics (``mse``, ``combined``) are added when predictions and at least one known
    true valence exist. ``valence_range`` (set for sentiment data, whose only target is valence:
    see :attr:`mer.training.data.Split.valence_range`): the scores are the sentiment metrics of
    :func:`mer.evaluation.metrics.sentiment_metrics` and ``mse`` over the rows with a known valence."""
    if valence_range is not None:
        return score_sentiment(v_true, v_pred, valence_range)
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


def score_sentiment(v_true, v_pred, valence_range) -> dict[str, float]:
    """Sentiment metrics and ``mse`` over the rows with a known true valence; ``{}`` when none."""
    if v_true is None or v_pred is None:
        return {}
    known = np.isfinite(v_true)
    if not known.any():
        return {}
    t, p = np.asarray(v_true)[known], np.asarray(v_pred)[known]
    return {**sentiment_metrics(t, p, tuple(valence_range)), "mse": mse(t, p)}


def score_targets(targets, outputs, v_true=None) -> dict[str, float]:
    """Scores of the targets beyond class and valence, where labels and predictions exist:
    ``valence_ccc`` and ``arousal_ccc`` (CCC over rows with a known value), ``va_ccc`` (their mean,
    the ABAW VA score) and ``frame_f1`` (ABAW Expr: macro-F1 over every annotated frame and all
    classes). ``targets``: a split's ``targets``; ``outputs``: the estimator's predictions."""
    out: dict[str, float] = {}
    for name, truth in (("valence", v_true), ("arousal", targets.get("arousal"))):
        pred = outputs.get(name)
        if truth is not None and pred is not None and np.isfinite(truth).sum() >= 2:
            out[f"{name}_ccc"] = ccc(truth, pred)
    if "valence_ccc" in out and "arousal_ccc" in out:
        out["va_ccc"] = (out["valence_ccc"] + out["arousal_ccc"]) / 2
    frames, fprobs = targets.get("frames"), outputs.get("frame_probs")
    if frames is not None and fprobs is not None:
        T = min(frames.shape[1], fprobs.shape[1])
        t, p = frames[:, :T], fprobs[:, :T].argmax(-1)
        if (t >= 0).any():
            out["frame_f1"] = abaw_expr_score(t, p, fprobs.shape[-1])
    return out


def score_outputs(y_true, outputs, v_true=None, targets=None, valence_range=None) -> dict[str, float]:
    """:func:`score_predictions` plus :func:`score_targets` for one split's predictions."""
    scores = score_predictions(y_true, outputs["probs"], v_true, outputs.get("valence"), valence_range)
    if targets or (v_true is not None and outputs.get("valence") is not None):
        scores.update(score_targets(targets or {}, outputs, v_true))
    return scores


def score_for_selection(metric: str, y_true, probs, v_true=None, v_pred=None, *, outputs=None,
                        targets=None, valence_range=None) -> float:
    """The epoch-selection score (higher is better): ``wf1``, ``acc``, ``combined``, or with
    ``outputs`` / ``targets``: ``frame_f1``, ``arousal_ccc``, ``valence_ccc``, ``va_ccc``; for
    sentiment data (``valence_range``) any of :data:`mer.evaluation.metrics.SENTIMENT_METRICS`.
    Scores where less is better (``mse``, ``mae``) are negated."""
    if outputs is not None:
        scores = score_outputs(y_true, outputs, v_true, targets, valence_range)
    else:
        scores = score_predictions(y_true, probs, v_true, v_pred, valence_range)
    if metric not in scores:
        raise ValueError(f"selection metric {metric!r} is not available here ({sorted(scores)}); "
                         "'combined' needs valence labels, frame_f1 per-frame labels, arousal_ccc arousal, "
                         "the sentiment scores (non0_f1, mae, ...) valence-only data")
    return -scores[metric] if metric in LOWER_IS_BETTER else scores[metric]
