"""``run(cfg) -> RunResult``: the whole way from a dataset to scores, submissions and a tracked run.

raw dataset -> manifest -> feature cache (filled where missing) -> FeatureBundle -> strategy +
fusion estimator over seeded folds -> official metrics -> submission files -> MLflow.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from mer.features import apply_asr_config, fill_options, fill_stream, plan_streams
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.data.manifest import Manifest, label_arrays
from mer.data.recipes import prepare
from mer.errors import UserError
from mer.run_dirs import data_dataset_name
from mer.evaluation.scoring import score_outputs
from mer.tracking import build_tracker, git_commit
from mer.training.cv import MultiSeedResult, Predictions
from mer.training.data import Split, concat_splits
from mer.training.estimator import FusionEstimator, resolve_device
from mer.tracks.base import Strategy, TrackData, build_strategy

log = logging.getLogger("mer")


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, float]
    table: str
    submissions: dict[str, Path] = field(default_factory=dict)
    run_id: str | None = None
    tracking_uri: str | None = None
    ablation: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # lines the printed summary adds (no-input samples)


def plain(node: Any) -> dict[str, Any]:
    """A config node (or None) as a plain dict, interpolations resolved."""
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


# --- data -----------------------------------------------------------------------------------
def load_manifest(cfg: DictConfig) -> Manifest:
    data = cfg.data
    options = plain(data.get("options"))
    if options.get("dataset") is None:
        options["dataset"] = data_dataset_name(data)
    if data.name == "demo" and not data.root:
        from mer.data.demo import demo_corpus

        d = data.demo
        root = demo_corpus(Path(cfg.paths.cache_dir), seed=int(d.seed), n_train=int(d.n_train),
                           n_per_test=int(d.n_per_test), progress=bool(cfg.progress))
    elif not data.root:
        raise SystemExit(f"data={data.name} needs the dataset's folder: add data.root=/path/to/{data.name} "
                         f"(layout {data.layout!r}); or run the demo with `python -m mer.run`.")
    else:
        root = Path(str(data.root)).expanduser()
        if not root.is_dir():
            raise SystemExit(f"data.root={root} is not a folder")
    try:
        manifest = prepare(data.layout, root, **options)
    except (ValueError, FileNotFoundError) as err:   # a recipe's complaint about the dataset's files
        raise UserError(recipe_hint_as_override(str(err))) from err
    return with_targets(manifest, data.get("targets"))


def with_targets(manifest: Manifest, targets: Any) -> Manifest:
    """The manifest learning ``data.targets``: ``discrete``, ``valence`` or both (a list); ``null``
    = what the dataset has. A target the dataset lacks is a one-line error."""
    import dataclasses

    from mer.data.manifest import TARGETS

    if targets is None:
        return manifest
    chosen = [str(targets)] if isinstance(targets, str) else [str(t) for t in targets]
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown or not chosen:
        raise UserError(f"data.targets={chosen}: expected discrete, valence or [discrete,valence]")
    spec = manifest.label_spec
    has = {"discrete": bool(spec.classes) and spec.has_discrete, "valence": spec.has_valence}
    missing = [t for t in chosen if not has[t]]
    if missing:
        raise UserError(f"data.targets asks for {missing[0]}, which {manifest.dataset} has no labels of "
                        f"(it has: {', '.join(t for t in TARGETS if has[t]) or 'none'}); set data.targets="
                        f"{next((t for t in TARGETS if has[t]), 'null')}")
    spec = dataclasses.replace(spec, has_discrete="discrete" in chosen, has_valence="valence" in chosen)
    return Manifest(manifest.dataset, spec, manifest.samples, manifest.train_split, manifest.root,
                    manifest.protocol)


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


def recipe_hint_as_override(message: str) -> str:
    """A recipe speaks of its Python options ("pass check_media=False"); a run sets them as
    ``data.options.<name>`` overrides, so the hint says that instead."""
    import re

    message = re.sub(r"\bpass (\w+)=(False|True)\b", lambda m: f"set data.options.{m[1]}={m[2].lower()}", message)
    return re.sub(r"\bpass (\w+)=", r"set data.options.\1=", message)


def dataset_cache_id(cfg: DictConfig, manifest: Manifest) -> str:
    """Cache folder of a dataset: its name plus a short hash of its root, so two copies never mix."""
    if cfg.data.get("cache_id"):
        return str(cfg.data.cache_id)
    root = os.path.abspath(manifest.root or "")
    return f"{cfg.data.name}-{hashlib.sha1(root.encode()).hexdigest()[:8]}"


# --- features -------------------------------------------------------------------------------
@dataclass
class FeatureSet:
    """A run's features: the bundle, what each stream is (for the record), the planned streams
    (corrupted conditions reuse their fitted extractors) and the failures."""

    bundle: FeatureBundle
    info: dict[str, Any]
    failures: list[dict]
    streams: list[Any]
    dataset_id: str


def _load_streams(streams, samples, names: list[str], cfg: DictConfig, device: str, condition: str
                  ) -> tuple[dict[str, ModalityFeatures], dict[str, Any], list[dict]]:
    """Fill each stream's entry for ``samples`` where missing, then load the rows of ``names``."""
    mods: dict[str, ModalityFeatures] = {}
    info: dict[str, Any] = {}
    failures: list[dict] = []
    opts = fill_options(cfg)
    for s in streams:
        stream, entry, name = s.stream, s.entry, s.extractor.name
        t0 = time.perf_counter()
        report = fill_stream(s, samples, device=device, progress=bool(cfg.progress), opts=opts)
        if entry.level == "frame":
            from mer.data.sequences import load_frame_features

            feats = load_frame_features(entry, names, max_steps=(cfg.get("sequence") or {}).get("max_steps"))
            X, present = feats.X, feats.present
        else:
            X, present = entry.load_matrix(names)
            feats = ModalityFeatures(X, present)
        fails = entry.failures()
        for n in names:
            if n in fails:
                f = fails[n]
                failures.append({"stream": stream, "modality": s.modality, "extractor": name, "name": n,
                                 "condition": condition, "reason": f.reason, "message": f.message})
        mods[stream] = ModalityFeatures(X, present, source=entry.path.name, lengths=feats.lengths)
        extracted, cached = report.extracted, report.cached
        info[stream] = {"extractor": name, "modality": s.modality, "cache_key": entry.key,
                        "entry": str(entry.path), "condition": entry.path.parent.name, "dim": int(X.shape[-1]),
                        "level": entry.level,
                        "present": int(present.sum()), "total": len(names), "extracted_now": extracted,
                        "from_cache": cached, "seconds": round(time.perf_counter() - t0, 2)}
        absent = len(names) - int(present.sum())
        log.info("%s [%s]: %s, dim %d, %d/%d samples (%d extracted now, %d from cache)%s", stream, condition, name,
                 X.shape[-1], present.sum(), len(names), extracted, cached,
                 f"; {absent} without a feature are masked (see failures.jsonl)" if absent else "")
    return mods, info, failures


