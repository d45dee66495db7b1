"""Audio loading: any sample or media file -> float32 mono waveform ``[N]`` at a fixed rate.

Video containers (mp4, avi, mkv, ...) are decoded with PyAV, so no ``ffmpeg`` binary and no
intermediate ``audio/<name>.wav`` (which MERTools writes with ``ffmpeg -ar 16000 -ac 1``) is needed.
Plain audio files (wav, flac, ogg) are read with soundfile and resampled with librosa when their
rate differs. Everything that can go wrong raises :class:`MediaError`, whose ``reason`` is the
short type an :class:`~mer.core.failures.ExtractionFailure` records and whose message names
the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mer.core.failures import MediaError, no_media_error
from mer.core.samples import Sample

# soundfile reads these directly; anything else goes through PyAV (video containers, m4a, mp3...).
_SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".aiff", ".aif"})


def media_path(sample: Sample) -> str:
    """The file a sample's audio comes from: its ``audio_path`` if set, else its ``video_path``."""
    path = sample.audio_path or sample.video_path
    if not path:
        raise no_media_error(sample, f"sample {sample.name} has neither an audio_path nor a video_path")
    return path


def load_audio(sample_or_path: Sample | str | os.PathLike, sample_rate_hz: int = 16000) -> np.ndarray:
    """Decode the audio of a sample (or of a file) to a mono waveform.

    Returns float32 ``[N]`` at ``sample_rate_hz``, values in about [-1, 1]. Multi-channel audio is
    averaged to mono. Raises :class:`MediaError` (never a library exception) on any failure.
    """
    path = media_path(sample_or_path) if isinstance(sample_or_path, Sample) else os.fspath(sample_or_path)
    if not os.path.isfile(path):
        raise MediaError("missing_file", f"audio source {path} does not exist")
    if Path(path).suffix.lower() in _SOUNDFILE_SUFFIXES:
        try:
            wav = _read_soundfile(path, sample_rate_hz)
        except MediaError:
            raise
        except Exception as sf_err:  # noqa: BLE001 - libsndfile rejects some valid codecs; FFmpeg may not
            try:
                wav = _read_pyav(path, sample_rate_hz)
            except MediaError as av_err:
                raise MediaError(av_err.reason, f"{av_err.message} (soundfile also failed: {sf_err})") from None
    else:
        wav = _read_pyav(path, sample_rate_hz)
    if wav.size == 0:
        raise MediaError("empty_audio", f"{path} decoded to 0 audio samples")
    if not np.all(np.isfinite(wav)):
        raise MediaError("decode_error", f"{path} decoded to non-finite audio samples")
    return wav


def _read_soundfile(path: str, sample_rate_hz: int) -> np.ndarray:
    import soundfile as sf  # deferred: loads soundfile only when used

    data, rate = sf.read(path, dtype="float32", always_2d=True)   # [N, C]
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate_hz and wav.size:
        import librosa  # deferred: loads librosa only when used

        wav = librosa.resample(wav, orig_sr=rate, target_sr=sample_rate_hz)
    return np.ascontiguousarray(wav, dtype=np.float32)


def _read_pyav(path: str, sample_rate_hz: int) -> np.ndarray:
    import av  # deferred: loads av only when used

    try:
        container = av.open(path)
    except av.FFmpegError as err:
        raise MediaError("decode_error", f"cannot open {path}: {err}") from None
    with container:
        if not container.streams.audio:
            raise MediaError("no_audio_stream", f"{path} has no audio stream "
                             f"({len(container.streams.video)} video stream(s))")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate_hz)
        parts: list[np.ndarray] = []
        bad_packets = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    # One damaged packet costs ~20 ms of audio; keep the rest of the clip.
                    bad_packets += 1
                    continue
                for frame in frames:
                    parts.extend(r.to_ndarray() for r in resampler.resample(frame))
            parts.extend(r.to_ndarray() for r in resampler.resample(None))
        except av.FFmpegError as err:
            # Demuxing stopped (truncated file): keep what decoded so far, fail only if nothing did.
            if not parts:
                raise MediaError("decode_error", f"cannot decode the audio of {path}: {err}") from None
    if not parts:
        detail = f" ({bad_packets} damaged packet(s))" if bad_packets else ""
        raise MediaError("empty_audio", f"the audio stream of {path} decoded to 0 samples{detail}")
    # Packed "flt" mono frames are [1, n] each.
    return np.ascontiguousarray(np.concatenate(parts, axis=1)[0], dtype=np.float32)
