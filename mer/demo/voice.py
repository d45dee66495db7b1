"""The demo's audio: a source-filter synthesiser (glottal pulses -> vowel formants -> syllable
envelope) whose pitch, tempo, loudness and voice quality follow the emotion, and babble made of it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy.signal import lfilter

from mer.data.corrupt import no_clip as _no_clip  # MER-NOISE's own anti-clipping

SAMPLE_RATE_HZ = 16000
"""The rate the audio extractors resample to anyway, so nothing is lost by synthesising at it."""


# ----------------------------------------------------------------------------------------------
# Voice
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speaker:
    """Who is talking and how they are recorded: nuisance the audio model has to see past."""

    f0_hz: float  # habitual pitch
    formant_scale: float  # vocal tract length (higher = shorter tract, brighter vowels)
    rate_scale: float  # habitual tempo
    breathiness: float
    gain_db: float  # microphone distance / recording level
    room_snr_db: float  # the recording's own background noise


def draw_speaker(rng: np.random.Generator) -> Speaker:
    female = rng.random() < 0.5
    return Speaker(
        f0_hz=float(rng.uniform(170, 250) if female else rng.uniform(90, 145)),
        formant_scale=float(rng.uniform(1.05, 1.2) if female else rng.uniform(0.9, 1.03)),
        rate_scale=float(rng.uniform(0.85, 1.15)),
        breathiness=float(rng.uniform(0.01, 0.06)),
        gain_db=float(rng.uniform(-3, 3)),
        room_snr_db=float(rng.uniform(22, 40)),
    )


@dataclass(frozen=True)
class Prosody:
    """How an emotion sounds at full intensity; each field moves away from ``neutral`` with ``a``."""

    f0_scale: float = 1.0  # pitch relative to the speaker's habitual pitch
    f0_range_st: float = 2.0  # size of pitch accents, semitones
    final_rise_st: float = 0.0  # pitch movement over the last part of the utterance (+ rise, - fall)
    syllables_per_s: float = 4.0
    loudness_db: float = 0.0
    open_quotient: float = 0.6  # glottal open phase: low = pressed, bright; high = lax, dark
    tilt: float = 0.3  # pre-emphasis (+ brighter, - darker)
    tremolo_depth: float = 0.0  # pitch (semitones) and loudness wobble at ~6 Hz
    jitter: float = 0.004  # cycle-to-cycle pitch irregularity
    breath: float = 0.0  # extra aspiration noise
    attack_s: float = 0.025  # syllable onset: abrupt (angry) .. soft (sad)


PROSODY: Mapping[str, Prosody] = {
    "neutral": Prosody(final_rise_st=-1.0),
    "angry": Prosody(f0_scale=1.3, f0_range_st=3.0, final_rise_st=-4.0, syllables_per_s=6.0, loudness_db=10.0,
                     open_quotient=0.3, tilt=0.95, jitter=0.012, attack_s=0.005),
    "happy": Prosody(f0_scale=1.35, f0_range_st=12.0, final_rise_st=2.0, syllables_per_s=4.6, loudness_db=4.0,
                     open_quotient=0.55, tilt=0.45, attack_s=0.02),
    "sad": Prosody(f0_scale=0.8, f0_range_st=0.8, final_rise_st=-4.0, syllables_per_s=2.6, loudness_db=-8.0,
                   open_quotient=0.8, tilt=-0.5, breath=0.12, attack_s=0.07),
    "surprise": Prosody(f0_scale=1.22, f0_range_st=4.0, final_rise_st=12.0, syllables_per_s=3.6, loudness_db=3.0,
                        open_quotient=0.5, tilt=0.5, attack_s=0.012),
    "worried": Prosody(f0_scale=1.15, f0_range_st=2.5, final_rise_st=2.0, syllables_per_s=5.0, loudness_db=-4.0,
                       open_quotient=0.66, tilt=0.15, tremolo_depth=1.0, jitter=0.03, breath=0.1, attack_s=0.03),
}
"""Prosody per class, after the acoustic correlates of emotion (arousal: loudness, pitch, tempo,
vocal effort). High-arousal classes deliberately sound alike, as do the low-arousal ones."""

_VOWEL_FORMANTS_HZ = (  # adult male averages; a speaker's formant_scale shifts them
    (730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410), (300, 870, 2240),
    (660, 1720, 2410), (490, 1350, 1690),
)


def _blend(neutral: float, target: float, a: float) -> float:
    return neutral + a * (target - neutral)


def _resonator(freq_hz: float, bandwidth_hz: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    r = math.exp(-math.pi * bandwidth_hz / sr)
    theta = 2 * math.pi * freq_hz / sr
    a = np.array([1.0, -2 * r * math.cos(theta), r * r])
    return np.array([a.sum()]), a  # unity gain at DC keeps vowels comparable in level


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.normal(size=n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def synth_voice(cls: str, intensity: float, speaker: Speaker, duration_s: float, rng: np.random.Generator,
                sr: int = SAMPLE_RATE_HZ, room_noise: bool = True) -> np.ndarray:
    """A wordless utterance with the prosody of ``cls`` at ``intensity``: [N] float32 in [-1, 1].

    Syllables are vowels with an optional fricative or plosive onset, so tempo shows up in the
    onset rate and zero-crossing rate, and voice quality in the spectral shape, as in real speech.
    """
    # Prosody is subtler than a face at equal intensity (and speakers differ more), so a voice that
    # carries an emotion at all starts 40 % of the way to the full prosody.
    a = 0.4 + 0.6 * float(np.clip(intensity, 0.0, 1.0)) if intensity > 0 else 0.0
    p, p0 = PROSODY[cls], PROSODY["neutral"]
    n = int(round(duration_s * sr))
    f0_base = speaker.f0_hz * _blend(1.0, p.f0_scale, a)
    rate = _blend(p0.syllables_per_s, p.syllables_per_s, a) * speaker.rate_scale
    range_st = _blend(p0.f0_range_st, p.f0_range_st, a)
    oq = _blend(p0.open_quotient, p.open_quotient, a)
    tilt = _blend(p0.tilt, p.tilt, a)
    attack = _blend(p0.attack_s, p.attack_s, a)

    # Syllable timing: speech between a short lead-in and tail, one optional phrase pause.
    start, stop = rng.uniform(0.05, 0.25) * sr, n - rng.uniform(0.1, 0.3) * sr
    bounds = []
    t = start
    pause_at = rng.uniform(0.35, 0.65) if rng.random() < 0.5 else 2.0
    while True:
        length = sr / rate * rng.uniform(0.75, 1.25)
        if t + length > stop:
            break
        bounds.append((int(t), int(t + length)))
        gap = sr / rate * rng.uniform(0.05, 0.2)
        if (t - start) / max(stop - start, 1) < pause_at <= (t + length - start) / max(stop - start, 1):
            gap += rng.uniform(0.15, 0.3) * sr
        t += length + gap
    if not bounds:
        bounds = [(int(start), int(stop))]

    # Pitch: accents per syllable, a declination, the emotion's final movement, tremolo, jitter;
    # built at a 200 Hz control rate (smoothing at the audio rate costs more than the rest).
    time = np.arange(n) / sr
    control_hz = 200
    ct = np.arange(int(n / sr * control_hz) + 2) / control_hz
    knots_t = np.array([0.0] + [(b0 + b1) / 2 / sr for b0, b1 in bounds] + [ct[-1]])
    accents = rng.uniform(-0.5, 0.5, knots_t.size) * range_st
    window = np.hanning(17)
    semis = np.convolve(np.interp(ct, knots_t, accents), window / window.sum(), "same")
    progress = np.clip((ct * sr - start) / max(stop - start, 1), 0, 1)
    final = _blend(p0.final_rise_st, p.final_rise_st, a)
    semis += -1.0 * progress + final * np.clip((progress - 0.5) / 0.5, 0, 1) ** 1.5
    jitter = _blend(p0.jitter, p.jitter, a)
    semis += 12 * np.log2(1 + jitter * 3 * rng.normal(size=ct.size).cumsum() / np.sqrt(np.arange(1, ct.size + 1)))
    semis = np.interp(time, ct, semis)
    tremolo = a * p.tremolo_depth
    if tremolo > 0:
        semis += tremolo * np.sin(2 * np.pi * rng.uniform(5, 7) * time)
    f0 = f0_base * 2.0 ** (semis / 12)

    # Glottal source: Rosenberg pulses differentiated (lip radiation); a small open quotient makes
    # pressed, harmonically rich voice.
    phase = np.cumsum(f0 / sr) % 1.0
    tp, tn = 0.6 * oq, 0.4 * oq
    pulse = np.where(phase < tp, 0.5 * (1 - np.cos(np.pi * phase / tp)),
                     np.where(phase < tp + tn, np.cos(0.5 * np.pi * (phase - tp) / tn), 0.0))
    source = np.diff(pulse, prepend=0.0) * (f0_base / 120.0) ** -0.5
    breath = speaker.breathiness + a * p.breath
    source += breath * 0.05 * rng.normal(size=n) * (0.5 + pulse)

    voice = np.zeros(n)
    for b0, b1 in bounds:
        seg_len = b1 - b0
        vowel = _VOWEL_FORMANTS_HZ[rng.integers(len(_VOWEL_FORMANTS_HZ))]
        den = np.array([1.0])
        gain = 1.0
        for k, (f, bw) in enumerate(zip(vowel, (80, 100, 140))):
            num_k, den_k = _resonator(f * speaker.formant_scale * rng.uniform(0.95, 1.05), bw, sr)
            den = np.convolve(den, den_k)
            gain *= num_k[0]
        lo, hi = max(b0 - 200, 0), min(b1 + 200, n)
        seg = lfilter([gain], den, source[lo:hi])[b0 - lo:b0 - lo + seg_len]
        env_t = np.arange(seg_len) / sr
        env = np.minimum(1.0, env_t / max(attack, 1e-3)) * np.minimum(1.0, (seg_len / sr - env_t) / 0.04)
        stress = rng.uniform(0.6, 1.0)
        voice[b0:b1] += seg * env * stress
        onset = rng.random()
        if onset < 0.35:  # fricative: high-passed noise before the vowel
            fl = int(rng.uniform(0.04, 0.1) * sr)
            fr = lfilter([1, -0.95], [1], rng.normal(size=fl)) * np.hanning(fl) * 0.02
            s0 = max(b0 - fl // 2, 0)
            voice[s0:s0 + fl] += fr[: n - s0]
        elif onset < 0.6:  # plosive burst
            bl = int(0.012 * sr)
            voice[b0:b0 + bl] += rng.normal(size=bl)[: n - b0] * np.hanning(bl)[: n - b0] * 0.05

    if tremolo > 0:
        voice *= 1 + 0.4 * tremolo * np.sin(2 * np.pi * 6.0 * time + 1.0)
    voice = lfilter([1.0, -tilt], [1.0], voice) if tilt >= 0 else lfilter([1.0 + tilt], [1.0, tilt], voice)

    level_db = _blend(p0.loudness_db, p.loudness_db, a) + speaker.gain_db
    voice *= 0.03 * 10 ** (level_db / 20) / (np.sqrt(np.mean(voice**2)) + 1e-12)
    if room_noise:
        noise = _pink_noise(n, rng)
        noise *= 0.03 * 10 ** ((speaker.gain_db - speaker.room_snr_db) / 20) / (np.sqrt(np.mean(noise**2)) + 1e-12)
        voice += noise
    return _no_clip(voice).astype(np.float32)


def babble(n: int, rng: np.random.Generator, talkers: int = 4, sr: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Several emotionally flat talkers at once: a stand-in for MUSAN's speech subset."""
    out = np.zeros(n)
    for _ in range(talkers):
        speaker = draw_speaker(rng)
        voice = synth_voice("neutral", 0.0, speaker, n / sr + 0.5, rng, sr=sr, room_noise=False).astype(np.float64)
        offset = rng.integers(0, voice.size - n + 1)
        out += voice[offset:offset + n] * rng.uniform(0.5, 1.0)
    return out
