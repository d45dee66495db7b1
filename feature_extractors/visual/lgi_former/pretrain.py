"""The MAE-DFER pretraining model: the LGI-Former encoder on the visible tokens, a VideoMAE decoder
that predicts the masked tubelets, and the official pretraining weight init."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from .config import DecoderConfig, LGIFormerConfig
from .model import Block, LGIFormer, _layer_norm, sincos_table

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
