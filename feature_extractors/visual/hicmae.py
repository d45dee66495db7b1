"""``hicmae``: HiCMAE's audio-visual encoder over each clip's main face and its audio.

Weights are an official HiCMAE checkpoint: a weight tag (``hicmae_voxceleb2``, pretrained;
``hicmae_cremad_fold1``..``5``, ``hicmae_mafw_fold1``..``5``, fine-tuned) or a path; clip and
spectrogram sizes are the checkpoint's (16 frames of 160 px and 256 x 128 as released).

Inputs as the official test (``kinetics_av.py``, ``--test_num_segment 2 --sampling_rate 4``):
``num_views`` clips of every ``sampling_stride``-th frame of the face track from its start to its
end (as ``mae_dfer``), and for each the audio between its first and last frame (the same share of
the waveform; the whole waveform when that span is 1,024 samples or fewer), mean removed, as a
Kaldi log-mel filterbank (:mod:`feature_extractors.audio.kaldi_fbank`: 128 bins, 25 ms / 10 ms,
Hann window) zero-padded or cut to the checkpoint's frame count, normalised as
``(fbank + 4.2677393) / (2 * 4.5689974)`` (the official AudioSet statistics). The frames are
ImageNet-normalised.

``parts`` picks what of the official feature (``fc_norm`` over the concatenation of
``video, audio, fusion_video, fusion_audio``) is kept, in that order (all four: ``[2 (Dv + Da)]``,
2048 as released). ``level='utterance'``: the mean over views; ``level='frame'``: one row per
consecutive clip of the strided track (each with its audio), at the centre of its source frames.
``head_probs`` appends a fine-tuned checkpoint's class probabilities. A sample without a face or
without audio fails with the reason (both are needed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from feature_extractors.audio.io import load_audio
from feature_extractors.audio.kaldi_fbank import kaldi_fbank
from feature_extractors.base import EXTRACTORS, Inputs
from feature_extractors.visual.avit import PARTS, load_hicmae
from feature_extractors.visual.faces import (
    FaceConfig,
    clip_rate,
)
from feature_extractors.visual.face_clip_encoder import FaceClipEncoder
from feature_extractors.checkpoints import read_checkpoint_args
from mer.core.failures import ExtractionFailure, MediaError
from mer.core.samples import Sample
from mer.core.timebase import span_times, with_times

AUDIO_MEAN, AUDIO_STD = -4.2677393, 4.5689974
"""``norm_stats['audioset']`` of ``run_class_finetuning_av.py``."""
SAMPLE_RATE = 16000
MIN_AUDIO = 1024
DEFAULT_FACE = FaceConfig(size=160, max_frames=0)


@dataclass(frozen=True)
class AVViews:
    """What :meth:`HiCMAEExtractor.load` gives: uint8 clips ``[V, T, S, S, 3]``, normalised
    spectrograms ``[V, T_a, F]`` float32, and (frame level) the clips' source-frame spans."""

    clips: np.ndarray
    spectrograms: np.ndarray
    first: np.ndarray
    last: np.ndarray
    fps: float = 0.0


def spectrogram(wav: np.ndarray, frames: int, bins: int) -> np.ndarray:
    """``[frames, bins]``: the official input of a waveform segment (module docstring)."""
    fb = kaldi_fbank(wav - wav.mean(), SAMPLE_RATE, bins)
    out = np.zeros((frames, bins), np.float32)
    out[:min(frames, len(fb))] = fb[:frames]
    return (out - AUDIO_MEAN) / (AUDIO_STD * 2)


def audio_segment(wav: np.ndarray, first: int, last: int, total: int) -> np.ndarray:
    """The waveform between source frames ``first`` and ``last`` of ``total`` (the same share of
    its length), or the whole waveform when that is ``MIN_AUDIO`` samples or fewer."""
    start, end = int(first / max(total, 1) * len(wav)), int(last / max(total, 1) * len(wav))
    return wav if end - start <= MIN_AUDIO else wav[start:end]


