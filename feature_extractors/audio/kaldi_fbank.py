"""Kaldi-style log-mel filterbank in numpy: what ``torchaudio.compliance.kaldi.fbank`` computes with
its defaults, for the audio encoders trained on it (HiCMAE, AudioMAE, AST), since torchaudio is not
installable here.

Per frame (25 ms every 10 ms, ``snip_edges``: only whole frames): remove the frame's mean, pre-emphasis
0.97 (the first sample against itself), a window (``hanning``: the symmetric Hann window; ``povey``:
Hann to the power 0.85), zero-padded to the next power of two, the power spectrum, ``num_mel_bins``
triangular filters on the mel scale ``1127 ln(1 + f / 700)`` from ``low_freq`` (20 Hz) to Nyquist
(``high_freq`` 0), and the log with a floor at float32's epsilon. Computed in float64; the golden
test compares it with torchaudio's float32 output on a real speech clip.
"""
from __future__ import annotations

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def mel_scale(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float = 20.0,
              high_freq: float = 0.0) -> np.ndarray:
    """``[num_bins, padded_window // 2 + 1]`` triangular filters (the last FFT bin gets none, as Kaldi's)."""
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0.0 <= low_freq < high <= nyquist:
        raise ValueError(f"mel filters need 0 <= low_freq < high_freq <= Nyquist, got {low_freq}, {high}")
    n_fft_bins = padded_window // 2
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = np.arange(num_bins, dtype=np.float64)[:, None]
    left, centre, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = mel_scale(sample_rate / padded_window * np.arange(n_fft_bins))[None, :]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1)))


def kaldi_fbank(waveform: np.ndarray, sample_rate: int = 16000, num_mel_bins: int = 128, *,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, window: str = "hanning",
                preemphasis: float = 0.97, low_freq: float = 20.0, high_freq: float = 0.0) -> np.ndarray:
    """``[frames, num_mel_bins]`` float32 log-mel energies of a mono ``waveform`` (module docstring);
    ``frames = 1 + (N - frame_length) // frame_shift`` (0 when shorter than one frame)."""
    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    length = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    padded = 1 << (length - 1).bit_length()
    if len(x) < length:
        return np.zeros((0, num_mel_bins), np.float32)
    count = 1 + (len(x) - length) // shift
    frames = np.lib.stride_tricks.sliding_window_view(x, length)[::shift][:count].copy()
    frames -= frames.mean(axis=1, keepdims=True)
    if preemphasis:
        previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
        frames -= preemphasis * previous
    n = np.arange(length)
    if window == "hanning":
        w = 0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))
    elif window == "povey":
        w = (0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))) ** 0.85
    elif window == "hamming":
        w = 0.54 - 0.46 * np.cos(2 * np.pi * n / (length - 1))
    else:
        raise ValueError(f"window must be hanning, povey or hamming, got {window!r}")
    spectrum = np.abs(np.fft.rfft(frames * w, n=padded)) ** 2
    energies = spectrum @ mel_banks(num_mel_bins, padded, sample_rate, low_freq, high_freq).T
    return np.log(np.maximum(energies, FLOAT32_EPS)).astype(np.float32)
