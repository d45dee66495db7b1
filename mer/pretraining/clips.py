"""Training clips for MAE-DFER pretraining: frames per sample, cached once, then random 16-frame
clips with the official augmentation and a part-window mask.

* :class:`FrameStore` -- the frames of each sample as uint8 ``[T, S, S, 3]`` RGB ``.npy`` files
  (memory-mapped when read): the main face track (:func:`~feature_extractors.visual.faces.load_face_clip`,
  the organisers' crops when the sample has them) or the raw video frames, optionally cut to a
  fixed box first (the official VoxCeleb2 recipe cuts rows 0:160 and columns 32:192 of its
  224 x 224 face videos). :meth:`FrameStore.prepare` fills it for a list of samples in worker
  processes and returns the samples that have frames; the others are listed with their reason.
* :class:`PretrainClips` -- a ``torch`` dataset: the official TSN-style clip (16 frames, stride 4,
  from a random offset), ``GroupMultiScaleCrop`` (one of 13 fixed positions, side ``min(H, W)``
  times one of (1, .875, .75, .66), aspect distortion of at most one step, resized to 160
  bilinear), ImageNet normalisation, and a mask from
  :class:`~feature_extractors.visual.lgi_former.TubeWindowMaskGenerator`.
  Randomness comes from ``(seed, epoch, index)`` alone, so a run is the same whatever the number
  of loader workers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from feature_extractors.visual.faces import FaceConfig, face_config_from, load_face_clip
from feature_extractors.visual.lgi_former import IMAGENET_MEAN, IMAGENET_STD, LGIFormerConfig, TubeWindowMaskGenerator
from feature_extractors.visual.video import read_frames
from mer.core.failures import no_media_error
from mer.core.io import atomic_file
from mer.core.samples import Sample

log = logging.getLogger(__name__)


TRAINING_FACES = FaceConfig(size=160, max_frames=0)
"""Every frame of the main face at 160 px (the stride is applied when clips are drawn)."""


@dataclass(frozen=True)
class FrameSource:
    """Where training frames come from: ``face`` (the main face track, ``face.size`` pixels) or
    ``video`` (whole frames, cut to ``crop_box`` = (top, left, height, width) when given and
    resized to ``video_size`` square when > 0)."""

    kind: str = "face"
    face: FaceConfig = field(default_factory=lambda: TRAINING_FACES)
    crop_box: tuple[int, int, int, int] | None = None
    video_size: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("face", "video"):
            raise ValueError(f"frame source must be 'face' or 'video', got {self.kind!r}")
        object.__setattr__(self, "face", face_config_from(self.face, TRAINING_FACES))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:8]


def _safe_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
    return f"{clean}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def read_sample_frames(sample: Sample, source: FrameSource) -> np.ndarray:
    """The frames ``source`` takes from ``sample`` (uint8 ``[T, H, W, 3]`` RGB); raises
    :class:`~mer.core.failures.MediaError` when there are none."""
    import cv2  # deferred: loads cv2 only when used

    if source.kind == "face":
        return load_face_clip(sample, source.face).crops
    if not sample.video_path:
        raise no_media_error(sample, f"sample {sample.name} has no video_path")
    frames, _, _ = read_frames(sample.video_path, num_frames=1 << 30)
    if source.crop_box:
        top, left, h, w = source.crop_box
        frames = frames[:, top:top + h, left:left + w]
    if source.video_size:
        frames = np.stack([cv2.resize(f, (source.video_size,) * 2, interpolation=cv2.INTER_AREA) for f in frames])
    return np.ascontiguousarray(frames)


class FrameStore:
    """``<root>/<source digest>/<sample>.npy`` per sample, plus ``failures.jsonl``."""

    def __init__(self, root: str | Path, source: FrameSource = FrameSource()) -> None:
        self.source = source
        self.dir = Path(root) / f"{source.kind}-{source.digest()}"

    def path(self, name: str) -> Path:
        return self.dir / f"{_safe_name(name)}.npy"

    def load(self, name: str) -> np.ndarray:
        return np.load(self.path(name), mmap_mode="r", allow_pickle=False)

    def _fill_one(self, sample: Sample) -> tuple[str, str | None, str]:
        path = self.path(sample.name)
        if path.is_file():
            return sample.name, None, ""
        try:
            frames = read_sample_frames(sample, self.source)
        except Exception as err:  # noqa: BLE001 - a bad clip is skipped, as the official loader does
            return sample.name, getattr(err, "reason", "decode_error"), f"{type(err).__name__}: {err}"
        with atomic_file(path) as f:
            np.save(f, frames, allow_pickle=False)
        return sample.name, None, ""

    def prepare(self, samples: Sequence[Sample], num_workers: int = 0, progress: bool = True) -> list[Sample]:
        """Make sure every sample's frames are stored; return the samples that have frames. Those
        without (no face, unreadable media) are logged and appended to ``failures.jsonl``."""
        from tqdm.auto import tqdm  # deferred: loads tqdm only when used

        self.dir.mkdir(parents=True, exist_ok=True)
        todo = [s for s in samples if not self.path(s.name).is_file()]
        failed: dict[str, tuple[str, str]] = {}
        if todo:
            loader = torch.utils.data.DataLoader(_Fill(self, todo), batch_size=None, num_workers=num_workers)
            for name, reason, message in tqdm(loader, total=len(todo), desc="pretraining frames",
                                              unit="clip", disable=not progress, leave=False):
                if reason:
                    failed[name] = (reason, message)
            if failed:
                with open(self.dir / "failures.jsonl", "a", encoding="utf-8") as f:
                    for name, (reason, message) in failed.items():
                        f.write(json.dumps({"name": name, "reason": reason, "message": message}) + "\n")
                example = next(iter(failed.items()))
                log.warning("pretraining: %d of %d samples have no frames (e.g. %s: %s); they are left "
                            "out and listed in %s", len(failed), len(samples), example[0], example[1][1],
                            self.dir / "failures.jsonl")
        return [s for s in samples if s.name not in failed and self.path(s.name).is_file()]


class _Fill(torch.utils.data.Dataset):
    def __init__(self, store: FrameStore, samples: Sequence[Sample]) -> None:
        self.store, self.samples = store, list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[str, str | None, str]:
        return self.store._fill_one(self.samples[i])


# --- sampling and augmentation ---------------------------------------------------------------

def train_clip_indices(total: int, rng: np.random.RandomState, num_frames: int = 16, stride: int = 4) -> np.ndarray:
    """The official ``_sample_train_indices`` + TSN loader for one segment: a random start in
    ``[0, total - num_frames * stride]``, then every ``stride``-th frame; in a clip shorter than
    that the index stops advancing at the last frame it can reach (the frame is repeated)."""
    span = num_frames * stride
    offset = rng.randint(total - span + 1) if total - span + 1 > 0 else 0
    out = np.empty(num_frames, dtype=np.int64)
    pos = offset + 1                            # the official code counts from 1
    for i in range(num_frames):
        out[i] = pos - 1
        if pos + stride < total:
            pos += stride
    return out


MULTISCALE = (1.0, 0.875, 0.75, 0.66)


def multiscale_crop_box(height: int, width: int, size: int, rng: np.random.RandomState,
                        scales: Sequence[float] = MULTISCALE) -> tuple[int, int, int, int]:
    """``GroupMultiScaleCrop`` (``max_distort=1``, ``fix_crop``, ``more_fix_crop``): ``(left, top,
    crop_w, crop_h)``. Sides within 3 px of ``size`` snap to it."""
    base = min(height, width)
    sides = [int(base * s) for s in scales]
    snap = [size if abs(s - size) < 3 else s for s in sides]
    pairs = [(w, h) for i, h in enumerate(snap) for j, w in enumerate(snap) if abs(i - j) <= 1]
    crop_w, crop_h = pairs[rng.randint(len(pairs))]
    ws, hs = (width - crop_w) // 4, (height - crop_h) // 4
    offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs),
               (0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
               (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
    left, top = offsets[rng.randint(len(offsets))]
    return left, top, crop_w, crop_h


def normalize_clip(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[3, T, H, W]``: /255, then ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class ClipSampling:
    """How training clips are drawn. ``None`` sizes follow the model (:meth:`for_model`): its
    frames, image size and token grid, and mask windows of its region's (h, w), as the official
    scripts pass ``--part_win_size`` equal to ``--lg_region_size``."""

    num_frames: int | None = None
    stride: int = 4
    input_size: int | None = None
    augment: bool = True            # GroupMultiScaleCrop; False: resize the whole frame
    mask_ratio: float = 0.9
    mask_window: tuple[int, int] | None = None
    token_grid: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("mask_window", "token_grid"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))

    def for_model(self, cfg: LGIFormerConfig, check: bool = True) -> "ClipSampling":
        """These settings with every ``None`` size taken from the encoder config ``cfg``; with
        ``check`` a size given that does not fit ``cfg`` raises."""
        filled = dataclasses.replace(
            self, num_frames=self.num_frames or cfg.num_frames, input_size=self.input_size or cfg.img_size,
            token_grid=self.token_grid or cfg.token_grid, mask_window=self.mask_window or cfg.region_size[1:])
        if check and (filled.num_frames, filled.input_size, filled.token_grid) != (
                cfg.num_frames, cfg.img_size, cfg.token_grid):
            raise ValueError(f"sampling {self} does not fit the model ({cfg.num_frames} frames of {cfg.img_size} px, "
                             f"token grid {cfg.token_grid})")
        return filled


class PretrainClips(torch.utils.data.Dataset):
    """Item ``i``: ``(clip [3, T, S, S] float32, mask [N] bool)`` for sample ``i``; call
    :meth:`set_epoch` before each epoch (new offsets, crops and masks)."""

    def __init__(self, names: Sequence[str], store: FrameStore, sampling: ClipSampling = ClipSampling(),
                 seed: int = 0) -> None:
        """``sampling`` with sizes left ``None`` gets the released model's (see :meth:`ClipSampling.for_model`)."""
        self.names = list(names)
        sampling = sampling.for_model(LGIFormerConfig(), check=False)
        self.store, self.sampling, self.seed = store, sampling, seed
        self.masks = TubeWindowMaskGenerator(sampling.token_grid, sampling.mask_ratio, sampling.mask_window)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import cv2  # deferred: loads cv2 only when used

        s = self.sampling
        rng = np.random.RandomState(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0])
        track = self.store.load(self.names[i])
        frames = np.asarray(track[train_clip_indices(len(track), rng, s.num_frames, s.stride)])
        h, w = frames.shape[1:3]
        left, top, cw, ch = (multiscale_crop_box(h, w, s.input_size, rng) if s.augment else (0, 0, w, h))
        out = np.stack([cv2.resize(f[top:top + ch, left:left + cw], (s.input_size, s.input_size),
                                   interpolation=cv2.INTER_LINEAR) for f in frames])
        return normalize_clip(out), torch.from_numpy(self.masks(rng))