@EXTRACTORS.register("hicmae")
class HiCMAEExtractor(FaceClipEncoder):
    """HiCMAE over face crops and audio -> float32 ``[D (+ num_classes)]`` or ``[T, D (+ ...)]``."""

    name: ClassVar[str] = "hicmae"
    modality: ClassVar[str] = "visual"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("_model",)

    @dataclass(frozen=True)
    class Config:
        weights: str = "hicmae_voxceleb2"     # a weight tag or a checkpoint path
        parts: tuple[str, ...] = PARTS        # of video, audio, fusion_video, fusion_audio (official: all four)
        level: str = "utterance"              # 'utterance' [D] | 'frame' [T, D]
        head_probs: bool = False
        sampling_stride: int = 4
        num_views: int = 2
        num_heads: int = 0                    # 0: from the checkpoint (the released model name)
        precision: str = "auto"
        batch_size: int = 4
        face: FaceConfig = field(default_factory=lambda: DEFAULT_FACE)

    def __init__(self, config: "HiCMAEExtractor.Config | None" = None, **overrides: Any) -> None:
        if overrides.get("parts") is not None:
            overrides["parts"] = tuple(str(p) for p in overrides["parts"])
        super().__init__(config, **overrides)
        c = self.config
        if not c.parts or any(p not in PARTS for p in c.parts) or len(set(c.parts)) != len(c.parts):
            raise ValueError(f"hicmae: parts must be distinct names of {PARTS}, got {list(c.parts)}")
        self._check_common(DEFAULT_FACE)
        self._audio_shape: tuple[int, int] | None = None

    def inputs(self, sample: Sample) -> Inputs:
        return Inputs(files={"face": sample.face_path, "video": sample.video_path,
                             "audio": sample.audio_path or sample.video_path})

    def setup(self, device: str = "cpu") -> None:
        model, report = load_hicmae(self.weights_file(), num_heads=self.config.num_heads or None)
        if self.config.head_probs and model.head is None:
            raise ValueError(f"hicmae: head_probs needs a fine-tuned checkpoint with a head; {report.path} has none")
        self._model = model.to(device)
        super().setup(device)

    def audio_shape(self) -> tuple[int, int]:
        """``(audio frames, mel bins)`` of the checkpoint's spectrograms: the loaded model's, else
        its file's ``args`` (``input_size_audio``, ``num_mel_bins``; 256 and 128 when absent)."""
        if self._model is not None:
            return self._model.cfg.audio_size
        if self._audio_shape is None:
            args = read_checkpoint_args(self.weights_file())
            self._audio_shape = (int(args.get("input_size_audio") or 256), int(args.get("num_mel_bins") or 128))
        return self._audio_shape

    def load(self, sample: Sample) -> AVViews:
        if not (sample.audio_path or sample.video_path):
            raise MediaError("no_media", f"{sample.name} has no audio (hicmae needs the face and the voice)")
        audio_frames, bins = self.audio_shape()
        clip, wanted, _, crops = self.face_views(sample)
        wav = load_audio(sample, SAMPLE_RATE)
        first, last = wanted[:, 0], wanted[:, -1]
        specs = np.stack([spectrogram(audio_segment(wav, int(a), int(b), clip.total_frames), audio_frames, bins)
                          for a, b in zip(first, last)])
        return AVViews(crops, specs, first, last, clip_rate(clip, sample.video_path))

    @property
    def feature_dim(self) -> int:
        if self._model is None:
            raise RuntimeError("hicmae: feature_dim is known after setup()")
        c = self._model.cfg
        widths = {"video": c.embed_dim, "audio": c.embed_dim_audio, "fusion_video": c.embed_dim,
                  "fusion_audio": c.embed_dim_audio}
        head = self._model.head.out_features if self.config.head_probs and self._model.head is not None else 0
        return sum(widths[p] for p in self.config.parts) + head

    def forward(self, samples: Sequence[Sample], inputs: Sequence[AVViews]) -> list[np.ndarray | ExtractionFailure]:
        feats = self.embed(np.concatenate([x.clips for x in inputs]), np.concatenate([x.spectrograms for x in inputs]))
        out, start = [], 0
        for x in inputs:
            mine = feats[start:start + len(x.clips)]
            start += len(x.clips)
            if self.config.level == "frame":
                out.append(with_times(mine, span_times(x.first, np.maximum(x.last, x.first), x.fps)))
            else:
                out.append(mine.mean(0).astype(np.float32))
        return out

    def embed(self, clips: np.ndarray, spectrograms: np.ndarray) -> np.ndarray:
        """uint8 clips ``[N, T, S, S, 3]`` and spectrograms ``[N, T_a, F]`` -> ``[N, feature_dim]``."""
        if not self._ready:
            self.setup(self.device)
        step = max(int(self.config.batch_size), 1)
        return np.concatenate([self._embed(clips[i:i + step], spectrograms[i:i + step])
                               for i in range(0, len(clips), step)])

    def _embed(self, clips: np.ndarray, specs: np.ndarray) -> np.ndarray:
        model, device, c = self._model, self.device, self.config
        x = self.normalised(clips)
        a = torch.from_numpy(np.ascontiguousarray(specs)).to(device)[:, None]
        cfg = model.cfg
        widths = {"video": cfg.embed_dim, "audio": cfg.embed_dim_audio, "fusion_video": cfg.embed_dim,
                  "fusion_audio": cfg.embed_dim_audio}
        offsets, at = {}, 0
        for p in PARTS:
            offsets[p] = (at, at + widths[p])
            at += widths[p]
        with self.precision_context():
            full = model.forward_features(x, a)
            feats = torch.cat([full[:, offsets[p][0]:offsets[p][1]] for p in c.parts], dim=-1)
            if c.head_probs:
                feats = torch.cat((feats, torch.softmax(model.forward_head(full).float(), -1).to(feats.dtype)), -1)
        return feats.float().cpu().numpy()
