"""``python -m mer.ui`` stops its MLflow server (the whole process group) when it is told to stop,
so no server is left serving the port."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow          # the MLflow server takes 10-30 s to come up on 2 cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port``. SO_REUSEADDR: the health check's closed connection may sit in
    TIME_WAIT for a minute, which is not a server serving the port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line holds ``text`` (the runs folder names the server's processes)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_sigterm_stops_the_server_and_frees_the_port(tmp_path):
    sig = signal.SIGTERM
    runs = tmp_path / "runs"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "mer.ui", "--runs-dir", str(runs), "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "mer.ui exited before serving"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow UI did not come up"
                time.sleep(0.5)
        server = [p for p in processes_mentioning(str(runs)) if p != proc.pid]
        assert server, "no server process found"
        proc.send_signal(sig)                      # to mer.ui alone, as `kill PID` or Ctrl-C does
        assert proc.wait(timeout=15) == 0
        deadline = time.monotonic() + 10
        while (processes_mentioning(str(runs)) or not port_is_free(port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_mentioning(str(runs)) == []
        assert port_is_free(port)
    finally:
        for pid in processes_mentioning(str(runs)):    # never leave a server behind a failed test
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
