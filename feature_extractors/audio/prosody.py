"""``librosa_prosody``: hand-crafted prosodic and spectral statistics of an utterance (no weights).

A small, fast, interpretable stand-in for the openSMILE functionals MERTools uses (IS09/eGeMAPS),
built from librosa so it carries no licence restriction. Output: float32 ``[D]`` with
``D = 42 + 3 * n_mfcc`` (102 with the default 20 MFCCs), in the order :meth:`feature_names`
lists, which is, block by block:

* **F0** (9): from ``librosa.yin`` over voiced frames, in semitones relative to 100 Hz (a ratio
  scale, so a speaker's range and contour compare across voices): mean, std, p10, p50, p90,
  range (p95 - p5), slope (semitones/s, least squares over voiced frame times), mean absolute
  frame-to-frame change, and the voiced fraction of all frames. A frame is voiced when it is
  active (below) *and* periodic: the normalised autocorrelation at the yin period is at least
  ``periodicity_threshold``. yin reports a pitch for every frame, noise included, so the gate is
  what keeps breath and fricatives out of the statistics. With fewer than 3 voiced frames the
  F0 statistics are 0 and the voiced fraction says why.
* **Energy** (7): frame RMS in dBFS over active frames: mean, std, p10, p50, p90, range
  (p95 - p5); then the active fraction of all frames (pauses).
* **Spectral shape** (10): mean and std over active frames of the spectral centroid (kHz),
  bandwidth (kHz), 85 % roll-off (kHz), flatness and zero-crossing rate.
* **Spectral contrast** (14): mean and std of each of the 7 octave-band contrasts
  (``librosa.feature.spectral_contrast``, 6 bands from 200 Hz plus the residual band).
* **MFCC** (3 * n_mfcc): means, stds over active frames, then stds of the delta-MFCCs.
* **Rhythm** (2): onset rate (onsets per second, a speaking-rate proxy) and duration (s).

"Active" frames are within ``activity_range_db`` of the loudest frame and above
``silence_dbfs``; a clip whose loudest frame is below ``silence_dbfs`` is a ``silent_audio``
failure rather than a vector of meaningless numbers.

Both stages: ``load`` decodes the audio *and* computes the statistics (pure CPU, so they run in
the decoding workers, in parallel); ``forward`` hands the vectors on. The voicing pieces
(:func:`voicing_track`, :func:`periodicity`, :func:`summary_stats`) are shared with
``egemaps_librosa``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, Sequence

import numpy as np

from feature_extractors.audio.io import load_audio
from feature_extractors.base import EXTRACTORS, Extractor
from mer.core.failures import MediaError
from mer.core.samples import Sample

_CONTRAST_BANDS = 6          # octave bands from 200 Hz; librosa adds one residual row -> 7 rows
_MIN_VOICED_FRAMES = 3
_DB_FLOOR = -100.0           # dBFS given to digital silence, so log10(0) never appears
_SEMITONE_REF_HZ = 100.0


@EXTRACTORS.register("librosa_prosody")
class LibrosaProsody(Extractor):
    """Utterance-level prosody/spectral statistics; see the module docstring for the order."""

    name: ClassVar[str] = "librosa_prosody"
    modality: ClassVar[str] = "audio"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"

    @dataclass(frozen=True)
    class Config:
        sample_rate_hz: int = 16000
        n_mfcc: int = 20
        n_mels: int = 40
        n_fft: int = 512                 # spectral frames: 32 ms at 16 kHz
        frame_length: int = 1024         # pitch frames: 64 ms, room for two periods at fmin
        hop_length: int = 160            # 10 ms
        fmin_hz: float = 60.0
        fmax_hz: float = 600.0           # shouted/excited speech goes well above 400 Hz
        periodicity_threshold: float = 0.5
        activity_range_db: float = 40.0
        silence_dbfs: float = -60.0
        min_duration_s: float = 0.1
        batch_size: int = 16

    def __init__(self, config: "LibrosaProsody.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        check_pitch_settings(self.name, self.config)
        if 200.0 * 2 ** (_CONTRAST_BANDS - 1) >= self.config.sample_rate_hz / 2:
            raise ValueError(f"sample_rate_hz={self.config.sample_rate_hz} is too low for {_CONTRAST_BANDS} "
                             f"spectral-contrast octaves from 200 Hz")
        self._mel: np.ndarray | None = None

    # --- layout --------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        """Names of the ``D`` output columns, in order."""
        names = [f"f0_{s}_st" for s in ("mean", "std", "p10", "p50", "p90", "range")]
        names += ["f0_slope_st_per_s", "f0_abs_delta_mean_st", "voiced_fraction"]
        names += [f"rms_{s}_dbfs" for s in ("mean", "std", "p10", "p50", "p90", "range")]
        names += ["active_fraction"]
        for feat in ("centroid_khz", "bandwidth_khz", "rolloff_khz", "flatness", "zcr"):
            names += [f"{feat}_mean", f"{feat}_std"]
        for band in range(_CONTRAST_BANDS + 1):
            names += [f"contrast{band}_mean", f"contrast{band}_std"]
        n = self.config.n_mfcc
        names += [f"mfcc{i}_mean" for i in range(n)] + [f"mfcc{i}_std" for i in range(n)]
        names += [f"delta_mfcc{i}_std" for i in range(n)]
        names += ["onset_rate_hz", "duration_s"]
        return names

    @property
    def dim(self) -> int:
        return len(self.feature_names())

    # --- work ----------------------------------------------------------------------------
    def setup(self, device: str = "cpu") -> None:
        self.warmup()
        super().setup(device)

    def warmup(self) -> None:
        # librosa JIT-compiles some kernels (numba) on first use; pay that here (in each decoding
        # worker, and in setup for in-process runs), not on the first clip.
        t = np.arange(int(0.5 * self.config.sample_rate_hz)) / self.config.sample_rate_hz
        self.features(0.1 * np.sin(2 * np.pi * 150.0 * t).astype(np.float32))

    def load(self, sample: Sample) -> np.ndarray:
        """CPU stage: decode the audio and compute the statistics here, in the decoding worker,
        so they run in parallel across workers; float32 ``[D]``. Raises :class:`MediaError`."""
        from threadpoolctl import threadpool_limits  # deferred: loads threadpoolctl only when used

        wav = load_audio(sample, self.config.sample_rate_hz)
        # The matrices here are tiny ([40, 257] x [257, T]); a multi-threaded BLAS only spins,
        # which tripled CPU time per clip in measurements (16 -> 45 ms) on a busy 2-core machine.
        with threadpool_limits(limits=1, user_api="blas"):
            return self.features(wav)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The statistics are done in :meth:`load`; one ``[D]`` float32 vector per sample."""
        return [np.asarray(x, dtype=np.float32) for x in inputs]

    def features(self, wav: np.ndarray) -> np.ndarray:
        """Float32 ``[D]`` for a mono waveform ``[N]`` at ``sample_rate_hz``.

        Raises :class:`MediaError` (``too_short``, ``silent_audio``, ``nonfinite_feature``) when
        the clip cannot give meaningful statistics.
        """
        import librosa  # deferred: loads librosa only when used

        c = self.config
        sr, hop = c.sample_rate_hz, c.hop_length
        y = np.ascontiguousarray(wav, dtype=np.float32)
        duration_s = y.size / sr
        if duration_s < c.min_duration_s:
            raise MediaError("too_short", f"{duration_s:.3f} s of audio; librosa_prosody needs at "
                             f"least min_duration_s={c.min_duration_s}")

        # All frame-wise series below use centred frames at the same hop: T = 1 + N // hop.
        track = voicing_track(y, self.name, c)
        rms_db, active, f0_hz, periodic = track.rms_db, track.active, track.f0_hz, track.periodic
        mag = np.abs(librosa.stft(y, n_fft=c.n_fft, hop_length=hop))          # [F, T]
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=c.n_fft, hop_length=hop)[0]

        n_frames = min(rms_db.size, f0_hz.size, mag.shape[1], zcr.size)
        rms_db, active, f0_hz, periodic = (a[:n_frames] for a in (rms_db, active, f0_hz, periodic))
        mag, zcr = mag[:, :n_frames], zcr[:n_frames]
        voiced = active & periodic

        parts = [self._f0_block(f0_hz, voiced, hop / sr),
                 summary_stats(rms_db[active]), [active.mean()]]

        spectral = np.stack([
            librosa.feature.spectral_centroid(S=mag, sr=sr)[0] / 1000.0,
            librosa.feature.spectral_bandwidth(S=mag, sr=sr)[0] / 1000.0,
            librosa.feature.spectral_rolloff(S=mag, sr=sr, roll_percent=0.85)[0] / 1000.0,
            librosa.feature.spectral_flatness(S=mag)[0],
            zcr,
        ])[:, active]                                                         # [5, T_active]
        parts.append(np.stack([spectral.mean(1), spectral.std(1)], axis=1).ravel())
        contrast = librosa.feature.spectral_contrast(S=mag, sr=sr, n_bands=_CONTRAST_BANDS)[:, active]
        parts.append(np.stack([contrast.mean(1), contrast.std(1)], axis=1).ravel())

        log_mel = librosa.power_to_db(self._mel_basis() @ mag ** 2)          # [M, T]
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=c.n_mfcc)              # [n_mfcc, T]
        parts += [mfcc[:, active].mean(1), mfcc[:, active].std(1), _delta_std(mfcc)]

        onset_env = librosa.onset.onset_strength(S=log_mel, sr=sr, hop_length=hop)
        onsets = librosa.onset.onset_detect(onset_envelope=onset_env, sr=sr, hop_length=hop)
        parts.append([len(onsets) / duration_s, duration_s])

        out = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts]).astype(np.float32)
        if not np.all(np.isfinite(out)):
            bad = [n for n, v in zip(self.feature_names(), out) if not np.isfinite(v)]
            raise MediaError("nonfinite_feature", f"non-finite prosody features: {bad[:5]}")
        return out

    def _mel_basis(self) -> np.ndarray:
        """``[n_mels, 1 + n_fft // 2]`` mel filterbank; built once (it costs more than the STFT)."""
        if self._mel is None:
            import librosa  # deferred: loads librosa only when used

            c = self.config
            self._mel = librosa.filters.mel(sr=c.sample_rate_hz, n_fft=c.n_fft, n_mels=c.n_mels,
                                            fmax=c.sample_rate_hz / 2).astype(np.float32)
        return self._mel

    @staticmethod
    def _f0_block(f0_hz: np.ndarray, voiced: np.ndarray, frame_s: float) -> np.ndarray:
        """``[9]``: F0 statistics in semitones re 100 Hz, slope, mean |delta|, voiced fraction."""
        voiced_fraction = float(voiced.mean())
        if voiced.sum() < _MIN_VOICED_FRAMES:
            return np.array([0.0] * 8 + [voiced_fraction])
        semitones = 12.0 * np.log2(f0_hz / _SEMITONE_REF_HZ)
        st = semitones[voiced]
        times = np.flatnonzero(voiced) * frame_s
        slope = np.polyfit(times, st, 1)[0]
        both = voiced[1:] & voiced[:-1]            # deltas only between adjacent voiced frames
        abs_delta = np.abs(np.diff(semitones))[both].mean() if both.any() else 0.0
        return np.concatenate([summary_stats(st), [slope, abs_delta, voiced_fraction]])


