"""HiCMAE checkpoints: the official format read and written, the sizes a file was saved with, and the
state_dict mapped onto an :class:`~.model.AudioVisionTransformer`.

Official files are ``{'model': state_dict, 'optimizer', 'epoch', 'scaler', 'args'}``; the keys
are the model's own (``encoder.*``, ``encoder_audio.*``, ``encoder_fusion.*``, ``fc_norm``,
``head``, ``video_layer_weights``, ``audio_layer_weights``). A pretraining file holds the same
encoder keys (``run_class_finetuning_av.py --finetune`` loads it with no prefix rule) plus its
decoders, which find no place; what a pretraining file lacks (``fc_norm``, the layer weights)
keeps its init, as fine-tuning starts.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from feature_extractors.checkpoints import save_official_checkpoint
from feature_extractors.visual.lgi_former.checkpoints import load_filtered, read_checkpoint

from .model import AudioVisionTransformer, AViTConfig

MODEL_HEADS = {"avit_dim256_patch16_160_a256": 4, "avit_dim384_patch16_160_a256": 6,
               "avit_dim512_patch16_160_a256": 8}
"""Head counts of the official model names (video, audio and fusion alike); no state_dict holds one."""
HEAD_DIM = 64
FINE_TUNE_ONLY = ("fc_norm.weight", "fc_norm.bias", "video_layer_weights", "audio_layer_weights")


@dataclass
class HiCMAELoadReport:
    path: str
    kind: str                      # 'finetune' | 'pretrain'
    config: AViTConfig
    heads_source: str = ""
    epoch: Any = None
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)


def _count(sd: Mapping[str, Any], prefix: str) -> int:
    return len({int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})


def infer_config(state_dict: Mapping[str, torch.Tensor], args: Mapping[str, Any] | None = None, *,
                 num_heads: int | Sequence[int] | None = None, img_size: int | None = None, num_frames: int | None = None,
                 audio_size: tuple[int, int] | None = None) -> tuple[AViTConfig, str]:
    """Sizes from the tensors (widths, depths, patches, MLP ratio, classes) and from ``args``
    (``input_size``, ``num_frames``, ``input_size_audio``, ``num_mel_bins``; defaults 160, 16,
    256, 128: the position tables are in no state_dict); the head count from ``num_heads``, the
    official model name in ``args.model``, else width / 64."""
    args = dict(args or {})
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if any(".gamma_" in k for k in sd):
        raise ValueError("this HiCMAE implements the released models, without layer scale (gamma_* keys)")
    try:
        video, audio = sd["encoder.patch_embed.proj.weight"], sd["encoder_audio.patch_embed.proj.weight"]
    except KeyError:
        raise ValueError("the checkpoint has no encoder.patch_embed / encoder_audio.patch_embed: not a HiCMAE "
                         "audio-visual model") from None
    dv, da = int(video.shape[0]), int(audio.shape[0])
    if num_heads is not None:            # one count for all, or (video, audio, fusion)
        given = [int(h) for h in num_heads] if isinstance(num_heads, Sequence) else [int(num_heads)] * 3
        if len(given) != 3:
            raise ValueError(f"num_heads is one count or (video, audio, fusion), got {num_heads}")
        heads = (given[0], given[1], given[2])
        source = "given"
    elif args.get("num_heads"):
        heads = (int(args["num_heads"]), int(args.get("num_heads_audio") or args["num_heads"]),
                 int(args.get("fusion_num_heads") or args["num_heads"]))
        source = "args.num_heads"
    elif str(args.get("model", "")) in MODEL_HEADS:
        heads = (MODEL_HEADS[str(args["model"])],) * 3
        source = f"args.model={args['model']}"
    else:
        heads = (max(dv // HEAD_DIM, 1), max(da // HEAD_DIM, 1), max(dv // HEAD_DIM, 1))
        source = f"embed_dim / {HEAD_DIM}"
    head = sd.get("head.weight")
    size_audio = audio_size or (int(args.get("input_size_audio") or 256), int(args.get("num_mel_bins") or 128))
    cfg = AViTConfig(
        img_size=int(img_size or args.get("input_size") or 160), patch_size=int(video.shape[-1]),
        num_frames=int(num_frames or args.get("num_frames") or 16), tubelet_size=int(video.shape[2]),
        embed_dim=dv, depth=_count(sd, "encoder.blocks."), num_heads=heads[0], audio_size=tuple(size_audio),
        patch_size_audio=int(audio.shape[-1]), embed_dim_audio=da, depth_audio=_count(sd, "encoder_audio.blocks."),
        num_heads_audio=heads[1], fusion_depth=_count(sd, "encoder_fusion.blocks."), fusion_num_heads=heads[2],
        mlp_ratio=int(sd["encoder.blocks.0.mlp.fc1.weight"].shape[0]) / dv,
        num_classes=int(head.shape[0]) if head is not None else 0)
    return cfg, source


def load_hicmae(path: str, *, num_heads: int | Sequence[int] | None = None, img_size: int | None = None,
                num_frames: int | None = None, audio_size: tuple[int, int] | None = None,
                strict: bool = True) -> tuple[AudioVisionTransformer, HiCMAELoadReport]:
    """The model an official (fine-tuned or pretraining) checkpoint holds, loaded: eval mode,
    float32, CPU. With ``strict`` a model key the file lacks raises, except, from a pretraining
    file, what fine-tuning adds (``fc_norm``, the layer weights)."""
    sd, args, epoch = read_checkpoint(path)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    kind = "pretrain" if any(k.startswith(("encoder_to_decoder", "decoder")) for k in sd) else "finetune"
    cfg, source = infer_config(sd, args, num_heads=num_heads, img_size=img_size, num_frames=num_frames,
                               audio_size=audio_size)
    model = AudioVisionTransformer(cfg)
    allowed = FINE_TUNE_ONLY if kind == "pretrain" else ()
    missing, unused = load_filtered(model, sd, path, allowed_missing=allowed, strict=strict, prefixes=())
    return model, HiCMAELoadReport(str(path), kind, cfg, source, epoch, missing, unused, args)


def checkpoint_args(model: AudioVisionTransformer) -> argparse.Namespace:
    """The sizes of ``model`` under the official argument names (``run_class_finetuning_av.py``)."""
    c = model.cfg
    name = next((n for n, h in MODEL_HEADS.items() if n.startswith(f"avit_dim{c.embed_dim}_") and h == c.num_heads
                 and c.embed_dim_audio == c.embed_dim and c.num_heads_audio == c.fusion_num_heads == h), "avit")
    return argparse.Namespace(
        model=name, input_size=c.img_size, num_frames=c.num_frames, tubelet_size=c.tubelet_size,
        input_size_audio=c.audio_size[0], num_mel_bins=c.audio_size[1], depth=c.depth, depth_audio=c.depth_audio,
        fusion_depth=c.fusion_depth, nb_classes=c.num_classes, attn_type="joint", num_heads=c.num_heads,
        num_heads_audio=c.num_heads_audio, fusion_num_heads=c.fusion_num_heads)


def save_hicmae(model: AudioVisionTransformer, path: str, *, epoch: Any = "best",
                args: argparse.Namespace | None = None) -> None:
    """``model`` in the official layout, whole or not at all."""
    save_official_checkpoint(model, path, args if args is not None else checkpoint_args(model), epoch=epoch)
