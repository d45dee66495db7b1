"""The MAE-DFER pretraining loop (``python -m mer.pretrain`` calls :func:`pretrain`).

As the official ``run_mae_pretraining.py``: AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.05 on
weights of 2+ dims), learning rate ``lr * batch / 256`` with a linear warmup from
``warmup_lr * batch / 256`` and a per-step cosine down to ``min_lr * batch / 256``, mixed precision
on CUDA (fp16 with a gradient scaler, or bf16), no gradient clipping by default. ``batch`` is the
effective batch: ``batch_size`` clips per forward times ``grad_accum`` forwards per optimiser step
(gradient accumulation; the schedule counts optimiser steps).

Checkpoints are written in the official layout (``checkpoint-<epoch>.pth`` holding ``model``,
``optimizer``, ``epoch``, ``scaler`` and ``args`` as an ``argparse.Namespace``), so the official
fine-tuning script, :func:`~feature_extractors.visual.lgi_former.load_mae_dfer` and the ``mae_dfer``
extractor all read them; ``log.txt`` gets one JSON line per epoch. ``resume.pth`` (same layout plus
the step within the epoch; not named ``checkpoint-*`` so the official ``--auto_resume`` ignores
it) is rewritten at the end of every epoch that writes no numbered checkpoint and every
``checkpoint_every_steps`` optimiser steps.
A run in a folder that already holds checkpoints resumes from the newest (``resume=True``, as the
official ``--auto_resume``): clips, crops and masks depend on (seed, epoch, index) only and the
batch order on (seed, epoch), so a killed run continues exactly where its last checkpoint was.

``init_from`` continues pretraining from another pretraining checkpoint (e.g. the released
``mae_dfer_voxceleb2``): its weights (not its optimiser) start a new schedule. Callbacks report
the loss per optimiser step and per epoch, and sample reconstructions (appearance and motion, as
PNG images; :func:`~.mae_dfer.reconstruction_images`), which ``python -m mer.pretrain`` logs to
MLflow.
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

from feature_extractors.checkpoints import load_torch_checkpoint
from feature_extractors.visual.lgi_former import (
    MAEDFERPretrain,
    checkpoint_args,
    checkpoint_filter_fn,
    count_parameters,
    create_model,
    read_checkpoint,
    reconstruction_loss,
    reconstruction_targets,
)
from feature_extractors.weights import resolve_weights
from mer.core.io import atomic_file
from mer.core.samples import Sample

from .clips import ClipSampling, FrameSource, FrameStore, PretrainClips
from .mae_dfer import cosine_schedule, param_groups, reconstruction_images

log = logging.getLogger(__name__)

AMP_MODES = ("fp16", "bf16", "none")


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that decides a pretraining run; defaults are the released run's settings."""

    model: str = "mae_dfer_pretrain_base"         # a registered variant (lgi_former.MODELS)
    decoder_pos_order: str = "official"           # 'official' (the released quirk) | 'fixed'
    init_from: str | None = None                  # a pretraining checkpoint (path or weight tag) to continue from
    epochs: int = 100
    batch_size: int = 32                          # clips per forward
    grad_accum: int = 1                           # forwards per optimiser step (effective batch = batch_size x this)
    lr: float = 3e-4                              # base lr, times the effective batch / 256
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
    save_every: int = 10                          # epochs between checkpoint-<epoch>.pth; the last is always saved
    checkpoint_every_steps: int = 0               # also rewrite resume.pth every N optimiser steps (0: epoch ends)
    reconstruction_every: int = 1                 # epochs between sample reconstructions (0: none)
    seed: int = 0
    resume: bool = True

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        for name, kind in (("sampling", ClipSampling), ("source", FrameSource)):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, kind(**value))
        object.__setattr__(self, "betas", tuple(self.betas))

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum


@dataclass
class PretrainResult:
    out_dir: Path
    checkpoints: list[Path]
    epoch_losses: dict[int, float]
    steps: int                                    # optimiser steps taken in this call
    n_parameters: int
    clips: int
    seconds: float
    step_losses: list[float] = field(default_factory=list)
    resumed_from: tuple[int, int] | None = None   # (epoch, step) this call started at, when resumed
    reconstructions: list[Path] = field(default_factory=list)