def _delta_std(mfcc: np.ndarray) -> np.ndarray:
    """Std over time of the delta-MFCCs ``[n_mfcc]``; the delta window shrinks for very short clips."""
    import librosa  # deferred: loads librosa only when used

    n_frames = mfcc.shape[1]
    width = min(9, n_frames if n_frames % 2 else n_frames - 1)
    if width < 3:
        return np.zeros(mfcc.shape[0])
    return librosa.feature.delta(mfcc, width=width).std(axis=1)


# --- pieces shared with the other librosa extractors (egemaps_librosa) ---------------------
class PitchSettings(Protocol):
    """The config fields :func:`voicing_track` reads (both librosa extractors' configs have them)."""

    sample_rate_hz: int
    n_fft: int
    frame_length: int
    hop_length: int
    fmin_hz: float
    fmax_hz: float
    periodicity_threshold: float
    activity_range_db: float
    silence_dbfs: float


@dataclass(frozen=True)
class VoicingTrack:
    """Frame-wise activity and pitch of a clip, all ``[T]`` on centred frames at ``hop_length``.

    ``rms_db``: frame RMS in dBFS (``n_fft`` frames); ``active``: within ``activity_range_db`` of
    the loudest frame and above ``silence_dbfs``; ``f0_hz``: yin's pitch (a value for every frame,
    noise included); ``periodicity``: normalised correlation one period on (1 = periodic);
    ``periodic``: ``periodicity >= periodicity_threshold``. A frame is voiced when it is active and
    periodic.
    """

    rms_db: np.ndarray
    active: np.ndarray
    f0_hz: np.ndarray
    periodicity: np.ndarray
    periodic: np.ndarray

    @property
    def voiced(self) -> np.ndarray:
        n = min(self.active.size, self.periodic.size)
        return self.active[:n] & self.periodic[:n]


