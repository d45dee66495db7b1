"""mer as a built wheel, installed non-editable into a fresh virtual environment: the configs, the
``mer`` console script and the type markers travel in the wheel, and a run works from a folder that
is not the checkout.

The fresh environment holds mer alone (``pip install --no-deps`` of the wheel); a ``.pth`` file
appends this environment's site-packages *after* its own, so the third-party packages come from the
pinned install while ``mer`` (and ``feature_extractors``, ``fusion``, ``submissions``) can only come
from the wheel: the checkout is never on ``sys.path`` there (no PYTHONPATH, another working folder).
"""
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

PACKAGES = ("mer", "feature_extractors", "fusion", "submissions")
QUICK_DEMO = ["data.demo.n_train=24", "data.demo.n_per_test=3", "train.epochs=2", "train.n_folds=2",
              "train.seeds=[0]", "progress=false", "tracking=none", "ablate_modalities=false",
              "features/visual=none"]


def _run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=kw.pop("timeout", 300),
                          **kw)


def _ok(proc):
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built (without build isolation: offline) from a copy of the sources, so the build's
    own folders (build/, *.egg-info) never land in the checkout."""
    pytest.importorskip("build", reason="`build` is not installed (pip install -r requirements-dev.txt)")
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _ok(_run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", base / "dist", src], cwd=src))
    wheels = list((base / "dist").glob("mer-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory):
    """(venv folder, its python, a working folder outside the checkout, the environment to run in)."""
    base = tmp_path_factory.mktemp("fresh")
    venv = base / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv]))
    python = venv / "bin" / "python"
    _ok(_run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", python, "install", "-q",
              "--no-deps", "--no-index", wheel]))
    purelib = Path(_ok(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])).stdout.strip())
    ours = [p for p in dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib"),
                                      *site.getsitepackages()]) if Path(p).is_dir()]
    # A path line of a .pth file is appended to sys.path after the folder holding it: the wheel's
    # packages are found first. This environment's own .pth files (the editable finder) are not run.
    (purelib / "zz_mer_dependencies.pth").write_text("\n".join(ours) + "\n")
    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, python, work, env


def test_wheel_holds_the_configs_the_console_script_and_type_markers(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"mer/conf/{p.relative_to(REPO / 'mer' / 'conf').as_posix()}"
               for p in (REPO / "mer" / "conf").rglob("*.yaml")}
    assert len(configs) > 40 and configs <= names, sorted(configs - names)[:10]
    assert {f"{pkg}/py.typed" for pkg in PACKAGES} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mer = mer.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not any(n.startswith(("tests/", "bench/", "scripts/")) for n in names)


def test_mer_imports_from_the_wheel_and_never_from_the_checkout(fresh_env):
    venv, python, work, env = fresh_env
    probe = ("import json, sys, mer, feature_extractors, fusion, submissions, mer.conf; "
             "print(json.dumps({'files': [m.__file__ for m in (mer, feature_extractors, fusion, submissions)], "
             "'conf': list(mer.conf.__path__), 'path': sys.path}))")
    out = json.loads(_ok(_run([python, "-c", probe], cwd=work, env=env)).stdout)
    for f in out["files"] + out["conf"]:
        assert Path(f).resolve().is_relative_to(venv.resolve()), f
    assert not any(p and Path(p).resolve() == REPO for p in out["path"]), out["path"]


def test_console_script_and_module_find_the_packaged_configs(fresh_env):
    venv, python, work, env = fresh_env
    listing = _ok(_run([venv / "bin" / "mer", "--help"], cwd=work, env=env)).stdout
    assert "validate" in listing and "run" in listing
    assert "--track" in _ok(_run([venv / "bin" / "mer", "validate", "--help"], cwd=work, env=env)).stdout
    job = _ok(_run([python, "-m", "mer.run", "--cfg", "job"], cwd=work, env=env)).stdout
    assert "fusion:" in job and "name: attention" in job
    # The console script reaches Hydra's configs as pkg://mer/conf (by import, not as __main__).
    job = _ok(_run([venv / "bin" / "mer", "run", "--cfg", "job", "fusion=mlp"], cwd=work, env=env)).stdout
    assert "name: mlp" in job
    bad = _run([venv / "bin" / "mer", "rnu"], cwd=work, env=env)
    assert bad.returncode == 2 and "did you mean `mer run`?" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_demo_run_from_the_installed_wheel(fresh_env, tmp_path):
    venv, python, work, env = fresh_env
    env = {**env, "MER_CACHE_DIR": str(tmp_path / "cache"), "MER_RUNS_DIR": str(tmp_path / "runs")}
    out = tmp_path / "out"
    proc = _ok(_run([venv / "bin" / "mer", "run", *QUICK_DEMO, f"hydra.run.dir={out}"], cwd=work, env=env,
                    timeout=900))
    metrics = json.loads((out / "results.json").read_text())
    assert 0.0 <= metrics["metrics"]["cv_wf1"] <= 1.0
    assert f"outputs: {out}" in proc.stdout
    assert not list(work.iterdir()), "the run wrote into its working folder"


def test_declared_dependencies_resolve_within_the_pinned_install(wheel, fresh_env):
    """Every dependency the wheel declares is already met by this environment under constraints.txt
    (a dry run with no index downloads nothing and would install nothing), and pip check finds no
    requirement of mer's unmet."""
    from packaging.requirements import Requirement

    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    declared = [Requirement(line.split(":", 1)[1].strip())
                for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    runtime = [str(r) for r in declared if r.marker is None]
    assert any(r.startswith("torch==2.13.0") for r in runtime) and not any(r.startswith(("pytest", "rich")) for r in runtime)
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pin = Requirement(line)
            pins[pin.name.lower()] = next(iter(pin.specifier)).version
    for r in declared:
        if r.name.lower() in pins:
            assert r.specifier.contains(pins[r.name.lower()], prereleases=True), (str(r), pins[r.name.lower()])
    dry = _ok(_run([sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--dry-run", "--no-index",
                    "-c", REPO / "constraints.txt", *runtime]))
    assert "Would install" not in dry.stdout, dry.stdout
    venv, python, work, env = fresh_env
    check = _run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", python, "check"], env=env)
    ours = [ln for ln in check.stdout.splitlines() if ln.lower().startswith("mer ")]
    assert not ours, "\n".join(ours)
