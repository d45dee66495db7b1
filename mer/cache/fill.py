"""Filling a cache entry: extract only what is missing, write every batch at once, never let one
sample stop the run.

The two stages of an extractor meet here. ``load`` (decoding) runs either in this process or, with
``workers > 0``, in a supervised :class:`~mer.cache.workers.DecodePool` (timeouts, memory cap,
crash isolation) whose supervisor keeps decoding while this thread runs ``forward`` on the batch
before: decode and inference overlap. Every forward batch is written as one atomic part with its
failures, so a kill loses only the samples in flight. Extractors that only implement
``extract_batch`` (one stage) run in this process, batch by batch.

What is done is decided per sample against what it is made from: every stored row carries the
fingerprint of the inputs its extractor read (:mod:`mer.core.fingerprints`), and a sample whose current
fingerprint differs (an edited transcript, a replaced video) is extracted again, its old row
superseded; a stored row that fails its check (:meth:`CacheEntry.fill_state`) is redone too.

A fill stops early, with a message that says where the failures are listed, when more than
``max_failure_fraction`` of the samples processed so far failed (after ``min_samples_for_abort``):
a wrong path or a missing codec should not grind through 100,000 clips. What was done is kept.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from feature_extractors.base import ExtractContext, Extractor, load_or_failure
from mer.core.failures import ExtractionFailure
from mer.core.fingerprints import FingerprintCache, fingerprints
from mer.core.samples import Sample
from mer.core.timebase import times_of, valid_times, with_times

from .store import CacheEntry, Failure
from .workers import DecodePool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FillOptions:
    """How a fill runs (never what it computes: none of this is in the cache key)."""

    workers: int = 0                 # decoding processes; 0 decodes in this process
    timeout_s: float | None = 120.0  # per-sample decoding limit (workers only)
    memory_mb: int | None = 4096     # per-worker memory cap above its start-up size (workers only)
    prefetch: int = 2                # samples queued per worker
    max_failure_fraction: float = 1.0
    min_samples_for_abort: int = 20
    consolidate: bool = True         # fold parts into the memory-mapped generation at the end
    flush_interval_s: float = 0.5    # write finished batches at most this often (one fsync'd part
                                     # each); a kill loses at most this much finished work
    shard: tuple[int, int] | None = None   # (index, count): only names whose stable hash % count == index


class TooManyFailures(RuntimeError):
    """More than ``max_failure_fraction`` of the processed samples failed; the run stopped."""


@dataclass
class FillReport:
    entry: str
    requested: int
    cached: int = 0
    extracted: int = 0
    stale: int = 0                          # re-extracted: their inputs changed since they were cached
    corrupt: int = 0                        # re-extracted: their stored feature failed its check
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    startup_s: float | None = None          # decoding workers: from start until the first clip arrived
    pool: dict[str, int] | None = None

    @property
    def failed(self) -> int:
        return len(self.failures)


def shard_of(name: str, count: int) -> int:
    """Stable shard of a sample name (crc32: the same in every process and on every machine)."""
    return zlib.crc32(name.encode("utf-8")) % count


def _as_failure(sample: Sample, f: ExtractionFailure) -> Failure:
    """The recorded failure; its message always names the sample (a reader greps failures.jsonl
    by sample, and media errors often name only the file)."""
    message = f.message if sample.name in f.message else f"{sample.name}: {f.message}"
    return Failure(sample.name, f.reason, message)


def _check(sample: Sample, result, level: str) -> np.ndarray | Failure:
    """The result as float32 (frame level: with its row times, :mod:`mer.core.timebase`, when it
    carries valid ones), or the failure it is."""
    if isinstance(result, ExtractionFailure):
        return _as_failure(sample, result)
    times = times_of(result) if level == "frame" else None
    try:
        arr = np.asarray(result, dtype=np.float32)
    except (TypeError, ValueError) as err:
        return Failure(sample.name, "bad_shape", f"extractor returned a non-array for {sample.name}: {err}")
    want_ndim = 1 if level == "utterance" else 2
    if arr.ndim != want_ndim or arr.shape[-1] == 0 or (arr.ndim == 2 and arr.shape[0] == 0):
        return Failure(sample.name, "bad_shape", f"extractor returned shape {arr.shape} for {sample.name}")
    if not np.isfinite(arr).all():
        return Failure(sample.name, "non_finite", f"extractor returned NaN/inf features for {sample.name}")
    return with_times(arr, valid_times(times, len(arr))) if times is not None else arr


def _error_line() -> str:
    return traceback.format_exc(limit=3).strip().splitlines()[-1]


def _extract_isolated(extractor: Extractor, batch: Sequence[Sample]) -> list:
    """One-stage extractors: run a batch; if it raises, redo it one sample at a time so only the
    culprit fails."""
    try:
        results = extractor.extract_batch(batch)
        if len(results) != len(batch):
            raise RuntimeError(f"{extractor.name} returned {len(results)} results for {len(batch)} samples")
        return list(results)
    except Exception:
        if len(batch) == 1:
            return [ExtractionFailure(batch[0].name, "extractor_error",
                                      f"{extractor.name} raised on {batch[0].name}: {_error_line()}")]
        return [r for s in batch for r in _extract_isolated(extractor, [s])]


def _forward_isolated(extractor: Extractor, samples: Sequence[Sample], inputs: Sequence[Any]) -> list:
    """Two-stage extractors: a batched forward; if it raises, one sample at a time."""
    try:
        results = extractor.forward(samples, inputs)
        if len(results) != len(samples):
            raise RuntimeError(f"{extractor.name}.forward returned {len(results)} results for {len(samples)} samples")
        return list(results)
    except Exception:
        if len(samples) == 1:
            return [ExtractionFailure(samples[0].name, "extractor_error",
                                      f"{extractor.name} raised on {samples[0].name}: {_error_line()}")]
        return [r for s, x in zip(samples, inputs) for r in _forward_isolated(extractor, [s], [x])]


def is_two_stage(extractor: Extractor) -> bool:
    return type(extractor).forward is not Extractor.forward


def context_for(entry: CacheEntry) -> ExtractContext:
    """``<root>/<dataset>/<condition>/<entry>``: shared caches go beside the entries."""
    p = Path(entry.path)
    return ExtractContext(cache_root=str(p.parent.parent.parent), dataset=p.parent.parent.name,
                          condition=p.parent.name)


def _decoded(extractor: Extractor, todo: Sequence[Sample], opts: FillOptions, report: FillReport
             ) -> Iterator[tuple[Sample, Any]]:
    # One sample left still goes to a worker: it may be the one whose decoder crashes the process.
    if opts.workers > 0 and todo:
        t0 = time.perf_counter()
        with DecodePool(extractor, opts.workers, timeout_s=opts.timeout_s, memory_mb=opts.memory_mb,
                        prefetch=opts.prefetch) as pool:
            for item in pool.imap(todo):
                if report.startup_s is None:
                    report.startup_s = time.perf_counter() - t0
                yield item
            report.pool = vars(pool.stats).copy()
    else:
        for s in todo:
            yield s, load_or_failure(extractor, s)


def fill_entry(entry: CacheEntry, extractor: Extractor, samples: Sequence[Sample], *, device: str = "cpu",
               progress: bool = True, desc: str | None = None, options: FillOptions | None = None,
               **overrides: Any) -> FillReport:
    """Make sure every sample of ``samples`` (of this shard) is done in ``entry``: a feature or a
    recorded failure. ``overrides`` are :class:`FillOptions` fields (``workers=2``)."""
    opts = options or FillOptions()
    if overrides:
        opts = dataclasses.replace(opts, **overrides)
    t0 = time.perf_counter()
    if opts.shard is not None:
        index, count = opts.shard
        samples = [s for s in samples if shard_of(s.name, count) == index]
    report = FillReport(entry=str(entry.path), requested=len(samples))
    entry.mark_used()
    current = fingerprints(extractor, samples, FingerprintCache(fingerprint_cache_path(entry)))
    done, rejected = entry.fill_state()
    # A feature (or failure) recorded from other inputs is stale; an unknown record (None: an
    # entry written before inputs were recorded) is kept.
    stale = [s for s in samples if done.get(s.name) not in (None, current[s.name])]
    todo = [s for s in samples if s.name not in done or done[s.name] not in (None, current[s.name])]
    report.cached = len(samples) - len(todo)
    report.stale = len(stale)
    report.corrupt = sum(s.name in rejected for s in samples)
    if stale or report.corrupt:
        log.warning("%s: re-extracting %d samples whose inputs changed since they were cached%s and %d whose "
                    "stored feature failed its check", extractor.name, len(stale),
                    f" (e.g. {stale[0].name})" if stale else "", report.corrupt)
    if todo:
        if extractor.context.cache_root is None:
            extractor.context = context_for(entry)
        _run(entry, extractor, todo, device, progress, desc, opts, report, current)
    if opts.consolidate and entry._parts():
        with entry.lock():
            entry.consolidate()
    report.seconds = time.perf_counter() - t0
    if report.failures:
        by_reason = Counter(f.reason for f in report.failures)
        reasons = ", ".join(f"{r} {n}" for r, n in by_reason.most_common())
        log.warning("%s: %d of %d samples have no feature (%s), e.g. %s; all are listed in %s",
                    extractor.name, report.failed, len(samples), reasons, report.failures[0].message,
                    entry.path / "failures.jsonl")
    return report


def fingerprint_cache_path(entry: CacheEntry) -> Path:
    """``<root>/<dataset>/.fingerprints.jsonl``: file fingerprints shared by a dataset's entries."""
    return Path(entry.path).parent.parent / ".fingerprints.jsonl"


