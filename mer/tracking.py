"""Run tracking: MLflow (a local sqlite store under the runs folder by default) or nothing.

``MLFLOW_TRACKING_URI`` (or ``tracking.uri``) points runs at a server instead. A run that raises is
marked FAILED; nothing is written into the source tree (the store and artifacts live under
``paths.runs_dir``). Params and tags are logged with the credentials of any URL in them masked
(:func:`mer.core.redact.mask_secrets`): ``tune.storage=postgresql://user:***@host/db``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping

from mer.core.redact import mask_secrets

log = logging.getLogger(__name__)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; lists become their string form."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def git_commit(path: str | os.PathLike | None = None) -> dict[str, str]:
    """The commit of the mer checkout (and whether it has uncommitted changes), when it is a git repo."""
    here = Path(path or Path(__file__).resolve().parent.parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"git_commit": sha, "git_dirty": str(bool(dirty))}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


class NullTracker:
    """Tracks nothing (``tracking=none``); same interface as :class:`MlflowTracker`."""

    run_id: str | None = None
    uri: str | None = None

    @contextlib.contextmanager
    def start(self, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator["NullTracker"]:
        yield self

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | os.PathLike, subdir: str | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...


class MlflowTracker:
    def __init__(self, uri: str | None, experiment: str, artifact_root: str | os.PathLike | None = None) -> None:
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
        self.experiment = experiment
        self.artifact_root = Path(artifact_root) if artifact_root else None
        self.run_id: str | None = None

    def _client_setup(self):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow  # deferred: loads mlflow only when used

        if self.uri and self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.uri)
        exp = mlflow.get_experiment_by_name(self.experiment)
        if exp is None:
            # A local store keeps artifacts beside it, never in the current directory.
            location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
            exp_id = mlflow.create_experiment(self.experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        return mlflow, exp_id

    @contextlib.contextmanager
    def start(self, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator["MlflowTracker"]:
        mlflow, exp_id = self._client_setup()
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name,
                               tags={k: mask_secrets(str(v)) for k, v in (tags or {}).items()})
        self.run_id = run.info.run_id
        self._mlflow = mlflow
        try:
            yield self
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
        else:
            mlflow.end_run(status="FINISHED")

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = {k: mask_secrets(str(v))[:6000] for k, v in flatten(params).items()}   # no password in a param
        items = list(flat.items())
        for i in range(0, len(items), 100):
            self._mlflow.log_params(dict(items[i:i + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k.replace("±", "pm"): float(v) for k, v in metrics.items() if v is not None}
        self._mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | os.PathLike, subdir: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self._mlflow.log_artifacts(str(p), artifact_path=subdir)
        else:
            self._mlflow.log_artifact(str(p), artifact_path=subdir)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._mlflow.set_tags({k: mask_secrets(str(v)) for k, v in tags.items()})


def build_tracker(cfg: Mapping[str, Any], runs_dir: str | os.PathLike):
    if not cfg or cfg.get("name", "mlflow") in {None, "none", "null"}:
        return NullTracker()
    runs_dir = Path(runs_dir)
    uri = cfg.get("uri") or f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"
    return MlflowTracker(uri, cfg.get("experiment", "mer"), cfg.get("artifact_root") or runs_dir / "mlartifacts")
