"""Attention fusion as the MER2023 baseline paper specifies it.

Each modality has its own MLP encoder to ``hidden_dim``; the concatenated encodings go through an
MLP to one score per modality; **softmax** over the modalities gives the weights (paper eq. 5) and
the fused vector is the weighted sum of the encodings, feeding a discrete and a valence head.

The official code (MER2023 ``main-release.py``, MERBench ``attention``) omits the softmax and uses
the raw scores as weights; mer follows the paper. ``normalize='none'`` reproduces the official
code's unnormalised weights for comparison.

Masking: an absent modality gets a score of -inf before the softmax (weight exactly 0) and its
encoding is not read; a sample with every modality absent gets a learned "nothing observed" vector.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .base import FUSION, FusionModel, Heads, mlp


@FUSION.register("attention")
class AttentionFusion(FusionModel):
    def __init__(self, input_dims: Mapping[str, int], num_classes: int, has_valence: bool, *,
                 hidden_dim: int = 128, layers: int = 2, dropout: float = 0.3,
                 normalize: str = "softmax") -> None:
        super().__init__(input_dims, num_classes, has_valence)
        if normalize not in {"softmax", "none"}:
            raise ValueError("normalize must be 'softmax' (paper) or 'none' (official code)")
        self.normalize = normalize
        self.encoders = nn.ModuleDict({m: mlp(d, hidden_dim, layers, dropout) for m, d in input_dims.items()})
        n = len(self.modalities)
        self.scorer = nn.Sequential(mlp(n * hidden_dim, hidden_dim, 1, dropout), nn.Linear(hidden_dim, n))
        self.empty = nn.Parameter(torch.zeros(hidden_dim))
        self.heads = Heads(hidden_dim, num_classes, has_valence)

    def forward(self, inputs, present):
        mask = torch.stack([present[m] for m in self.modalities], dim=1)            # [B, M]
        enc = torch.stack([self.encoders[m](inputs[m]) for m in self.modalities], 1)  # [B, M, H]
        enc = enc * mask.unsqueeze(-1)                                                 # absent -> 0
        scores = self.scorer(enc.flatten(1))                                           # [B, M]
        if self.normalize == "softmax":
            scores = scores.masked_fill(~mask, float("-inf"))
            any_present = mask.any(dim=1, keepdim=True)
            weights = torch.softmax(torch.where(any_present, scores, torch.zeros_like(scores)), dim=1)
            weights = weights * any_present
        else:
            weights = scores * mask
        fused = (weights.unsqueeze(-1) * enc).sum(1)                                   # [B, H]
        none = ~mask.any(dim=1, keepdim=True)
        fused = torch.where(none, self.empty.expand_as(fused), fused)
        out = self.heads(fused)
        out["attention"] = weights
        return out
