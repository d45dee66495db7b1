"""The TPSBT encoder (Temporal Pyramid and Spatial Bottleneck Transformer) of SVFAP and its blocks.

Official key names throughout (``patch_embed.proj``, ``blocks.<i>.{norm1,attn,norm2,mlp}`` in the
first stage, ``blocks.<i>.{cross_attn,cross_norm1,cross_norm2,norm1,attn,norm2,mlp}`` after it,
``temporal_downsamples.<s>``, ``spatial_downsamples.<s>.{norm,mlp}``, ``fc_norm``, ``head``), so
an official checkpoint loads as it is (:mod:`.checkpoints`). The attention and MLP modules are
LGI-Former's (:mod:`feature_extractors.visual.lgi_former.model`): the same projections, q and v
biases and no k bias, scale d^-0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from feature_extractors.visual.lgi_former.model import (FusedAttention, GeneralAttention, Mlp, PatchEmbed, drop_path,
                                                       sincos_table)

BOTTLENECK_HIDDEN = 128
"""The hidden width of every spatial bottleneck's MLP (fixed in the official code)."""


@dataclass(frozen=True)
class TPSBTConfig:
    """Sizes of a TPSBT encoder; the defaults are the released SVFAP base (``svfap_base_patch16_160``,
    stages 12 + 6 + 3 blocks, 8 bottleneck tokens, temporal kernel 2)."""

    img_size: int = 160
    patch_size: int = 16
    num_frames: int = 16
    tubelet_size: int = 2
    in_chans: int = 3
    embed_dim: int = 512
    num_heads: int = 8
    mlp_ratio: float = 4.0
    stage_depths: tuple[int, ...] = (12, 6, 3)
    num_bottleneck_tokens: tuple[int, ...] = (8,)   # one for every later stage, or one each
    temporal_kernel_size: int = 2
    num_classes: int = 0                            # 0: no head (a feature extractor)
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_depths", tuple(int(d) for d in self.stage_depths))
        tokens = tuple(int(n) for n in self.num_bottleneck_tokens)
        if len(tokens) == 1:
            tokens = tokens * (len(self.stage_depths) - 1)
        object.__setattr__(self, "num_bottleneck_tokens", tokens)
        if self.img_size % self.patch_size or self.num_frames % self.tubelet_size:
            raise ValueError(f"TPSBT: {self.num_frames}x{self.img_size}^2 frames do not split into "
                             f"{self.tubelet_size}x{self.patch_size}^2 tubelets")
        if len(tokens) != len(self.stage_depths) - 1:
            raise ValueError(f"TPSBT: {len(self.stage_depths)} stages need {len(self.stage_depths) - 1} "
                             f"bottleneck sizes, got {tokens}")
        if any(d < 1 for d in self.stage_depths):
            raise ValueError(f"TPSBT: every stage needs a block, got {self.stage_depths}")
        t = self.temporal_len
        for _ in self.stage_depths[1:]:
            if t % self.temporal_kernel_size:
                raise ValueError(f"TPSBT: {self.temporal_len} time steps do not halve through "
                                 f"{len(self.stage_depths)} stages with kernel {self.temporal_kernel_size}")
            t //= self.temporal_kernel_size
        if self.embed_dim % self.num_heads:
            raise ValueError(f"TPSBT: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def temporal_len(self) -> int:
        """Time steps of the token grid (8 as released)."""
        return self.num_frames // self.tubelet_size

    @property
    def spatial_tokens(self) -> int:
        """Tokens per time step (10 x 10 = 100 as released)."""
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        return self.temporal_len * self.spatial_tokens

    @property
    def output_steps(self) -> int:
        """Time steps left after the temporal pyramid (2 as released: 8 -> 4 -> 2)."""
        return self.temporal_len // self.temporal_kernel_size ** (len(self.stage_depths) - 1)

    @property
    def depth(self) -> int:
        return sum(self.stage_depths)


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


class Block(nn.Module):
    """A first-stage ViT block: self-attention with the fused ``qkv`` projection, then the MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _layer_norm(dim)
        self.attn = FusedAttention(dim, num_heads)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class CSBlock(nn.Module):
    """A cross-self block: ``x`` cross-attends to ``context`` (both normalised; the context may
    have another width, ``context_dim``), then self-attention, then the MLP. HiCMAE's fusion
    encoder is made of them too."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0,
                 context_dim: int | None = None) -> None:
        super().__init__()
        self.cross_attn = GeneralAttention(dim, num_heads, context_dim=context_dim)
        self.cross_norm1 = _layer_norm(dim)
        self.cross_norm2 = _layer_norm(context_dim or dim)
        self.norm1 = _layer_norm(dim)
        self.attn = FusedAttention(dim, num_heads)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        p, train = self.drop_path, self.training
        x = x + drop_path(self.cross_attn(self.cross_norm1(x), context=self.cross_norm2(context)), p, train)
        x = x + drop_path(self.attn(self.norm1(x)), p, train)
        return x + drop_path(self.mlp(self.norm2(x)), p, train)


