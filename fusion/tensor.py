"""Tensor fusion (TFN), low-rank multimodal fusion (LMF) and the late-fusion DNN: utterance level.

* ``tfn`` (Zadeh et al., EMNLP 2017): each modality's subnet gives ``z_m [fusion_dim]``; the
  fused vector is the outer product of the ``[z_m; 1]`` over modalities, flattened (``prod_m
  (fusion_dim + 1)`` features: every unimodal, bimodal and trimodal interaction), then a
  post-fusion MLP. Cost grows as ``(fusion_dim + 1) ** M``: 4,913 features for three modalities
  at the default ``fusion_dim=16``.
* ``lmf`` (Liu et al., ACL 2018): the same tensor product's weight factorised into ``rank``
  modality-specific factors ``W_m^r [fusion_dim + 1, hidden]``, so
  ``h = sum_r w_r * prod_m ([z_m; 1] @ W_m^r) + b`` never builds the tensor
  (:meth:`LMFFusion.full_weight` builds it, for checking).
* ``lf_dnn`` (MMSA's LF-DNN): a deep subnet per modality, the encodings concatenated late, then
  a post-fusion MLP.

Masking: an absent modality's encoding is set to zero while its constant 1 stays, so the tensor
product keeps only the interactions of the modalities that are present (in ``lf_dnn`` the zeroed
encoding comes with a presence indicator). The zero-filled input row is never encoded.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .base import FUSION, FusionModel, Heads, mlp


def _subnet(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout -> Linear -> ReLU: ``[B, in_dim] -> [B, out_dim]``."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out_dim), nn.ReLU())


def _with_one(z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``[B, H] -> [B, H + 1]``: the encoding (zero where absent) with a constant 1 in front."""
    z = torch.where(present.unsqueeze(-1), z, torch.zeros_like(z))
    return torch.cat([torch.ones_like(z[:, :1]), z], dim=1)


@FUSION.register("tfn")
class TFNFusion(FusionModel):
    """Tensor fusion network. Defaults: ``fusion_dim=16`` per modality, ``hidden_dim=128``
    (MERTools searches {64, 128}), ``dropout=0.3`` (searched 0.2-0.5)."""

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, has_valence: bool, *,
                 hidden_dim: int = 128, fusion_dim: int = 16, dropout: float = 0.3,
                 max_fused: int = 2_000_000) -> None:
        super().__init__(input_dims, num_classes, has_valence)
        self.subnets = nn.ModuleDict({m: _subnet(d, hidden_dim, fusion_dim, dropout)
                                      for m, d in input_dims.items()})
        fused = (fusion_dim + 1) ** len(self.modalities)
        if fused > max_fused:
            raise ValueError(f"tfn: the tensor product of {len(self.modalities)} modalities at fusion_dim="
                             f"{fusion_dim} has {fused:,} features (max_fused={max_fused:,}); lower "
                             f"fusion_dim or use fusion=lmf, its low-rank form")
        self.post = nn.Sequential(nn.Dropout(dropout), nn.Linear(fused, hidden_dim), nn.ReLU(),
                                  nn.Linear(hidden_dim, hidden_dim), nn.ReLU())
        self.heads = Heads(hidden_dim, num_classes, has_valence)

    def fused(self, inputs, present) -> torch.Tensor:
        """The flattened outer product ``[B, prod_m (fusion_dim + 1)]``."""
        out = None
        for m in self.modalities:
            z = _with_one(self.subnets[m](inputs[m]), present[m])
            out = z if out is None else (out.unsqueeze(2) * z.unsqueeze(1)).flatten(1)
        return out

    def forward(self, inputs, present):
        return self.heads(self.post(self.fused(inputs, present)))


