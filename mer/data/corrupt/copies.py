"""The corrupted copy of a dataset: which clips go where, the copy's settings file and release files,
the per-split tables (``<split>-corruption.csv``), and the runs that corrupt samples or a manifest."""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tqdm.auto import tqdm

from mer.core.artifacts import META_FILE
from mer.core.io import atomic_file, atomic_write_text
from mer.data.manifest import Manifest

from .audio import NoiseSource, babble_pool
from .clips import CORRUPTED_KIND, SIDECAR_SUFFIX, ClipJob, _worker_clip, _worker_init, copy_entry, corrupt_clip, read_sidecar
from .conditions import Condition, CorruptionSettings, parse_condition
from .video import _CONTAINER_FORMATS

log = logging.getLogger(__name__)

SETTINGS_FILE = "corruption.json"
_SKIP_TOP_LEVEL = re.compile(r"(^|-)corruption\.(csv|json)$")
_COPY_BOOKKEEPING = {SETTINGS_FILE, META_FILE, CORRUPTED_KIND.records}
"""A corrupted copy's own records (and its hidden lock and stamps): never copied as release files."""


@dataclass
class CorruptedCopy:
    """The corrupted copy of some clips of a dataset: ``samples`` point at the corrupted media
    (``None`` paths where a clip could not be corrupted), ``records`` are the sidecars."""

    root: Path
    condition: Condition
    tag: str
    samples: list[Any]
    records: dict[str, dict[str, Any]]

    @property
    def failed(self) -> dict[str, str]:
        return {n: r["error"] for n, r in self.records.items() if "error" in r}


def _relative(path: str, src_root: Path | None, split: str) -> str:
    if src_root is not None:
        try:
            rel = os.path.relpath(os.path.realpath(path), os.path.realpath(src_root))
            if not rel.startswith(".."):
                return rel
        except ValueError:
            pass
    return os.path.join(split, os.path.basename(path))


def _dst(rel: str) -> str:
    stem, suffix = os.path.splitext(rel)
    known = suffix.lower() in _CONTAINER_FORMATS or suffix.lower() in {".wav", ".flac", ".ogg"}
    if suffix.lower() in {".flac", ".ogg"}:
        return stem + ".wav"            # noisy audio is written as 16-bit PCM wav
    return rel if known else stem + ".mp4"


def plan_jobs(samples: Sequence[Any], out_root: Path, src_root: Path | None) -> list[ClipJob]:
    jobs = []
    for s in samples:
        if not (s.video_path or s.audio_path):
            continue
        v_rel = _relative(s.video_path, src_root, s.split) if s.video_path else None
        a_rel = _relative(s.audio_path, src_root, s.split) if s.audio_path else None
        v_dst = str(out_root / _dst(v_rel)) if v_rel else None
        a_dst = str(out_root / _dst(a_rel)) if a_rel else None
        primary = v_dst or a_dst
        jobs.append(ClipJob(s.name, s.split, s.video_path, s.audio_path, v_dst, a_dst,
                            os.path.splitext(primary)[0] + SIDECAR_SUFFIX, root=str(out_root)))
    return jobs


def _check_settings(out_root: Path, identity: Mapping[str, Any], source_root: str | None) -> None:
    path = out_root / SETTINGS_FILE
    want = {"corruption": dict(identity), "source_root": source_root}
    if path.is_file():
        have = json.loads(path.read_text(encoding="utf-8"))
        if have.get("corruption") != want["corruption"]:
            raise RuntimeError(f"{out_root} holds clips corrupted with other settings "
                               f"({have.get('corruption')} instead of {want['corruption']}); "
                               f"delete that folder or write to another one")
        return
    atomic_write_text(path, json.dumps(want, indent=1, ensure_ascii=False))


def copy_release_files(src_root: str | os.PathLike | None, out_root: Path) -> list[str]:
    """Copy the files directly in the release's root (labels, transcripts, name lists) so the copy
    reads like the release; corruption records of the source are not copied."""
    if not src_root or not Path(src_root).is_dir():
        return []
    copied = []
    for p in sorted(Path(src_root).iterdir()):
        if p.is_file() and not _SKIP_TOP_LEVEL.search(p.name) and p.name not in _COPY_BOOKKEEPING \
                and not p.name.startswith("."):
            dst = out_root / p.name
            if not dst.exists() or dst.stat().st_size != p.stat().st_size:
                shutil.copyfile(p, dst)
            copied.append(p.name)
    return copied


SPLIT_TABLE_COLUMNS = ("name", "snr_db", "blur_factor", "noise", "note")