class BottleneckMlp(nn.Module):
    """``fc1 -> GELU -> fc2`` with its own output width (the bottleneck's token scores)."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SpatialBottleneck(nn.Module):
    """``[B, t * n, C]`` -> ``[B, t * k, C]``: per time step, ``k`` weighted means of its ``n``
    spatial tokens, each token's ``k`` weights from an MLP over it, softmaxed over the tokens of
    the step (the official ``SpatialAttention``)."""

    def __init__(self, dim: int, num_tokens: int, steps: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.steps = steps
        self.norm = _layer_norm(dim)
        self.mlp = BottleneckMlp(dim, BOTTLENECK_HIDDEN, num_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        t = self.steps
        scores = self.mlp(self.norm(x)).view(b * t, n // t, self.num_tokens)      # [(B t), n1, k]
        weights = torch.softmax(scores.transpose(1, 2), dim=-1)                   # [(B t), k, n1]
        return torch.bmm(weights, x.reshape(b * t, n // t, c)).view(b, t * self.num_tokens, c)


class TPSBT(nn.Module):
    """The SVFAP encoder (fine-tune layout, mean pooling): tubelet embedding plus a fixed sin-cos
    table; stage 1 is plain ViT blocks over all tokens; every later stage halves time with a
    ``Conv1d`` (kernel = stride = ``temporal_kernel_size``) over each spatial position, squeezes
    each time step's tokens into ``k`` bottleneck tokens, runs ``depth - 1`` cross-self blocks on
    the bottleneck tokens (context: the tokens before the squeeze), and a last cross-self block
    that updates the full tokens from the bottleneck ones (the spatial resolution comes back).
    The feature is ``fc_norm`` of the mean of the last tokens."""

    def __init__(self, cfg: TPSBTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.register_buffer("pos_embed", sincos_table(cfg.num_tokens, cfg.embed_dim), persistent=False)
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        blocks: list[nn.Module] = [Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, rates[i])
                                   for i in range(cfg.stage_depths[0])]
        self.temporal_downsamples = nn.ModuleList()
        self.spatial_downsamples = nn.ModuleList()
        steps = cfg.temporal_len
        for stage, depth in enumerate(cfg.stage_depths[1:], start=1):
            k = cfg.temporal_kernel_size
            steps //= k
            self.temporal_downsamples.append(nn.Conv1d(cfg.embed_dim, cfg.embed_dim, kernel_size=k, stride=k))
            self.spatial_downsamples.append(SpatialBottleneck(cfg.embed_dim, cfg.num_bottleneck_tokens[stage - 1], steps))
            blocks += [CSBlock(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, rates[len(blocks)]) for _ in range(depth)]
        self.blocks = nn.ModuleList(blocks)
        self.fc_norm = _layer_norm(cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes) if cfg.num_classes > 0 else None

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``[B, 3, T, H, W]`` (normalised) -> the last tokens ``[B, t_out * n, C]``, time-major
        (``t_out = cfg.output_steps`` steps of ``n = cfg.spatial_tokens`` tokens)."""
        cfg = self.cfg
        x = self.patch_embed(x)
        b, _, c = x.shape
        x = x + self.pos_embed.to(x.dtype)
        first = cfg.stage_depths[0]
        for blk in self.blocks[:first]:
            x = blk(x)
        index, steps, n = first, cfg.temporal_len, cfg.spatial_tokens
        for stage, depth in enumerate(cfg.stage_depths[1:]):
            # temporal pyramid: a Conv1d over time at every spatial position
            seq = x.view(b, steps, n, c).permute(0, 2, 3, 1).reshape(b * n, c, steps)
            seq = self.temporal_downsamples[stage](seq)
            steps = seq.shape[-1]
            x = seq.view(b, n, c, steps).permute(0, 3, 1, 2).reshape(b, steps * n, c)
            # spatial bottleneck transformer
            full = x
            x = self.spatial_downsamples[stage](full)
            for blk in self.blocks[index:index + depth - 1]:
                x = blk(x, context=full)
            x = self.blocks[index + depth - 1](full, context=x)
            index += depth
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C]``: ``fc_norm`` of the mean of the last tokens (the official feature)."""
        return self.fc_norm(self.forward_tokens(x).mean(1))

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, t_out, C]``: ``fc_norm`` of each remaining time step's mean token (mer's
        frame-level feature; the official ``keep_temporal_dim`` path cannot run after the pyramid)."""
        tokens = self.forward_tokens(x)
        return self.fc_norm(tokens.view(len(tokens), self.cfg.output_steps, -1, tokens.shape[-1]).mean(2))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise ValueError("this TPSBT has no classification head (num_classes=0)")
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(x)
        return self.head(feats) if self.head is not None else feats


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def init_weights(model: TPSBT, init_scale: float = 0.001) -> None:
    """The official fine-tune init: truncated normal (std 0.02) linear weights, zero biases, unit
    LayerNorms, the head scaled by ``init_scale``; convolutions keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)   # timm's bounds: absolute
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if model.head is not None:
        with torch.no_grad():
            model.head.weight.mul_(init_scale)
            model.head.bias.mul_(init_scale)
