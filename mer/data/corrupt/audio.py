"""Audio corruption: MER-NOISE's mixing at an SNR and the speech noise it mixes (a noise folder or
babble of the dataset's own utterances)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Sequence

import numpy as np

from feature_extractors.audio.io import load_audio

from .conditions import NOISE_EXTS, SAMPLE_RATE_HZ, CorruptionSettings, _noise_files, clip_rng

log = logging.getLogger(__name__)


def no_clip(x: np.ndarray, limit: float = 0.99) -> np.ndarray:
    """Scale the whole signal down if it would clip (as MER-NOISE does), never hard-clip it."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (limit / peak) if peak > limit else x


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """MER-NOISE's mixing: scale ``noise`` so RMS(clean)/RMS(noise) is ``snr_db``, add, avoid clipping.

    ``clean`` and ``noise`` are ``[N]``; returns float32 ``[N]``."""
    rms_clean = np.sqrt(np.mean(clean.astype(np.float64) ** 2))
    rms_noise = np.sqrt(np.mean(noise.astype(np.float64) ** 2)) + 1e-12
    noisy = clean + noise * (rms_clean / 10 ** (snr_db / 20)) / rms_noise
    return no_clip(noisy).astype(np.float32)



@dataclass
class NoiseSource:
    """Speech noise for a clip: ``talkers`` streams, each random recordings of ``sources``
    concatenated until longer than the clip then randomly cropped, RMS-normalised and summed.

    ``sources`` is ``[(id, path)]`` sorted by id: files of a noise folder, or (name, media path)
    of a dataset's utterances, in which case a clip never hears itself."""

    sources: list[tuple[str, str]]
    talkers: int = 1
    kind: str = "folder"
    _decoded: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: CorruptionSettings, babble_pool: Sequence[tuple[str, str]] = ()
                      ) -> "NoiseSource":
        if settings.noise_dir:
            files = _noise_files(settings.noise_dir)
            if not files:
                raise ValueError(f"corruption.noise_dir={settings.noise_dir} holds no audio files "
                                 f"({', '.join(NOISE_EXTS)})")
            return cls([(os.path.relpath(p, settings.noise_dir), p) for p in files], 1, "folder")
        pool = sorted(babble_pool)
        if len(pool) < 2:
            raise ValueError("babble needs other utterances of the dataset, and it has fewer than 2 clips "
                             "with audio; set corruption.noise_dir=/path/to/musan/speech")
        return cls(pool, settings.babble_talkers, "babble")

    def _load(self, path: str) -> np.ndarray:
        wav = self._decoded.get(path)
        if wav is None:
            if len(self._decoded) > 256:          # bounded: a worker meets thousands of sources
                self._decoded.clear()
            wav = self._decoded[path] = load_audio(path, SAMPLE_RATE_HZ).astype(np.float64)
        return wav

    def _stream(self, n: int, rng: np.random.Generator, exclude: str | None, used: list[str]) -> np.ndarray:
        parts, total, tries = [], 0, 0
        while total <= n:
            tries += 1
            if tries > 50 + 4 * max(1, n // SAMPLE_RATE_HZ):
                raise RuntimeError(f"no usable noise after {tries - 1} picks from {len(self.sources)} "
                                   f"{self.kind} sources (silent or undecodable)")
            sid, path = self.sources[int(rng.integers(len(self.sources)))]
            if sid == exclude:
                continue
            try:
                wav = self._load(path)
            except Exception as err:  # noqa: BLE001 - a broken source is skipped, not fatal
                log.debug("noise source %s skipped: %s", path, err)
                continue
            if wav.size == 0 or np.sqrt(np.mean(wav ** 2)) < 1e-5:
                continue
            parts.append(wav)
            used.append(sid)
            total += wav.size
        joined = np.concatenate(parts)
        start = int(rng.integers(0, joined.size - n + 1))
        return joined[start:start + n]

    def noise_for(self, name: str, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
        """``([n] float64 noise, ids of the recordings used)`` for the clip ``name``; the same for
        every condition and call order."""
        rng = clip_rng(seed, name, "noise")
        used: list[str] = []
        out = np.zeros(n)
        for _ in range(self.talkers):
            s = self._stream(n, rng, name if self.kind == "babble" else None, used)
            out += s / (np.sqrt(np.mean(s ** 2)) + 1e-12)
        return out, used


def babble_pool(samples: Iterable[Any]) -> list[tuple[str, str]]:
    """``[(name, media path)]`` of every sample with audio (an audio file, else its video)."""
    return sorted((s.name, s.audio_path or s.video_path) for s in samples if s.audio_path or s.video_path)



def _write_wav(path: str | IO[bytes], audio: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
    import soundfile as sf  # deferred: reading conditions and settings needs no audio library

    sf.write(path, np.asarray(audio, np.float32), sample_rate_hz, subtype="PCM_16", format="WAV")