def write_split_tables(out_root: Path, records: Iterable[Mapping[str, Any]]) -> list[Path]:
    """``<split>-corruption.csv`` (``name,snr_db,blur_factor,noise,note``) for every split in
    ``records``; rows of clips corrupted by earlier calls are kept."""
    by_split: dict[str, dict[str, list[str]]] = {}
    for r in records:
        note = r.get("error") or r.get("note", "")
        by_split.setdefault(r["split"], {})[r["name"]] = [
            r["name"], "" if r["snr_db"] is None else str(r["snr_db"]), str(r["blur_factor"]),
            " ".join(r.get("noise", [])), note]
    written = []
    for split, rows in sorted(by_split.items()):
        path = out_root / f"{split}-corruption.csv"
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                for old in csv.DictReader(f):
                    rows.setdefault(old["name"], [old.get(c, "") for c in SPLIT_TABLE_COLUMNS])
        with atomic_file(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(SPLIT_TABLE_COLUMNS)
            w.writerows(rows[n] for n in sorted(rows))
        written.append(path)
    return written



def corrupt_samples(samples: Sequence[Any], condition: Condition | str, settings: CorruptionSettings,
                    out_root: str | os.PathLike, *, src_root: str | os.PathLike | None = None,
                    babble_from: Sequence[Any] = (), workers: int | None = None,
                    progress: bool = True) -> CorruptedCopy:
    """Corrupt ``samples`` into ``out_root`` (kept relative to ``src_root``), skipping clips done
    before with the same settings; returns them pointing at their corrupted media.

    ``babble_from``: the samples whose utterances make babble (the whole dataset, so a clip's
    noise does not depend on which clips are corrupted with it). ``workers``: processes (default:
    up to 2 for more than 16 clips; 0 = this process). Resumable: each clip's sidecar is written
    last, atomically; a rerun does what is missing."""
    condition = parse_condition(condition) if isinstance(condition, str) else condition
    if condition.is_clean:
        raise ValueError("the clean condition is the dataset itself: nothing to corrupt")
    out_root = Path(out_root)
    identity = settings.identity(condition)
    src = str(Path(src_root).resolve()) if src_root else None
    _check_settings(out_root, identity, src)
    copy_release_files(src_root, out_root)
    jobs = plan_jobs(samples, out_root, Path(src) if src else None)
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for j in jobs:
        rec = read_sidecar(j, identity)
        if rec is not None:
            records[j.name] = rec
        else:
            todo.append(j)
    copy_entry(out_root, identity).fingerprints.save()
    if todo:
        noise = NoiseSource.from_settings(settings, babble_pool(babble_from or samples)) \
            if condition.touches_audio else NoiseSource([], 1, "none")
        records.update(_run_jobs(todo, condition, settings, noise, workers, progress))
    write_split_tables(out_root, [read_sidecar(j, identity) or records[j.name] for j in jobs
                                  if j.name in records])
    by_name = {j.name: j for j in jobs}
    out = []
    for s in samples:
        j = by_name.get(s.name)
        if j is None:
            out.append(s)
            continue
        ok = "error" not in records[s.name]
        out.append(dataclasses.replace(s, video_path=j.video_dst if ok and j.video_dst else None,
                                       audio_path=j.audio_dst if ok and j.audio_dst else None,
                                       face_path=None, meta={**dict(s.meta), "corruption": records[s.name]}))
    copy = CorruptedCopy(out_root, condition, settings.tag(condition), out, records)
    if copy.failed:
        first = next(iter(copy.failed.items()))
        log.warning("%d of %d clips could not be corrupted (e.g. %s: %s); they have no media in condition %s "
                    "and their features are masked", len(copy.failed), len(jobs), *first, copy.tag)
    return copy


def _run_jobs(todo: list[ClipJob], condition: Condition, settings: CorruptionSettings, noise: NoiseSource,
              workers: int | None, progress: bool) -> dict[str, dict[str, Any]]:
    n_workers = min(2, os.cpu_count() or 1) if workers is None and len(todo) > 16 else int(workers or 0)
    bar = tqdm(total=len(todo), desc=f"corrupting ({condition.name})", unit="clip", disable=not progress)
    out: dict[str, dict[str, Any]] = {}
    try:
        if n_workers <= 1:
            for j in todo:
                out[j.name] = corrupt_clip(j, condition, settings, noise)
                bar.update(1)
        else:
            # spawn, not fork: the caller may hold torch/OpenMP threads that fork would copy.
            with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn"), initializer=_worker_init,
                                     initargs=(condition, settings, noise)) as pool:
                futures = {pool.submit(_worker_clip, j): j for j in todo}
                try:
                    for fut in as_completed(futures):
                        rec = fut.result()
                        out[rec["name"]] = rec
                        bar.update(1)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    return out


def corrupted_root(cache_dir: str | os.PathLike, dataset_id: str, tag: str) -> Path:
    """Where the pipeline keeps the corrupted copy of a dataset condition."""
    return Path(cache_dir) / "corrupted" / dataset_id / tag


def corrupt_manifest(manifest: Any, condition: Condition | str, settings: CorruptionSettings,
                     out_root: str | os.PathLike, *, names: Sequence[str] | None = None,
                     workers: int | None = None, progress: bool = True) -> tuple[Any, CorruptedCopy]:
    """The manifest with ``names`` (default: every sample) pointing at corrupted media in
    ``out_root`` (written where missing); other samples are left as they are."""
    chosen = manifest.samples if names is None else [manifest[n] for n in names]
    copy = corrupt_samples(chosen, condition, settings, out_root, src_root=manifest.root,
                           babble_from=manifest.samples, workers=workers, progress=progress)
    replaced = {s.name: s for s in copy.samples}
    samples = [replaced.get(s.name, s) for s in manifest.samples]
    return Manifest(manifest.dataset, manifest.label_spec, samples, manifest.train_split, str(out_root)), copy