def check_pitch_settings(name: str, c: PitchSettings) -> None:
    """Raise ``ValueError`` for pitch settings yin cannot honour."""
    if not 0 < c.fmin_hz < c.fmax_hz < c.sample_rate_hz / 2:
        raise ValueError(f"{name} needs 0 < fmin_hz < fmax_hz < Nyquist, got "
                         f"fmin_hz={c.fmin_hz}, fmax_hz={c.fmax_hz}, sample_rate_hz={c.sample_rate_hz}")
    if c.sample_rate_hz / c.fmin_hz >= c.frame_length // 2:
        raise ValueError(f"frame_length={c.frame_length} is too short for fmin_hz={c.fmin_hz}: "
                         f"yin needs frame_length > 2 * sample_rate_hz / fmin_hz")


def voicing_track(y: np.ndarray, name: str, c: PitchSettings) -> VoicingTrack:
    """Activity, yin pitch and periodicity of a mono waveform ``[N]``.

    Raises :class:`MediaError` ``silent_audio`` when the loudest frame is below ``silence_dbfs``.
    """
    import librosa  # deferred: loads librosa only when used

    sr, hop = c.sample_rate_hz, c.hop_length
    rms = librosa.feature.rms(y=y, frame_length=c.n_fft, hop_length=hop)[0]
    rms_db = 20.0 * np.log10(np.maximum(rms, 10 ** (_DB_FLOOR / 20)))
    peak_db = float(rms_db.max())
    if peak_db < c.silence_dbfs:
        raise MediaError("silent_audio", f"the loudest {1000 * c.n_fft / sr:.0f} ms frame is at "
                         f"{peak_db:.1f} dBFS, below silence_dbfs={c.silence_dbfs} ({name})")
    active = (rms_db >= peak_db - c.activity_range_db) & (rms_db >= c.silence_dbfs)
    f0_hz = librosa.yin(y, fmin=c.fmin_hz, fmax=c.fmax_hz, sr=sr,
                        frame_length=c.frame_length, hop_length=hop)
    score = periodicity(y, f0_hz, c)
    return VoicingTrack(rms_db, active, f0_hz, score, score >= c.periodicity_threshold)


