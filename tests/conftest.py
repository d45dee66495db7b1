"""Test-wide settings: nothing is written to the user's home or the source tree, nothing goes online."""
import importlib.machinery
import importlib.util
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from mer.core.env import configure_environment

configure_environment()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_GOLDEN = REPO.parent / "shared" / "golden"


def _expose_checkout_folder(name: str) -> None:
    """Make the checkout's ``bench`` or ``tests`` folder importable as a package by that name
    without putting the checkout itself on sys.path: ``mer`` and the other packages keep coming
    from their installation (editable or not), never from the folder the tests happen to sit in."""
    if name in sys.modules:
        return
    folder = REPO / name
    init = folder / "__init__.py"
    spec = (importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
            if init.is_file() else importlib.machinery.ModuleSpec(name, None, is_package=True))
    if not init.is_file():
        spec.submodule_search_locations = [str(folder)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if spec.loader is not None:
        spec.loader.exec_module(module)


_expose_checkout_folder("tests")
_expose_checkout_folder("bench")


@pytest.fixture(scope="session", autouse=True)
def _isolated_paths(tmp_path_factory):
    base = tmp_path_factory.mktemp("mer-home")
    old = {k: os.environ.get(k) for k in ("MER_CACHE_DIR", "MER_RUNS_DIR", "MLFLOW_TRACKING_URI")}
    os.environ["MER_CACHE_DIR"] = str(base / "cache")
    os.environ["MER_RUNS_DIR"] = str(base / "runs")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield base
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test (with the reason) when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (the shared real-data folder beside the repo)")
    return p


def golden_dir(name: str) -> Path:
    """``../shared/golden/<name>`` (outputs of reference code, read in place, never copied)."""
    return SHARED_GOLDEN / name


def needs_golden(name: str):
    """Skip marker for tests that compare against ``../shared/golden/<name>``."""
    return pytest.mark.skipif(not golden_dir(name).is_dir(),
                              reason=f"{golden_dir(name)} is absent (the shared golden folder beside the repo)")


@pytest.fixture(autouse=True)
def _no_mlflow_state_between_tests():
    """MLflow keeps the active run and tracking URI in process globals: a test that ran a tracked
    job in-process must not leave them to the next one."""
    yield
    import sys

    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


class ChatHandler(BaseHTTPRequestHandler):
    """A local OpenAI-compatible chat endpoint: records each request in ``calls`` and answers
    ``answer(prompt)`` (a test sets it)."""

    calls: list = []

    @staticmethod
    def answer(prompt: str) -> str:
        return ""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"body": body, "auth": self.headers.get("Authorization")})
        content = type(self).answer(body["messages"][-1]["content"])
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    """The URL (``.../v1``) of a real HTTP server running :class:`ChatHandler` on a free port."""
    ChatHandler.calls = []
    server = HTTPServer(("127.0.0.1", 0), ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
