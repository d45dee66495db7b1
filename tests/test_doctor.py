"""``python -m mer.doctor``: the environment table, and exit status 1 only for a required piece."""
import os
import re
import subprocess
import sys

import torch

from conftest import REPO
from mer.doctor import TORCH_VERSION, Check, check_extractor, check_mlflow_store, exit_status


def _rows(text: str) -> dict[str, tuple[str, str]]:
    """``check -> (state, fix)`` from the printed Markdown table."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("check",) and not set(cells[0]) <= {"-"}:
            out[cells[0]] = (cells[1], cells[2])
    return out


def test_doctor_table_on_this_machine(tmp_path):
    env = {**os.environ, "MER_WEIGHTS_DIR": str(tmp_path / "no-weights"), "MER_RUNS_DIR": str(tmp_path / "runs")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "mer.doctor"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    rows = _rows(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows["torch"][0].startswith(f"ok: {TORCH_VERSION}")
    cuda = rows["CUDA"][0]
    assert cuda.startswith("ok: visible") if torch.cuda.is_available() else cuda.startswith("absent: not visible")
    state, fix = rows["weights: mae_dfer"]
    assert state.startswith("absent: needs a local checkpoint")
    assert fix.startswith("features.visual.options.weights=")
    assert rows["weights: minilm"][0].startswith("ok: all-MiniLM-L6-v2")
    assert rows["weights: hf_text"][1] == "features.text.options.model_path=/path/to/local/folder"
    assert rows["PyAV (mp4/h264)"][0].startswith("ok:")
    assert rows["MLflow store"][0].startswith("ok: sqlite:///")
    assert not (tmp_path / "runs").exists()              # looked at, never created
    assert "every required piece is in place" in proc.stdout


def test_unwritable_mlflow_store_is_a_required_failure(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the runs folder would go")
    bad = check_mlflow_store(f"sqlite:///{blocker / 'runs' / 'mlflow.db'}")
    assert bad.fails and "is not a folder" in bad.state and "MLFLOW_TRACKING_URI" in bad.fix
    good = check_mlflow_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    assert good.ok and not (tmp_path / "new").exists()
    optional = Check("extra: ray", False, "not installed (optional)", required=False)
    assert exit_status([good, optional]) == 0
    assert exit_status([good, optional, bad]) == 1


def test_unwritable_store_exits_1_from_the_command_line(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{blocker / 'mlflow.db'}"}
    proc = subprocess.run([sys.executable, "-m", "mer.doctor"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _rows(proc.stdout)["MLflow store"][0].startswith("MISSING:")
    assert "1 required piece(s) missing: MLflow store" in proc.stdout


def test_a_plugin_with_a_checkpoint_option_is_named_by_its_option():
    import dataclasses

    class Plugin:
        modality = "audio"

        @dataclasses.dataclass(frozen=True)
        class Config:
            weights: str = ""

    check = check_extractor("my_plugin", Plugin)
    assert not check.ok and not check.fails and check.fix.startswith("features.audio.options.weights=")


def test_torch_pin_is_that_of_constraints():
    pins = (REPO / "constraints.txt").read_text()
    assert re.search(rf"^torch=={re.escape(TORCH_VERSION)}\s*$", pins, re.M)
