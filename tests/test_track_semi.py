"""MER-SEMI track: MER2023's threshold rule, label hiding, self-training rounds with tracked
pseudo-labels, and ``track=semi`` end to end (demo corpus, and the real MER2023 transcripts)."""
import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO, shared_data
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.core.samples import MER_CLASSES
from mer.training.data import Split
from mer.training.estimator import FusionEstimator
from mer.tracks.base import TrackData, build_strategy
from mer.tracks.semi import class_thresholds
from mer.tracks.data import hide_labels
from submissions.validate import validate_submission


def test_thresholds_are_class_quantiles_of_correct_confidences():
    y = np.array([0, 0, 0, 0, 1, 1, 2, -1])
    probs = np.array([[.9, .1, 0], [.7, .3, 0], [.6, .4, 0], [.2, .8, 0],     # class 0: 3 right
                      [.1, .5, .4], [.45, .55, 0], [.8, .2, 0], [.1, .1, .8]])  # class 2: none right
    t = class_thresholds(y, probs, 0.5, 3)
    assert t[0] == pytest.approx(0.7) and t[1] == pytest.approx(0.525) and t[2] == np.inf
    assert class_thresholds(y, probs, 0.0, 3)[0] == pytest.approx(0.6)
    assert class_thresholds(y, probs, 1.0, 3)[0] == pytest.approx(0.9)
    floored = class_thresholds(y, probs, 0.5, 3, floor=True)            # median of all 5 right: 0.6
    assert floored[0] == pytest.approx(0.7) and floored[1] == pytest.approx(0.6) and floored[2] == np.inf


def test_hidden_labels_are_stratified_seeded_and_keep_enough_per_class():
    y = np.repeat(np.arange(4), [100, 50, 20, 4])
    h = hide_labels(y, 0.8, seed=0, keep_per_class=3)
    assert [int(h[y == j].sum()) for j in range(4)] == [80, 40, 16, 1]
    assert np.array_equal(h, hide_labels(y, 0.8, seed=0, keep_per_class=3))
    assert not np.array_equal(h, hide_labels(y, 0.8, seed=1, keep_per_class=3))
    with pytest.raises(ValueError, match="fraction"):
        hide_labels(y, 1.0, 0, 3)


def _blobs(n, rng, centres):
    y = rng.integers(0, len(centres), n)
    return (centres[y] + rng.normal(0, 1.0, (n, centres.shape[1]))).astype(np.float32), y


def _split(X, y, prefix):
    names = [f"{prefix}{i}" for i in range(len(X))]
    return Split(FeatureBundle(names, {"x": ModalityFeatures(X, np.ones(len(X), bool))}), y,
                 np.full(len(X), np.nan, np.float32))


