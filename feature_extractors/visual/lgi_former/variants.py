"""The registered LGI-Former variants (:data:`MODELS`) and the builder that makes one by name."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from mer.core.registry import Registry

from .config import DecoderConfig, LGIFormerConfig
from .model import LGIFormer, init_finetune_weights
from .pretrain import MAEDFERPretrain, init_pretrain_weights

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
