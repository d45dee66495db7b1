"""Physiological signals (EDA, ECG, BVP, respiration, temperature...) as a frame-level modality.

A sample's signal file comes from the generic manifest's ``signal`` column (``signal_<name>``
for more than one: :mod:`mer.data.prepare_generic`), a path relative to the dataset root:

* ``.csv`` / ``.tsv``: a header row, one column per channel; a ``time`` column (seconds) gives
  the sample times, else ``rate_hz`` does;
* ``.npy``: ``[T, C]`` (or ``[T]``) at ``rate_hz``;
* ``.npz``: ``signal`` ``[T, C]``, and ``time`` ``[T]`` or ``rate_hz`` (a scalar).

Each channel is cut into windows of ``window_s`` seconds every ``hop_s`` seconds; a window's
row holds, per channel, its mean, standard deviation, minimum, maximum and slope (least squares,
units per second): ``[T_windows, 5 C]``, each row timed at its window's centre
(:mod:`mer.core.timebase`), so the frame-level fusion models and the time alignment treat it as
any other stream. ``channels`` picks columns by name (CSV) or index (arrays); missing values
(NaN, empty cells) are interpolated within a channel. A file that cannot be read, has a channel
with no finite value, irregular or decreasing times, or is shorter than one window fails that
sample only (``decode_error`` / ``too_short``), with its name and the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from feature_extractors.base import EXTRACTORS, Extractor, Inputs
from mer.core.failures import MediaError
from mer.core.samples import Sample
from mer.core.timebase import with_times

STATS = ("mean", "std", "min", "max", "slope")
TIME_COLUMNS = ("time", "t", "timestamp", "seconds")


def signal_path(sample: Sample, signal: str) -> str | None:
    """The file of ``sample``'s signal ``signal`` (``physio`` for the plain ``signal`` column)."""
    files = (sample.meta or {}).get("signals") or {}
    return files.get(signal)


