"""MAE-DFER supervised fine-tuning (``python -m mer.finetune`` calls :func:`finetune`).

As the official ``run_class_finetuning.py`` with the released scripts' settings: the LGI-Former
from a pretraining (or fine-tuned) checkpoint by the ``--finetune`` rule (``encoder.`` stripped,
a head of another size dropped, the head initialised at ``init_scale`` 0.001), drop path 0.1,
AdamW (0.9, 0.999) with weight decay 0.05 (none on 1-D tensors, biases and
``pos_embed``/``cls_token``/``part_tokens``/``lg_region_tokens``), **layer-wise learning-rate
decay** 0.75 (patch embedding and region tokens: layer 0, block ``i``: ``i + 1``, ``fc_norm`` and
the head: ``depth + 1``; scale ``decay ** (depth + 1 - layer)``), lr ``1e-3 * batch / 256`` with 5
warmup epochs from ``1e-6 * batch / 256`` and a per-step cosine to ``1e-6 * batch / 256``,
**mixup 0.8 / cutmix 1.0** (one per batch, switch probability 0.5, the batch mixed with its
reverse, cutmix's lambda corrected to the box area, one box over every frame), **label
smoothing** 0.1, soft-target cross-entropy; 100 epochs.

Clips are the official training clips (:class:`~.clips.PretrainClips`' sampling: 16 frames at
stride 4 from a random offset, the multi-scale crop, a horizontal flip with probability 0.5);
RandAugment and random erasing are not applied (a difference from the official recipe, recorded
in the checkpoint's ``args``). Evaluation on ``eval`` samples uses the official test views (the
mean softmax over ``num_views`` clips from start to end): accuracy, weighted F1 and UAR per
epoch, and ``checkpoint-best.pth`` keeps the best weighted F1.

Checkpoints are in the official layout (``model``, ``optimizer``, ``epoch``, ``scaler``,
``args``), so :func:`~feature_extractors.visual.lgi_former.load_mae_dfer` and the ``mae_dfer``
extractor read them (``head_probs`` gives the fine-tuned class probabilities, in
``args.class_names`` order). Resuming follows :mod:`.train`: the newest ``checkpoint-<epoch>.pth``
or ``resume.pth``; clips, flips and mixing depend on (seed, epoch, index) only, so a resumed run
continues exactly.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from feature_extractors.visual.lgi_former import (
    LGIFormer,
    checkpoint_args,
    checkpoint_filter_fn,
    count_parameters,
    infer_config,
    read_checkpoint,
)
from feature_extractors.visual.lgi_former.model import init_finetune_weights
from feature_extractors.visual.face_clip_encoder import official_view_indices
from feature_extractors.weights import resolve_weights
from mer.core.io import atomic_file
from mer.core.samples import Sample
from mer.evaluation.metrics import accuracy, weighted_f1

from .clips import ClipSampling, FrameSource, FrameStore, PretrainClips, normalize_clip
from .mae_dfer import cosine_schedule
from .train import RESUME_FILE, resume_point

log = logging.getLogger(__name__)

FINETUNE_NO_WEIGHT_DECAY = ("pos_embed", "cls_token", "part_tokens", "lg_region_tokens")
"""The fine-tune model's ``no_weight_decay()`` names."""


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that decides a fine-tuning run; defaults are the released scripts' settings."""

    init_from: str = "mae_dfer_voxceleb2"       # a checkpoint (path or weight tag): pretraining or fine-tuned
    num_heads: int | None = None                # for a file whose args do not say (the released ones do)
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3                            # times batch_size / 256
    min_lr: float = 1e-6
    warmup_lr: float = 1e-6
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    init_scale: float = 0.001
    smoothing: float = 0.1
    mixup: float = 0.8                          # beta(alpha, alpha) for mixup; 0: none
    cutmix: float = 1.0                         # beta(alpha, alpha) for cutmix; 0: none
    mixup_prob: float = 1.0
    switch_prob: float = 0.5
    betas: tuple[float, float] = (0.9, 0.999)
    sampling: ClipSampling = field(default_factory=ClipSampling)   # its mask settings are unused here
    flip: bool = True
    num_views: int = 2                          # evaluation views per sample
    source: FrameSource = field(default_factory=FrameSource)
    num_workers: int = 2
    save_every: int = 10
    seed: int = 0
    resume: bool = True

    def __post_init__(self) -> None:
        for name, kind in (("sampling", ClipSampling), ("source", FrameSource)):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, kind(**value))
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2 (mixup pairs a batch with its reverse), got {self.batch_size}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")


