"""LGI-Former sizes: the encoder's and the pretraining decoder's frozen configs, and the input
normalisation of the released model."""
from __future__ import annotations

import math
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOKEN_POOLS = ("region", "org", "all")
DECODER_POS_ORDERS = ("official", "fixed")


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
