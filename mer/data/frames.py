"""Padded frame sequences, the primitives: padding, step masks, masked means, resampling and
alignment of lengths. :mod:`mer.data.sequences` builds windowing and the config's sequence
settings on them; :class:`mer.data.bundle.ModalityFeatures` pools and aligns with them.

Alignment to a common time base follows what ABAW6 systems do with frame features of pretrained
encoders (audio to video): a shorter sequence is stretched by **linear interpolation** to the
target length, a longer one is **decimated to the nearest frames** (rounded, evenly spaced
indices); ``method='auto'`` picks between the two by length, ``linear`` and ``nearest`` force one.

**By time** where the rows' times are known (:mod:`mer.core.timebase`: seconds, row centres):
:func:`resample_at` takes a stream at the reference stream's row times (the row nearest in time,
or linear interpolation in time between the rows around it), so a face track with skipped frames,
a model with one row per 16 frames or 50 Hz audio against 25 fps video line up where they happen,
not at the same share of their lengths. :func:`align_to_times` does that per sample and falls back
to the share of length (:func:`resample`) for a sample whose times are unknown in either stream.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


ALIGN_METHODS = ("auto", "linear", "nearest")


def pad_sequences(seqs: Sequence[np.ndarray | None], dim: int | None = None,
                  max_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``[T_i, D]`` arrays (``None`` = absent) -> ``(X [N, T, D] float32, lengths [N] int64)``.

    ``T`` is the longest length (at most ``max_steps``; a longer sequence is decimated to its
    nearest ``max_steps`` frames so the whole span stays covered). Padded steps are zero and never
    read by a model that honours the mask."""
    if dim is None:
        dims = {int(s.shape[-1]) for s in seqs if s is not None}
        if len(dims) > 1:
            raise ValueError(f"sequences of different widths {sorted(dims)} cannot be padded together")
        dim = dims.pop() if dims else 0
    fitted = []
    for s in seqs:
        if s is None or len(s) == 0:
            fitted.append(None)
            continue
        s = np.asarray(s, dtype=np.float32)
        if s.ndim == 1:
            s = s[None]
        if max_steps is not None and len(s) > max_steps:
            s = resample(s, max_steps, "nearest")
        fitted.append(s)
    lengths = np.array([0 if s is None else len(s) for s in fitted], dtype=np.int64)
    T = int(lengths.max()) if len(lengths) else 0
    X = np.zeros((len(fitted), max(T, 1), dim), np.float32)
    for i, s in enumerate(fitted):
        if s is not None:
            X[i, :len(s)] = s
    return X, lengths


def step_mask(lengths: np.ndarray, T: int) -> np.ndarray:
    """``[N, T]`` bool: True where a step is real."""
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


