"""``python -m mer.ui`` — the MLflow UI over mer's runs store, bound to 127.0.0.1.

    python -m mer.ui                       # http://127.0.0.1:5000 over ~/mer-runs/mlflow.db
    python -m mer.ui --port 5055 --runs-dir /data/mer-runs

Studies show as a parent run (``tune-<study>``) with one nested run per trial and the final
runs under it. The server listens on the loopback interface only; reach it from another machine
through an SSH tunnel (``ssh -L 5000:127.0.0.1:5000 host``), never by binding it wider.

The server runs in a process group of its own, which is stopped (SIGTERM, then SIGKILL after a
grace period) when this command gets SIGTERM, SIGINT or SIGHUP, or exits any other way, so no
server is left holding the port.
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from mer.core.redact import mask_secrets

HOST = "127.0.0.1"
STOP_GRACE_S = 5.0
"""How long the server's processes get to exit after SIGTERM before they are killed."""


def ui_command(runs_dir: Path, port: int, workers: int = 1) -> list[str]:
    runs_dir = Path(runs_dir).resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{runs_dir / 'mlflow.db'}"
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    base = [exe] if exe else [sys.executable, "-m", "mlflow"]
    return [*base, "ui", "--backend-store-uri", uri, "--default-artifact-root", (runs_dir / "mlartifacts").as_uri(),
            "--host", HOST, "--port", str(port), "--workers", str(workers)]


def ui_env() -> dict[str, str]:
    env = dict(os.environ)
    # the UI only: no background job runner (another process and ~250 MB), no usage telemetry
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mer.ui", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs-dir", default=os.environ.get("MER_RUNS_DIR", str(Path.home() / "mer-runs")))
    ap.add_argument("--port", type=int, default=5000)
    args = ap.parse_args(argv)
    cmd = ui_command(Path(args.runs_dir), args.port)
    store = mask_secrets(cmd[cmd.index("--backend-store-uri") + 1])
    print(f"MLflow UI on http://{HOST}:{args.port} over {store} (Ctrl-C stops it)\n"
          f"runs of an experiment: http://{HOST}:{args.port}/#/experiments/<id>/runs?workflowType=machine_learning",
          flush=True)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in _STOP_SIGNALS}
    server = None
    try:
        # A group of its own: the server's workers go with it, and the signal that stops this
        # command reaches it through stop_server alone.
        server = subprocess.Popen(cmd, env=ui_env(), start_new_session=True)
        atexit.register(stop_server, server)
        return server.wait()
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        for sig in _STOP_SIGNALS:                 # a second Ctrl-C must not cut the stop short
            signal.signal(sig, signal.SIG_IGN)
        if server is not None:
            stop_server(server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stop(BaseException):
    """A stop signal arrived (raised from the handler, so ``wait`` returns at once)."""


def _raise_stop(signum, frame) -> None:
    raise _Stop(signum)


def stop_server(server: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL what is left after ``grace_s``.
    Safe to call twice and after the server has exited (its workers may not have)."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        server.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(server.pid, signal.SIGKILL)     # workers that outlived their parent, or a hang
    except (ProcessLookupError, PermissionError):
        pass
    server.wait()


if __name__ == "__main__":
    from mer.core.errors import run_cli

    run_cli(main)
