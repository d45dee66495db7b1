"""A trial: the CV protocol of ``mer.run`` with the trial's config, on features loaded once.

Only training rows are seen: test splits are never predicted inside a study. The folds follow
``tune.seeds`` and are the same for every trial. After each fold the running mean of the fold
scores is reported to the pruner (step = folds done).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from mer.core.config import plain
from mer.datasets import load_manifest
from mer.features import feature_set
from mer.tracking import NullTracker
from mer.tracks.base import Strategy, TrackData, build_strategy
from mer.training.estimator import resolve_device

log = logging.getLogger("mer.tune")

MINIMISED = {"mse"}


def direction(objective: str) -> str:
    return "minimize" if objective in MINIMISED else "maximize"


@dataclass
class StudyData:
    """What every trial of a study shares: labels, features (all streams of the base config),
    the track's metric and the device."""

    manifest: Any
    data: TrackData
    metric: str
    device: str
    stream_modality: dict[str, str]
    feature_info: dict[str, Any]

    @property
    def streams(self) -> list[str]:
        return sorted(self.data.train.X.modalities)

    def streams_for(self, modalities: Sequence[str] | None) -> list[str]:
        """The streams a ``modalities`` setting keeps (by stream or by modality name)."""
        if not modalities:
            return self.streams
        wanted = set(modalities)
        keep = [s for s in self.streams if s in wanted or self.stream_modality.get(s) in wanted]
        if not keep:
            raise SystemExit(f"modalities={list(modalities)} keeps none of the streams {self.streams}")
        return keep


def make_strategy(cfg: DictConfig) -> Strategy:
    """The track's strategy; tuning covers the supervised family (its fusion estimator)."""
    from mer.tracks.supervised import SupervisedStrategy  # deferred: loads pandas only when used

    strategy = build_strategy(str(cfg.track.strategy), **plain(cfg.track.get("strategy_options")))
    if not isinstance(strategy, SupervisedStrategy):
        raise SystemExit(f"track.strategy={cfg.track.strategy} trains no fusion model; mer.tune tunes the "
                         "supervised family (track=multi, noise, semi)")
    return strategy


def prepare(cfg: DictConfig) -> StudyData:
    """Load (filling the cache where missing) every feature stream of ``cfg`` once, and the
    track's data through its strategy's hooks (``check``, ``prepare``), as a run would."""
    from mer.runs import RunContext  # deferred: loads pandas only when used

    device = resolve_device(str(cfg.device))
    strategy = make_strategy(cfg)
    # every stream of the config: a trial's ``modalities`` picks among them
    base = cfg.copy()
    base.modalities = None
    ctx = RunContext(base, None, load_manifest(cfg), None, NullTracker(), device, time.perf_counter())
    strategy.check(ctx)
    ctx.features = feature_set(base, ctx.manifest, device)
    clean_streams = {k: v["modality"] for k, v in ctx.features.info.items()}
    data = strategy.prepare(ctx)
    return StudyData(ctx.manifest, data, data.extras["metric"], device, clean_streams, dict(ctx.features.info))


def evaluate(cfg: DictConfig, study_data: StudyData, *, seeds: Sequence[int], objective: str,
             data: TrackData | None = None, report: Callable[[float, int], None] | None = None,
             tests: Mapping[str, Any] | None = None):
    """Cross-validate ``cfg`` (one trial's config) on ``data`` (default: the study's training
    rows) with the track's strategy. ``report(running_mean, step)`` is called after every fold
    (of every round, for self-training) and may raise to prune. Only ``tests`` are predicted
    (never the study data's test splits). Returns (objective value, ``{cv_*: mean over seeds}``,
    the MultiSeedResult)."""
    from mer.tracks.supervised import make_estimator  # deferred: loads pandas only when used

    data = data or study_data.data
    streams = study_data.streams_for(cfg.get("modalities"))
    sel = data.select(streams)
    tests = {k: v.with_features(v.X.select(streams)) for k, v in (tests or {}).items()}
    sel = TrackData(sel.train, dict(tests), sel.views, {}, sel.pool, sel.pool_truth, sel.extras)
    strategy = make_strategy(cfg)
    est = make_estimator(cfg, study_data.manifest, study_data.metric, study_data.device)
    done: list[float] = []

    def on_fold(rec: Mapping[str, Any]) -> None:
        if objective not in rec:
            raise SystemExit(f"tune.objective={objective} is not a fold score here (have: "
                             f"{sorted(k for k in rec if k not in {'fold', 'best_epoch', 'n_train', 'n_val'})})")
        done.append(float(rec[objective]))
        if report is not None:
            report(float(np.mean(done)), len(done))

    result = strategy.cross_validate(est, sel, seeds=list(seeds), n_folds=int(cfg.train.n_folds), progress=False,
                                     on_fold=on_fold)
    summary = {k: v["mean"] for k, v in result.summary().items() if k.startswith("cv_")}
    key = f"cv_{objective}"
    if key not in summary:
        raise SystemExit(f"tune.objective={objective}: the CV reports {sorted(summary)}")
    return float(summary[key]), summary, result