def masked_mean(X: np.ndarray, lengths: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Mean over the real steps of each row: ``[N, T, D] -> [N, D]`` (zero for length 0), summed in
    float64 and returned as ``dtype``."""
    mask = step_mask(lengths, X.shape[1])[..., None].astype(np.float32)
    total = (X * mask).sum(1, dtype=np.float64)
    return (total / np.maximum(lengths, 1)[:, None]).astype(dtype)


def resample(seq: np.ndarray, target: int, method: str = "auto") -> np.ndarray:
    """``[T, D] -> [target, D]`` on the same time span.

    ``linear``: linear interpolation at ``target`` evenly spaced positions over ``[0, T-1]``
    (the first and last frames are kept exactly); ``nearest``: the frames at the rounded positions
    of ``linspace(0, T-1, target)`` (decimation when shrinking, repetition when stretching);
    ``auto``: linear when stretching, nearest when shrinking (ABAW6's audio-to-video rule)."""
    if method not in ALIGN_METHODS:
        raise ValueError(f"alignment method must be one of {ALIGN_METHODS}, got {method!r}")
    seq = np.asarray(seq, dtype=np.float32)
    T = len(seq)
    if target < 1:
        raise ValueError(f"cannot resample to {target} steps")
    if T == 0:
        raise ValueError("cannot resample an empty sequence")
    if T == target:
        return seq.copy()
    if method == "auto":
        method = "linear" if T < target else "nearest"
    pos = np.linspace(0.0, T - 1, target)
    if method == "nearest":
        return seq[nearest_positions(T, target)]
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, T - 1)
    w = (pos - lo).astype(np.float32)[:, None]
    return seq[lo] * (1.0 - w) + seq[hi] * w


def nearest_positions(T: int, target: int) -> np.ndarray:
    """``[target]`` int64: the rows ``resample(..., 'nearest')`` (and decimation on loading) keeps."""
    return np.rint(np.linspace(0.0, T - 1, target)).astype(np.int64)


def pad_times(times: Sequence[np.ndarray | None], lengths: np.ndarray, T: int) -> np.ndarray | None:
    """Row times per sample (``[T_i]`` seconds, None: unknown) -> ``[N, T]`` float64, NaN past each
    length and for unknown samples; None when no sample has times. A sample whose rows were
    decimated to ``lengths[i] < T_i`` (:func:`pad_sequences` with ``max_steps``) has its times
    decimated to the same rows."""
    if all(t is None for t in times):
        return None
    out = np.full((len(times), max(int(T), 1)), np.nan)
    for i, t in enumerate(times):
        n = int(lengths[i])
        if t is None or n == 0:
            continue
        t = np.asarray(t, np.float64)
        out[i, :n] = t if len(t) == n else t[nearest_positions(len(t), n)]
    return out


def known_times(times: np.ndarray | None, i: int, n: int) -> np.ndarray | None:
    """Row ``i``'s first ``n`` times when all are known, else None."""
    if times is None or n <= 0:
        return None
    t = times[i, :n]
    return t if np.isfinite(t).all() else None


def resample_at(seq: np.ndarray, times: np.ndarray, at: np.ndarray, method: str = "auto") -> np.ndarray:
    """``[T, D]`` rows at ``times`` ``[T]`` -> ``[len(at), D]`` at the times ``at``.

    ``nearest``: the row nearest in time (the earlier on a tie); ``linear``: interpolation in
    time between the rows on either side (the first or last row outside the stream's span);
    ``auto``: linear when the stream has fewer rows than ``at`` asks (stretching), else nearest."""
    if method not in ALIGN_METHODS:
        raise ValueError(f"alignment method must be one of {ALIGN_METHODS}, got {method!r}")
    seq = np.asarray(seq, dtype=np.float32)
    times = np.asarray(times, np.float64)
    at = np.asarray(at, np.float64)
    T = len(seq)
    if T == 0:
        raise ValueError("cannot resample an empty sequence")
    if len(times) != T:
        raise ValueError(f"{len(times)} row times for {T} rows")
    if T == 1:
        return np.repeat(seq, len(at), axis=0)
    if method == "auto":
        method = "linear" if T < len(at) else "nearest"
    pos = np.searchsorted(times, at)
    if method == "nearest":
        lo = np.clip(pos - 1, 0, T - 1)
        hi = np.clip(pos, 0, T - 1)
        return seq[np.where(np.abs(at - times[lo]) <= np.abs(times[hi] - at), lo, hi)]
    hi = np.clip(pos, 1, T - 1)
    lo = hi - 1
    span = times[hi] - times[lo]
    w = np.clip(np.divide(at - times[lo], span, out=np.zeros_like(at), where=span > 0), 0.0, 1.0)
    w = w.astype(np.float32)[:, None]
    return seq[lo] * (1.0 - w) + seq[hi] * w


def reference_times(times: Mapping[str, np.ndarray | None], lengths: Mapping[str, np.ndarray],
                    to: str | int) -> np.ndarray:
    """``[N, T]`` float64: per sample the times the streams are aligned at (NaN: unknown, then
    the share of length is used). ``to`` a stream: its row times where it is present, else those
    of the longest present stream (as :func:`align_lengths` takes its length); an int: that many
    evenly spaced times over the span the streams with known times cover."""
    names = list(lengths)
    n = len(lengths[names[0]]) if names else 0
    targets = align_lengths(lengths, to) if names else np.zeros(0, np.int64)
    out = np.full((n, max(int(targets.max(initial=0)), 1)), np.nan)
    for i in range(n):
        k = int(targets[i])
        if k == 0:
            continue
        if isinstance(to, (int, np.integer)):
            spans = [t for m in names if (t := known_times(times.get(m), i, int(lengths[m][i]))) is not None]
            if spans:
                out[i, :k] = np.linspace(min(t[0] for t in spans), max(t[-1] for t in spans), k)
            continue
        ref = to if lengths[to][i] > 0 else max(names, key=lambda m: int(lengths[m][i]))
        t = known_times(times.get(ref), i, int(lengths[ref][i]))
        if t is not None and len(t) == k:
            out[i, :k] = t
    return out


def align_to_times(X: np.ndarray, lengths: np.ndarray, times: np.ndarray | None, targets: np.ndarray,
                   at: np.ndarray, method: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`align_padded` by time: each present row of ``X [N, T, D]`` with known ``times``
    ``[N, T]`` is taken at the times ``at[i, :targets[i]]`` (:func:`resample_at`); a row whose own
    or reference times are unknown is resampled by share of length. Returns ``(X, lengths,
    times)``, the times those of the reference where it was used (NaN where unknown)."""
    seqs: list[np.ndarray | None] = []
    out_times: list[np.ndarray | None] = []
    for i in range(len(X)):
        n, k = int(lengths[i]), int(targets[i])
        if n == 0 or k == 0:
            seqs.append(None)
            out_times.append(None)
            continue
        own = known_times(times, i, n)
        ref = known_times(at, i, k)
        seq = X[i, :n]
        if own is not None and ref is not None:
            same = len(own) == len(ref) and np.array_equal(own, ref)
            seqs.append(seq.copy() if same else resample_at(seq, own, ref, method))
            out_times.append(ref)
        else:
            seqs.append(resample(seq, k, method))
            out_times.append(None if own is None else resample(own[:, None], k, method)[:, 0].astype(np.float64))
    Xa, la = pad_sequences(seqs, dim=X.shape[-1])
    return Xa, la, pad_times(out_times, la, Xa.shape[1])


def align_lengths(lengths: Mapping[str, np.ndarray], to: str | int) -> np.ndarray:
    """Per-sample target length: that of modality ``to`` where it is present, else the longest of
    the present modalities (so a sample missing the reference still aligns its others); an int
    is a fixed number of steps for every sample."""
    if isinstance(to, (int, np.integer)):
        n = len(next(iter(lengths.values())))
        return np.full(n, int(to), np.int64)
    if to not in lengths:
        raise KeyError(f"cannot align to {to!r}: frame-level modalities are {sorted(lengths)}")
    longest = np.max(np.stack(list(lengths.values())), axis=0)
    ref = lengths[to]
    return np.where(ref > 0, ref, longest)


def align_padded(X: np.ndarray, lengths: np.ndarray, targets: np.ndarray, method: str = "auto"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Resample each present row of a padded ``[N, T, D]`` to ``targets[i]`` steps; absent rows
    stay absent (length 0)."""
    seqs = [resample(X[i, :lengths[i]], int(targets[i]), method) if lengths[i] > 0 and targets[i] > 0 else None
            for i in range(len(X))]
    return pad_sequences(seqs, dim=X.shape[-1])