@dataclass
class FinetuneResult:
    out_dir: Path
    checkpoints: list[Path]
    epoch_stats: dict[int, dict[str, float]]
    steps: int
    n_parameters: int
    clips: int
    seconds: float
    step_losses: list[float] = field(default_factory=list)
    resumed_from: tuple[int, int] | None = None
    best: Path | None = None


def layer_id(name: str, depth: int) -> int:
    """The official ``get_num_layer_for_vit``: embeddings 0, block ``i`` ``i + 1``, the rest ``depth + 1``."""
    if name.startswith(("patch_embed", "lg_region_tokens", "pos_embed", "cls_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_groups(model: nn.Module, depth: int, weight_decay: float, layer_decay: float,
                       skip: Sequence[str] = FINETUNE_NO_WEIGHT_DECAY) -> list[dict]:
    """AdamW groups per (layer, decay or not), each with its ``lr_scale`` (module docstring)."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim == 1 or name.endswith(".bias") or name in set(skip)
        lid = layer_id(name, depth)
        g = groups.setdefault((lid, no_decay), {"params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                                                "lr_scale": layer_decay ** (depth + 1 - lid)})
        g["params"].append(param)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    return torch.full((len(y), num_classes), off).scatter_(1, y.view(-1, 1), 1.0 - smoothing + off)


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, s: FinetuneSettings,
              rng: np.random.RandomState) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """timm's ``Mixup`` (batch mode) on clips ``[B, 3, T, H, W]``: the batch mixed with its
    reverse, mixup or cutmix (one box over all frames), smoothed soft targets."""
    target = soft_targets(y, num_classes, s.smoothing)
    lam, kind = 1.0, "none"
    if (s.mixup > 0 or s.cutmix > 0) and rng.rand() < s.mixup_prob:
        use_cutmix = s.cutmix > 0 and (s.mixup <= 0 or rng.rand() < s.switch_prob)
        alpha = s.cutmix if use_cutmix else s.mixup
        lam = float(rng.beta(alpha, alpha))
        if use_cutmix:
            h, w = x.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(h * cut), int(w * cut)
            cy, cx = rng.randint(h), rng.randint(w)
            y1, y2 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
            x1, x2 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
            x = x.clone()
            x[..., y1:y2, x1:x2] = x.flip(0)[..., y1:y2, x1:x2]
            lam = 1.0 - float((y2 - y1) * (x2 - x1)) / float(h * w)
            kind = "cutmix"
        else:
            x = x * lam + x.flip(0) * (1.0 - lam)
            kind = "mixup"
    return x, target * lam + target.flip(0) * (1.0 - lam), {"lam": lam, "cutmix": float(kind == "cutmix")}


class LabelledClips(torch.utils.data.Dataset):
    """``(clip, label)``: the pretraining clips (offset, multi-scale crop) with a seeded flip."""

    def __init__(self, names: Sequence[str], labels: Sequence[int], store: FrameStore, sampling: ClipSampling,
                 seed: int, flip: bool) -> None:
        self.clips = PretrainClips(names, store, sampling, seed=seed)
        self.labels = list(labels)
        self.flip, self.seed = flip, seed

    def set_epoch(self, epoch: int) -> None:
        self.clips.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        clip, _ = self.clips[i]
        rng = np.random.RandomState(np.random.SeedSequence([self.seed, self.clips.epoch, i, 7]).generate_state(1)[0])
        if self.flip and rng.rand() < 0.5:
            clip = clip.flip(-1)
        return clip, self.labels[i]


def build_finetune_model(settings: FinetuneSettings, num_classes: int) -> tuple[LGIFormer, dict]:
    """The LGI-Former of ``settings.init_from``'s sizes with ``num_classes`` outputs, initialised as
    the official fine-tuning does and loaded from the file by its ``--finetune`` rule."""
    path = resolve_weights(settings.init_from)
    sd, args, _ = read_checkpoint(str(path))
    cfg, _, _ = infer_config(sd, args, settings.num_heads)
    cfg = dataclasses.replace(cfg, num_classes=num_classes, drop_path_rate=settings.drop_path)
    model = LGIFormer(cfg, layout="finetune")
    init_finetune_weights(model, settings.init_scale)
    own = model.state_dict()
    head = {k for k in ("head.weight", "head.bias") if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)}
    kept, missing, unused = checkpoint_filter_fn({k: v for k, v in sd.items() if k not in head}, model)
    model.load_state_dict(kept, strict=False)
    info = {"init_from": str(path), "missing": missing, "unused": unused, "head_reset": sorted(head)}
    log.info("fine-tuning from %s: %d keys loaded, not in the file %s", path, len(kept), missing)
    return model, info


def evaluate_views(model: LGIFormer, store: FrameStore, names: Sequence[str], labels: Sequence[int], num_views: int,
                   stride: int, device: str) -> dict[str, float]:
    """Accuracy, weighted F1 and UAR with the official test views (mean softmax over views)."""
    import cv2  # deferred: loads cv2 only when used

    cfg = model.cfg
    preds = []
    model.eval()
    with torch.no_grad():
        for name in names:
            track = store.load(name)
            idx = official_view_indices(len(track), cfg.num_frames, stride, num_views)
            clips = torch.stack([normalize_clip(np.stack([cv2.resize(np.asarray(track[j]), (cfg.img_size, cfg.img_size))
                                                          for j in row])) for row in idx])
            probs = torch.softmax(model(clips.to(device)).float(), -1).mean(0)
            preds.append(int(probs.argmax()))
    model.train()
    y, p = np.asarray(labels), np.asarray(preds)
    recalls = [float(np.mean(p[y == c] == c)) for c in np.unique(y)]
    return {"eval_acc": accuracy(y, p), "eval_wf1": weighted_f1(y, p), "eval_uar": float(np.mean(recalls))}


def finetune(settings: FinetuneSettings, train: Sequence[Sample], classes: Sequence[str], out_dir: str | Path, *,
             frames_root: str | Path, eval_samples: Sequence[Sample] = (), device: str = "cpu", progress: bool = True,
             on_epoch: Callable[[int, dict[str, float]], None] | None = None,
             on_step: Callable[[int, dict[str, float]], None] | None = None) -> FinetuneResult:
    """Fine-tune on the labelled ``train`` samples (their frames stored under ``frames_root``),
    writing checkpoints and ``log.txt`` to ``out_dir``; ``eval_samples`` (labelled) are scored
    every epoch. Callbacks: ``on_step(step, {'loss', 'lr'})``, ``on_epoch(epoch, stats)``."""
    from tqdm.auto import tqdm  # deferred: loads tqdm only when used

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    torch.manual_seed(settings.seed)
    model, info = build_finetune_model(settings, len(classes))
    model = model.to(device)
    sampling = settings.sampling.for_model(model.cfg, check=False)
    store = FrameStore(frames_root, settings.source)
    usable = store.prepare([s for s in train if s.discrete in index], num_workers=settings.num_workers, progress=progress)
    if len(usable) < settings.batch_size:
        raise ValueError(f"fine-tuning needs at least batch_size = {settings.batch_size} labelled clips with frames; "
                         f"{len(usable)} of {len(train)} have them")
    evals = store.prepare([s for s in eval_samples if s.discrete in index], num_workers=settings.num_workers,
                          progress=progress) if eval_samples else []
    dataset = LabelledClips([s.name for s in usable], [index[s.discrete] for s in usable], store, sampling,
                            settings.seed, settings.flip)
    steps_per_epoch = len(dataset) // settings.batch_size
    scaled = settings.batch_size / 256
    groups = layer_decay_groups(model, model.cfg.depth, settings.weight_decay, settings.layer_decay)
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups],
                                  lr=settings.lr * scaled, betas=settings.betas)
    lr_values = cosine_schedule(settings.lr * scaled, settings.min_lr * scaled, settings.epochs, steps_per_epoch,
                                settings.warmup_epochs, settings.warmup_lr * scaled)
    args = checkpoint_args(model)
    vars(args).update(nb_classes=len(classes), class_names=classes, epochs=settings.epochs,
                      batch_size=settings.batch_size, lr=settings.lr * scaled, min_lr=settings.min_lr * scaled,
                      warmup_lr=settings.warmup_lr * scaled, warmup_epochs=settings.warmup_epochs,
                      weight_decay=settings.weight_decay, layer_decay=settings.layer_decay, drop_path=settings.drop_path,
                      smoothing=settings.smoothing, mixup=settings.mixup, cutmix=settings.cutmix,
                      mixup_prob=settings.mixup_prob, mixup_switch_prob=settings.switch_prob,
                      sampling_rate=sampling.stride, finetune=info["init_from"], aa=None, reprob=0.0,
                      mer_settings=json.dumps(dataclasses.asdict(settings), default=str, sort_keys=True))
    model.train()
    start_epoch, start_step = 0, 0
    found = resume_point(out_dir, steps_per_epoch) if settings.resume else None
    best = -1.0
    if found:
        ckpt, start_epoch, start_step = found
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        best = float(ckpt.get("best_wf1", -1.0))
        log.info("fine-tuning resumes at epoch %d, step %d", start_epoch, start_step)

    def save(path: Path, epoch: int, step: int | None = None) -> None:
        ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "scaler": {},
                "args": args, "best_wf1": best}
        if step is not None:
            ckpt.update(step=step, steps_per_epoch=steps_per_epoch)
        with atomic_file(path) as f:
            torch.save(ckpt, f)

    result = FinetuneResult(out_dir, [], {}, 0, count_parameters(model), len(usable), 0.0,
                            resumed_from=(start_epoch, start_step) if found else None)
    for epoch in range(start_epoch, settings.epochs):
        dataset.set_epoch(epoch)
        first = start_step if epoch == start_epoch else 0
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(settings.seed * 100_003 + epoch))
        batches = order[:steps_per_epoch * settings.batch_size].view(steps_per_epoch, settings.batch_size)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches[first:].tolist(),
                                             num_workers=settings.num_workers)
        losses: list[float] = []
        bar = tqdm(loader, desc=f"fine-tune epoch {epoch}", unit="batch", disable=not progress, leave=False,
                   total=steps_per_epoch - first)
        for i, (clips, labels) in enumerate(bar):
            step = first + i
            it = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = float(lr_values[it]) * group["lr_scale"]
            rng = np.random.RandomState(np.random.SeedSequence([settings.seed, epoch, step, 11]).generate_state(1)[0])
            x, target, _ = mix_batch(clips, labels, len(classes), settings, rng)
            torch.manual_seed(int(rng.randint(2 ** 31)))       # drop path: seeded per step, so a resume is exact
            logits = model(x.to(device))
            loss = torch.sum(-target.to(device) * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"fine-tuning loss is {value} at epoch {epoch} step {step}; stopping")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(value)
            result.step_losses.append(value)
            result.steps += 1
            bar.set_postfix(loss=f"{value:.4f}")
            if on_step:
                on_step(it, {"loss": value, "lr": float(lr_values[it])})
        stats: dict[str, float] = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                                   "train_lr": float(lr_values[(epoch + 1) * steps_per_epoch - 1])}
        if evals:
            stats.update(evaluate_views(model, store, [s.name for s in evals], [index[s.discrete] for s in evals],
                                        settings.num_views, sampling.stride, device))
            if stats["eval_wf1"] > best:
                best = stats["eval_wf1"]
                save(out_dir / "checkpoint-best.pth", epoch)
                result.best = out_dir / "checkpoint-best.pth"
        result.epoch_stats[epoch] = stats
        if (epoch + 1) % settings.save_every == 0 or epoch + 1 == settings.epochs:
            path = out_dir / f"checkpoint-{epoch}.pth"
            save(path, epoch)
            result.checkpoints.append(path)
        else:
            save(out_dir / RESUME_FILE, epoch, steps_per_epoch)
        with open(out_dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(json.dumps(stats) + "\n")
        if on_epoch:
            on_epoch(epoch, stats)
    result.seconds = time.perf_counter() - started
    return result