def feature_set(cfg: DictConfig, manifest: Manifest, device: str, condition: str = "clean") -> FeatureSet:
    """Fill (where missing) and load every feature stream of the config for every sample."""
    dataset_id = dataset_cache_id(cfg, manifest)
    manifest, asr_tag = apply_asr_config(cfg, manifest, dataset_id, condition)
    text_condition = f"{condition}+{asr_tag}" if asr_tag else None
    streams = plan_streams(cfg, manifest, dataset_id, condition, text_condition)
    names = manifest.names()
    mods, info, failures = _load_streams(streams, manifest.samples, names, cfg, device, condition)
    if not mods:
        raise SystemExit("no modality has features: check features/text, features/audio, features/visual "
                         "and that the dataset has the inputs they need")
    from mer.data.sequences import sequence_settings

    return FeatureSet(sequence_settings(cfg.get("sequence")).apply(FeatureBundle(names, mods)), info, failures,
                      streams, dataset_id)


def build_features(cfg: DictConfig, manifest: Manifest, device: str, condition: str = "clean"
                   ) -> tuple[FeatureBundle, dict[str, Any], list[dict]]:
    fs = feature_set(cfg, manifest, device, condition)
    return fs.bundle, fs.info, fs.failures


def corruption_settings(cfg: DictConfig):
    from mer.data.corrupt import CorruptionSettings

    node = cfg.track.get("corruption") if cfg.get("track") is not None else None
    return CorruptionSettings.from_config(plain(node if node is not None else cfg.get("corruption")))


