"""What a fold is trained with: the loss, an optional batch augmentation, and how one fold is
fitted.

:class:`Objective` is the contract the estimator and the cross-validation loop see;
:class:`SupervisedObjective` is the plain supervised loss, the estimator's default. A track's
strategy (:class:`mer.tracks.base.Strategy`) is an objective plus the hooks of the track's
protocol: preparing its data, cross-validating, writing its outputs.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from mer.training.losses import ccc_loss


class Objective:
    """The loss of a batch and how a fold is fitted (``options``: the rest of the config's
    ``track.strategy_options``, kept for the record)."""

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


DIMENSION_LOSSES = ("mse", "ccc")


class SupervisedObjective(Objective):
    """Cross-entropy on the discrete label plus ``valence_weight`` x MSE on valence (MER2023 eq. 8,
    weights 1:1 by default); rows with unknown valence contribute no valence loss, rows without a
    class (sentiment data) no cross-entropy.

    Where the data has them: ``arousal_weight`` x the same loss on arousal, and ``frame_weight`` x
    cross-entropy over every annotated frame of per-frame labels (ABAW Expr). ``dimension_loss``:
    ``mse`` (MER2023) or ``ccc`` (``1 - CCC`` over the batch, as ABAW VA systems train) for both
    valence and arousal."""

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
