"""Frame-level features as padded sequences: padding, masks, alignment in time, windowing.

A frame-level cache entry holds one ``[T_i, D]`` array per sample (tokens of a transcript, face
frames, audio frames, time regions of a video model), with ``T_i`` differing per sample and per
modality. Fusion reads a modality as a padded ``X [N, T, D]`` plus ``lengths [N]``; step ``t`` of
sample ``i`` is real when ``t < lengths[i]``; an absent sample has length 0 and is masked as a
whole, like an absent utterance-level row.

Padding, masks and alignment primitives live in :mod:`mer.data.frames`. Without alignment each modality keeps its own length (the cross-modal transformer takes such
unaligned inputs; the other sequence models encode each modality on its own).

Each step may carry its time (``ModalityFeatures.times``, seconds from the start of the media,
as the extractor reported it and the cache recorded it: :mod:`mer.core.timebase`). Alignment
and windowing use the times where both streams have them and the share of length otherwise.

Windowing cuts long sequences into overlapping windows (ABAW6: 1000 frames, hop 200) that cover
every step; :func:`merge_windows` averages per-step outputs where windows overlap, so slicing then
merging gives the sequence back.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .bundle import FeatureBundle, ModalityFeatures
from .frames import ALIGN_METHODS, pad_sequences, pad_times, resample  # noqa: F401 - ALIGN_METHODS: the config's choices


# --- padding and masks --------------------------------------------------------------------


# --- alignment ----------------------------------------------------------------------------


# --- windowing ----------------------------------------------------------------------------
def window_starts(length: int, size: int, hop: int) -> np.ndarray:
    """Starts of windows of ``size`` steps every ``hop`` steps covering ``[0, length)``; the last
    window ends at ``length`` (shifted back, so it overlaps more); one window when ``length <= size``."""
    if size < 1 or hop < 1 or hop > size:
        raise ValueError(f"windows need 1 <= hop <= size, got size={size}, hop={hop}")
    if length <= size:
        return np.zeros(1, np.int64)
    starts = list(range(0, length - size + 1, hop))
    if starts[-1] + size < length:
        starts.append(length - size)
    return np.asarray(starts, np.int64)


def split_windows(seq: np.ndarray, size: int, hop: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``[T, D]`` -> the windows (``[min(size, T), D]`` each) and their starts."""
    starts = window_starts(len(seq), size, hop)
    return [seq[s:s + size] for s in starts], starts


def merge_windows(outputs: Sequence[np.ndarray], starts: Sequence[int], length: int) -> np.ndarray:
    """Per-step window outputs (``[w_k, ...]`` each) -> ``[length, ...]``: the mean over the
    windows that cover each step."""
    first = np.asarray(outputs[0])
    total = np.zeros((length, *first.shape[1:]), np.float64)
    count = np.zeros(length, np.float64)
    for out, s in zip(outputs, starts):
        out = np.asarray(out)
        total[s:s + len(out)] += out
        count[s:s + len(out)] += 1
    if (count == 0).any():
        raise ValueError("the windows do not cover every step")
    return (total / count.reshape(-1, *([1] * (total.ndim - 1)))).astype(first.dtype)


def window_spans(length: int, size: int, hop: int) -> list[tuple[float, float]]:
    """Windows as fractions ``[a, b)`` of the time span, so modalities with different frame rates
    (unaligned) can be cut at the same moments."""
    if length <= 0:
        return [(0.0, 1.0)]
    return [(s / length, min(s + size, length) / length) for s in window_starts(length, size, hop)]


def cut_span(seq: np.ndarray, a: float, b: float) -> np.ndarray:
    """The part of ``[T, D]`` between fractions ``a`` and ``b`` of its span (at least one step)."""
    lo, hi = span_rows(len(seq), a, b)
    return seq[lo:hi]


