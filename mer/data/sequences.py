"""Frame-level features as padded sequences: padding, masks, alignment in time, windowing.

A frame-level cache entry holds one ``[T_i, D]`` array per sample (tokens of a transcript, face
frames, audio frames, time regions of a video model), with ``T_i`` differing per sample and per
modality. Fusion reads a modality as a padded ``X [N, T, D]`` plus ``lengths [N]``; step ``t`` of
sample ``i`` is real when ``t < lengths[i]``; an absent sample has length 0 and is masked as a
whole, like an absent utterance-level row.

Alignment to a common time base follows what ABAW6 systems do with frame features of pretrained
encoders (audio to video): a shorter sequence is stretched by **linear interpolation** to the
target length, a longer one is **decimated to the nearest frames** (rounded, evenly spaced
indices); ``method='auto'`` picks between the two by length, ``linear`` and ``nearest`` force one.
Without alignment each modality keeps its own length (the cross-modal transformer takes such
unaligned inputs; the other sequence models encode each modality on its own).

Windowing cuts long sequences into overlapping windows (ABAW6: 1000 frames, hop 200) that cover
every step; :func:`merge_windows` averages per-step outputs where windows overlap, so slicing then
merging gives the sequence back.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

ALIGN_METHODS = ("auto", "linear", "nearest")


# --- padding and masks --------------------------------------------------------------------
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


def masked_mean(X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Mean over the real steps of each row: ``[N, T, D] -> [N, D]`` (zero for length 0)."""
    mask = step_mask(lengths, X.shape[1])[..., None].astype(np.float32)
    total = (X * mask).sum(1, dtype=np.float64)
    return (total / np.maximum(lengths, 1)[:, None]).astype(np.float32)


# --- alignment ----------------------------------------------------------------------------
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
        return seq[np.rint(pos).astype(np.int64)]
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, T - 1)
    w = (pos - lo).astype(np.float32)[:, None]
    return seq[lo] * (1.0 - w) + seq[hi] * w


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
    T = len(seq)
    lo = min(int(np.floor(a * T + 1e-9)), T - 1)
    hi = max(int(np.ceil(b * T - 1e-9)), lo + 1)
    return seq[lo:hi]


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
    other frame-level streams are cut at the same fractions of their span (:func:`cut_span`), so
    unaligned streams stay in step; utterance-level rows repeat. Returns the windowed
    :class:`~mer.data.bundle.FeatureBundle` (rows ``<name>#w<k>``) and its :class:`WindowPlan`."""
    from .bundle import FeatureBundle, ModalityFeatures

    seq = {m: f for m, f in bundle.modalities.items() if f.is_sequence}
    n = len(bundle)
    if reference is not None and reference not in seq:
        raise KeyError(f"window reference {reference!r} is not a frame-level stream ({sorted(seq)})")
    owner, starts, lengths, names = [], [], [], []
    ref_len = np.zeros(n, np.int64)
    spans: list[list[tuple[float, float]]] = []
    for i in range(n):
        lens = {m: int(f.lengths[i]) for m, f in seq.items()}
        ref = reference or (max(lens, key=lambda m: lens[m]) if lens else None)
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
        pieces = []
        for i, sp in enumerate(spans):
            L = int(f.lengths[i])
            for a, b in sp:
                pieces.append(cut_span(f.X[i, :L], a, b) if L > 0 else None)
        X, lens = pad_sequences(pieces, dim=f.dim)
        mods[m] = ModalityFeatures(X, lens > 0, f.source, lens)
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
    :class:`~mer.data.bundle.ModalityFeatures` (absent names: length 0, masked)."""
    from .bundle import ModalityFeatures

    rows = entry.load(names)
    X, lengths = pad_sequences([rows.get(n) for n in names], dim=entry.dim(),
                               max_steps=int(max_steps) if max_steps else None)
    return ModalityFeatures(X, lengths > 0, entry.path.name, lengths)


class SequenceSettings:
    """What the config's ``sequence`` node asks of frame-level streams: ``max_steps`` (longer
    sequences decimated to their nearest frames on loading), ``align`` (``null``: each modality
    on its own time base; a stream name: that stream's length per sample; a number: that many
    steps) and ``method`` (``auto``/``linear``/``nearest``)."""

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
