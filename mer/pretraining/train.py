"""The MAE-DFER pretraining loop (``python -m mer.pretrain`` calls :func:`pretrain`).

As the official ``run_mae_pretraining.py``: AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.05 on
weights of 2+ dims), learning rate ``lr * batch / 256`` with a linear warmup from
``warmup_lr * batch / 256`` and a per-step cosine down to ``min_lr * batch / 256``, mixed precision
on CUDA (fp16 with a gradient scaler, or bf16), no gradient clipping by default. Checkpoints are
written in the official layout (``checkpoint-<epoch>.pth`` holding ``model``, ``optimizer``,
``epoch``, ``scaler`` and ``args`` as an ``argparse.Namespace``), so the official fine-tuning
script, :func:`~feature_extractors.visual.lgi_former.load_mae_dfer` and the ``mae_dfer`` extractor
all read them; ``log.txt`` gets one JSON line per epoch. A run in a folder that already holds
checkpoints resumes after the newest one (``resume=True``, as the official ``--auto_resume``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from feature_extractors.checkpoints import load_torch_checkpoint, unwrap_state_dict
from feature_extractors.visual.lgi_former import MAEDFERPretrain, count_parameters, create_model
from mer.cache.store import _atomic_file as atomic_file  # the cache's temp-file-and-rename writer
from mer.data.manifest import Sample

from .clips import ClipSampling, FrameSource, FrameStore, PretrainClips
from .mae_dfer import cosine_schedule, param_groups, reconstruction_loss, reconstruction_targets

log = logging.getLogger(__name__)

AMP_MODES = ("fp16", "bf16", "none")


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that decides a pretraining run; defaults are the released run's settings."""

    model: str = "mae_dfer_pretrain_base"         # a registered variant (lgi_former.MODELS)
    decoder_pos_order: str = "official"           # 'official' (the released quirk) | 'fixed'
    init_from: str | None = None                  # a pretraining checkpoint (path or weight tag) to continue from
    epochs: int = 100
    batch_size: int = 32                          # per step (the lr scales with it)
    lr: float = 3e-4                              # base lr, times batch_size / 256
    min_lr: float = 1e-5
    warmup_lr: float = 0.0                        # the warmup's start; the official script passes none (0),
                                                  # leaving its --warmup_lr 1e-6 unused (its log shows it)
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    clip_grad: float | None = None
    amp: str = "fp16"                             # on CUDA; always off on CPU
    normalize_target: bool = True
    frame_diff_group: int | None = 2              # None: plain pixel targets
    target_diff_weight: float | None = None       # None: one MSE over all values (lambda = 0.5)
    sampling: ClipSampling = field(default_factory=ClipSampling)
    source: FrameSource = field(default_factory=FrameSource)
    num_workers: int = 4
    save_every: int = 10                          # epochs; the last epoch is always saved
    seed: int = 0
    resume: bool = True

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        for name, kind in (("sampling", ClipSampling), ("source", FrameSource)):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, kind(**value))
        object.__setattr__(self, "betas", tuple(self.betas))


@dataclass
class PretrainResult:
    out_dir: Path
    checkpoints: list[Path]
    epoch_losses: dict[int, float]
    steps: int
    n_parameters: int
    clips: int
    seconds: float


def _scaled(settings: PretrainSettings, value: float) -> float:
    return value * settings.batch_size / 256


def official_args(settings: PretrainSettings, model: MAEDFERPretrain, steps_per_epoch: int) -> argparse.Namespace:
    """The ``args`` saved with each checkpoint, under the official argument names (so official
    tools read our checkpoints), plus the sizes no state_dict shape gives (head counts)."""
    cfg, dec, s = model.cfg, model.decoder_cfg, settings.sampling
    return argparse.Namespace(
        model=settings.model, batch_size=settings.batch_size, epochs=settings.epochs,
        encoder_depth=cfg.depth, decoder_depth=dec.depth, mask_type="part_window", mask_ratio=s.mask_ratio,
        part_win_size=[2, *s.mask_window], input_size=cfg.img_size, num_frames=cfg.num_frames,
        sampling_rate=s.stride, tubelet_size=cfg.tubelet_size, drop_path=0.0, normlize_target=settings.normalize_target,
        attn_type="local_global", lg_region_size=list(cfg.region_size), lg_first_attn_type="self",
        lg_third_attn_type="cross", lg_attn_param_sharing_first_third=False, lg_attn_param_sharing_all=False,
        lg_no_second=False, lg_no_third=False, opt="adamw", opt_eps=settings.eps, opt_betas=list(settings.betas),
        clip_grad=settings.clip_grad, weight_decay=settings.weight_decay, weight_decay_end=settings.weight_decay,
        lr=_scaled(settings, settings.lr), min_lr=_scaled(settings, settings.min_lr),
        warmup_lr=_scaled(settings, settings.warmup_lr), warmup_epochs=settings.warmup_epochs,
        use_frame_diff_as_target=settings.frame_diff_group is not None,
        frame_diff_group_size=settings.frame_diff_group or 2, target_diff_weight=settings.target_diff_weight,
        seed=settings.seed, window_size=cfg.token_grid, patch_size=(cfg.patch_size, cfg.patch_size),
        steps_per_epoch=steps_per_epoch, encoder_embed_dim=cfg.embed_dim, encoder_num_heads=cfg.num_heads,
        decoder_embed_dim=dec.embed_dim, decoder_num_heads=dec.num_heads, decoder_num_classes=model.num_outputs,
        mlp_ratio=cfg.mlp_ratio, decoder_pos_order=dec.decoder_pos_order, mer_settings=_jsonable(settings))


