"""What the video encoders over face clips share (``mae_dfer``, ``svfap``, ``hicmae``): weights from
a tag or a path, a cache key over the weights and the face pipeline, the checks of the common
options, the clips' ImageNet normalisation and the precision (autocast) they run in."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from feature_extractors.base import Extractor
from feature_extractors.checkpoints import read_checkpoint_args
from feature_extractors.visual.faces import (
    FaceClip,
    FaceConfig,
    clip_rate,
    face_config_from,
    face_key_config,
    face_weights_digest,
    load_face_clip,
    validate_face_config,
)
from feature_extractors.visual.lgi_former import IMAGENET_MEAN, IMAGENET_STD
from feature_extractors.weights import resolve_weights
from mer.core.hashing import file_digest
from mer.core.samples import Sample

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LEVELS = ("utterance", "frame")


# --- the views: which frames of a face track each clip takes ------------------------------------
def official_view_indices(total: int, clip_frames: int = 16, stride: int = 4, num_views: int = 2) -> np.ndarray:
    """Frame indices ``[num_views, clip_frames]`` of the official test views: every ``stride``-th
    frame of ``range(total)`` (padded with the last to ``clip_frames``), then ``num_views`` clips
    starting at ``int(k * (L - clip_frames) / (num_views - 1))`` (one view: the start)."""
    if total < 1:
        raise ValueError("a clip needs at least one frame")
    idx = list(range(0, total, stride))
    idx += [idx[-1]] * (clip_frames - len(idx))
    step = max((len(idx) - clip_frames) / (num_views - 1), 0.0) if num_views > 1 else 0.0
    return np.array([idx[int(k * step):int(k * step) + clip_frames] for k in range(num_views)], dtype=np.int64)


def window_indices(total: int, clip_frames: int = 16, stride: int = 4) -> tuple[np.ndarray, int]:
    """Frame indices ``[W, clip_frames]`` of consecutive windows over every ``stride``-th frame of
    ``range(total)`` (the last window padded with the last frame), and the number L of strided
    frames (the frame-level views)."""
    if total < 1:
        raise ValueError("a clip needs at least one frame")
    idx = np.arange(0, total, stride, dtype=np.int64)
    windows = math.ceil(len(idx) / clip_frames)
    padded = np.concatenate((idx, np.full(windows * clip_frames - len(idx), idx[-1], dtype=np.int64)))
    return padded.reshape(windows, clip_frames), len(idx)


def nearest_available(wanted: np.ndarray, available: np.ndarray) -> np.ndarray:
    """For each wanted frame index, the position in ``available`` (sorted frame indices) of the
    nearest one (the earlier on a tie)."""
    pos = np.searchsorted(available, wanted)
    lo = np.clip(pos - 1, 0, len(available) - 1)
    hi = np.clip(pos, 0, len(available) - 1)
    return np.where(np.abs(wanted - available[lo]) <= np.abs(available[hi] - wanted), lo, hi)


@dataclass(frozen=True)
class FrameViews:
    """What :meth:`FaceClipEncoder.load` gives at frame level: uint8 windows ``[W, 16, S, S, 3]``
    and the number of strided frames they hold before the last window's padding."""

    clips: np.ndarray
    frames: int
    total_frames: int = 0     # source frames of the track the strided frames come from
    fps: float = 0.0          # their rate (0.0: unknown, the rows then have no times)


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """Square crops ``[K, s, s, 3]`` -> ``[K, size, size, 3]`` (area when shrinking, bilinear when
    growing, as the crops came)."""
    if crops.shape[1:3] == (size, size):
        return crops
    import cv2  # deferred: loads cv2 only when used

    interp = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in crops])


# --- the base ----------------------------------------------------------------------------------


