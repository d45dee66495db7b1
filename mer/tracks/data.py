"""What a track trains on, from the manifest and the features: the training split (rows with a
label of the chosen target) and the test splits, the fold protocol and the selection metric,
hidden labels and the unlabelled pool, and the corrupted conditions a track asks for."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import numpy as np
from omegaconf import DictConfig

from feature_extractors.visual.video import video_rate
from mer.core.config import plain
from mer.core.errors import UserError
from mer.data.bundle import FeatureBundle
from mer.data.frames import resample
from mer.data.manifest import Manifest, arousal_array, label_arrays, read_frame_labels
from mer.data.sequences import frame_reference
from mer.training.data import Split, concat_splits
from mer.training.folds import GROUP_PROTOCOLS, check_protocol
from mer.training.no_input import drop_no_input, no_input_mask

from .base import Strategy, TrackData

log = logging.getLogger("mer")

ConditionFeatures = Callable[[str, list], tuple[FeatureBundle, dict[str, Any], list[dict]]]
"""``features_of(condition, names) -> (bundle, info, failures)``: the features of ``names`` under a
corrupted condition (:meth:`mer.runs.RunContext.condition_features`)."""


def resolve_metric(cfg: DictConfig, manifest: Manifest) -> str:
    metric = cfg.track.get("metric", "auto")
    if metric == "auto":
        if manifest.label_spec.has_frame_labels:
            return "frame_f1"
        if manifest.label_spec.valence_only:
            return VALENCE_ONLY_METRIC
        return "combined" if manifest.label_spec.has_valence else "wf1"
    if metric == "combined" and not manifest.label_spec.has_valence:
        raise SystemExit(f"track.metric=combined needs valence labels; {manifest.dataset} has none")
    return metric


VALENCE_ONLY_METRIC = "non0_f1"
"""Epoch selection on sentiment data: weighted F1 of the non-zero sentiment's sign, the score
MERBench reports and selects on for CMU-MOSI/MOSEI and SIMS (it needs no sign flip, unlike MAE)."""


def make_splits(manifest: Manifest, bundle: FeatureBundle,
                protocol: str = "stratified") -> tuple[Split, dict[str, Split]]:
    """The training rows (those with a label of the chosen target) and every other split, with
    the samples' groups (when every training sample has one) and the fold ``protocol``."""
    spec = manifest.label_spec
    vrange = tuple(spec.valence_range) if spec.valence_only else None
    train_samples = [s for s in manifest.split(manifest.train_split) if spec.has_target(s)]
    y, v = label_arrays(train_samples, spec)
    X = bundle.take([s.name for s in train_samples])
    train = Split(X, y, v, targets=extra_targets(train_samples, spec, X), groups=sample_groups(train_samples),
                  protocol=protocol, valence_range=vrange)
    tests = {}
    for sp in manifest.test_splits:
        samples = manifest.split(sp)
        yt, vt = label_arrays(samples, spec)
        Xt = bundle.take([s.name for s in samples])
        tests[sp] = Split(Xt, yt, vt, targets=extra_targets(samples, spec, Xt), groups=sample_groups(samples),
                          protocol=protocol, valence_range=vrange)
    return train, tests


def sample_groups(samples) -> np.ndarray | None:
    """``[N]`` the samples' groups (str), or None unless every one has a group."""
    if not samples or any(s.group is None for s in samples):
        return None
    return np.asarray([s.group for s in samples], dtype=object)


def resolve_protocol(cfg: DictConfig, manifest: Manifest, warn: bool = True) -> str:
    """``train.protocol``; null: the dataset's own (IEMOCAP: ``logo``), else ``stratified``.
    A protocol the training split cannot follow is a one-line error, before any extraction."""
    protocol = cfg.train.get("protocol") or manifest.protocol or "stratified"
    train = [s for s in manifest.split(manifest.train_split) if manifest.label_spec.has_target(s)]
    groups = [s.group for s in train]
    n_folds = int(cfg.train.n_folds)
    try:
        check_protocol(str(protocol), groups if any(g is not None for g in groups) else None, n_folds,
                       f"split {manifest.train_split!r} of {manifest.dataset}")
    except ValueError as err:
        raise UserError(str(err)) from None
    if warn and protocol not in GROUP_PROTOCOLS and any(g is not None for g in groups):
        log.warning("the samples carry groups (%d), but train.protocol=%s puts samples of one group in different "
                    "folds; train.protocol=stratified_group or logo keeps them whole",
                    len({g for g in groups if g is not None}), protocol)
    return str(protocol)


