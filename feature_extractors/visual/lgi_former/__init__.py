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
(appearance + frame-difference targets, see :mod:`~feature_extractors.visual.lgi_former.objective`). It keeps one quirk
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

    from feature_extractors.visual.lgi_former import TubeWindowMaskGenerator, reconstruction_targets, reconstruction_loss
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

The package, by job: :mod:`~.config` (the frozen configs), :mod:`~.model` (the blocks and the
encoder), :mod:`~._onednn` (the CPU inference path), :mod:`~.pretrain` (the pretraining model),
:mod:`~.objective` (masks, targets and loss of pretraining), :mod:`~.checkpoints` (reading,
mapping and writing checkpoints) and :mod:`~.variants` (:data:`MODELS` and :func:`create_model`).
"""
from __future__ import annotations

from .checkpoints import (OFFICIAL_MODEL_HEADS, LoadReport, checkpoint_args, checkpoint_filter_fn, checkpoint_kind,
                          infer_config, load_mae_dfer, read_checkpoint, save_mae_dfer)
from .config import DECODER_POS_ORDERS, IMAGENET_MEAN, IMAGENET_STD, TOKEN_POOLS, DecoderConfig, LGIFormerConfig
from .model import (Block, FusedAttention, GeneralAttention, LGBlock, LGIFormer, Mlp, PatchEmbed, drop_path,
                    init_finetune_weights, sincos_table)
from .objective import TubeWindowMaskGenerator, infer_patch_size, reconstruction_loss, reconstruction_targets
from .pretrain import Decoder, MAEDFERPretrain, init_pretrain_weights
from .variants import MODELS, ModelSpec, count_parameters, create_model

__all__ = [
    # configs and the released input normalisation
    "DECODER_POS_ORDERS", "IMAGENET_MEAN", "IMAGENET_STD", "TOKEN_POOLS", "DecoderConfig", "LGIFormerConfig",
    # the model
    "Block", "FusedAttention", "GeneralAttention", "LGBlock", "LGIFormer", "Mlp", "PatchEmbed", "drop_path",
    "init_finetune_weights", "sincos_table",
    # pretraining
    "Decoder", "MAEDFERPretrain", "TubeWindowMaskGenerator", "infer_patch_size", "init_pretrain_weights",
    "reconstruction_loss", "reconstruction_targets",
    # checkpoints
    "OFFICIAL_MODEL_HEADS", "LoadReport", "checkpoint_args", "checkpoint_filter_fn", "checkpoint_kind",
    "infer_config", "load_mae_dfer", "read_checkpoint", "save_mae_dfer",
    # variants
    "MODELS", "ModelSpec", "count_parameters", "create_model",
]