def span_rows(T: int, a: float, b: float) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of :func:`cut_span`."""
    lo = min(int(np.floor(a * T + 1e-9)), T - 1)
    hi = max(int(np.ceil(b * T - 1e-9)), lo + 1)
    return lo, hi


def time_bounds(ref_times: np.ndarray, start: int, stop: int) -> tuple[float, float]:
    """The time span ``[lo, hi)`` of reference steps ``[start, stop)``: half way to the steps
    before and after (open-ended at the ends), so consecutive windows share their boundaries."""
    T = len(ref_times)
    lo = -np.inf if start <= 0 else (ref_times[start - 1] + ref_times[start]) / 2.0
    hi = np.inf if stop >= T else (ref_times[stop - 1] + ref_times[stop]) / 2.0
    return float(lo), float(hi)


def rows_in_time(times: np.ndarray, lo: float, hi: float) -> tuple[int, int]:
    """Rows ``[a, b)`` of a stream whose (non-decreasing) ``times`` lie in ``[lo, hi)``; when none
    does, the one row nearest the middle of the span (a window always has a step of each stream)."""
    a, b = int(np.searchsorted(times, lo, "left")), int(np.searchsorted(times, hi, "left"))
    if b > a:
        return a, b
    finite = [v for v in (lo, hi) if np.isfinite(v)]
    mid = sum(finite) / len(finite) if finite else float(times[0])
    k = int(np.argmin(np.abs(times - mid)))
    return k, k + 1


class WindowPlan:
    """Where each window of a windowed bundle comes from: ``owner[k]`` (the sample's row),
    ``start[k]`` and ``length[k]`` (its steps on the reference stream), and ``ref_lengths[i]``."""

    def __init__(self, owner: np.ndarray, start: np.ndarray, length: np.ndarray, ref_lengths: np.ndarray) -> None:
        self.owner, self.start, self.length, self.ref_lengths = owner, start, length, ref_lengths

    @property
    def n_samples(self) -> int:
        return len(self.ref_lengths)

    def mean_rows(self, values: np.ndarray) -> np.ndarray:
        """Per-window values ``[K, ...]`` -> per-sample mean over its windows ``[N, ...]``."""
        total = np.zeros((self.n_samples, *values.shape[1:]), np.float64)
        np.add.at(total, self.owner, values)
        count = np.bincount(self.owner, minlength=self.n_samples).reshape(-1, *([1] * (values.ndim - 1)))
        return (total / np.maximum(count, 1)).astype(values.dtype)

    def merge_steps(self, values: np.ndarray) -> np.ndarray:
        """Per-window per-step values ``[K, w, ...]`` -> ``[N, T, ...]`` on the reference stream,
        averaged where windows overlap (zero past a sample's length)."""
        T = max(int(self.ref_lengths.max(initial=0)), 1)
        out = np.zeros((self.n_samples, T, *values.shape[2:]), values.dtype)
        for i in range(self.n_samples):
            ks = np.flatnonzero(self.owner == i)
            n = int(self.ref_lengths[i])
            if n == 0 or len(ks) == 0:
                continue
            out[i, :n] = merge_windows([values[k, :self.length[k]] for k in ks], self.start[ks], n)
        return out


def window_bundle(bundle, size: int, hop: int, reference: str | None = None):
    """Cut every frame-level stream of ``bundle`` into windows of ``size`` steps every ``hop``
    (:func:`window_starts`) on the ``reference`` stream (default: each sample's longest stream);
    other frame-level streams are cut at the same time span where both have step times
    (:func:`time_bounds`, :func:`rows_in_time`), else at the same fractions of their span
    (:func:`cut_span`), so unaligned streams stay in step; utterance-level rows repeat. Returns the
    windowed :class:`~mer.data.bundle.FeatureBundle` (rows ``<name>#w<k>``) and its :class:`WindowPlan`."""
    seq = {m: f for m, f in bundle.modalities.items() if f.is_sequence}
    n = len(bundle)
    if reference is not None and reference not in seq:
        raise KeyError(f"window reference {reference!r} is not a frame-level stream ({sorted(seq)})")
    owner, starts, lengths, names = [], [], [], []
    ref_len = np.zeros(n, np.int64)
    spans: list[list[tuple[float, float]]] = []
    refs: list[str | None] = []
    for i in range(n):
        lens = {m: int(f.lengths[i]) for m, f in seq.items()}
        ref = reference or (max(lens, key=lambda m: lens[m]) if lens else None)
        refs.append(ref)
        T = lens.get(ref, 0) if ref else 0
        ref_len[i] = T
        sp, st = window_spans(T, size, hop), window_starts(T, size, hop)   # one window when T <= size
        spans.append(sp)
        for k, (a, b) in enumerate(sp):
            owner.append(i)
            starts.append(int(st[k]))
            lengths.append(min(size, T) if T else 0)
            names.append(f"{bundle.names[i]}#w{k}")
    owner_arr = np.asarray(owner, np.int64)
    mods = {}
    for m, f in bundle.modalities.items():
        if not f.is_sequence:
            mods[m] = f.rows(owner_arr)
            continue
        pieces, piece_times = [], []
        for i, sp in enumerate(spans):
            L = int(f.lengths[i])
            own = f.step_times(i)
            ref = refs[i]
            ref_times = seq[ref].step_times(i) if ref is not None and ref != m else None
            T = int(ref_len[i])
            for k, (a, b) in enumerate(sp):
                if L == 0:
                    pieces.append(None)
                    piece_times.append(None)
                    continue
                if own is not None and ref_times is not None:
                    start = int(round(a * T))
                    lo, hi = rows_in_time(own, *time_bounds(ref_times, start, min(start + size, T)))
                else:
                    lo, hi = span_rows(L, a, b)
                pieces.append(f.X[i, lo:hi])
                piece_times.append(None if own is None else own[lo:hi])
        X, lens = pad_sequences(pieces, dim=f.dim)
        mods[m] = ModalityFeatures(X, lens > 0, f.source, lens, pad_times(piece_times, lens, X.shape[1]))
    return FeatureBundle(names, mods), WindowPlan(owner_arr, np.asarray(starts, np.int64),
                                                  np.asarray(lengths, np.int64), ref_len)


def window_frame_targets(frames: np.ndarray, plan: WindowPlan) -> np.ndarray:
    """Per-frame targets ``[N, T]`` (on the reference stream) cut like the windows: ``[K, w]``, -1 padded."""
    w = max(int(plan.length.max(initial=0)), 1)
    out = np.full((len(plan.owner), w), -1, np.int64)
    for k, (i, s, L) in enumerate(zip(plan.owner, plan.start, plan.length)):
        piece = frames[i, s:s + L]
        out[k, :len(piece)] = piece
    return out


def frame_reference(bundle) -> str:
    """The frame-level stream whose steps per-frame labels and outputs follow: ``visual`` (the
    frames ABAW labels) when it is frame-level, else the first frame-level stream by name."""
    seq = sorted(m for m, f in bundle.modalities.items() if f.is_sequence)
    if not seq:
        raise SystemExit("per-frame labels need a frame-level feature stream to be read on: set a frame-level "
                         "extractor, e.g. features.visual.options.level=frame")
    return "visual" if "visual" in seq else seq[0]


# --- from the cache and the config ---------------------------------------------------------
def load_frame_features(entry, names: Sequence[str], max_steps: int | None = None):
    """A frame-level cache entry's rows for ``names`` as padded
    :class:`~mer.data.bundle.ModalityFeatures` (absent names: length 0, masked), with their step
    times where the entry recorded them (``times`` None when no row has any)."""
    rows, times = entry.load_rows(names)
    X, lengths = pad_sequences([rows.get(n) for n in names], dim=entry.dim(),
                               max_steps=int(max_steps) if max_steps else None)
    return ModalityFeatures(X, lengths > 0, entry.path.name, lengths,
                            pad_times([times.get(n) for n in names], lengths, X.shape[1]))


class SequenceSettings:
    """What the config's ``sequence`` node asks of frame-level streams: ``max_steps`` (longer
    sequences decimated to their nearest frames on loading), ``align`` (``null``: each modality
    on its own time base; a stream name: that stream's steps per sample, each stream taken at
    their times where both have step times, else by share of length; a number: that many steps)
    and ``method`` (``auto``/``linear``/``nearest``)."""

    def __init__(self, max_steps: int | None = None, align: str | int | None = None, method: str = "auto") -> None:
        if method not in ALIGN_METHODS:
            raise ValueError(f"sequence.method must be one of {ALIGN_METHODS}, got {method!r}")
        self.max_steps, self.align, self.method = max_steps, align, method

    def apply(self, bundle):
        if self.align in (None, "", "none") or not bundle.has_sequences:
            return bundle
        to = self.align
        if isinstance(to, str) and to.isdigit():
            to = int(to)
        if isinstance(to, str) and (to not in bundle.modalities or not bundle.modalities[to].is_sequence):
            raise SystemExit(f"sequence.align={to}: not a frame-level stream; frame-level streams are "
                             f"{sorted(m for m, f in bundle.modalities.items() if f.is_sequence)}")
        return bundle.aligned(to, self.method)


def sequence_settings(node) -> SequenceSettings:
    node = dict(node or {})
    return SequenceSettings(node.get("max_steps"), node.get("align"), node.get("method", "auto"))
