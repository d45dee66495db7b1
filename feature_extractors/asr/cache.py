"""Transcribing a corpus once: transcripts cached on disk, crash-safe and resumable.

The transcripts of one engine configuration are an artifact entry (:mod:`mer.core.artifacts`) of
kind ``asr`` under ``cache_dir`` (the pipeline passes ``<cache_root>/<dataset>/<condition>/asr``,
so a noisy condition gets its own transcripts)::

    <key8>/meta.json          kind, the engine identity (config, weights digest, decoder versions)
                              whose hash names the folder, a crc; written atomically
    <key8>/transcripts.jsonl  the records: one JSON line per sample (a Transcript, failures
                              included, the content fingerprint of the media file it was made
                              from, a time and a line crc); append-only, later lines win, a torn
                              or damaged line is skipped (that sample is transcribed again)
    <key8>/.lock              held (flock) by the process transcribing into the folder

Each flush appends whole lines with one ``write`` on an ``O_APPEND`` descriptor, then ``fsync``:
a crash loses at most the lines in flight, and the next writer first ends a torn last line with a
newline so it can never glue onto a new record. A sample is *done* when it has a line (a
transcript or a recorded failure) made from the file the sample names now; a run transcribes
only what is not done. A second process that wants the same folder waits for the lock, then finds
the work done. ``python -m mer.cache verify`` checks the lines and ``--repair`` drops bad ones.

Each line records ``media_fingerprint``: the :class:`~mer.core.fingerprints.FingerprintCache`
fingerprint of the file the audio was decoded from (``audio_path``, else ``video_path``), taken
before decoding. It is by content, so a moved or copied dataset folder keeps every transcript,
while a replaced recording (or a missing file that appeared) is transcribed again, and the text
features of that sample, whose recorded input is the transcript's text, follow.

Folders of the layout before artifact entries (``identity.json`` instead of meta.json, lines
without a crc) are adopted, not redone: transcribing a whole corpus again costs hours. The next
run writes their meta.json (the folder's key is the same) and reads their lines as they are. A
line written before fingerprints were recorded is trusted: the current fingerprint is appended for
it once (its files have most likely not changed since); delete ``transcripts.jsonl`` to redo such
transcripts.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm.auto import tqdm

from feature_extractors.asr.base import SAMPLE_RATE_HZ, AsrEngine, Transcript, engine_for
from feature_extractors.asr.merge import DEFAULT_SEPARATOR
from feature_extractors.audio.io import load_audio
from mer.core.artifacts import ArtifactEntry, ArtifactKind, register_kind
from mer.core.failures import MediaError
from mer.core.fingerprints import FingerprintCache
from mer.core.hashing import cache_key
from mer.core.io import read_json_lines
from mer.core.samples import Sample

log = logging.getLogger(__name__)

TRANSCRIPTS_FILE = "transcripts.jsonl"
IDENTITY_FILE = "identity.json"
FINGERPRINT_FIELD = "media_fingerprint"
ASR_KIND = register_kind(ArtifactKind("asr", records=TRANSCRIPTS_FILE, item_field="name",
                                      source_field=FINGERPRINT_FIELD, legacy_identity=IDENTITY_FILE))
_PREFETCH = 2   # clips decoded ahead of the one being transcribed


def transcript_dir(cache_dir: str | os.PathLike, asr: AsrEngine | Any) -> Path:
    """``<cache_dir>/<key8>``: where the transcripts of this engine configuration live."""
    engine = engine_for(asr)
    return Path(cache_dir) / cache_key(engine.identity())[:8]


def read_transcripts(path: str | os.PathLike) -> dict[str, Transcript]:
    """name -> transcript from a ``transcripts.jsonl`` (later lines win; torn and damaged lines
    are skipped)."""
    out: dict[str, Transcript] = {}
    lines, _ = read_json_lines(path)
    for d in lines:
        try:
            t = Transcript.from_json(d)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        out[t.name] = t
    return out


def _read_records(entry: ArtifactEntry) -> dict[str, tuple[Transcript, str | None]]:
    """name -> (transcript, fingerprint of the media it was made from; None on old lines)."""
    out: dict[str, tuple[Transcript, str | None]] = {}
    skipped = 0
    for name, d in entry.records().items():
        try:
            t = Transcript.from_json(d)
        except (ValueError, TypeError, KeyError, AttributeError):
            skipped += 1
            continue
        fp = d.get(FINGERPRINT_FIELD)
        out[name] = (t, fp if isinstance(fp, str) else None)
    skipped += entry.damaged_lines
    if skipped:
        log.info("%s: skipped %d damaged line(s); those samples are transcribed again", entry.records_path, skipped)
    return out


def _record(entry: ArtifactEntry, t: Transcript, fingerprint: str | None) -> dict[str, Any]:
    """A transcripts.jsonl line: the transcript, its media fingerprint, and a failed one's reason
    as the artifact failure that ``python -m mer.cache list`` counts."""
    fields = t.to_json()
    if not t.ok:
        fields["failure"] = {"reason": t.failure_reason, "message": t.failure_message}
    return entry.record(t.name, fingerprint, **{k: v for k, v in fields.items() if k != "name"})


def _decode(sample: Sample) -> Any:
    """The sample's 16 kHz mono waveform ``[N]``, or a failed :class:`Transcript` saying why not."""
    try:
        return load_audio(sample, SAMPLE_RATE_HZ)
    except MediaError as err:
        return Transcript.failed(sample.name, err.reason, err.message)
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the corpus
        return Transcript.failed(sample.name, "decode_error",
                                 f"could not decode the audio of {sample.name}: {type(err).__name__}: {err}")


