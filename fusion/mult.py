"""``mult``: the Multimodal Transformer (Tsai et al., ACL 2019), for aligned and unaligned sequences.

Per modality a **Conv1d projection** (``conv1d_kernel`` 1 or 3; the "convolution" way ABAW6
systems bring frame features of different encoders to one width) to ``hidden_dim``, plus
sinusoidal positions. For every ordered pair (source -> target) a **cross-modal transformer**
(``layers`` blocks: the target's steps attend to the source's steps, pre-LayerNorm, feed-forward)
adapts the source to the target; a target's cross-modal outputs are concatenated and go through a
self-attention transformer (``layers`` blocks), then a mean over the target's real steps (the
original takes the last step; with padding and unaligned lengths a mean is the robust choice).
The targets' vectors are concatenated with presence indicators, projected with a residual MLP,
then the heads. Cross-modal attention needs no common time base: unaligned inputs (different
``T_m``) work as they are, aligned ones (see ``sequence.align``) too.

Masking: a padded source step is never a key; every source also offers a learned *null* key,
so a sample without that modality attends to the null key only (never to zero features); a
target without real steps contributes zeros and its indicator says so.
Defaults (MERTools searches layers {2, 4, 6}, heads 8, hidden {64, 128, 256}, conv1d_kernel
{1, 3}, dropout 0-0.3): ``layers=2``, ``num_heads=4``, ``hidden_dim=64``, ``conv1d_kernel=1``,
``dropout=0.1`` (CPU-sized).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ._seq import mean_pool, sinusoidal_positions, trim, zero_pad
from .base import FUSION, FusionModel, Heads


class _CrossBlock(nn.Module):
    """Pre-LN cross-modal attention (queries: target, keys/values: source) + pre-LN feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_q, self.ln_kv, self.ln_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, q, kv, kv_pad):
        kvn = self.ln_kv(kv)
        a, _ = self.attn(self.ln_q(q), kvn, kvn, key_padding_mask=kv_pad, need_weights=False)
        q = q + self.drop(a)
        return q + self.drop(self.ff(self.ln_ff(q)))


class _SelfBlock(_CrossBlock):
    def forward(self, x, pad):
        return super().forward(x, x, pad)


@FUSION.register("mult")
class MulTFusion(FusionModel):
    input_level = "frame"

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, has_valence: bool, *,
                 hidden_dim: int = 64, layers: int = 2, num_heads: int = 4, conv1d_kernel: int = 1,
                 dropout: float = 0.1, embed_dropout: float = 0.1) -> None:
        super().__init__(input_dims, num_classes, has_valence)
        if conv1d_kernel % 2 == 0:
            raise ValueError(f"mult conv1d_kernel must be odd (1 or 3 keep the length), got {conv1d_kernel}")
        if hidden_dim % num_heads:
            raise ValueError(f"mult hidden_dim {hidden_dim} must be a multiple of num_heads {num_heads}")
        d = hidden_dim
        self.proj = nn.ModuleDict({m: nn.Conv1d(dim, d, conv1d_kernel, padding=conv1d_kernel // 2, bias=False)
                                   for m, dim in input_dims.items()})
        self.null = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, d)) for m in self.modalities})
        self.embed_drop = nn.Dropout(embed_dropout)
        pairs = [(s, t) for t in self.modalities for s in self.modalities if s != t]
        self.cross = nn.ModuleDict({f"{s}_to_{t}": nn.ModuleList([_CrossBlock(d, num_heads, dropout)
                                                                   for _ in range(layers)]) for s, t in pairs})
        width = d * max(len(self.modalities) - 1, 1)
        self.self_attn = nn.ModuleDict({t: nn.ModuleList([_SelfBlock(width, num_heads if width % num_heads == 0
                                                                     else 1, dropout) for _ in range(layers)])
                                        for t in self.modalities})
        self.ln_out = nn.ModuleDict({t: nn.LayerNorm(width) for t in self.modalities})
        combined = len(self.modalities) * (width + 1)
        self.proj1, self.proj2 = nn.Linear(combined, combined), nn.Linear(combined, combined)
        self.out_drop = nn.Dropout(dropout)
        self.to_hidden = nn.Linear(combined, d)
        self.heads = Heads(d, num_classes, has_valence)

    def _embed(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj[m](zero_pad(x, mask).transpose(1, 2)).transpose(1, 2)          # [B, T, d]
        h = h * (h.shape[-1] ** 0.5) + sinusoidal_positions(h.shape[1], h.shape[-1], h.device)
        return zero_pad(self.embed_drop(h), mask)

    def forward(self, inputs, present):
        seqs, masks = {}, {}
        for m in self.modalities:
            x, mask = trim(inputs[m], present[m])
            seqs[m], masks[m] = self._embed(m, x, mask), mask
        B = next(iter(seqs.values())).shape[0]
        keys = {}
        for m in self.modalities:        # every source with a learned null key in front
            null = self.null[m].expand(B, 1, -1)
            keys[m] = (torch.cat([null, seqs[m]], 1),
                       torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=null.device), ~masks[m]], 1))
        outs = []
        for t in self.modalities:
            q, mask = seqs[t], masks[t]
            if len(self.modalities) == 1:
                h = q
            else:
                parts = []
                for s in self.modalities:
                    if s == t:
                        continue
                    h = q
                    for blk in self.cross[f"{s}_to_{t}"]:
                        h = zero_pad(blk(h, *keys[s]), mask)
                    parts.append(h)
                h = torch.cat(parts, -1)                                            # [B, T_t, (M-1) d]
            pad = ~mask
            safe = pad.clone()
            safe[:, 0] = False            # a target without real steps still attends somewhere (masked out below)
            for blk in self.self_attn[t]:
                h = zero_pad(blk(h, safe), mask)
            v = mean_pool(self.ln_out[t](h), mask)
            has = mask.any(1, keepdim=True)
            outs += [torch.where(has, v, torch.zeros_like(v)), has.to(v.dtype)]
        z = torch.cat(outs, -1)
        z = z + self.proj2(self.out_drop(torch.relu(self.proj1(z))))
        return self.heads(torch.relu(self.to_hidden(z)))