def periodicity(y: np.ndarray, f0_hz: np.ndarray, c: PitchSettings) -> np.ndarray:
    """Normalised cross-correlation ``[T]`` of each pitch frame with itself one yin period on
    (1 = periodic, noise near 0).

    A fixed window of ``frame_length - max_period`` samples is compared with the same window
    shifted by the period, each normalised by its own energy, so the score does not depend on
    loudness or on the period. For a harmonic signal plus white noise it estimates
    ``P_harmonic / (P_harmonic + P_noise)``, which is what the HNR of ``egemaps_librosa`` uses.
    """
    n = c.frame_length
    padded = np.pad(y, n // 2)                  # the same centring yin uses
    max_period = int(np.ceil(c.sample_rate_hz / c.fmin_hz)) + 1
    window = n - max_period
    starts = np.arange(f0_hz.size) * c.hop_length                                # [T]
    offsets = np.arange(window)
    head = padded[starts[:, None] + offsets]                                     # [T, W]
    head_energy = np.einsum("tw,tw->t", head, head)
    period = np.rint(c.sample_rate_hz / f0_hz).astype(np.int64)
    best = np.zeros(f0_hz.size, dtype=np.float32)
    # yin's period is sub-sample accurate; the integer lags around it bracket the peak.
    for lag in (period - 1, period, period + 1):
        lag = np.clip(lag, 1, max_period)
        tail = padded[(starts + lag)[:, None] + offsets]                         # [T, W]
        corr = np.einsum("tw,tw->t", head, tail) / np.sqrt(
            head_energy * np.einsum("tw,tw->t", tail, tail) + 1e-20)
        best = np.maximum(best, corr)
    return best


def summary_stats(x: np.ndarray) -> np.ndarray:
    """``[6]``: mean, std, p10, p50, p90 and the p95 - p5 range of a non-empty series."""
    p5, p10, p50, p90, p95 = np.percentile(x, [5, 10, 50, 90, 95])
    return np.array([x.mean(), x.std(), p10, p50, p90, p95 - p5])