def _decoded_in_order(samples: Sequence[Sample]) -> Iterator[tuple[Sample, Any]]:
    """``(sample, waveform or failed Transcript)`` in order; decoding runs ahead in a thread
    (PyAV and CTranslate2 release the GIL, so decoding overlaps transcription)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-decode") as pool:
        pending: list[tuple[Sample, Future]] = []
        it = iter(samples)
        for s in it:
            pending.append((s, pool.submit(_decode, s)))
            if len(pending) > _PREFETCH:
                break
        while pending:
            sample, fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_decode, nxt)))
            yield sample, fut.result()


def media_fingerprint(sample: Sample, fingerprints: FingerprintCache) -> str:
    """The content fingerprint of the file a sample's audio is decoded from (``none`` without one)."""
    return fingerprints.file(sample.audio_path or sample.video_path)


def transcribe_samples(samples: Sequence[Sample], asr: AsrEngine | Any, cache_dir: str | os.PathLike | None,
                       progress: bool = True, *, flush_every: int = 16, retry_failures: bool = False,
                       lock_timeout_s: float | None = None,
                       fingerprints: FingerprintCache | None = None) -> dict[str, Transcript]:
    """name -> :class:`Transcript` for every sample, transcribing only those not cached yet (or
    cached from a media file whose content has changed since).

    ``asr`` is an engine (``build_asr("whisper", options)``) or an engine config
    (``WhisperConfig(...)``). ``cache_dir=None`` transcribes everything and stores nothing.
    Samples whose audio cannot be read are returned (and stored) as failed transcripts with
    their reason; nothing is raised for them. ``retry_failures`` redoes stored failures.
    ``fingerprints`` remembers file fingerprints by stat (the pipeline passes its dataset's
    shared one); by default they are kept in ``<cache_dir>/.fingerprints.jsonl``.
    """
    engine = engine_for(asr)
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        raise ValueError("transcribe_samples got duplicate sample names")
    if cache_dir is None:
        results = _run(engine, list(samples), None, progress, flush_every)
        return {n: results[n] for n in names}
    entry = ArtifactEntry(Path(cache_dir) / cache_key(engine.identity())[:8], ASR_KIND, engine.identity())
    entry.ensure_meta()               # also adopts a folder of the older layout
    entry.mark_used()
    if fingerprints is None:
        fingerprints = FingerprintCache(Path(cache_dir) / ".fingerprints.jsonl")
    current = {s.name: media_fingerprint(s, fingerprints) for s in samples}
    fingerprints.save()

    def plan(have: dict[str, tuple[Transcript, str | None]]) -> tuple[list[Sample], list[Sample], list[Sample]]:
        """(to transcribe, of those the ones whose media changed, old lines to adopt)."""
        todo, changed, adopt = [], [], []
        for s in samples:
            record = have.get(s.name)
            if record is None or (retry_failures and not record[0].ok):
                todo.append(s)
            elif record[1] is None:
                adopt.append(s)
            elif record[1] != current[s.name]:
                todo.append(s)
                changed.append(s)
        return todo, changed, adopt

    have = _read_records(entry)
    if any(plan(have)):
        with entry.lock(lock_timeout_s):
            have = _read_records(entry)   # another process may have done them while we waited
            todo, changed, adopt = plan(have)
            if changed:
                log.info("ASR: transcribing %d clips again whose media file changed since they were "
                         "transcribed (e.g. %s)", len(changed), changed[0].name)
            entry.append([_record(entry, have[s.name][0], current[s.name]) for s in adopt])
            done = _run(engine, todo, entry, progress, flush_every, current)
            have.update({n: (t, current[n]) for n, t in done.items()})
    return {n: have[n][0] for n in names}


