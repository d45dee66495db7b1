"""Optuna studies over the CV protocol: trials, pruning, MLflow nesting, the pinned export that
reproduces the best trial, nested CV, storages (journal default, SQLite refused in parallel)."""
import json
import sqlite3
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from conftest import REPO
from mer.tuning.storage import SqliteRefused, check_workers, open_storage, sqlite_single_writer

SMALL = ["data.demo.n_train=48", "data.demo.n_per_test=6", "features/visual=none", "train.epochs=4",
         "train.n_folds=3", "progress=false"]


def compose_tune(tmp_path, overrides=()):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("tune", overrides=[f"paths.runs_dir={tmp_path / 'runs'}", "tune=quick",
                                          f"tune.export_dir={tmp_path / 'conf' / 'experiment'}",
                                          *SMALL, *overrides])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from mer.tuning.study import run_study

    tmp = tmp_path_factory.mktemp("tune")
    cfg = compose_tune(tmp, ["tune.study=small", "tune.n_trials=5", "tune.final_run=false",
                             "tune.compare_default=false"])
    return tmp, cfg, run_study(cfg, overrides=SMALL)


def _load(result):
    return optuna.load_study(study_name=result.study_name, storage=open_storage(result.storage))


def test_study_reaches_the_complete_target_and_records_the_protocol(study):
    tmp, cfg, res = study
    assert res.storage.startswith("journal:") and Path(res.storage[len("journal:"):]).is_file()
    st = _load(res)
    states = [t.state for t in st.trials]
    assert states.count(TrialState.COMPLETE) == 5 and TrialState.RUNNING not in states
    assert st.user_attrs["protocol"]["seeds"] == [0] and st.user_attrs["protocol"]["sampler"]["seed"] == 0
    for t in st.trials:
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == [1, 2, 3]          # one report per fold
            assert t.value == pytest.approx(t.user_attrs["cv_wf1"])
            assert t.user_attrs["worker"].count(":") == 2
    assert res.best["value"] == max(t.value for t in st.trials if t.state == TrialState.COMPLETE)
    assert "modalities" in res.best["params"] and "train.lr" in res.best["params"]


def test_each_trial_is_a_nested_mlflow_run_of_the_study(study):
    tmp, cfg, res = study
    con = sqlite3.connect(tmp / "runs" / "mlflow.db")
    runs = dict(con.execute("select run_uuid, name from runs"))
    assert runs[res.parent_run_id] == "tune-small"
    children = [r for r, in con.execute("select run_uuid from tags where key='mlflow.parentRunId' and value=?",
                                        (res.parent_run_id,))]
    st = _load(res)
    assert len(children) == len(st.trials)
    assert sorted(runs[c] for c in children) == [f"small-trial-{t.number:03d}" for t in st.trials]
    steps = con.execute("select count(*) from metrics where key='running_cv_wf1' and run_uuid in (%s)"
                        % ",".join("?" * len(children)), children).fetchone()[0]
    assert steps >= 3 * 5
    status, = con.execute("select status from runs where run_uuid=?", (res.parent_run_id,)).fetchone()
    assert status == "FINISHED"
    best_metric = con.execute("select value from metrics where run_uuid=? and key='best_cv_wf1'",
                              (res.parent_run_id,)).fetchone()[0]
    assert best_metric == pytest.approx(res.best["value"])


def test_exported_experiment_reproduces_the_best_trial(study):
    from mer.pipeline import run

    tmp, cfg, res = study
    text = res.experiment.read_text()
    assert text.startswith("# @package _global_") and res.experiment.parent == tmp / "conf" / "experiment"
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        run_cfg = compose("config", overrides=[f"+experiment={res.experiment.stem}",
                                               f"hydra.searchpath=[file://{tmp / 'conf'}]",
                                               f"paths.runs_dir={tmp / 'runs'}", "tracking=none",
                                               "ablate_modalities=false"])
    assert list(run_cfg.train.seeds) == [0] and run_cfg.data.demo.n_train == 48
    assert run_cfg.train.lr == pytest.approx(res.best["params"]["train.lr"])
    assert "+".join(run_cfg.modalities) == res.best["params"]["modalities"]
    out = run(run_cfg, out_dir=tmp / "reproduce")
    assert out.metrics["cv_wf1"] == pytest.approx(res.best["value"], abs=1e-9)


@pytest.mark.slow
def test_nested_cv_scores_each_outer_fold_with_its_own_choice(tmp_path):
    from conftest import shared_data
    from mer.tuning.objective import prepare
    from mer.tuning.study import nested_cv

    root = shared_data("mer2023")
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("tune", overrides=[f"paths.runs_dir={tmp_path}", "data=mer2023", f"data.root={root}",
                                         "features/text=tfidf", "features/audio=none", "features/visual=none",
                                         "train.epochs=2", "progress=false", "tune.features.search=false",
                                         "tune.nested.outer_folds=2", "tune.nested.n_trials=2",
                                         "tune.nested.inner_folds=2", "tune.pruner.name=none"])
    sd = prepare(cfg)
    nested = nested_cv(cfg, sd, tmp_path)
    assert json.loads((tmp_path / "nested_cv.json").read_text())["outer_folds"] == 2
    assert len(nested["scores"]) == 2 and len(nested["chosen"]) == 2
    assert nested["chosen"][0] != nested["chosen"][1]            # each outer fold ran its own study
    assert 0.2 < nested["summary"]["wf1"]["mean"] < 0.9          # scored on rows no inner study saw


def test_resuming_the_study_adds_only_what_is_missing(study):
    from mer.tuning.study import run_study

    tmp, cfg, res = study
    before = len(_load(res).trials)
    cfg.tune.nested.outer_folds = 0
    cfg.tune.n_trials = 6
    again = run_study(cfg, overrides=SMALL)
    st = _load(again)
    assert [t.state for t in st.trials].count(TrialState.COMPLETE) == 6
    assert len(st.trials) > before and again.parent_run_id == res.parent_run_id


def test_a_changed_protocol_is_refused_on_resume(study):
    from mer.tuning.study import run_study

    tmp, cfg, res = study
    cfg = cfg.copy()
    cfg.tune.seeds = [5]
    with pytest.raises(SystemExit, match="was run with"):
        run_study(cfg, overrides=SMALL)


def test_parallel_sqlite_is_refused_with_the_alternatives(tmp_path):
    with pytest.raises(SqliteRefused, match="journal.*postgresql"):
        check_workers(f"sqlite:///{tmp_path}/s.db", 4)
    check_workers(f"sqlite:///{tmp_path}/s.db", 1)
    check_workers("postgresql://u:p@db/optuna", 8)
    url = f"sqlite:///{tmp_path}/study.db"
    with sqlite_single_writer(url):
        with pytest.raises(SqliteRefused, match="another mer.tune worker"):
            with sqlite_single_writer(url):
                pass
    with sqlite_single_writer(url):        # released: a later worker gets in
        pass


def test_cli_refuses_sqlite_with_several_workers(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mer.tune", "tune.workers=2",
                           f"tune.storage=sqlite:///{tmp_path}/s.db", f"paths.runs_dir={tmp_path}", *SMALL],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "loses trials" in proc.stderr + proc.stdout or "lose trials" in proc.stderr + proc.stdout
    assert not (tmp_path / "s.db").exists()
