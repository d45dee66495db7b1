"""Cross-validation folds, made in one place: ``make_folds(y, groups, protocol, n_folds, seed)``.

Protocols (``train.protocol``):

- ``stratified``: seeded stratified K folds (the MER2023 protocol). Samples of one speaker or
  session may fall in different folds; when the data carries groups a warning says so.
- ``stratified_group``: seeded K folds that keep every group (speaker, session, dialogue) whole
  and keep the class mix of each fold close to the whole's (sklearn ``StratifiedGroupKFold``).
- ``logo``: leave one group out: one fold per group, held out in sorted group order (IEMOCAP's
  five sessions: ``Ses01`` ... ``Ses05``); ``n_folds`` is ignored, the seed changes nothing.

Groups are never used unless the protocol asks for them: a run's protocol is what its config
says. ``y`` are the stratification labels: the class index for classification, a binning of the
valence (:func:`valence_strata`) for regression; rows with ``y < 0`` take part in no fold.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

log = logging.getLogger("mer")

PROTOCOLS: tuple[str, ...] = ("stratified", "stratified_group", "logo")
GROUP_PROTOCOLS: frozenset[str] = frozenset({"stratified_group", "logo"})

Folds = list[tuple[np.ndarray, np.ndarray]]


def check_protocol(protocol: str, groups: Sequence | None, n_folds: int, where: str = "the training split") -> None:
    """Raise ``ValueError`` (one line: what and what to set) when ``protocol`` cannot run on ``groups``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"train.protocol={protocol!r} is not one of {list(PROTOCOLS)}")
    if protocol not in GROUP_PROTOCOLS:
        return
    if groups is None:
        raise ValueError(f"train.protocol={protocol} needs a group (speaker/session) per sample, and {where} "
                         f"has none: add a group column to the manifest, or use train.protocol=stratified")
    missing = [i for i, g in enumerate(groups) if g is None or (isinstance(g, str) and not g.strip())]
    if missing:
        raise ValueError(f"train.protocol={protocol}: {len(missing)} samples of {where} have no group "
                         f"(e.g. row {missing[0] + 1}); give every sample one, or use train.protocol=stratified")
    n_groups = len(set(groups))
    if n_groups < 2:
        raise ValueError(f"train.protocol={protocol} needs at least 2 groups; {where} has {n_groups} "
                         f"({sorted(set(groups))}); use train.protocol=stratified")
    if protocol == "stratified_group" and n_groups < n_folds:
        raise ValueError(f"train.protocol=stratified_group with {n_folds} folds needs at least {n_folds} groups; "
                         f"{where} has {n_groups}: set train.n_folds={n_groups} or train.protocol=logo")


def make_folds(y: np.ndarray, groups: Sequence | np.ndarray | None, protocol: str, n_folds: int,
               seed: int) -> Folds:
    """``[(train_rows, held_out_rows)]`` over the rows with ``y >= 0``, by ``protocol``."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # deferred: loads sklearn only when used

    y = np.asarray(y)
    idx = np.flatnonzero(y >= 0)
    if len(idx) == 0:
        raise ValueError("no labelled rows to make folds of")
    check_protocol(protocol, None if groups is None else [groups[i] for i in idx], n_folds)
    if protocol == "logo":
        g = np.asarray([str(groups[i]) for i in idx])
        order = sorted(set(g))
        folds = [(idx[g != name], idx[g == name]) for name in order]
        return folds
    counts = np.bincount(y[idx])
    smallest = counts[counts > 0].min()
    if smallest < n_folds:
        raise ValueError(f"the rarest class has {smallest} labelled samples, fewer than {n_folds} folds; "
                         "use fewer folds (train.n_folds=...)")
    if protocol == "stratified_group":
        g = np.asarray([str(groups[i]) for i in idx])
        sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        return [(idx[tr], idx[va]) for tr, va in sgkf.split(idx, y[idx], g)]
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(idx[tr], idx[va]) for tr, va in skf.split(idx, y[idx])]


def split_strata(y: np.ndarray, v: np.ndarray, n_folds: int) -> np.ndarray:
    """What folds of a training split stratify on: the class, or for sentiment data (no class
    known) the valence's sign (:func:`valence_strata`)."""
    if not (y >= 0).any() and np.isfinite(v).any():
        return valence_strata(v, n_folds)
    return y


def valence_strata(v: np.ndarray, n_folds: int) -> np.ndarray:
    """Stratification labels of a regression target: the valence's sign (0 negative, 1 zero,
    2 positive), the split the binary sentiment scores make; ``-1`` where the valence is unknown.
    A class too small for ``n_folds`` folds joins its neighbour (zero joins positive, as in Has0
    Acc2), so small or skewed data still folds."""
    v = np.asarray(v, dtype=np.float64)
    out = np.full(len(v), -1, np.int64)
    known = np.isfinite(v)
    out[known & (v < 0)] = 0
    out[known & (v == 0)] = 1
    out[known & (v > 0)] = 2
    if 0 < (out == 1).sum() < n_folds:
        out[out == 1] = 2
    for small, into in ((0, 2), (2, 0)):
        if 0 < (out == small).sum() < n_folds:
            out[out == small] = into
    return out


def fold_assignment(n_rows: int, folds: Folds) -> np.ndarray:
    """``[N]`` the fold each row is held out in (-1: in no fold)."""
    out = np.full(n_rows, -1, np.int64)
    for k, (_, va) in enumerate(folds):
        out[va] = k
    return out
