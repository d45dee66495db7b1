"""The MAE-DFER pretraining recipe around its objective, as the official ``run_mae_pretraining.py``
defines it.

The objective itself lives with the model, in :mod:`feature_extractors.visual.lgi_former.objective`:
the part-window tube masks (``TubeWindowMaskGenerator``), the appearance + motion targets
(``reconstruction_targets``) and the loss (``reconstruction_loss``).

* :func:`reconstruction_images` -- a clip's reconstruction as pictures (appearance and motion).
* :func:`cosine_schedule` and :func:`param_groups` -- the per-step learning-rate schedule and the
  weight-decay groups of the official optimiser (AdamW, betas (0.9, 0.95)).
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

from feature_extractors.visual.lgi_former import IMAGENET_MEAN, IMAGENET_STD
from feature_extractors.visual.lgi_former.objective import _all_targets, _patchify


def reconstruction_images(video: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, *, patch_size: int = 16,
                          tubelet_size: int = 2, normalize: bool = True, frame_diff_group: int | None = 2,
                          columns: int = 4) -> dict[str, np.ndarray]:
    """Pictures of one clip's reconstruction, uint8 RGB, ``columns`` time steps side by side.

    ``video [C, T, H, W]`` (ImageNet-normalised), ``mask [N]`` (True = masked) and the model's
    predictions for the masked tokens ``pred [N_mask, tubelet * patch^2 * C]``. The predicted
    tokens replace the targets of the masked tokens and are mapped back to pixels with each
    tubelet's own mean and std (known from the clip), so a perfect prediction gives the clip back.

    * ``appearance``: rows original | visible patches (masked ones gray) | reconstruction, at the
      first frame of each group of ``frame_diff_group`` frames;
    * ``motion`` (with ``frame_diff_group``): rows original | reconstructed difference of the
      group's second frame to its first, in pixels, shown as ``0.5 + 2 * difference`` (gray: no change).
    """
    c, t, h, w = video.shape
    q, p = tubelet_size, patch_size
    v = video.detach().float().cpu()[None]
    target = _all_targets(v, p, q, normalize, frame_diff_group)[0]                   # [N, q*p*p*C]
    recon = target.clone()
    recon[mask.cpu()] = pred.detach().float().cpu()
    pixels = _patchify(v * torch.tensor(IMAGENET_STD).view(1, -1, 1, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, -1, 1, 1, 1), p, q)[0]
    n = pixels.shape[0]
    flat = pixels.reshape(n, -1, c)
    mean, std = (flat.mean(1, keepdim=True), flat.var(1, unbiased=True, keepdim=True).sqrt() + 1e-6) if normalize \
        else (torch.zeros(n, 1, c), torch.ones(n, 1, c))
    g = frame_diff_group or 1

    def to_frames(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Target tokens -> (frames in pixels, differences to the group's first frame in pixels),
        both ``[T, H, W, C]``."""
        normed = tokens.view(n, q * p * p, c)
        video_t = _unpatchify(normed, t, h, w, p, q)                                  # [T, H, W, C] target space
        first = video_t[::g].repeat_interleave(g, dim=0) if g > 1 else torch.zeros_like(video_t)
        offsets = (torch.arange(t) % g != 0).view(t, 1, 1, 1)
        diff = torch.where(offsets, video_t, torch.zeros_like(video_t))
        frames_norm = torch.where(offsets, video_t + first, video_t)
        m, s_ = _unpatchify(mean.expand(n, q * p * p, c), t, h, w, p, q), _unpatchify(std.expand(n, q * p * p, c), t, h, w, p, q)
        return frames_norm * s_ + m, diff * s_

    original, original_diff = to_frames(target)
    rebuilt, rebuilt_diff = to_frames(recon)
    visible = _unpatchify((~mask.cpu()).float().view(n, 1, 1).expand(n, q * p * p, c), t, h, w, p, q)
    slots = np.linspace(0, t // g - 1, min(columns, t // g)).round().astype(int) * g

    def row(frames: torch.Tensor, at: np.ndarray) -> np.ndarray:
        return np.concatenate([frames[i].clamp(0, 1).numpy() for i in at], axis=1)

    masked = original * visible + 0.5 * (1 - visible)
    images = {"appearance": np.concatenate([row(original, slots), row(masked, slots), row(rebuilt, slots)], axis=0)}
    if frame_diff_group:
        second = slots + 1
        images["motion"] = np.concatenate([row(0.5 + 2 * original_diff, second), row(0.5 + 2 * rebuilt_diff, second)], axis=0)
    return {k: (np.clip(im, 0, 1) * 255).round().astype(np.uint8) for k, im in images.items()}


def _unpatchify(tokens: torch.Tensor, t: int, h: int, w: int, p: int, q: int) -> torch.Tensor:
    """``[N, q*p*p, C]`` tokens (raster order, each flattened (frame, row, column)) -> ``[T, H, W, C]``."""
    c = tokens.shape[-1]
    x = tokens.reshape(t // q, h // p, w // p, q, p, p, c)
    return x.permute(0, 3, 1, 4, 2, 5, 6).reshape(t, h, w, c)


def cosine_schedule(base_value: float, final_value: float, epochs: int, steps_per_epoch: int,
                    warmup_epochs: int = 0, start_warmup_value: float = 0.0, warmup_steps: int = -1) -> np.ndarray:
    """One value per step: a linear warmup from ``start_warmup_value`` (``warmup_epochs`` epochs,
    or ``warmup_steps`` steps when > 0) to ``base_value``, then a half cosine down to ``final_value``
    (the official ``utils.cosine_scheduler``, value for value)."""
    warmup_iters = warmup_steps if warmup_steps > 0 else warmup_epochs * steps_per_epoch
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_epochs > 0 else np.array([])
    iters = np.arange(epochs * steps_per_epoch - warmup_iters)
    cosine = np.array([final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / len(iters)))
                       for i in iters])
    schedule = np.concatenate((warmup, cosine))
    if len(schedule) != epochs * steps_per_epoch:
        raise ValueError(f"warmup of {warmup_iters} steps does not fit {epochs} x {steps_per_epoch} steps")
    return schedule


NO_WEIGHT_DECAY = ("pos_embed", "cls_token", "mask_token", "lg_region_tokens")
"""Names the official ``no_weight_decay()`` lists. They are matched against full parameter names,
as in the official ``get_parameter_groups``: so ``mask_token`` is exempt but
``encoder.lg_region_tokens`` (a 2-D tensor under a prefix) is decayed, as in the released run."""


def param_groups(model: nn.Module, weight_decay: float, skip: Iterable[str] = NO_WEIGHT_DECAY) -> list[dict]:
    """Two AdamW groups: ``decay`` (weights of 2+ dims) and ``no_decay`` (1-D tensors, biases,
    names in ``skip``), each with ``lr_scale`` 1."""
    skip = set(skip)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim == 1 or name.endswith(".bias") or name in skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
