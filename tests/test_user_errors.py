"""Every user error is one clear line with no traceback, and every config value is checked before
any work: bad overrides fail in seconds, before a manifest is read or a cache entry made."""
import csv
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from mer.config_check import check_config, config_problems
from mer.core.errors import UserError, run_cli, user_message

TEXT = {"calm": "a quiet calm peaceful evening", "excited": "so excited thrilled energetic now"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "split", "text", "discrete"])
        w.writerows((f"utt{i:02d}", "train", TEXT[c], c) for i, c in enumerate(["calm", "excited"] * 6))
    with open(root / "with_media.csv", "w", newline="", encoding="utf-8") as f:
        f.write("name,split,text,audio,discrete\nutt00,train,hello,missing.wav,calm\n")
    return root


def _run(tmp_path, module, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("MER_DEBUG", "HYDRA_FULL_ERROR")}
    env.update({"MER_CACHE_DIR": str(tmp_path / "cache"), "MER_RUNS_DIR": str(tmp_path / "runs"),
                "PYTHONPATH": str(REPO), **(env_extra or {})})
    return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def _base(corpus, tmp_path):
    return ["data=generic", f"data.root={corpus}", "tracking=none", "features/text=tfidf",
            "features/audio=none", "features/visual=none", "progress=false", "train.epochs=2",
            "train.n_folds=2", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.runs_dir={tmp_path / 'runs'}"]


def _one_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert 1 <= len(lines) <= 2, proc.stderr
    return proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("override, says", [
    ("train.lr=abc", "train.lr: expected a positive number, got 'abc'"),
    ("train.epochs=-1", "train.epochs: expected an integer >= 1, got -1"),
    ("+train.lrr=3", "train.lrr: no such option (nothing reads it); did you mean train.lr?"),
    ("train.lrr=3", "train.lrr: no such option; did you mean train.lr?"),
    ("fusion.name=atention", "fusion.name: unknown fusion model 'atention'"),
    ("features/text=tfidff", "features/text/tfidff"),
    ("data.options.manifest=nope.csv", "set data.options.manifest="),
    ("data.options.manifest=with_media.csv", "set data.options.check_media=false"),
])
def test_bad_override_is_one_line_before_any_extraction(corpus, tmp_path, override, says):
    proc = _run(tmp_path, "mer.run", *_base(corpus, tmp_path), override)
    assert says in _one_line(proc)
    assert not (tmp_path / "cache" / "features").exists()      # nothing was extracted


@pytest.mark.slow
def test_every_problem_is_listed_at_once(corpus, tmp_path):
    proc = _run(tmp_path, "mer.run", *_base(corpus, tmp_path), "train.lr=abc", "train.epochs=-1",
                "device=gpu", "train.seeds=[0,0]")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    for key in ("train.lr:", "train.epochs:", "device:", "train.seeds:"):
        assert key in proc.stderr
    assert "4 config problems" in proc.stderr
    assert not (tmp_path / "cache" / "features").exists()


@pytest.mark.slow
def test_debug_shows_the_traceback(corpus, tmp_path):
    proc = _run(tmp_path, "mer.run", *_base(corpus, tmp_path), "data.options.manifest=nope.csv",
                env_extra={"MER_DEBUG": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "nope.csv" in proc.stderr


@pytest.mark.slow
def test_other_entry_points(corpus, tmp_path):
    proc = _run(tmp_path, "mer.extract", *_base(corpus, tmp_path), "extract.workers=many")
    assert "extract.workers: expected auto or a number of processes >= 0, got 'many'" in _one_line(proc)
    proc = _run(tmp_path, "mer.report", str(tmp_path / "nowhere"))
    assert "nowhere" in _one_line(proc)


def _cfg(overrides):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("track", ["multi", "noise", "semi", "pll", "ov"])
def test_shipped_configs_pass(track):
    assert config_problems(_cfg([f"track={track}", "features/text=tfidf"])) == []


@pytest.mark.parametrize("override, problem", [
    ("train.n_folds=1", "train.n_folds: expected an integer >= 2, got 1"),
    ("train.protocol=loso", "train.protocol: expected one of stratified, stratified_group, logo, got 'loso'"),
    ("++data.targets=arousal", "data.targets: expected discrete, valence or a list of them, got 'arousal'"),
    ("train.weight_decay=-1", "train.weight_decay: expected a number >= 0, got -1"),
    ("train.standardize=yes", "train.standardize: expected true or false, got 'yes'"),
    ("track.strategy=supervisedd", "track.strategy: unknown track strategy 'supervisedd'"),
    ("track.metric=f1", "track.metric: expected one of auto, wf1"),
    ("sequence.method=cubic", "sequence.method: expected one of auto, linear, nearest, got 'cubic'"),
    ("sequence.window.size=4", None),
    ("sequence.window.size=4 +sequence.window.hop=9", "sequence.window: expected size >= 1 and 1 <= hop <= size"),
    ("track=noise track.corruption.seed=x", "track.corruption.seed: expected an integer, got 'x'"),
    ("track=noise track.strategy_options.train_on=[mixd]",
     "track.strategy_options.train_on: item 0: unknown corruption condition 'mixd'"),
    ("extract.launcher=slurm", "extract.launcher: expected one of local, ray, got 'slurm'"),
    ("extract.max_failure_fraction=2", "extract.max_failure_fraction: expected a number in [0, 1], got 2"),
    ("modalities=[txt]", "modalities: unknown txt"),
    ("tracking.name=wandb", "tracking.name: expected one of mlflow, none, got 'wandb'"),
    ("features.text.options.max_features=lots", "features.text.options.max_features: expected an integer"),
    ("+features.text.options.max_feature=5", "did you mean max_features?"),
    ("fusion.params.dropout=high", "fusion.params.dropout: expected a number, got 'high'"),
    ("+fusion.params.hidden=3", "fusion model attention has no option hidden (did you mean hidden_dim?)"),
    ("track.strategy_options.valence_weight=x",
     "track.strategy_options.valence_weight: expected a number, got 'x'"),
    ("+data.options.manifestt=a.csv", "data.options: layout mer2023 has no option manifestt"),
    ("data.root=/no/such/folder", "data.root: /no/such/folder is not a folder"),
    ("data.submissions.multi.schema=mer2099", "data.submissions.multi.schema: unknown submission schema"),
    ("+track.hide_labelz.fraction=0.5", "track.hide_labelz: no such option (nothing reads it); did you "
                                        "mean track.hide_labels?"),
])
def test_rules(override, problem):
    problems = config_problems(_cfg(["features/text=tfidf", *override.split()]))
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_other_configs_are_checked_by_the_same_table():
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        assert config_problems(compose("corrupt")) == [] and config_problems(compose("pretrain")) == []
        assert config_problems(compose("tune")) == []
        problems = config_problems(compose("corrupt", overrides=["condition=snrx"]))
    assert len(problems) == 1 and problems[0].startswith("condition: unknown corruption condition 'snrx'")


def test_check_config_raises_one_user_error_listing_all():
    with pytest.raises(UserError) as err:
        check_config(_cfg(["features/text=tfidf", "train.lr=0", "train.batch_size=0"]))
    assert str(err.value).splitlines() == ["2 config problems:", "  train.lr: expected a positive number, got 0",
                                           "  train.batch_size: expected an integer >= 1, got 0"]


def test_programming_errors_keep_their_traceback(capsys):
    assert user_message(ValueError("a bug")) is None
    assert user_message(SystemExit(0)) is None
    assert user_message(UserError("data.root: not a folder")) == "data.root: not a folder"
    assert user_message(FileNotFoundError(2, "No such file or directory", "/x/labels.csv")) == \
        "/x/labels.csv: No such file or directory"

    def bug():
        raise ZeroDivisionError("oops")

    with pytest.raises(ZeroDivisionError):
        run_cli(bug)

    def user():
        raise SystemExit("labels.csv: row 3 has no name")

    with pytest.raises(SystemExit) as code:
        run_cli(user)
    assert code.value.code == 1
    assert capsys.readouterr().err == "error: labels.csv: row 3 has no name\n"
