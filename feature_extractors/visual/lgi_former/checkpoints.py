"""LGI-Former checkpoints: the official format read and written, the config a checkpoint was saved
from, and the state_dict mapped onto a model (missing and unused keys reported)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from feature_extractors.checkpoints import load_torch_checkpoint, unwrap_state_dict
from mer.core.io import atomic_file

from .config import DecoderConfig, LGIFormerConfig
from .model import LGIFormer
from .pretrain import MAEDFERPretrain
from .variants import MODELS

log = logging.getLogger(__name__)

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


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                         prefixes: Sequence[str] | None = None) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map a checkpoint's state_dict onto ``model``: strip ``module.``, and for a fine-tune-layout
    model also the official ``encoder.``/``backbone.`` prefixes (the ``--finetune`` rule, which
    discards ``encoder.norm``, the decoder and the mask token). Returns ``(kept, missing, unused)``:
    ``missing`` are the model's keys the checkpoint lacks, ``unused`` the checkpoint's keys the
    model has no place for. Shapes must agree: a mismatch raises, naming the key. ``prefixes``
    replaces the prefixes stripped (HiCMAE's keys keep their ``encoder.``: ``("module.",)``)."""
    own = model.state_dict()
    if prefixes is not None:
        strip: Sequence[str] = tuple(prefixes)
    else:
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


def load_filtered(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str, *,
                  allowed_missing: Sequence[str] = (), strict: bool = True,
                  prefixes: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Load a checkpoint's ``state_dict`` into ``model`` by :func:`checkpoint_filter_fn` and put it
    in eval mode; with ``strict`` a key of the model the file lacks (but ``allowed_missing``)
    raises, naming ``path``. Returns ``(missing, unused)``; unused keys are logged."""
    kept, missing, unused = checkpoint_filter_fn(state_dict, model, prefixes)
    lacking = set(missing) - set(allowed_missing)
    if strict and lacking:
        raise ValueError(f"{path} lacks {len(lacking)} keys of the model, e.g. {sorted(lacking)[:5]}")
    model.load_state_dict(kept, strict=False)
    model.eval()
    if unused:
        log.info("%s: %d checkpoint keys unused by the %s (e.g. %s)", path, len(unused), type(model).__name__,
                 unused[:3])
    return missing, unused


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], Any]:
    """``(state_dict, args as a dict, epoch)`` of an official-format checkpoint, a bare state_dict,
    or a ``{'module': ...}`` wrapper; loaded with ``weights_only=True`` (see
    :func:`feature_extractors.checkpoints.load_torch_checkpoint`)."""
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


def clip_shape_from_args(args: Mapping[str, Any]) -> tuple[int, int]:
    """``(frames, pixels)`` a checkpoint's model takes, from its ``args`` alone, by the rules of
    :func:`infer_config` (16 and 160 when they say nothing; the patch is taken as 16 for a
    ``window_size`` rule, the released patch)."""
    frames = int(args.get("num_frames", 16) or 16) * int(args.get("num_segments", 1) or 1)
    return frames, int(_arg_img_size(args, 16) or 160)


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
    allowed = ("fc_norm.weight", "fc_norm.bias") if kind == "pretrain" and layout == "finetune" else ()
    missing, unused = load_filtered(model, sd, path, allowed_missing=allowed, strict=strict)
    report = LoadReport(path=str(path), kind=kind, config=cfg, decoder=dec, heads_source=source,
                        epoch=epoch, missing=missing, unused=unused, args=args)
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
    Written whole or not at all (:func:`mer.core.io.atomic_file`)."""
    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
             for k, v in model.state_dict().items()}
    ckpt = {"model": state, "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "epoch": epoch, "scaler": scaler.state_dict() if scaler is not None else {},
            "args": args if args is not None else checkpoint_args(model)}
    with atomic_file(path) as f:
        torch.save(ckpt, f)
