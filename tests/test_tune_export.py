"""mer.tune's export: the best configuration goes under the study's run folder (never the tracked
conf/experiment unless asked), and the printed reproduce command composes exactly as printed."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir

from mer.core.errors import UserError
from mer.tuning.export import export_dir_for, reproduce_command
from mer.tuning.space import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
LR = 0.0012345


def tune_cfg(tmp_path: Path, overrides=()):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("tune", overrides=[f"paths.runs_dir={tmp_path / 'runs'}", "tune=quick", "tune.n_trials=1",
                                          "tune.final_run=false", "tune.compare_default=false",
                                          "tracking=none", "progress=false", *overrides])


def one_trial_study() -> optuna.Study:
    study = optuna.create_study(study_name="exp one", direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"train.lr": LR}, distributions={"train.lr": optuna.distributions.FloatDistribution(1e-4, 3e-3)},
        value=0.5, user_attrs={"cv_wf1": 0.5}))
    return study


def run_printed(command: str, *extra: str) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "mer.run"]
    return subprocess.run([sys.executable, *args[1:], *extra], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def finish_study(tmp_path: Path, overrides=()):
    from mer.tuning.study import finish

    cfg = tune_cfg(tmp_path, ["tune.study=exp one", *overrides])
    study_dir = tmp_path / "run folder"                  # a space: the command must quote it
    study_dir.mkdir()
    result = finish(cfg, one_trial_study(), None, "journal:x", study_dir, [], None, None, None)
    return study_dir, result


def test_best_config_goes_under_the_run_folder_and_the_printed_command_works(tmp_path):
    before = sorted((CONF_DIR / "experiment").iterdir())
    study_dir, result = finish_study(tmp_path)
    assert result.experiment == (study_dir / "experiment" / "exp_one.yaml").resolve()
    assert sorted((CONF_DIR / "experiment").iterdir()) == before          # the checkout untouched
    assert f"Reproduce: {result.reproduce}" in result.experiment.read_text()
    assert "--config-dir" in result.reproduce

    proc = run_printed(result.reproduce, "--cfg", "job")      # Hydra composes it and prints it
    assert proc.returncode == 0, proc.stderr[-2000:]
    composed = yaml.safe_load(proc.stdout)
    assert composed["train"]["lr"] == pytest.approx(LR)
    assert composed["train"]["seeds"] == [0]


def test_export_dir_option_gives_a_working_command_too(tmp_path):
    target = tmp_path / "kept" / "experiment"
    _, result = finish_study(tmp_path, [f"tune.export_dir={target}"])
    assert result.experiment == (target / "exp_one.yaml").resolve()
    proc = run_printed(result.reproduce, "--cfg", "job")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert yaml.safe_load(proc.stdout)["train"]["lr"] == pytest.approx(LR)


def test_export_dir_must_be_an_experiment_folder(tmp_path):
    with pytest.raises(UserError, match="named 'experiment'"):
        export_dir_for(tmp_path / "best", tmp_path)
    assert export_dir_for(None, tmp_path) == (tmp_path / "experiment").resolve()
    assert reproduce_command(CONF_DIR / "experiment" / "x.yaml") == "python -m mer.run +experiment=x"
    assert reproduce_command(tmp_path / "experiment" / "x.yaml", "/data/MER 2023").endswith(
        "+experiment=x 'data.root=/data/MER 2023'")