def test_self_training_rounds_pseudo_label_the_pool_and_track_it(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2.5, (3, 6))
    Xl, yl = _blobs(24, rng, centres)
    Xp, yp = _blobs(300, rng, centres)

    pool = _split(Xp, np.full(300, -1), "u")
    data = TrackData(_split(Xl, yl, "l"), {"heldout": _split(Xp, yp, "u")}, pool=pool, pool_truth=yp)
    est = FusionEstimator("mlp", {"hidden_dim": 16, "dropout": 0.0}, num_classes=3, has_valence=False,
                          epochs=15, lr=3e-3, batch_size=8)
    strat = build_strategy("self_training", rounds=2, eta=0.5, confidence_weight=True)
    res = strat.cross_validate(est, data, seeds=[0], n_folds=3, progress=False)
    rounds = res.extras["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["n_pseudo"] == 0 and rounds[1]["n_pseudo"] > 50
    assert rounds[-1]["pseudo_acc_known"] > 0.9                        # separable blobs: right labels
    assert set(res.test_predictions()) == {"heldout"}                 # the pool never leaks into outputs
    base = res.extras["baseline"]
    assert base is not None and base.runs[0].oof_scores != res.runs[0].oof_scores
    metrics = strat.report(res, data, tmp_path, ["a", "b", "c"])
    table = pd.read_csv(tmp_path / "pseudo_labels.csv", keep_default_na=False)
    assert len(table) == 300 and set(table.columns) >= {"name", "pseudo_label", "confidence", "round_entered"}
    chosen = table[table.pseudo_label != ""]
    assert len(chosen) == rounds[-1]["n_pseudo"] == metrics["semi_n_pseudo"]
    assert chosen.round_entered.isin([1, 2]).all() and (table[table.pseudo_label == ""].round_entered <= 2).all()
    by_round = pd.read_csv(tmp_path / "pseudo_labels_by_round.csv")
    assert len(by_round) == 600 and set(by_round["round"]) == {1, 2}
    assert (tmp_path / "self_training.png").read_bytes()[:4] == b"\x89PNG"
    rounds_csv = pd.read_csv(tmp_path / "self_training_rounds.csv")
    assert {"threshold_a", "n_pseudo_b", "heldout_wf1", "cv_wf1"} <= set(rounds_csv.columns)


def test_fold_teachers_never_see_their_fold_and_keep_cv_honest(tmp_path):
    """teacher=fold: every fold trains on the pseudo-labels of its own teacher (last round's model of
    the same seed and fold), and the reported selection is the fold teachers' majority."""
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 1.0, (3, 6))
    Xl, yl = _blobs(60, rng, centres)
    Xp, yp = _blobs(200, rng, centres)

    data = TrackData(_split(Xl, yl, "l"), {}, pool=_split(Xp, np.full(200, -1), "u"), pool_truth=yp)
    est = FusionEstimator("mlp", {"hidden_dim": 16, "dropout": 0.0}, num_classes=3, has_valence=False,
                          epochs=10, lr=3e-3, batch_size=16)
    seen = []
    strat = build_strategy("self_training", rounds=1, eta=0.3, teacher="fold")
    fit = strat.fit_fold

    def spy(estimator, train, eval_set=None, context=None):
        pseudo = (context or {}).get("pseudo")
        if pseudo is not None:
            seen.append((context["seed"], context["fold"], set(pseudo[(context["seed"], context["fold"])].names)
                         if (context["seed"], context["fold"]) in pseudo else set()))
        return fit(estimator, train, eval_set=eval_set, context=context)

    strat.fit_fold = spy
    res = strat.cross_validate(est, data, seeds=[0, 1], n_folds=3, progress=False)
    assert [(s, k) for s, k, _ in seen] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    chosen = [names for _, _, names in seen]
    assert all(chosen) and len({frozenset(c) for c in chosen}) > 1      # each fold has its own teacher
    rounds = res.extras["rounds"]
    assert rounds[1]["n_pseudo"] == round(np.mean([len(c) for c in chosen]))
    assert not res.runs[0].fold_tests                                   # the pool's per-fold copies are gone
    strat.report(res, data, tmp_path, ["a", "b", "c"])
    by_round = pd.read_csv(tmp_path / "pseudo_labels_by_round.csv")
    assert by_round["fold_votes"].between(0, 1).all()
    assert (by_round.selected == (by_round.fold_votes > 0.5)).all()
    with pytest.raises(ValueError, match="teacher"):
        build_strategy("self_training", teacher="oracle")


def test_pseudo_rows_join_training_with_their_weights():
    rng = np.random.default_rng(1)
    names = [f"l{i}" for i in range(10)]
    X = rng.normal(0, 1, (10, 2)).astype(np.float32)
    train = Split(FeatureBundle(names, {"x": ModalityFeatures(X, np.ones(10, bool))}), np.arange(10) % 2,
                  np.full(10, np.nan, np.float32))
    P = rng.normal(5, 1, (30, 2)).astype(np.float32)
    pseudo = Split(FeatureBundle([f"u{i}" for i in range(30)], {"x": ModalityFeatures(P, np.ones(30, bool))}),
                   np.zeros(30, np.int64), np.full(30, np.nan, np.float32), np.full(30, 0.25, np.float32))
    est = FusionEstimator("mlp", {"hidden_dim": 4}, num_classes=2, has_valence=False, epochs=1)
    build_strategy("self_training").fit_fold(est, train, context={"pseudo": pseudo})
    np.testing.assert_allclose(est.scalers_["x"][0], np.concatenate([X, P]).mean(0), rtol=1e-5)


