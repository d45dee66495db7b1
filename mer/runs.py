"""What every run shares, whichever track: its start (output folder with the resolved config,
device, tracker run, manifest), its features, and its end (``results.md``/``results.json``,
tracked metrics and artifacts, the :class:`RunResult`).

:func:`start_run` opens a run; :func:`track_run` adds the features and yields the
:class:`RunContext` a track's protocol works in; :func:`finish` closes it with what the protocol
produced (a :class:`mer.tracks.base.TrackOutcome`).
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from mer.core.run_dirs import data_dataset_name
from mer.data.manifest import Manifest
from mer.datasets import load_manifest
from mer.evaluation.reports import results_table
from mer.features import condition_features, feature_set
from mer.tracking import build_tracker, git_commit
from mer.tracks.base import TrackOutcome
from mer.training.estimator import resolve_device

log = logging.getLogger("mer")


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, float]
    table: str
    submissions: dict[str, Path] = field(default_factory=dict)
    run_id: str | None = None
    tracking_uri: str | None = None
    ablation: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # lines the printed summary adds (no-input samples)


def default_out_dir(cfg: DictConfig) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig  # deferred: loads hydra only when used

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        return Path(cfg.paths.runs_dir) / data_dataset_name(cfg.data) / str(cfg.track.name) / stamp


@dataclass
class RunStart:
    """What every run has once it has started (see :func:`start_run`)."""

    out: Path
    device: str
    tracker: Any
    manifest: Manifest
    t_start: float


@contextmanager
def start_run(cfg: DictConfig, out_dir: str | os.PathLike | None, run_name: str,
              tags: Mapping[str, str] | None = None) -> Iterator[RunStart]:
    """The start every run shares, whichever track: the output folder with the
    resolved config, the device, the tracker's run (open for the block; tagged with the track, the
    dataset, the output folder, the git commit and ``tags``) and the manifest, written beside."""
    t_start = time.perf_counter()
    out = Path(out_dir) if out_dir else default_out_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    device = resolve_device(str(cfg.device))
    tracker = build_tracker(cfg.get("tracking"), cfg.paths.runs_dir)
    with tracker.start(run_name, tags={"track": str(cfg.track.name), "dataset": data_dataset_name(cfg.data),
                                       **dict(tags or {}), "out_dir": str(out), **git_commit()}):
        tracker.log_params(resolved)
        manifest = load_manifest(cfg)
        log.info("%s", manifest.summary())
        manifest.to_jsonl(out / "manifest.jsonl")
        yield RunStart(out, device, tracker, manifest, t_start)


@dataclass
class RunContext:
    """A run's state as a track's hooks see it (:mod:`mer.tracks.base`): the config, output folder,
    manifest, tracker and device; ``features`` once loaded (a :class:`mer.features.FeatureSet`);
    ``info``: what the hooks note for the record (the fold protocol...); ``on_fold``: who hears
    every fold's scores (a tuning trial's pruner), or ``None``."""

    cfg: DictConfig
    out: Path
    manifest: Any
    features: Any
    tracker: Any
    device: str
    t_start: float
    info: dict[str, Any] = field(default_factory=dict)
    on_fold: Any = None

    @property
    def bundle(self):
        return self.features.bundle

    def train_samples(self) -> list:
        """The labelled rows of the training split."""
        m = self.manifest
        return [s for s in m.split(m.train_split) if s.is_labelled]

    def condition_features(self, condition: str, names: list[str]):
        """``(bundle, info, failures)``: the features of ``names`` under a corrupted ``condition``
        (``snr7``, ``blur4``, ``mixed``...), extracted with the clean run's extractors
        (:func:`mer.features.condition_features`)."""
        return condition_features(self.cfg, self.manifest, self.features, condition, names, self.device)

    def add_features(self, info: Mapping[str, Any], failures: list[dict]) -> None:
        """Record more streams (corrupted conditions): their cache keys and extractors in the
        tracker, their failures in ``failures.jsonl``."""
        self.features.info.update(info)
        self.features.failures.extend(failures)
        self._record_features(info)

    def _record_features(self, info: Mapping[str, Any]) -> None:
        if self.out is not None:            # a tuning study's context has no run folder
            with open(self.out / "failures.jsonl", "w", encoding="utf-8") as f:
                for rec in self.features.failures:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        # MLflow names admit no "@": a corrupted condition's stream is logged as <stream>:<condition>
        self.tracker.log_params({f"cache.{m.replace('@', ':')}.key": i["cache_key"] for m, i in info.items()})
        self.tracker.log_params({f"cache.{m.replace('@', ':')}.extractor": i["extractor"] for m, i in info.items()})


@contextmanager
def track_run(cfg: DictConfig, out_dir=None, strategy: Any = None, on_fold: Any = None) -> Iterator[RunContext]:
    """A run's start (:func:`start_run`), ``strategy.check`` before any extraction, then every
    feature stream of the config loaded (filled where missing): the context a track works in."""
    tags = dict(strategy.run_tags(cfg)) if strategy is not None else {}
    name = "-".join([data_dataset_name(cfg.data), str(cfg.track.name), *tags.values()])
    with start_run(cfg, out_dir, name, tags) as started:
        ctx = RunContext(cfg, started.out, started.manifest, None, started.tracker, started.device, started.t_start,
                         on_fold=on_fold)
        if strategy is not None:
            strategy.check(ctx)
        ctx.features = feature_set(cfg, ctx.manifest, ctx.device)
        ctx._record_features(ctx.features.info)
        yield ctx


def finish(ctx: RunContext, outcome: TrackOutcome) -> RunResult:
    """Write ``results.md``/``results.json``, track metrics and artifacts; the run's RunResult."""
    out, metrics = ctx.out, dict(outcome.metrics)
    table = results_table(outcome.rows)
    (out / "results.md").write_text(table + "\n")
    full = {"track": str(ctx.cfg.track.name), "metrics": metrics, "features": ctx.features.info,
            "failures": len(ctx.features.failures),
            "submissions": {k: str(v) for k, v in outcome.submissions.items()},
            **outcome.summary, "seconds": round(time.perf_counter() - ctx.t_start, 1)}
    (out / "results.json").write_text(json.dumps(full, indent=1, default=str))
    ctx.tracker.log_metrics(metrics)
    for p in [out / "results.json", out / "results.md", out / "config_resolved.yaml", out / "failures.jsonl",
              *outcome.artifacts]:
        if Path(p).is_file():
            ctx.tracker.log_artifact(p)
    for sub in ("predictions", "submissions"):
        if (out / sub).is_dir():
            ctx.tracker.log_artifact(out / sub, sub)
    ctx.tracker.log_metrics({"seconds_total": time.perf_counter() - ctx.t_start})
    return RunResult(out, metrics, table, dict(outcome.submissions), ctx.tracker.run_id, ctx.tracker.uri,
                     list(outcome.ablation), list(outcome.notes))
