"""MLP early fusion (the MER2023 baseline's ``mlp``): concatenate the modalities, then an MLP.

Masking is explicit: an absent modality's row is zeroed *and* a presence indicator per modality is
appended to the input, so the network can tell "absent" from "a feature that happens to be zero".
"""
from __future__ import annotations

from typing import Mapping

import torch

from .base import FUSION, FusionModel, Heads, mlp


@FUSION.register("mlp")
class MLPFusion(FusionModel):
    def __init__(self, input_dims: Mapping[str, int], num_classes: int, has_valence: bool, *,
                 hidden_dim: int = 256, layers: int = 2, dropout: float = 0.3) -> None:
        super().__init__(input_dims, num_classes, has_valence)
        in_dim = sum(input_dims.values()) + len(input_dims)
        self.body = mlp(in_dim, hidden_dim, layers, dropout)
        self.heads = Heads(hidden_dim, num_classes, has_valence)

    def forward(self, inputs, present):
        parts = []
        for m in self.modalities:
            p = present[m].unsqueeze(-1).to(inputs[m].dtype)
            parts += [inputs[m] * p, p]
        return self.heads(self.body(torch.cat(parts, dim=1)))
