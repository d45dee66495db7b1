"""One standardisation helper, each caller's rule for (near-)constant columns, and frame pooling
through the one masked mean."""
from types import SimpleNamespace

import numpy as np
import pytest

from mer.data.bundle import ModalityFeatures
from mer.data.frames import masked_mean
from mer.training.standardize import mean_and_scale


def test_unit_std_below_centres_a_constant_column_without_blowing_it_up():
    rows = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 2.0 + 1e-9]], np.float32)
    mean, scale = mean_and_scale(rows, unit_std_below=1e-6, dtype=np.float32)
    assert mean.dtype == scale.dtype == np.float32
    np.testing.assert_array_equal(mean, [2.0, 5.0, rows[:, 2].mean()])
    np.testing.assert_array_equal(scale, [1.0, 1.0, 1.0])


def test_add_to_std_keeps_the_rows_dtype_and_adds_epsilon_everywhere():
    rows = np.array([[0.0, 4.0], [2.0, 4.0]])
    mean, scale = mean_and_scale(rows, add_to_std=1e-6)
    assert scale.dtype == np.float64
    np.testing.assert_array_equal(mean, [1.0, 4.0])
    np.testing.assert_array_equal(scale, [1.0 + 1e-6, 1e-6])


def test_no_rows_is_the_identity():
    mean, scale = mean_and_scale(np.zeros((0, 3), np.float32), unit_std_below=1e-6)
    np.testing.assert_array_equal(mean, np.zeros(3))
    np.testing.assert_array_equal(scale, np.ones(3))


def test_estimator_and_pll_and_flat_features_share_the_numbers():
    from mer.pll.learners import LEARNERS
    from mer.tracks._common import FlatFeatures
    from mer.training.estimator import FusionEstimator

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(20, 4)) * [1, 10, 0, 3]).astype(np.float32)
    present = np.ones(20, bool)
    present[:3] = False
    X[~present] = 0
    f = ModalityFeatures(X, present)
    scalers = FusionEstimator._scalers(None, SimpleNamespace(X=SimpleNamespace(modalities={"a": f})))
    mu, sd = scalers["a"]
    np.testing.assert_array_equal(mu, X[present].mean(0))
    assert sd[2] == 1.0 and sd[1] == pytest.approx(X[present, 1].std(), rel=1e-6)
    flat = FlatFeatures().fit(SimpleNamespace(modalities={"a": f}, names=[str(i) for i in range(20)]))
    fmean, fscale = flat.stats_["a"]
    assert fmean.dtype == np.float64 and fscale[2] == 1e-6
    np.testing.assert_allclose(fscale, X[present].astype(np.float64).std(0) + 1e-6)
    S = np.eye(3, dtype=np.float32)[np.arange(20) % 3]
    learner = LEARNERS.get("cc")(hidden=8, epochs=1, seed=0).fit(X, S)
    assert learner.scale_.dtype == np.float32
    np.testing.assert_array_equal(learner.scale_, X.std(0) + np.float32(1e-6))


def test_flat_features_pool_frames_with_the_masked_mean_in_float64():
    from mer.tracks._common import _pooled

    rng = np.random.default_rng(1)
    lengths = np.array([0, 3, 5, 1])
    X = np.zeros((4, 5, 2), np.float32)
    for i, n in enumerate(lengths):
        X[i, :n] = rng.normal(size=(n, 2))
    pooled, present = _pooled(ModalityFeatures(X, lengths > 0, lengths=lengths))
    assert pooled.dtype == np.float64 and present.tolist() == [False, True, True, True]
    expected = [np.zeros(2)] + [X[i, :n].astype(np.float64).mean(0) for i, n in enumerate(lengths) if n]
    np.testing.assert_allclose(pooled, expected, rtol=1e-12)
    assert masked_mean(X, lengths).dtype == np.float32               # the default stays float32
    np.testing.assert_array_equal(masked_mean(X, lengths), pooled.astype(np.float32))
