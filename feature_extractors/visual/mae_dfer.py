"""``mae_dfer``: MAE-DFER's LGI-Former over the main face of each clip, one vector per clip.

Weights are an official MAE-DFER checkpoint (or one written by ``python -m mer.pretrain``): a
weight tag (``mae_dfer_voxceleb2``, ``mae_dfer_dfew_fold1``..., see
:mod:`feature_extractors.weights`) or a path. A fine-tuned file gives the released feature; the
pretraining file gives the pretrained-only encoder (see ``feature``).

Per sample, as the official test loader does it: the main-face crops of the clip
(:func:`~.faces.load_face_clip`; the organisers' crops when the sample has them), every
``sampling_stride``-th frame, padded with the last frame to 16, ``num_views`` clips of 16 from
its start to its end (the official test uses 2: start and end), each resized to 160 x 160 and
ImageNet-normalised; the feature is the mean over views of (D = 512 for the released model)::

    feature='region'        fc_norm(mean of the 8 representative tokens)   (released; default)
    feature='org'           fc_norm(mean of the 800 local tokens)
    feature='all'           fc_norm(mean of all 808 tokens)
    feature='encoder_norm'  mean of encoder.norm(local tokens), all tokens visible
                            (pretraining checkpoints only; the pretrained encoder as trained)

From a pretraining checkpoint ``region``/``org``/``all`` use ``fc_norm`` at its initial weight 1
and bias 0, as fine-tuning starts (the official ``--finetune`` rule drops ``encoder.norm``).
With ``head_probs`` a fine-tuned checkpoint's class probabilities (mean over views, in the
head's class order) are appended, giving ``D + num_classes`` values.

When the face track was sampled (``face.max_frames`` below the clip length), each wanted frame is
taken from the nearest sampled one; with every frame available the views are exactly the
official ones. Crops are resized with OpenCV (the official loader uses PIL bilinear).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from feature_extractors.base import EXTRACTORS, ExtractionFailure, Extractor, file_digest
from feature_extractors.visual.faces import FaceConfig, load_face_clip
from feature_extractors.visual.lgi_former import IMAGENET_MEAN, IMAGENET_STD, TOKEN_POOLS, load_mae_dfer
from mer.data.manifest import Sample

FEATURES = (*TOKEN_POOLS, "encoder_norm")
CLIP_FRAMES, IMAGE_SIZE = 16, 160
"""What every released MAE-DFER model takes: 16 frames of 160 x 160."""
PRECISIONS = ("fp32", "bf16", "fp16")


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


def nearest_available(wanted: np.ndarray, available: np.ndarray) -> np.ndarray:
    """For each wanted frame index, the position in ``available`` (sorted frame indices) of the
    nearest one (the earlier on a tie)."""
    pos = np.searchsorted(available, wanted)
    lo = np.clip(pos - 1, 0, len(available) - 1)
    hi = np.clip(pos, 0, len(available) - 1)
    return np.where(np.abs(wanted - available[lo]) <= np.abs(available[hi] - wanted), lo, hi)


@EXTRACTORS.register("mae_dfer")
class MAEDFERExtractor(Extractor):
    """MAE-DFER LGI-Former over face crops -> float32 ``[embed_dim (+ num_classes)]``."""

    name: ClassVar[str] = "mae_dfer"
    modality: ClassVar[str] = "visual"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("_model",)

    @dataclass(frozen=True)
    class Config:
        weights: str = "mae_dfer_voxceleb2"   # a weight tag or a checkpoint path
        feature: str = "region"               # 'region' | 'org' | 'all' | 'encoder_norm'
        head_probs: bool = False              # append the fine-tuned head's class probabilities
        sampling_stride: int = 4              # official: 4 (DFEW, MAFW), 1 (FERV39k)
        num_views: int = 2                    # test clips per sample, start to end
        precision: str = "fp32"               # 'bf16' autocast (CUDA or CPU) | 'fp16' (CUDA; CPU stays fp32)
        batch_size: int = 8                   # samples per forward stage
        face: FaceConfig = field(default_factory=lambda: FaceConfig(size=160, max_frames=64))

    def __init__(self, config: "MAEDFERExtractor.Config | None" = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        if c.feature not in FEATURES:
            raise ValueError(f"mae_dfer: feature must be one of {FEATURES}, got {c.feature!r}")
        if c.precision not in PRECISIONS:
            raise ValueError(f"mae_dfer: precision must be one of {PRECISIONS}, got {c.precision!r}")
        if c.sampling_stride < 1 or c.num_views < 1:
            raise ValueError("mae_dfer: sampling_stride and num_views must be >= 1")
        self._model = None
        self._report = None

    # --- identity -------------------------------------------------------------------------
    def weights_file(self) -> str:
        from feature_extractors.weights import resolve_weights

        return str(resolve_weights(self.config.weights))

    def weights_digest(self) -> str:
        return file_digest(self.weights_file())

    # --- work -----------------------------------------------------------------------------
    def setup(self, device: str = "cpu") -> None:
        c = self.config
        layout = "pretrain_encoder" if c.feature == "encoder_norm" else "finetune"
        model, report = load_mae_dfer(self.weights_file(), layout=layout,
                                      token_pool=None if layout != "finetune" else c.feature)
        if c.head_probs and getattr(model, "head", None) is None:
            raise ValueError(f"mae_dfer: head_probs needs a fine-tuned checkpoint with a head; "
                             f"{report.path} is a {report.kind} checkpoint without one")
        if (model.cfg.num_frames, model.cfg.img_size) != (CLIP_FRAMES, IMAGE_SIZE):
            raise ValueError(f"mae_dfer: {report.path} takes {model.cfg.num_frames} frames of "
                             f"{model.cfg.img_size} px; the extractor feeds {CLIP_FRAMES} of {IMAGE_SIZE}")
        self._model, self._report = model.to(device), report
        super().setup(device)

    @property
    def feature_dim(self) -> int:
        if self._model is None:
            raise RuntimeError("mae_dfer: feature_dim is known after setup()")
        head = self._model.head.out_features if self.config.head_probs else 0
        return self._model.cfg.embed_dim + head

    def load(self, sample: Sample) -> np.ndarray:
        """uint8 ``[views, 16, 160, 160, 3]`` RGB: the test views of the sample's face track."""
        import cv2

        c, size = self.config, IMAGE_SIZE
        clip = load_face_clip(sample, c.face, self.context)
        wanted = official_view_indices(clip.total_frames, CLIP_FRAMES, c.sampling_stride, c.num_views)
        crops = clip.crops[nearest_available(wanted.reshape(-1), clip.frame_index)]
        if crops.shape[1:3] != (size, size):
            interp = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_LINEAR
            crops = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in crops])
        return crops.reshape(c.num_views, CLIP_FRAMES, size, size, 3)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[np.ndarray]) -> list[np.ndarray | ExtractionFailure]:
        views = np.concatenate(inputs)                                  # [sum V, T, S, S, 3]
        feats = self.embed_clips(views)
        out, start = [], 0
        for x in inputs:
            out.append(feats[start:start + len(x)].mean(0).astype(np.float32))
            start += len(x)
        return out

    def embed_clips(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips ``[N, T, S, S, 3]`` -> per-clip features ``[N, feature_dim]`` (float32)."""
        if not self._ready:
            self.setup(self.device)
        model, device = self._model, self.device
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(device)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1, 1)
        x = (x.permute(0, 4, 1, 2, 3).float() / 255 - mean) / std
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.precision)
        kind = torch.device(device).type
        # bf16 autocast also runs on CPUs (about 2.4x faster here); fp16 only on CUDA
        enabled = dtype is not None and (kind == "cuda" or dtype == torch.bfloat16)
        with torch.inference_mode(), torch.autocast(kind, dtype=dtype or torch.float32, enabled=enabled):
            if self.config.feature == "encoder_norm":
                none_masked = torch.zeros(len(x), model.cfg.num_tokens, dtype=torch.bool, device=device)
                feats = model.forward_visible(x, none_masked).mean(1)
            else:
                feats = model.forward_features(x)
                if self.config.head_probs:
                    feats = torch.cat((feats, torch.softmax(model.forward_head(feats).float(), -1)), -1)
        return feats.float().cpu().numpy()
