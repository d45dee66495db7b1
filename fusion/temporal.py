"""Frame-level fusion with a temporal encoder per modality: ``lstm``, ``gru``, ``tcn``.

Each modality's sequence ``[B, T_m, D_m]`` goes through its own encoder (a packed bidirectional
LSTM or GRU, or a residual dilated temporal-convolution stack), then **attention pooling** over
its real steps (a learned softmax over time, so the few frames that carry the evidence can
outweigh the many that do not, which a mean cannot), then the modalities are fused by a softmax
over the present ones (as in ``attention``) into the discrete and valence heads. Modalities need
not share a time base (each is encoded on its own); utterance-level inputs arrive as one-step
sequences.

Input contract (frame level): ``inputs[m]: [B, T_m, D_m]``, ``present[m]: [B, T_m]`` bool, True on
real steps; a sample without the modality has no real step.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ._seq import AttentionPool, ModalityAttention, RNNEncoder, TCNEncoder, trim
from .base import FUSION, FusionModel, Heads


class TemporalFusion(FusionModel):
    input_level = "frame"
    encoder_kind = "lstm"
    frame_outputs = True

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, has_valence: bool, *,
                 hidden_dim: int = 128, num_layers: int = 1, bidirectional: bool = True,
                 kernel_size: int = 3, levels: int = 2, dropout: float = 0.3,
                 input_dropout: float = 0.1, input_proj: bool = True) -> None:
        super().__init__(input_dims, num_classes, has_valence)
        self.input_drop = nn.Dropout(input_dropout)

        def encoder(d: int) -> nn.Module:
            if self.encoder_kind == "tcn":
                return TCNEncoder(d, hidden_dim, kernel_size=kernel_size, levels=levels, dropout=dropout)
            return RNNEncoder(d, hidden_dim, cell=self.encoder_kind, num_layers=num_layers,
                              bidirectional=bidirectional, dropout=dropout, input_proj=input_proj)

        self.encoders = nn.ModuleDict({m: encoder(d) for m, d in input_dims.items()})
        self.pools = nn.ModuleDict({m: AttentionPool(hidden_dim) for m in self.modalities})
        self.drop = nn.Dropout(dropout)
        self.fuse = ModalityAttention(len(self.modalities), hidden_dim, dropout)
        self.heads = Heads(hidden_dim, num_classes, has_valence)

    def forward(self, inputs, present):
        pooled, mods, steps = [], [], {}
        for m in self.modalities:
            x, mask = trim(inputs[m], present[m])
            h = self.encoders[m](self.input_drop(x), mask)
            v, _ = self.pools[m](h, mask)
            pooled.append(v)
            mods.append(mask.any(1))
            steps[m] = (h, mask)
        enc = self.drop(torch.stack(pooled, 1))                                    # [B, M, H]
        fused, weights = self.fuse(enc, torch.stack(mods, 1))
        out = self.heads(fused)
        out["attention"] = weights
        if self.frame_reference is not None:
            out["frame_embedding"], out["frame_mask"] = self._frame_states(steps, enc, weights)
        return out

    def _frame_states(self, steps, enc, weights):
        """Per step of the reference stream: the modality-weighted sum of each modality's state at
        that step (a stream on the same steps, i.e. aligned) or its pooled vector (any other)."""
        if self.frame_reference not in steps:
            raise KeyError(f"frame_reference {self.frame_reference!r} is not one of {self.modalities}")
        h_ref, mask = steps[self.frame_reference]
        total = torch.zeros_like(h_ref)
        for i, m in enumerate(self.modalities):
            h, _ = steps[m]
            state = h if h.shape[1] == h_ref.shape[1] else enc[:, i].unsqueeze(1)
            total = total + weights[:, i].view(-1, 1, 1) * state
        return self.drop(total), mask


@FUSION.register("lstm")
class LSTMFusion(TemporalFusion):
    """Per-modality bidirectional LSTM (``hidden_dim=128`` in total, ``num_layers=1``) + attention
    pooling + attention over modalities."""

    encoder_kind = "lstm"


@FUSION.register("gru")
class GRUFusion(TemporalFusion):
    """Per-modality bidirectional GRU + attention pooling + attention over modalities."""

    encoder_kind = "gru"


@FUSION.register("tcn")
class TCNFusion(TemporalFusion):
    """Per-modality temporal convolution (``levels=2`` residual blocks, ``kernel_size=3``,
    dilations 1, 2) + attention pooling + attention over modalities."""

    encoder_kind = "tcn"