def condition_features(cfg: DictConfig, manifest: Manifest, clean: FeatureSet, condition: str,
                       names: list[str], device: str) -> tuple[FeatureBundle, dict[str, Any], list[dict]]:
    """Features of ``names`` under a corrupted ``condition`` (``mixed``, ``snr7``, ``blur4``...).

    The clips are corrupted once into ``<cache>/corrupted/<dataset>/<condition>/`` (in the
    release layout, each clip's draw beside it), and the streams the condition can change are
    extracted from that copy into the cache condition of the same name, with the extractors of the
    clean run (fitted state included). Streams it cannot change (video under ``snr7``; text unless
    ASR transcribes the noisy audio) are the clean entries."""
    from mer.data.corrupt import corrupt_manifest, corrupted_root, parse_condition
    from mer.features import Stream, feature_store

    cond = parse_condition(condition)
    settings = corruption_settings(cfg)
    tag = settings.tag(cond)
    root = corrupted_root(cfg.paths.cache_dir, clean.dataset_id, tag)
    noisy, copy = corrupt_manifest(manifest, cond, settings, root, names=names, progress=bool(cfg.progress))
    samples = [noisy[n] for n in names]
    text_condition = None
    if cond.touches_audio and cfg.get("asr") and cfg.asr.get("name"):
        subset = Manifest(noisy.dataset, noisy.label_spec, samples, noisy.train_split, noisy.root)
        subset, asr_tag = apply_asr_config(cfg, subset, clean.dataset_id, tag)
        samples = subset.samples
        text_condition = f"{tag}+{asr_tag}" if asr_tag else None
    store = feature_store(cfg)
    streams, reused = [], set()
    for s in clean.streams:
        if cond.touches(s.modality):
            streams.append(Stream(s.stream, s.extractor, store.entry(clean.dataset_id, s.extractor.identity(), tag)))
        elif s.modality == "text" and text_condition:
            streams.append(Stream(s.stream, s.extractor,
                                  store.entry(clean.dataset_id, s.extractor.identity(), text_condition)))
        else:
            reused.add(s.stream)
    mods, info, failures = _load_streams(streams, samples, names, cfg, device, tag)
    clean_rows = clean.bundle.take(names)
    for s in clean.streams:
        if s.stream in reused:
            f = clean_rows.modalities[s.stream]
            mods[s.stream] = ModalityFeatures(f.X, f.present, source=s.entry.path.name, lengths=f.lengths)
    for n, err in copy.failed.items():
        failures.append({"stream": "*", "modality": "*", "extractor": "corrupt", "name": n, "condition": tag,
                         "reason": "corruption_failed", "message": err})
    from mer.data.sequences import sequence_settings

    return sequence_settings(cfg.get("sequence")).apply(FeatureBundle(list(names), {m: mods[m] for m in clean.bundle.modalities})), \
        {f"{k}@{tag}": v for k, v in info.items()}, failures


# --- training -------------------------------------------------------------------------------
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
    from mer.training.folds import GROUP_PROTOCOLS, check_protocol

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
    (:func:`mer.data.sequences.frame_reference`) by nearest frame, -1 past its length or where unannotated."""
    from mer.data.manifest import arousal_array, read_frame_labels
    from mer.data.sequences import frame_reference, resample

    out: dict[str, np.ndarray] = {}
    if spec.has_arousal:
        out["arousal"] = arousal_array(samples)
    if spec.has_frame_labels:
        ref = X.modalities[frame_reference(X)]
        frames = np.full((len(samples), ref.X.shape[1]), -1, np.int64)
        for i, s in enumerate(samples):
            n = int(ref.lengths[i])
            if s.frame_labels is None or n == 0:
                continue
            labels = read_frame_labels(s.frame_labels, spec.num_classes)
            frames[i, :n] = resample(labels[:, None].astype(np.float32), n, "nearest")[:, 0].astype(np.int64)
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
    from mer.no_input import drop_no_input, no_input_mask
    from mer.tracks.semi import hide_labels

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


def add_corrupted_conditions(cfg: DictConfig, manifest: Manifest, clean: FeatureSet, data: TrackData,
                             strategy: Strategy, device: str) -> tuple[dict[str, Any], list[dict], dict[str, Any]]:
    """Views of the training split (what the strategy trains on; out-of-fold curve points) and
    probes of a labelled test split (``<split>@<condition>``: curve points), per the track config.
    Returns (feature info, failures, the curve's plan)."""
    from mer.tracks.noise import curve_conditions

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
        b, i, f = condition_features(cfg, manifest, clean, c, data.train.names, device)
        data.views[c] = data.train.with_features(b)
        info.update(i)
        failures += f
    if curve_split and curve_split != manifest.train_split:
        split = data.tests[curve_split]
        keep = np.flatnonzero(split.y >= 0)
        split = split.rows(keep)
        for c in conds:
            b, i, f = condition_features(cfg, manifest, clean, c, split.names, device)
            data.probes[f"{curve_split}@{c}"] = split.with_features(b)
            info.update({f"{curve_split}/{k}": v for k, v in i.items()})
            failures += f
    if curve_split:
        plan = {"split": curve_split, "conditions": conds}
    return info, failures, plan


def blend_setting(value: Any) -> float | str:
    """``train.blend_linear``: ``auto`` (chosen per fold on its inner split) or a weight in [0, 1]."""
    return "auto" if value == "auto" else float(value or 0.0)


def make_estimator(cfg: DictConfig, manifest: Manifest, metric: str, device: str) -> FusionEstimator:
    t = cfg.train
    window = dict((cfg.get("sequence") or {}).get("window") or {})
    return FusionEstimator(
        fusion=cfg.fusion.name, fusion_params=plain(cfg.fusion.get("params")),
        # sentiment data: a one-class discrete head, never trained (no cross-entropy) and never read
        num_classes=manifest.label_spec.num_classes if manifest.label_spec.has_discrete else 1,
        has_valence=manifest.label_spec.has_valence,
        epochs=int(t.epochs), lr=float(t.lr), weight_decay=float(t.weight_decay), batch_size=int(t.batch_size),
        grad_clip=t.get("grad_clip"), select_metric=metric, standardize=bool(t.standardize),
        seed=int(cfg.seed), device=device, num_threads=t.get("num_threads", 1),
        window_size=window.get("size"), window_hop=window.get("hop"),
        selection=str(t.get("selection", "fold")), inner_fraction=float(t.get("inner_fraction", 0.15)),
        patience=t.get("patience"), blend_linear=blend_setting(t.get("blend_linear")))


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.4f}" if n == 1 else f"{mean:.4f} ± {std:.4f}"


