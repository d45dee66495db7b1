"""The official metrics: hand-worked cases, and equality with sklearn on random ones."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error

from mer.core.samples import MER_CLASSES
from mer.evaluation.metrics import (
    TRACK_METRICS, accuracy, combined, emotion_metrics, macro_f1, mse, per_class_scores,
    primary_metric, weighted_f1,
)

# Hand-worked case. Per class (tp, true count, predicted count) and F1 = 2tp / (true + predicted):
#   class 0: y_true at 0,1,2; predicted 0 at 0,1      -> tp 2, true 3, pred 2 -> F1 4/5
#   class 1: y_true at 3,4;   predicted 1 at 2,3      -> tp 1, true 2, pred 2 -> F1 2/4 = 1/2
#   class 2: y_true at 5;     predicted 2 at 4,5      -> tp 1, true 1, pred 2 -> F1 2/3
# weighted F1 = (3 * 4/5 + 2 * 1/2 + 1 * 2/3) / 6 = (12/5 + 1 + 2/3) / 6 = (61/15) / 6 = 61/90
# macro F1    = (4/5 + 1/2 + 2/3) / 3 = (24/30 + 15/30 + 20/30) / 3 = 59/90
# accuracy    = 4 correct of 6 = 2/3
HAND_TRUE = np.array([0, 0, 0, 1, 1, 2])
HAND_PRED = np.array([0, 0, 1, 1, 2, 2])


def sk_f1(y_true, y_pred, average, labels=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return f1_score(y_true, y_pred, average=average, labels=labels)


def test_hand_worked_case():
    assert weighted_f1(HAND_TRUE, HAND_PRED) == pytest.approx(61 / 90, abs=1e-15)
    assert macro_f1(HAND_TRUE, HAND_PRED) == pytest.approx(59 / 90, abs=1e-15)
    assert accuracy(HAND_TRUE, HAND_PRED) == pytest.approx(2 / 3, abs=1e-15)
    scores = per_class_scores(HAND_TRUE, HAND_PRED)
    np.testing.assert_allclose(scores.precision, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(scores.recall, [2 / 3, 0.5, 1.0])
    np.testing.assert_array_equal(scores.support, [3, 2, 1])


def test_class_strings_score_like_indices():
    names = np.array(MER_CLASSES)
    # Strings sort in another order than indices, so the sum runs in another order: equal to 1 ulp.
    assert weighted_f1(names[HAND_TRUE], names[HAND_PRED]) == pytest.approx(
        weighted_f1(HAND_TRUE, HAND_PRED), rel=1e-15)


def test_true_class_never_predicted_counts_zero_at_full_weight():
    # class 1 (support 2) is never predicted: F1 0; class 0: tp 2, true 2, pred 4 -> F1 4/6.
    # weighted = (2 * 2/3 + 2 * 0) / 4 = 1/3
    y_true, y_pred = [0, 0, 1, 1], [0, 0, 0, 0]
    assert weighted_f1(y_true, y_pred) == pytest.approx(1 / 3)
    assert weighted_f1(y_true, y_pred) == sk_f1(y_true, y_pred, "weighted")


def test_predicted_class_never_true_gets_zero_weight():
    # class 5 is only predicted; it enters macro F1 (as 0) but not weighted F1.
    y_true, y_pred = [0, 0, 1, 1], [0, 0, 1, 5]
    assert weighted_f1(y_true, y_pred) == sk_f1(y_true, y_pred, "weighted")
    assert macro_f1(y_true, y_pred) == sk_f1(y_true, y_pred, "macro")
    assert weighted_f1(y_true, y_pred) > macro_f1(y_true, y_pred)


def test_zero_division_cases_match_sklearn():
    cases = [
        ([0, 0], [1, 1], None),          # nothing right: every F1 is 0
        ([0, 0], [0, 0], None),          # one class, all right
        ([0, 1], [0, 1], [2, 3]),        # labels absent from both: every denominator is 0
        ([0, 1], [2, 2], [2]),           # only a predicted-never-true label: all weights 0
        ([0, 1, 2], [0, 1, 1], [0, 2]),  # a subset of labels
    ]
    for y_true, y_pred, labels in cases:
        assert weighted_f1(y_true, y_pred, labels) == sk_f1(y_true, y_pred, "weighted", labels)
        assert macro_f1(y_true, y_pred, labels) == sk_f1(y_true, y_pred, "macro", labels)


@pytest.mark.parametrize("seed", range(300))
def test_random_cases_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(1, 8))
    n = int(rng.integers(1, 60))
    # Skewed class probabilities, so some classes are often absent from one side or both.
    probs = rng.dirichlet(np.full(n_classes, 0.5))
    y_true = rng.choice(n_classes, size=n, p=probs)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.choice(n_classes, size=n))
    if seed % 3 == 0:  # string labels too
        y_true, y_pred = np.array(MER_CLASSES + ("x",))[[y_true, y_pred]]
    assert weighted_f1(y_true, y_pred) == sk_f1(y_true, y_pred, "weighted")
    assert macro_f1(y_true, y_pred) == sk_f1(y_true, y_pred, "macro")
    assert accuracy(y_true, y_pred) == accuracy_score(y_true, y_pred)
    if seed % 3 != 0:  # an explicit label list, with labels that may be absent from both sides
        labels = rng.choice(n_classes + 2, size=int(rng.integers(1, n_classes + 3)), replace=False)
        assert weighted_f1(y_true, y_pred, labels) == sk_f1(y_true, y_pred, "weighted", labels)
        assert macro_f1(y_true, y_pred, labels) == sk_f1(y_true, y_pred, "macro", labels)
    v_true, v_pred = rng.uniform(-5, 5, n), rng.uniform(-5, 5, n)
    assert mse(v_true, v_pred) == pytest.approx(mean_squared_error(v_true, v_pred), rel=1e-12)


def test_metrics_return_python_floats():
    for value in emotion_metrics(HAND_TRUE, HAND_PRED, [0.0] * 6, [1.0] * 6).values():
        assert type(value) is float


@pytest.mark.parametrize("y_true, y_pred, error", [
    ([], [], ValueError),                              # no samples
    ([0, 1], [0], ValueError),                         # lengths differ
    ([[0, 1]], [[0, 1]], ValueError),                  # 2-D (scores, one-hot)
    (["happy", "sad"], [2, 3], TypeError),             # strings vs indices would score 0
])
def test_bad_label_inputs_raise(y_true, y_pred, error):
    with pytest.raises(error):
        weighted_f1(y_true, y_pred)


def test_combined_is_the_mer2023_formula():
    assert combined(0.8, 1.2) == pytest.approx(0.8 - 0.3)
    assert combined(0.5, 0.0) == 0.5


def test_emotion_metrics_without_valence():
    result = emotion_metrics(HAND_TRUE, HAND_PRED)
    assert set(result) == {"wf1", "acc", "macro_f1"}
    assert result["wf1"] == pytest.approx(61 / 90)


def test_emotion_metrics_with_valence():
    v_true = np.array([0.0, 1.0, -1.0, 2.0, 0.5, -2.0])
    v_pred = v_true + np.array([1.0, 0.0, 0.0, -1.0, 0.0, 2.0])  # squared errors 1, 1, 4
    result = emotion_metrics(HAND_TRUE, HAND_PRED, v_true, v_pred)
    assert set(result) == {"wf1", "acc", "macro_f1", "mse", "combined"}
    assert result["mse"] == pytest.approx(6 / 6)
    assert result["combined"] == pytest.approx(61 / 90 - 0.25 * 1.0)


def test_unknown_true_valences_are_left_out_of_mse():
    v_true = np.array([0.0, np.nan, 1.0, np.nan, 0.0, 0.0])
    v_pred = np.array([1.0, 4.0, 1.0, -4.0, 0.0, 0.0])  # known samples: squared errors 1,0,0,0
    assert emotion_metrics(HAND_TRUE, HAND_PRED, v_true, v_pred)["mse"] == pytest.approx(0.25)


def test_valence_errors_raise():
    v = np.zeros(6)
    with pytest.raises(ValueError, match="NaN"):
        emotion_metrics(HAND_TRUE, HAND_PRED, v, np.r_[np.nan, np.zeros(5)])
    with pytest.raises(ValueError, match="every true valence"):
        emotion_metrics(HAND_TRUE, HAND_PRED, np.full(6, np.nan), v)
    with pytest.raises(ValueError, match="both"):
        emotion_metrics(HAND_TRUE, HAND_PRED, v, None)
    with pytest.raises(ValueError, match="one value per sample"):
        emotion_metrics(HAND_TRUE, HAND_PRED, v[:5], v[:5])
    with pytest.raises(ValueError, match="NaN"):
        mse([0.0, np.nan], [0.0, 0.0])


@pytest.mark.parametrize("track, has_valence, expected", [
    ("mer2023_multi", True, "combined"),
    ("mer2023_noise", True, "combined"),
    ("MER2023-MULTI", True, "combined"),
    ("mer2023_multi", False, "wf1"),
    ("mer2023_semi", True, "wf1"),
    ("mer2024_semi", False, "wf1"),
    ("mer2024_noise", False, "wf1"),
    ("mer2025_track1", False, "wf1"),
    ("generic", True, "wf1"),
])
def test_primary_metric(track, has_valence, expected):
    assert primary_metric(has_valence, track) == expected


def test_primary_metric_unknown_track_lists_known():
    with pytest.raises(KeyError, match="mer2023_multi"):
        primary_metric(True, "mer2023_mutli")
    assert set(TRACK_METRICS.values()) <= {"wf1", "combined", "ov_mean", "wheel", "accuracy"}
