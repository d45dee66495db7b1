"""Partial-label track: candidate sources, and ``track=pll`` end to end on the demo (generated noisy
candidates, ARNet beside the learner alone, the correction start chosen inside the training folds)."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from mer.core.samples import MER_CLASSES, Sample
from mer.tracks.pll import make_candidates
from submissions.validate import validate_submission


def _ctx(track: dict, samples):
    manifest = SimpleNamespace(dataset="toy", label_spec=SimpleNamespace(classes=MER_CLASSES),
                               names=lambda: [s.name for s in samples])
    cfg = OmegaConf.create({"track": track, "data": {"name": "toy"}})
    return SimpleNamespace(cfg=cfg, manifest=manifest, out=None)


def test_candidate_sources(tmp_path):
    samples = [Sample(f"s{i}", "train", discrete=MER_CLASSES[i % 6]) for i in range(12)]
    y = np.arange(12) % 6
    _, y1, S = make_candidates(_ctx({"candidates": "generated", "q": 0.3, "eta": 0.0, "candidate_seed": None},
                                    samples), samples, y, seed=1)
    assert (S[np.arange(12), y1] == 1).all() and S.sum() > 12      # eta=0: the truth always stays
    with pytest.raises(SystemExit, match="datasets with votes"):
        make_candidates(_ctx({"candidates": "votes"}, samples), samples, y, 0)
    gold = tmp_path / "gold.csv"
    gold.write_text("name,openset\ns0,\"['calm']\"\ns1,\"['furious', 'astonished']\"\ns2,\"['joyful']\"\n")
    kept, y2, S2 = make_candidates(_ctx({"candidates": "ov_words", "gold": str(gold)}, samples), samples, y, 0)
    assert [s.name for s in kept] == ["s0", "s1", "s2"]
    assert S2.tolist() == [[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0]]


@pytest.mark.slow
def test_pll_track_on_the_demo(tmp_path, monkeypatch):
    from mer.pipeline import run
    from mer.pll.arnet import ARNetRefiner

    seen = []
    fit = ARNetRefiner.fit

    def spy(self, X, S, y_true=None, eval_set=None):
        seen.append((len(X), eval_set))
        return fit(self, X, S, y_true=y_true, eval_set=eval_set)

    monkeypatch.setattr(ARNetRefiner, "fit", spy)
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"paths.runs_dir={tmp_path / 'runs'}", "track=pll", "progress=false", "data.demo.n_train=24",
            "data.demo.n_per_test=4", "train.n_folds=2", "features/visual=none", "features/audio=none",
            "features/text=tfidf",
            "track.learner=cc", "track.q=0.3", "track.eta=0.3", "track.epochs=12", "track.arnet.window=4",
            "track.arnet.min_warmup=3", "track.arnet.slope_epochs=2", "track.learner_params.hidden=32"])
    res = run(cfg, out_dir=tmp_path / "out")
    out = res.out_dir
    scores = pd.read_csv(out / "pll_scores.csv")
    folds = scores[scores.fold != "oof"]
    assert set(folds.method) == {"cc", "cc+arnet"}
    assert seen == [(n, None) for n in folds[folds.method == "cc+arnet"].n_train]   # training folds only
    assert (folds.n_train + folds.n_val == 24).all()
    arnet = folds[folds.method == "cc+arnet"]
    assert (arnet.truth_after >= arnet.truth_before).all() and (arnet.truth_before < 1).all()
    epochs = pd.read_csv(out / "pll_epochs.csv")
    assert {"method", "seed", "fold", "epoch", "phase", "avg_size", "contains_truth"} <= set(epochs.columns)
    last = epochs[epochs.method == "cc+arnet"].groupby("fold").contains_truth.agg(["first", "last"])
    assert (last["last"] >= last["first"] - 1e-9).all() or (arnet.truth_after >= arnet.truth_before).all()
    assert (out / "pll_epochs.png").read_bytes()[:4] == b"\x89PNG"
    for k in ("pll_cc_cv_acc", "pll_cc_arnet_cv_wf1", "pll_cc_arnet_truth_before", "pll_cc_arnet_truth_after"):
        assert 0 <= res.metrics[k] <= 1, k
    manifest = pd.read_json(out / "manifest.jsonl", lines=True, dtype=False).iloc[1:]
    for sp in ("test1", "test2", "test3"):
        names = manifest[manifest.split == sp].name.tolist()
        assert validate_submission(res.submissions[f"pll-{sp}"], "generic", names=names,
                                   classes=list(MER_CLASSES)) == []
    import sqlite3

    con = sqlite3.connect(tmp_path / "runs" / "mlflow.db")
    steps = {s for s, in con.execute("select step from metrics where run_uuid=? and key='pll_cc_arnet_contains_truth'",
                                     (res.run_id,))}
    assert steps == set(range(1, 13))