# --- outputs --------------------------------------------------------------------------------
def predictions_frame(manifest: Manifest, preds: Predictions) -> pd.DataFrame:
    """``name, discrete[, valence][, arousal], p_<class>...``; sentiment data: ``name, valence``."""
    spec = manifest.label_spec
    classes = spec.classes if spec.has_discrete else ()
    df = pd.DataFrame({"name": preds.names})
    if classes:
        df["discrete"] = [classes[i] for i in preds.probs.argmax(1)]
    if preds.valence is not None:
        df["valence"] = np.clip(preds.valence, *spec.valence_range)
    if "arousal" in preds.extra:
        df["arousal"] = np.clip(preds.extra["arousal"], *spec.valence_range)
    for i, c in enumerate(classes):
        df[f"p_{c}"] = preds.probs[:, i]
    return df


def frame_predictions(preds: Predictions, classes) -> pd.DataFrame:
    """Per-frame predictions in long form (``name, step, discrete``) over each sample's real steps
    of the reference stream (steps past a sample's length carry all-zero probabilities)."""
    fp = preds.extra["frame_probs"]
    real = fp.sum(-1) > 0
    rows, steps = np.nonzero(real)
    return pd.DataFrame({"name": [preds.names[i] for i in rows], "step": steps,
                         "discrete": [classes[k] for k in fp[rows, steps].argmax(-1)]})


def write_submissions(cfg: DictConfig, manifest: Manifest, tests: Mapping[str, Predictions], out_dir: Path,
                      subdir: str = "submissions") -> dict[str, Path]:
    from submissions.validate import validate_submission
    from submissions.writers import write_submission

    written = {}
    target = out_dir / subdir
    if manifest.label_spec.valence_only:
        if cfg.data.get("submissions"):
            log.info("sentiment data: no submission file (the schemas need a discrete column); the valences "
                     "are in predictions/<split>.csv")
        return written
    target.mkdir(parents=True, exist_ok=True)
    for track, sub in (cfg.data.get("submissions") or {}).items():
        if sub.split not in tests:
            continue
        df = predictions_frame(manifest, tests[sub.split])
        cols = ["name", "discrete"] + (["valence"] if "valence" in df else [])
        expected = [s.name for s in manifest.split(sub.split)]
        path = write_submission(sub.schema, df[cols], target, expected_names=expected,
                                classes=list(manifest.label_spec.classes))
        problems = validate_submission(path, sub.schema, names=expected, classes=list(manifest.label_spec.classes))
        if problems:
            raise RuntimeError(f"submission {path} failed validation: {problems}")
        written[track] = path
    return written


def default_out_dir(cfg: DictConfig) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        return Path(cfg.paths.runs_dir) / data_dataset_name(cfg.data) / str(cfg.track.name) / stamp


