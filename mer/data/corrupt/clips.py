"""One clip: its corruption job, the worker that writes its corrupted media, and its sidecar
(``<clip>.corruption.json``, written last: a clip is done once its sidecar is recorded).

A corrupted copy is an artifact entry (:mod:`mer.core.artifacts`) of kind ``corrupted`` whose
folder is the copy itself (``owns_folder=False``: its labels and media are never touched by
``python -m mer.cache verify --repair``): ``meta.json`` holds the corruption settings, and
``corruption.jsonl`` records each clip's sidecar with its sha256, the fingerprint of the source
media it was made from, and the fingerprints of the corrupted media it wrote. A clip whose
sidecar or corrupted media are damaged or missing, or whose source media changed, is corrupted
again. Copies made before these records (sidecars alone) are adopted: a sidecar of the same
settings without a record gets one, once.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from feature_extractors.audio.io import load_audio
from mer.core.artifacts import ArtifactEntry, ArtifactKind, register_kind
from mer.core.failures import MediaError
from mer.core.fingerprints import FingerprintCache, sample_fingerprint
from mer.core.hashing import cache_key
from mer.core.io import atomic_file

from .audio import NoiseSource, _write_wav, mix_at_snr
from .conditions import SAMPLE_RATE_HZ, Condition, CorruptionSettings, draw_levels
from .video import _CONTAINER_FORMATS, write_corrupted_container

SIDECAR_SUFFIX = ".corruption.json"
CORRUPTED_KIND = register_kind(ArtifactKind("corrupted", records="corruption.jsonl", owns_folder=False))


@dataclass(frozen=True)
class ClipJob:
    """One clip to corrupt: where its media are and where the corrupted copies go."""

    name: str
    split: str
    video_src: str | None
    audio_src: str | None
    video_dst: str | None
    audio_dst: str | None
    sidecar: str
    root: str = ""                # the copy's folder: its artifact entry


def corrupt_clip(job: ClipJob, condition: Condition, settings: CorruptionSettings, noise: NoiseSource
                 ) -> dict[str, Any]:
    """Write the corrupted media of one clip and its sidecar (last); returns the sidecar record."""
    snr_db, blur = draw_levels(settings, condition, job.name)
    record: dict[str, Any] = {"name": job.name, "split": job.split, **settings.identity(condition),
                              "snr_db": snr_db, "blur_factor": blur, "noise": [], "note": ""}
    Path(job.sidecar).parent.mkdir(parents=True, exist_ok=True)
    noisy = None
    try:
        if snr_db is not None:
            try:
                clean = load_audio(job.audio_src or job.video_src, SAMPLE_RATE_HZ)
            except MediaError as err:
                record["note"] = f"audio left as is: {err.reason}"
                record["snr_db"] = None
            else:
                wave, used = noise.noise_for(job.name, clean.size, settings.seed)
                noisy = mix_at_snr(clean, wave, snr_db)
                record["noise"] = used
        if job.video_src and job.video_dst:
            if not (job.video_src.lower().endswith(tuple(_CONTAINER_FORMATS))):
                record["note"] += " (unknown container: written as mp4)"
            with atomic_file(job.video_dst) as f:
                # A clip with its own audio file: its video's soundtrack gets the same noisy audio.
                write_corrupted_container(job.video_src, f, noisy, blur, container=_CONTAINER_FORMATS.get(
                    Path(job.video_dst).suffix.lower(), "mp4"))
        if job.audio_src and job.audio_dst:
            with atomic_file(job.audio_dst) as f:
                if noisy is not None:
                    _write_wav(f, noisy)
                else:
                    with open(job.audio_src, "rb") as clean_file:
                        shutil.copyfileobj(clean_file, f)
    except Exception as err:  # noqa: BLE001 - one broken clip is recorded, the rest go on
        record["error"] = f"{type(err).__name__}: {err}"
    record["note"] = record["note"].strip()
    write_sidecar(job, record, settings.identity(condition))
    return record


# Worker processes get the (possibly large) noise source once, not with every clip.
_WORKER: dict[str, Any] = {}


def _worker_init(condition: Condition, settings: CorruptionSettings, noise: NoiseSource) -> None:
    import cv2  # heavy, and only worker processes need it

    cv2.setNumThreads(1)  # the pool is the parallelism
    _WORKER.update(condition=condition, settings=settings, noise=noise)


def _worker_clip(job: ClipJob) -> dict[str, Any]:
    return corrupt_clip(job, _WORKER["condition"], _WORKER["settings"], _WORKER["noise"])


_ENTRIES: dict[tuple[str, str], ArtifactEntry] = {}


def copy_entry(root: str | os.PathLike, identity: Mapping[str, Any]) -> ArtifactEntry:
    """The artifact entry of the corrupted copy at ``root`` (one object per copy and process).
    File fingerprints are remembered by stat in ``<root>/.fingerprints.jsonl``, so a rerun on
    an unchanged copy only stats its media."""
    key = (str(root), cache_key(dict(identity)))
    entry = _ENTRIES.get(key)
    if entry is None:
        entry = _ENTRIES[key] = ArtifactEntry(root, CORRUPTED_KIND, dict(identity))
        entry.fingerprints = FingerprintCache(Path(root) / ".fingerprints.jsonl")
    return entry


def _source(job: ClipJob, prints: FingerprintCache) -> str:
    return sample_fingerprint({}, {"video": job.video_src, "audio": job.audio_src}, prints)


def _outputs(job: ClipJob, prints: FingerprintCache) -> dict[str, str]:
    return {os.path.relpath(p, job.root): prints.file(p) for p in (job.video_dst, job.audio_dst) if p}


def write_sidecar(job: ClipJob, record: Mapping[str, Any], identity: Mapping[str, Any],
                  data: bytes | None = None) -> None:
    """Write a clip's sidecar and record it (with its source and its corrupted media)."""
    entry = copy_entry(job.root, identity)
    prints = entry.fingerprints
    failed = "error" in record
    entry.write(job.name, data if data is not None else json.dumps(record, ensure_ascii=False, indent=1).encode(),
                _source(job, prints), relpath=os.path.relpath(job.sidecar, job.root),
                outputs=None if failed else _outputs(job, prints),
                **({"failure": {"reason": "corruption_error", "message": record["error"]}} if failed else {}))
    prints.save()


def read_sidecar(job: ClipJob, identity: Mapping[str, Any]) -> dict[str, Any] | None:
    """The clip's sidecar when the clip is done with these settings, made from the source media
    the job names now, and its sidecar and corrupted media are whole; else None (redo it)."""
    entry = copy_entry(job.root, identity)
    item = entry.read(job.name, _source(job, entry.fingerprints))
    if item is not None:
        try:
            rec = json.loads(item.data)
        except ValueError:
            return None
        return rec if _same(rec, identity) else None
    if job.name in entry.records():
        return None                         # recorded, but stale or damaged
    rec = _read_sidecar(job.sidecar, identity)   # a copy made before the records: adopt it once
    if rec is None or any(p and not os.path.isfile(p) for p in (job.video_dst, job.audio_dst)):
        return None
    write_sidecar(job, rec, identity, Path(job.sidecar).read_bytes())
    return rec


def _same(rec: Mapping[str, Any], identity: Mapping[str, Any]) -> bool:
    # A sidecar's "noise" lists the files its clip drew, shadowing the settings' noise source,
    # which the copy's settings file (checked for the whole copy) and meta.json hold.
    return all(rec.get(k) == v for k, v in identity.items() if k != "noise")


def _read_sidecar(path: str, identity: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and _same(rec, identity) else None
