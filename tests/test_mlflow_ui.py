"""The MLflow UI over mer's runs store, in a real headless browser: bound to 127.0.0.1, a study's
parent run, its nested trial runs and their artifacts are browsable."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import REPO

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (scripts/setup.sh installs "
                                                          "Debian's chromium when it runs as root with apt)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=15000", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A runs store as a study leaves it: a parent run, nested trial runs with metrics and an artifact."""
    import mlflow

    from mer.tracking import MlflowTracker

    runs = tmp_path_factory.mktemp("ui-runs")
    tracker = MlflowTracker(f"sqlite:///{runs / 'mlflow.db'}", "mer", runs / "mlartifacts")
    mlflow_mod, exp_id = tracker._client_setup()
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    parent = client.create_run(exp_id, run_name="tune-uistudy").info.run_id
    children = []
    for k in range(2):
        with tracker.start(f"uistudy-trial-00{k}", tags={"mlflow.parentRunId": parent}) as tr:
            tr.log_params({"train": {"lr": 0.001 * (k + 1)}})
            for step in range(3):
                tr.log_metrics({"running_cv_wf1": 0.3 + 0.1 * step}, step=step)
            note = runs / f"trial{k}.md"
            note.write_text(f"trial {k} notes\n")
            tr.log_artifact(note)
            children.append(tr.run_id)
    client.set_terminated(parent, "FINISHED")
    mlflow.set_tracking_uri(None)
    return runs, exp_id, parent, children


@pytest.fixture(scope="module")
def ui(store):
    runs = store[0]
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    env.pop("MLFLOW_TRACKING_URI")
    proc = subprocess.Popen([sys.executable, "-m", "mer.ui", "--runs-dir", str(runs), "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        raise AssertionError("the MLflow UI did not come up")
    yield url, port
    os.killpg(proc.pid, 15)
    proc.wait(30)


def test_ui_listens_on_loopback_only(ui):
    url, port = ui
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("ss is not available")
    local = {line.split()[3] for line in out.stdout.splitlines() if line.strip()}
    assert local and all(a.startswith("127.0.0.1:") for a in local), local


def test_browser_shows_runs_nested_trials_and_artifacts(ui, store, tmp_path):
    url, _ = ui
    runs, exp_id, parent, children = store
    page = f"{url}/#/experiments/{exp_id}/runs/{children[0]}"
    dom = _browser("--dump-dom", page).stdout
    assert "uistudy-trial-000" in dom                         # the run's page, rendered by the app's JS
    assert "tune-uistudy" in dom                               # ... names its parent run
    shot = tmp_path / "run.png"
    _browser(f"--screenshot={shot}", "--window-size=1400,1000", page)
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000
    listing = _browser("--dump-dom", f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning").stdout
    assert "tune-uistudy" in listing and "matching runs" in listing      # the parent, its trials folded in
    arts = _browser("--dump-dom", f"{url}/#/experiments/{exp_id}/runs/{children[1]}/artifacts").stdout
    assert "trial1.md" in arts and "uistudy-trial-001" in arts
    with urllib.request.urlopen(f"{url}/get-artifact?path=trial1.md&run_uuid={children[1]}", timeout=10) as r:
        assert r.read().decode() == "trial 1 notes\n"
