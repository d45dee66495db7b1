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
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import IMAGENET_MEAN, IMAGENET_STD


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