def extra_targets(samples, spec, X: FeatureBundle) -> dict[str, np.ndarray]:
    """``arousal [N]`` when the dataset has arousal; ``frames [N, T]`` when it has per-frame labels:
    each sample's labels (one per video frame) taken at the steps of the reference stream
    (:func:`mer.data.sequences.frame_reference`), -1 past its length or where unannotated.

    A step whose time is known (``ModalityFeatures.times``) takes the label of the video frame at
    that time, ``round(time * fps)``, -1 past the label file's end; ``fps`` is the rate of the
    sample's video (its container header), else ``spec.frame_label_fps`` (the generic recipe's
    ``data.options.frame_label_fps``). Without times or a rate, labels are mapped by share of
    length (the nearest of the resampled positions)."""
    out: dict[str, np.ndarray] = {}
    if spec.has_arousal:
        out["arousal"] = arousal_array(samples)
    if spec.has_frame_labels:
        ref = X.modalities[frame_reference(X)]
        frames = np.full((len(samples), ref.X.shape[1]), -1, np.int64)
        by_share = 0
        for i, s in enumerate(samples):
            n = int(ref.lengths[i])
            if s.frame_labels is None or n == 0:
                continue
            labels = read_frame_labels(s.frame_labels, spec.num_classes)
            times = ref.step_times(i)
            fps = (video_rate(s.video_path)[1] or float(getattr(spec, "frame_label_fps", 0.0) or 0.0)
                   if times is not None else 0.0)
            if times is not None and fps > 0:
                index = np.rint(times * fps).astype(np.int64)
                inside = (index >= 0) & (index < len(labels))
                frames[i, :n] = np.where(inside, labels[np.clip(index, 0, len(labels) - 1)], -1)
                continue
            by_share += 1
            frames[i, :n] = resample(labels[:, None].astype(np.float32), n, "nearest")[:, 0].astype(np.int64)
        if by_share:
            log.info("per-frame labels of %d samples mapped by share of length (no step times on %s, or no "
                     "frame rate: the video's, or data.options.frame_label_fps)", by_share, frame_reference(X))
        out["frames"] = frames
    return out



HELDOUT_SPLIT = "heldout"
"""Training rows whose labels ``track.hide_labels`` hides: predicted and scored like a test split."""


def make_track_data(cfg: DictConfig, manifest: Manifest, bundle: FeatureBundle, n_folds: int) -> TrackData:
    """Train/test splits, plus, where the track asks, hidden training labels and the unlabelled pool.

    ``track.hide_labels.fraction``: a stratified, seeded share of the training labels is hidden;
    those rows leave the training split, join the pool and are scored as the ``heldout`` split.
    ``track.pool.splits``: ``all`` (every split but the training one) or a list: their rows join
    the pool as unlabelled, whatever labels they have."""
    train, tests = make_splits(manifest, bundle, resolve_protocol(cfg, manifest, warn=False))
    train = drop_no_input(train)      # no feature in any modality: never trained on, never scored
    hide = cfg.track.get("hide_labels") or {}
    fraction = float(hide.get("fraction") or 0.0)
    pool_parts: list[tuple[Split, np.ndarray]] = []
    if fraction > 0:
        hidden = hide_labels(train.y, fraction, int(hide.get("seed", 0)), keep_per_class=n_folds)
        tests = {HELDOUT_SPLIT: train.rows(np.flatnonzero(hidden)), **tests}
        pool_parts.append((tests[HELDOUT_SPLIT], tests[HELDOUT_SPLIT].y))
        train = train.rows(np.flatnonzero(~hidden))
        log.info("hide_labels: %d of %d training labels hidden (scored as split %r); %d remain",
                 int(hidden.sum()), len(hidden), HELDOUT_SPLIT, len(train))
    pool_cfg = cfg.track.get("pool") or {}
    pool_splits = pool_cfg.get("splits")
    if pool_splits:
        names = manifest.test_splits if pool_splits == "all" else list(pool_splits)
        unknown = [sp for sp in names if sp not in manifest.splits]
        if unknown:
            raise SystemExit(f"track.pool.splits names {unknown}, which {manifest.dataset} does not have "
                             f"(splits: {manifest.splits})")
        for sp in names:
            if sp == manifest.train_split:
                unlabelled = [s.name for s in manifest.split(sp) if not s.is_labelled]
                if unlabelled:
                    yt, vt = label_arrays([manifest[n] for n in unlabelled], manifest.label_spec)
                    pool_parts.append((Split(bundle.take(unlabelled), yt, vt), yt))
            else:
                pool_parts.append((tests[sp], tests[sp].y))
    pool = truth = None
    if pool_parts:
        rows = concat_splits([Split(p.X, np.full(len(p), -1), np.full(len(p), np.nan, np.float32))
                              for p, _ in pool_parts])
        pool, truth = rows, np.concatenate([t for _, t in pool_parts])
        keep = np.flatnonzero(~no_input_mask(pool.X))      # nothing to pseudo-label from
        if len(keep) < len(pool):
            pool, truth = pool.rows(keep), truth[keep]
    return TrackData(train, tests, pool=pool, pool_truth=truth)


