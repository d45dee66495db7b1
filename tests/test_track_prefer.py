"""MER-Prefer (``track=prefer``): the official two-class scorer, pairwise models that are exactly
antisymmetric, the pairs reader, and the track end to end on the demo and on a pairs CSV."""
import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from mer.core.errors import UserError
from mer.evaluation.preference import preference_scores
from mer.tracks.prefer import (BradleyTerry, PairFeaturizer, SymmetricPairwise, answers, demo_candidate_pairs,
                               floor_probability, read_pairs)
from submissions.schema import get_schema
from submissions.validate import validate_submission

COLUMNS = {"name": "name", "a": "a1", "b": "a2", "preference": "preference"}
LABELS = {"a": "a1", "b": "a2", "tie": "same"}


def _cfg(tmp, overrides=()):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.runs_dir={tmp / 'runs'}", "track=prefer", "progress=false",
                                            *overrides])


def test_two_class_score_leaves_human_ties_out_and_reads_a_predicted_tie_as_a1():
    gold = ["a1", "a2", "same", "a2", "a1"]
    pred = ["same", "a2", "a2", "a1", "a1"]          # same -> a1: right; the human tie is not scored
    sc = preference_scores(gold, pred)
    assert sc["n"] == 4 and sc["acc"] == pytest.approx(3 / 4)
    # two classes, a1: tp 2 fp 1 fn 0 -> f1 0.8; a2: tp 1 fp 0 fn 1 -> f1 2/3; support 2 and 2
    assert sc["waf"] == pytest.approx((0.8 + 2 / 3) / 2)
    three = preference_scores(gold, pred, metric="threeclass")
    assert three["n"] == 5 and three["acc"] == pytest.approx(2 / 5)   # same is a class of its own here
    with pytest.raises(ValueError, match="a1, a2, same"):
        preference_scores(["a1"], ["b"])


def _synthetic(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    Fa, Fb = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    y = (rng.random(n) < 1 / (1 + np.exp(-3 * (Fa - Fb) @ w))).astype(int)
    return Fa, Fb, y, w


@pytest.mark.parametrize("model", [BradleyTerry(), SymmetricPairwise("mlp", {"hidden": 16, "alpha": 1e-3,
                                                                                 "max_iter": 300}),
                                   SymmetricPairwise("boosted", {"max_iter": 50, "learning_rate": 0.1,
                                                                 "max_leaf_nodes": 7, "l2_regularization": 1.0})])
def test_pairwise_models_are_antisymmetric_and_learn_the_utility(model):
    Fa, Fb, y, _ = _synthetic()
    model.fit(Fa[:300], Fb[:300], y[:300])
    p, q = model.predict_proba(Fa[300:], Fb[300:]), model.predict_proba(Fb[300:], Fa[300:])
    assert np.allclose(p + q, 1.0, atol=1e-9)           # swapping a pair gives the complement exactly
    acc = np.mean((p >= 0.5) == (y[300:] == 1))
    assert acc > 0.75, acc                               # the noise-free ceiling is about 0.85


def test_bradley_terry_recovers_the_direction_of_the_utility():
    Fa, Fb, y, w = _synthetic(n=3000)
    coef = BradleyTerry(C=10.0).fit(Fa, Fb, y).model_.coef_.ravel()
    assert np.dot(coef, w) / (np.linalg.norm(coef) * np.linalg.norm(w)) > 0.98


def test_featurizer_scales_without_centring_so_a_swap_negates_the_difference():
    rng = np.random.default_rng(1)
    C, Ea, Eb = rng.normal(size=(40, 5)), rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    Sa, Sb = rng.random((40, 2)), rng.random((40, 2))
    y = rng.integers(0, 2, 40)
    feat = PairFeaturizer("ridge", 1.0).fit(C, Ea, Eb, Sa, Sb, y)
    Fa, Fb = feat.transform(C, Ea, Eb, Sa, Sb)
    Ga, Gb = feat.transform(C, Eb, Ea, Sb, Sa)
    assert Fa.shape == (40, 2 * 8 + 3)
    assert np.allclose(Fa - Fb, -(Ga - Gb))
    assert np.allclose(np.sqrt(np.mean((Fa - Fb) ** 2, axis=0)), 1.0, atol=1e-3)


def test_floors_and_answers():
    assert answers(floor_probability("longer", ["long text", "a", "ab"], ["short", "abc", "cd"])) == ["a1", "a2", "a1"]
    assert answers(floor_probability("always_a", ["x"], ["y"])) == ["a1"]


def test_read_pairs_maps_answers_flattens_text_and_names_the_bad_line(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"clip": ["c1", "c2", "c3"], "first": ["calm\nand happy", "b", "c"], "second": ["x", "y", "z"],
                  "choice": ["A", "", "tie"]}).to_csv(path, index=False)
    rows = read_pairs(path, {"name": "clip", "a": "first", "b": "second", "preference": "choice"},
                      {"a": "A", "b": "B", "tie": "tie"})
    assert rows.names == ["c1", "c2", "c3"] and rows.preference == ["a1", None, "same"]
    assert rows.a[0] == "calm and happy"
    with pytest.raises(UserError, match=r"line 2: preference 'A'"):
        read_pairs(path, {"name": "clip", "a": "first", "b": "second", "preference": "choice"}, LABELS)
    with pytest.raises(UserError, match="no column"):
        read_pairs(path, COLUMNS, LABELS)