def _run(engine: AsrEngine, todo: list[Sample], writer: ArtifactEntry | None, progress: bool,
         flush_every: int, fingerprints: dict[str, str] | None = None) -> dict[str, Transcript]:
    """Transcribe ``todo``; with a ``writer`` (the entry, locked), append each result with its
    media fingerprint (``fingerprints``, taken before decoding: a file replaced meanwhile is
    redone next run)."""
    if not todo:
        return {}
    if not engine._ready:
        engine.setup()
    done: dict[str, Transcript] = {}
    buffer: list[dict[str, Any]] = []
    audio_s = busy_s = 0.0
    bar = tqdm(total=len(todo), desc=f"asr:{engine.name}", unit="clip", disable=not progress,
               dynamic_ncols=True, leave=False)
    try:
        for sample, decoded in _decoded_in_order(todo):
            if isinstance(decoded, Transcript):
                result = decoded
            else:
                t0 = time.perf_counter()
                try:
                    result = engine.transcribe(sample.name, decoded)
                except Exception as err:  # noqa: BLE001 - record it, keep going
                    result = Transcript.failed(sample.name, "asr_error",
                                               f"{engine.name} failed on {sample.name}: {type(err).__name__}: {err}")
                busy_s += time.perf_counter() - t0
                audio_s += decoded.size / SAMPLE_RATE_HZ
            done[sample.name] = result
            if writer is not None:
                buffer.append(_record(writer, result, fingerprints[sample.name]))
            bar.update(1)
            if writer is not None and len(buffer) >= flush_every:
                writer.append(buffer)
                buffer = []
    finally:
        # Interrupted or not, what was transcribed is kept.
        if writer is not None:
            writer.append(buffer)
        bar.close()
    failed = [t for t in done.values() if not t.ok]
    if failed:
        reasons = ", ".join(f"{r} {n}" for r, n in Counter(t.failure_reason for t in failed).most_common())
        log.warning("ASR: %d of %d clips have no transcript (%s), e.g. %s%s", len(failed), len(todo), reasons,
                    failed[0].failure_message,
                    f"; all are recorded in {writer.records_path}" if writer is not None else "")
    if audio_s:
        log.info("ASR (%s): %d clips, %.1f s of audio in %.1f s (real-time factor %.3f)", engine.name,
                 len(todo), audio_s, busy_s, busy_s / audio_s)
    return done


def asr_tag(asr: AsrEngine | Any, policy: str, separator: str = DEFAULT_SEPARATOR) -> str:
    """A short, stable name for "these transcripts, merged this way": ``asr-<policy>-<hash8>``.

    Text features computed from ASR-merged samples must not share a cache entry with features of
    the provided transcripts (the text extractors' keys do not see where the text came from):
    append this tag to the text streams' cache condition (``clean`` -> ``clean+asr-both-1a2b3c4d``).
    """
    engine = engine_for(asr)
    merge = {"policy": policy, "separator": separator if policy == "both" else None}
    return f"asr-{policy}-{cache_key({'engine': engine.identity(), 'merge': merge})[:8]}"
