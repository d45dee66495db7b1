"""Filling a cache entry: extract only what is missing, flush often, never let one sample stop a batch."""
from __future__ import annotations

import logging
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from feature_extractors.base import ExtractionFailure, Extractor
from mer.data.manifest import Sample

from .store import CacheEntry, Failure

log = logging.getLogger(__name__)


@dataclass
class FillReport:
    entry: str
    requested: int
    cached: int = 0
    extracted: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


def _check(sample: Sample, result, level: str) -> np.ndarray | Failure:
    if isinstance(result, ExtractionFailure):
        return Failure(sample.name, result.reason, result.message)
    arr = np.asarray(result, dtype=np.float32)
    want_ndim = 1 if level == "utterance" else 2
    if arr.ndim != want_ndim or arr.shape[-1] == 0:
        return Failure(sample.name, "bad_shape", f"extractor returned shape {arr.shape} for {sample.name}")
    if not np.isfinite(arr).all():
        return Failure(sample.name, "non_finite", f"extractor returned NaN/inf features for {sample.name}")
    return arr


def _extract_isolated(extractor: Extractor, batch: Sequence[Sample]) -> list:
    """Run a batch; if the extractor raises, redo it one sample at a time so only the culprit fails."""
    try:
        results = extractor.extract_batch(batch)
        if len(results) != len(batch):
            raise RuntimeError(f"{extractor.name} returned {len(results)} results for {len(batch)} samples")
        return list(results)
    except Exception:
        if len(batch) == 1:
            tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
            return [ExtractionFailure(batch[0].name, "extractor_error",
                                      f"{extractor.name} raised on {batch[0].name}: {tb}")]
        return [r for s in batch for r in _extract_isolated(extractor, [s])]


def fill_entry(entry: CacheEntry, extractor: Extractor, samples: Sequence[Sample], *, device: str = "cpu",
               progress: bool = True, flush_every: int = 256, desc: str | None = None) -> FillReport:
    """Make sure every sample of ``samples`` is done in ``entry`` (a feature or a recorded failure)."""
    report = FillReport(entry=str(entry.path), requested=len(samples))
    done = entry.done_names()
    if all(s.name in done for s in samples):
        report.cached = len(samples)
        if entry._parts():
            with entry.lock():
                entry.consolidate()
        return report
    with entry.lock():
        done = entry.done_names()  # another process may have filled it while we waited
        todo = [s for s in samples if s.name not in done]
        report.cached = len(samples) - len(todo)
        if todo:
            if not getattr(extractor, "_ready", False):
                extractor.setup(device)
            bs = max(1, int(getattr(extractor.config, "batch_size", 16)))
            names: list[str] = []
            arrays: list[np.ndarray] = []
            fails: list[Failure] = []
            bar = tqdm(total=len(todo), desc=desc or extractor.name, unit="clip", disable=not progress,
                       dynamic_ncols=True, leave=False)
            try:
                for i in range(0, len(todo), bs):
                    batch = todo[i:i + bs]
                    for s, r in zip(batch, _extract_isolated(extractor, batch)):
                        checked = _check(s, r, entry.level)
                        if isinstance(checked, Failure):
                            fails.append(checked)
                        else:
                            names.append(s.name)
                            arrays.append(checked)
                    bar.update(len(batch))
                    if len(names) + len(fails) >= flush_every:
                        entry.write_part(names, arrays)
                        entry.record_failures(fails)
                        report.extracted += len(names)
                        report.failures += fails
                        names, arrays, fails = [], [], []
                entry.write_part(names, arrays)
                entry.record_failures(fails)
                report.extracted += len(names)
                report.failures += fails
            finally:
                bar.close()
        entry.consolidate()
    if report.failures:
        by_reason = Counter(f.reason for f in report.failures)
        reasons = ", ".join(f"{r} {n}" for r, n in by_reason.most_common())
        log.warning("%s: %d of %d samples have no feature (%s), e.g. %s; all are listed in %s",
                    extractor.name, report.failed, len(samples), reasons, report.failures[0].message,
                    entry.path / "failures.jsonl")
    return report