def _run(entry: CacheEntry, extractor: Extractor, todo: list[Sample], device: str, progress: bool,
         desc: str | None, opts: FillOptions, report: FillReport, inputs: dict[str, str]) -> None:
    bs = max(1, int(getattr(extractor.config, "batch_size", 16)))
    bar = tqdm(total=len(todo), desc=desc or extractor.name, unit="clip", disable=not progress,
               dynamic_ncols=True, leave=False)
    processed = 0

    def flush(names: list[str], arrays: list[np.ndarray], fails: list[Failure]) -> None:
        nonlocal processed
        if names or fails:
            with entry.lock():
                times = [times_of(a) for a in arrays]
                # untimed rows write as before (an entry class that predates times takes no ``times``)
                entry.write_part(names, arrays, inputs, **({"times": times} if any(t is not None for t in times) else {}))
                entry.record_failures(fails, inputs)
        report.extracted += len(names)
        report.failures += fails
        processed += len(names) + len(fails)
        bar.update(len(names) + len(fails))
        if (processed >= opts.min_samples_for_abort and opts.max_failure_fraction < 1.0
                and len(report.failures) > opts.max_failure_fraction * processed):
            raise TooManyFailures(
                f"{extractor.name}: {len(report.failures)} of the {processed} samples processed so far failed "
                f"(more than extract.max_failure_fraction={opts.max_failure_fraction:g}); stopping. Reasons: "
                + ", ".join(f"{r} {n}" for r, n in Counter(f.reason for f in report.failures).most_common())
                + f". Every failure is listed in {entry.path / 'failures.jsonl'}; the "
                f"{report.extracted} features done are kept.")

    def finish(batch_samples: list[Sample], results: list) -> tuple[list[str], list[np.ndarray], list[Failure]]:
        names, arrays, fails = [], [], []
        for s, r in zip(batch_samples, results):
            checked = _check(s, r, extractor.level)
            if isinstance(checked, Failure):
                fails.append(checked)
            else:
                names.append(s.name)
                arrays.append(checked)
        return names, arrays, fails

    try:
        if not is_two_stage(extractor):
            if not getattr(extractor, "_ready", False):
                extractor.setup(device)
            for i in range(0, len(todo), bs):
                batch = todo[i:i + bs]
                flush(*finish(batch, _extract_isolated(extractor, batch)))   # one-stage: per batch
            return
        pending_s: list[Sample] = []
        pending_x: list[Any] = []
        done: tuple[list[str], list[np.ndarray], list[Failure]] = ([], [], [])
        last_flush = time.monotonic()

        def keep(names, arrays, fails) -> None:
            done[0].extend(names)
            done[1].extend(arrays)
            done[2].extend(fails)

        for sample, item in _decoded(extractor, todo, opts, report):
            if isinstance(item, ExtractionFailure):
                keep([], [], [_as_failure(sample, item)])
            else:
                pending_s.append(sample)
                pending_x.append(item)
            if len(pending_s) >= bs:
                keep(*_forward_batch(extractor, device, pending_s, pending_x, finish))
                pending_s, pending_x = [], []
            if (done[0] or done[2]) and (time.monotonic() - last_flush >= opts.flush_interval_s
                                         or len(done[0]) + len(done[2]) >= 4096):
                flush(*done)
                done = ([], [], [])
                last_flush = time.monotonic()
        keep(*_forward_batch(extractor, device, pending_s, pending_x, finish))
        flush(*done)
    finally:
        bar.close()


def _forward_batch(extractor: Extractor, device: str, samples: list[Sample], inputs: list[Any], finish):
    if not samples:
        return [], [], []
    if not getattr(extractor, "_ready", False):
        extractor.setup(device)
    return finish(samples, _forward_isolated(extractor, samples, inputs))
