"""Track strategies: the objective is a swappable object; the loop never branches on the track.

A strategy owns the loss (``loss(outputs, batch)``), how one fold is fitted (``fit_fold``:
supervised fits the labelled rows; the noise strategy adds corrupted copies, self-training adds
pseudo-labels), optionally a batch augmentation the loop applies (``augment``), and how the
cross-validation protocol runs over a :class:`TrackData` (``cross_validate``: once for most
strategies, in rounds for self-training). It is looked up by name from the track config
(``track.strategy: supervised``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mer.registry import Registry
from mer.training.data import Split

STRATEGIES: Registry[type["Strategy"]] = Registry("track strategy")
RUNNERS: Registry[Any] = Registry("track runner")
"""Tracks with a protocol of their own (open vocabulary, partial labels): ``runner(cfg, out_dir) ->
RunResult``, named by ``runner:`` in the track config; ``mer.pipeline.run`` hands such a config over."""


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

    def select(self, modalities: Sequence[str]) -> "TrackData":
        def sel(s: Split) -> Split:
            return s.with_features(s.X.select(modalities))

        return TrackData(sel(self.train), {k: sel(v) for k, v in self.tests.items()},
                         {k: sel(v) for k, v in self.views.items()}, {k: sel(v) for k, v in self.probes.items()},
                         sel(self.pool) if self.pool is not None else None, self.pool_truth)


class Strategy:
    name = ""
    augment = None
    """Optional ``augment(inputs, present, generator) -> (inputs, present)`` for training batches."""

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def fit_fold(self, estimator, train, eval_set=None, context: Mapping[str, Any] | None = None):
        """Fit ``estimator`` on one fold. ``train``/``eval_set`` are :class:`mer.training.data.Split`s."""
        return estimator.fit(train, eval_set=eval_set, strategy=self)

    # --- the protocol over a track's data -----------------------------------------------------
    def required_views(self) -> list[str]:
        """Corrupted conditions of the training split this strategy trains on (built by the pipeline)."""
        return []

    needs_pool = False
    """Whether the strategy needs an unlabelled pool (``track.pool``)."""

    def cross_validate(self, estimator, data: TrackData, *, seeds: Sequence[int], n_folds: int,
                       progress: bool = True, label: str | None = None):
        """The CV protocol on ``data``: a :class:`mer.training.cv.MultiSeedResult` whose test
        predictions cover ``data.tests`` and ``data.probes``. ``label`` names the setting on the
        progress bar (``text+audio | attention``)."""
        from mer.training.cv import run_seeds

        return run_seeds(estimator, data.train, {**data.tests, **data.probes}, seeds=seeds, n_folds=n_folds,
                         strategy=self, progress=progress, views=data.views, label=label)

    def report(self, result, data: TrackData, out_dir: Path, classes: Sequence[str], tracker=None
               ) -> dict[str, float]:
        """Write what this strategy adds to a run's outputs; returns metrics to track."""
        return {}


DIMENSION_LOSSES = ("mse", "ccc")


@STRATEGIES.register("supervised")
class SupervisedStrategy(Strategy):
    """Cross-entropy on the discrete label plus ``valence_weight`` x MSE on valence (MER2023 eq. 8,
    weights 1:1 by default); rows with unknown valence contribute no valence loss, rows without a
    class (sentiment data) no cross-entropy.

    Where the data has them: ``arousal_weight`` x the same loss on arousal, and ``frame_weight`` x
    cross-entropy over every annotated frame of per-frame labels (ABAW Expr). ``dimension_loss``:
    ``mse`` (MER2023) or ``ccc`` (``1 - CCC`` over the batch, as ABAW VA systems train) for both
    valence and arousal."""

    name = "supervised"

    def __init__(self, valence_weight: float = 1.0, label_smoothing: float = 0.0, arousal_weight: float = 1.0,
                 frame_weight: float = 1.0, dimension_loss: str = "mse", **options: Any) -> None:
        super().__init__(**options)
        if dimension_loss not in DIMENSION_LOSSES:
            raise ValueError(f"dimension_loss must be one of {DIMENSION_LOSSES}, got {dimension_loss!r}")
        self.valence_weight = float(valence_weight)
        self.label_smoothing = float(label_smoothing)
        self.arousal_weight = float(arousal_weight)
        self.frame_weight = float(frame_weight)
        self.dimension_loss = dimension_loss

    def _dimension(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        known = torch.isfinite(target)
        if self.dimension_loss == "ccc":
            from mer.training.losses import ccc_loss

            return ccc_loss(pred, target) if int(known.sum()) >= 2 else None
        return F.mse_loss(pred[known], target[known]) if known.any() else None

    def loss(self, outputs, batch):
        w = batch.get("weight")
        y = batch["y"]
        known = y >= 0          # sentiment data has no class: valence loss alone
        loss = outputs["logits"].sum() * 0.0
        if bool(known.any()):
            ce = F.cross_entropy(outputs["logits"][known], y[known], reduction="none",
                                 label_smoothing=self.label_smoothing)
            loss = (ce * w[known]).sum() / w[known].sum() if w is not None else ce.mean()
        for key, target, weight in (("valence", "v", self.valence_weight), ("arousal", "a", self.arousal_weight)):
            if key in outputs and target in batch and weight > 0:
                term = self._dimension(outputs[key], batch[target])
                if term is not None:
                    loss = loss + weight * term
        if "frame_logits" in outputs and "frames" in batch and self.frame_weight > 0:
            logits = outputs["frame_logits"]
            frames = batch["frames"][:, :logits.shape[1]]
            if frames.shape[1] < logits.shape[1]:
                frames = F.pad(frames, (0, logits.shape[1] - frames.shape[1]), value=-1)
            if bool((frames >= 0).any()):
                loss = loss + self.frame_weight * F.cross_entropy(logits.flatten(0, 1), frames.flatten(),
                                                                  ignore_index=-1)
        return loss


def load_strategies() -> Registry[type[Strategy]]:
    """Import every strategy module under ``mer/tracks/`` (they self-register)."""
    import importlib
    import pkgutil

    import mer.tracks as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"mer.tracks.{mod.name}")
    return STRATEGIES


def build_strategy(name: str, **options: Any) -> Strategy:
    return load_strategies().get(name)(**options)


def get_runner(name: str):
    """The registered track runner ``name`` (``runner:`` in a track config)."""
    load_strategies()
    return RUNNERS.get(name)
