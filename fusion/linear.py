"""The linear floor: multinomial logistic regression for the discrete head, ridge regression for
valence (and arousal), over the presence-masked concatenation of every modality.

The input of both heads is the design row ``[x_1 * p_1, p_1, x_2 * p_2, p_2, ...]`` (modalities in
sorted order, each standardised by the training fold, ``p_m`` its presence indicator), so an
absent modality contributes only its indicator's learned offset. The model is convex: the
estimator fits it in closed form / with L-BFGS and picks each head's L2 strength by inner
cross-validation on the training rows alone (:mod:`mer.training.convex`), never by the held-out
fold. It is the floor every other fusion model is reported against.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .base import FUSION, FusionModel


@FUSION.register("linear")
class LinearFusion(FusionModel):
    solver = "convex"
    """Fitted by :func:`mer.training.convex.fit_convex`, not by the gradient loop."""

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, has_valence: bool, *,
                 Cs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
                 alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4),
                 inner_folds: int = 3, arousal: bool = False) -> None:
        super().__init__(input_dims, num_classes, has_valence)
        self.Cs = tuple(float(c) for c in Cs)
        self.alphas = tuple(float(a) for a in alphas)
        self.inner_folds = int(inner_folds)
        d = sum(input_dims.values()) + len(input_dims)
        self.design_dim = d
        self.discrete = nn.Linear(d, max(num_classes, 1))
        self.valence = nn.Linear(d, 1) if has_valence else None
        self.arousal = nn.Linear(d, 1) if arousal else None
        for head in (self.discrete, self.valence, self.arousal):    # a head with no rows to fit stays 0
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def design(self, inputs, present) -> torch.Tensor:
        """``[B, sum D_m + M]``: each modality zeroed where absent, then its presence indicator."""
        parts = []
        for m in self.modalities:
            p = present[m].unsqueeze(-1).to(inputs[m].dtype)
            parts += [inputs[m] * p, p]
        return torch.cat(parts, dim=1)

    def forward(self, inputs, present):
        z = self.design(inputs, present)
        out = {"embedding": z, "logits": self.discrete(z)}
        if self.valence is not None:
            out["valence"] = self.valence(z).squeeze(-1)
        if self.arousal is not None:
            out["arousal"] = self.arousal(z).squeeze(-1)
        return out
