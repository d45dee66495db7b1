"""A plain transcription of the official LGI-Former forward pass, used as the speed baseline.

This is what the official ``modeling_finetune.py`` does, written out without any optimisation:
separate ``q`` and ``kv`` projections, attention as an explicit ``softmax(q k^T) v`` per block,
the representative tokens moved in and out of the token tensor with ``x[:, 0]`` / ``x[:, 1:]``
slices (``.clone()`` out, slice assignment back), and the region partition done with
reshape / permute / ``contiguous()`` as ``einops.rearrange`` does it. It has the official
parameter names, so it loads the state_dict of mer's
:class:`~feature_extractors.visual.lgi_former.LGIFormer` (or of an official fine-tuned
checkpoint) as it is. Inference only (it writes into its activations in place).

    ref = ReferenceLGIFormer.like(model)      # same sizes as a mer LGIFormer, same weights
    ref.forward_features(clips)               # [B, C]; forward_tokens -> [B, R, 1 + S, C]
    ref.forward_pretrain_encoder(clips, mask, pretrain_model.encoder.norm)   # the pretraining encoder
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """``[1, P, D]`` float32: sin(p / 10000^(2(j//2)/D)) at even j, cos at odd j (float64, rounded)."""
    angles = np.array([[p / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)]
                       for p in range(num_positions)])
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.tensor(angles, dtype=torch.float32).unsqueeze(0)


class ReferenceAttention(nn.Module):
    """q from ``x``, k and v from ``context`` (``x`` when None); q and v biased, k not."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        batch, n_q, dim = x.shape
        context = x if context is None else context
        n_kv = context.shape[1]
        heads = self.num_heads
        q = F.linear(x, self.q.weight, self.q_bias)
        q = q.reshape(batch, n_q, heads, dim // heads).permute(0, 2, 1, 3)
        kv_bias = torch.cat((torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))
        kv = F.linear(context, self.kv.weight, kv_bias)
        kv = kv.reshape(batch, n_kv, 2, heads, dim // heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        q = q * self.scale
        weights = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, n_q, dim)
        return self.proj(out)


class ReferenceMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ReferenceLGBlock(nn.Module):
    """Local self-attention per region, global self-attention among the representative tokens,
    local-to-global cross-attention, MLP; on ``[B*R, 1+S, C]`` as the official block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        norm = lambda: nn.LayerNorm(dim, eps=1e-6)  # noqa: E731
        self.first_attn_norm0 = norm()
        self.first_attn = ReferenceAttention(dim, num_heads)
        self.second_attn_norm0 = norm()
        self.second_attn = ReferenceAttention(dim, num_heads)
        self.third_attn_norm0 = norm()
        self.third_attn_norm1 = norm()
        self.third_attn = ReferenceAttention(dim, num_heads)
        self.norm2 = norm()
        self.mlp = ReferenceMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        rows, seq, dim = x.shape
        regions = rows // batch
        x = x + self.first_attn(self.first_attn_norm0(x))
        rep = x[:, 0].clone().reshape(batch, regions, dim)                       # '(b n) c -> b n c'
        rep = rep + self.second_attn(self.second_attn_norm0(rep))
        x[:, 0] = rep.reshape(rows, dim)
        local = x[:, 1:].clone().reshape(batch, regions * (seq - 1), dim)      # '(b n) s c -> b (n s) c'
        local = local + self.third_attn(self.third_attn_norm0(local), context=self.third_attn_norm1(rep))
        x[:, 1:] = local.reshape(rows, seq - 1, dim)
        return x + self.mlp(self.norm2(x))


class ReferencePatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, tubelet: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ReferenceLGIFormer(nn.Module):
    """The official fine-tune ``VisionTransformer`` with ``attn_type='local_global'``."""

    def __init__(self, img_size: int = 160, patch_size: int = 16, num_frames: int = 16, tubelet_size: int = 2,
                 in_chans: int = 3, embed_dim: int = 512, depth: int = 16, num_heads: int = 8,
                 mlp_ratio: float = 4.0, region_size: tuple[int, int, int] = (2, 5, 10), num_classes: int = 0,
                 token_pool: str = "region") -> None:
        super().__init__()
        self.token_grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.region_size = tuple(region_size)
        self.region_grid = tuple(g // r for g, r in zip(self.token_grid, self.region_size))
        self.token_pool = token_pool
        num_regions = int(np.prod(self.region_grid))
        self.patch_embed = ReferencePatchEmbed(in_chans, embed_dim, tubelet_size, patch_size)
        self.pos_embed = sinusoid_table(int(np.prod(self.token_grid)), embed_dim)    # a plain attribute
        self.lg_region_tokens = nn.Parameter(torch.zeros(num_regions, embed_dim))
        self.blocks = nn.ModuleList(ReferenceLGBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    @classmethod
    def like(cls, model: nn.Module) -> "ReferenceLGIFormer":
        """A reference with ``model``'s sizes and weights (a mer ``LGIFormer``; of the pretraining
        layout only the blocks are taken: pass its ``norm`` to :meth:`forward_pretrain_encoder`)."""
        c = model.cfg
        ref = cls(img_size=c.img_size, patch_size=c.patch_size, num_frames=c.num_frames, tubelet_size=c.tubelet_size,
                  in_chans=c.in_chans, embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
                  mlp_ratio=c.mlp_ratio, region_size=c.region_size, num_classes=c.num_classes, token_pool=c.token_pool)
        ref = ref.to(next(model.parameters()).dtype)
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("norm.")}
        missing, unexpected = ref.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith(("fc_norm.", "head.")) for k in missing) or (
                missing and getattr(model, "fc_norm", None) is not None):
            raise ValueError(f"state_dict does not fit the reference: missing {missing}, unexpected {unexpected}")
        return ref.eval()

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``[B, 3, T, H, W]`` -> the last block's tokens ``[B, R, 1 + S, C]``."""
        x = self.patch_embed(x)
        x = x + self.pos_embed.type_as(x).to(x.device).clone().detach()
        batch, _, dim = x.shape
        (nt, nh, nw), (t, h, w) = self.region_grid, self.region_size
        # 'b (nt t nh h nw w) c -> b (nt nh nw) (t h w) c'
        x = x.reshape(batch, nt, t, nh, h, nw, w, dim).permute(0, 1, 3, 5, 2, 4, 6, 7).contiguous()
        x = x.reshape(batch, nt * nh * nw, t * h * w, dim)
        regions = x.shape[1]
        rep = self.lg_region_tokens.reshape(1, regions, 1, dim).expand(batch, regions, 1, dim)
        x = torch.cat([rep, x], dim=2)
        x = x.reshape(batch * regions, x.shape[2], dim)
        for blk in self.blocks:
            x = blk(x, batch)
        return x.reshape(batch, regions, -1, dim)

    def forward_pretrain_encoder(self, x: torch.Tensor, mask: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """The official pretraining encoder: the visible tokens (``mask`` True = masked) in raster
        order, regrouped 'b (nt t nhw hw) c -> b (nt nhw) (t hw) c' with hw = int(h * w * visible
        share), the blocks, the local tokens 'b (n s) c', then ``norm``."""
        x = self.patch_embed(x)
        x = x + self.pos_embed.type_as(x).to(x.device).clone().detach()
        batch, total, dim = x.shape
        visible = x[~mask].reshape(batch, -1, dim)
        share = visible.size(1) / total
        (nt, nh, nw), (t, h, w) = self.region_grid, self.region_size
        hw = int(h * w * share)
        visible = visible.reshape(batch, nt, t, nh * nw, hw, dim).permute(0, 1, 3, 2, 4, 5).contiguous()
        visible = visible.reshape(batch, nt * nh * nw, t * hw, dim)
        regions = visible.shape[1]
        rep = self.lg_region_tokens.reshape(1, regions, 1, dim).expand(batch, regions, 1, dim)
        visible = torch.cat([rep, visible], dim=2).reshape(batch * regions, 1 + t * hw, dim)
        for blk in self.blocks:
            visible = blk(visible, batch)
        return norm(visible[:, 1:].reshape(batch, regions * t * hw, dim))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_tokens(x)
        if self.token_pool == "region":
            tokens = tokens[:, :, 0]
        elif self.token_pool == "org":
            tokens = tokens[:, :, 1:].reshape(tokens.shape[0], -1, tokens.shape[-1])
        else:
            tokens = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])
        return self.fc_norm(tokens.mean(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
