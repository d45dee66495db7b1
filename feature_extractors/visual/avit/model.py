"""HiCMAE's audio-visual encoder (the official ``AudioVisionTransformer``, models ``avit_*``).

Three encoders with official key names:

* ``encoder``: a video ViT (``patch_embed.proj`` a 2x16x16 ``Conv3d``, fixed sin-cos table,
  ``blocks.<i>``, ``norm``) whose every block's output tokens are kept and normalised by the one
  ``encoder.norm``: ``[B, N, L, C]``;
* ``encoder_audio``: the same over a log-mel spectrogram ``[B, 1, T, F]`` (256 frames x 128 bins as
  released) cut into 16x16 patches by a ``Conv2d``;
* ``encoder_fusion``: ``depth`` pairs of cross-self blocks (``blocks.<i>`` for the video tokens,
  ``blocks_audio.<i>`` for the audio ones) updated together from the last layer's tokens, each
  side attending to the other's previous tokens, then ``norm`` / ``norm_audio``.

The feature (``forward_features``) is ``fc_norm`` of the concatenation of: the video tokens' mean
per layer weighted by ``softmax(video_layer_weights)``, the same for audio, and the means of the
fused video and audio tokens: ``2 * (C_video + C_audio)`` values (2048 as released).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from feature_extractors.visual.lgi_former.model import sincos_table
from feature_extractors.visual.tpsbt.model import Block, CSBlock

PARTS = ("video", "audio", "fusion_video", "fusion_audio")
"""The four parts of the feature, in the order they are concatenated."""


@dataclass(frozen=True)
class AViTConfig:
    """Sizes of an ``AudioVisionTransformer``; defaults: the released ``avit_dim512_patch16_160_a256``
    with the fine-tuning scripts' depths (video 10, audio 10, fusion 2)."""

    img_size: int = 160
    patch_size: int = 16
    num_frames: int = 16
    tubelet_size: int = 2
    embed_dim: int = 512
    depth: int = 10
    num_heads: int = 8
    audio_size: tuple[int, int] = (256, 128)     # (time frames, mel bins)
    patch_size_audio: int = 16
    embed_dim_audio: int = 512
    depth_audio: int = 10
    num_heads_audio: int = 8
    fusion_depth: int = 2
    fusion_num_heads: int = 8
    mlp_ratio: float = 4.0
    num_classes: int = 0
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "audio_size", tuple(int(v) for v in self.audio_size))
        if self.img_size % self.patch_size or self.num_frames % self.tubelet_size:
            raise ValueError(f"HiCMAE: {self.num_frames}x{self.img_size}^2 frames do not split into "
                             f"{self.tubelet_size}x{self.patch_size}^2 tubelets")
        if any(s < self.patch_size_audio for s in self.audio_size):
            raise ValueError(f"HiCMAE: a {self.audio_size} spectrogram is smaller than one {self.patch_size_audio} patch")
        if min(self.depth, self.depth_audio, self.fusion_depth) < 1:
            raise ValueError("HiCMAE: this implementation needs all three encoders (depths >= 1)")
        for dim, heads in ((self.embed_dim, self.num_heads), (self.embed_dim_audio, self.num_heads_audio),
                           (self.embed_dim, self.fusion_num_heads), (self.embed_dim_audio, self.fusion_num_heads)):
            if dim % heads:
                raise ValueError(f"HiCMAE: width {dim} is not divisible by {heads} heads")

    @property
    def video_tokens(self) -> int:
        return (self.num_frames // self.tubelet_size) * (self.img_size // self.patch_size) ** 2

    @property
    def audio_grid(self) -> tuple[int, int]:
        """Patches along (time, frequency): (16, 8) as released (the Conv2d's output, no padding)."""
        return tuple((s - self.patch_size_audio) // self.patch_size_audio + 1 for s in self.audio_size)  # type: ignore[return-value]

    @property
    def feature_dim(self) -> int:
        return 2 * (self.embed_dim + self.embed_dim_audio)


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


class _Proj(nn.Module):
    """Holds the patch projection under the official name ``patch_embed.proj``."""

    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj


class LayerEncoder(nn.Module):
    """A ViT whose output is every block's tokens, each normalised by ``norm``: ``[B, N, L, C]``."""

    def __init__(self, proj: nn.Module, tokens: int, dim: int, depth: int, heads: int, mlp_ratio: float,
                 drop_path_rate: float) -> None:
        super().__init__()
        self.patch_embed = _Proj(proj)
        self.register_buffer("pos_embed", sincos_table(tokens, dim), persistent=False)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, rates[i]) for i in range(depth)])
        self.norm = _layer_norm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        if x.shape[1] != self.pos_embed.shape[1]:
            raise ValueError(f"HiCMAE: the input gives {x.shape[1]} tokens, the model was built for "
                             f"{self.pos_embed.shape[1]}")
        x = x + self.pos_embed.to(x.dtype)
        layers = []
        for blk in self.blocks:
            x = blk(x)
            layers.append(x)
        return self.norm(torch.stack(layers, dim=2))


