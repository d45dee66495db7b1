"""Pieces the neural audio encoders share: output level, long-audio chunks, frame pooling, autocast.

A speech encoder gives frames ``[T, D]`` (50 per second for wav2vec2/HuBERT/WavLM/data2vec and
the Whisper encoder). Long audio is cut into ``chunk_s`` pieces that are encoded one by one and
whose frames are concatenated in time, as MERTools does for clips over 10 s (attention cost grows
with the square of the length, and Whisper only takes 30 s windows). An encoder extractor works
at one of two levels, chosen by its ``level`` option: ``frame`` keeps ``[T, D]``, ``utterance``
pools the frames of all chunks into ``[D]`` (``mean``) or ``[2 * D]`` (``mean_std``).

At frame level each frame carries its time (:func:`chunk_frame_times`, :mod:`mer.core.timebase`):
the centre of its analysis window, chunk ``j`` starting ``j * chunk_s`` into the clip.
"""
from __future__ import annotations

import numpy as np

from mer.core.failures import MediaError

LEVELS = ("utterance", "frame")
POOLINGS = ("mean", "mean_std")


def check_level_and_pooling(name: str, level: str, pooling: str) -> None:
    """Raise ``ValueError`` naming the option when ``level`` or ``pooling`` is unknown."""
    if level not in LEVELS:
        raise ValueError(f"{name}: level must be one of {LEVELS}, got {level!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"{name}: pooling must be one of {POOLINGS}, got {pooling!r}")


def split_into_chunks(wav: np.ndarray, chunk_samples: int, min_samples: int, name: str) -> list[np.ndarray]:
    """Cut a waveform ``[N]`` into consecutive pieces of ``chunk_samples`` (the last one shorter).

    A last piece shorter than ``min_samples`` is dropped when there are others: it would give no
    encoder frame, or one frame of almost nothing. A whole clip shorter than ``min_samples``
    raises :class:`MediaError` ``too_short``.
    """
    if chunk_samples < 1:
        raise ValueError(f"{name}: chunk_s must be > 0")
    if wav.size < min_samples:
        raise MediaError("too_short", f"{wav.size} audio samples; {name} needs at least {min_samples} "
                         f"(min_duration_s)")
    chunks = [wav[start:start + chunk_samples] for start in range(0, wav.size, chunk_samples)]
    if len(chunks) > 1 and chunks[-1].size < min_samples:
        chunks.pop()
    return chunks


def pool_frames(frames: np.ndarray, pooling: str) -> np.ndarray:
    """Frames ``[T, D]`` -> float32 ``[D]`` (``mean``) or ``[2 * D]`` (``mean_std``: mean, then the
    population std over time)."""
    frames = np.asarray(frames, dtype=np.float32)
    if pooling == "mean":
        return frames.mean(axis=0)
    if pooling == "mean_std":
        return np.concatenate([frames.mean(axis=0), frames.std(axis=0)])
    raise ValueError(f"unknown pooling {pooling!r}; known: {POOLINGS}")


def finish(frames: np.ndarray, level: str, pooling: str) -> np.ndarray:
    """The extractor's output for one clip: frames ``[T, D]`` kept or pooled by ``level``."""
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    return frames if level == "frame" else pool_frames(frames, pooling)


def chunk_frame_times(frames_per_chunk: list[int], chunk_samples: int, sample_rate_hz: int,
                      shift_samples: float, centre_samples: float) -> np.ndarray:
    """Seconds of the concatenated frames of consecutive chunks: frame ``k`` of chunk ``j`` is at
    ``(j * chunk_samples + k * shift_samples + centre_samples) / sample_rate_hz``, where
    ``shift_samples`` is the encoder's hop and ``centre_samples`` the centre of its first frame's window."""
    parts = [(j * chunk_samples + np.arange(n, dtype=np.float64) * shift_samples + centre_samples) / sample_rate_hz
             for j, n in enumerate(frames_per_chunk)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)


def conv_frame_grid(kernels: list[int], strides: list[int]) -> tuple[int, float]:
    """``(hop, centre of the first frame's window)`` in input samples of a stack of 1-d
    convolutions without padding (the wav2vec2 family's feature encoder: hop 320, receptive
    field 400 samples, so 20 ms frames centred 12.5 ms after their start at 16 kHz)."""
    hop, field = 1, 1
    for k, s in zip(kernels, strides):
        field += (int(k) - 1) * hop
        hop *= int(s)
    return hop, (field - 1) / 2.0


def autocast_dtype(device: str):
    """``(enabled, dtype)`` for ``torch.autocast``: bf16 on CUDA when supported (else fp16), off on CPU."""
    import torch  # deferred: loads torch only when used

    if torch.device(device).type != "cuda":
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
