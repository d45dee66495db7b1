"""ruff and mypy, as configured in pyproject.toml, pass on the packages (each skipped when the tool
is not installed: pip install -r requirements-dev.txt)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = ["mer", "feature_extractors", "fusion", "submissions"]


def _tool(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -r requirements-dev.txt)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_ruff_finds_nothing():
    proc = _tool("ruff", "check", "--no-cache", "--output-format", "concise", *PACKAGES)
    assert proc.returncode == 0, f"ruff check {' '.join(PACKAGES)}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.slow
def test_mypy_finds_nothing():
    # The cache lives with the environment (not the checkout, not the home folder): about a minute
    # cold on two cores, seconds warm.
    cache = Path(sys.prefix) / ".mypy_cache"
    proc = _tool("mypy", "--cache-dir", str(cache), *PACKAGES)
    assert proc.returncode == 0, f"mypy {' '.join(PACKAGES)}:\n{proc.stdout}{proc.stderr}"
    assert "Success" in proc.stdout
