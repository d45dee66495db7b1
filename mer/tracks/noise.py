"""MER-NOISE: noise-robust training, and the robustness curve that shows whether it worked.

The test clips of MER-NOISE carry speech noise at 5-10 dB SNR and pyramid blur x1/x2/x4, and the
model is not told which clips are noisy. Three defences, each an option, all combinable
(``track.strategy_options``; 0 or [] turns one off):

* ``train_on``: corrupted copies of the training clips (cache conditions such as ``mixed``, the
  organisers' own recipe, or ``snr5``/``blur4``) trained on beside the clean ones. Per fold, only
  the copies of that fold's training clips join; the held-out clips' copies never do.
* ``modality_dropout``: each present modality of a training sample is hidden with this
  probability (never every modality of a sample), so fusion learns not to lean on one stream.
* ``feature_noise``: Gaussian noise with this standard deviation, in standardised feature units,
  added to the present features of training batches.

``select_on`` picks the best epoch on the held-out fold's clean clips (``clean``, the official
protocol) or on them and their corrupted copies (``all``).

Evaluation (:func:`robustness_curve`): weighted F1 of the fold ensemble on one labelled split
under each SNR and each blur factor (and the organisers' ``mixed`` draw); on the training split
the points are out-of-fold. The pipeline plots it beside the clean-only baseline's curve.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from mer.training.cv import run_seeds
from mer.training.data import Split, concat_splits, renamed

from .base import STRATEGIES, TrackData
from mer.tracks.supervised import SupervisedStrategy


def _same_rows(view: Split, like: Split) -> Split:
    """The rows of ``view`` (a corrupted copy of the whole training split) for ``like``'s names,
    with ``like``'s targets and weights."""
    return like.with_features(view.X.take(like.names))


@STRATEGIES.register("noise_robust")
class NoiseRobustStrategy(SupervisedStrategy):
    """Supervised loss over clean and corrupted training clips, with modality dropout and
    feature noise on training batches (see the module docstring)."""

    name = "noise_robust"

    def __init__(self, train_on: Sequence[str] = ("mixed",), modality_dropout: float = 0.0,
                 feature_noise: float = 0.0, select_on: str = "all", **options: Any) -> None:
        super().__init__(**options)
        self.train_on = [str(c) for c in (train_on or [])]
        self.modality_dropout = float(modality_dropout)
        self.feature_noise = float(feature_noise)
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        if self.feature_noise < 0:
            raise ValueError(f"feature_noise must be >= 0, got {feature_noise}")
        if select_on not in {"clean", "all"}:
            raise ValueError(f"select_on must be 'clean' or 'all', got {select_on!r}")
        self.select_on = select_on
        if "clean" in self.train_on:
            raise ValueError("train_on lists corrupted conditions; the clean clips are always trained on")

    def required_views(self) -> list[str]:
        return list(self.train_on)

    def cross_validate(self, estimator, data: TrackData, *, seeds, n_folds, progress=True, label=None,
                       on_fold=None):
        missing = [c for c in self.train_on if c not in data.views]
        if missing:
            raise ValueError(f"train_on names {missing}, but the data has views {sorted(data.views)}; "
                             "the pipeline builds the views a strategy requires (required_views)")
        return run_seeds(estimator, data.train, {**data.tests, **data.probes}, seeds=seeds, n_folds=n_folds,
                         strategy=self, progress=progress, views=data.views, context={"views": data.views},
                         label=label, on_fold=on_fold)

    def fit_fold(self, estimator, train, eval_set=None, context: Mapping[str, Any] | None = None):
        views = (context or {}).get("views") or {}
        parts = [train] + [renamed(_same_rows(views[c], train), c) for c in self.train_on]
        if eval_set is not None and self.select_on == "all" and self.train_on:
            eval_set = concat_splits([eval_set] + [renamed(_same_rows(views[c], eval_set), c)
                                                   for c in self.train_on])
        return estimator.fit(concat_splits(parts), eval_set=eval_set, strategy=self)

    def augment(self, inputs, present, generator: torch.Generator):
        """Modality dropout then feature noise on one training batch (new tensors, inputs untouched).
        Utterance level: ``inputs[m] [B, D]``, ``present[m] [B]``; frame level: ``[B, T, D]`` and
        step masks ``[B, T]`` (a dropped modality loses every step; noise touches real steps only)."""
        mods = sorted(inputs)
        if self.modality_dropout > 0 and len(mods) > 1:
            shown = torch.stack([present[m] if present[m].dim() == 1 else present[m].any(1) for m in mods],
                                dim=1)                                                      # [B, M]
            drop = torch.rand(shown.shape, generator=generator, device=shown.device) < self.modality_dropout
            keep = shown & ~drop
            nothing_left = ~keep.any(dim=1, keepdim=True)
            keep = torch.where(nothing_left, shown, keep)         # never hide every modality of a sample

            def per_row(k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:   # [B] -> broadcastable to like
                return k.view(-1, *([1] * (like.dim() - 1)))

            present = {m: present[m] & per_row(keep[:, i], present[m]) for i, m in enumerate(mods)}
            inputs = {m: inputs[m] * per_row(keep[:, i], inputs[m]).to(inputs[m].dtype) for i, m in enumerate(mods)}
        if self.feature_noise > 0:
            inputs = {m: x + self.feature_noise * present[m].unsqueeze(-1).to(x.dtype)
                      * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                      for m, x in inputs.items()}
        return inputs, present


# --- the robustness curve ---------------------------------------------------------------------


