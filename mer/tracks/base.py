"""Track strategies: the objective is a swappable object; the loop never branches on the track.

A strategy owns the loss (``loss(outputs, batch)``) and how one fold is fitted (``fit_fold``:
supervised fits the labelled rows; later strategies add corrupted copies, pseudo-labels or
candidate sets). It is looked up by name from the track config (``track.strategy: supervised``).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from mer.registry import Registry

STRATEGIES: Registry[type["Strategy"]] = Registry("track strategy")


class Strategy:
    name = ""

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def fit_fold(self, estimator, train, eval_set=None, context: Mapping[str, Any] | None = None):
        """Fit ``estimator`` on one fold. ``train``/``eval_set`` are :class:`mer.training.data.Split`s."""
        return estimator.fit(train, eval_set=eval_set, strategy=self)


@STRATEGIES.register("supervised")
class SupervisedStrategy(Strategy):
    """Cross-entropy on the discrete label plus ``valence_weight`` x MSE on valence (MER2023 eq. 8,
    weights 1:1 by default); rows with unknown valence contribute no valence loss."""

    name = "supervised"

    def __init__(self, valence_weight: float = 1.0, label_smoothing: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.valence_weight = float(valence_weight)
        self.label_smoothing = float(label_smoothing)

    def loss(self, outputs, batch):
        w = batch.get("weight")
        ce = F.cross_entropy(outputs["logits"], batch["y"], reduction="none",
                             label_smoothing=self.label_smoothing)
        loss = (ce * w).sum() / w.sum() if w is not None else ce.mean()
        if "valence" in outputs and self.valence_weight > 0:
            v = batch["v"]
            known = torch.isfinite(v)
            if known.any():
                loss = loss + self.valence_weight * F.mse_loss(outputs["valence"][known], v[known])
        return loss


def build_strategy(name: str, **options: Any) -> Strategy:
    return STRATEGIES.get(name)(**options)