def _scaled(settings: PretrainSettings, value: float) -> float:
    return value * settings.effective_batch / 256


def official_args(settings: PretrainSettings, model: MAEDFERPretrain, steps_per_epoch: int,
                  sampling: ClipSampling) -> argparse.Namespace:
    """The ``args`` saved with each checkpoint, under the official argument names (so official
    tools read our checkpoints): the model's sizes (:func:`checkpoint_args`, head counts included)
    and the run's settings."""
    cfg, s = model.cfg, sampling
    args = checkpoint_args(model)
    vars(args).update(
        model=settings.model, batch_size=settings.batch_size, update_freq=settings.grad_accum, epochs=settings.epochs,
        mask_type="part_window", mask_ratio=s.mask_ratio, part_win_size=[cfg.region_size[0], *s.mask_window],
        sampling_rate=s.stride, drop_path=0.0, normlize_target=settings.normalize_target,
        opt="adamw", opt_eps=settings.eps, opt_betas=list(settings.betas),
        clip_grad=settings.clip_grad, weight_decay=settings.weight_decay, weight_decay_end=settings.weight_decay,
        lr=_scaled(settings, settings.lr), min_lr=_scaled(settings, settings.min_lr),
        warmup_lr=_scaled(settings, settings.warmup_lr), warmup_epochs=settings.warmup_epochs,
        use_frame_diff_as_target=settings.frame_diff_group is not None,
        frame_diff_group_size=settings.frame_diff_group or 2, target_diff_weight=settings.target_diff_weight,
        seed=settings.seed, steps_per_epoch=steps_per_epoch, mer_settings=_jsonable(settings))
    return args


def _jsonable(settings: PretrainSettings) -> str:
    return json.dumps(dataclasses.asdict(settings), default=str, sort_keys=True)


RESUME_FILE = "resume.pth"


def latest_checkpoint(out_dir: Path) -> tuple[Path, int] | None:
    """The newest ``checkpoint-<epoch>.pth`` in ``out_dir`` and its epoch."""
    found = [(p, int(m.group(1))) for p in Path(out_dir).glob("checkpoint-*.pth")
             if (m := re.fullmatch(r"checkpoint-(\d+)\.pth", p.name))]
    return max(found, key=lambda x: x[1]) if found else None