def score_tests(preds: Mapping[str, Predictions], tests: Mapping[str, Split]) -> dict[str, float]:
    """``{<split>_<metric>: value}`` of the ensembled test predictions, for splits with labels."""
    out: dict[str, float] = {}
    for sp, p in preds.items():
        sc = score_outputs(tests[sp].y, p.outputs(), tests[sp].v, tests[sp].targets, tests[sp].valence_range)
        out.update({f"{sp}_{k}": v for k, v in sc.items()})
    return out


TABLE_SENTIMENT = ("non0_acc2", "non0_f1", "has0_acc2", "acc7", "mae", "corr")
"""Sentiment scores the printed table shows (every one is in ``results.json``)."""


def ensemble_oof_scores(result: MultiSeedResult, train: Split) -> dict[str, float]:
    """Scores of the seed ensemble's out-of-fold predictions (each row's prediction is the mean
    over seeds of a model that never saw it): the honest figure of what the test prediction, an
    ensemble over folds and seeds, does."""
    ens = result.oof_predictions()
    known = (train.y >= 0) | (np.isfinite(train.v) if train.valence_range is not None else False)
    out = {k: v[known] for k, v in ens.outputs().items()}
    return score_outputs(train.y[known], out, train.v[known], {k: t[known] for k, t in train.targets.items()},
                         train.valence_range)


def results_row(ablation: Mapping[str, Any], fusion: str, n_seeds: int) -> dict[str, str]:
    """One line of the printed table: CV mean (± std over seeds) and the test scores."""
    from mer.evaluation.reports import fusion_label

    mods, summ = ablation["modalities"], ablation["cv"]
    row = {"modalities": "+".join(mods), "strategy": ablation.get("strategy", "supervised"),
           "fusion": fusion_label(mods, fusion)}
    for k in ("wf1", "acc", "mse", "combined", *TABLE_SENTIMENT):
        if f"cv_{k}" in summ:
            row[f"cv_{k}"] = _fmt(summ[f"cv_{k}"]["mean"], summ[f"cv_{k}"]["std"], n_seeds)
    for k in ("wf1", "combined"):       # the official protocol's figure: best epoch on the scored fold
        if f"official_{k}" in summ and f"cv_{k}" in summ:
            row[f"official_{k}"] = _fmt(summ[f"official_{k}"]["mean"], summ[f"official_{k}"]["std"], n_seeds)
    for k in ("wf1", "combined"):       # the linear floor on the same folds (the blend's linear half)
        if f"linear_{k}" in summ:
            row[f"linear_{k}"] = _fmt(summ[f"linear_{k}"]["mean"], summ[f"linear_{k}"]["std"], n_seeds)
    for k, v in (ablation.get("ensemble_oof") or {}).items():   # the fold x seed ensemble, out of fold
        if k in ("wf1", "combined", *TABLE_SENTIMENT[:2]):
            row[f"ens_oof_{k}"] = f"{v:.4f}"
    for k, ms in summ.items():          # out-of-fold scores of corrupted copies of the training clips
        if k.startswith("oof_") and k.endswith(("_wf1", "_combined")) and k.count("_") > 1:
            row[k] = _fmt(ms["mean"], ms["std"], n_seeds)
    row.update({k: f"{v:.4f}" for k, v in ablation["test"].items()
                if k.endswith(("_wf1", "_combined", "_non0_acc2", "_non0_f1", "_mae"))})
    return row


def cv_label(modalities, fusion: str, baseline: str | None = None) -> str:
    """The progress bar's name for one CV of a run: ``text+audio | attention``, ``text | -``, and
    ``... (supervised baseline)`` for the comparison a track asks for."""
    from mer.evaluation.reports import fusion_label

    mods = list(modalities)
    label = f"{'+'.join(mods)} | {fusion_label(mods, fusion)}"
    return f"{label} ({baseline} baseline)" if baseline else label


def run_metrics(ablation: list[Mapping[str, Any]], n_seeds: int) -> dict[str, float]:
    """Tracked metrics: the fused setting's CV (and std over seeds) and test scores, plus each
    single modality's CV headline."""
    fused = ablation[-1]
    metrics: dict[str, float] = {}
    for k, ms in fused["cv"].items():
        metrics[k] = ms["mean"]
        if n_seeds > 1:
            metrics[f"{k}_std"] = ms["std"]
    metrics.update({f"test_{k}": v for k, v in fused["test"].items()})
    metrics.update({f"ens_oof_{k}": v for k, v in (fused.get("ensemble_oof") or {}).items()})
    for abl in ablation[:-1]:
        name = "+".join(abl["modalities"])
        metrics.update({f"unimodal_{name}_{k}": v["mean"] for k, v in abl["cv"].items()
                        if k in {"cv_wf1", "cv_combined", f"cv_{VALENCE_ONLY_METRIC}"}})
    return metrics


