"""A trial: the CV protocol of ``mer.run`` with the trial's config, on features loaded once.

Only training rows are seen: test splits are never predicted inside a study. The folds follow
``tune.seeds`` and are the same for every trial. After each fold the running mean of the fold
scores is reported to the pruner (step = folds done).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from mer.tracks.base import Strategy, TrackData
from mer.training.data import Split

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
    """The track's strategy, from the registry when it is already there (importing every strategy
    module per trial would be wasted work, and a half-written one would fail the trial)."""
    from mer.pipeline import plain
    from mer.tracks.base import STRATEGIES, build_strategy

    name, options = str(cfg.track.strategy), plain(cfg.track.get("strategy_options"))
    if name in STRATEGIES:
        return STRATEGIES.get(name)(**options)
    return build_strategy(name, **options)


def prepare(cfg: DictConfig) -> StudyData:
    """Load (filling the cache where missing) every feature stream of ``cfg`` once."""
    from mer.pipeline import add_corrupted_conditions, feature_set, load_manifest, make_track_data, resolve_metric
    from mer.training.estimator import resolve_device

    device = resolve_device(str(cfg.device))
    manifest = load_manifest(cfg)
    # every stream of the config: a trial's ``modalities`` picks among them
    base = cfg.copy()
    base.modalities = None
    clean = feature_set(base, manifest, device)
    data = make_track_data(cfg, manifest, clean.bundle, int(cfg.train.n_folds))
    strategy = make_strategy(cfg)
    info, _, _ = add_corrupted_conditions(cfg, manifest, clean, data, strategy, device)
    return StudyData(manifest, data, resolve_metric(cfg, manifest), device,
                     {k: v["modality"] for k, v in clean.info.items()}, {**clean.info, **info})


def evaluate(cfg: DictConfig, study_data: StudyData, *, seeds: Sequence[int], objective: str,
             data: TrackData | None = None, report: Callable[[float, int], None] | None = None,
             tests: Mapping[str, Any] | None = None):
    """Cross-validate ``cfg`` (one trial's config) on ``data`` (default: the study's training
    rows). ``report(running_mean, step)`` is called after every fold and may raise to prune.
    Returns (objective value, ``{cv_*: mean over seeds}``, the MultiSeedResult)."""
    from mer.pipeline import make_estimator
    from mer.training.cv import run_seeds

    data = data or study_data.data
    streams = study_data.streams_for(cfg.get("modalities"))
    sel = data.select(streams)
    tests = {k: v.with_features(v.X.select(streams)) for k, v in (tests or {}).items()}
    strategy = make_strategy(cfg)
    est = make_estimator(cfg, study_data.manifest, study_data.metric, study_data.device)
    n_folds = int(cfg.train.n_folds)
    done: list[float] = []

    def on_fold(rec: Mapping[str, Any]) -> None:
        if objective not in rec:
            raise SystemExit(f"tune.objective={objective} is not a fold score here (have: "
                             f"{sorted(k for k in rec if k not in {'fold', 'best_epoch', 'n_train', 'n_val'})})")
        done.append(float(rec[objective]))
        if report is not None:
            report(float(np.mean(done)), len(done))

    if type(strategy).cross_validate is Strategy.cross_validate:
        result = run_seeds(est, sel.train, tests, seeds=list(seeds), n_folds=n_folds,
                           strategy=strategy, progress=False, on_fold=on_fold, views=sel.views)
    else:                      # a strategy with its own protocol (rounds): no fold reports, no pruning
        if tests:
            sel = TrackData(sel.train, dict(tests), sel.views, {}, sel.pool, sel.pool_truth)
        result = strategy.cross_validate(est, sel, seeds=list(seeds), n_folds=n_folds, progress=False)
    summary = {k: v["mean"] for k, v in result.summary().items() if k.startswith("cv_")}
    key = f"cv_{objective}"
    if key not in summary:
        raise SystemExit(f"tune.objective={objective}: the CV reports {sorted(summary)}")
    return float(summary[key]), summary, result
