"""Estimator contract, cross-validation protocol and determinism on synthetic features."""
import numpy as np
import pytest
from sklearn.base import clone

from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.training.cv import run_seeds, stratified_folds
from mer.training.data import Split
from mer.training.estimator import FusionEstimator


def make_data(n=150, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, n)
    v = (y - 2.5).astype(np.float32) + rng.normal(0, 0.3, n).astype(np.float32)
    W = rng.normal(0, 1, (6, 8))
    X = (W[y] + rng.normal(0, 1.0, (n, 8))).astype(np.float32)
    Z = rng.normal(0, 1, (n, 4)).astype(np.float32)           # an uninformative modality
    b = FeatureBundle([f"s{i}" for i in range(n)],
                      {"text": ModalityFeatures(X, np.ones(n, bool)),
                       "audio": ModalityFeatures(Z, rng.random(n) > 0.2)})
    return Split(b, y, v)


def test_folds_are_seeded_stratified_and_skip_unlabelled():
    y = np.array([0, 1, 2] * 20 + [-1] * 5)
    a = stratified_folds(y, 5, seed=3)
    b = stratified_folds(y, 5, seed=3)
    c = stratified_folds(y, 5, seed=4)
    assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b))
    assert any(not np.array_equal(x[1], z[1]) for x, z in zip(a, c))
    val = np.concatenate([v for _, v in a])
    assert sorted(val) == list(range(60))                    # every labelled row once, no -1 rows
    for _, v in a:
        assert np.bincount(y[v]).tolist() == [4, 4, 4]


def test_rare_class_fewer_than_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than 5 folds"):
        stratified_folds(np.array([0] * 10 + [1] * 3), 5, 0)


def test_estimator_contract_and_learning():
    data = make_data()
    est = FusionEstimator(epochs=40, select_metric="combined", num_classes=6, has_valence=True)
    assert clone(est).get_params() == est.get_params()
    assert not hasattr(est, "model_")
    est.fit(data.rows(np.arange(100)), eval_set=data.rows(np.arange(100, 150)))
    assert 1 <= est.best_epoch_ <= 40 and len(est.history_) == 40
    proba = est.predict_proba(data.rows(np.arange(100, 150)))
    assert proba.shape == (50, 6) and np.allclose(proba.sum(1), 1, atol=1e-5)
    acc = (proba.argmax(1) == data.y[100:]).mean()
    assert acc > 0.5                                          # chance is ~0.17


def test_cv_bit_for_bit_repeatable_and_seed_sensitive():
    data = make_data()
    tests = {"test1": data.rows(np.arange(120, 150))}
    train = data.rows(np.arange(120))
    est = FusionEstimator(epochs=8, select_metric="wf1", num_classes=6, has_valence=True)
    r1 = run_seeds(est, train, tests, seeds=[0], n_folds=3, progress=False)
    r2 = run_seeds(est, train, tests, seeds=[0], n_folds=3, progress=False)
    r3 = run_seeds(est, train, tests, seeds=[1], n_folds=3, progress=False)
    assert np.array_equal(r1.runs[0].oof.probs, r2.runs[0].oof.probs)
    assert np.array_equal(r1.test_predictions()["test1"].probs, r2.test_predictions()["test1"].probs)
    assert not np.array_equal(r1.runs[0].oof.probs, r3.runs[0].oof.probs)


def test_multi_seed_summary_and_fold_ensemble():
    data = make_data()
    tests = {"test1": data.rows(np.arange(120, 150))}
    est = FusionEstimator(epochs=5, select_metric="combined", num_classes=6, has_valence=True)
    res = run_seeds(est, data.rows(np.arange(120)), tests, seeds=[0, 1], n_folds=3, progress=False)
    s = res.summary()
    assert set(s["cv_wf1"]) == {"mean", "std"} and s["cv_wf1"]["std"] > 0
    assert s["cv_combined"]["mean"] == pytest.approx(
        np.mean([np.mean([f["combined"] for f in r.folds]) for r in res.runs]))
    ens = res.test_predictions()["test1"]
    assert np.allclose(ens.probs, np.mean([r.tests["test1"].probs for r in res.runs], axis=0))
    assert ens.valence.shape == (30,)


def test_cv_progress_bar_names_the_setting(capsys):
    from mer.tracks.outputs import cv_label
    from mer.tracks.base import TrackData, build_strategy

    assert cv_label(["audio", "text"], "attention") == "audio+text | attention"
    assert cv_label(["text"], "attention") == "text | -"
    assert cv_label(["audio", "text"], "mlp", "supervised") == "audio+text | mlp (supervised baseline)"
    data = make_data(n=40)
    est = FusionEstimator(epochs=1, select_metric="wf1", num_classes=6, has_valence=True)
    build_strategy("supervised").cross_validate(est, TrackData(data, {}), seeds=[0], n_folds=2,
                                                label=cv_label(["text"], "mlp"))
    assert "CV text | - seed 0" in capsys.readouterr().err
    run_seeds(est, data, {}, seeds=[1], n_folds=2)
    err = capsys.readouterr().err
    assert "CV seed 1" in err and "CV text" not in err           # no label: the bar keeps its old name