class FaceClipEncoder(Extractor):
    """Base of the face-clip encoders. Subclasses' configs have ``weights``, ``level``,
    ``sampling_stride``, ``num_views``, ``precision`` and ``face``; they call
    :meth:`_check_common` with their default face config from ``__init__``."""

    def _check_common(self, default_face: FaceConfig) -> None:
        # Hydra hands ``face`` over as a mapping of the fields it sets (over the extractor's default).
        self.config = dataclasses.replace(self.config, face=face_config_from(self.config.face, default_face))
        c = self.config
        if c.level not in LEVELS:
            raise ValueError(f"{self.name}: level must be one of {LEVELS}, got {c.level!r}")
        if c.precision not in PRECISIONS:
            raise ValueError(f"{self.name}: precision must be one of {PRECISIONS}, got {c.precision!r}")
        if c.sampling_stride < 1 or c.num_views < 1:
            raise ValueError(f"{self.name}: sampling_stride and num_views must be >= 1")
        validate_face_config(c.face)
        self.level = c.level
        self._model: Any = None
        self._shape: tuple[int, int] | None = None     # (frames, pixels), read from the file once

    # --- identity -------------------------------------------------------------------------
    def weights_file(self) -> str:
        return str(resolve_weights(self.config.weights))

    def weights_digest(self) -> str:
        digest = file_digest(self.weights_file())
        face = face_weights_digest(self.config.face)
        return digest if face == "none" else f"{digest}+face:{face}"

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        return {**identity, "config": face_key_config(identity["config"])}

    def clip_shape(self) -> tuple[int, int]:
        """``(frames, pixels)`` of the checkpoint's clips: the loaded model's, else its file's
        ``args`` (:meth:`shape_from_args`; read without its tensors, once per process: the decoding
        workers never load the model)."""
        if self._model is not None:
            return self._model.cfg.num_frames, self._model.cfg.img_size
        if self._shape is None:
            self._shape = self.shape_from_args(read_checkpoint_args(self.weights_file()))
        return self._shape

    def shape_from_args(self, args: Mapping[str, Any]) -> tuple[int, int]:
        """``(args.num_frames, args.input_size)``, 16 and 160 when absent."""
        return int(args.get("num_frames") or 16), int(args.get("input_size") or 160)

    # --- work -----------------------------------------------------------------------------
    def face_views(self, sample: Sample) -> tuple[FaceClip, np.ndarray, int, np.ndarray]:
        """``(the face track, frame indices [V, T], strided frames, uint8 crops [V, T, S, S, 3])``:
        the official test views at utterance level, consecutive windows at frame level, each
        wanted frame taken from the nearest one the track has, at the checkpoint's clip size."""
        c = self.config
        frames, size = self.clip_shape()
        clip = load_face_clip(sample, c.face, self.context)
        if c.level == "frame":
            wanted, strided = window_indices(clip.total_frames, frames, c.sampling_stride)
        else:
            wanted = official_view_indices(clip.total_frames, frames, c.sampling_stride, c.num_views)
            strided = 0
        crops = resize_crops(clip.crops[nearest_available(wanted.reshape(-1), clip.frame_index)], size)
        return clip, wanted, strided, crops.reshape(len(wanted), frames, size, size, 3)

    def load(self, sample: Sample) -> np.ndarray | FrameViews:
        """uint8 RGB clips: ``[views, T, S, S, 3]`` (the official test views) at utterance level,
        :class:`FrameViews` (consecutive windows) at frame level."""
        clip, _, strided, crops = self.face_views(sample)
        if self.config.level == "frame":
            return FrameViews(crops, strided, clip.total_frames, clip_rate(clip, sample.video_path))
        return crops

    def normalised(self, clips: np.ndarray) -> torch.Tensor:
        """uint8 clips ``[N, T, S, S, 3]`` -> float32 ``[N, 3, T, S, S]`` on the device, /255 and
        ImageNet mean/std."""
        device = self.device
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(device)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1, 1)
        return (x.permute(0, 4, 1, 2, 3).float() / 255 - mean) / std

    def precision_context(self) -> contextlib.AbstractContextManager:
        """Inference mode and the configured precision: ``auto`` is bf16 autocast on CUDA and fp32
        on a CPU; bf16 autocast also runs on CPUs, fp16 only on CUDA (a CPU then stays fp32)."""
        kind = torch.device(self.device).type
        c = self.config
        precision = ("bf16" if kind == "cuda" else "fp32") if c.precision == "auto" else c.precision
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        enabled = dtype is not None and (kind == "cuda" or dtype == torch.bfloat16)
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast(kind, dtype=dtype or torch.float32, enabled=enabled))
        return stack
