"""From the config's feature streams to filled cache entries: shared by ``mer.run`` and ``mer.extract``.

* :func:`plan_streams` builds one extractor per key of ``cfg.features`` that applies to the
  dataset (fitted where it learns from the training split);
* :func:`fill_options` reads ``cfg.extract`` (decoding workers, timeout, memory cap, failure limit);
* :func:`extract_all` fills every planned entry: in this process, over ``extract.shards`` local
  processes, or over a Ray cluster (``extract.launcher=ray``), then consolidates each entry once.

Shards split the samples of every entry by a stable hash of their names and write parts into the
same entry (writes take the entry's lock), so a killed shard loses only its samples in flight and
a rerun of the same command fills exactly what is missing.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from feature_extractors.asr import apply_asr, asr_tag, build_asr, samples_needing_asr, transcribe_samples
from feature_extractors.base import MODALITIES, Extractor, build_extractor
from mer.cache.fill import FillOptions, FillReport, fill_entry, is_two_stage
from mer.cache.store import CacheEntry, FeatureStore
from mer.cache.workers import die_with_parent
from mer.core.config import plain
from mer.core.env import configure_environment
from mer.core.fingerprints import FingerprintCache
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.data.corrupt import CorruptionSettings, corrupt_manifest, corrupted_root, parse_condition
from mer.data.manifest import Manifest
from mer.data.sequences import load_frame_features, sequence_settings
from mer.datasets import dataset_cache_id, load_manifest

log = logging.getLogger(__name__)


@dataclass
class Stream:
    """One feature stream of a run: its config key, extractor and cache entry."""

    stream: str
    extractor: Extractor
    entry: CacheEntry

    @property
    def modality(self) -> str:
        return self.extractor.modality


def feature_store(cfg: DictConfig) -> FeatureStore:
    return FeatureStore(Path(cfg.paths.cache_dir) / "features")


def apply_asr_config(cfg: DictConfig, manifest: Manifest, dataset_id: str, condition: str = "clean"
                     ) -> tuple[Manifest, str | None]:
    """Transcribe (cached) and merge ASR into the manifest as ``cfg.asr`` says.

    Returns the manifest with merged transcripts and a tag naming "these transcripts, merged this
    way" (None when ASR changed nothing): text streams then live in the cache condition
    ``<condition>+<tag>``, so they never share an entry with features of the provided text."""
    a = cfg.get("asr")
    if not a or not a.get("name"):
        return manifest, None

    engine = build_asr(str(a.name), plain(a.get("options")))
    merge = plain(a.get("merge"))
    policy = str(merge.get("policy", "provided"))
    separator = str(merge.get("separator", " [SEP] "))
    language = str(cfg.data.language)
    todo = samples_needing_asr(manifest.samples, language, policy)
    if not todo:
        log.info("asr: every sample has a %s transcript; policy %s needs no ASR", language, policy)
        return manifest, None

    dataset_root = feature_store(cfg).root / dataset_id
    # Media fingerprints (a transcript is redone when its file changes) are remembered in the
    # dataset's file that its feature entries share, so each file is read once for all of them.
    transcripts = transcribe_samples(todo, engine, dataset_root / condition / "asr", progress=bool(cfg.progress),
                                     fingerprints=FingerprintCache(dataset_root / ".fingerprints.jsonl"))
    samples = apply_asr(manifest.samples, transcripts, language, policy, separator)
    merged = Manifest(manifest.dataset, manifest.label_spec, samples, manifest.train_split, manifest.root)
    return merged, asr_tag(engine, policy, separator)


def plan_streams(cfg: DictConfig, manifest: Manifest, dataset_id: str, condition: str = "clean",
                 text_condition: str | None = None) -> list[Stream]:
    """Every feature stream of ``cfg.features`` that this dataset can feed, with its cache entry.
    Extra streams (``+features.text_zh={name:tfidf,options:{language:chinese}}``) fuse as inputs of
    their own; ``cfg.modalities`` keeps a subset by stream or modality name."""
    store = feature_store(cfg)
    present_inputs = manifest.modalities_present()
    wanted = set(cfg.modalities) if cfg.get("modalities") else None
    out: list[Stream] = []
    for stream, fc in cfg.features.items():
        if fc is None or not fc.get("name"):
            continue

        extractor = build_extractor(fc.name, plain(fc.get("options")))
        if hasattr(extractor, "bind_classes"):         # ClassBound: empty labels = the dataset's classes
            extractor = extractor.bind_classes(manifest.label_spec.classes)
        modality = extractor.modality
        if stream in MODALITIES and modality != stream:
            raise SystemExit(f"features.{stream}={fc.name} is a {modality} extractor")
        if wanted is not None and stream not in wanted and modality not in wanted:
            continue
        if modality not in present_inputs:
            log.info("%s: the dataset has no %s input; the stream is skipped", stream, modality)
            continue
        if extractor.needs_fit:
            extractor.fit(manifest.split(manifest.train_split))
        cond = text_condition if (modality == "text" and text_condition) else condition
        out.append(Stream(stream, extractor, store.entry(dataset_id, extractor.identity(), cond)))
    return out


def fill_options(cfg: DictConfig, **overrides: Any) -> FillOptions:
    ex = cfg.get("extract") or {}
    opts = FillOptions(
        workers=-1 if str(ex.get("workers", "auto")) == "auto" else int(ex.get("workers")),
        timeout_s=float(ex["timeout_s"]) if ex.get("timeout_s") else None,
        memory_mb=int(ex["memory_mb"]) if ex.get("memory_mb") else None,
        prefetch=int(ex.get("prefetch", 2)),
        max_failure_fraction=float(ex.get("max_failure_fraction", 1.0)),
    )

    return dataclasses.replace(opts, **overrides) if overrides else opts


def resolve_workers(opts: FillOptions, extractor: Extractor, n_todo: int) -> FillOptions:
    """``workers=-1`` (auto): decoding processes for media extractors with enough work to pay
    for starting them (each imports the extractor's modules); none for text, whose ``load`` is a
    dictionary lookup."""
    if opts.workers >= 0:
        return opts
    media = is_two_stage(extractor) and extractor.modality != "text"
    cpus = os.cpu_count() or 1
    workers = max(1, min(4, cpus - 1)) if media and n_todo >= 64 else 0
    return dataclasses.replace(opts, workers=workers)


def fill_stream(s: Stream, samples: Sequence, *, device: str, progress: bool, opts: FillOptions,
                desc: str | None = None) -> FillReport:
    todo = len(samples) - len(s.entry.done_names() & {x.name for x in samples})
    return fill_entry(s.entry, s.extractor, samples, device=device, progress=progress,
                      desc=desc or f"{s.stream}:{s.extractor.name}",
                      options=resolve_workers(opts, s.extractor, todo))


# --- mer.extract: every stream, optionally sharded ---------------------------------------------
def _shard_job(cfg_yaml: str, index: int, count: int, device: str) -> list[dict]:
    """Fill shard ``index`` of ``count`` of every stream (runs in a child process or a Ray task)."""
    if count > 1:
        die_with_parent()

    configure_environment()

    cfg = OmegaConf.create(cfg_yaml)
    manifest = load_manifest(cfg)
    dataset_id = dataset_cache_id(cfg, manifest)
    manifest, tag = apply_asr_config(cfg, manifest, dataset_id)      # cached by the parent: a read
    streams = plan_streams(cfg, manifest, dataset_id, text_condition=f"clean+{tag}" if tag else None)
    out = []
    for s in streams:
        rep = fill_stream(s, manifest.samples, device=device, progress=bool(cfg.progress),
                          opts=fill_options(cfg, shard=(index, count), consolidate=False),
                          desc=f"[{index + 1}/{count}] {s.stream}:{s.extractor.name}")
        out.append(_report_row(s, rep))
    return out


def _report_row(s: Stream, rep: FillReport) -> dict:
    return {"stream": s.stream, "extractor": s.extractor.name, "entry": str(s.entry.path),
            "requested": rep.requested, "cached": rep.cached, "extracted": rep.extracted,
            "failed": rep.failed, "reasons": dict(Counter(f.reason for f in rep.failures)),
            "seconds": round(rep.seconds, 2)}


def extract_all(cfg: DictConfig, device: str) -> list[dict]:
    """Fill every stream's entry for the configured dataset; returns one summary row per stream
    (per shard when sharded)."""

    manifest = load_manifest(cfg)
    dataset_id = dataset_cache_id(cfg, manifest)
    manifest, tag = apply_asr_config(cfg, manifest, dataset_id)
    streams = plan_streams(cfg, manifest, dataset_id, text_condition=f"clean+{tag}" if tag else None)
    ex = cfg.get("extract") or {}
    shards = int(ex.get("shards", 1))
    launcher = str(ex.get("launcher", "local"))
    for s in streams:
        reasons = list(ex.get("retry_failures") or [])
        if reasons:
            s.entry.clear_failures(None if reasons == ["all"] else reasons)
    t0 = time.perf_counter()
    if shards <= 1 and launcher == "local":
        rows = [_report_row(s, fill_stream(s, manifest.samples, device=device, progress=bool(cfg.progress),
                                           opts=fill_options(cfg))) for s in streams]
    else:
        cfg_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        count = max(1, shards)
        if launcher == "ray":
            rows = _run_ray(cfg_yaml, count, device, ex.get("address"))
        elif launcher == "local":
            rows = _run_local(cfg_yaml, count, device)
        else:
            raise SystemExit(f"extract.launcher={launcher!r}: use local or ray")
        for s in streams:                      # one consolidation per entry, after every shard
            if s.entry._parts():
                with s.entry.lock():
                    s.entry.consolidate()
    log.info("extraction took %.1f s", time.perf_counter() - t0)
    return rows


def _run_local(cfg_yaml: str, count: int, device: str) -> list[dict]:
    with ProcessPoolExecutor(max_workers=count, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_shard_job, cfg_yaml, i, count, device) for i in range(count)]
        return [row for f in futures for row in f.result()]


def _run_ray(cfg_yaml: str, count: int, device: str, address: str | None) -> list[dict]:
    try:
        import ray  # optional dependency, imported on use
    except ImportError:
        raise SystemExit("extract.launcher=ray needs Ray: `pip install -c constraints.txt 'ray==2.60.0'` "
                         "(an optional extra); or use extract.launcher=local") from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address        # a real cluster: every node must see paths.cache_dir
        else:
            kwargs["num_cpus"] = max(count, 1)
        ray.init(**kwargs)
        started = True
    try:
        task = ray.remote(num_cpus=1, num_gpus=1 if device == "cuda" else 0)(_shard_job)
        results = ray.get([task.remote(cfg_yaml, i, count, device) for i in range(count)])
        return [row for part in results for row in part]
    finally:
        if started:
            ray.shutdown()


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
        mods[stream] = ModalityFeatures(X, present, source=entry.path.name, lengths=feats.lengths, times=feats.times)
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

    return FeatureSet(sequence_settings(cfg.get("sequence")).apply(FeatureBundle(names, mods)), info, failures,
                      streams, dataset_id)


def build_features(cfg: DictConfig, manifest: Manifest, device: str, condition: str = "clean"
                   ) -> tuple[FeatureBundle, dict[str, Any], list[dict]]:
    fs = feature_set(cfg, manifest, device, condition)
    return fs.bundle, fs.info, fs.failures


def corruption_settings(cfg: DictConfig):
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
            mods[s.stream] = ModalityFeatures(f.X, f.present, source=s.entry.path.name, lengths=f.lengths,
                                              times=f.times)
    for n, err in copy.failed.items():
        failures.append({"stream": "*", "modality": "*", "extractor": "corrupt", "name": n, "condition": tag,
                         "reason": "corruption_failed", "message": err})

    return sequence_settings(cfg.get("sequence")).apply(FeatureBundle(list(names), {m: mods[m] for m in clean.bundle.modalities})), \
        {f"{k}@{tag}": v for k, v in info.items()}, failures