def write_predictions(out: Path, manifest: Manifest, train: Split, oof: Predictions,
                      tests: Mapping[str, Predictions], modalities: list[str]) -> Path:
    """Per-sample predictions (out-of-fold and per test split), the per-class table and the
    confusion matrix of the out-of-fold predictions."""
    from mer.evaluation.reports import per_class_table, plot_confusion_matrix

    classes = list(manifest.label_spec.classes)
    pred_dir = out / "predictions"
    pred_dir.mkdir(exist_ok=True)
    oof_df = predictions_frame(manifest, oof)
    if manifest.label_spec.valence_only:
        oof_df.insert(1, "true_valence", train.v)
    else:
        oof_df.insert(1, "true", [classes[i] for i in train.y])
    oof_df.to_csv(pred_dir / f"{manifest.train_split}-oof.csv", index=False)
    for sp, p in tests.items():
        predictions_frame(manifest, p).to_csv(pred_dir / f"{sp}.csv", index=False)
        if "frame_probs" in p.extra:
            frame_predictions(p, classes).to_csv(pred_dir / f"{sp}-frames.csv", index=False)
    if manifest.label_spec.valence_only:
        return pred_dir
    y_oof = oof.probs.argmax(1)
    per_class_table(train.y, y_oof, classes).to_csv(out / "per_class_cv.csv")
    plot_confusion_matrix(train.y, y_oof, classes, out / "confusion_matrix_cv.png",
                          title=f"{manifest.dataset} CV (out-of-fold), {'+'.join(modalities)}")
    return pred_dir


# --- the run --------------------------------------------------------------------------------
@dataclass
class RunStart:
    """What every run has once it has started (see :func:`start_run`)."""

    out: Path
    device: str
    tracker: Any
    manifest: Manifest
    t_start: float


@contextmanager
def start_run(cfg: DictConfig, out_dir: str | os.PathLike | None, run_name: str,
              tags: Mapping[str, str] | None = None) -> Iterator[RunStart]:
    """The start every run shares (this pipeline and the track runners): the output folder with the
    resolved config, the device, the tracker's run (open for the block; tagged with the track, the
    dataset, the output folder, the git commit and ``tags``) and the manifest, written beside."""
    t_start = time.perf_counter()
    out = Path(out_dir) if out_dir else default_out_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    device = resolve_device(str(cfg.device))
    tracker = build_tracker(cfg.get("tracking"), cfg.paths.runs_dir)
    with tracker.start(run_name, tags={"track": str(cfg.track.name), "dataset": data_dataset_name(cfg.data),
                                       **dict(tags or {}), "out_dir": str(out), **git_commit()}):
        tracker.log_params(resolved)
        manifest = load_manifest(cfg)
        log.info("%s", manifest.summary())
        manifest.to_jsonl(out / "manifest.jsonl")
        yield RunStart(out, device, tracker, manifest, t_start)