def test_self_training_without_a_pool_says_what_to_set():
    est = FusionEstimator("mlp", num_classes=2, has_valence=False, epochs=1)
    X = FeatureBundle(["a", "b"], {"x": ModalityFeatures(np.zeros((2, 2), np.float32), np.ones(2, bool))})
    data = TrackData(Split(X, np.array([0, 1]), np.full(2, np.nan, np.float32)), {})
    with pytest.raises(ValueError, match="track.pool.splits"):
        build_strategy("self_training").cross_validate(est, data, seeds=[0], n_folds=2, progress=False)


# --- end to end ------------------------------------------------------------------------------


def _cfg(tmp, overrides=()):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.runs_dir={tmp / 'runs'}", "track=semi", "progress=false",
                                            "ablate_modalities=false", *overrides])


@pytest.mark.slow
def test_semi_track_on_the_demo_with_hidden_labels(tmp_path):
    from mer.pipeline import run

    cfg = _cfg(tmp_path, ["data.demo.n_train=24", "data.demo.n_per_test=4", "train.epochs=4", "train.n_folds=2",
                          "modalities=[audio]", "track.hide_labels.fraction=0.4", "track.strategy_options.rounds=1",
                          "track.strategy_options.eta=0.1"])
    res = run(cfg, out_dir=tmp_path / "out")
    summary = json.loads((res.out_dir / "results.json").read_text())
    assert summary["strategy"] == "self_training" and summary["baseline"] == "supervised"
    manifest = pd.read_json(res.out_dir / "manifest.jsonl", lines=True, dtype=False).iloc[1:]
    y = np.array([list(MER_CLASSES).index(d) for d, s in zip(manifest["discrete"], manifest["split"])
                  if s == "train"])
    n_hidden = 24 - len(pd.read_csv(res.out_dir / "predictions" / "train-oof.csv"))
    assert n_hidden == hide_labels(y, 0.4, 0, keep_per_class=2).sum() > 0
    for k in ("test_heldout_wf1", "baseline_test_heldout_wf1", "semi_n_pseudo", "semi_pool_size"):
        assert k in res.metrics, k
    assert res.metrics["semi_pool_size"] == n_hidden + 3 * 4          # hidden clips + every test split
    pl = pd.read_csv(res.out_dir / "pseudo_labels.csv", keep_default_na=False)
    assert len(pl) == res.metrics["semi_pool_size"] and (pl.true_label != "").all()
    test3 = [n for n, s in zip(manifest["name"], manifest["split"]) if s == "test3"]
    assert validate_submission(res.submissions["semi"], "mer2023_semi", names=test3) == []
    base = res.out_dir / "submissions" / "baseline-supervised" / "mer2023_semi.csv"
    assert validate_submission(base, "mer2023_semi", names=test3) == []
    con = sqlite3.connect(tmp_path / "runs" / "mlflow.db")
    steps = {s for s, in con.execute("select step from metrics where run_uuid=? and key='round_n_pseudo'",
                                     (res.run_id,))}
    assert steps == {0, 1}


@pytest.mark.slow
def test_semi_track_on_real_mer2023_transcripts(tmp_path):
    from mer.pipeline import run

    root = shared_data("mer2023")
    cfg = _cfg(tmp_path, ["data=mer2023", f"data.root={root}", "features/text=tfidf", "features/audio=none",
                          "features/visual=none", "train.epochs=3", "train.n_folds=2", "tracking=none",
                          "track.strategy_options.rounds=1"])
    res = run(cfg, out_dir=tmp_path / "out")
    no_input = json.loads((res.out_dir / "results.json").read_text())["no_input"]["by_split"]
    n_pool = 411 + 412 + 834 - sum(no_input.get(sp, 0) for sp in ("test1", "test2", "test3"))
    assert 0 < n_pool < 411 + 412 + 834                               # some transcripts are empty
    assert res.metrics["semi_pool_size"] == n_pool       # test1-3, labels withheld; no pseudo-label without input
    assert res.metrics["semi_n_pseudo"] > 0
    test3 = pd.read_csv(root / "test3-names.csv")["name"].tolist()
    assert validate_submission(res.submissions["semi"], "mer2023_semi", names=test3) == []
    pl = pd.read_csv(res.out_dir / "pseudo_labels.csv", keep_default_na=False)
    assert (pl.true_label == "").all() and len(pl) == n_pool
    assert 0.2 < res.metrics["cv_wf1"] < 0.9                          # above always-neutral (0.11)
