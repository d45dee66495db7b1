"""Worker processes on one study: a worker killed mid-trial (SIGKILL) leaves no trial RUNNING
and the study still ends with exactly the requested COMPLETE trials; a study whose only process
was killed resumes; the final run predicts the test splits once."""
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from conftest import REPO
from mer.tuning.storage import open_storage

pytestmark = pytest.mark.slow

SMALL = ["data.demo.n_train=48", "data.demo.n_per_test=6", "features/visual=none", "train.n_folds=3",
         "progress=false", "tune=quick", "tune.pruner.name=none"]


def _cmd(tmp_path, study, extra):
    return [sys.executable, "-m", "mer.tune", f"tune.study={study}", f"paths.runs_dir={tmp_path}",
            f"tune.export_dir={tmp_path / 'conf' / 'experiment'}", *SMALL, *extra]


def _study(tmp_path, name):
    journal = tmp_path / "tune" / name / "study.journal"
    return optuna.load_study(study_name=name, storage=open_storage(f"journal:{journal}"))


def _wait_for_running(tmp_path, name, not_pid, proc, timeout=240):
    """A RUNNING trial (with a first fold reported) of a worker other than ``not_pid``."""
    journal = tmp_path / "tune" / name / "study.journal"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if journal.exists():
            try:
                for t in _study(tmp_path, name).get_trials(states=(TrialState.RUNNING,)):
                    pid = int(t.user_attrs.get("worker", "x:0:0").split(":")[1])
                    if pid != not_pid and t.intermediate_values:
                        return t.number, pid
            except KeyError:
                pass
        time.sleep(0.2)
    raise AssertionError("no trial started running")


def test_four_workers_one_killed_mid_trial(tmp_path):
    name = "killed"
    proc = subprocess.Popen(_cmd(tmp_path, name, ["tune.workers=4", "tune.n_trials=8", "train.epochs=40",
                                                  "tune.final_run=false", "tune.compare_default=false",
                                                  "tracking=none"]),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    number, pid = _wait_for_running(tmp_path, name, proc.pid, proc)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    trials = _study(tmp_path, name).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 8
    assert TrialState.RUNNING not in states
    killed = trials[number]
    assert killed.state == TrialState.FAIL and "gone" in killed.user_attrs["failed_because"]
    workers = {t.user_attrs["worker"].split(":")[1] for t in trials if t.state == TrialState.COMPLETE}
    assert len(workers) >= 2                                          # the work was shared
    assert f"exited with code -{int(signal.SIGKILL)}" in out + err


def test_killed_study_resumes_and_the_final_run_predicts_test_once(tmp_path):
    name = "resumed"
    first = subprocess.Popen(_cmd(tmp_path, name, ["tune.n_trials=40", "train.epochs=40", "tune.final_run=false",
                                                   "tune.compare_default=false"]),
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    number, _ = _wait_for_running(tmp_path, name, -1, first)
    first.send_signal(signal.SIGKILL)
    first.wait(60)
    assert _study(tmp_path, name).trials[number].state == TrialState.RUNNING      # left behind by the kill
    proc = subprocess.run(_cmd(tmp_path, name, ["tune.n_trials=3", "train.epochs=4"]), cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    st = _study(tmp_path, name)
    states = [t.state for t in st.trials]
    assert states.count(TrialState.COMPLETE) == 3 and TrialState.RUNNING not in states
    assert st.trials[number].state == TrialState.FAIL
    summary = json.loads((tmp_path / "tune" / name / "study.json").read_text())
    rows = {r["config"]: r for r in summary["comparison"]["rows"]}
    assert set(rows) == {"tuned", "default"} and rows["tuned"]["seeds"] == "[1]"
    subs = summary["comparison"]["submissions"]
    df = pd.read_csv(subs["multi"])
    assert list(df.columns) == ["name", "discrete", "valence"] and len(df) == 6
    assert (tmp_path / "tune" / name / "comparison.md").read_text().count("|") > 10
    assert "submission (multi)" in proc.stdout
    import sqlite3

    con = sqlite3.connect(tmp_path / "mlflow.db")
    parent = st.user_attrs["mlflow_parent_run_id"]
    nested = con.execute("select r.name, r.status from runs r join tags t on t.run_uuid=r.run_uuid "
                         "where t.key='mlflow.parentRunId' and t.value=?", (parent,)).fetchall()
    assert (f"{name}-trial-{number:03d}", "FAILED") in nested         # the killed trial, closed in MLflow too
    trials_done = [n for n, s in nested if n.startswith(f"{name}-trial-") and s == "FINISHED"]
    assert len(trials_done) >= 3
    assert [s for n, s in nested if not n.startswith(f"{name}-trial-")] == ["FINISHED", "FINISHED"]  # final + default