class FusionEncoder(nn.Module):
    def __init__(self, cfg: AViTConfig) -> None:
        super().__init__()
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.fusion_depth).tolist()
        dv, da, h = cfg.embed_dim, cfg.embed_dim_audio, cfg.fusion_num_heads
        self.blocks = nn.ModuleList([CSBlock(dv, h, cfg.mlp_ratio, rates[i], context_dim=da)
                                     for i in range(cfg.fusion_depth)])
        self.norm = _layer_norm(dv)
        self.blocks_audio = nn.ModuleList([CSBlock(da, h, cfg.mlp_ratio, rates[i], context_dim=dv)
                                           for i in range(cfg.fusion_depth)])
        self.norm_audio = _layer_norm(da)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for blk, blk_audio in zip(self.blocks, self.blocks_audio):
            v, a = blk(v, context=a), blk_audio(a, context=v)
        return self.norm(v), self.norm_audio(a)


class AudioVisionTransformer(nn.Module):
    """HiCMAE's fine-tune model (module docstring). ``forward_parts`` gives the four parts."""

    def __init__(self, cfg: AViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.encoder = LayerEncoder(nn.Conv3d(3, cfg.embed_dim, kernel_size=k, stride=k), cfg.video_tokens,
                                    cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.drop_path_rate)
        pa = cfg.patch_size_audio
        grid = cfg.audio_grid
        self.encoder_audio = LayerEncoder(nn.Conv2d(1, cfg.embed_dim_audio, kernel_size=pa, stride=pa),
                                          grid[0] * grid[1], cfg.embed_dim_audio, cfg.depth_audio,
                                          cfg.num_heads_audio, cfg.mlp_ratio, cfg.drop_path_rate)
        self.encoder_fusion = FusionEncoder(cfg)
        self.fc_norm = _layer_norm(cfg.feature_dim)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes) if cfg.num_classes > 0 else None
        self.video_layer_weights = nn.Parameter(torch.ones(cfg.depth) / cfg.depth)
        self.audio_layer_weights = nn.Parameter(torch.ones(cfg.depth_audio) / cfg.depth_audio)

    def forward_parts(self, video: torch.Tensor, audio: torch.Tensor) -> list[torch.Tensor]:
        """``video [B, 3, T, H, W]`` (normalised frames), ``audio [B, 1, T_a, F]`` (normalised
        log-mel) -> the four parts ``[B, C]`` of :data:`PARTS`, before ``fc_norm``."""
        v = self.encoder(video)                                           # [B, N, L, C]
        a = self.encoder_audio(audio)
        wv = torch.softmax(self.video_layer_weights, dim=0).view(1, -1, 1).to(v.dtype)
        wa = torch.softmax(self.audio_layer_weights, dim=0).view(1, -1, 1).to(a.dtype)
        video_feature = (v.mean(1) * wv).sum(1)
        audio_feature = (a.mean(1) * wa).sum(1)
        fv, fa = self.encoder_fusion(v[:, :, -1], a[:, :, -1])
        return [video_feature, audio_feature, fv.mean(1), fa.mean(1)]

    def forward_features(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``[B, 2 (C_v + C_a)]``: ``fc_norm`` of the four parts concatenated (the official feature)."""
        return self.fc_norm(torch.cat(self.forward_parts(video, audio), dim=-1))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise ValueError("this HiCMAE model has no classification head (num_classes=0)")
        return self.head(feats)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(video, audio)
        return self.head(feats) if self.head is not None else feats
