"""The MAE-DFER pretraining objective, as the official ``run_mae_pretraining.py`` defines it.

* :class:`TubeWindowMaskGenerator` -- ``--mask_type part_window``: in every (5 x 10)-token window
  of a frame exactly ``int(ratio * 50)`` tokens are masked (45 at ratio 0.9, so 5 stay visible),
  and the per-frame pattern is repeated over all time slots (tube masking). Every LGI-Former
  region then keeps the same number of visible tokens, which the encoder needs.
* :func:`reconstruction_targets` -- appearance + motion: each tubelet (2 x 16 x 16 pixels) is
  normalised per channel (mean, unbiased std + 1e-6, in [0, 1] pixel units); the target of a
  token is ``[frame 2k | frame 2k+1 - frame 2k]`` of its normalised tubelet, flattened
  ``(frame, row, column, channel)`` with the channel fastest (1536 values).
* :func:`reconstruction_loss` -- MSE over all 1536 values (the paper's lambda = 0.5), or
  ``(1 - w) * MSE(appearance) + w * MSE(motion)`` with ``diff_weight=w``.
* :func:`reconstruction_images` -- a clip's reconstruction as pictures (appearance and motion).
* :func:`cosine_schedule` and :func:`param_groups` -- the per-step learning-rate schedule and the
  weight-decay groups of the official optimiser (AdamW, betas (0.9, 0.95)).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from feature_extractors.visual.lgi_former import IMAGENET_MEAN, IMAGENET_STD


class TubeWindowMaskGenerator:
    """Part-window tube masks over a ``(t, h, w)`` token grid -> bool ``[t*h*w]`` (True = masked),
    raster order. With ``np.random.seed(s)`` / ``RandomState(s)`` it draws exactly the masks of
    the official ``TubeWindowMaskingGenerator`` (one ``shuffle`` of ``[0]*visible + [1]*masked``
    per window, windows top to bottom)."""

    def __init__(self, token_grid: Sequence[int] = (8, 10, 10), mask_ratio: float = 0.9,
                 window: Sequence[int] = (5, 10)) -> None:
        self.frames, self.height, self.width = (int(v) for v in token_grid)
        self.win_h, self.win_w = (int(v) for v in window)
        if self.height % self.win_h or self.width % self.win_w:
            raise ValueError(f"mask window {tuple(window)} does not tile the {self.height}x{self.width} token grid")
        self.per_window = self.win_h * self.win_w
        self.masked_per_window = int(mask_ratio * self.per_window)
        if not 0 < self.masked_per_window < self.per_window:
            raise ValueError(f"mask ratio {mask_ratio} masks {self.masked_per_window} of {self.per_window} "
                             "tokens per window; it must leave some visible and mask some")

    @property
    def num_visible(self) -> int:
        windows = (self.height // self.win_h) * (self.width // self.win_w)
        return self.frames * windows * (self.per_window - self.masked_per_window)

    def __call__(self, rng: np.random.RandomState | None = None) -> np.ndarray:
        shuffle = (rng or np.random).shuffle
        frame = np.zeros((self.height, self.width), dtype=bool)
        for top in range(0, self.height, self.win_h):
            for left in range(0, self.width, self.win_w):
                window = [0] * (self.per_window - self.masked_per_window) + [1] * self.masked_per_window
                shuffle(window)
                frame[top:top + self.win_h, left:left + self.win_w] = np.reshape(window, (self.win_h, self.win_w))
        return np.tile(frame.reshape(-1), self.frames)


def _patchify(videos: torch.Tensor, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """``[B, C, T, H, W]`` -> ``[B, N, tubelet, patch, patch, C]``, tokens in raster order."""
    b, c, t, h, w = videos.shape
    p, q = patch_size, tubelet_size
    x = videos.view(b, c, t // q, q, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, -1, q, p, p, c)


def reconstruction_targets(videos: torch.Tensor, mask: torch.Tensor, *, patch_size: int | None = None,
                           tubelet_size: int = 2, normalize: bool = True,
                           frame_diff_group: int | None = 2) -> torch.Tensor:
    """Targets of the masked tokens ``[B, N_mask, tubelet * patch^2 * C]`` (raster order).

    ``videos`` are ImageNet-normalised clips ``[B, C, T, H, W]``; they are mapped back to [0, 1]
    with the float32 mean/std, as the official engine does. ``mask [B, N]`` (True = masked) is in
    raster token order. ``patch_size``: the model's (None: the one that gives ``N`` tokens with
    ``tubelet_size``; 16 for the released model). ``frame_diff_group``: ``None`` keeps plain
    pixels; ``g`` replaces every frame but the first of each group of ``g`` frames by its
    difference to that first frame (``g = 2``: ``[f0, f1 - f0]`` per tubelet, as released).
    """
    if patch_size is None:
        patch_size = infer_patch_size(videos.shape, mask.shape[-1], tubelet_size)
    target = _all_targets(videos, patch_size, tubelet_size, normalize, frame_diff_group)
    if target.shape[1] != mask.shape[-1]:
        raise ValueError(f"the mask has {mask.shape[-1]} tokens; {list(videos.shape)} clips in "
                         f"{tubelet_size}x{patch_size}x{patch_size} tubelets have {target.shape[1]}")
    return target[mask].view(videos.shape[0], -1, target.shape[-1])


def infer_patch_size(video_shape: Sequence[int], num_tokens: int, tubelet_size: int = 2) -> int:
    """The square patch side that cuts ``[B, C, T, H, W]`` clips into ``num_tokens`` tubelets."""
    t, h, w = video_shape[2:]
    area = t // tubelet_size * h * w / num_tokens
    side = int(round(math.sqrt(area)))
    if side < 1 or side * side * num_tokens * tubelet_size != t * h * w or h % side or w % side:
        raise ValueError(f"no square patch cuts {list(video_shape)} clips into {num_tokens} tokens "
                         f"with tubelet {tubelet_size}; pass patch_size")
    return side


def _all_targets(videos: torch.Tensor, patch_size: int, tubelet_size: int, normalize: bool,
                 frame_diff_group: int | None) -> torch.Tensor:
    """Targets of every token ``[B, N, tubelet * patch^2 * C]`` (see :func:`reconstruction_targets`)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=videos.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=videos.device).view(1, -1, 1, 1, 1)
    pixels = videos * std + mean
    patches = _patchify(pixels, patch_size, tubelet_size)                  # [B, N, q, p, p, C]
    b, n, q, p, _, c = patches.shape
    if normalize:
        flat = patches.reshape(b, n, q * p * p, c)
        flat = (flat - flat.mean(dim=2, keepdim=True)) / (flat.var(dim=2, unbiased=True, keepdim=True).sqrt() + 1e-6)
        patches = flat.view(b, n, q, p, p, c)
    if frame_diff_group:
        g = int(frame_diff_group)
        tn, hn, wn = videos.shape[2] // q, videos.shape[3] // p, videos.shape[4] // p
        if (tn * q) % g:
            raise ValueError(f"frame_diff_group {g} does not divide {tn * q} frames")
        # frames along one axis: [B, T, hn, wn, p, p, C] with T = tn * q
        frames = patches.view(b, tn, hn, wn, q, p, p, c).permute(0, 1, 4, 2, 3, 5, 6, 7).reshape(b, tn * q, hn, wn, p, p, c)
        groups = frames.view(b, tn * q // g, g, hn, wn, p, p, c)
        groups = torch.cat((groups[:, :, :1], groups[:, :, 1:] - groups[:, :, :1]), dim=2)
        patches = groups.view(b, tn, q, hn, wn, p, p, c).permute(0, 1, 3, 4, 2, 5, 6, 7).reshape(b, n, q, p, p, c)
    return patches.reshape(b, n, -1)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, diff_weight: float | None = None) -> torch.Tensor:
    """MSE over every value, or with ``diff_weight`` ``w``: ``(1 - w)`` x MSE of the first half of
    each token (appearance) + ``w`` x MSE of the second half (motion)."""
    if diff_weight is None:
        return F.mse_loss(pred, target)
    half = pred.shape[-1] // 2
    appearance = F.mse_loss(pred[..., :half], target[..., :half])
    motion = F.mse_loss(pred[..., half:], target[..., half:])
    return (1 - diff_weight) * appearance + diff_weight * motion


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