@FUSION.register("lmf")
class LMFFusion(FusionModel):
    """Low-rank multimodal fusion. Defaults: ``rank=4`` (MERTools searches 3-6),
    ``hidden_dim=128`` (searched {32, 64, 128, 256}), ``fusion_dim=32``, ``dropout=0.3``."""

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, has_valence: bool, *,
                 hidden_dim: int = 128, fusion_dim: int = 32, rank: int = 4, dropout: float = 0.3) -> None:
        super().__init__(input_dims, num_classes, has_valence)
        self.rank = rank
        self.subnets = nn.ModuleDict({m: _subnet(d, hidden_dim, fusion_dim, dropout)
                                      for m, d in input_dims.items()})
        self.factors = nn.ParameterDict({m: nn.Parameter(torch.empty(rank, fusion_dim + 1, hidden_dim))
                                         for m in self.modalities})
        # Each factor maps [z_m; 1] to unit-scale outputs (std 1/sqrt(fusion_dim + 1) per weight), so
        # the product over modalities neither vanishes nor explodes with their number; Xavier on
        # the 3-d factors (the LMF code's init) gives std ~0.02, a product ~1e-3 of the signal
        # for three modalities, and training stalled (demo CV wF1 0.26 over 3 seeds). A LayerNorm on
        # the fused vector keeps the heavy-tailed product of modality terms in range (demo seed 0:
        # 0.495 with the init alone, 0.549 with both).
        for f in self.factors.values():
            nn.init.normal_(f, std=(fusion_dim + 1) ** -0.5)
        self.rank_weights = nn.Parameter(torch.full((1, rank), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(hidden_dim))
        self.post = nn.Sequential(nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.heads = Heads(hidden_dim, num_classes, has_valence)

    def factor_inputs(self, inputs, present) -> dict[str, torch.Tensor]:
        """``[z_m; 1]`` per modality, ``[B, fusion_dim + 1]`` (constant first)."""
        return {m: _with_one(self.subnets[m](inputs[m]), present[m]) for m in self.modalities}

    def fuse(self, zs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sum_r w_r prod_m (z_m @ W_m^r) + b``: ``[B, hidden]``."""
        prod = None
        for m in self.modalities:
            part = torch.einsum("bi,rio->rbo", zs[m], self.factors[m])     # [R, B, H]
            prod = part if prod is None else prod * part
        return torch.einsum("r,rbo->bo", self.rank_weights[0], prod) + self.bias

    def full_weight(self) -> torch.Tensor:
        """The explicit fusion tensor ``[d_1 + 1, ..., d_M + 1, hidden]`` the factors stand for."""
        letters = "ijklmnpq"[:len(self.modalities)]
        spec = ",".join(f"r{c}o" for c in letters)
        prod = torch.einsum(f"{spec}->r{letters}o", *[self.factors[m] for m in self.modalities])
        return torch.einsum(f"r,r{letters}o->{letters}o", self.rank_weights[0], prod)

    def forward(self, inputs, present):
        return self.heads(self.post(self.fuse(self.factor_inputs(inputs, present))))


@FUSION.register("lf_dnn")
class LateFusionDNN(FusionModel):
    """Late-fusion DNN: per-modality deep subnets (``layers`` x Linear+ReLU+Dropout at
    ``hidden_dim``; MERTools searches hidden {64, 128, 256}), concatenated with presence
    indicators, then a post-fusion MLP. Defaults: ``hidden_dim=128``, ``layers=3``, ``dropout=0.3``."""

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, has_valence: bool, *,
                 hidden_dim: int = 128, layers: int = 3, dropout: float = 0.3) -> None:
        super().__init__(input_dims, num_classes, has_valence)
        self.subnets = nn.ModuleDict({m: nn.Sequential(nn.Dropout(dropout), mlp(d, hidden_dim, layers, dropout))
                                      for m, d in input_dims.items()})
        self.post = mlp(len(self.modalities) * (hidden_dim + 1), hidden_dim, 1, dropout)
        self.heads = Heads(hidden_dim, num_classes, has_valence)

    def forward(self, inputs, present):
        parts = []
        for m in self.modalities:
            z = self.subnets[m](inputs[m])
            p = present[m].unsqueeze(-1)
            parts += [torch.where(p, z, torch.zeros_like(z)), p.to(z.dtype)]
        return self.heads(self.post(torch.cat(parts, dim=1)))