def resume_point(out_dir: Path, steps_per_epoch: int) -> tuple[dict[str, Any], int, int] | None:
    """``(checkpoint, epoch, step)`` to continue from: the newest of the numbered checkpoints
    (an epoch done) and ``resume.pth`` (``step`` optimiser steps into ``epoch``). A ``resume.pth``
    written with another number of steps per epoch (other clips or batch) counts from its
    epoch's start."""
    candidates: list[tuple[tuple[int, int], Path]] = []
    numbered = latest_checkpoint(out_dir)
    if numbered:
        candidates.append(((numbered[1] + 1, 0), numbered[0]))
    resume_ckpt = None
    if (Path(out_dir) / RESUME_FILE).is_file():
        resume_ckpt = load_torch_checkpoint(Path(out_dir) / RESUME_FILE)
        epoch, step = int(resume_ckpt["epoch"]), int(resume_ckpt.get("step", steps_per_epoch))
        if int(resume_ckpt.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:
            log.warning("%s was written with %s steps per epoch, this run has %d: resuming at the start of "
                        "epoch %d", RESUME_FILE, resume_ckpt.get("steps_per_epoch"), steps_per_epoch, epoch)
            step = 0
        candidates.append(((epoch + 1, 0) if step >= steps_per_epoch else (epoch, step), Path(out_dir) / RESUME_FILE))
    if not candidates:
        return None
    (epoch, step), path = max(candidates, key=lambda c: c[0])
    ckpt = resume_ckpt if path.name == RESUME_FILE else load_torch_checkpoint(path)
    return ckpt, epoch, step


def build_model(settings: PretrainSettings) -> MAEDFERPretrain:
    """The variant ``settings.model``, initialised from scratch or from ``settings.init_from``
    (every key must fit: an official pretraining checkpoint fits ``mae_dfer_pretrain_base``)."""
    model = create_model(settings.model, decoder_pos_order=settings.decoder_pos_order)
    if not isinstance(model, MAEDFERPretrain):
        raise ValueError(f"{settings.model!r} is not a pretraining variant (it has no decoder)")
    if settings.init_from:
        path = resolve_weights(settings.init_from)
        sd, _, epoch = read_checkpoint(str(path))
        try:
            kept, missing, unused = checkpoint_filter_fn(sd, model)
        except ValueError as err:
            raise ValueError(f"init_from {path} does not fit {settings.model}: {err}") from None
        if missing or unused:
            raise ValueError(f"init_from {path} does not fit {settings.model}: it lacks {missing[:5]} and "
                             f"has unused {unused[:5]} (a pretraining checkpoint of the same sizes is needed)")
        model.load_state_dict(kept)
        log.info("pretraining continues from %s (its epoch %s)", path, epoch)
    return model


def pretrain(settings: PretrainSettings, samples: Sequence[Sample], out_dir: str | Path, *,
             frames_root: str | Path, device: str = "cpu", progress: bool = True,
             on_epoch: Callable[[int, dict[str, float]], None] | None = None,
             on_step: Callable[[int, dict[str, float]], None] | None = None,
             on_images: Callable[[int, list[Path]], None] | None = None) -> PretrainResult:
    """Pretrain on ``samples`` (their frames are stored under ``frames_root`` first), writing
    checkpoints, ``log.txt`` and ``reconstructions/`` to ``out_dir``. Callbacks:
    ``on_step(global step, {'loss', 'lr'})`` after each optimiser step,
    ``on_epoch(epoch, stats)`` after each epoch, ``on_images(epoch, [png paths])`` after each
    sample reconstruction."""
    from tqdm.auto import tqdm  # deferred: loads tqdm only when used

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)          # the model's init; clips, masks and batches seed themselves

    model = build_model(settings).to(device)
    sampling = settings.sampling.for_model(model.cfg)
    store = FrameStore(frames_root, settings.source)
    usable = store.prepare(samples, num_workers=settings.num_workers, progress=progress)
    if len(usable) < settings.effective_batch:
        raise ValueError(f"pretraining needs at least batch_size x grad_accum = {settings.effective_batch} clips "
                         f"with frames; {len(usable)} of {len(samples)} have them")
    dataset = PretrainClips([s.name for s in usable], store, sampling, seed=settings.seed)
    steps_per_epoch = len(dataset) // settings.effective_batch

    model.train()
    n_params = count_parameters(model)
    groups = param_groups(model, settings.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=_scaled(settings, settings.lr), betas=settings.betas, eps=settings.eps)
    use_cuda = torch.device(device).type == "cuda"
    amp = settings.amp if use_cuda else "none"
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    lr_values = cosine_schedule(_scaled(settings, settings.lr), _scaled(settings, settings.min_lr), settings.epochs,
                                steps_per_epoch, settings.warmup_epochs, _scaled(settings, settings.warmup_lr))
    args = official_args(settings, model, steps_per_epoch, sampling)

    start_epoch, start_step = 0, 0
    found = resume_point(out_dir, steps_per_epoch) if settings.resume else None
    if found:
        ckpt, start_epoch, start_step = found
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        log.info("pretraining resumes at epoch %d, step %d", start_epoch, start_step)

    def save(path: Path, epoch: int, step: int | None = None) -> None:
        """The official layout; ``resume.pth`` also says how far into ``epoch`` it is."""
        ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "scaler": scaler.state_dict(), "args": args}
        if step is not None:
            ckpt.update(step=step, steps_per_epoch=steps_per_epoch)
        with atomic_file(path) as f:
            torch.save(ckpt, f)

    autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    result = PretrainResult(out_dir, [], {}, 0, n_params, len(usable), 0.0,
                            resumed_from=(start_epoch, start_step) if found else None)
    for epoch in range(start_epoch, settings.epochs):
        dataset.set_epoch(epoch)
        first = start_step if epoch == start_epoch else 0
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(settings.seed * 100_003 + epoch))
        batches = order[:steps_per_epoch * settings.effective_batch].view(steps_per_epoch, settings.grad_accum,
                                                                         settings.batch_size)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches[first:].reshape(-1, settings.batch_size).tolist(),
            num_workers=settings.num_workers, pin_memory=use_cuda)
        losses: list[float] = []
        micro: list[float] = []
        bar = tqdm(loader, desc=f"pretrain epoch {epoch}", unit="batch", disable=not progress, leave=False,
                   total=(steps_per_epoch - first) * settings.grad_accum)
        for i, (videos, mask) in enumerate(bar):
            step = first + i // settings.grad_accum
            it = epoch * steps_per_epoch + step
            if i % settings.grad_accum == 0:
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
            scaler.scale(loss / settings.grad_accum).backward()
            micro.append(value)
            if (i + 1) % settings.grad_accum:
                continue
            if settings.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step_loss = float(np.mean(micro))
            micro.clear()
            losses.append(step_loss)
            result.step_losses.append(step_loss)
            result.steps += 1
            bar.set_postfix(loss=f"{step_loss:.4f}")
            done = step + 1
            if settings.checkpoint_every_steps and done % settings.checkpoint_every_steps == 0 and done < steps_per_epoch:
                save(out_dir / RESUME_FILE, epoch, done)
            if on_step:
                on_step(it, {"loss": step_loss, "lr": float(lr_values[it])})
        epoch_loss = float(np.mean(losses)) if losses else float("nan")
        result.epoch_losses[epoch] = epoch_loss
        stats = {"train_loss": epoch_loss, "train_lr": float(lr_values[(epoch + 1) * steps_per_epoch - 1]),
                 "epoch": epoch, "n_parameters": n_params}
        if (epoch + 1) % settings.save_every == 0 or epoch + 1 == settings.epochs:
            path = out_dir / f"checkpoint-{epoch}.pth"
            save(path, epoch)
            result.checkpoints.append(path)
        else:
            save(out_dir / RESUME_FILE, epoch, steps_per_epoch)
        with open(out_dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(json.dumps(stats) + "\n")
        if settings.reconstruction_every and ((epoch + 1) % settings.reconstruction_every == 0
                                              or epoch + 1 == settings.epochs):
            images = save_reconstructions(model, dataset, out_dir / "reconstructions", epoch, settings, device)
            result.reconstructions.extend(images)
            if on_images:
                on_images(epoch, images)
        if on_epoch:
            on_epoch(epoch, stats)
    result.seconds = time.perf_counter() - started
    return result


def save_reconstructions(model: MAEDFERPretrain, dataset: PretrainClips, folder: Path, epoch: int,
                         settings: PretrainSettings, device: str) -> list[Path]:
    """The model's reconstruction of one fixed training clip (the first sample as drawn in epoch
    0: same crop and mask every time, so images of successive epochs compare) as PNG images:
    ``epoch-<e>-appearance.png`` and ``epoch-<e>-motion.png``."""
    import cv2  # deferred: loads cv2 only when used

    epoch_then = dataset.epoch
    dataset.set_epoch(0)
    video, mask = dataset[0]
    dataset.set_epoch(epoch_then)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = model(video[None].to(device), mask[None].to(device))[0].float().cpu()
    model.train(was_training)
    images = reconstruction_images(video, mask, pred, patch_size=model.cfg.patch_size,
                                   tubelet_size=model.cfg.tubelet_size, normalize=settings.normalize_target,
                                   frame_diff_group=settings.frame_diff_group)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, image in images.items():
        path = folder / f"epoch-{epoch:03d}-{kind}.png"
        with atomic_file(path) as f:
            ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
            if not ok:
                raise RuntimeError(f"could not encode {path}")
            f.write(data.tobytes())
        paths.append(path)
    return paths
