"""LGI-Former, the encoder of MAE-DFER (Sun et al., ACM MM 2023), and its MAE pretraining model.

An independent implementation that loads the official checkpoints (``sunlicai/MAE-DFER``) and
matches the official code to within float rounding (the golden tests compare against outputs of
the official code in fp32 and fp64). The released configuration (every size can be changed, see
"Sizes" below):

* input ``[B, 3, 16, 160, 160]`` (ImageNet mean/std); a ``Conv3d`` tubelet embedding 2x16x16
  -> 8x10x10 = 800 tokens in raster (t, h, w) order, plus a fixed interleaved sin-cos table
  (computed in float64, rounded to float32, in no ``state_dict``); no cls token;
* the tokens are cut into regions of (t, h, w) = (2, 5, 10) tokens -> 8 regions of 100, region
  ``n = (nt * nh_regions + nh) * nw_regions + nw`` (``nt * 2 + nh`` as released); a learned
  representative token per region is put in front of it;
* each ``LGBlock``: (S1) self-attention inside every region, its representative token included;
  (S2) self-attention among the 8 representative tokens; (S3) every local token cross-attends
  to all 8 updated representative tokens (the context normalised by ``third_attn_norm1``); then
  the MLP on every token. Attention has q and v biases and no k bias (``kv.weight`` rows
  ``0:C`` are K, ``C:2C`` are V); LayerNorm eps 1e-6; exact GELU; no layer scale;
* the released feature: ``fc_norm(mean of the 8 representative tokens of the last block)``
  (``token_pool='region'``); ``'org'`` is the mean of the 800 local tokens, ``'all'`` of all 808.

The pretraining model (:class:`MAEDFERPretrain`) runs the encoder on the visible tokens of a
part-window tube mask (the same number visible in every region), keeps the local tokens, applies
``encoder.norm``, and decodes with a 4-block VideoMAE decoder that predicts the masked tubelets
(appearance + frame-difference targets, see :mod:`mer.pretraining.mae_dfer`). It keeps one quirk
of the official code by default: the visible tokens leave the encoder grouped by region but
are given decoder position embeddings in raster order (``decoder_pos_order='official'``); this
is needed to reproduce the released model's pretraining loss, and ``'fixed'`` gives every
visible token its own position instead.

Public API (what a caller needs)::

    model, report = load_mae_dfer(path)              # -> (LGIFormer | MAEDFERPretrain, LoadReport)
    model, report = load_mae_dfer(path, layout="finetune" | "pretrain" | "pretrain_encoder",
                                  num_heads=..., img_size=..., num_frames=..., region_size=...)
    model = create_model("lgi_former_base" | "lgi_former_tiny" | "mae_dfer_pretrain_base" | ...,
                         embed_dim=..., depth=..., ...)                 # any LGIFormerConfig field
    cfg, decoder_cfg, heads_source = infer_config(state_dict, args)
    save_mae_dfer(model, path, epoch=...)      # the official layout, args from checkpoint_args(model)
    kept, missing, unused = checkpoint_filter_fn(state_dict, model)

    LGIFormer.forward_features(x, pool=None)   # [B, 3, T, H, W] -> [B, C]  (pool: region | org | all)
    LGIFormer.forward(x)                       # -> logits [B, num_classes] (features without a head)
    LGIFormer.forward_tokens(x)                # -> last block's tokens [B, R, 1 + S, C] (0: representative)
    LGIFormer.forward_visible(x, mask)         # the pretraining encoder: [B, N_vis, C] (+ encoder.norm)
    MAEDFERPretrain.forward(x, mask)           # -> predictions of the masked tokens [B, N_mask, 3*2*16*16]
    MAEDFERPretrain.encoder                    # an LGIFormer of the pretrain layout

    from mer.pretraining.mae_dfer import TubeWindowMaskGenerator, reconstruction_targets, reconstruction_loss
    mask = TubeWindowMaskGenerator(cfg.token_grid, 0.9, cfg.region_size[1:])(np.random.RandomState(seed))
    target = reconstruction_targets(x, mask)   # [B, N_mask, 3*2*16*16]; loss = reconstruction_loss(pred, target)

Masks are ``[B, N]`` bool in raster token order, True = masked, as the official generator's.

Sizes. Embed dim, depth, heads, MLP ratio, image size, frames, tubelet, patch, region size,
classes and the decoder's dim/depth/heads are :class:`LGIFormerConfig` / :class:`DecoderConfig`
fields; :func:`infer_config` reads them from a checkpoint: the shapes give embed dim, channels,
tubelet, patch, depth, MLP ratio, classes, decoder dim/depth (its outputs must be
``3 * tubelet * patch^2``, as the official decoder asserts, and its MLP uses the encoder's ratio,
as the official model builds it); the official ``args`` give image size (``input_size``), frames
(``num_frames * num_segments``), region size (``lg_region_size``) and head counts (no shape holds
them); keyword arguments of :func:`load_mae_dfer` override both. For sizes other than the
released one these follow the official code where it is defined, and are checked against a plain
transcription of it (``bench/maedfer_reference.py``) in the tests. Where it is not:

* regions narrower than the token grid (e.g. (2, 5, 5) on 10 x 10): the fine-tune encoder cuts
  spatial regions, as the official one. The official *pretraining* encoder instead cuts the
  raster-ordered visible tokens of each time slot into equal runs (``'b (nt t nhw hw) c -> b (nt
  nhw) (t hw) c'``), which are spatial regions only when regions span the grid's width (its mask
  generator asserts that windows do). mer follows it exactly wherever those runs are regions, and
  with nothing masked (so the all-visible pretraining encoder differs from the fine-tune one for
  narrower regions, as in the official code); for a partial mask with the same number visible in
  every region whose runs are not regions (windows narrower than the grid, which the official
  generator refuses) it groups by spatial region; a mask leaving regions uneven (plain tube
  masking) raises where the official code would silently mix regions
  (:meth:`LGIFormer.visible_order`);
* the mask windows follow the region's (h, w), as the official scripts pass
  ``--part_win_size`` equal to ``--lg_region_size``; mer's generator also takes windows that do
  not span the width or have an odd width (the official one asserts);
* a checkpoint without ``args`` gets the released image size, frames and region size unless
  they are passed, and 64-dim heads (said in the report's ``heads_source``).

Speed. On CPUs, float32 inference (``torch.no_grad``/``torch.inference_mode``, no autocast) runs
each block's matrix products through oneDNN with weights packed once (q, k and v of a
self-attention as one product; bias, exact GELU and residual adds fused), attention through
``F.scaled_dot_product_attention``, no ``.clone()``/slice copies, and two exact re-associations
that cut the multiply-adds of the released feature from 49.65 G to 41.5 G a clip: S3's q and
output projections folded into its 8 keys and values (:meth:`LGBlock._cross_attend_folded`), and,
for ``token_pool='region'``, the last block computing only the representative tokens
(:meth:`LGBlock.forward_representatives`, also on the autograd path). Training, float64 and CUDA
take the plain autograd path (S1's q/k/v fused too). All give the official outputs to float
rounding; ``python -m bench.maedfer`` times them against the plain transcription.

Differences from the official code that change no number: attention goes through
``F.scaled_dot_product_attention`` (the same maths in another order: about 1e-15 in float64);
the blocks are written without in-place slice assignment, so backward works on any torch
(the official code needed ``.clone()`` patches for torch 2).

Checkpoints: ``{'model': state_dict, 'optimizer', 'epoch', 'scaler', 'args': Namespace}`` as the
official ``utils.save_model`` writes them (and as mer's pretraining writes them, so the official
code loads ours); see :func:`load_mae_dfer` and :func:`checkpoint_filter_fn`. Variants are built
by name with :func:`create_model`.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mer.registry import Registry

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOKEN_POOLS = ("region", "org", "all")
DECODER_POS_ORDERS = ("official", "fixed")


# --- configuration ----------------------------------------------------------------------------

@dataclass(frozen=True)
class LGIFormerConfig:
    """Sizes of an LGI-Former; the defaults are the released MAE-DFER encoder (84.87 M params)."""

    img_size: int = 160
    patch_size: int = 16
    num_frames: int = 16
    tubelet_size: int = 2
    in_chans: int = 3
    embed_dim: int = 512
    depth: int = 16
    num_heads: int = 8
    mlp_ratio: float = 4.0
    region_size: tuple[int, int, int] = (2, 5, 10)   # (t, h, w) in tokens
    num_classes: int = 0                             # 0: no head (a feature extractor)
    drop_path_rate: float = 0.0                      # 0.1 when fine-tuning, as released
    token_pool: str = "region"                       # 'region' | 'org' | 'all' (lg_classify_token_type)

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """Tokens along (t, h, w): (8, 10, 10) for the released model."""
        side = self.img_size // self.patch_size
        return (self.num_frames // self.tubelet_size, side, side)

    @property
    def region_grid(self) -> tuple[int, int, int]:
        """Regions along (t, h, w): (4, 2, 1) for the released model."""
        return tuple(g // r for g, r in zip(self.token_grid, self.region_size))  # type: ignore[return-value]

    @property
    def num_tokens(self) -> int:
        return math.prod(self.token_grid)

    @property
    def num_regions(self) -> int:
        return math.prod(self.region_grid)

    def __post_init__(self) -> None:
        object.__setattr__(self, "region_size", tuple(int(v) for v in self.region_size))
        if self.img_size % self.patch_size or self.num_frames % self.tubelet_size:
            raise ValueError(f"LGI-Former: {self.num_frames}x{self.img_size}^2 frames do not split into "
                             f"{self.tubelet_size}x{self.patch_size}^2 tubelets")
        if len(self.region_size) != 3 or any(g % r for g, r in zip(self.token_grid, self.region_size)):
            raise ValueError(f"LGI-Former: region size {self.region_size} does not tile the token grid "
                             f"{self.token_grid}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"LGI-Former: embed_dim {self.embed_dim} is not divisible by "
                             f"num_heads {self.num_heads}")
        if self.token_pool not in TOKEN_POOLS:
            raise ValueError(f"LGI-Former: token_pool must be one of {TOKEN_POOLS}, got {self.token_pool!r}")


@dataclass(frozen=True)
class DecoderConfig:
    """The pretraining decoder; the defaults are the released one (384 dim, 4 blocks, 6 heads)."""

    embed_dim: int = 384
    depth: int = 4
    num_heads: int = 6
    decoder_pos_order: str = "official"   # 'official' (the released quirk) | 'fixed'

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"decoder embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.decoder_pos_order not in DECODER_POS_ORDERS:
            raise ValueError(f"decoder_pos_order must be one of {DECODER_POS_ORDERS}, "
                             f"got {self.decoder_pos_order!r}")


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


# --- CPU inference through oneDNN ---------------------------------------------------------------
# On CPUs PyTorch's float32 ``F.linear`` is MKL's sgemm after a copy of the bias into the output,
# and GELU and the residual add are further passes over the activations. oneDNN's matmul on
# weights packed once into its blocked layout adds the bias, the exact GELU and the residual in
# the same pass; its products run at the CPU's peak (about 50 GMAC/s a core here, as MKL's with
# one thread) and hold up better than MKL's with two threads on a busy machine. Same float32
# products, differences are rounding (about 1e-6). Used only where it cannot change anything else:
# CPU, float32, no autograd (``torch.no_grad``/``torch.inference_mode``), no autocast, no drop path.
# Packed copies live in a side table keyed by the block (never in the module or its state_dict)
# and are rebuilt when a parameter changes (its storage or version counter), e.g. after
# ``load_state_dict`` or an optimiser step; they double the blocks' weight memory.

_ONEDNN = (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
           and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))
_PACKED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, Any]]]" = weakref.WeakKeyDictionary()


def _onednn_applies(x: torch.Tensor) -> bool:
    return (_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu"))


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)


def _dnn_linear(x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor | None], act: str = "none") -> torch.Tensor:
    """``act(x @ W.T + b)`` with a packed weight; ``act`` 'none' or 'gelu' (exact, erf)."""
    weight, bias = packed
    if act == "gelu":
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _dnn_linear_add(x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor | None],
                    residual: torch.Tensor) -> torch.Tensor:
    """``residual + (x @ W.T + b)`` in one pass (``residual`` may be a strided view)."""
    weight, bias = packed
    return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")


def _packed_weights(block: "LGBlock") -> dict[str, Any]:
    """The block's weights prepared for CPU inference, built on first use and after any parameter
    change: oneDNN-packed ``(weight, bias)`` pairs for :func:`_dnn_linear` (a self-attention's q
    and kv stacked into one matrix with bias ``[q_bias, 0, v_bias]``), and S3's q and output
    projections split by head for :meth:`LGBlock._cross_attend_folded`."""
    key = tuple((p.data_ptr(), p._version) for p in block.parameters())
    hit = _PACKED.get(block)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.no_grad():
        packed: dict[str, Any] = {}
        for name in ("first", "second"):
            attn = getattr(block, f"{name}_attn")
            packed[f"{name}_qkv"] = (_pack(torch.cat((attn.q.weight, attn.kv.weight))), attn.qkv_bias().detach())
            packed[f"{name}_proj"] = (_pack(attn.proj.weight), attn.proj.bias.detach())
        first, third = block.first_attn, block.third_attn
        packed["first_kv"] = (_pack(first.kv.weight), first.kv_bias().detach())
        packed["third_kv"] = (_pack(third.kv.weight), third.kv_bias().detach())
        heads = third.num_heads
        dim = third.q.weight.shape[0]
        scale = (dim // heads) ** -0.5
        packed["third_q_heads"] = (third.q.weight * scale).view(heads, dim // heads, dim).contiguous()   # [H, d, C]
        packed["third_qb_heads"] = (third.q_bias * scale).view(heads, dim // heads, 1).contiguous()     # [H, d, 1]
        packed["third_proj_heads"] = third.proj.weight.view(dim, heads, -1).permute(1, 2, 0).contiguous()  # [H, d, C]
        packed["third_proj_bias_share"] = (third.proj.bias / heads).detach()
        packed["fc1"] = (_pack(block.mlp.fc1.weight), block.mlp.fc1.bias.detach())
        packed["fc2"] = (_pack(block.mlp.fc2.weight), block.mlp.fc2.bias.detach())
    _PACKED[block] = (key, packed)
    return packed


class GeneralAttention(nn.Module):
    """Self- or cross-attention with separate ``q`` and ``kv`` projections (official key names):
    q gets ``q_bias``, v gets ``v_bias``, k has no bias. Self-attention runs q, k and v as one
    matrix product (the weights stacked ``[q; kv]``, bias ``[q_bias, 0, v_bias]``)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
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
    """``[B, C, T, H, W]`` -> ``[B, N, D]`` tokens in raster (t, h, w) order."""

    def __init__(self, cfg: LGIFormerConfig) -> None:
        super().__init__()
        self.expected = (cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)
        kernel = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_chans, cfg.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.expected:
            c, t, h, w = self.expected
            raise ValueError(f"LGI-Former expects clips [B, {c}, {t}, {h}, {w}], got {list(x.shape)}")
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
                             "(mer.pretraining.mae_dfer.TubeWindowMaskGenerator)")
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


