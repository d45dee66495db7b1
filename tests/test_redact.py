"""Credentials in URLs are masked in everything mer prints or logs: a failing mer.tune with a
database password in tune.storage, MLflow params and tags, the masking rule itself."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mer.core.redact import MASK, mask_secrets

REPO = Path(__file__).resolve().parents[1]
STORAGE = "postgresql://optuna_user:s3cr3t-pw@127.0.0.1:9/optuna"


@pytest.mark.parametrize("text, shown", [
    ("postgresql://user:secret@host/db", f"postgresql://user:{MASK}@host/db"),
    ("tune.storage=mysql+pymysql://root:p@ss/w0rd@10.0.0.1:3306/x failed",
     f"tune.storage=mysql+pymysql://root:{MASK}@10.0.0.1:3306/x failed"),
    ("{'uri': 'https://h/api?token=abc&page=2'}", f"{{'uri': 'https://h/api?token={MASK}&page=2'}}"),
    ("a://u:one@h and b://v:two@k/x", f"a://u:{MASK}@h and b://v:{MASK}@k/x"),
])
def test_secrets_are_masked(text, shown):
    assert mask_secrets(text) == shown


@pytest.mark.parametrize("text", ["postgresql://user@host/db", "http://127.0.0.1:5000/#/experiments/1",
                                  "sqlite:////tmp/runs/mlflow.db", "journal:/tmp/study.journal", "lr=0.001"])
def test_urls_without_secrets_are_left_alone(text):
    assert mask_secrets(text) == text
    assert mask_secrets(3) == 3


def test_failing_tune_never_prints_the_password(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mer.tune", f"tune.storage={STORAGE}",
                           f"paths.runs_dir={tmp_path}", "tracking=none", "progress=false"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "s3cr3t" not in out
    assert f"optuna_user:{MASK}@127.0.0.1:9/optuna" in out          # the line says which storage
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) <= 2, proc.stderr[-2000:]
    assert not any(p.suffix == ".npz" for p in tmp_path.rglob("*"))  # refused before any feature


def test_logged_params_and_tags_hold_no_password(tmp_path):
    import mlflow

    from mer.tracking import MlflowTracker

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "mer", tmp_path / "art")
    with tracker.start("run", tags={"storage": STORAGE}) as tr:
        tr.log_params({"tune": {"storage": STORAGE, "n_trials": 3}, "tracking": {"uri": STORAGE}})
        tr.set_tags({"db": STORAGE})
    run = mlflow.MlflowClient(tracking_uri=tracker.uri).get_run(tracker.run_id)
    mlflow.set_tracking_uri(None)
    logged = {**run.data.params, **run.data.tags}
    assert not [k for k, v in logged.items() if "s3cr3t" in v]
    assert logged["tune.storage"] == f"postgresql://optuna_user:{MASK}@127.0.0.1:9/optuna"
    assert logged["tune.n_trials"] == "3" and logged["storage"] == logged["db"] == logged["tune.storage"]


def test_whatever_a_command_prints_is_masked(tmp_path):
    # a library's print, a log line and the traceback of an unexpected error, all under run_cli
    script = tmp_path / "cli.py"
    script.write_text(
        "import logging\n"
        "from mer.core.errors import run_cli\n"
        f"URL = {STORAGE!r}\n"
        "def main():\n"
        "    logging.basicConfig()\n"
        "    print('connecting to', URL)\n"
        "    logging.getLogger('lib').warning('retrying %s', URL)\n"
        "    raise RuntimeError('lost ' + URL)\n"
        "run_cli(main)\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0
    assert "s3cr3t" not in proc.stdout + proc.stderr
    assert f"connecting to postgresql://optuna_user:{MASK}@" in proc.stdout
    assert "retrying postgresql://optuna_user:" in proc.stderr and "RuntimeError: lost" in proc.stderr
