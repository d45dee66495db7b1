"""Every track walks the one run through its strategy's hooks: prepare, evaluate (each fold
reported to ``on_fold``, which may stop the run: a pruned trial), write_outputs. A strategy of its
own family is one class."""
import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from mer.pipeline import run
from mer.tracks.base import STRATEGIES, Strategy, TrackData, TrackOutcome
from mer.training.cv import stratified_folds
from mer.training.data import Split

TEXT_ONLY = ["data.demo.n_train=24", "data.demo.n_per_test=4", "train.epochs=2", "train.n_folds=2",
             "progress=false", "ablate_modalities=false", "features/audio=none", "features/visual=none",
             "tracking=none"]


def _cfg(tmp, *overrides):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.runs_dir={tmp / 'runs'}", *TEXT_ONLY, *overrides])


class Majority(Strategy):
    """A family of its own: predict the training folds' most frequent class."""

    name = "majority"

    def prepare(self, ctx) -> TrackData:
        samples = ctx.train_samples()
        classes = list(ctx.manifest.label_spec.classes)
        y = np.array([classes.index(s.discrete) for s in samples])
        return TrackData(Split(ctx.bundle.take([s.name for s in samples]), y, np.full(len(y), np.nan)), {})

    def evaluate(self, ctx, data):
        y, hits = data.train.y, []
        for seed in ctx.cfg.train.seeds:
            for k, (tr, va) in enumerate(stratified_folds(y, int(ctx.cfg.train.n_folds), int(seed))):
                acc = float((y[va] == np.bincount(y[tr]).argmax()).mean())
                hits.append(acc)
                ctx.on_fold({"seed": int(seed), "fold": k, "acc": acc})
        return hits

    def write_outputs(self, ctx, data, evaluation) -> TrackOutcome:
        acc = float(np.mean(evaluation))
        return TrackOutcome([{"method": "majority", "cv_acc": f"{acc:.4f}"}], {"cv_acc": acc}, {},
                            {"folds": len(evaluation)})


@pytest.fixture
def majority():
    STRATEGIES.register("majority")(Majority)
    yield
    STRATEGIES.unregister("majority")


@pytest.mark.slow
def test_a_family_of_its_own_is_one_class_through_the_hooks(majority, tmp_path):
    folds = []
    res = run(_cfg(tmp_path, "track.strategy=majority", "train.seeds=[0,1]"), out_dir=tmp_path / "out",
              on_fold=folds.append)
    assert [(f["seed"], f["fold"]) for f in folds] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert res.metrics["cv_acc"] == pytest.approx(np.mean([f["acc"] for f in folds]))
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["folds"] == 4 and summary["track"] == "multi" and "majority" in res.table


@pytest.mark.slow
@pytest.mark.parametrize("track, extra, per_fold", [
    ("semi", ["track.hide_labels.fraction=0.5", "track.strategy_options.rounds=1"], "wf1"),
    ("pll", ["track.epochs=4", "track.refine=none"], "acc"),
    ("ov", ["track.predictors=[probabilities]"], "score"),
])
def test_every_track_reports_each_fold_and_can_be_stopped(track, extra, per_fold, tmp_path):
    folds = []
    run(_cfg(tmp_path, f"track={track}", *extra), out_dir=tmp_path / "out", on_fold=folds.append)
    assert folds and all(per_fold in f and np.isfinite(f[per_fold]) for f in folds)
    assert {f["fold"] for f in folds} == {0, 1}

    class Pruned(Exception):
        pass

    def stop(record):
        raise Pruned(record)

    with pytest.raises(Pruned):            # a pruner's exception leaves the run at the first fold
        run(_cfg(tmp_path, f"track={track}", *extra), out_dir=tmp_path / "out2", on_fold=stop)


@pytest.mark.slow
def test_a_noise_study_hears_every_fold_so_its_trials_can_be_pruned(tmp_path):
    from mer.tuning.objective import evaluate, prepare

    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("tune", overrides=[f"paths.runs_dir={tmp_path / 'runs'}", "track=noise",
                                         "data.demo.n_train=24", "data.demo.n_per_test=4", "train.epochs=2",
                                         "train.n_folds=2", "progress=false", "modalities=[audio,visual]",
                                         "features/text=none", "track.robustness.split=null"])
    sd = prepare(cfg)
    assert "mixed" in sd.data.views                  # the noise strategy's prepare built its view
    steps = []
    value, summary, _ = evaluate(cfg, sd, seeds=[0], objective="wf1", report=lambda v, step: steps.append(step))
    assert steps == [1, 2] and np.isfinite(value) and summary["cv_wf1"] == value
