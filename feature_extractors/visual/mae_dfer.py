"""``mae_dfer``: MAE-DFER's LGI-Former over the main face of each clip.

Weights are an official MAE-DFER checkpoint (or one written by ``python -m mer.pretrain``): a
weight tag (``mae_dfer_voxceleb2``, ``mae_dfer_dfew_fold1``..., see
:mod:`feature_extractors.weights`) or a path. A fine-tuned file gives the released feature; the
pretraining file gives the pretrained-only encoder (see ``feature``).

Faces come from the shared face pipeline (:func:`~.faces.load_face_clip`, options ``face``, a
:class:`~.faces.FaceConfig`, cached once per face config and shared with every extractor that
uses the same one; the organisers' crops when the sample has them). The default takes every
frame (``max_frames=0``: the official views need every ``sampling_stride``-th frame of the whole
track) at 160 px, the model's input: detected faces are cropped at 160 directly, and the
organisers' 112-px OpenFace crops are resized to 160, as the organisers' MER2024 baseline fed
them to sunlicai's 160-px VoxCeleb2 VideoMAE (``extract_sun_videomae.py --input_size 160``). With
``face.size=112`` (to share crops with 112-px extractors) the crops are resized to 160 here.

``level='utterance'`` (the official test views): every ``sampling_stride``-th frame of the track,
padded with the last frame to 16, ``num_views`` clips of 16 from its start to its end (the
official test uses 2: start and end), each 160 x 160 and ImageNet-normalised; the output is the
mean over views of (``[D]``, D = 512 for the released model)::

    feature='region'        fc_norm(mean of the 8 representative tokens)   (released; default)
    feature='org'           fc_norm(mean of the 800 local tokens)
    feature='all'           fc_norm(mean of all 808 tokens)
    feature='encoder_norm'  mean of encoder.norm(local tokens), all tokens visible
                            (pretraining checkpoints only; the pretrained encoder as trained)

``level='frame'``: the strided frames are cut into consecutive 16-frame windows covering the
whole track (the last one padded with the last frame), and each window gives one row per time
region of the model (4 for the released model, each 4 strided frames = 16 source frames at
stride 4): the same ``feature`` restricted to the tokens of that time region (``fc_norm`` of
their mean). Rows that would lie wholly in the padding are dropped, so the output is
``[ceil(L / 4), D]`` for L strided frames, in time order; its mean over rows is not the
utterance feature (other views, and ``fc_norm`` is applied per row). Row ``r`` is at the centre
of the source frames it spans (``r * 16 .. r * 16 + 15`` at stride 4, the last row cut at the
track's end) over the video's rate (:mod:`mer.core.timebase`; unknown without a rate).

From a pretraining checkpoint ``region``/``org``/``all`` use ``fc_norm`` at its initial weight 1
and bias 0, as fine-tuning starts (the official ``--finetune`` rule drops ``encoder.norm``).
With ``head_probs`` a fine-tuned checkpoint's class probabilities (in the head's class order;
the mean over views, or per row) are appended, giving ``D + num_classes`` values.

When the face track was sampled (``face.max_frames`` below the clip length), each wanted frame is
taken from the nearest sampled one; with every frame available the views are exactly the
official ones. Crops are resized with OpenCV (the official loader uses PIL bilinear).
``precision='auto'`` (the default) runs bf16 autocast on CUDA and float32 on a CPU, where it goes
through oneDNN (see :mod:`~.lgi_former`); ``'fp32'``, ``'bf16'`` (CUDA or CPU; features then
differ by about 2e-2) and ``'fp16'`` (CUDA) force one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from feature_extractors.base import EXTRACTORS
from feature_extractors.visual.faces import (
    FaceConfig,
)
from feature_extractors.visual.face_clip_encoder import (  # noqa: F401 - the view helpers, re-exported
    FaceClipEncoder,
    FrameViews,
    nearest_available,
    official_view_indices,
    resize_crops,
    window_indices,
)
from feature_extractors.visual.lgi_former import TOKEN_POOLS, load_mae_dfer
from feature_extractors.visual.lgi_former.checkpoints import clip_shape_from_args
from mer.core.failures import ExtractionFailure
from mer.core.samples import Sample
from mer.core.timebase import span_times, with_times

FEATURES = (*TOKEN_POOLS, "encoder_norm")
CLIP_FRAMES, IMAGE_SIZE = 16, 160
"""What every released MAE-DFER model takes: 16 frames of 160 x 160 (a checkpoint of another size
is fed its own: :meth:`MAEDFERExtractor.clip_shape`)."""
CLIPS_PER_FORWARD = 16
"""Clips per model call (a long clip at frame level has many windows)."""

DEFAULT_FACE = FaceConfig(size=IMAGE_SIZE, max_frames=0)
"""Every frame of the main face at the model's 160 px (the views pick every 4th frame)."""


