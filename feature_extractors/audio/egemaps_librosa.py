"""``egemaps_librosa``: eGeMAPS-style functionals computed with librosa/numpy (no weights, no licence).

The extended Geneva Minimalistic Acoustic Parameter Set (eGeMAPS v02, Eyben et al. 2016) is the
88-feature paralinguistic set MERTools extracts with openSMILE. openSMILE's licence forbids
commercial use (see ``opensmile_egemaps``); this extractor recomputes the same 88 parameters, in
the same order, from first principles, so it can ship anywhere. The numbers approximate
openSMILE's and are not equal to them: the pitch tracker (yin + a periodicity gate, shared with
``librosa_prosody``), filter banks and smoothing differ. Output: float32 ``[88]``, named by
:meth:`EgemapsLibrosa.feature_names`; :meth:`EgemapsLibrosa.egemaps_names` gives the eGeMAPS
parameter each one approximates (``FEATURES`` holds both). On the demo corpus the features
that follow openSMILE most closely across clips are the F0 level and percentiles, loudness,
alpha ratio, Hammarberg index, spectral slopes, MFCC means, loudness peak rate and the
equivalent sound level; formants, jitter and the F0 slopes agree least (different trackers).

Frame-level descriptors (LLDs), 10 ms hop, each smoothed by a 3-frame moving average (eGeMAPS'
``sma3``; voiced-only LLDs are averaged over voiced neighbours only, eGeMAPS' ``nz``):

* **F0** in semitones re 27.5 Hz (eGeMAPS' scale), on voiced frames: active and periodic as in
  ``librosa_prosody``, with 1-2 frame gaps inside voiced speech filled and voiced runs under
  30 ms dropped; yin's F0 gets a 5-frame running median inside each voiced run (octave slips at
  onsets). **Jitter** (local): |difference of consecutive pitch periods| / their mean; periods
  come from period-by-period waveform cross-correlation (sub-sample accurate), and each frame
  averages the period pairs within its 64 ms. **Shimmer** (local, dB): |20 log10| of the ratio
  of consecutive periods' peak-to-peak amplitudes. **HNR** (dB): ``10 log10(r / (1 - r))`` with
  ``r`` the normalised autocorrelation one period on (for a harmonic signal in white noise ``r``
  is the harmonic share of the power, so this is the harmonics-to-noise ratio).
* **H1-H2**, **H1-A3** (dB): levels of the first and second harmonics (spectral peak within
  F0/2 of F0 and 2 F0) and of the strongest harmonic around F3, in a 64 ms spectrum.
* **Formants F1-F3**: frequency and bandwidth from the roots of a 10th-order LPC polynomial
  (Burg) on 30 ms pre-emphasised frames resampled to 11 kHz (formants up to 5.5 kHz, as Praat's
  default); the amplitude of each is the harmonic peak nearest the formant relative to H1 (dB).
* **Loudness**: sum over 26 mel bands of the band power to the 0.33 (Stevens' power law; a
  stand-in for openSMILE's auditory-spectrum loudness, so its scale differs).
* **Spectral flux**: squared difference of consecutive L2-normalised magnitude spectra.
* **MFCC 1-4** (26 mel bands, c0 left out). **Alpha ratio** (dB): energy 1-5 kHz over 50 Hz-1
  kHz -- openSMILE's sign: negative for voiced speech. **Hammarberg index** (dB): strongest
  peak 0-2 kHz over strongest peak 2-5 kHz. **Spectral slopes** (dB/Hz): least-squares slope of
  the power spectrum in dB over 0-500 Hz and 500-1500 Hz.

Functionals: ``mean``; ``cv`` = std / mean (eGeMAPS' ``stddevNorm``, sign of the mean kept);
percentiles 20/50/80 and their range; rising/falling slopes: the contour is cut into monotonic
parts, each part's slope is its change over its duration, in units per second (falling slopes
negative; openSMILE's slope units differ). Voiced (``_v_``) and unvoiced (``_uv_``) spectral
statistics take voiced frames and active-but-unvoiced frames. Temporal features: loudness peaks
per second, voiced segments per second, mean/std of voiced segment lengths and of the unvoiced
gaps between voiced segments (s), and the equivalent sound level ``10 log10(mean frame power)``
(dBFS). Voiced-only features are 0 when a clip has fewer than 3 voiced frames (and the
``voiced_segments_per_s`` feature is then 0 too, which says why).

Both stages: ``load`` decodes and computes the statistics in the decoding worker; ``forward``
hands them on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from feature_extractors.audio.io import load_audio
from feature_extractors.audio.prosody import check_pitch_settings, voicing_track
from feature_extractors.base import EXTRACTORS, Extractor
from mer.core.failures import MediaError
from mer.core.samples import Sample

F0_REFERENCE_HZ = 27.5          # eGeMAPS: F0 in semitones relative to 27.5 Hz (A0)
_MIN_VOICED_FRAMES = 3
_POWER_FLOOR = 1e-12            # power given to empty bins, so log10(0) never appears
_HNR_R_LIMIT = 1e-4             # r clipped to [1e-4, 1 - 1e-4]: HNR within +-40 dB
_CV_EPS = 1e-8


def _feature_table() -> tuple[tuple[str, str], ...]:
    """``(our name, eGeMAPSv02 name)`` for the 88 outputs, in eGeMAPSv02 order."""
    rows: list[tuple[str, str]] = []

    def contour(ours: str, theirs: str) -> None:
        rows.extend([(f"{ours}_mean", f"{theirs}_amean"), (f"{ours}_cv", f"{theirs}_stddevNorm"),
                     (f"{ours}_p20", f"{theirs}_percentile20.0"), (f"{ours}_p50", f"{theirs}_percentile50.0"),
                     (f"{ours}_p80", f"{theirs}_percentile80.0"), (f"{ours}_p20_p80_range", f"{theirs}_pctlrange0-2"),
                     (f"{ours}_rising_slope_mean_per_s", f"{theirs}_meanRisingSlope"),
                     (f"{ours}_rising_slope_std_per_s", f"{theirs}_stddevRisingSlope"),
                     (f"{ours}_falling_slope_mean_per_s", f"{theirs}_meanFallingSlope"),
                     (f"{ours}_falling_slope_std_per_s", f"{theirs}_stddevFallingSlope")])

    def mean_cv(ours: str, theirs: str) -> None:
        rows.extend([(f"{ours}_mean", f"{theirs}_amean"), (f"{ours}_cv", f"{theirs}_stddevNorm")])

    contour("f0_st27", "F0semitoneFrom27.5Hz_sma3nz")
    contour("loudness", "loudness_sma3")
    mean_cv("spectral_flux", "spectralFlux_sma3")
    for k in range(1, 5):
        mean_cv(f"mfcc{k}", f"mfcc{k}_sma3")
    mean_cv("jitter_local", "jitterLocal_sma3nz")
    mean_cv("shimmer_local_db", "shimmerLocaldB_sma3nz")
    mean_cv("hnr_db", "HNRdBACF_sma3nz")
    mean_cv("h1_h2_db", "logRelF0-H1-H2_sma3nz")
    mean_cv("h1_a3_db", "logRelF0-H1-A3_sma3nz")
    for k in range(1, 4):
        mean_cv(f"f{k}_hz", f"F{k}frequency_sma3nz")
        mean_cv(f"f{k}_bandwidth_hz", f"F{k}bandwidth_sma3nz")
        mean_cv(f"f{k}_amplitude_rel_h1_db", f"F{k}amplitudeLogRelF0_sma3nz")
    mean_cv("v_alpha_ratio_db", "alphaRatioV_sma3nz")
    mean_cv("v_hammarberg_db", "hammarbergIndexV_sma3nz")
    mean_cv("v_slope_0_500_db_per_hz", "slopeV0-500_sma3nz")
    mean_cv("v_slope_500_1500_db_per_hz", "slopeV500-1500_sma3nz")
    mean_cv("v_spectral_flux", "spectralFluxV_sma3nz")
    for k in range(1, 5):
        mean_cv(f"v_mfcc{k}", f"mfcc{k}V_sma3nz")
    rows += [("uv_alpha_ratio_db_mean", "alphaRatioUV_sma3nz_amean"),
             ("uv_hammarberg_db_mean", "hammarbergIndexUV_sma3nz_amean"),
             ("uv_slope_0_500_db_per_hz_mean", "slopeUV0-500_sma3nz_amean"),
             ("uv_slope_500_1500_db_per_hz_mean", "slopeUV500-1500_sma3nz_amean"),
             ("uv_spectral_flux_mean", "spectralFluxUV_sma3nz_amean"),
             ("loudness_peaks_per_s", "loudnessPeaksPerSec"),
             ("voiced_segments_per_s", "VoicedSegmentsPerSec"),
             ("voiced_segment_mean_s", "MeanVoicedSegmentLengthSec"),
             ("voiced_segment_std_s", "StddevVoicedSegmentLengthSec"),
             ("unvoiced_segment_mean_s", "MeanUnvoicedSegmentLength"),
             ("unvoiced_segment_std_s", "StddevUnvoicedSegmentLength"),
             ("equivalent_sound_level_db", "equivalentSoundLevel_dBp")]
    return tuple(rows)


FEATURES: tuple[tuple[str, str], ...] = _feature_table()
"""``(name, eGeMAPSv02 parameter it approximates)`` for each of the 88 output columns, in order."""


@dataclass(frozen=True)
class FrameDescriptors:
    """The smoothed frame-level descriptors of one clip, all ``[T]`` (NaN where undefined)."""

    voiced: np.ndarray            # bool: active and periodic
    active: np.ndarray            # bool: within activity_range_db of the loudest frame
    f0_st: np.ndarray             # semitones re 27.5 Hz (voiced)
    loudness: np.ndarray
    spectral_flux: np.ndarray
    mfcc: np.ndarray              # [4, T]: MFCC 1-4
    jitter: np.ndarray            # fraction (voiced)
    shimmer_db: np.ndarray        # dB (voiced)
    hnr_db: np.ndarray            # dB (voiced)
    h1_h2_db: np.ndarray          # dB (voiced)
    h1_a3_db: np.ndarray          # dB (voiced)
    formant_hz: np.ndarray        # [3, T] (voiced)
    bandwidth_hz: np.ndarray      # [3, T] (voiced)
    formant_rel_h1_db: np.ndarray  # [3, T] (voiced)
    alpha_ratio_db: np.ndarray
    hammarberg_db: np.ndarray
    slope_0_500: np.ndarray       # dB/Hz
    slope_500_1500: np.ndarray    # dB/Hz
    frame_power: np.ndarray       # mean square of each frame (linear)


@EXTRACTORS.register("egemaps_librosa")
class EgemapsLibrosa(Extractor):
    """eGeMAPSv02-style functionals with librosa -> float32 ``[88]``; see the module docstring."""

    name: ClassVar[str] = "egemaps_librosa"
    modality: ClassVar[str] = "audio"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"

    @dataclass(frozen=True)
    class Config:
        sample_rate_hz: int = 16000
        n_fft: int = 512                    # spectral frames: 32 ms (eGeMAPS: 25 ms)
        frame_length: int = 1024            # pitch/harmonic frames: 64 ms (eGeMAPS: 60 ms)
        hop_length: int = 160               # 10 ms, as eGeMAPS
        fmin_hz: float = 55.0
        fmax_hz: float = 800.0
        periodicity_threshold: float = 0.5
        activity_range_db: float = 40.0
        silence_dbfs: float = -60.0
        min_duration_s: float = 0.1
        n_mels: int = 26                    # MFCC and loudness bands (openSMILE's MFCC default)
        lpc_rate_hz: int = 11000            # formant analysis up to 5.5 kHz
        lpc_order: int = 10                 # two poles per formant, five formants below 5.5 kHz
        lpc_window_s: float = 0.03
        max_bandwidth_hz: float = 600.0     # wider LPC resonances are not formants
        loudness_peak_prominence: float = 0.25   # a loudness peak rises this share of the median
        batch_size: int = 16

    def __init__(self, config: "EgemapsLibrosa.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        c = self.config
        check_pitch_settings(self.name, c)
        if c.sample_rate_hz < 10000:
            raise ValueError(f"{self.name}: sample_rate_hz={c.sample_rate_hz} is too low for the 1-5 kHz "
                             "bands of the alpha ratio and Hammarberg index (needs >= 10000)")
        if not 2 * 3500 <= c.lpc_rate_hz <= c.sample_rate_hz:
            raise ValueError(f"{self.name}: lpc_rate_hz must be in [7000, sample_rate_hz], got {c.lpc_rate_hz}")
        self._mel: np.ndarray | None = None

    # --- layout --------------------------------------------------------------------------
    @staticmethod
    def feature_names() -> list[str]:
        """Names of the 88 output columns, in order."""
        return [ours for ours, _ in FEATURES]

    @staticmethod
    def egemaps_names() -> list[str]:
        """The eGeMAPSv02 parameter (openSMILE's column name) each column approximates."""
        return [theirs for _, theirs in FEATURES]

    @property
    def dim(self) -> int:
        return len(FEATURES)

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
        """Decode and compute the 88 functionals (CPU, in the decoding worker)."""
        from threadpoolctl import threadpool_limits  # deferred: loads threadpoolctl only when used

        wav = load_audio(sample, self.config.sample_rate_hz)
        # Small matrices: a multi-threaded BLAS only spins (see librosa_prosody).
        with threadpool_limits(limits=1, user_api="blas"):
            return self.features(wav)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The statistics are done in :meth:`load`; one ``[88]`` float32 vector per sample."""
        return [np.asarray(x, dtype=np.float32) for x in inputs]

    def features(self, wav: np.ndarray) -> np.ndarray:
        """Float32 ``[88]`` for a mono waveform ``[N]`` at ``sample_rate_hz``.

        Raises :class:`MediaError` (``too_short``, ``silent_audio``, ``nonfinite_feature``).
        """
        c = self.config
        y = np.ascontiguousarray(wav, dtype=np.float32)
        duration_s = y.size / c.sample_rate_hz
        if duration_s < c.min_duration_s:
            raise MediaError("too_short", f"{duration_s:.3f} s of audio; {self.name} needs at least "
                             f"min_duration_s={c.min_duration_s}")
        d = self.descriptors(y)
        frame_s = c.hop_length / c.sample_rate_hz
        voiced, active = d.voiced, d.active
        enough_voiced = voiced.sum() >= _MIN_VOICED_FRAMES
        unvoiced = active & ~voiced

        def on(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
            sel = x[mask]
            return sel[np.isfinite(sel)]

        def voiced_mean_cv(x: np.ndarray) -> list[float]:
            return _mean_cv(on(x, voiced)) if enough_voiced else [0.0, 0.0]

        parts: list[list[float]] = []
        if enough_voiced:
            parts.append(_percentile_block(on(d.f0_st, voiced)) + _slope_block(d.f0_st, voiced, frame_s))
        else:
            parts.append([0.0] * 10)
        everywhere = np.ones_like(voiced)
        parts.append(_percentile_block(d.loudness) + _slope_block(d.loudness, everywhere, frame_s))
        parts.append(_mean_cv(on(d.spectral_flux, everywhere)))
        for k in range(4):
            parts.append(_mean_cv(d.mfcc[k]))
        for lld in (d.jitter, d.shimmer_db, d.hnr_db, d.h1_h2_db, d.h1_a3_db):
            parts.append(voiced_mean_cv(lld))
        for k in range(3):
            for lld in (d.formant_hz[k], d.bandwidth_hz[k], d.formant_rel_h1_db[k]):
                parts.append(voiced_mean_cv(lld))
        spectral_v = (d.alpha_ratio_db, d.hammarberg_db, d.slope_0_500, d.slope_500_1500, d.spectral_flux)
        for lld in spectral_v + tuple(d.mfcc):
            parts.append(voiced_mean_cv(lld))
        for lld in spectral_v:
            values = on(lld, unvoiced)
            parts.append([float(values.mean()) if values.size else 0.0])
        parts.append([_peaks_per_s(d.loudness, active, c.loudness_peak_prominence, duration_s)])
        parts.append(_segment_block(voiced, frame_s, duration_s) if enough_voiced else [0.0] * 5)
        parts.append([10.0 * np.log10(max(float(d.frame_power.mean()), _POWER_FLOOR))])

        out = np.array([v for p in parts for v in p], dtype=np.float64).astype(np.float32)
        if out.size != len(FEATURES):
            raise AssertionError(f"{self.name} built {out.size} features, expected {len(FEATURES)}")
        if not np.all(np.isfinite(out)):
            bad = [n for n, v in zip(self.feature_names(), out) if not np.isfinite(v)]
            raise MediaError("nonfinite_feature", f"non-finite eGeMAPS features: {bad[:5]}")
        return out

    # --- frame-level descriptors -----------------------------------------------------------
    def descriptors(self, y: np.ndarray) -> FrameDescriptors:
        """The smoothed frame-level descriptors of a mono waveform ``[N]`` (all ``[T]``)."""
        import librosa  # deferred: loads librosa only when used

        c = self.config
        sr, hop = c.sample_rate_hz, c.hop_length
        track = voicing_track(y, self.name, c)
        mag = np.abs(librosa.stft(y, n_fft=c.n_fft, hop_length=hop))               # [F, T]
        n_frames = min(track.rms_db.size, track.f0_hz.size, mag.shape[1])
        mag = mag[:, :n_frames]
        active = track.active[:n_frames]
        voiced = _clean_voicing(track.voiced[:n_frames], active)
        f0_hz = track.f0_hz[:n_frames]
        power = mag.astype(np.float64) ** 2
        freqs = librosa.fft_frequencies(sr=sr, n_fft=c.n_fft)

        mel_power = self._mel_basis() @ power                                        # [M, T]
        loudness = np.sum(mel_power ** 0.33, axis=0)
        log_mel = 10.0 * np.log10(np.maximum(mel_power, _POWER_FLOOR))
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=5)[1:5]                         # [4, T]

        unit = mag / np.maximum(np.linalg.norm(mag, axis=0, keepdims=True), 1e-12)
        flux = np.full(n_frames, np.nan)
        flux[1:] = np.sum(np.diff(unit, axis=1) ** 2, axis=0)

        power_db = 10.0 * np.log10(power + _POWER_FLOOR)
        alpha = 10.0 * np.log10(_band(power, freqs, 1000, 5000).sum(0) + _POWER_FLOOR) \
            - 10.0 * np.log10(_band(power, freqs, 50, 1000).sum(0) + _POWER_FLOOR)
        hammarberg = _band(power_db, freqs, 0, 2000).max(0) - _band(power_db, freqs, 2000, 5000).max(0)
        slope_low = _regression_slope(freqs, power_db, 0, 500)
        slope_mid = _regression_slope(freqs, power_db, 500, 1500)

        # A running median inside each voiced run removes the octave slips yin makes at onsets
        # and offsets (openSMILE's pitch smoother does the same job); periods, harmonics and
        # formant levels below use the cleaned F0 too.
        f0_hz = _median_within_runs(f0_hz, voiced, width=5)
        f0_st = np.full(n_frames, np.nan)
        f0_st[voiced] = 12.0 * np.log2(f0_hz[voiced] / F0_REFERENCE_HZ)
        r = np.clip(track.periodicity[:n_frames].astype(np.float64), _HNR_R_LIMIT, 1 - _HNR_R_LIMIT)
        hnr = np.where(voiced, 10.0 * np.log10(r / (1 - r)), np.nan)
        jitter, shimmer = self._jitter_shimmer(y, f0_hz, voiced)
        formants, bandwidths = self._formants(y, voiced)
        h1_h2, h1_a3, rel = self._harmonic_levels(y, f0_hz, voiced, formants, bandwidths)

        return FrameDescriptors(
            voiced=voiced, active=active,
            f0_st=_sma3(f0_st, voiced), loudness=_sma3(loudness), spectral_flux=_sma3(flux),
            mfcc=np.stack([_sma3(m) for m in mfcc]),
            jitter=_sma3(jitter, voiced), shimmer_db=_sma3(shimmer, voiced), hnr_db=_sma3(hnr, voiced),
            h1_h2_db=_sma3(h1_h2, voiced), h1_a3_db=_sma3(h1_a3, voiced),
            formant_hz=np.stack([_sma3(f, voiced) for f in formants]),
            bandwidth_hz=np.stack([_sma3(b, voiced) for b in bandwidths]),
            formant_rel_h1_db=np.stack([_sma3(a, voiced) for a in rel]),
            alpha_ratio_db=_sma3(alpha, active), hammarberg_db=_sma3(hammarberg, active),
            slope_0_500=_sma3(slope_low, active), slope_500_1500=_sma3(slope_mid, active),
            frame_power=10.0 ** (track.rms_db[:n_frames] / 10.0))

    def _mel_basis(self) -> np.ndarray:
        if self._mel is None:
            import librosa  # deferred: loads librosa only when used

            c = self.config
            self._mel = librosa.filters.mel(sr=c.sample_rate_hz, n_fft=c.n_fft, n_mels=c.n_mels,
                                            fmin=20.0, fmax=c.sample_rate_hz / 2).astype(np.float64)
        return self._mel

    def _jitter_shimmer(self, y: np.ndarray, f0_hz: np.ndarray, voiced: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Per frame ``[T]``: local jitter (fraction) and local shimmer (dB), NaN where no two
        consecutive periods fall within the frame's ``frame_length`` window."""
        c = self.config
        n_frames = voiced.size
        times, jitter_pairs, shimmer_pairs = [], [], []
        for start, stop in _runs(voiced):
            period_starts, periods, amplitudes = _track_periods(y, f0_hz, start, stop, c.hop_length,
                                                                c.sample_rate_hz)
            if periods.size < 2:
                continue
            # pair k compares period k with period k + 1; it sits where period k + 1 starts
            times.append(period_starts[1:])
            jitter_pairs.append(np.abs(np.diff(periods)) / (0.5 * (periods[1:] + periods[:-1])))
            amp = np.maximum(amplitudes, 1e-9)
            shimmer_pairs.append(np.abs(20.0 * np.log10(amp[1:] / amp[:-1])))
        jitter = np.full(n_frames, np.nan)
        shimmer = np.full(n_frames, np.nan)
        if not times:
            return jitter, shimmer
        t = np.concatenate(times)
        jp, sp = np.concatenate(jitter_pairs), np.concatenate(shimmer_pairs)
        order = np.argsort(t)
        t, jp, sp = t[order], jp[order], sp[order]
        centres = np.arange(n_frames) * c.hop_length
        lo = np.searchsorted(t, centres - c.frame_length / 2)
        hi = np.searchsorted(t, centres + c.frame_length / 2)
        count = hi - lo
        has = (count > 0) & voiced
        csum_j = np.concatenate([[0.0], np.cumsum(jp)])
        csum_s = np.concatenate([[0.0], np.cumsum(sp)])
        jitter[has] = (csum_j[hi] - csum_j[lo])[has] / count[has]
        shimmer[has] = (csum_s[hi] - csum_s[lo])[has] / count[has]
        return jitter, shimmer

    def _formants(self, y: np.ndarray, voiced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``([3, T], [3, T])``: F1-F3 frequencies and bandwidths (Hz) from LPC roots on voiced
        frames; NaN elsewhere or where fewer resonances qualify."""
        import librosa  # deferred: loads librosa only when used

        c = self.config
        n_frames = voiced.size
        freq = np.full((3, n_frames), np.nan)
        bw = np.full((3, n_frames), np.nan)
        idx = np.flatnonzero(voiced)
        if idx.size == 0:
            return freq, bw
        rate = c.lpc_rate_hz
        low = librosa.resample(y, orig_sr=c.sample_rate_hz, target_sr=rate) if rate != c.sample_rate_hz else y
        # Pre-emphasis from 50 Hz, as Praat: flattens the glottal tilt so F2/F3 get poles.
        low = np.append(low[0], low[1:] - np.exp(-2 * np.pi * 50 / rate) * low[:-1])
        half = int(round(c.lpc_window_s * rate / 2))
        padded = np.pad(low, half)
        centres = np.rint(idx * c.hop_length * rate / c.sample_rate_hz).astype(np.int64)
        frames = padded[centres[:, None] + np.arange(2 * half)] * np.hamming(2 * half)   # [V, W]
        energy = np.einsum("vw,vw->v", frames, frames)
        ok = energy > 1e-10
        if not ok.any():
            return freq, bw
        coeffs = librosa.lpc(frames[ok], order=c.lpc_order, axis=-1)                      # [V', p + 1]
        roots = _polynomial_roots(coeffs)                                                  # [V', p]
        angle = np.angle(roots)
        f_hz = angle * rate / (2 * np.pi)
        b_hz = -np.log(np.maximum(np.abs(roots), 1e-12)) * rate / np.pi
        good = (np.imag(roots) > 0) & (f_hz > 90.0) & (f_hz < rate / 2 - 50.0) & (b_hz < c.max_bandwidth_hz)
        f_sorted = np.where(good, f_hz, np.inf)
        order = np.argsort(f_sorted, axis=1)[:, :3]
        rows = np.arange(order.shape[0])[:, None]
        f3 = f_sorted[rows, order]
        b3 = np.where(np.isfinite(f3), b_hz[rows, order], np.nan)
        f3 = np.where(np.isfinite(f3), f3, np.nan)
        freq[:, idx[ok]] = f3.T
        bw[:, idx[ok]] = b3.T
        return freq, bw

    def _harmonic_levels(self, y: np.ndarray, f0_hz: np.ndarray, voiced: np.ndarray,
                         formants: np.ndarray, bandwidths: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(H1-H2 [T], H1-A3 [T], formant level re H1 [3, T])`` in dB from a ``frame_length``
        spectrum; NaN on unvoiced frames."""
        import librosa  # deferred: loads librosa only when used

        c = self.config
        n_frames = voiced.size
        h1_h2 = np.full(n_frames, np.nan)
        h1_a3 = np.full(n_frames, np.nan)
        rel = np.full((3, n_frames), np.nan)
        idx = np.flatnonzero(voiced)
        if idx.size == 0:
            return h1_h2, h1_a3, rel
        spec = np.abs(librosa.stft(y, n_fft=c.frame_length, hop_length=c.hop_length))[:, idx]
        spec_db = 20.0 * np.log10(spec.T + 1e-10)                                        # [V, K]
        freqs = librosa.fft_frequencies(sr=c.sample_rate_hz, n_fft=c.frame_length)
        f0 = f0_hz[idx]
        h1 = _peak_db(spec_db, freqs, f0 - f0 / 2, f0 + f0 / 2)
        h2 = _peak_db(spec_db, freqs, 2 * f0 - f0 / 2, 2 * f0 + f0 / 2)
        h1_h2[idx] = h1 - h2
        for k in range(3):
            fk = formants[k, idx]
            rel[k, idx] = _peak_db(spec_db, freqs, fk - f0 / 2, fk + f0 / 2) - h1
        f3, b3 = formants[2, idx], bandwidths[2, idx]
        reach = np.maximum(b3 / 2, f0 / 2)
        h1_a3[idx] = h1 - _peak_db(spec_db, freqs, f3 - reach, f3 + reach)
        return h1_h2, h1_a3, rel


# --- pure helpers ------------------------------------------------------------------------------
def _band(x: np.ndarray, freqs: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    """Rows of ``x`` ``[F, T]`` whose bin frequency lies in ``[lo_hz, hi_hz)``."""
    return x[(freqs >= lo_hz) & (freqs < hi_hz)]


def _regression_slope(freqs: np.ndarray, power_db: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    """Least-squares slope ``[T]`` (dB/Hz) of each frame's dB spectrum over ``[lo_hz, hi_hz]``."""
    sel = (freqs >= lo_hz) & (freqs <= hi_hz)
    f = freqs[sel] - freqs[sel].mean()
    s = power_db[sel]
    return (f @ (s - s.mean(axis=0))) / (f @ f)


def _peak_db(spec_db: np.ndarray, freqs: np.ndarray, lo_hz: np.ndarray, hi_hz: np.ndarray) -> np.ndarray:
    """Highest level ``[V]`` of each row of ``spec_db`` ``[V, K]`` within its own band; NaN where
    the band is undefined (NaN bounds) or holds no bin."""
    inside = (freqs[None, :] >= lo_hz[:, None]) & (freqs[None, :] <= hi_hz[:, None])
    peak = np.where(inside, spec_db, -np.inf).max(axis=1)
    return np.where(np.isfinite(peak), peak, np.nan)


def _polynomial_roots(coeffs: np.ndarray) -> np.ndarray:
    """Roots ``[V, p]`` of each polynomial ``coeffs[v]`` (``[V, p + 1]``, leading 1), batched via
    the eigenvalues of the companion matrices."""
    v, p1 = coeffs.shape
    p = p1 - 1
    companion = np.zeros((v, p, p))
    companion[:, 0, :] = -coeffs[:, 1:] / coeffs[:, :1]
    companion[:, np.arange(1, p), np.arange(p - 1)] = 1.0
    return np.linalg.eigvals(companion)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of True in a boolean ``[T]`` (stop exclusive)."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _track_periods(y: np.ndarray, f0_hz: np.ndarray, start: int, stop: int, hop: int, sample_rate_hz: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consecutive pitch periods within voiced frames ``[start, stop)``.

    From each period start, the next one is where the waveform best repeats the current period
    (normalised cross-correlation over 0.8-1.2 times yin's local period; the peak refined to a
    sub-sample lag), which is steadier than picking waveform maxima on speech. Returns the start
    sample ``[P]``, the length in samples ``[P]`` and the peak-to-peak amplitude ``[P]`` of each
    period window (windows start half a period before a waveform peak).
    """
    lo = max(0, start * hop - hop // 2)
    hi = min(y.size, (stop - 1) * hop + hop // 2 + 1)
    x = y[lo:hi].astype(np.float64)
    # Window energies from a running sum of squares; the correlations run in C (np.correlate).
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    starts: list[int] = []
    lengths: list[float] = []
    amplitudes: list[float] = []
    # Start half a period before the first waveform maximum, so each period window holds its
    # peak near the middle: the peak-to-peak amplitude then never depends on a boundary sample.
    n0 = int(round(sample_rate_hz / f0_hz[start]))
    if x.size < 2 * n0:
        return np.array([], dtype=np.int64), np.array([]), np.array([])
    peak = int(np.argmax(x[:n0]))
    pos = peak - n0 // 2 if peak >= n0 // 2 else peak + n0 - n0 // 2
    while True:
        frame = min(stop - 1, max(start, int(round((lo + pos) / hop))))
        period = sample_rate_hz / f0_hz[frame]
        n = int(round(period))
        first, last = int(0.8 * period), int(np.ceil(1.2 * period))
        if pos + last + n > x.size or n < 2:
            break
        ref = x[pos:pos + n]
        candidates = np.arange(pos + first, pos + last + 1)
        corr = np.correlate(x[pos + first:pos + last + n], ref, mode="valid") / np.sqrt(
            (energy[candidates + n] - energy[candidates]) * (energy[pos + n] - energy[pos]) + 1e-20)
        k = int(np.argmax(corr))
        starts.append(lo + pos)
        lengths.append(first + k + _parabola_offset(corr, k))
        amplitudes.append(float(ref.max() - ref.min()))
        pos += first + k
    return np.asarray(starts), np.asarray(lengths), np.asarray(amplitudes)


def _parabola_offset(values: np.ndarray, i: int) -> float:
    """Sub-sample offset in (-0.5, 0.5) of the maximum at ``values[i]`` (parabola through its neighbours)."""
    if i <= 0 or i >= values.size - 1:
        return 0.0
    left, mid, right = float(values[i - 1]), float(values[i]), float(values[i + 1])
    curvature = left - 2 * mid + right
    return 0.0 if curvature >= 0 else 0.5 * (left - right) / curvature


def _median_within_runs(x: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """``x`` ``[T]`` with each masked run replaced by its running median (window ``width``, edge
    frames repeated at the run's ends); other frames unchanged."""
    from scipy.ndimage import median_filter  # deferred: loads scipy only when used

    out = np.array(x, dtype=np.float64, copy=True)
    for start, stop in _runs(mask):
        out[start:stop] = median_filter(out[start:stop], size=width, mode="nearest")
    return out


def _clean_voicing(voiced: np.ndarray, active: np.ndarray, max_gap: int = 2, min_run: int = 3) -> np.ndarray:
    """Voiced mask ``[T]`` with active gaps of at most ``max_gap`` frames filled (pitch-tracker
    flicker inside a vowel) and voiced runs shorter than ``min_run`` frames dropped (too short to
    hold a few periods); the segment statistics count syllables, not flicker."""
    v = voiced.copy()
    for start, stop in _runs(~v):
        if start > 0 and stop < v.size and stop - start <= max_gap and active[start:stop].all():
            v[start:stop] = True
    for start, stop in _runs(v):
        if stop - start < min_run:
            v[start:stop] = False
    return v


def _sma3(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """3-frame moving average (eGeMAPS' ``sma3``) over valid, finite neighbours; NaN elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x) if valid is None else (np.isfinite(x) & valid)
    values = np.where(ok, x, 0.0)
    weight = ok.astype(np.float64)
    kernel = np.ones(3)
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(weight, kernel, mode="same")
    return np.where(ok, total / np.maximum(count, 1.0), np.nan)


def _mean_cv(x: np.ndarray) -> list[float]:
    """``[mean, std / mean]`` of the finite values (0, 0 when there are none). The ratio keeps the
    mean's sign, as openSMILE's ``stddevNorm``; it is large where a mean is near 0 (MFCC 2-4)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return [0.0, 0.0]
    mean = float(x.mean())
    return [mean, float(x.std() / (mean if abs(mean) > _CV_EPS else _CV_EPS))]


def _percentile_block(x: np.ndarray) -> list[float]:
    """``[mean, cv, p20, p50, p80, p80 - p20]`` of the finite values."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return [0.0] * 6
    p20, p50, p80 = np.percentile(x, [20, 50, 80])
    return _mean_cv(x) + [float(p20), float(p50), float(p80), float(p80 - p20)]


def _slope_block(contour: np.ndarray, valid: np.ndarray, frame_s: float) -> list[float]:
    """``[rising mean, rising std, falling mean, falling std]`` (units per second) of the slopes of
    the contour's monotonic parts within runs of valid frames; falling slopes are negative."""
    rising, falling = [], []
    ok = valid & np.isfinite(contour)
    for start, stop in _runs(ok):
        delta = np.diff(contour[start:stop])
        if delta.size == 0:
            continue
        sign = np.sign(delta)
        for s0, s1 in _runs(sign > 0):
            rising.append(delta[s0:s1].sum() / ((s1 - s0) * frame_s))
        for s0, s1 in _runs(sign < 0):
            falling.append(delta[s0:s1].sum() / ((s1 - s0) * frame_s))

    def mean_std(v: list[float]) -> list[float]:
        return [float(np.mean(v)), float(np.std(v))] if v else [0.0, 0.0]

    return mean_std(rising) + mean_std(falling)


def _peaks_per_s(loudness: np.ndarray, active: np.ndarray, prominence: float, duration_s: float) -> float:
    """Loudness peaks per second: local maxima that rise ``prominence`` x the median active
    loudness above their surroundings."""
    from scipy.signal import find_peaks  # deferred: loads scipy only when used

    contour = np.nan_to_num(loudness, nan=0.0)
    level = float(np.median(contour[active])) if active.any() else 0.0
    if level <= 0:
        return 0.0
    peaks, _ = find_peaks(contour, prominence=prominence * level)
    return len(peaks) / duration_s


def _segment_block(voiced: np.ndarray, frame_s: float, duration_s: float) -> list[float]:
    """``[voiced segments per s, mean and std voiced length (s), mean and std of the unvoiced
    gaps between voiced segments (s)]``."""
    runs = _runs(voiced)
    lengths = np.array([stop - start for start, stop in runs], dtype=np.float64) * frame_s
    gaps = np.array([runs[k + 1][0] - runs[k][1] for k in range(len(runs) - 1)], dtype=np.float64) * frame_s
    gap_stats = [float(gaps.mean()), float(gaps.std())] if gaps.size else [0.0, 0.0]
    return [len(runs) / duration_s, float(lengths.mean()), float(lengths.std())] + gap_stats