def read_signal(path: str, rate_hz: float | None, channels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(values [T, C] float64, times [T] seconds, channel names)`` of a signal file (module
    docstring). Raises ``ValueError`` saying what is wrong."""
    p = Path(path)
    suffix = p.suffix.lower()
    times = None
    if suffix in (".csv", ".tsv", ".txt"):
        frame = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
        tcol = next((c for c in frame.columns if str(c).strip().lower() in TIME_COLUMNS), None)
        if tcol is not None:
            times = pd.to_numeric(frame.pop(tcol), errors="coerce").to_numpy(np.float64)
        names = [str(c) for c in frame.columns]
        if channels:
            missing = [c for c in channels if c not in names]
            if missing:
                raise ValueError(f"no channel(s) {missing} in {p.name} (has {names})")
            frame, names = frame[list(channels)], list(channels)
        values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    elif suffix in (".npy", ".npz"):
        if suffix == ".npy":
            values = np.load(p, allow_pickle=False)
        else:
            with np.load(p, allow_pickle=False) as z:
                if "signal" not in z:
                    raise ValueError(f"{p.name} has no 'signal' array (has {sorted(z.files)})")
                values = z["signal"]
                times = z["time"].astype(np.float64) if "time" in z else None
                if times is None and "rate_hz" in z:
                    rate_hz = float(z["rate_hz"])
        values = np.asarray(values, np.float64)
        values = values[:, None] if values.ndim == 1 else values
        if values.ndim != 2:
            raise ValueError(f"{p.name}: a signal is [T, C], got shape {values.shape}")
        names = [str(i) for i in range(values.shape[1])]
        if channels:
            idx = [int(c) for c in channels]
            if max(idx) >= values.shape[1]:
                raise ValueError(f"{p.name} has {values.shape[1]} channels; channels={list(channels)}")
            values, names = values[:, idx], [str(i) for i in idx]
    else:
        raise ValueError(f"{p.name}: a signal file is .csv, .tsv, .npy or .npz")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{p.name} holds no samples")
    if times is None:
        if not rate_hz:
            raise ValueError(f"{p.name} has no time column; set the extractor's rate_hz")
        times = np.arange(values.shape[0], dtype=np.float64) / float(rate_hz)
    if len(times) != len(values) or not np.isfinite(times).all() or np.any(np.diff(times) <= 0):
        raise ValueError(f"{p.name}: the times must be finite and increasing")
    for j in range(values.shape[1]):
        col = values[:, j]
        ok = np.isfinite(col)
        if not ok.any():
            raise ValueError(f"{p.name}: channel {names[j]} has no finite value")
        if not ok.all():
            col[~ok] = np.interp(times[~ok], times[ok], col[ok])
    return values, times, names


def window_statistics(values: np.ndarray, times: np.ndarray, window_s: float, hop_s: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [W, 5 C] float32, centres [W] seconds)``: per window and channel, :data:`STATS`."""
    start, end = float(times[0]), float(times[-1])
    starts = np.arange(start, end - window_s + 1e-9, hop_s) if end - start >= window_s else np.array([])
    rows, centres = [], []
    for s in starts:
        sel = (times >= s) & (times < s + window_s)
        if sel.sum() < 2:
            continue
        t, x = times[sel], values[sel]
        tc = t - t.mean()
        slope = (tc[:, None] * (x - x.mean(0))).sum(0) / max(float((tc ** 2).sum()), 1e-12)
        rows.append(np.stack([x.mean(0), x.std(0), x.min(0), x.max(0), slope], axis=1).reshape(-1))
        centres.append(s + window_s / 2)
    if not rows:
        return np.zeros((0, len(STATS) * values.shape[1]), np.float32), np.zeros(0)
    return np.asarray(rows, np.float32), np.asarray(centres, np.float64)


@EXTRACTORS.register("physio_stats")
class PhysioStats(Extractor):
    """Windowed statistics of a sample's physiological signal file (module docstring)."""

    name: ClassVar[str] = "physio_stats"
    modality: ClassVar[str] = "physio"
    level: ClassVar[str] = "frame"
    version: ClassVar[str] = "1"

    @dataclass(frozen=True)
    class Config:
        signal: str = "physio"               # which signal column: physio (``signal``) or <name> (``signal_<name>``)
        rate_hz: float | None = None         # sampling rate where the file gives no times
        channels: tuple[str, ...] = ()       # channel names (CSV) or indices (arrays); empty: all
        window_s: float = 2.0
        hop_s: float = 1.0
        batch_size: int = 32

    def __init__(self, config: "PhysioStats.Config | None" = None, **overrides) -> None:
        if "channels" in overrides and overrides["channels"] is not None:
            overrides["channels"] = tuple(str(c) for c in overrides["channels"])
        super().__init__(config, **overrides)
        if self.config.window_s <= 0 or self.config.hop_s <= 0:
            raise ValueError(f"{self.name}: window_s and hop_s must be > 0")

    def inputs(self, sample: Sample) -> Inputs:
        return Inputs(files={self.config.signal: signal_path(sample, self.config.signal)})

    def load(self, sample: Sample) -> np.ndarray:
        path = signal_path(sample, self.config.signal)
        if not path:
            raise MediaError("no_media", f"{sample.name} has no {self.config.signal} signal file")
        if not Path(path).is_file():
            raise MediaError("missing_file", f"{sample.name}: signal file {path} does not exist")
        try:
            values, times, _ = read_signal(path, self.config.rate_hz, self.config.channels)
        except (ValueError, OSError) as err:
            raise MediaError("decode_error", f"{sample.name}: {err}") from None
        rows, centres = window_statistics(values, times, self.config.window_s, self.config.hop_s)
        if not len(rows):
            raise MediaError("too_short", f"{sample.name}: signal of {times[-1] - times[0]:.2f} s is shorter "
                                          f"than one {self.config.window_s} s window")
        return with_times(rows, centres)

    def forward(self, samples, inputs):
        return list(inputs)
