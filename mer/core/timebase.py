"""The time base of frame-level rows: when, in the sample's media, each row of a ``[T, D]`` feature is.

A frame-level extractor may say when its rows are by returning :class:`FrameRows` (a float32
``[T, D]`` array that carries ``times``); a plain array means *unknown* (text tokens, entries
cached before times were recorded), and everything that reads times falls back to the share of
length for such rows.

The convention, one for every extractor:

* a time is in **seconds from the start of the sample's media**, float64;
* it is the **centre** of what the row describes: a video frame ``k`` of a stream at ``fps`` is
  the instant ``k / fps`` (its presentation time, so ``round(t * fps)`` gives ``k`` back); a row
  over the source frames ``a..b`` (a 16-frame model window, a time region) is at
  ``(a + b) / 2 / fps``; an audio frame is at the centre of its analysis window;
* times never decrease along the rows (a skipped frame leaves a gap, never a step back).

A regular grid (``frame_shift_s``, ``start_s``: row ``t`` at ``start_s + t * frame_shift_s``, as
lhotse's ``Features`` records it) is made with :func:`regular_times`; it is stored like any other
row times (one float64 per row beside the rows), so a stream may mix regular and irregular
samples (a face track with gaps next to one without).
"""
from __future__ import annotations

from typing import Any

import numpy as np


class FrameRows(np.ndarray):
    """A ``[T, ...]`` array (float32 unless ``dtype`` says otherwise) whose ``times`` (``[T]``
    float64, see the module docstring) say when each row along the first axis is. It is an array
    in every other respect, so code that reads an extractor's output (or a ``load`` stage's
    frames) as an array keeps working; arrays derived from it (slices, sums) carry no times."""

    times: np.ndarray | None

    def __new__(cls, values: Any, times: Any, dtype: Any = np.float32) -> "FrameRows":
        obj = np.asarray(values, dtype=dtype).view(cls)
        obj.times = checked_times(times, len(obj))
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.times = None               # a view or result of arithmetic: not the rows the times describe

    def __reduce__(self):
        return (FrameRows, (np.asarray(self), self.times, self.dtype))


def checked_times(times: Any, n: int) -> np.ndarray:
    """``times`` as float64 ``[n]``; ``ValueError`` unless finite and non-decreasing."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.shape != (n,):
        raise ValueError(f"{t.size} row times for {n} rows")
    if not np.isfinite(t).all():
        raise ValueError("row times must be finite")
    if n > 1 and (np.diff(t) < 0).any():
        raise ValueError("row times must not decrease")
    return t


def valid_times(times: Any, n: int) -> np.ndarray | None:
    """``times`` as float64 ``[n]`` when they are usable row times, else None (unknown)."""
    if times is None:
        return None
    try:
        return checked_times(times, n)
    except (ValueError, TypeError):
        return None


def with_times(values: Any, times: Any | None, dtype: Any = np.float32) -> np.ndarray:
    """``values`` as :class:`FrameRows` with ``times``, or as a plain array when ``times`` is None."""
    if times is None:
        return np.asarray(values, dtype=dtype)
    return FrameRows(values, times, dtype)


def times_of(result: Any) -> np.ndarray | None:
    """The row times an extractor's result carries (None: unknown)."""
    return getattr(result, "times", None) if isinstance(result, FrameRows) else None


def regular_times(n: int, frame_shift_s: float, start_s: float = 0.0) -> np.ndarray:
    """``[n]``: row ``t`` at ``start_s + t * frame_shift_s`` seconds."""
    return float(start_s) + float(frame_shift_s) * np.arange(int(n), dtype=np.float64)


def frame_times(frame_index: Any, fps: float) -> np.ndarray | None:
    """Times of video frames ``frame_index`` (``[T]``) of a stream at ``fps``; None when the rate
    is unknown (``fps <= 0``)."""
    if not fps or fps <= 0:
        return None
    return np.asarray(frame_index, dtype=np.float64).reshape(-1) / float(fps)


def span_times(first_frame: Any, last_frame: Any, fps: float) -> np.ndarray | None:
    """Times of rows that each describe the source frames ``first_frame[t]..last_frame[t]``
    (inclusive): their centres; None when ``fps`` is unknown."""
    if not fps or fps <= 0:
        return None
    first = np.asarray(first_frame, dtype=np.float64).reshape(-1)
    last = np.asarray(last_frame, dtype=np.float64).reshape(-1)
    return (first + last) / 2.0 / float(fps)