# --- the pretraining model --------------------------------------------------------------------

class Decoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, num_outputs: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, cfg.num_heads, mlp_ratio) for _ in range(cfg.depth))
        self.norm = _layer_norm(cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, num_outputs)

    def forward(self, x: torch.Tensor, num_last: int) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, -num_last:]))


class MAEDFERPretrain(nn.Module):
    """Encoder + decoder of MAE-DFER pretraining (official ``PretrainVisionTransformer`` keys:
    ``mask_token``, ``encoder.*``, ``decoder.*``, ``encoder_to_decoder.weight``)."""

    def __init__(self, cfg: LGIFormerConfig = LGIFormerConfig(), decoder: DecoderConfig = DecoderConfig()) -> None:
        super().__init__()
        self.cfg, self.decoder_cfg = cfg, decoder
        self.num_outputs = cfg.in_chans * cfg.tubelet_size * cfg.patch_size ** 2
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder.embed_dim))
        self.encoder = LGIFormer(dataclasses.replace(cfg, num_classes=0), layout="pretrain")
        self.decoder = Decoder(decoder, self.num_outputs, cfg.mlp_ratio)
        self.encoder_to_decoder = nn.Linear(cfg.embed_dim, decoder.embed_dim, bias=False)
        self.register_buffer("decoder_pos_embed", sincos_table(cfg.num_tokens, decoder.embed_dim),
                             persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Clips ``[B, 3, T, H, W]`` and ``mask [B, N]`` (True = masked) -> predictions for the
        masked tokens ``[B, N_mask, 3 * tubelet * patch^2]`` in raster order."""
        region_major = self.encoder.visible_order(mask)
        vis = self.encoder_to_decoder(self.encoder.forward_visible(x, mask, region_major))
        b, n_vis, c = vis.shape
        pos = self.decoder_pos_embed.to(vis.dtype).expand(b, -1, -1)
        if self.decoder_cfg.decoder_pos_order == "official":
            vis_order = (~mask).nonzero()[:, 1].view(b, n_vis)                   # raster order
        else:
            vis_order = region_major
        masked_order = mask.nonzero()[:, 1].view(b, -1)
        pos_vis = torch.gather(pos, 1, vis_order.unsqueeze(-1).expand(-1, -1, c))
        pos_mask = torch.gather(pos, 1, masked_order.unsqueeze(-1).expand(-1, -1, c))
        full = torch.cat((vis + pos_vis, self.mask_token.to(vis.dtype) + pos_mask), dim=1)
        return self.decoder(full, masked_order.shape[1])


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


def init_pretrain_weights(model: MAEDFERPretrain) -> None:
    """The official pretraining init: xavier-uniform Linear weights inside the encoder and decoder,
    zero biases, LayerNorm (1, 0); region tokens and mask token truncated normal std 0.02 cut at
    +-1 std (the pretraining file's own ``trunc_normal_``); ``encoder_to_decoder`` and the
    patch embedding keep PyTorch's default init (the official code never re-inits them)."""
    for part in (model.encoder, model.decoder):
        for m in part.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    nn.init.trunc_normal_(model.encoder.lg_region_tokens, std=0.02, a=-0.02, b=0.02)
    nn.init.trunc_normal_(model.mask_token, std=0.02, a=-0.02, b=0.02)


# --- checkpoints ------------------------------------------------------------------------------

@dataclass
class LoadReport:
    """What loading a checkpoint did: its kind, the config used (and where the head count came
    from, since no state_dict holds it), and the keys it did not use or did not have."""

    path: str
    kind: str                                   # 'finetune' | 'pretrain'
    config: LGIFormerConfig
    decoder: DecoderConfig | None = None
    heads_source: str = ""
    epoch: Any = None
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)


def checkpoint_kind(state_dict: Mapping[str, Any]) -> str:
    """``'pretrain'`` for the pretraining layout (``encoder.``/``decoder.`` keys), else ``'finetune'``."""
    return "pretrain" if any(k.startswith("encoder.") for k in state_dict) else "finetune"


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module
                         ) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map a checkpoint's state_dict onto ``model``: strip ``module.``, and for a fine-tune-layout
    model also the official ``encoder.``/``backbone.`` prefixes (the ``--finetune`` rule, which
    discards ``encoder.norm``, the decoder and the mask token). Returns ``(kept, missing, unused)``:
    ``missing`` are the model's keys the checkpoint lacks, ``unused`` the checkpoint's keys the
    model has no place for. Shapes must agree: a mismatch raises, naming the key."""
    own = model.state_dict()
    strip = ("module.",) if isinstance(model, MAEDFERPretrain) else ("module.", "encoder.", "backbone.")
    kept: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in state_dict.items():
        name = key
        for prefix in strip:
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name not in own:
            unused.append(key)
            continue
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(f"checkpoint key {key!r} has shape {tuple(value.shape)}, the model's "
                             f"{name!r} has {tuple(own[name].shape)}")
        kept[name] = value
    missing = [k for k in own if k not in kept]
    return kept, missing, unused


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], Any]:
    """``(state_dict, args as a dict, epoch)`` of an official-format checkpoint, a bare state_dict,
    or a ``{'module': ...}`` wrapper; loaded with ``weights_only=True`` (see
    :func:`feature_extractors.checkpoints.load_torch_checkpoint`)."""
    from feature_extractors.checkpoints import load_torch_checkpoint, unwrap_state_dict

    ckpt = load_torch_checkpoint(path)
    sd = unwrap_state_dict(ckpt, ("model", "module"))
    args = ckpt.get("args") if isinstance(ckpt, dict) else None
    args = vars(args) if args is not None and hasattr(args, "__dict__") else dict(args or {})
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) and "model" in ckpt else None
    return sd, args, epoch


def infer_config(state_dict: Mapping[str, torch.Tensor], args: Mapping[str, Any] | None = None,
                 num_heads: int | None = None, decoder_num_heads: int | None = None, *,
                 img_size: int | None = None, num_frames: int | None = None,
                 region_size: Sequence[int] | None = None) -> tuple[LGIFormerConfig, DecoderConfig | None, str]:
    """The model config a checkpoint was saved from. Returns ``(encoder config, decoder config or
    None, where the head count came from)``.

    * from the tensor shapes: embed dim, input channels, tubelet and patch size (the patch
      embedding), depth, MLP ratio, number of classes (``head``), decoder dim and depth;
    * from the keyword arguments, else from ``args`` (the official ``argparse.Namespace``), else
      the released value: ``img_size`` (``args.input_size``, else ``window_size`` times the patch,
      else the ``..._patch16_<size>`` suffix of ``args.model``; 160), ``num_frames``
      (``args.num_frames * args.num_segments``, as the official fine-tuning builds the model; 16)
      and ``region_size`` (``args.lg_region_size``; (2, 5, 10));
    * the head counts, which no shape holds: ``num_heads`` / ``decoder_num_heads``, else ``args``
      (``num_heads``/``encoder_num_heads``, ``decoder_num_heads``), else a known model name, else
      64-dim heads (logged, and said in the returned source).

    The sizes must agree with the tensors (the number of region tokens, ``args.embed_dim``, the
    decoder head's ``3 * tubelet * patch^2`` outputs); a disagreement raises naming the value.
    Only the released LGI-Former variant (``args.attn_type`` etc.) is accepted."""
    args = dict(args or {})
    kind = checkpoint_kind(state_dict)
    pre = "encoder." if kind == "pretrain" else ""
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    try:
        conv = sd[pre + "patch_embed.proj.weight"]
        region_tokens = sd[pre + "lg_region_tokens"]
    except KeyError as err:
        raise ValueError(f"not an LGI-Former checkpoint: no {err.args[0]!r} (keys start with "
                         f"{sorted(sd)[:3]})") from None
    _check_variant(args)
    embed_dim, in_chans, tubelet, patch, patch_w = (int(v) for v in conv.shape)
    if patch != patch_w:
        raise ValueError(f"non-square patches {patch}x{patch_w} are not supported")
    for name in ("embed_dim", "encoder_embed_dim"):
        if args.get(name) and int(args[name]) != embed_dim:
            raise ValueError(f"checkpoint args.{name}={args[name]} but its patch embedding has {embed_dim} channels")
    depth = 1 + max(int(k[len(pre) + 7:].split(".")[0]) for k in sd if k.startswith(pre + "blocks."))
    hidden = next(int(v.shape[0]) for k, v in sd.items() if k.startswith(pre + "blocks.") and k.endswith(".mlp.fc1.weight"))
    mlp_ratio = _mlp_ratio(hidden, embed_dim, args.get("mlp_ratio"))
    img_size = int(img_size or _arg_img_size(args, patch) or 160)
    if num_frames is None:
        num_frames = int(args.get("num_frames", 16)) * int(args.get("num_segments", 1) or 1)
    region = tuple(int(v) for v in (region_size or args.get("lg_region_size") or (2, 5, 10)))
    head = sd.get("head.weight")
    heads, source = _heads(num_heads, args, ("num_heads", "encoder_num_heads"), 0, embed_dim)
    try:
        cfg = LGIFormerConfig(img_size=img_size, patch_size=patch, num_frames=int(num_frames),
                              tubelet_size=tubelet, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
                              num_heads=heads, mlp_ratio=mlp_ratio, region_size=region,
                              num_classes=0 if head is None else int(head.shape[0]))
    except ValueError as err:
        raise ValueError(f"{err} (sizes from the checkpoint: pass img_size, num_frames or region_size "
                         "if its args do not hold them)") from None
    if cfg.num_regions != region_tokens.shape[0]:
        raise ValueError(f"checkpoint has {region_tokens.shape[0]} region tokens; region size {region} "
                         f"on a {cfg.token_grid} token grid gives {cfg.num_regions} (pass img_size, num_frames "
                         "or region_size if its args do not hold them)")
    decoder = None
    if kind == "pretrain":
        dec_dim = int(sd["encoder_to_decoder.weight"].shape[0])
        dec_depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.blocks."))
        dec_heads, dec_source = _heads(decoder_num_heads, args, ("decoder_num_heads",), 1, dec_dim)
        outputs = int(sd["decoder.head.weight"].shape[0]) if "decoder.head.weight" in sd else None
        if outputs is not None and outputs != in_chans * tubelet * patch * patch:
            raise ValueError(f"the decoder head predicts {outputs} values per token; tubelets of "
                             f"{in_chans}x{tubelet}x{patch}x{patch} have {in_chans * tubelet * patch * patch}")
        dec_hidden = next((int(v.shape[0]) for k, v in sd.items()
                           if k.startswith("decoder.blocks.") and k.endswith(".mlp.fc1.weight")), None)
        if dec_hidden is not None and int(dec_dim * mlp_ratio) != dec_hidden:
            raise ValueError(f"the decoder's MLP has {dec_hidden} hidden units; the encoder's MLP ratio "
                             f"{mlp_ratio} gives {int(dec_dim * mlp_ratio)} (the official model shares it)")
        decoder = DecoderConfig(embed_dim=dec_dim, depth=dec_depth, num_heads=dec_heads,
                                decoder_pos_order=str(args.get("decoder_pos_order", "official")))
        source = f"{source}; decoder: {dec_source}"
    return cfg, decoder, source


def _mlp_ratio(hidden: int, dim: int, from_args: Any) -> float:
    """The ratio that rebuilds ``hidden`` as the official ``int(dim * mlp_ratio)`` does: the
    checkpoint's own when it fits, else ``hidden / dim`` (nudged up past float rounding)."""
    if from_args and int(dim * float(from_args)) == hidden:
        return float(from_args)
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _arg_img_size(args: Mapping[str, Any], patch: int) -> int | None:
    if args.get("input_size"):
        return int(args["input_size"])
    window = args.get("window_size")
    if window and len(window) == 3:
        return int(window[1]) * patch
    match = re.search(r"_patch\d+_(\d+)$", str(args.get("model", "")))
    return int(match.group(1)) if match else None


# Head counts of the official registered constructors (encoder, decoder), which the
# checkpoint's args name in ``model`` but whose head counts no state_dict shape reveals.
OFFICIAL_MODEL_HEADS = {
    "vit_base_dim512_no_depth_patch16_160": (8, None),
    "pretrain_videomae_base_dim512_no_depth_patch16_160": (8, 6),
}


def _heads(explicit: int | None, args: Mapping[str, Any], arg_names: tuple[str, ...], which: int,
           dim: int) -> tuple[int, str]:
    if explicit:
        return int(explicit), "given"
    for name in arg_names:
        if args.get(name):
            return int(args[name]), f"args.{name}"
    model_name = str(args.get("model", ""))
    known = OFFICIAL_MODEL_HEADS.get(model_name) or _variant_heads(model_name)
    if known and known[which]:
        return int(known[which]), f"model name {model_name!r}"
    heads = max(1, dim // 64)
    log.warning("LGI-Former checkpoint: no head count in its args; assuming 64-dim heads (%d heads "
                "for dim %d). Pass num_heads if that is wrong.", heads, dim)
    return heads, "assumed 64-dim heads"


def _variant_heads(name: str) -> tuple[int | None, int | None] | None:
    if name in MODELS:
        model_cfg = MODELS.get(name)
        enc, dec = model_cfg.encoder, model_cfg.decoder
        return enc.num_heads, dec.num_heads if dec else None
    return None


def _check_variant(args: Mapping[str, Any]) -> None:
    """Refuse checkpoints of LGI-Former variants this implementation does not build."""
    released = {"attn_type": "local_global", "lg_first_attn_type": "self", "lg_third_attn_type": "cross",
                "lg_attn_param_sharing_first_third": False, "lg_attn_param_sharing_all": False,
                "lg_no_second": False, "lg_no_third": False}
    odd = {k: args[k] for k, v in released.items() if k in args and args[k] != v}
    if odd:
        raise ValueError(f"this LGI-Former implements the released variant only ({released}); the "
                         f"checkpoint was trained with {odd}")


def load_mae_dfer(path: str, *, layout: str | None = None, num_heads: int | None = None,
                  decoder_num_heads: int | None = None, token_pool: str | None = None,
                  img_size: int | None = None, num_frames: int | None = None,
                  region_size: Sequence[int] | None = None, strict: bool = True) -> tuple[nn.Module, LoadReport]:
    """Build the model a checkpoint holds and load it.

    ``layout``: ``None`` builds what the file is (a fine-tuned ``LGIFormer`` or the pretraining
    ``MAEDFERPretrain``); ``'finetune'`` builds an ``LGIFormer`` from either (from a pretraining
    file by the official ``--finetune`` rule: ``encoder.`` stripped, ``encoder.norm``, decoder
    and mask token unused, ``fc_norm`` left at weight 1 / bias 0); ``'pretrain_encoder'`` builds
    the pretraining encoder (with ``encoder.norm``) from a pretraining file. With ``strict`` any
    key of the built model that the file lacks raises, except ``fc_norm`` when a pretraining file
    becomes a fine-tune model (the official route leaves it at its init). Eval mode, float32, CPU.
    Sizes come from the file (:func:`infer_config`); ``num_heads``, ``decoder_num_heads``,
    ``img_size``, ``num_frames`` and ``region_size`` override what its ``args`` say (or give what
    a bare state_dict cannot), ``token_pool`` its ``lg_classify_token_type``.
    """
    sd, args, epoch = read_checkpoint(path)
    kind = checkpoint_kind(sd)
    cfg, dec, source = infer_config(sd, args, num_heads, decoder_num_heads, img_size=img_size,
                                    num_frames=num_frames, region_size=region_size)
    if token_pool or args.get("lg_classify_token_type"):
        cfg = dataclasses.replace(cfg, token_pool=token_pool or str(args["lg_classify_token_type"]))
    layout = layout or kind
    if layout == "pretrain":
        if kind != "pretrain":
            raise ValueError(f"{path} is a fine-tuned checkpoint; it has no decoder to build a pretraining model from")
        model: nn.Module = MAEDFERPretrain(cfg, dec)
    elif layout == "pretrain_encoder":
        if kind != "pretrain":
            raise ValueError(f"{path} is a fine-tuned checkpoint; it has no encoder.norm")
        model = LGIFormer(cfg, layout="pretrain")
        sd = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    elif layout == "finetune":
        model = LGIFormer(cfg, layout="finetune")
    else:
        raise ValueError(f"layout must be None, 'finetune', 'pretrain' or 'pretrain_encoder', got {layout!r}")
    kept, missing, unused = checkpoint_filter_fn(sd, model)
    allowed = {"fc_norm.weight", "fc_norm.bias"} if kind == "pretrain" and layout == "finetune" else set()
    if strict and set(missing) - allowed:
        raise ValueError(f"{path} lacks {len(set(missing) - allowed)} keys of the model, e.g. "
                         f"{sorted(set(missing) - allowed)[:5]}")
    model.load_state_dict(kept, strict=False)
    model.eval()
    report = LoadReport(path=str(path), kind=kind, config=cfg, decoder=dec, heads_source=source,
                        epoch=epoch, missing=missing, unused=unused, args=args)
    if unused:
        log.info("%s: %d checkpoint keys unused by the %s model (e.g. %s)", path, len(unused), layout,
                 unused[:3])
    return model, report


def checkpoint_args(model: nn.Module) -> argparse.Namespace:
    """The sizes of ``model`` under the official argument names, as the ``args`` of a checkpoint:
    what the official scripts would have been given to build it (``input_size``, ``num_frames``,
    ``tubelet_size``, ``lg_region_size`` and the released attention variant, depth, classes), plus
    what no official name holds but :func:`infer_config` reads (embed dims, head counts, MLP ratio)."""
    pretrain = isinstance(model, MAEDFERPretrain)
    cfg: LGIFormerConfig = model.cfg
    args = argparse.Namespace(
        input_size=cfg.img_size, num_frames=cfg.num_frames, tubelet_size=cfg.tubelet_size,
        window_size=cfg.token_grid, patch_size=(cfg.patch_size, cfg.patch_size), mlp_ratio=cfg.mlp_ratio,
        attn_type="local_global", lg_region_size=list(cfg.region_size), lg_first_attn_type="self",
        lg_third_attn_type="cross", lg_attn_param_sharing_first_third=False, lg_attn_param_sharing_all=False,
        lg_no_second=False, lg_no_third=False)
    if pretrain:
        dec: DecoderConfig = model.decoder_cfg
        vars(args).update(encoder_depth=cfg.depth, encoder_embed_dim=cfg.embed_dim, encoder_num_heads=cfg.num_heads,
                          decoder_depth=dec.depth, decoder_embed_dim=dec.embed_dim, decoder_num_heads=dec.num_heads,
                          decoder_num_classes=model.num_outputs, decoder_pos_order=dec.decoder_pos_order)
    else:
        vars(args).update(depth=cfg.depth, embed_dim=cfg.embed_dim, num_heads=cfg.num_heads, nb_classes=cfg.num_classes,
                          lg_classify_token_type=cfg.token_pool, use_mean_pooling=True)
    return args


def save_mae_dfer(model: nn.Module, path: str, *, epoch: Any = "best", args: argparse.Namespace | None = None,
                  optimizer: torch.optim.Optimizer | None = None, scaler: Any = None) -> None:
    """Write ``model`` as the official ``utils.save_model`` does: ``{'model': state_dict (official
    keys, float32), 'optimizer', 'epoch', 'scaler', 'args'}``, ``args`` defaulting to
    :func:`checkpoint_args`, so the official code and :func:`load_mae_dfer` both read it.
    Written whole or not at all (a temp file renamed)."""
    import os
    import tempfile

    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
             for k, v in model.state_dict().items()}
    ckpt = {"model": state, "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "epoch": epoch, "scaler": scaler.state_dict() if scaler is not None else {},
            "args": args if args is not None else checkpoint_args(model)}
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ckpt-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --- builders and registered variants ---------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """A named variant: encoder sizes, and a decoder for pretraining variants."""

    encoder: LGIFormerConfig
    decoder: DecoderConfig | None = None
    description: str = ""


MODELS: Registry[ModelSpec] = Registry("LGI-Former variant")


def _register(name: str, spec: ModelSpec) -> None:
    MODELS.register(name)(spec)


_TINY = LGIFormerConfig(embed_dim=64, depth=3, num_heads=4)
_register("lgi_former_base", ModelSpec(LGIFormerConfig(), None,
          "the released MAE-DFER encoder: 512 dim, 16 LGBlocks, 8 heads, regions (2,5,10)"))
_register("mae_dfer_pretrain_base", ModelSpec(LGIFormerConfig(), DecoderConfig(),
          "the released pretraining model: lgi_former_base + a 384-dim, 4-block, 6-head decoder"))
_register("lgi_former_tiny", ModelSpec(_TINY, None, "64 dim, 3 blocks, 4 heads: tests and CPU demos"))
_register("mae_dfer_pretrain_tiny", ModelSpec(_TINY, DecoderConfig(embed_dim=48, depth=2, num_heads=4),
          "lgi_former_tiny + a 48-dim, 2-block, 4-head decoder: tests and CPU demos"))
_register("mae_dfer_pretrain_micro", ModelSpec(
    LGIFormerConfig(img_size=112, num_frames=8, region_size=(2, 7, 7), embed_dim=32, depth=2, num_heads=2),
    DecoderConfig(embed_dim=16, depth=1, num_heads=2),
    "8 frames of 112 px, regions (2,7,7), 32 dim, 2 blocks; a 16-dim decoder: fast tests of other sizes"))


def create_model(name: str, init: bool = True, **overrides: Any) -> nn.Module:
    """Build a registered variant (``MODELS.names()``): an ``LGIFormer`` or, for variants with a
    decoder, an ``MAEDFERPretrain``. ``overrides`` replace ``LGIFormerConfig`` fields (and
    ``decoder_*`` fields of the decoder, e.g. ``decoder_pos_order='fixed'``). ``init`` applies the
    official from-scratch initialisation."""
    spec = MODELS.get(name)
    dec_over = {}
    for key in [k for k in overrides if k.startswith("decoder_")]:
        dec_over[key if key == "decoder_pos_order" else key[len("decoder_"):]] = overrides.pop(key)
    known = {f.name for f in dataclasses.fields(LGIFormerConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; options: {sorted(known)} and decoder_*")
    cfg = dataclasses.replace(spec.encoder, **overrides)
    if spec.decoder is None:
        if dec_over:
            raise TypeError(f"{name} has no decoder; decoder options {sorted(dec_over)} do not apply")
        model: nn.Module = LGIFormer(cfg)
        if init:
            init_finetune_weights(model)
        return model
    model = MAEDFERPretrain(cfg, dataclasses.replace(spec.decoder, **dec_over))
    if init:
        init_pretrain_weights(model)
    return model


def count_parameters(model: nn.Module, exclude: Callable[[str], bool] | None = None) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not (exclude and exclude(n)))
