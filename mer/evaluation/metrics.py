"""The challenges' official metrics, as the MER evaluators compute them.

Pure functions: numpy arrays (or sequences) in, Python floats out. Names follow the challenges:

- ``weighted_f1``: sklearn ``f1_score(y_true, y_pred, average='weighted')``, the discrete score of
  every MER track (MER2023 all tracks, MER2024 SEMI/NOISE, MER2025/2026 Track1).
- ``mse``: sklearn ``mean_squared_error``, the MER2023 valence score.
- ``combined``: ``wf1 - 0.25 * mse``, the MER2023 MER-MULTI / MER-NOISE ranking metric.
- ``ccc``: the concordance correlation coefficient of a dimensional target (valence, arousal);
  ``abaw_va_score`` = (CCC_V + CCC_A) / 2 and ``abaw_expr_score`` = macro-F1 over the frames,
  the ABAW VA and Expr conventions.

The F1 family is written in numpy rather than called from sklearn so that the formula is readable
here and pinned by tests that compare it with sklearn, including sklearn's ``zero_division='warn'``
default (an undefined per-class score counts as 0, without the warning).

Labels may be class strings or integer indices; the scores do not depend on which, because
per-class F1 is symmetric in the label order and weights come from true counts.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, NamedTuple, Sequence

import numpy as np

ArrayLike = np.ndarray | Sequence

VALENCE_WEIGHT = 0.25
"""Weight of the valence MSE in the MER2023 combined metric (paper eq. 12)."""

TRACK_METRICS: Mapping[str, str] = MappingProxyType({
    "mer2023_multi": "combined",
    "mer2023_noise": "combined",
    "mer2023_semi": "wf1",      # scored on the labelled test3 subset, discrete only
    "mer2024_semi": "wf1",
    "mer2024_noise": "wf1",
    "mer2025_track1": "wf1",
    "mer2026_cross": "wf1",
    "mer2024_ov": "ov_mean",     # (set accuracy + recall) / 2 under the synonym grouping (mer.ov.metric)
    "mer2025_fg": "wheel",       # the emotion-wheel score (mer.ov.metric.wheel_ov_score)
    "mer2026_fg": "wheel",
    "mer2025_des": "wheel",      # of the emotion words each description names
    "mer2026_prefer": "accuracy",
    "generic": "wf1",
})
"""Ranking metric per track, keyed by the submission-schema names (``submissions.schema``).

