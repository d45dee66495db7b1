"""``svfap``: SVFAP's TPSBT encoder over the main face of each clip.

Weights are an official SVFAP checkpoint: a weight tag (``svfap_voxceleb2``, the pretrained
encoder; ``svfap_dfew_fold1``..``5``, ``svfap_mafw_fold1``..``5``, ``svfap_ferv39k``, fine-tuned;
see :mod:`feature_extractors.weights`) or a path. The clip size is the checkpoint's (16 frames of
160 px as released; any other size a checkpoint holds runs too).

Faces come from the shared face pipeline, as for ``mae_dfer`` (the same :class:`~.faces.FaceConfig`
shares its cache). ``level='utterance'``: the official test views (``run_class_finetuning.py``
with ``--test_num_segment 2 --sampling_rate 4``): every ``sampling_stride``-th frame of the track,
padded with the last to the clip length, ``num_views`` clips from its start to its end, each
ImageNet-normalised; the output is the mean over views of ``fc_norm(mean of the last tokens)``
(``[D]``, 512 as released). The official test also takes 2 spatial crops of the short side; a
square face crop at the model's size has only one. ``level='frame'``: consecutive clips over the
whole track, each giving one row per time step left after the temporal pyramid (2 as released,
each 8 strided frames = 32 source frames at stride 4), ``fc_norm`` of that step's mean token:
mer's own frame level (the official ``keep_temporal_dim`` path cannot run after the pyramid).
Rows that lie wholly in the last clip's padding are dropped; each row is at the centre of the
source frames it spans. ``head_probs`` appends a fine-tuned checkpoint's class probabilities.
``precision``: as ``mae_dfer`` (``auto`` = bf16 autocast on CUDA, fp32 on a CPU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from feature_extractors.base import EXTRACTORS
from feature_extractors.visual.faces import (
    FaceConfig,
)
from feature_extractors.visual.face_clip_encoder import FaceClipEncoder
from feature_extractors.visual.mae_dfer import (FrameViews)
from feature_extractors.visual.tpsbt import load_svfap
from mer.core.failures import ExtractionFailure
from mer.core.samples import Sample
from mer.core.timebase import span_times, with_times

CLIPS_PER_FORWARD = 16
DEFAULT_FACE = FaceConfig(size=160, max_frames=0)


@EXTRACTORS.register("svfap")
class SVFAPExtractor(FaceClipEncoder):
    """SVFAP TPSBT over face crops -> float32 ``[D (+ num_classes)]`` or, with ``level='frame'``,
    ``[T, D (+ num_classes)]``."""

    name: ClassVar[str] = "svfap"
    modality: ClassVar[str] = "visual"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("_model",)

    @dataclass(frozen=True)
    class Config:
        weights: str = "svfap_voxceleb2"      # a weight tag or a checkpoint path
        level: str = "utterance"              # 'utterance' [D] (official views) | 'frame' [T, D]
        head_probs: bool = False              # append the fine-tuned head's class probabilities
        sampling_stride: int = 4              # official: 4 (DFEW, MAFW), 1 (FERV39k)
        num_views: int = 2                    # test clips per sample, start to end (utterance level)
        num_heads: int = 0                    # 0: from the checkpoint's args (model name), else this
        precision: str = "auto"               # 'auto' | 'fp32' | 'bf16' | 'fp16' (as mae_dfer)
        batch_size: int = 8
        face: FaceConfig = field(default_factory=lambda: DEFAULT_FACE)

    def __init__(self, config: "SVFAPExtractor.Config | None" = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._check_common(DEFAULT_FACE)
        self._report = None

    def setup(self, device: str = "cpu") -> None:
        model, report = load_svfap(self.weights_file(), num_heads=self.config.num_heads or None)
        if self.config.head_probs and model.head is None:
            raise ValueError(f"svfap: head_probs needs a fine-tuned checkpoint with a head; {report.path} is a "
                             f"{report.kind} checkpoint without one")
        self._model, self._report = model.to(device), report
        super().setup(device)

    @property
    def feature_dim(self) -> int:
        if self._model is None:
            raise RuntimeError("svfap: feature_dim is known after setup()")
        head = self._model.head.out_features if self.config.head_probs and self._model.head is not None else 0
        return self._model.cfg.embed_dim + head

    def forward(self, samples: Sequence[Sample], inputs: Sequence[np.ndarray | FrameViews]
                ) -> list[np.ndarray | ExtractionFailure]:
        frame_level = self.config.level == "frame"
        clips = [x.clips if frame_level else x for x in inputs]
        feats = self.embed_clips(np.concatenate(clips), per_step=frame_level)
        cfg = self._model.cfg
        strided_per_row = cfg.num_frames // cfg.output_steps
        out, start = [], 0
        for x, views in zip(inputs, clips):
            mine = feats[start:start + len(views)]
            start += len(views)
            if frame_level:
                rows = math.ceil(x.frames / strided_per_row)
                span = strided_per_row * self.config.sampling_stride
                first = np.arange(rows) * span
                last = np.minimum(first + span, max(x.total_frames, 1)) - 1
                out.append(with_times(mine.reshape(-1, mine.shape[-1])[:rows],
                                      span_times(first, np.maximum(last, first), x.fps)))
            else:
                out.append(mine.mean(0).astype(np.float32))
        return out

    def embed_clips(self, clips: np.ndarray, per_step: bool = False) -> np.ndarray:
        """uint8 clips ``[N, T, S, S, 3]`` -> ``[N, feature_dim]``, or ``[N, steps, feature_dim]``."""
        if not self._ready:
            self.setup(self.device)
        return np.concatenate([self._embed(clips[i:i + CLIPS_PER_FORWARD], per_step)
                               for i in range(0, len(clips), CLIPS_PER_FORWARD)])

    def _embed(self, clips: np.ndarray, per_step: bool) -> np.ndarray:
        model, c = self._model, self.config
        x = self.normalised(clips)
        with self.precision_context():
            feats = model.forward_steps(x) if per_step else model.forward_features(x)
            if c.head_probs:
                feats = torch.cat((feats, torch.softmax(model.forward_head(feats).float(), -1).to(feats.dtype)), -1)
        return feats.float().cpu().numpy()