def test_demo_candidates_are_deterministic_and_read_nothing_of_the_clips():
    one, two = demo_candidate_pairs(0, ["t1", "t2"]), demo_candidate_pairs(0, ["t1", "t2"])
    assert one.a == two.a and one.b == two.b and one.preference == [None, None]
    assert one.a[0] != one.b[0]


@pytest.mark.slow
def test_prefer_track_on_the_demo(tmp_path):
    from mer.pipeline import run

    cfg = _cfg(tmp_path, ["data.demo.n_train=60", "data.demo.n_per_test=5", "train.n_folds=3",
                          "features/visual=none", "features/audio=none", "features/text=tfidf",
                          "track.predictors=[always_a,longer,bradley_terry]"])
    res = run(cfg, out_dir=tmp_path / "out")
    out = res.out_dir
    scores = pd.read_csv(out / "prefer_scores.csv")
    assert set(scores.predictor) == {"always_a", "longer", "bradley_terry"}
    assert res.metrics["prefer_bradley_terry_waf"] > res.metrics["prefer_always_a_waf"] + 0.2
    assert res.metrics["prefer_waf"] == max(res.metrics[f"prefer_{p}_waf"] for p in ("always_a", "longer",
                                                                                       "bradley_terry"))
    oof = pd.read_csv(out / "predictions" / "prefer-oof.csv")
    assert len(oof) == 60 and oof.p_a1_bradley_terry.between(0, 1).all()
    schema = get_schema("mer2026_prefer")
    manifest = pd.read_json(out / "manifest.jsonl", lines=True, dtype=False).iloc[1:]
    for sp in ("test1", "test2", "test3"):
        names = manifest[manifest.split == sp].name.tolist()
        path = res.submissions[f"prefer-{sp}"]
        assert validate_submission(path, schema, names=names) == []
        assert set(pd.read_csv(path).preference) <= {"a1", "a2"}
    with sqlite3.connect(tmp_path / "runs" / "mlflow.db") as db:
        keys = {k for (k,) in db.execute("select key from metrics")}
    assert {"prefer_waf", "prefer_acc", "prefer_bradley_terry_waf"} <= keys


@pytest.mark.slow
def test_prefer_track_reads_a_pairs_file_with_ties_and_candidates(tmp_path):
    from mer.pipeline import run

    base = ["data.demo.n_train=40", "data.demo.n_per_test=4", "train.n_folds=2", "features/visual=none",
            "features/audio=none", "features/text=tfidf", "track.predictors=[longer,bradley_terry]"]
    first = run(_cfg(tmp_path, base), out_dir=tmp_path / "first")        # writes the demo's pairs out
    labelled = pd.read_csv(first.out_dir / "prefer_pairs.csv", keep_default_na=False)
    cands = pd.read_csv(first.out_dir / "prefer_candidates.csv", keep_default_na=False)
    labelled.loc[:3, "preference"] = "same"                                 # people judged these equal
    pairs = tmp_path / "pairs.csv"
    pd.concat([labelled, cands.assign(preference="")]).to_csv(pairs, index=False)
    res = run(_cfg(tmp_path, [*base, f"track.pairs={pairs}"]), out_dir=tmp_path / "second")
    summary = json.loads((res.out_dir / "results.json").read_text())["prefer"]
    assert summary["n_ties_left_out"] == 4 and summary["n_labelled"] == 36
    assert summary["n_candidates"] == len(cands)
    assert res.metrics["prefer_n_labelled"] == 36
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"name": ["no_such_clip"], "a1": ["x"], "a2": ["y"], "preference": ["a1"]}).to_csv(bad, index=False)
    with pytest.raises(UserError, match="no_such_clip"):
        run(_cfg(tmp_path, [*base, f"track.pairs={bad}"]), out_dir=tmp_path / "third")
