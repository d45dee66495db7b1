"""SVFAP checkpoints: the official format read and written, the sizes a checkpoint was saved with,
and the state_dict mapped onto a :class:`~.model.TPSBT` (missing and unused keys reported).

The official files are ``{'model': state_dict, 'optimizer', 'epoch', 'scaler', 'args'}``
(``utils.save_model``); ``args`` is the run's ``argparse.Namespace`` (``input_size``,
``num_frames``, ``tubelet_size``, ``nb_classes``, ``stage_depths``, ``temporal_kernel_size``,
``num_bottleneck_tokens``, ``model``). A pretraining file holds ``encoder.*``/``decoder.*``; the
official ``--finetune`` rule strips ``encoder.`` / ``backbone.``, and ``encoder.norm``, the
decoder and the mask token find no place (``fc_norm`` then keeps its init, weight 1 / bias 0).
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from feature_extractors.checkpoints import save_official_checkpoint
from feature_extractors.visual.lgi_former.checkpoints import load_filtered, read_checkpoint

from .model import TPSBT, TPSBTConfig

MODEL_HEADS = {"svfap_base_patch16_160": 8}
"""Head counts of the official model names (no state_dict holds one)."""
HEAD_DIM = 64


@dataclass
class SVFAPLoadReport:
    path: str
    kind: str                      # 'finetune' | 'pretrain'
    config: TPSBTConfig
    heads_source: str = ""
    epoch: Any = None
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)


def _strip(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        for prefix in ("encoder.", "backbone."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = value
    return out


def _seq(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    return tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


def infer_config(state_dict: Mapping[str, torch.Tensor], args: Mapping[str, Any] | None = None, *,
                 num_heads: int | None = None, img_size: int | None = None, num_frames: int | None = None,
                 stage_depths: Sequence[int] | None = None) -> tuple[TPSBTConfig, str]:
    """The sizes a checkpoint was saved with and where the head count came from. Widths, the
    tubelet, the bottleneck sizes, the temporal kernel and the classes come from the tensors;
    the input size and frame count from ``args`` (default 160 and 16: the fixed position table is
    in no state_dict); how the cross-self blocks split over the later stages from
    ``args.stage_depths`` (a bare state_dict with more than one later stage needs ``stage_depths``,
    unless its block count is the released 12 + 6 + 3)."""
    args = dict(args or {})
    sd = _strip(state_dict)
    if any(".gamma_" in k for k in sd):
        raise ValueError("this TPSBT implements the released models, without layer scale; the checkpoint "
                         "has gamma_* keys (init_values > 0)")
    proj = sd["patch_embed.proj.weight"]                      # [D, C, t, p, p]
    dim, chans, tubelet, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2]), int(proj.shape[3])
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not blocks:
        raise ValueError("the checkpoint has no blocks.* keys: not a TPSBT / SVFAP encoder")
    first = sum(1 for i in blocks if f"blocks.{i}.cross_attn.q.weight" not in sd)
    later = sorted({int(m.group(1)) for k in sd if (m := re.match(r"temporal_downsamples\.(\d+)\.", k))})
    given = _seq(stage_depths) or _seq(args.get("stage_depths"))
    if given is None:
        rest = len(blocks) - first
        if not later:
            given = (first,)
        elif len(later) == 1:
            given = (first, rest)
        elif (first, rest, len(later)) == (12, 9, 2):
            given = (12, 6, 3)
        else:
            raise ValueError(f"the checkpoint has {first} first-stage blocks and {rest} cross-self blocks over "
                             f"{len(later)} later stages; say how they split (stage_depths=...)")
    if sum(given) != len(blocks) or given[0] != first or len(given) != len(later) + 1:
        raise ValueError(f"stage_depths={list(given)} does not fit the checkpoint ({first} first-stage blocks, "
                         f"{len(blocks)} in all, {len(later)} later stages)")
    bottleneck = tuple(int(sd[f"spatial_downsamples.{s}.mlp.fc2.weight"].shape[0]) for s in later)
    kernel = int(sd["temporal_downsamples.0.weight"].shape[-1]) if later else int(args.get("temporal_kernel_size", 2))
    hidden = int(sd[f"blocks.{blocks[0]}.mlp.fc1.weight"].shape[0])
    head = sd.get("head.weight")
    if num_heads is not None:
        heads, source = int(num_heads), "given"
    elif args.get("num_heads"):
        heads, source = int(args["num_heads"]), "args.num_heads"
    elif str(args.get("model", "")) in MODEL_HEADS:
        heads, source = MODEL_HEADS[str(args["model"])], f"args.model={args['model']}"
    else:
        heads, source = max(dim // HEAD_DIM, 1), f"embed_dim / {HEAD_DIM}"
    cfg = TPSBTConfig(
        img_size=int(img_size or args.get("input_size") or 160), patch_size=patch,
        num_frames=int(num_frames or args.get("num_frames") or 16), tubelet_size=tubelet, in_chans=chans,
        embed_dim=dim, num_heads=heads, mlp_ratio=hidden / dim, stage_depths=tuple(given),
        num_bottleneck_tokens=bottleneck or (8,), temporal_kernel_size=kernel,
        num_classes=int(head.shape[0]) if head is not None else 0)
    return cfg, source


def load_svfap(path: str, *, num_heads: int | None = None, img_size: int | None = None,
               num_frames: int | None = None, stage_depths: Sequence[int] | None = None,
               strict: bool = True) -> tuple[TPSBT, SVFAPLoadReport]:
    """Build the TPSBT an official (fine-tuned or pretraining) checkpoint holds and load it:
    eval mode, float32, CPU. With ``strict`` a key of the model the file lacks raises, except
    ``fc_norm`` from a pretraining file (the official route leaves it at its init)."""
    sd, args, epoch = read_checkpoint(path)
    kind = "pretrain" if any(k.startswith(("encoder.", "module.encoder.")) for k in sd) else "finetune"
    cfg, source = infer_config(sd, args, num_heads=num_heads, img_size=img_size, num_frames=num_frames,
                               stage_depths=stage_depths)
    model = TPSBT(cfg)
    allowed = ("fc_norm.weight", "fc_norm.bias") if kind == "pretrain" else ()
    missing, unused = load_filtered(model, sd, path, allowed_missing=allowed, strict=strict)
    return model, SVFAPLoadReport(str(path), kind, cfg, source, epoch, missing, unused, args)


def checkpoint_args(model: TPSBT) -> argparse.Namespace:
    """The sizes of ``model`` under the official argument names (``run_class_finetuning.py``),
    plus the widths no official argument holds but :func:`infer_config` reads."""
    cfg = model.cfg
    return argparse.Namespace(
        model="svfap_base_patch16_160" if (cfg.embed_dim, cfg.num_heads, cfg.img_size) == (512, 8, 160) else "tpsbt",
        input_size=cfg.img_size, num_frames=cfg.num_frames, tubelet_size=cfg.tubelet_size, nb_classes=cfg.num_classes,
        stage_depths=list(cfg.stage_depths), temporal_kernel_size=cfg.temporal_kernel_size,
        num_bottleneck_tokens=list(cfg.num_bottleneck_tokens), use_mean_pooling=True,
        embed_dim=cfg.embed_dim, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio)


def save_svfap(model: TPSBT, path: str, *, epoch: Any = "best", args: argparse.Namespace | None = None) -> None:
    """Write ``model`` in the official layout (float32 tensors, official keys), whole or not at all."""
    save_official_checkpoint(model, path, args if args is not None else checkpoint_args(model), epoch=epoch)
