"""ruff, mypy and import-linter, as configured in pyproject.toml and .importlinter, pass on the
packages (each skipped when the tool is not installed: pip install -r requirements-dev.txt), and
every import inside a function says why it is there."""
import ast
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


def test_import_layers_and_no_cycles():
    # .importlinter: core < extractors/fusion/submissions < data/cache/training < tracks < pipeline <
    # entry points, and no cycle between the modules of any package.
    if importlib.util.find_spec("importlinter") is None:
        pytest.skip("import-linter is not installed (pip install -r requirements-dev.txt)")
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [
        sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    proc = subprocess.run([*cmd, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"lint-imports:\n{proc.stdout}{proc.stderr}"
    assert "0 broken" in proc.stdout


def _function_level_imports(path: Path):
    """(line, text, has_reason) for each import inside a function body of ``path``."""
    src = path.read_text(encoding="utf-8")
    lines = src.splitlines()
    found = []

    def walk(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if inside and isinstance(child, (ast.Import, ast.ImportFrom)):
                first, last = lines[child.lineno - 1], lines[child.end_lineno - 1]
                above = lines[child.lineno - 2].strip() if child.lineno > 1 else ""
                found.append((child.lineno, first.strip(), "#" in first or "#" in last or above.startswith("#")))
            walk(child, inside)

    walk(ast.parse(src), False)
    return found


def test_function_level_imports_say_why():
    # An import inside a function hides a dependency from the reader and from lint-imports; mer keeps
    # one there only to defer a heavy or optional package, and says so on the line.
    silent = [f"{p.relative_to(REPO)}:{line}: {text}"
              for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))
              for line, text, why in _function_level_imports(p) if not why]
    assert not silent, "imports inside functions without a reason comment:\n" + "\n".join(silent)
