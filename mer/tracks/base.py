"""Tracks: a strategy per track family, and the hooks the one run calls.

:func:`mer.pipeline.run` walks every track the same way and calls only a strategy's hooks::

    strategy.check(manifest)                  before any feature is extracted
    data = strategy.prepare(ctx)              TrackData: splits, pools, hidden labels, corrupted
                                              conditions, candidate sets, OV targets...
    evaluation = strategy.evaluate(ctx, data) the CV protocol on seeded stratified folds; every
                                              fold is reported to ``ctx.on_fold`` (tuning prunes)
    strategy.write_outputs(ctx, data, evaluation) -> TrackOutcome
                                              predictions, submissions, tables, plots

A strategy is also the objective its folds train with (:class:`mer.training.objective.Objective`:
``loss``, ``augment``, ``fit_fold``). The supervised family (:mod:`mer.tracks.supervised`:
supervised, noise-robust, self-training) trains the fusion estimator; open-vocabulary and
partial-label strategies train their own scikit-learn-contract estimators on the same folds
(:func:`mer.training.cv.stratified_folds`). A new track is one module here that registers its
strategy (``@STRATEGIES.register("name")``), plus its ``conf/track/<name>.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mer.core.registry import Registry
from mer.training.cv import run_seeds
from mer.training.data import Split
from mer.training.objective import Objective

STRATEGIES: Registry[type["Strategy"]] = Registry("track strategy", package="mer.tracks")
"""Every module of ``mer/tracks/`` registers its strategies here; configs name them
(``track.strategy: noise_robust``)."""

FoldReport = Callable[[Mapping[str, Any]], None]
"""``on_fold(record)``: called after every fold with its scores (``fold``, ``seed``, ``wf1``...);
it may raise to stop the run (a pruned trial)."""


@dataclass
class TrackOutcome:
    """What a track's protocol produced: the results table's rows, the metrics to track, the
    submission files written, the run summary's track-specific part, and extra artifacts."""

    rows: Sequence[Mapping[str, Any]]
    metrics: Mapping[str, float]
    submissions: Mapping[str, Path]
    summary: Mapping[str, Any]
    artifacts: Sequence[Path] = ()
    ablation: list[dict[str, Any]] = field(default_factory=list)
    """The supervised family's settings (per stream and fused), as ``results.json`` keeps them."""
    notes: list[str] = field(default_factory=list)
    """Lines the printed summary adds (samples with no input)."""


@dataclass
class TrackData:
    """What a strategy trains on and predicts, features already chosen.

    ``train``: the labelled training rows. ``tests``: splits predicted for submissions (scored
    where labelled). ``views``: the training rows under corrupted conditions, ``{condition:
    Split}`` with the same names in the same order. ``probes``: more splits to predict and score
    but never submit (a test split under ``snr5``: ``test1@snr5``). ``pool``: unlabelled rows for
    semi-supervised strategies (``y = -1`` always); ``pool_truth``: their labels where somebody
    knows them (hidden training labels, labelled test splits), for reports only, never training.
    """

    train: Split
    tests: dict[str, Split]
    views: dict[str, Split] = field(default_factory=dict)
    probes: dict[str, Split] = field(default_factory=dict)
    pool: Split | None = None
    pool_truth: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    """What a strategy's ``prepare`` hands to its ``evaluate`` and ``write_outputs`` beside the
    splits (the selection metric, samples with no input, the robustness curve's plan...)."""

    def select(self, modalities: Sequence[str]) -> "TrackData":
        def sel(s: Split) -> Split:
            return s.with_features(s.X.select(modalities))

        return TrackData(sel(self.train), {k: sel(v) for k, v in self.tests.items()},
                         {k: sel(v) for k, v in self.views.items()}, {k: sel(v) for k, v in self.probes.items()},
                         sel(self.pool) if self.pool is not None else None, self.pool_truth, self.extras)


class Strategy(Objective):
    """A track family's protocol (module docstring). Subclasses implement :meth:`prepare`,
    :meth:`evaluate` and :meth:`write_outputs`; the supervised family also overrides the
    objective (``loss``...)."""

    needs_pool = False
    """Whether the strategy needs an unlabelled pool (``track.pool``)."""

    def run_tags(self, cfg) -> dict[str, str]:
        """Tags of the run beside track and dataset (the supervised family: its fusion model); they
        name the tracked run too."""
        return {}

    def check(self, ctx) -> None:
        """Refuse, before any extraction, a dataset this track cannot learn from (``ctx`` holds the
        config and the manifest; its features are not loaded yet)."""

    def required_views(self) -> list[str]:
        """Corrupted conditions of the training split this strategy trains on."""
        return []

    def prepare(self, ctx) -> TrackData:
        """The track's data from the run's context (:class:`mer.runs.RunContext`: config,
        manifest, features, and ``ctx.condition_features`` for corrupted copies)."""
        raise NotImplementedError(f"{type(self).__name__} does not prepare its data")

    def cross_validate(self, estimator, data: TrackData, *, seeds: Sequence[int], n_folds: int,
                       progress: bool = True, label: str | None = None, on_fold: FoldReport | None = None):
        """The CV protocol on ``data``: a :class:`mer.training.cv.MultiSeedResult` whose test
        predictions cover ``data.tests`` and ``data.probes``. ``label`` names the setting on the
        progress bar (``text+audio | attention``); ``on_fold`` hears every fold."""
        return run_seeds(estimator, data.train, {**data.tests, **data.probes}, seeds=seeds, n_folds=n_folds,
                         strategy=self, progress=progress, views=data.views, label=label, on_fold=on_fold)

    def evaluate(self, ctx, data: TrackData) -> Any:
        """Run the protocol (CV over ``train.seeds`` x ``train.n_folds``, reporting folds to
        ``ctx.on_fold``); what it returns goes to :meth:`write_outputs`."""
        raise NotImplementedError(f"{type(self).__name__} does not evaluate")

    def write_outputs(self, ctx, data: TrackData, evaluation: Any) -> TrackOutcome:
        """Predictions, submissions, tables and plots of the run; the results' rows and metrics."""
        raise NotImplementedError(f"{type(self).__name__} writes no outputs")

    def report(self, result, data: TrackData, out_dir: Path, classes: Sequence[str], tracker=None
               ) -> dict[str, float]:
        """What this strategy adds to a supervised-family run's outputs; returns metrics to track."""
        return {}


def build_strategy(name: str, **options: Any) -> Strategy:
    return STRATEGIES.get(name)(**options)