``combined`` needs valence; :func:`primary_metric` falls back to ``wf1`` when a run has none.
"""


class ClassScores(NamedTuple):
    """Per-class scores, one entry per label, in ``labels`` order. Arrays are ``[L]``."""

    labels: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # number of true samples of each label (int)


def _as_label_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both label vectors as 1-D arrays of one kind (numbers or strings), checked for shape."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"labels must be 1-D class ids or strings, got shapes {t.shape} and "
                         f"{p.shape}; for scores or one-hot rows pass `probs.argmax(axis=1)`")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    if len(t) == 0:
        raise ValueError("no samples: y_true and y_pred are empty")
    # Comparing strings with numbers is always False in numpy, which would silently score 0.
    if _is_text(t) != _is_text(p):
        raise TypeError(f"y_true and y_pred mix label kinds ({t.dtype} vs {p.dtype}); "
                        f"use class strings for both or indices for both")
    return t, p


def _is_text(a: np.ndarray) -> bool:
    return a.dtype.kind in "USO"


def per_class_scores(y_true: ArrayLike, y_pred: ArrayLike,
                     labels: ArrayLike | None = None) -> ClassScores:
    """Precision, recall, F1 and support per label, as sklearn's ``precision_recall_fscore_support``.

    ``labels`` defaults to the sorted union of both label vectors (sklearn's default). A score whose
    denominator is zero is 0 (sklearn's ``zero_division='warn'``). F1 is ``2*tp / (support +
    predicted)``, which is sklearn's formula and equals the harmonic mean wherever both are defined.
    """
    t, p = _as_label_pair(y_true, y_pred)
    labels_ = np.union1d(t, p) if labels is None else np.asarray(labels)
    is_true = t[None, :] == labels_[:, None]  # [L, N]
    is_pred = p[None, :] == labels_[:, None]  # [L, N]
    true_positives = (is_true & is_pred).sum(axis=1)
    support = is_true.sum(axis=1)
    predicted = is_pred.sum(axis=1)
    return ClassScores(
        labels=labels_,
        precision=_divide_or_zero(true_positives, predicted),
        recall=_divide_or_zero(true_positives, support),
        f1=_divide_or_zero(2 * true_positives, support + predicted),
        support=support,
    )


def _divide_or_zero(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros(len(numerator), dtype=np.float64)
    defined = denominator > 0
    out[defined] = numerator[defined] / denominator[defined]
    return out


def _support_weighted_mean(values: np.ndarray, support: np.ndarray) -> float:
    # sklearn falls back to the plain mean when every weight is zero (only possible with `labels`).
    if support.sum() == 0:
        return float(np.mean(values))
    return float(np.average(values, weights=support))


def weighted_f1(y_true: ArrayLike, y_pred: ArrayLike, labels: ArrayLike | None = None) -> float:
    """Per-class F1 averaged with true-count weights: sklearn ``f1_score(average='weighted')``.

    Classes that are predicted but never true get weight 0; classes that are true but never
    predicted score 0 at their full weight.
    """
    scores = per_class_scores(y_true, y_pred, labels)
    return _support_weighted_mean(scores.f1, scores.support)


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, labels: ArrayLike | None = None) -> float:
    """Unweighted mean of per-class F1: sklearn ``f1_score(average='macro')``."""
    return float(np.mean(per_class_scores(y_true, y_pred, labels).f1))


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of samples whose predicted label equals the true one: sklearn ``accuracy_score``."""
    t, p = _as_label_pair(y_true, y_pred)
    return float(np.mean(t == p))


def mse(v_true: ArrayLike, v_pred: ArrayLike) -> float:
    """Mean squared error of valence: sklearn ``mean_squared_error``. Raises on NaN or inf."""
    t = np.asarray(v_true, dtype=np.float64)
    p = np.asarray(v_pred, dtype=np.float64)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"valences must be two 1-D arrays of one length, got {t.shape} and {p.shape}")
    if len(t) == 0:
        raise ValueError("no samples: v_true and v_pred are empty")
    for name, values in (("v_true", t), ("v_pred", p)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} has {int(np.sum(~np.isfinite(values)))} NaN/inf values")
    return float(np.average((t - p) ** 2))


def combined(wf1: float, mse: float) -> float:  # `mse` shadows the function; the challenge's name
    """MER2023 MER-MULTI / MER-NOISE ranking metric: ``wf1 - 0.25 * mse``."""
    return float(wf1 - VALENCE_WEIGHT * mse)


def emotion_metrics(y_true: ArrayLike, y_pred: ArrayLike,
                    v_true: ArrayLike | None = None, v_pred: ArrayLike | None = None) -> dict:
    """Every score a run reports: ``wf1``, ``acc``, ``macro_f1``, and with valences ``mse``, ``combined``.

    Samples whose *true* valence is NaN (unknown, e.g. MER2023 test3) are left out of ``mse`` only.
    MERTools marks unknown valence with -10; loaders must turn that into NaN before it gets here.
    A NaN *predicted* valence is a bug upstream and raises.
    """
    wf1 = weighted_f1(y_true, y_pred)
    result = {"wf1": wf1, "acc": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred)}
    if v_true is None and v_pred is None:
        return result
    if v_true is None or v_pred is None:
        raise ValueError("pass both v_true and v_pred, or neither")
    valence_mse = _mse_over_known(v_true, v_pred, n_samples=len(np.asarray(y_true)))
    result["mse"] = valence_mse
    result["combined"] = combined(wf1, valence_mse)
    return result


def _mse_over_known(v_true: ArrayLike, v_pred: ArrayLike, n_samples: int) -> float:
    t = np.asarray(v_true, dtype=np.float64)
    p = np.asarray(v_pred, dtype=np.float64)
    if t.shape != (n_samples,) or p.shape != (n_samples,):
        raise ValueError(f"valences must have one value per sample ({n_samples}), "
                         f"got shapes {t.shape} and {p.shape}")
    if np.isnan(p).any():
        raise ValueError(f"{int(np.isnan(p).sum())} predicted valences are NaN; "
                         f"the valence head produced no value for those samples")
    known = ~np.isnan(t)
    if not known.any():
        raise ValueError("every true valence is NaN; this split has no valence labels "
                         "(call emotion_metrics without v_true/v_pred)")
    return mse(t[known], p[known])


