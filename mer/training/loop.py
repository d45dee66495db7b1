"""The training loop — the only one in mer. :func:`epoch_steps` is one pass of mini-batch
optimiser steps, whoever trains: the fusion estimator through :func:`train_loop` (which also
evaluates every epoch and keeps the best epoch's weights by the selection metric, never branching
on the track) and the partial-label learners (:mod:`mer.pll.learners`), which ARNet drives epoch
by epoch."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch

from mer.data.frames import step_mask

from .data import Split

ScoreFn = Callable[[dict, Split], float]
"""(predictions of :func:`predict`, split) -> metric, higher is better."""

AugmentFn = Callable[[dict, dict, torch.Generator], tuple[dict, dict]]
"""(inputs {m: [B, D_m]}, present {m: [B]}, generator) -> augmented (inputs, present), training
batches only (modality dropout, feature noise); must not change its arguments in place."""


def epoch_steps(optimizer: torch.optim.Optimizer, order: torch.Tensor, batch_size: int,
                batch_loss: Callable[[torch.Tensor], torch.Tensor], *, grad_clip: float | None = None,
                parameters=None, skip_singletons: bool = False) -> list[tuple[float, int]]:
    """One pass over ``order`` (row indices, already shuffled) in mini-batches of ``batch_size``:
    for each, ``loss = batch_loss(idx)``, zero the gradients, backward, clip the gradient norm of
    ``parameters`` to ``grad_clip`` (when set), step. ``skip_singletons``: a last batch of one row
    (of more than one) is skipped; it breaks nothing but adds noise. Returns ``(loss, rows)`` per
    batch stepped."""
    done: list[tuple[float, int]] = []
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        if skip_singletons and len(idx) < 2 and len(order) > 1:
            continue
        loss = batch_loss(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
        done.append((float(loss.detach()), len(idx)))
    return done


@dataclass
class LoopResult:
    best_epoch: int
    best_score: float
    history: list[dict] = field(default_factory=list)


def to_tensors(split: Split, device: str, scalers: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None):
    """Features as tensors on ``device``, standardised with the training fold's statistics.
    A frame-level modality gives ``[N, T, D]`` and its step mask ``[N, T]`` as ``present``."""
    inputs, present = {}, {}
    for m, f in split.X.modalities.items():
        X = f.X
        if f.is_sequence:
            mask = step_mask(f.lengths, X.shape[1])
            if scalers is not None and m in scalers:
                mu, sd = scalers[m]
                X = (X - mu) / sd
            X = np.where(mask[..., None], X, np.float32(0.0))       # padding stays exactly zero
            inputs[m] = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=device)
            present[m] = torch.as_tensor(mask, device=device)
            continue
        if scalers is not None and m in scalers:
            mu, sd = scalers[m]
            X = (X - mu) / sd
            X = np.where(f.present[:, None], X, 0.0)
        inputs[m] = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=device)
        present[m] = torch.as_tensor(f.present, device=device)
    batch = {"y": torch.as_tensor(split.y, device=device),
             "v": torch.as_tensor(split.v, device=device)}
    if "arousal" in split.targets:
        batch["a"] = torch.as_tensor(split.targets["arousal"], dtype=torch.float32, device=device)
    if "frames" in split.targets:
        batch["frames"] = torch.as_tensor(split.targets["frames"], dtype=torch.int64, device=device)
    if split.weight is not None:
        batch["weight"] = torch.as_tensor(split.weight, dtype=torch.float32, device=device)
    return inputs, present, batch


def _take(d: Mapping[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in d.items()}


@torch.inference_mode()
def predict(model: torch.nn.Module, inputs, present, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """``{'probs': [N, C], 'valence': [N], 'arousal': [N] (if any), 'embedding': [N, H],
    'frame_probs': [N, T, C] (per-frame heads only, zero past each row's steps)}``."""
    model.eval()
    n = next(iter(inputs.values())).shape[0]
    outs: dict[str, list[np.ndarray]] = {}
    frames: list[np.ndarray] = []
    for i in range(0, n, batch_size):
        idx = torch.arange(i, min(n, i + batch_size), device=next(iter(inputs.values())).device)
        o = model(_take(inputs, idx), _take(present, idx))
        outs.setdefault("probs", []).append(torch.softmax(o["logits"].float(), -1).cpu().numpy())
        for key in ("valence", "arousal"):
            if key in o:
                outs.setdefault(key, []).append(o[key].float().cpu().numpy())
        outs.setdefault("embedding", []).append(o["embedding"].float().cpu().numpy())
        if "frame_logits" in o:
            p = torch.softmax(o["frame_logits"].float(), -1) * o["frame_mask"].unsqueeze(-1)
            frames.append(p.cpu().numpy())
    result = {k: np.concatenate(v) for k, v in outs.items()}
    if frames:                       # batches are trimmed to their own longest row: pad to one T
        T = max(f.shape[1] for f in frames)
        result["frame_probs"] = np.concatenate([np.pad(f, ((0, 0), (0, T - f.shape[1]), (0, 0))) for f in frames])
    return result


def train_loop(model: torch.nn.Module, loss_fn: Callable, train: Split, val: Split | None, *,
               score_fn: ScoreFn | None, epochs: int, lr: float, weight_decay: float, batch_size: int,
               grad_clip: float | None, seed: int, device: str,
               scalers: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
               on_epoch: Callable[[dict], None] | None = None,
               augment: AugmentFn | None = None, monitor: Split | None = None,
               monitor_fn: Callable[[dict, Split], tuple[float, dict]] | None = None,
               patience: int | None = None) -> LoopResult:
    """Adam, shuffled mini-batches from a seeded generator, best epoch by ``score_fn`` on ``val``
    (the last epoch when there is no ``val``). Leaves ``model`` holding the best epoch's weights.
    ``augment`` (the strategy's) transforms each training batch's inputs, with its own seeded
    generator so batches and initialisation stay what they are without it.

    ``monitor`` (with ``monitor_fn -> (selection score, all scores)``): a split scored every epoch
    for the record only (``history[i]['monitor_score']``, ``['monitor']``), never for selection:
    the held-out fold when the epoch is chosen on an inner split, so the official protocol's
    best-epoch figure can be reported beside the honest one. ``patience``: stop after that many
    epochs without a better selection score."""
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 7919) if augment is not None else None
    tr_inputs, tr_present, tr_batch = to_tensors(train, device, scalers)
    # rows with a target: a class, or (sentiment data, no class at all) a valence
    has_target = tr_batch["y"] >= 0
    if train.valence_range is not None:
        has_target = has_target | torch.isfinite(tr_batch["v"])
    labelled = torch.nonzero(has_target).squeeze(1).cpu()
    if len(labelled) == 0:
        raise ValueError("no labelled rows to train on")
    if val is not None:
        va_inputs, va_present, _ = to_tensors(val, device, scalers)
    if monitor is not None:
        mo_inputs, mo_present, _ = to_tensors(monitor, device, scalers)
    best = LoopResult(best_epoch=-1, best_score=-np.inf)
    best_state = None
    params = list(model.parameters())
    for epoch in range(1, epochs + 1):
        model.train()
        order = labelled[torch.randperm(len(labelled), generator=gen)]

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            idx = idx.to(device)
            inputs, present = _take(tr_inputs, idx), _take(tr_present, idx)
            if augment is not None:
                inputs, present = augment(inputs, present, aug_gen)
            return loss_fn(model(inputs, present), _take(tr_batch, idx))

        steps = epoch_steps(opt, order, batch_size, batch_loss, grad_clip=grad_clip, parameters=params,
                            skip_singletons=True)
        total, count = sum(loss * n for loss, n in steps), sum(n for _, n in steps)
        record = {"epoch": epoch, "train_loss": total / max(count, 1)}
        if val is not None and score_fn is not None:
            pred = predict(model, va_inputs, va_present)
            record["score"] = float(score_fn(pred, val))
        else:
            record["score"] = -record["train_loss"]
        if monitor is not None and monitor_fn is not None:
            record["monitor_score"], record["monitor"] = monitor_fn(predict(model, mo_inputs, mo_present), monitor)
        best.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if record["score"] > best.best_score:
            best.best_score, best.best_epoch = record["score"], epoch
            best_state = copy.deepcopy(model.state_dict())
        elif patience and epoch - best.best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return best
