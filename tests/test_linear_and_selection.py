"""The linear floor (fusion=linear: logistic + ridge heads, inner-CV regularisation) and honest
epoch selection (selection=inner: the held-out fold is only monitored, never chosen on)."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV

from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.core.errors import UserError
from mer.training.convex import _logistic, ridge_loo
from mer.training.cv import run_seeds
from mer.training.data import Split
from mer.training.estimator import FusionEstimator


def make_data(n=240, seed=0, absent=0.25):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    v = (y - 1.5).astype(np.float32) + rng.normal(0, 0.5, n).astype(np.float32)
    W = rng.normal(0, 1, (4, 10))
    X = (W[y] + rng.normal(0, 1.5, (n, 10))).astype(np.float32)
    A = (W[y][:, :5] + rng.normal(0, 2.0, (n, 5))).astype(np.float32)
    a_present = rng.random(n) > absent
    A[~a_present] = 0
    b = FeatureBundle([f"s{i}" for i in range(n)],
                      {"text": ModalityFeatures(X, np.ones(n, bool)), "audio": ModalityFeatures(A, a_present)})
    return Split(b, y, v)


def test_logistic_head_matches_scikit_learn_objective():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(300, 12))
    y = (Z[:, 0] + 0.5 * Z[:, 1] + rng.normal(0, 0.7, 300) > 0).astype(int) + (Z[:, 2] > 1).astype(int)
    for C in (0.01, 1.0):
        W, b = _logistic(torch.as_tensor(Z, dtype=torch.float32), torch.as_tensor(y),
                         torch.ones(300), 3, C)
        ours = torch.softmax(torch.as_tensor(Z, dtype=torch.float32) @ W.T + b, -1).numpy()
        ref = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(Z, y).predict_proba(Z)
        assert np.abs(ours - ref).max() < 2e-3, C


def test_ridge_leave_one_out_matches_ridgecv():
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(200, 15))
    t = Z @ rng.normal(size=15) + rng.normal(0, 2.0, 200) + 3.0
    alphas = (0.1, 1.0, 10.0, 100.0, 1000.0)
    a, scores, coef, icpt = ridge_loo(Z, t, np.ones(200), alphas)
    ref = RidgeCV(alphas=alphas).fit(Z, t)
    assert a == ref.alpha_
    assert np.allclose(coef, ref.coef_, atol=1e-8) and abs(icpt - ref.intercept_) < 1e-8
    assert scores[a] == min(scores.values())


def test_linear_fusion_learns_masks_absent_modalities_and_records_choices():
    data = make_data()
    est = FusionEstimator(fusion="linear", fusion_params={}, num_classes=4, has_valence=True,
                          select_metric="combined")
    res = run_seeds(est, data, {"test": data.rows(np.arange(40))}, seeds=[0], n_folds=4, progress=False)
    r = res.runs[0]
    assert r.oof_scores["acc"] > 0.5                                  # chance 0.25
    assert r.oof_scores["mse"] < np.var(data.v)                       # better than the mean
    from fusion.linear import LinearFusion

    grid = LinearFusion({"x": 1}, 2, True)
    for h in r.histories:                          # what inner CV chose, on the training folds alone
        assert h[0]["C"] in grid.Cs and h[0]["alpha_valence"] in grid.alphas
    # the official figure of a model without epochs is its honest figure
    assert all(f["official_wf1"] == f["wf1"] for f in r.folds)
    # an absent stream reads as absent: zeroing a missing row's features changes nothing
    fitted = FusionEstimator(fusion="linear", fusion_params={}, num_classes=4, has_valence=True).fit(data)
    rows = data.rows(np.flatnonzero(~data.X.modalities["audio"].present)[:10])
    noisy = rows.X.modalities["audio"]
    changed = ModalityFeatures(noisy.X + 100.0, noisy.present)
    other = rows.with_features(FeatureBundle(rows.names, {**rows.X.modalities, "audio": changed}))
    assert np.allclose(fitted.predict_proba(rows), fitted.predict_proba(other))


def test_linear_refuses_per_frame_labels_in_one_line():
    data = make_data(n=40)
    data.targets["frames"] = np.zeros((40, 3), np.int64)
    with pytest.raises(UserError, match="per-frame"):
        FusionEstimator(fusion="linear", fusion_params={}, num_classes=4, has_valence=True).fit(data)


def test_inner_selection_never_reads_the_held_out_labels():
    data = make_data(n=200)
    train, held = data.rows(np.arange(150)), data.rows(np.arange(150, 200))
    rng = np.random.default_rng(0)
    shuffled = Split(held.X, rng.permutation(held.y), rng.permutation(held.v))
    kw = dict(num_classes=4, has_valence=True, epochs=12, select_metric="combined", selection="inner",
              fusion_params={"hidden_dim": 16, "layers": 1, "dropout": 0.1})
    a = FusionEstimator(**kw).fit(train, eval_set=held)
    b = FusionEstimator(**kw).fit(train, eval_set=shuffled)
    assert a.best_epoch_ == b.best_epoch_
    assert np.array_equal(a.predict_proba(held), b.predict_proba(held))
    # the held-out fold was monitored every epoch, for the official figure only
    assert all("monitor" in r for r in a.history_)
    assert [r["monitor_score"] for r in a.history_] != [r["monitor_score"] for r in b.history_]
    # with the official selection the held-out labels do decide the epoch
    fold = FusionEstimator(**{**kw, "selection": "fold"})
    assert "monitor" not in fold.fit(train, eval_set=held).history_[0]


def test_official_figure_is_the_best_monitored_epoch_and_never_below_the_honest_one():
    data = make_data(n=200)
    est = FusionEstimator(num_classes=4, has_valence=True, epochs=15, select_metric="wf1", selection="inner",
                          fusion_params={"hidden_dim": 16, "layers": 1, "dropout": 0.1})
    r = run_seeds(est, data, {}, seeds=[0], n_folds=4, progress=False).runs[0]
    for f, h in zip(r.folds, r.histories):
        best = max(h, key=lambda rec: rec["monitor_score"])
        assert f["official_wf1"] == best["monitor"]["wf1"]
        assert f["official_wf1"] >= f["wf1"] - 1e-12
    summary = run_seeds(est, data, {}, seeds=[0, 1], n_folds=4, progress=False).summary()
    assert "official_wf1" in summary and "cv_wf1" in summary and "cv_official_wf1" not in summary


def test_patience_stops_training_early():
    data = make_data(n=160)
    est = FusionEstimator(num_classes=4, has_valence=True, epochs=200, select_metric="wf1", selection="inner",
                          patience=5, fusion_params={"hidden_dim": 16, "layers": 1, "dropout": 0.1}, lr=3e-2)
    est.fit(data)
    assert len(est.history_) < 200
    assert len(est.history_) - est.best_epoch_ == 5


def test_blend_averages_the_fusion_model_with_a_linear_model_fitted_on_the_same_rows():
    data = make_data(n=160)
    train, held = data.rows(np.arange(120)), data.rows(np.arange(120, 160))
    kw = dict(num_classes=4, has_valence=True, epochs=6, select_metric="combined", selection="inner",
              fusion_params={"hidden_dim": 16, "layers": 1, "dropout": 0.1})
    alone = FusionEstimator(**kw).fit(train, eval_set=held)
    blended = FusionEstimator(**kw, blend_linear=0.5).fit(train, eval_set=held)
    linear = FusionEstimator(fusion="linear", fusion_params={}, num_classes=4, has_valence=True,
                             select_metric="combined").fit(train)
    a, b, lin = alone.predict_outputs(held), blended.predict_outputs(held), linear.predict_outputs(held)
    assert np.allclose(b["probs"], 0.5 * a["probs"] + 0.5 * lin["probs"], atol=1e-6)
    assert np.allclose(b["valence"], 0.5 * a["valence"] + 0.5 * lin["valence"], atol=1e-5)
    assert np.allclose(b["probs"].sum(1), 1, atol=1e-5)
    assert FusionEstimator(**kw).fit(train).__dict__.get("linear_") is None      # off by default


def test_a_blended_cv_reports_its_linear_half_as_the_floor_beside_it():
    data = make_data(n=160)
    est = FusionEstimator(num_classes=4, has_valence=True, epochs=5, select_metric="combined", selection="inner",
                          blend_linear=0.5, fusion_params={"hidden_dim": 16, "layers": 1, "dropout": 0.1})
    res = run_seeds(est, data, {}, seeds=[0], n_folds=4, progress=False)
    fold = res.runs[0].folds[0]
    assert fold["blend_weight"] == 0.5 and {"linear_wf1", "linear_combined", "wf1"} <= set(fold)
    linear = FusionEstimator(fusion="linear", fusion_params={}, num_classes=4, has_valence=True,
                             select_metric="combined")
    alone = run_seeds(linear, data, {}, seeds=[0], n_folds=4, progress=False).runs[0].folds[0]
    assert fold["linear_wf1"] == pytest.approx(alone["wf1"])      # same folds, same rows, same model
    summary = res.summary()
    assert "linear_wf1" in summary and "cv_linear_wf1" not in summary