@EXTRACTORS.register("mae_dfer")
class MAEDFERExtractor(FaceClipEncoder):
    """MAE-DFER LGI-Former over face crops -> float32 ``[D (+ num_classes)]`` or, with
    ``level='frame'``, ``[T, D (+ num_classes)]``."""

    name: ClassVar[str] = "mae_dfer"
    modality: ClassVar[str] = "visual"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("_model",)

    @dataclass(frozen=True)
    class Config:
        weights: str = "mae_dfer_voxceleb2"   # a weight tag or a checkpoint path
        feature: str = "region"               # 'region' | 'org' | 'all' | 'encoder_norm'
        level: str = "utterance"              # 'utterance' [D] (official views) | 'frame' [T, D]
        head_probs: bool = False              # append the fine-tuned head's class probabilities
        sampling_stride: int = 4              # official: 4 (DFEW, MAFW), 1 (FERV39k)
        num_views: int = 2                    # test clips per sample, start to end (utterance level)
        precision: str = "auto"               # 'auto': bf16 autocast on CUDA, fp32 on CPU | 'fp32' |
                                              # 'bf16' autocast (CUDA or CPU) | 'fp16' (CUDA; CPU stays fp32)
        batch_size: int = 8                   # samples per forward stage
        face: FaceConfig = field(default_factory=lambda: DEFAULT_FACE)   # how crops are made (shared cache)

    def __init__(self, config: "MAEDFERExtractor.Config | None" = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if self.config.feature not in FEATURES:
            raise ValueError(f"mae_dfer: feature must be one of {FEATURES}, got {self.config.feature!r}")
        self._check_common(DEFAULT_FACE)
        self._report = None

    # --- work -----------------------------------------------------------------------------
    def setup(self, device: str = "cpu") -> None:
        c = self.config
        layout = "pretrain_encoder" if c.feature == "encoder_norm" else "finetune"
        model, report = load_mae_dfer(self.weights_file(), layout=layout,
                                      token_pool=None if layout != "finetune" else c.feature)
        if c.head_probs and getattr(model, "head", None) is None:
            raise ValueError(f"mae_dfer: head_probs needs a fine-tuned checkpoint with a head; "
                             f"{report.path} is a {report.kind} checkpoint without one")
        if self._shape is not None and (model.cfg.num_frames, model.cfg.img_size) != self._shape:
            raise ValueError(f"mae_dfer: {report.path} builds a model of {model.cfg.num_frames} frames of "
                             f"{model.cfg.img_size} px, but its args say {self._shape}")
        self._model, self._report = model.to(device), report
        super().setup(device)

    def shape_from_args(self, args: Mapping[str, Any]) -> tuple[int, int]:
        """By :func:`~.lgi_former.checkpoints.infer_config`'s rules (``num_segments``, ``window_size``,
        the model name's size suffix)."""
        return clip_shape_from_args(args)

    @property
    def feature_dim(self) -> int:
        if self._model is None:
            raise RuntimeError("mae_dfer: feature_dim is known after setup()")
        head = self._model.head.out_features if self.config.head_probs else 0
        return self._model.cfg.embed_dim + head

    def forward(self, samples: Sequence[Sample], inputs: Sequence[np.ndarray | FrameViews]
                ) -> list[np.ndarray | ExtractionFailure]:
        frame_level = self.config.level == "frame"
        clips = [x.clips if frame_level else x for x in inputs]
        feats = self.embed_clips(np.concatenate(clips), per_time_region=frame_level)
        cfg = self._model.cfg
        frames_per_row = cfg.region_size[0] * cfg.tubelet_size           # one time region
        out, start = [], 0
        for x, views in zip(inputs, clips):
            mine = feats[start:start + len(views)]
            start += len(views)
            if frame_level:
                rows = math.ceil(x.frames / frames_per_row)
                out.append(with_times(mine.reshape(-1, mine.shape[-1])[:rows],
                                      self.row_times(rows, frames_per_row, x.total_frames, x.fps)))
            else:
                out.append(mine.mean(0).astype(np.float32))
        return out

    def row_times(self, rows: int, frames_per_row: int, total_frames: int, fps: float) -> np.ndarray | None:
        """Seconds of frame-level rows: row ``r`` spans the source frames of strided frames
        ``r * frames_per_row ..`` (``sampling_stride`` apart), cut at the track's last frame; its
        time is their centre. None when the rate is unknown."""
        span = frames_per_row * self.config.sampling_stride
        first = np.arange(rows) * span
        last = np.minimum(first + span, max(total_frames, 1)) - 1
        return span_times(first, np.maximum(last, first), fps)

    def embed_clips(self, clips: np.ndarray, per_time_region: bool = False) -> np.ndarray:
        """uint8 clips ``[N, T, S, S, 3]`` -> features ``[N, feature_dim]`` (float32), or
        ``[N, nt, feature_dim]`` per time region with ``per_time_region``."""
        if not self._ready:
            self.setup(self.device)
        out = [self._embed(clips[i:i + CLIPS_PER_FORWARD], per_time_region)
               for i in range(0, len(clips), CLIPS_PER_FORWARD)]
        return np.concatenate(out)

    def _embed(self, clips: np.ndarray, per_time_region: bool) -> np.ndarray:
        model, device, c = self._model, self.device, self.config
        x = self.normalised(clips)
        nt = model.cfg.region_grid[0]
        with self.precision_context():
            if c.feature == "encoder_norm":
                none_masked = torch.zeros(len(x), model.cfg.num_tokens, dtype=torch.bool, device=device)
                tokens = model.forward_visible(x, none_masked)                   # [N, n, C], time-major groups
                feats = tokens.view(len(x), nt, -1, tokens.shape[-1]).mean(2) if per_time_region else tokens.mean(1)
            elif per_time_region:
                tokens = model.forward_tokens(x)                                  # [N, R, 1 + S, C]
                by_time = tokens.view(len(x), nt, -1, *tokens.shape[2:])          # [N, nt, nh*nw, 1 + S, C]
                pooled = {"region": lambda t: t[:, :, :, 0].mean(2), "org": lambda t: t[:, :, :, 1:].mean((2, 3)),
                          "all": lambda t: t.mean((2, 3))}[c.feature](by_time)
                feats = model.fc_norm(pooled)                                     # [N, nt, C]
            else:
                feats = model.forward_features(x)
            if c.head_probs:
                feats = torch.cat((feats, torch.softmax(model.forward_head(feats).float(), -1).to(feats.dtype)), -1)
        return feats.float().cpu().numpy()
