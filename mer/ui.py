"""``python -m mer.ui`` — the MLflow UI over mer's runs store, bound to 127.0.0.1.

    python -m mer.ui                       # http://127.0.0.1:5000 over ~/mer-runs/mlflow.db
    python -m mer.ui --port 5055 --runs-dir /data/mer-runs

Studies show as a parent run (``tune-<study>``) with one nested run per trial and the final
runs under it. The server listens on the loopback interface only; reach it from another machine
through an SSH tunnel (``ssh -L 5000:127.0.0.1:5000 host``), never by binding it wider.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HOST = "127.0.0.1"


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
    print(f"MLflow UI on http://{HOST}:{args.port} over {cmd[cmd.index('--backend-store-uri') + 1]} (Ctrl-C stops it)\n"
          f"runs of an experiment: http://{HOST}:{args.port}/#/experiments/<id>/runs?workflowType=machine_learning",
          flush=True)
    try:
        return subprocess.call(cmd, env=ui_env())
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
