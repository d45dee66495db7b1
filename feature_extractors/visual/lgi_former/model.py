"""The LGI-Former encoder and its building blocks (attention, MLP, LGBlock, the VideoMAE block of
the pretraining decoder, the tubelet embedding), and the official fine-tune weight init."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ._onednn import _dnn_linear, _dnn_linear_add, _onednn_applies, _packed_weights
from .config import TOKEN_POOLS, LGIFormerConfig

# --- building blocks --------------------------------------------------------------------------

def sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed position table ``[1, num_positions, dim]`` float32: angle ``p / 10000^(2(j//2)/dim)``,
    sin at even ``j`` and cos at odd ``j`` (interleaved), computed in float64 and rounded to
    float32 as the reference does (a float64 run only upcasts it)."""
    pos = np.arange(num_positions, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angle = pos / np.power(10000, 2 * (j // 2) / dim)[None, :]
    table = np.empty_like(angle)
    table[:, 0::2] = np.sin(angle[:, 0::2])
    table[:, 1::2] = np.cos(angle[:, 1::2])
    return torch.from_numpy(table).float().unsqueeze(0)


def drop_path(x: torch.Tensor, p: float, training: bool, sample_dims: int = 1) -> torch.Tensor:
    """Stochastic depth: zero whole residual branches, one draw per entry of the first
    ``sample_dims`` dimensions (per sample, or per sample and region), survivors scaled by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = x.shape[:sample_dims] + (1,) * (x.ndim - sample_dims)
    return x * (keep + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_().div_(keep)


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, drop: float = 0.0) -> torch.Tensor:
    """``[N, H, Tq, d]`` queries over ``[N, H, Tk, d]`` keys/values -> ``[N, Tq, H * d]``; scale d^-0.5.
    (The CPU and CUDA kernels lay their output out as ``[N, Tq, H, d]``, so the flatten is free.)"""
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
    return out.transpose(1, 2).flatten(2)


def _heads_view(x: torch.Tensor, parts: int, num_heads: int) -> tuple[torch.Tensor, ...]:
    """``[N, T, parts * H * d]`` projections -> ``parts`` views ``[N, H, T, d]`` (no copy)."""
    n, t, _ = x.shape
    return tuple(p.transpose(1, 2) for p in x.view(n, t, parts, num_heads, -1).unbind(2))



class GeneralAttention(nn.Module):
    """Self- or cross-attention with separate ``q`` and ``kv`` projections (official key names):
    q gets ``q_bias``, v gets ``v_bias``, k has no bias. Self-attention runs q, k and v as one
    matrix product (the weights stacked ``[q; kv]``, bias ``[q_bias, 0, v_bias]``)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, context_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)   # the context may be another width
        self.proj = nn.Linear(dim, dim)

    def kv_bias(self) -> torch.Tensor:
        return torch.cat((torch.zeros_like(self.v_bias), self.v_bias))

    def qkv_bias(self) -> torch.Tensor:
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, fused: bool = False) -> torch.Tensor:
        """``x [N, Tq, C]``, ``context [N, Tk, C]`` (default ``x``) -> ``[N, Tq, C]``. ``fused``
        (self-attention only) computes q, k and v as one product with the stacked weights, which
        pays off where the tokens outnumber the weight rows (S1), not for a handful (S2)."""
        drop = self.attn_drop if self.training else 0.0
        if fused and context is None:
            weight = torch.cat((self.q.weight, self.kv.weight))
            q, k, v = _heads_view(F.linear(x, weight, self.qkv_bias()), 3, self.num_heads)
        else:
            (q,) = _heads_view(F.linear(x, self.q.weight, self.q_bias), 1, self.num_heads)
            kv_input = x if context is None else context
            k, v = _heads_view(F.linear(kv_input, self.kv.weight, self.kv_bias()), 2, self.num_heads)
        return self.proj(_attend(q, k, v, drop))


class FusedAttention(nn.Module):
    """VideoMAE's self-attention with one fused ``qkv`` projection and bias ``(q_bias, 0, v_bias)``
    (the decoder's blocks)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        q, k, v = _heads_view(F.linear(x, self.qkv.weight, bias), 3, self.num_heads)
        return self.proj(_attend(q, k, v))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LGBlock(nn.Module):
    """One LGI-Former block on ``[B, R, 1 + S, C]`` (R regions, each its representative token
    followed by S local tokens): S1 local self-attention per region, S2 global self-attention
    among the representative tokens, S3 local tokens cross-attend to all representative tokens,
    then the MLP. Drop-path draws follow the reference: per (sample, region) for S1 and the MLP,
    per sample for S2 and S3. Without autograd on a CPU in float32 the same steps run through
    oneDNN (:meth:`_forward_onednn`, see :func:`_packed_weights`); ``use_onednn = False`` turns
    that off."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.first_attn_norm0 = _layer_norm(dim)
        self.first_attn = GeneralAttention(dim, num_heads)
        self.second_attn_norm0 = _layer_norm(dim)
        self.second_attn = GeneralAttention(dim, num_heads)
        self.third_attn_norm0 = _layer_norm(dim)
        self.third_attn_norm1 = _layer_norm(dim)
        self.third_attn = GeneralAttention(dim, num_heads)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path
        self.use_onednn = True

    def _dp(self, x: torch.Tensor, sample_dims: int) -> torch.Tensor:
        return drop_path(x, self.drop_path, self.training, sample_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_onednn and not (self.training and self.drop_path > 0) and _onednn_applies(x):
            return self._forward_onednn(x)
        b, r, s1, c = x.shape
        flat = x.reshape(b * r, s1, c)
        flat = flat + self._dp(self.first_attn(self.first_attn_norm0(flat), fused=True), 1)   # S1
        x = flat.view(b, r, s1, c)
        rep = x[:, :, 0]                                                                # [B, R, C]
        rep = rep + self._dp(self.second_attn(self.second_attn_norm0(rep)), 1)          # S2
        local = x[:, :, 1:].reshape(b, r * (s1 - 1), c)                                 # [B, R*S, C]
        local = local + self._dp(self.third_attn(self.third_attn_norm0(local),          # S3
                                                 context=self.third_attn_norm1(rep)), 1)
        x = torch.cat((rep.unsqueeze(2), local.view(b, r, s1 - 1, c)), dim=2)
        return x + self._dp(self.mlp(self.norm2(x)), 2)                                # FFN

    def _forward_onednn(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for CPU float32 inference (no drop path): the same steps in the same
        order, S3 through :meth:`_cross_attend_folded`."""
        b, r, s1, c = x.shape
        h = self.first_attn.num_heads
        w = _packed_weights(self)
        flat = x.reshape(b * r, s1, c)
        q, k, v = _heads_view(_dnn_linear(self.first_attn_norm0(flat), w["first_qkv"]), 3, h)      # S1
        flat = _dnn_linear_add(_attend(q, k, v), w["first_proj"], flat)
        x = flat.view(b, r, s1, c)
        rep = x[:, :, 0]                                                                          # S2
        q, k, v = _heads_view(_dnn_linear(self.second_attn_norm0(rep), w["second_qkv"]), 3, h)
        rep = _dnn_linear_add(_attend(q, k, v), w["second_proj"], rep)
        out = torch.empty_like(x)                                                                 # S3
        out[:, :, 0] = rep
        self._cross_attend_folded(x[:, :, 1:], rep, w, out=out[:, :, 1:])
        hidden = _dnn_linear(self.norm2(out), w["fc1"], act="gelu")                              # FFN
        return _dnn_linear_add(hidden, w["fc2"], out)

    def _cross_attend_folded(self, local: torch.Tensor, rep: torch.Tensor, w: dict[str, Any],
                             out: torch.Tensor) -> None:
        """S3 for inference, ``out = local + third_attn(norm0(local), context=norm1(rep))``
        (``local [B, R, S, C]``, ``rep [B, R, C]``), with the products re-associated: the
        queries meet only R keys per head, so ``q_h k_h^T = x (k_h Wq_h)^T + k_h bq_h`` and
        ``proj(attn v) = sum_h attn_h (v_h Wp_h^T) + bp`` (each head's probabilities sum to 1,
        so ``bp / H`` rides on every head's rows). That is two products of the local tokens
        with ``H * R`` columns instead of two with ``C`` (about 12 % of the model's multiply-adds);
        the results differ from the direct order by float rounding only."""
        b, r, s, c = local.shape
        heads = self.third_attn.num_heads
        keys = heads * r
        x = self.third_attn_norm0(local).view(b, r * s, c)
        kv = _dnn_linear(self.third_attn_norm1(rep), w["third_kv"]).view(b, r, 2, heads, -1)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)                          # [B, H, R, d]
        queries = torch.matmul(k, w["third_q_heads"]).view(b, keys, c)                             # [B, H*R, C]
        offsets = torch.matmul(k, w["third_qb_heads"]).view(b, keys, 1)
        scores = torch.baddbmm(offsets, queries, x.transpose(1, 2))                                # [B, H*R, L]
        attn = torch.softmax(scores.view(b, heads, r, r * s), dim=2).view(b, keys, r * s)
        values = (torch.matmul(v, w["third_proj_heads"]) + w["third_proj_bias_share"]).view(b, keys, c)
        torch.add(local, torch.bmm(attn.transpose(1, 2), values).view(b, r, s, c), out=out)

    def forward_representatives(self, x: torch.Tensor) -> torch.Tensor:
        """The representative tokens this block outputs, ``[B, R, C]``, from ``x [B, R, 1 + S, C]``,
        computing only what they depend on: S1 with their own queries (keys and values of every
        token), S2, and the MLP on them. S3 only changes local tokens, so it is skipped. For the
        last block when only the representative tokens are used (``token_pool='region'``)."""
        b, r, s1, c = x.shape
        h = self.first_attn.num_heads
        flat = x.reshape(b * r, s1, c)
        normed = self.first_attn_norm0(flat)
        attn = self.first_attn
        if self.use_onednn and not (self.training and self.drop_path > 0) and _onednn_applies(x):
            w = _packed_weights(self)
            q, _, _ = _heads_view(_dnn_linear(normed[:, :1], w["first_qkv"]), 3, h)
            k, v = _heads_view(_dnn_linear(normed, w["first_kv"]), 2, h)
            rep = _dnn_linear_add(_attend(q, k, v), w["first_proj"], flat[:, :1]).view(b, r, c)      # S1
            q, k, v = _heads_view(_dnn_linear(self.second_attn_norm0(rep), w["second_qkv"]), 3, h)
            rep = _dnn_linear_add(_attend(q, k, v), w["second_proj"], rep)                        # S2
            hidden = _dnn_linear(self.norm2(rep), w["fc1"], act="gelu")
            return _dnn_linear_add(hidden, w["fc2"], rep)                                          # FFN
        (q,) = _heads_view(F.linear(normed[:, :1], attn.q.weight, attn.q_bias), 1, h)
        k, v = _heads_view(F.linear(normed, attn.kv.weight, attn.kv_bias()), 2, h)
        drop = attn.attn_drop if self.training else 0.0
        rep = flat[:, 0] + self._dp(attn.proj(_attend(q, k, v, drop))[:, 0], 1)                  # S1
        rep = rep.view(b, r, c)
        rep = rep + self._dp(self.second_attn(self.second_attn_norm0(rep)), 1)                    # S2
        return rep + self._dp(self.mlp(self.norm2(rep)), 2)                                       # FFN


class Block(nn.Module):
    """A VideoMAE transformer block (the pretraining decoder's)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = _layer_norm(dim)
        self.attn = FusedAttention(dim, num_heads)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """``[B, C, T, H, W]`` -> ``[B, N, D]`` tokens in raster (t, h, w) order. ``cfg``: any config
    with ``in_chans, num_frames, img_size, tubelet_size, patch_size, embed_dim`` (LGI-Former's,
    SVFAP's TPSBT's)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.expected = (cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)
        kernel = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_chans, cfg.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.expected:
            c, t, h, w = self.expected
            raise ValueError(f"the model expects clips [B, {c}, {t}, {h}, {w}], got {list(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)


# --- the encoder ------------------------------------------------------------------------------

class LGIFormer(nn.Module):
    """The LGI-Former encoder.

    ``layout='finetune'``: the official ``VisionTransformer`` (keys ``lg_region_tokens``,
    ``patch_embed.*``, ``blocks.*``, ``fc_norm.*``, ``head.*`` when ``num_classes > 0``).
    ``layout='pretrain'``: the official pretraining encoder (``encoder.norm`` over the local
    tokens instead of ``fc_norm`` and a head).
    """

    def __init__(self, cfg: LGIFormerConfig = LGIFormerConfig(), layout: str = "finetune") -> None:
        super().__init__()
        if layout not in ("finetune", "pretrain"):
            raise ValueError(f"LGIFormer layout must be 'finetune' or 'pretrain', got {layout!r}")
        self.cfg = cfg
        d = cfg.embed_dim
        self.lg_region_tokens = nn.Parameter(torch.zeros(cfg.num_regions, d))
        self.patch_embed = PatchEmbed(cfg)
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(LGBlock(d, cfg.num_heads, cfg.mlp_ratio, p) for p in dpr)
        self.norm = _layer_norm(d) if layout == "pretrain" else None
        self.fc_norm = _layer_norm(d) if layout == "finetune" else None
        self.head = nn.Linear(d, cfg.num_classes) if layout == "finetune" and cfg.num_classes > 0 else None
        self.register_buffer("pos_embed", sincos_table(cfg.num_tokens, d), persistent=False)
        self.register_buffer("region_index", _region_index(cfg), persistent=False)

    @property
    def num_features(self) -> int:
        return self.cfg.embed_dim

    # -- token plumbing --
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``[B, 3, T, H, W]`` -> position-encoded tokens ``[B, N, C]`` in raster order."""
        tokens = self.patch_embed(x)
        return tokens + self.pos_embed.to(tokens.dtype)

    def to_regions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raster ``[B, N, C]`` -> ``[B, R, S, C]``: region ``(it * nh + ih) * nw + iw`` for region
        coordinates (it, ih, iw), tokens in (t, h, w) order inside it (the official ``rearrange``)."""
        b, _, c = tokens.shape
        (nt, nh, nw), (t, h, w) = self.cfg.region_grid, self.cfg.region_size
        x = tokens.view(b, nt, t, nh, h, nw, w, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
        return x.reshape(b, nt * nh * nw, t * h * w, c)

    def run_blocks(self, regions: torch.Tensor, representatives_only: bool = False) -> torch.Tensor:
        """``[B, R, S, C]`` local tokens -> ``[B, R, 1 + S, C]`` after every block; index 0 of each
        region is its representative token. ``representatives_only``: only those, ``[B, R, C]``,
        with the last block computing nothing else (:meth:`LGBlock.forward_representatives`)."""
        b, r, _, c = regions.shape
        rep = self.lg_region_tokens.to(regions.dtype).view(1, r, 1, c).expand(b, r, 1, c)
        x = torch.cat((rep, regions), dim=2)
        last = len(self.blocks) - 1 if representatives_only else len(self.blocks)
        for blk in self.blocks[:last]:
            x = blk(x)
        if representatives_only:
            return self.blocks[-1].forward_representatives(x) if len(self.blocks) else x[:, :, 0]
        return x

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Clips -> the last block's tokens ``[B, R, 1 + S, C]`` (before any norm)."""
        return self.run_blocks(self.to_regions(self.embed(x)))

    def visible_order(self, mask: torch.Tensor) -> torch.Tensor:
        """Indices ``[B, N_vis]`` of the visible tokens (``mask [B, N]``, True = masked) in the
        order the encoder groups them into regions: group ``g`` is ``order[:, g*K:(g+1)*K]``.

        The official encoder cuts the raster-ordered visible tokens of each region-time slot
        into ``nh * nw`` runs of ``int(rh * rw * N_vis / N)`` (``'b (nt t nhw hw) c -> b (nt nhw)
        (t hw) c'``). For its masks (part-window masks whose windows span the width, the region
        width being the grid width) every run is exactly the visible part of one region, and
        that grouping is used. Where the runs would mix regions:

        * nothing masked: the official runs are kept (with regions narrower than the grid the
          official pretraining encoder groups raster runs, not spatial regions; only then does
          it differ from the fine-tune encoder);
        * a partial mask leaving the same number visible in every region (windows narrower than
          the grid, which the official mask generator refuses): grouped by spatial region;
        * otherwise (e.g. plain tube masking): raises, where the official code would silently
          mix regions.
        """
        b, n = mask.shape
        if n != self.cfg.num_tokens:
            raise ValueError(f"mask has {n} tokens per clip, the model has {self.cfg.num_tokens}")
        visible = ~mask
        counts = visible.sum(1)
        n_vis = int(counts[0])
        if n_vis == 0 or not bool((counts == n_vis).all()):
            raise ValueError(f"every clip needs the same, non-zero number of visible tokens (got {counts.tolist()})")
        (nt, nh, nw), (rt, rh, rw) = self.cfg.region_grid, self.cfg.region_size
        regions = self.cfg.num_regions
        run = int(rh * rw * (n_vis / n))                                 # the official ``hw``
        if nt * rt * nh * nw * run == n_vis:
            raster = visible.nonzero()[:, 1].view(b, nt, rt, nh * nw, run)
            order = raster.transpose(2, 3).reshape(b, n_vis)
            in_region = self.region_index[order].view(b, regions, -1) == torch.arange(
                regions, device=mask.device).view(1, regions, 1)
            if n_vis == n or bool(in_region.all()):
                return order
        per_region = torch.zeros(b, regions, dtype=torch.long, device=mask.device)
        per_region.index_add_(1, self.region_index, visible.long())
        if not bool((per_region == per_region[0, 0]).all()):
            raise ValueError("LGI-Former needs the same number of visible tokens in every region of every "
                             f"clip (got {per_region.tolist()}); use part-window masking "
                             "(feature_extractors.visual.lgi_former.TubeWindowMaskGenerator)")
        key = self.region_index * n + torch.arange(n, device=mask.device)       # region-major
        key = key.unsqueeze(0) + mask.long() * (regions * n)                     # masked last
        return key.argsort(dim=1)[:, :n_vis]

    def forward_visible(self, x: torch.Tensor, mask: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        """The pretraining encoder: clips ``[B, 3, T, H, W]`` and ``mask [B, N]`` (True = masked)
        -> the visible tokens after the blocks (and ``norm`` in the pretrain layout),
        ``[B, N_vis, C]``, grouped by region as :meth:`visible_order` says (``order``: its
        result, when already known)."""
        tokens = self.embed(x)
        b, _, c = tokens.shape
        order = self.visible_order(mask) if order is None else order
        vis = torch.gather(tokens, 1, order.unsqueeze(-1).expand(-1, -1, c))
        out = self.run_blocks(vis.view(b, self.cfg.num_regions, -1, c))[:, :, 1:].reshape(b, -1, c)
        return self.norm(out) if self.norm is not None else out

    # -- features and head --
    def pool_tokens(self, tokens: torch.Tensor, pool: str | None = None) -> torch.Tensor:
        """``[B, R, 1 + S, C]`` -> the tokens ``pool`` averages: ``region`` ``[B, R, C]``, ``org``
        ``[B, R*S, C]`` (region-major), ``all`` ``[B, R*(1+S), C]``."""
        pool = pool or self.cfg.token_pool
        if pool == "region":
            return tokens[:, :, 0]
        if pool == "org":
            return tokens[:, :, 1:].flatten(1, 2)
        if pool == "all":
            return tokens.flatten(1, 2)
        raise ValueError(f"token pool must be one of {TOKEN_POOLS}, got {pool!r}")

    def forward_features(self, x: torch.Tensor, pool: str | None = None) -> torch.Tensor:
        """Clips -> ``[B, C]``: ``fc_norm`` of the mean of the pooled tokens (the released
        feature for ``pool='region'``, what the official ``--save_feature`` writes)."""
        if self.fc_norm is None:
            raise RuntimeError("a pretrain-layout encoder has no fc_norm; use forward_visible")
        if (pool or self.cfg.token_pool) == "region":          # the last block's local tokens are unused
            return self.fc_norm(self.run_blocks(self.to_regions(self.embed(x)), representatives_only=True).mean(1))
        return self.fc_norm(self.pool_tokens(self.forward_tokens(x), pool).mean(1))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("this LGI-Former has no classification head (num_classes=0)")
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clips -> logits ``[B, num_classes]`` (or features ``[B, C]`` without a head)."""
        feats = self.forward_features(x)
        return feats if self.head is None else self.head(feats)


def _region_index(cfg: LGIFormerConfig) -> torch.Tensor:
    """For each raster token, the index of its region (``[N]`` long)."""
    gt, gh, gw = cfg.token_grid
    rt, rh, rw = cfg.region_size
    _, nh, nw = cfg.region_grid
    t, h, w = np.meshgrid(np.arange(gt), np.arange(gh), np.arange(gw), indexing="ij")
    region = (t // rt) * (nh * nw) + (h // rh) * nw + (w // rw)
    return torch.from_numpy(region.reshape(-1).astype(np.int64))



# --- weight init (training from scratch, as the official constructors do) ----------------------

def init_finetune_weights(model: LGIFormer, init_scale: float = 0.001) -> None:
    """The official fine-tune init: truncated normal (std 0.02) for Linear weights and the region
    tokens, zero biases, LayerNorm (1, 0), default Conv3d init, head scaled by ``init_scale``."""
    nn.init.trunc_normal_(model.lg_region_tokens, std=0.02, a=-2.0, b=2.0)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if model.head is not None:
        with torch.no_grad():
            model.head.weight.mul_(init_scale)
            model.head.bias.mul_(init_scale)
