"""``run(cfg) -> RunResult``: the whole way from a dataset to scores, submissions and a tracked run.

raw dataset -> manifest -> feature cache (filled where missing) -> FeatureBundle -> the track's
strategy: its data, its cross-validation on seeded folds, its outputs -> official metrics,
predictions and submission files -> MLflow. Every track walks this one way; what differs is the
strategy's hooks (:mod:`mer.tracks.base`).
"""
from __future__ import annotations

import os

from omegaconf import DictConfig

from mer.config_check import check_config
from mer.core.config import plain
from mer.runs import RunResult, finish, track_run
from mer.tracks.base import FoldReport, build_strategy


def run(cfg: DictConfig, out_dir: str | os.PathLike | None = None, on_fold: FoldReport | None = None) -> RunResult:
    """Walk the whole way for one config. Tests call this directly; ``python -m mer.run`` wraps it.
    ``on_fold`` hears every fold's scores (and may raise to stop the run)."""
    check_config(cfg)                 # every value, before the manifest is read or a cache filled
    strategy = build_strategy(str(cfg.track.strategy), **plain(cfg.track.get("strategy_options")))
    with track_run(cfg, out_dir, strategy, on_fold) as ctx:     # folder, tracker, manifest, features
        data = strategy.prepare(ctx)                          # splits, pools, conditions, candidates
        evaluation = strategy.evaluate(ctx, data)             # the CV protocol, folds reported
        return finish(ctx, strategy.write_outputs(ctx, data, evaluation))