def ccc(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Concordance correlation coefficient (Lin, 1989):
    ``2 cov(t, p) / (var(t) + var(p) + (mean(t) - mean(p))^2)`` with population moments.
    1 = perfect agreement; 0 for a constant prediction; -1 = perfect inversion about the mean.
    NaN targets are left out (unknown labels); two constant identical series score 1."""
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"ccc needs one prediction per target, got {t.shape} and {p.shape}")
    known = ~np.isnan(t)
    t, p = t[known], p[known]
    if len(t) == 0:
        raise ValueError("ccc: no known targets")
    if np.isnan(p).any():
        raise ValueError("ccc: NaN predictions")
    mt, mp = t.mean(), p.mean()
    cov = np.mean((t - mt) * (p - mp))
    denom = t.var() + p.var() + (mt - mp) ** 2
    if denom == 0:
        return 1.0
    return float(2 * cov / denom)


def ccc_per_sequence(y_true: Sequence[ArrayLike], y_pred: Sequence[ArrayLike]) -> float:
    """Mean over sequences (videos) of each sequence's CCC over its frames."""
    if len(y_true) != len(y_pred) or not len(y_true):
        raise ValueError("ccc_per_sequence needs as many predicted as true sequences, at least one")
    return float(np.mean([ccc(t, p) for t, p in zip(y_true, y_pred)]))


def abaw_va_score(ccc_valence: float, ccc_arousal: float) -> float:
    """ABAW valence-arousal score: the mean of the two CCCs."""
    return (float(ccc_valence) + float(ccc_arousal)) / 2


def abaw_expr_score(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int = 8) -> float:
    """ABAW Expr score: macro-F1 over the frames and all ``num_classes`` classes (6 basic +
    neutral + other); frames labelled -1 (unannotated) are left out."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    keep = t >= 0
    return macro_f1(t[keep], p[keep], labels=np.arange(num_classes))


def primary_metric(has_valence: bool, track: str) -> str:
    """The key of :func:`emotion_metrics` that ranks runs on ``track``.

    ``'combined'`` for MER2023 MER-MULTI/NOISE when the run predicts valence, else ``'wf1'``.
    Track names are those of :data:`TRACK_METRICS` (``-`` and case are forgiven:
    ``MER2023-MULTI``); an unknown name raises rather than silently picking ``wf1``.
    """
    key = track.strip().lower().replace("-", "_")
    if key not in TRACK_METRICS:
        raise KeyError(f"unknown track {track!r}; known: {', '.join(TRACK_METRICS)}")
    metric = TRACK_METRICS[key]
    if metric == "combined" and not has_valence:
        return "wf1"
    return metric



# --- sentiment (valence-only) datasets: CMU-MOSI, CMU-MOSEI, CH-SIMS, CH-SIMS v2 ---------------
SENTIMENT_METRICS: tuple[str, ...] = ("has0_acc2", "has0_f1", "non0_acc2", "non0_f1", "acc7", "acc5",
                                      "mae", "corr")
"""The keys of :func:`sentiment_metrics`, as the MOSI/MOSEI papers (and MMSA) report them."""

LOWER_IS_BETTER: frozenset[str] = frozenset({"mse", "mae"})
"""Scores where less is better; epoch selection negates them."""


def _checked_valences(v_true: ArrayLike, v_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(v_true, dtype=np.float64).ravel()
    p = np.asarray(v_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"sentiment scores need one prediction per target, got {t.shape} and {p.shape}")
    if len(t) == 0:
        raise ValueError("no samples: v_true and v_pred are empty")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("sentiment scores need finite valences (leave unknown rows out first)")
    return t, p


def binary_sentiment(v_true: ArrayLike, v_pred: ArrayLike, *, exclude_zero: bool) -> tuple[float, float]:
    """``(accuracy, weighted F1)`` of the sentiment's sign.

    ``exclude_zero=True`` ("Non0"): rows whose *true* valence is 0 are left out and the classes are
    ``> 0`` vs ``< 0`` (a predicted 0 counts as negative). ``exclude_zero=False`` ("Has0"): every
    row, ``>= 0`` vs ``< 0``. ``nan`` for both when no row is left (every true valence is 0)."""
    t, p = _checked_valences(v_true, v_pred)
    if exclude_zero:
        keep = t != 0
        if not keep.any():
            return float("nan"), float("nan")
        t_bin, p_bin = t[keep] > 0, p[keep] > 0
    else:
        t_bin, p_bin = t >= 0, p >= 0
    return accuracy(t_bin, p_bin), weighted_f1(t_bin, p_bin)


def multiclass_sentiment_accuracy(v_true: ArrayLike, v_pred: ArrayLike, n_classes: int,
                                  valence_range: tuple[float, float] = (-3.0, 3.0)) -> float:
    """Acc7 (``n_classes=7``) / Acc5 (``5``): both valences scaled to [-3, 3], clipped to
    ``[-(n-1)/2, (n-1)/2]`` and rounded to the nearest integer; the share of rows where they agree.

    On the [-3, 3] scale of MOSI/MOSEI this is the papers' definition (MMSA ``Mult_acc_7`` /
    ``Mult_acc_5``). Another symmetric range ``[-r, r]`` (SIMS: [-1, 1]) is scaled by ``3 / r``
    first, so the bins keep their width relative to the scale (for SIMS they are 1/3 wide; MMSA's
    own SIMS scores use other, uneven bins and are not these)."""
    if n_classes % 2 != 1 or n_classes < 3:
        raise ValueError(f"n_classes must be odd and >= 3, got {n_classes}")
    t, p = _checked_valences(v_true, v_pred)
    scale = 3.0 / _half_range(valence_range)
    edge = (n_classes - 1) / 2
    t_cls = np.round(np.clip(t * scale, -edge, edge))
    p_cls = np.round(np.clip(p * scale, -edge, edge))
    return float(np.mean(t_cls == p_cls))


def _half_range(valence_range: tuple[float, float]) -> float:
    low, high = float(valence_range[0]), float(valence_range[1])
    if not (high > 0 and np.isclose(low, -high)):
        raise ValueError(f"sentiment scores need a range symmetric about 0, got {list(valence_range)}")
    return high


def mae(v_true: ArrayLike, v_pred: ArrayLike) -> float:
    """Mean absolute error."""
    t, p = _checked_valences(v_true, v_pred)
    return float(np.mean(np.abs(t - p)))


def pearson(v_true: ArrayLike, v_pred: ArrayLike) -> float:
    """Pearson correlation (``np.corrcoef``); 0 when either series is constant, where the
    coefficient is undefined (a model that predicts one value everywhere has learnt nothing)."""
    t, p = _checked_valences(v_true, v_pred)
    if len(t) < 2 or np.std(t) == 0 or np.std(p) == 0:
        return 0.0
    return float(np.corrcoef(t, p)[0, 1])


def sentiment_metrics(v_true: ArrayLike, v_pred: ArrayLike,
                      valence_range: tuple[float, float] = (-3.0, 3.0)) -> dict[str, float]:
    """Every sentiment score of :data:`SENTIMENT_METRICS` for one set of predictions.

    ``has0_acc2`` / ``has0_f1``: sign ``>= 0`` vs ``< 0`` over all rows; ``non0_acc2`` / ``non0_f1``:
    ``> 0`` vs ``< 0`` over rows whose true valence is not 0 (MERBench's headline score for MOSI,
    MOSEI and SIMS); ``acc7`` / ``acc5``: :func:`multiclass_sentiment_accuracy`; ``mae``; ``corr``
    (Pearson). Predictions are used as they are (not clipped), as MMSA scores MOSI."""
    has0 = binary_sentiment(v_true, v_pred, exclude_zero=False)
    non0 = binary_sentiment(v_true, v_pred, exclude_zero=True)
    return {"has0_acc2": has0[0], "has0_f1": has0[1], "non0_acc2": non0[0], "non0_f1": non0[1],
            "acc7": multiclass_sentiment_accuracy(v_true, v_pred, 7, valence_range),
            "acc5": multiclass_sentiment_accuracy(v_true, v_pred, 5, valence_range),
            "mae": mae(v_true, v_pred), "corr": pearson(v_true, v_pred)}