def add_corrupted_conditions(cfg: DictConfig, manifest: Manifest, data: TrackData, strategy: Strategy,
                             features_of: ConditionFeatures) -> tuple[dict[str, Any], list[dict], dict[str, Any]]:
    """Views of the training split (what the strategy trains on; out-of-fold curve points) and
    probes of a labelled test split (``<split>@<condition>``: curve points), per the track config,
    their features from ``features_of``. Returns (feature info, failures, the curve's plan)."""
    info: dict[str, Any] = {}
    failures: list[dict] = []
    rob = cfg.track.get("robustness")
    curve_split = str(rob.get("split")) if rob and rob.get("split") else None
    conds = curve_conditions(plain(rob)) if curve_split else []
    plan: dict[str, Any] = {}
    if curve_split and curve_split != manifest.train_split:
        if curve_split not in data.tests:
            log.warning("robustness curve skipped: %s has no split %s (splits: %s); set track.robustness.split",
                        manifest.dataset, curve_split, manifest.splits)
            curve_split = None
        elif not (data.tests[curve_split].y >= 0).any():
            log.warning("robustness curve skipped: %s has no labels; set track.robustness.split=%s for an "
                        "out-of-fold curve on the training clips", curve_split, manifest.train_split)
            curve_split = None
    has_media = bool(manifest.modalities_present() & {"audio", "visual"})
    if curve_split and not has_media:
        log.warning("robustness curve skipped: %s has no audio or video to corrupt", manifest.dataset)
        curve_split, conds = None, []
    view_conds = list(dict.fromkeys(strategy.required_views() +
                                    (conds if curve_split == manifest.train_split else [])))
    if view_conds and not has_media:
        raise SystemExit(f"the track trains on corrupted copies {view_conds} of the training clips, but "
                         f"{manifest.dataset} has no audio or video to corrupt; add track.strategy_options."
                         f"train_on=[] (modality dropout and feature noise still apply)")
    for c in view_conds:
        b, i, f = features_of(c, data.train.names)
        data.views[c] = data.train.with_features(b)
        info.update(i)
        failures += f
    if curve_split and curve_split != manifest.train_split:
        split = data.tests[curve_split]
        keep = np.flatnonzero(split.y >= 0)
        split = split.rows(keep)
        for c in conds:
            b, i, f = features_of(c, split.names)
            data.probes[f"{curve_split}@{c}"] = split.with_features(b)
            info.update({f"{curve_split}/{k}": v for k, v in i.items()})
            failures += f
    if curve_split:
        plan = {"split": curve_split, "conditions": conds}
    return info, failures, plan


def hide_labels(y: np.ndarray, fraction: float, seed: int, keep_per_class: int) -> np.ndarray:
    """``[N]`` bool: a stratified, seeded ``fraction`` of the labelled rows whose labels are hidden;
    every class keeps at least ``keep_per_class`` labels (cross-validation needs one per fold)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"track.hide_labels.fraction must be in [0, 1), got {fraction}")
    hidden = np.zeros(len(y), bool)
    rng = np.random.default_rng([seed, 4201])
    for j in np.unique(y[y >= 0]):
        idx = np.flatnonzero(y == j)
        n_hide = min(int(round(fraction * len(idx))), max(0, len(idx) - keep_per_class))
        hidden[rng.permutation(idx)[:n_hide]] = True
    return hidden


def curve_conditions(node: Mapping[str, Any] | None) -> list[str]:
    """The conditions of a robustness curve from ``track.robustness``: ``snr<k>`` per SNR,
    ``blur<f>`` per blur factor above 1, and ``mixed`` when asked."""
    node = dict(node or {})
    out = [f"snr{int(k)}" for k in node.get("snr_db") or []]
    out += [f"blur{int(f)}" for f in node.get("blur_factors") or [] if int(f) > 1]
    if node.get("mixed", True):
        out.append("mixed")
    return out


def check_labels(manifest: Manifest) -> None:
    """Before any extraction (training runs): the training split has a label of the chosen
    target, and every valence lies in the declared range."""
    spec = manifest.label_spec
    splits = manifest.splits
    if manifest.train_split not in splits:
        raise UserError(f"{manifest.dataset} has no split {manifest.train_split!r} to train on (splits: {splits})")
    train = manifest.split(manifest.train_split)
    target = "valence" if spec.valence_only else "discrete"
    if not any(spec.has_target(s) for s in train):
        other = "; set data.targets=valence" if target == "discrete" and any(s.valence is not None for s in train) \
            else ""
        raise UserError(f"{manifest.dataset}: no sample of split {manifest.train_split!r} has a {target} label "
                        f"({len(train)} samples), so there is nothing to train on{other}")
    if spec.has_valence:
        low, high = spec.valence_range
        for s in manifest.samples:
            if s.valence is not None and not low <= s.valence <= high:
                raise UserError(f"{manifest.dataset}: sample {s.name} ({s.split}) has valence {s.valence:g}, "
                                f"outside the declared range [{low:g}, {high:g}]; fix the label or set "
                                f"data.options.valence_range=[low,high]")