def _jsonable(settings: PretrainSettings) -> str:
    return json.dumps(dataclasses.asdict(settings), default=str, sort_keys=True)


def latest_checkpoint(out_dir: Path) -> tuple[Path, int] | None:
    found = [(p, int(m.group(1))) for p in out_dir.glob("checkpoint-*.pth")
             if (m := re.fullmatch(r"checkpoint-(\d+)\.pth", p.name))]
    return max(found, key=lambda x: x[1]) if found else None


def build_model(settings: PretrainSettings) -> MAEDFERPretrain:
    model = create_model(settings.model, decoder_pos_order=settings.decoder_pos_order)
    if not isinstance(model, MAEDFERPretrain):
        raise ValueError(f"{settings.model!r} is not a pretraining variant (it has no decoder)")
    if settings.init_from:
        from feature_extractors.weights import resolve_weights

        path = resolve_weights(settings.init_from)
        sd = unwrap_state_dict(load_torch_checkpoint(path))
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"init_from {path} does not fit {settings.model}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        log.info("pretraining continues from %s", path)
    return model


def pretrain(settings: PretrainSettings, samples: Sequence[Sample], out_dir: str | Path, *,
             frames_root: str | Path, device: str = "cpu", progress: bool = True,
             on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> PretrainResult:
    """Pretrain on ``samples`` (their frames are stored under ``frames_root`` first), writing
    checkpoints and ``log.txt`` to ``out_dir``."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)          # the model's init; clips and masks seed themselves

    store = FrameStore(frames_root, settings.source)
    usable = store.prepare(samples, num_workers=settings.num_workers, progress=progress)
    if len(usable) < settings.batch_size:
        raise ValueError(f"pretraining needs at least batch_size={settings.batch_size} clips with frames; "
                         f"{len(usable)} of {len(samples)} have them")
    dataset = PretrainClips([s.name for s in usable], store, settings.sampling, seed=settings.seed)
    steps_per_epoch = len(dataset) // settings.batch_size

    model = build_model(settings).to(device)
    s = settings.sampling
    if (s.num_frames, s.input_size, tuple(s.token_grid)) != (model.cfg.num_frames, model.cfg.img_size,
                                                             model.cfg.token_grid):
        raise ValueError(f"sampling {s} does not fit {settings.model} ({model.cfg.num_frames} frames of "
                         f"{model.cfg.img_size} px, token grid {model.cfg.token_grid})")
    model.train()
    n_params = count_parameters(model)
    groups = param_groups(model, settings.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=_scaled(settings, settings.lr), betas=settings.betas, eps=settings.eps)
    use_cuda = torch.device(device).type == "cuda"
    amp = settings.amp if use_cuda else "none"
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    lr_values = cosine_schedule(_scaled(settings, settings.lr), _scaled(settings, settings.min_lr), settings.epochs,
                                steps_per_epoch, settings.warmup_epochs, _scaled(settings, settings.warmup_lr))
    args = official_args(settings, model, steps_per_epoch)

    start_epoch = 0
    found = latest_checkpoint(out_dir) if settings.resume else None
    if found:
        ckpt = load_torch_checkpoint(found[0])
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = found[1] + 1
        log.info("pretraining resumes after %s (epoch %d)", found[0].name, found[1])

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=settings.batch_size, shuffle=True, drop_last=True, num_workers=settings.num_workers,
        pin_memory=use_cuda, generator=torch.Generator().manual_seed(settings.seed))
    autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    checkpoints: list[Path] = []
    epoch_losses: dict[int, float] = {}
    for epoch in range(start_epoch, settings.epochs):
        dataset.set_epoch(epoch)
        loader.generator.manual_seed(settings.seed + epoch)
        losses = []
        bar = tqdm(loader, desc=f"pretrain epoch {epoch}", unit="step", disable=not progress, leave=False)
        for step, (videos, mask) in enumerate(bar):
            it = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = float(lr_values[it]) * group["lr_scale"]
            videos = videos.to(device, non_blocking=True)
            mask = mask.to(device, non_blocking=True)
            with torch.no_grad():
                labels = reconstruction_targets(videos, mask, patch_size=model.cfg.patch_size,
                                                tubelet_size=model.cfg.tubelet_size,
                                                normalize=settings.normalize_target,
                                                frame_diff_group=settings.frame_diff_group)
            with torch.autocast(torch.device(device).type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                outputs = model(videos, mask)
                loss = reconstruction_loss(outputs.float(), labels, settings.target_diff_weight)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"pretraining loss is {value} at epoch {epoch} step {step}; stopping")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if settings.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            losses.append(value)
            bar.set_postfix(loss=f"{value:.4f}")
        epoch_losses[epoch] = float(np.mean(losses))
        stats = {"train_loss": epoch_losses[epoch], "train_lr": float(lr_values[(epoch + 1) * steps_per_epoch - 1]),
                 "epoch": epoch, "n_parameters": n_params}
        if (epoch + 1) % settings.save_every == 0 or epoch + 1 == settings.epochs:
            path = out_dir / f"checkpoint-{epoch}.pth"
            with atomic_file(path) as f:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                            "scaler": scaler.state_dict(), "args": args}, f)
            checkpoints.append(path)
        with open(out_dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(json.dumps(stats) + "\n")
        if on_epoch:
            on_epoch(epoch, stats)
    return PretrainResult(out_dir, checkpoints, epoch_losses, steps_per_epoch * (settings.epochs - start_epoch),
                          n_params, len(usable), time.perf_counter() - started)