def run(cfg: DictConfig, out_dir: str | os.PathLike | None = None) -> RunResult:
    """Walk the whole way for one config. Tests call this directly; ``python -m mer.run`` wraps it."""
    from mer.config_check import check_config

    check_config(cfg)                 # every value, before the manifest is read or a cache filled
    if cfg.track.get("runner"):   # a track with its own protocol (mer/tracks/ov.py, pll.py)
        from mer.tracks.base import get_runner
        return get_runner(str(cfg.track.runner))(cfg, out_dir)
    from mer.evaluation.reports import results_table

    with start_run(cfg, out_dir, f"{data_dataset_name(cfg.data)}-{cfg.track.name}-{cfg.fusion.name}",
                   {"fusion": str(cfg.fusion.name)}) as started:
        out, device, tracker, manifest = started.out, started.device, started.tracker, started.manifest
        t_start = started.t_start
        check_labels(manifest)              # labels, valence range and fold protocol: before any extraction
        protocol = resolve_protocol(cfg, manifest)
        clean = feature_set(cfg, manifest, device)
        bundle, feat_info, failures = clean.bundle, dict(clean.info), list(clean.failures)
        metric = resolve_metric(cfg, manifest)
        seeds = [int(s) for s in cfg.train.seeds]
        n_folds = int(cfg.train.n_folds)
        strategy = build_strategy(cfg.track.strategy, **plain(cfg.track.get("strategy_options")))
        data = make_track_data(cfg, manifest, bundle, n_folds)
        from mer.no_input import NoInput

        no_input = NoInput.of(manifest, bundle, data.train)   # left out of training; test rows get the fallback
        if no_input.count:
            log.warning("%s", no_input.summary_line(manifest.train_split))
        if strategy.needs_pool and data.pool is None:
            raise SystemExit(f"track.strategy={cfg.track.strategy} needs an unlabelled pool: set track.pool.splits "
                             f"(all, or a list of {manifest.test_splits}) or track.hide_labels.fraction")
        c_info, c_fail, curve_plan = add_corrupted_conditions(cfg, manifest, clean, data, strategy, device)
        feat_info.update(c_info)
        failures += c_fail
        with open(out / "failures.jsonl", "w", encoding="utf-8") as f:
            for rec in failures:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        # MLflow names admit no "@": a corrupted condition's stream is logged as <stream>:<condition>
        tracker.log_params({f"cache.{m.replace('@', ':')}.key": i["cache_key"] for m, i in feat_info.items()})
        tracker.log_params({f"cache.{m.replace('@', ':')}.extractor": i["extractor"] for m, i in feat_info.items()})

        def cv(modalities, strat: Strategy = strategy):
            est = make_estimator(cfg, manifest, metric, device)
            label = cv_label(modalities, str(cfg.fusion.name), strat.name if strat is not strategy else None)
            return strat.cross_validate(est, data.select(modalities), seeds=seeds, n_folds=n_folds,
                                        progress=bool(cfg.progress), label=label)

        def summarise(mods, res, strat_name):
            preds = no_input.fill(res.test_predictions())
            main = {k: v for k, v in preds.items() if k in data.tests}
            return {"modalities": mods, "strategy": strat_name, "cv": res.summary(),
                    "ensemble_oof": ensemble_oof_scores(res, data.train) if len(seeds) > 1 else {},
                    "test": score_tests(main, data.tests)}, main

        fused_mods = sorted(bundle.modalities)
        settings = [(fused_mods, cv(fused_mods))]
        if cfg.get("ablate_modalities") and len(fused_mods) > 1:
            settings = [([m], cv([m])) for m in fused_mods] + settings
        summaries = [summarise(mods, res, strategy.name) for mods, res in settings]
        ablation = [a for a, _ in summaries]
        result: MultiSeedResult = settings[-1][1]
        fused_preds = summaries[-1][1]
        base_name, base_res = run_baseline(cfg, strategy, result, lambda st: cv(fused_mods, st))
        rows = [results_row(a, str(cfg.fusion.name), len(seeds)) for a in ablation]
        metrics = run_metrics(ablation, len(seeds))
        base_preds = None
        if base_res is not None:
            base_abl, base_preds = summarise(fused_mods, base_res, f"{base_name} (baseline)")
            rows.append(results_row(base_abl, str(cfg.fusion.name), len(seeds)))
            metrics.update({f"baseline_{k}": v for k, v in run_metrics([base_abl], len(seeds)).items()})
        for r in result.runs:
            for f in r.folds:
                tracker.log_metrics({f"fold_{k}": v for k, v in f.items() if k not in {"fold", "n_train", "n_val"}},
                                    step=r.seed * 100 + f["fold"])
        curves = {}
        if curve_plan:
            curves = robustness_outputs(out, manifest, data, curve_plan, {strategy.name: result,
                                        **({f"{base_name} (baseline)": base_res} if base_res is not None else {})})
            for label, pts in curves.items():
                prefix = "baseline_curve" if label.endswith("(baseline)") else "curve"
                metrics.update({f"{prefix}_{c}_wf1": v for c, v in pts.items()})
        metrics.update(strategy.report(result, data, out, list(manifest.label_spec.classes), tracker))
        metrics["n_no_input"] = float(no_input.count)
        tracker.log_metrics(metrics)
        no_input.write(out)
        pred_dir = write_predictions(out, manifest, data.train, result.oof_predictions(), fused_preds, fused_mods)
        fold_record = record_folds(out, data.train, result, protocol)
        tracker.log_params({f"folds.{k}": v for k, v in fold_record.items() if k != "held_out_groups"})
        subs = write_submissions(cfg, manifest, fused_preds, out)
        if base_preds is not None:
            write_submissions(cfg, manifest, base_preds, out, subdir=f"submissions/baseline-{base_name}")
        text_table = results_table(rows)
        (out / "results.md").write_text(text_table + "\n")
        summary = {"metric": metric, "metrics": metrics, "ablation": ablation, "features": feat_info,
                   "strategy": strategy.name, "baseline": base_name if base_res is not None else None,
                   "robustness_curve": curves, "failures": len(failures),
                   "submissions": {k: str(v) for k, v in subs.items()},
                   "seeds": seeds, "n_folds": n_folds, "protocol": protocol, "folds": fold_record,
                   "targets": list(manifest.label_spec.targets),
                   "no_input": no_input.record(manifest.train_split),
                   "seconds": round(time.perf_counter() - t_start, 1)}
        (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
        for p in [out / "results.json", out / "results.md", out / "per_class_cv.csv", out / "folds.csv",
                  out / "confusion_matrix_cv.png", out / "config_resolved.yaml", out / "failures.jsonl",
                  out / "no_input.csv", out / "robustness_curve.png", out / "robustness_curve.csv"]:
            if p.exists():
                tracker.log_artifact(p)
        tracker.log_artifact(pred_dir, "predictions")
        if subs:
            tracker.log_artifact(out / "submissions", "submissions")
        tracker.log_metrics({"seconds_total": time.perf_counter() - t_start})
        notes = [line for line in [no_input.summary_line(manifest.train_split)] if line]
        return RunResult(out, metrics, text_table, subs, tracker.run_id, tracker.uri, ablation, notes)


def record_folds(out: Path, train: Split, result: MultiSeedResult, protocol: str) -> dict[str, Any]:
    """``folds.csv`` (``name, group, seed, fold``: the fold each training row is held out in, per
    seed) and the summary ``results.json`` and MLflow keep: protocol, folds, groups and a digest
    of the assignment (two runs with one digest cross-validated on the same folds)."""
    rows = []
    for r in result.runs:
        fold_of = np.full(len(train), -1, np.int64)
        for k, va in enumerate(r.fold_val):
            fold_of[va] = k
        rows += [{"name": n, "group": None if train.groups is None else train.groups[i], "seed": r.seed,
                  "fold": int(fold_of[i])} for i, n in enumerate(train.names)]
    frame = pd.DataFrame(rows, columns=["name", "group", "seed", "fold"])
    frame.to_csv(out / "folds.csv", index=False)
    record: dict[str, Any] = {"protocol": protocol, "n_folds": len(result.runs[0].fold_val),
                              "n_groups": 0 if train.groups is None else len(set(train.groups)),
                              "assignment_sha1": hashlib.sha1(frame.to_csv(index=False).encode()).hexdigest()[:12]}
    if train.groups is not None:
        first = result.runs[0]
        record["held_out_groups"] = [sorted({str(train.groups[i]) for i in va}) for va in first.fold_val]
    return record


def run_baseline(cfg: DictConfig, strategy: Strategy, result: MultiSeedResult, cv_with
                 ) -> tuple[str | None, MultiSeedResult | None]:
    """The comparison ``track.baseline`` asks for (e.g. ``supervised``: clean-only training for
    the noise track), on the fused modalities with the same folds and seeds. A strategy that made
    it on the way (self-training's round 0 is supervised-only training) hands it over instead."""
    name = cfg.track.get("baseline")
    if not name or name == strategy.name:
        return None, None
    made = result.extras.get("baseline")
    if made is not None and name == "supervised":
        return str(name), made
    shared = {k: getattr(strategy, k) for k in ("valence_weight", "label_smoothing", "arousal_weight",
                                                  "frame_weight", "dimension_loss") if hasattr(strategy, k)}
    return str(name), cv_with(build_strategy(str(name), **shared))


def robustness_outputs(out: Path, manifest: Manifest, data: TrackData, plan: Mapping[str, Any],
                       results: Mapping[str, MultiSeedResult]) -> dict[str, dict[str, float]]:
    """Weighted F1 per corruption condition of each result: ``robustness_curve.csv`` and the plot."""
    from mer.evaluation.reports import plot_robustness_curve
    from mer.tracks.noise import robustness_curve

    curves = {label: robustness_curve(res, data, plan["split"], plan["conditions"], manifest.train_split)
              for label, res in results.items()}
    rows = [{"model": label, "condition": c, "wf1": v} for label, pts in curves.items() for c, v in pts.items()]
    pd.DataFrame(rows).to_csv(out / "robustness_curve.csv", index=False)
    where = "out-of-fold" if plan["split"] == manifest.train_split else "fold ensemble"
    plot_robustness_curve(curves, out / "robustness_curve.png",
                          title=f"{manifest.dataset} {plan['split']} ({where}): weighted F1 under corruption")
    return curves
