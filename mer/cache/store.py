"""The feature cache: one entry per (dataset, condition, extractor variant), crash-safe.

Layout of an entry ``<root>/<dataset>/<condition>/<extractor>-<hash8>/``::

    meta.json              identity (full config, version, weights/state digests), dim, level,
                           the current consolidated generation, a crc of itself; replaced
                           atomically; rebuilt from the newest complete generation when damaged
    parts/part-*.npz       features of one flushed batch (names, data, offsets, per-row input
                           fingerprints and crc32); each written atomically (temp file, fsync,
                           rename), so a crash loses at most the batch in flight
    index.jsonl            append-only: one line per part (file, sha256, names, inputs, line crc);
                           a torn or damaged line is ignored, and a part without one is read directly
    gen-<n>/features.npy   consolidated features (utterance: [N, D]; frame: [sum T, D]) for
    gen-<n>/names.json     memory-mapped loading, plus offsets.npy at frame level; meta.json
                           holds their sha256 (checked by ``python -m mer.cache verify``)
    gen-<n>/rows.json      per row: the input fingerprint and the crc32 of name + bytes (checked on
                           every load), and the identity (written last: a generation is complete
                           once it exists)
    gen-<n>/times.npy      frame level, when an extractor reported them: float64 [sum T], each
                           row's time in seconds (:mod:`mer.core.timebase`; NaN: unknown), with a
                           crc32 per sample in rows.json (``times_crc32``); parts hold the same
                           as ``times``/``times_crc``. Entries written before have no times: their
                           rows load with unknown times (alignment by share of length), not re-extracted
    failures.jsonl         one line per sample that produced no feature (reason, message, input
                           fingerprint, time, line crc); append-only, torn lines are ignored
    .lock                  flock held while writing (a part, failures, consolidation); several
                           processes may fill one entry at once (shards of one job)

A sample is *done* when it has a feature or a recorded failure; a fill only extracts the samples
that are not done, so an interrupted fill resumes where it stopped. Per name the newest record
wins (a part over the generation; the later of a part and a failure), so a re-extraction
supersedes the old row. A fill also redoes samples whose recorded input fingerprint differs from
the current one (:mod:`mer.core.fingerprints`), and every row read (fill, load, consolidation) is
checked: one that fails its crc32 or holds NaN/inf is dropped and recorded as a ``cache_corrupt``
failure, which the next fill extracts again.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mer.core.hashing import cache_key, sha256_file
from mer.core.io import (
    FolderLock,
    append_json_lines,
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    line_ok,
    read_json_lines,
    with_crc,
)
from mer.core.timebase import valid_times

log = logging.getLogger(__name__)


def entry_dirname(identity: Mapping[str, Any]) -> str:
    return f"{identity['extractor']}-{cache_key(identity)[:8]}"


FORMAT = 2
"""Entry format: 2 records each row's input fingerprint and checksum (``rows.json``, part
``inputs``/``crc``), line checksums in index.jsonl and failures.jsonl, and record times; entries of
format 1 stay readable (their rows are trusted as they are, their inputs are unknown)."""

RETRY_REASONS = frozenset({"cache_corrupt"})
"""Recorded failures that are not final: the next fill extracts these samples again."""


@dataclass(frozen=True)
class Failure:
    name: str
    reason: str
    message: str
    inputs: str | None = None      # fingerprint of the inputs the failure was seen on


def times_digest(name: str, times: np.ndarray) -> int:
    """crc32 over a sample's name and its row times (float64)."""
    return zlib.crc32(np.ascontiguousarray(times, dtype="<f8"), zlib.crc32(name.encode("utf-8", "surrogatepass")))


def row_digest(name: str, row: np.ndarray) -> int:
    """crc32 over a sample's name and its feature bytes: catches flipped bytes and rows that
    were moved to another name (a swapped names.json), at about 3 GB/s."""
    return zlib.crc32(np.ascontiguousarray(row, dtype=np.float32), zlib.crc32(name.encode("utf-8", "surrogatepass")))


class _Block:
    """Rows of one consolidated generation or one part: names, data, offsets (frame level),
    per-row input fingerprints and checksums; ``error`` when it cannot be read at all."""

    def __init__(self, label: str, time_ns: int, names: list[str], data=None, offsets=None, inputs=None,
                 crc=None, error: str | None = None, times=None, times_crc=None) -> None:
        self.label, self.time_ns, self.names = label, time_ns, names
        self.data, self.offsets, self.inputs, self.crc, self.error = data, offsets, inputs, crc, error
        self.times, self.times_crc = times, times_crc     # frame level: [sum T] float64 (NaN: unknown)
        self.stamp_dir: Path | None = None      # a generation: where its verification stamp lives
        self.trusted = False                    # every row checked since its files last changed

    def row(self, i: int) -> np.ndarray:
        return _row(self.data, self.offsets, i)

    def row_times(self, i: int) -> np.ndarray | None:
        """Row ``i``'s times ``[T_i]`` (seconds), or None when unknown or damaged (its values
        still load: damaged times only lose the time base)."""
        if self.times is None or self.offsets is None:
            return None
        t = np.asarray(self.times[self.offsets[i]:self.offsets[i + 1]], dtype=np.float64)
        if not len(t) or np.isnan(t).any():
            return None
        if self.times_crc is not None and not self.trusted:
            want = self.times_crc[i]
            if want is None or int(want) < 0 or times_digest(self.names[i], t) != int(want):
                log.warning("%s: the row times of %s do not match their checksum; they are read as unknown",
                            self.label, self.names[i])
                return None
        return valid_times(t, len(t))

    def crc_list(self) -> list[int]:
        if getattr(self, "_crc_list", None) is None:
            self._crc_list = self.crc.tolist()
        return self._crc_list

    def bad_rows(self, idx: Sequence[int]) -> dict[int, str]:
        """Rows among ``idx`` that must not be used, with why (checked in chunks: a warm fill
        checks 100,000 x 1,024 float32 rows in well under a second)."""
        if self.error:
            return {i: self.error for i in idx}
        out: dict[int, str] = {}
        if self.offsets is not None:
            for i in idx:
                why = self.check(i)
                if why:
                    out[i] = why
            return out
        if self.trusted:
            return out                               # every row passed since the files last changed
        crc = self.crc_list() if self.crc is not None else None
        order = np.sort(np.asarray(idx, dtype=np.int64))
        for start in range(0, len(order), 8192):
            sel = order[start:start + 8192]
            rows = np.asarray(self.data)[sel]
            finite = np.isfinite(rows).all(axis=1)
            for k, i in enumerate(sel.tolist()):
                if crc is not None and zlib.crc32(rows[k], zlib.crc32(self.names[i].encode("utf-8", "surrogatepass"))) != crc[i]:
                    out[i] = f"its row in {self.label} does not match its checksum (flipped bytes or a wrong name)"
                elif not finite[k]:
                    out[i] = f"its row in {self.label} holds NaN/inf values"
        return out

    def check(self, i: int, row: np.ndarray | None = None) -> str | None:
        """Why row ``i`` must not be used (None: it is good)."""
        if self.error:
            return self.error
        row = self.row(i) if row is None else row
        if self.crc is not None and not self.trusted and row_digest(self.names[i], row) != int(self.crc[i]):
            return f"its row in {self.label} does not match its checksum (flipped bytes or a wrong name)"
        if not np.isfinite(row).all():
            return f"its row in {self.label} holds NaN/inf values"
        return None


_STAMP = ".verified.json"
_GEN_FILES = ("features.npy", "names.json", "rows.json", "offsets.npy", "times.npy")


def _gen_stat(gen: Path) -> dict[str, list[int]]:
    out = {}
    for name in _GEN_FILES:
        with contextlib.suppress(OSError):
            st = os.stat(gen / name)
            out[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return out


class _Skip(Exception):
    pass


def _stamp_ok(gen: Path) -> bool:
    """Were all rows of this generation checked since any of its files last changed? The stamp
    holds each file's (size, mtime_ns, ctime_ns, inode): any write, copy or ``touch`` changes
    the ctime, so only damage below the file system (which ``verify`` still finds) escapes it."""
    try:
        return json.loads((gen / _STAMP).read_text()) == _gen_stat(gen)
    except (OSError, ValueError):
        return False


_SETTLED_NS = 2_000_000_000


def _write_stamp(block: _Block) -> None:
    if block.stamp_dir is None or block.crc is None or block.trusted:
        return          # a part, a generation without row checksums, or one stamped already
    stat = _gen_stat(block.stamp_dir)
    # A file changed within the clock tick of this stat could change again under the same
    # stat: stamp only files that have been still for a while (the next load stamps them).
    if stat and time.time_ns() - max(v[2] for v in stat.values()) > _SETTLED_NS:
        with contextlib.suppress(OSError):
            atomic_write_json(block.stamp_dir / _STAMP, stat)
        block.trusted = True


@dataclass
class _State:
    """What an entry holds per name after resolving generation, parts and failures: the newest
    record wins (a part over the generation, the later of a part and a failure)."""

    features: dict[str, tuple[_Block, int]]
    failures: dict[str, Failure]
    inputs: dict[str, str | None]
    rejected: dict[str, str]               # name -> why its stored feature cannot be used
    problems: list[str]                    # entry-level: what could not be read
    gen: _Block | None = None              # with ``gen_features=False``: the generation's rows,
    gen_rows: dict[str, int] | None = None  # name -> row, are not in ``features``; ``overridden``
    overridden: set[str] | None = None     # names whose newest record is not the generation's


class CacheEntry:
    """Features of one extractor variant on one dataset condition."""

    def __init__(self, path: Path, identity: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.identity = dict(identity)
        self.level = identity.get("level", "utterance")
        self._lock = FolderLock(self.path)

    # --- metadata ---------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return cache_key(self.identity)

    def _meta(self) -> dict[str, Any] | None:
        """meta.json; when it is unreadable (truncated, garbage), a meta rebuilt from the newest
        complete generation, with ``broken`` saying what is wrong (writers then rewrite it)."""
        try:
            with open(self.path / "meta.json", encoding="utf-8") as f:
                meta = json.load(f)
            if not isinstance(meta, dict) or not isinstance(meta.get("identity"), dict):
                raise ValueError("it holds no identity")
            if not line_ok(meta) or meta.get("key") != cache_key(meta["identity"]):
                raise ValueError("its content does not match its checksum")
            if meta.get("generation") is not None and not (self.path / f"gen-{meta['generation']}").is_dir():
                raise ValueError(f"it names gen-{meta['generation']}, which does not exist")
            meta.pop("crc", None)
            return meta
        except FileNotFoundError:
            if any(self.path.glob("gen-*/rows.json")):
                return self._recovered_meta("meta.json is missing")
            return None
        except (ValueError, OSError, UnicodeDecodeError) as err:
            return self._recovered_meta(f"meta.json is unreadable ({type(err).__name__}: {err})")

    def _recovered_meta(self, why: str) -> dict[str, Any]:
        meta = {"identity": self.identity, "key": self.key, "created": time.time(), "generation": None,
                "dim": None, "count": 0, "format": FORMAT, "broken": why}
        gens = []
        for g in self.path.glob("gen-*"):
            with contextlib.suppress(ValueError):
                gens.append((int(g.name[4:]), g))
        for number, g in sorted(gens, reverse=True):
            try:
                rows = json.loads((g / "rows.json").read_text(encoding="utf-8"))
                identity = rows["identity"]
                if self.identity.get("extractor") and identity.get("extractor") != self.identity.get("extractor"):
                    continue
                if self.identity.get("config") is not None and cache_key(identity) != self.key:
                    continue
                feats = np.load(g / "features.npy", mmap_mode="r")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            meta.update(identity=identity, key=cache_key(identity), generation=number,
                        dim=int(feats.shape[-1]) if feats.size else None, count=len(rows.get("names") or []),
                        checksums=rows.get("checksums") or {})
            break
        return meta

    def _write_meta(self, meta: Mapping[str, Any]) -> None:
        atomic_write_json(self.path / "meta.json", with_crc({k: v for k, v in meta.items() if k != "crc"}))

    @property
    def problem(self) -> str | None:
        """What is wrong with the entry's metadata (None: nothing)."""
        meta = self._meta()
        return meta.get("broken") if meta else None

    def _ensure_meta(self) -> dict[str, Any]:
        meta = self._meta()
        if meta is None or meta.get("broken"):
            if meta is not None:
                log.warning("%s: %s; rewriting it%s", self.path, meta["broken"],
                            f" from gen-{meta['generation']}" if meta.get("generation") is not None else
                            " (no complete generation: its samples are extracted again)")
                meta.pop("broken", None)
                if meta.get("key") != self.key:
                    meta.update(identity=self.identity, key=self.key, generation=None, count=0, checksums={})
            else:
                meta = {"identity": self.identity, "key": self.key, "created": time.time(),
                        "generation": None, "dim": None, "count": 0, "format": FORMAT}
            self._write_meta(meta)
        elif meta.get("key") != self.key:
            raise RuntimeError(f"cache entry {self.path} belongs to another identity "
                               f"(key {meta.get('key')} != {self.key}); remove the folder")
        return meta

    def lock(self, timeout_s: float = 3600.0) -> contextlib.AbstractContextManager[None]:
        """Exclusive lock for filling; a second filler waits (a reader never needs it). Re-entrant
        within one entry object (a load inside a consolidation records rejections)."""
        return self._lock.hold(timeout_s, f"cache entry {self.path} is locked by another process")

    # --- reading ----------------------------------------------------------------------------
    def _parts(self) -> list[Path]:
        return sorted((self.path / "parts").glob("part-*.npz"))

    def _generation(self, meta: Mapping[str, Any] | None, need_inputs: bool = True,
                    trust_stamp: bool = True) -> _Block | None:
        """The consolidated generation as a block (``error`` set when it cannot be used). A
        generation stamped as checked (:func:`_stamp_ok`) is ``trusted``; then, unless
        ``need_inputs``, its rows.json (fingerprints, checksums) is not even read."""
        if not meta or meta.get("generation") is None:
            return None
        gen = self.path / f"gen-{meta['generation']}"
        label = gen.name
        trusted = trust_stamp and _stamp_ok(gen)
        names: list[str] | None = None
        names_error = rows_error = None
        try:
            with open(gen / "names.json", encoding="utf-8") as f:
                names = json.load(f)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("not a list of names")
        except (ValueError, OSError) as err:
            names, names_error = None, f"{gen}/names.json is unreadable ({type(err).__name__})"
        rows: dict[str, Any] | None = None
        try:
            if trusted and not need_inputs and names is not None:
                raise _Skip
            rows = json.loads((gen / "rows.json").read_text(encoding="utf-8"))
            if not isinstance(rows, dict):
                raise ValueError("not a mapping")
        except _Skip:
            rows = None
        except FileNotFoundError:
            rows = None
            if int(meta.get("format") or 1) >= 2:
                rows_error = f"{gen}/rows.json (the row checksums) is missing"
        except (ValueError, OSError) as err:
            rows, rows_error = None, f"{gen}/rows.json is unreadable ({type(err).__name__})"
        if names is None:
            names = _list_or_empty((rows or {}).get("names"))
            if rows is not None and len(names) == len(rows.get("crc32") or ()):
                names_error = None          # rows.json holds the names too (each row's crc checks it)
        if names_error or rows_error:
            return _Block(label, -1, names, error=names_error or rows_error)
        try:
            data = np.load(gen / "features.npy", mmap_mode="r")
            offsets = np.load(gen / "offsets.npy") if self.level == "frame" else None
            _check_shapes(data, offsets, len(names), self.level)
            inputs = crc = None
            if rows is not None:
                inputs = list(rows["inputs"])
                crc = np.asarray(rows["crc32"], dtype=np.int64)
                if len(inputs) != len(names) or len(crc) != len(names):
                    raise ValueError(f"rows.json describes {len(crc)} rows, names.json {len(names)}")
        except (ValueError, OSError, KeyError, TypeError, EOFError) as err:
            return _Block(label, -1, names, error=f"{gen} cannot be read ({type(err).__name__}: {err})")
        times, times_crc = _generation_times(gen, data, rows, len(names)) if self.level == "frame" else (None, None)
        block = _Block(label, -1, names, data, offsets, inputs, crc, times=times, times_crc=times_crc)
        block.stamp_dir = gen
        block.trusted = trusted
        return block

    def _consolidated(self) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        block = self._generation(self._meta())
        if block is None or block.error:
            return [], np.zeros((0, 0), np.float32), None
        return block.names, block.data, block.offsets

    def _read_block(self, path: Path, line: Mapping[str, Any] | None) -> _Block:
        t = _part_time(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                names = [str(n) for n in z["names"]]
                data = z["data"]
                offsets = z["offsets"]
                inputs = [str(x) for x in z["inputs"]] if "inputs" in z.files else None
                crc = z["crc"].astype(np.int64) if "crc" in z.files else None
                times = z["times"] if "times" in z.files else None
                times_crc = z["times_crc"].astype(np.int64).tolist() if "times_crc" in z.files else None
            offsets = offsets if len(offsets) else None
            _check_shapes(data, offsets, len(names), self.level)
            if times is not None and (times.shape != (len(data),) or (times_crc is not None and len(times_crc) != len(names))):
                times = times_crc = None             # the rows stay usable without their time base
        except Exception as err:  # noqa: BLE001 - a damaged zip raises many kinds
            names = list(line["names"]) if line else []
            return _Block(path.name, t, names, error=f"part {path.name} is unreadable ({type(err).__name__})")
        if crc is None and line is not None and line.get("sha256") != sha256_file(path):
            return _Block(path.name, t, names, error=f"part {path.name} does not match its checksum in index.jsonl")
        return _Block(path.name, t, names, data, offsets, inputs, crc, times=times, times_crc=times_crc)

    def _failure_lines(self) -> dict[str, tuple[int, Failure]]:
        out: dict[str, tuple[int, Failure]] = {}
        lines, _ = read_json_lines(self.path / "failures.jsonl")
        for d in lines:
            try:
                f = Failure(str(d["name"]), str(d["reason"]), str(d["message"]), d.get("inputs"))
                t = int(d.get("t", 0))
            except (KeyError, TypeError, ValueError):
                continue
            if f.name not in out or t >= out[f.name][0]:
                out[f.name] = (t, f)
        return out

    def _scan(self, want: set[str] | None = None, read_data: bool = True, verify: bool = False,
              trust_stamp: bool = True, need_inputs: bool = True, gen_features: bool = True) -> _State:
        """Resolve every name's newest record. ``read_data`` opens the parts (else their index
        lines stand for them); ``verify`` checks each winning row (checksum, name, finiteness;
        a generation whose files are unchanged since all its rows passed skips the checksums
        unless ``trust_stamp`` is false)."""
        meta = self._meta()
        problems: list[str] = []
        if meta and meta.get("broken"):
            problems.append(meta["broken"])
        state = _State({}, {}, {}, {}, problems)
        gen = self._generation(meta, need_inputs=need_inputs, trust_stamp=trust_stamp)
        if gen is not None:
            if gen.error:
                problems.append(gen.error)
            picked = gen.names if want is None else [n for n in gen.names if n in want]
            if gen.error:
                state.rejected.update(dict.fromkeys(picked, gen.error))
            elif not gen_features:
                state.gen, state.gen_rows, state.overridden = gen, {n: i for i, n in enumerate(gen.names)}, set()
            else:
                rows = {n: i for i, n in enumerate(gen.names)} if want is not None else None
                state.features = {n: (gen, rows[n] if rows is not None else i) for i, n in enumerate(picked)}
            if gen.inputs is not None and not gen.error:
                state.inputs = dict(zip(gen.names, gen.inputs))
        # Parts and failures are few next to the generation: resolve them name by name.
        newer: dict[str, tuple[int, Any]] = {}
        index = self._index()
        for p in self._parts():
            line = index.get(p.name)
            if read_data or line is None:
                block = self._read_block(p, line)
                if block.error:
                    problems.append(block.error)
            else:
                block = _Block(p.name, _part_time(p), list(line["names"]), inputs=line.get("inputs"))
            for i, n in enumerate(block.names):
                if (want is None or n in want) and (n not in newer or block.time_ns >= newer[n][0]):
                    newer[n] = (block.time_ns, (block, i))
        for n, (t, f) in self._failure_lines().items():
            if (want is None or n in want) and (n not in newer or t >= newer[n][0]):
                newer[n] = (t, f)
        for n, (_, rec) in newer.items():
            state.rejected.pop(n, None)
            if state.overridden is not None:
                state.overridden.add(n)
            if isinstance(rec, Failure):
                state.features.pop(n, None)
                state.failures[n] = rec
                state.inputs[n] = rec.inputs
                continue
            block, i = rec
            state.inputs[n] = (block.inputs[i] or None) if block.inputs is not None and i < len(block.inputs) else None
            if block.error:
                state.features.pop(n, None)
                state.rejected[n] = block.error
            else:
                state.features[n] = rec
        if verify:
            winners: dict[int, tuple[_Block, list[int]]] = {}
            for block, i in state.features.values():
                winners.setdefault(id(block), (block, []))[1].append(i)
            for block, idx in winners.values():
                if block.data is None:
                    continue
                bad = block.bad_rows(idx)
                for i, why in bad.items():
                    n = block.names[i]
                    state.rejected[n] = why
                    state.features.pop(n, None)
                if not bad and len(idx) == len(block.names):
                    _write_stamp(block)
        return state

    def failures(self) -> dict[str, Failure]:
        """name -> its recorded failure, for names whose newest record is a failure."""
        return self._scan(read_data=False).failures

    def _reject(self, rejected: Mapping[str, str], inputs: Mapping[str, str | None]) -> None:
        """Record features that failed their check on loading as ``cache_corrupt`` failures: they
        read as missing from now on and the next fill extracts them again."""
        if not rejected:
            return
        names = sorted(rejected)
        log.warning("cache entry %s: %d stored features fail their check and are dropped (%s: %s%s); they are "
                    "recorded in its failures.jsonl and the next fill extracts them again", self.path, len(names),
                    names[0], rejected[names[0]], f"; also {', '.join(names[1:6])}" if len(names) > 1 else "")
        fails = [Failure(n, "cache_corrupt", f"the cached feature of {n} was dropped: {rejected[n]}; "
                                             "the next fill extracts it again", inputs.get(n)) for n in names]
        try:
            with self.lock(timeout_s=60.0):
                self.record_failures(fails)
        except (OSError, TimeoutError) as err:        # a read-only cache still loads, minus those rows
            log.warning("cannot record them in %s (%s)", self.path / "failures.jsonl", err)

    def load(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """name -> feature (``[D]`` or ``[T, D]``) for every stored name (or the requested ones).
        Every row is checked (checksum, name, finiteness); one that fails is left out and
        recorded as a ``cache_corrupt`` failure."""
        return self.load_rows(names)[0]

    def load_rows(self, names: Sequence[str] | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None]]:
        """:meth:`load`, and at frame level each row's times (``[T]`` seconds; None where the
        extractor reported none or the entry was written before times were recorded)."""
        state = self._scan(set(names) if names is not None else None, verify=True, need_inputs=False)
        self._reject(state.rejected, state.inputs)
        rows = {n: np.asarray(block.row(i)) for n, (block, i) in state.features.items()}
        times = {n: block.row_times(i) if self.level == "frame" else None
                 for n, (block, i) in state.features.items()}
        return rows, times

    def load_matrix(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Utterance level: ``(X [N, D] float32, present [N] bool)`` in the order of ``names``;
        rows of absent names are zero and marked absent (never silently used). Each row is
        checked as it is gathered (its crc32 with its name, finiteness); one that fails is absent
        and recorded as a ``cache_corrupt`` failure, the rest load."""
        if self.level != "utterance":
            raise ValueError("load_matrix is for utterance-level entries")
        state = self._scan(set(names), verify=False, need_inputs=False, gen_features=False)
        dim = self.dim()
        X = np.zeros((len(names), dim or 0), np.float32)
        present = np.zeros(len(names), bool)
        by_block: dict[int, tuple[_Block, list[int], list[int]]] = {}
        feats = state.features
        if state.gen is not None:                  # the generation's rows in one pass (most rows)
            gen_rows, skip = state.gen_rows, state.overridden
            rows = [gen_rows.get(n, -1) for n in names] if not skip else \
                [-1 if n in skip else gen_rows.get(n, -1) for n in names]
            js = [j for j, i in enumerate(rows) if i >= 0]
            if js:
                by_block[id(state.gen)] = (state.gen, js, [rows[j] for j in js])
        for j, n in enumerate(names) if feats else ():
            rec = feats.get(n)
            if rec is not None:
                slot = by_block.get(id(rec[0]))
                if slot is None:
                    slot = by_block[id(rec[0])] = (rec[0], [], [])
                slot[1].append(j)
                slot[2].append(rec[1])
        rejected = dict(state.rejected)
        for block, js, rows in by_block.values():
            if block.data.shape[-1] != X.shape[-1]:
                for j in js:
                    rejected[names[j]] = f"its row in {block.label} has width {block.data.shape[-1]}, not {X.shape[-1]}"
                continue
            js_arr, rows_arr = np.asarray(js), np.asarray(rows)
            order = np.argsort(rows_arr, kind="stable")       # read the memory map front to back
            X[js_arr[order]] = np.asarray(block.data)[rows_arr[order]]
            present[js_arr] = True
            if block.crc is not None and not block.trusted:
                crc = block.crc_list()
                for j, i in zip(js, rows):
                    if zlib.crc32(X[j], zlib.crc32(names[j].encode("utf-8", "surrogatepass"))) != crc[i]:
                        rejected[names[j]] = (f"its row in {block.label} does not match its checksum "
                                              "(flipped bytes or a wrong name)")
                        present[j] = False
        finite = np.ones(len(names), bool)
        for block, js, _ in by_block.values():
            if not block.trusted:                    # a stamped generation passed this already
                finite[js] = np.isfinite(X[js]).all(axis=1) if len(js) < len(names) else np.isfinite(X).all(axis=1)[js]
        for j in np.flatnonzero(present & ~finite):
            rejected[names[j]] = "its row holds NaN/inf values"
        present &= finite
        for block, js, rows in by_block.values():
            if len(set(rows)) == len(block.names) and present[js].all():
                _write_stamp(block)
        X[~present] = 0.0
        self._reject(rejected, state.inputs)
        return X, present

    def dim(self) -> int | None:
        meta = self._meta()
        if meta and meta.get("dim") is not None:
            return int(meta["dim"])
        for p in self._parts():
            block = self._read_block(p, None)
            if block.data is not None:
                return int(block.data.shape[-1])
        return None

    def _index(self) -> dict[str, dict[str, Any]]:
        """part file name -> its index line (file, sha256, names, inputs); damaged lines ignored
        (their parts are read directly)."""
        out: dict[str, dict[str, Any]] = {}
        lines, _ = read_json_lines(self.path / "index.jsonl")
        for d in lines:
            if isinstance(d.get("part"), str) and isinstance(d.get("names"), list):
                out[d["part"]] = d
        return out

    def done_names(self) -> set[str]:
        """Names with a feature or a final failure (what a fill skips); cheap: reads the
        consolidated names, the part index and the failures, not the feature data."""
        state = self._scan(read_data=False)
        return set(state.features) | {n for n, f in state.failures.items() if f.reason not in RETRY_REASONS}

    def fill_state(self, verify: bool = True) -> tuple[dict[str, str | None], dict[str, str]]:
        """What a fill needs: ``(done, rejected)``. ``done`` maps every done name (a feature or a
        final failure) to the input fingerprint recorded with it (None: not recorded, an older
        entry). With ``verify`` every stored row is checked first; ``rejected`` maps those that
        fail to why: they are recorded as ``cache_corrupt`` and are not done."""
        state = self._scan(verify=verify)
        self._reject(state.rejected, state.inputs)
        done = {n: state.inputs.get(n) for n in state.features}
        done.update({n: f.inputs for n, f in state.failures.items() if f.reason not in RETRY_REASONS})
        return done, state.rejected

    # --- writing ----------------------------------------------------------------------------
    def write_part(self, names: Sequence[str], arrays: Sequence[np.ndarray],
                   inputs: Mapping[str, str] | None = None,
                   times: Sequence[np.ndarray | None] | None = None) -> None:
        """One atomic part of features, each row with its input fingerprint (``inputs``) and crc32;
        at frame level ``times`` gives each sample's row times (``[T_i]`` seconds, None: unknown)."""
        if not names:
            return
        self._ensure_meta()
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        if self.level == "frame":
            arrays = [a.reshape(-1, a.shape[-1]) for a in arrays]
            offsets = np.cumsum([0] + [a.shape[0] for a in arrays]).astype(np.int64)
            data = np.concatenate(arrays, axis=0)
        else:
            dims = {a.shape for a in arrays}
            if len(dims) != 1 or arrays[0].ndim != 1:
                raise ValueError(f"utterance features must all be [D]; got shapes {sorted(dims)}")
            offsets = np.zeros(0, np.int64)
            data = np.stack(arrays)
        if not np.isfinite(data).all():
            bad = [n for n, a in zip(names, arrays) if not np.isfinite(a).all()]
            raise ValueError(f"non-finite features for {bad[:5]}; the extractor must return a failure instead")
        fps = [str((inputs or {}).get(n) or "") for n in names]
        crc = np.array([row_digest(n, a) for n, a in zip(names, arrays)], dtype=np.uint32)
        extra: dict[str, np.ndarray] = {}
        if self.level == "frame" and times is not None:
            known = [valid_times(t, len(a)) for t, a in zip(times, arrays)]
            if any(t is not None for t in known):
                extra = {"times": _concat_times(arrays, known),
                         "times_crc": np.array([-1 if t is None else times_digest(n, t) for n, t in zip(names, known)],
                                               dtype=np.int64)}
        buf = _npz_bytes(names=np.array(list(names), dtype=str), data=data, offsets=offsets,
                         inputs=np.array(fps, dtype=str), crc=crc, **extra)
        part = self.path / "parts" / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        atomic_write_bytes(part, buf)
        append_json_lines(self.path / "index.jsonl", [with_crc({"part": part.name, "sha256": hashlib.sha256(buf).hexdigest(),
                                                             "names": list(names), "inputs": fps})])

    def clear_failures(self, reasons: Sequence[str] | None = None) -> int:
        """Forget recorded failures (all, or those with one of ``reasons``) so the next fill
        retries them, e.g. after a ``timeout`` on a busy machine. Returns how many."""
        with self.lock():
            fails = self._failure_lines()
            keep = [(t, f) for t, f in fails.values() if reasons is not None and f.reason not in reasons]
            dropped = len(fails) - len(keep)
            if dropped:
                atomic_write_bytes(self.path / "failures.jsonl", _failure_bytes(keep))
        return dropped

    def record_failures(self, failures: Sequence[Failure], inputs: Mapping[str, str] | None = None) -> None:
        if not failures:
            return
        self._ensure_meta()
        t = time.time_ns()
        append_json_lines(self.path / "failures.jsonl",
                      [_failure_line(t, fl if fl.inputs is not None or not inputs else
                                     Failure(fl.name, fl.reason, fl.message, inputs.get(fl.name)))
                       for fl in failures])

    def consolidate(self, force: bool = False) -> list[str]:
        """Fold the generation and all parts into a new memory-mappable generation, then drop
        the parts; returns the names whose stored rows failed their check (left out, recorded as
        ``cache_corrupt``). ``force`` rewrites the generation even without parts (repair).

        Order matters for crash safety: the new generation is written whole (rows.json last),
        failures.jsonl is compacted (failures superseded by a newer feature go), meta.json is
        switched to the new generation atomically, and only then are the parts and the old
        generation removed; a crash at any point leaves readable data."""
        parts = self._parts()
        if not parts and not force:
            return []
        meta = self._ensure_meta()
        state = self._scan(verify=True)
        names = sorted(state.features)
        arrays = [np.asarray(state.features[n][0].row(state.features[n][1]), np.float32) for n in names]
        row_times = [state.features[n][0].row_times(state.features[n][1]) if self.level == "frame" else None
                     for n in names]
        old = meta.get("generation")
        gens = [int(g.name[4:]) for g in self.path.glob("gen-*") if g.name[4:].isdigit()]
        gen_no = max([old or 0, *gens]) + 1
        gen = self.path / f"gen-{gen_no}"
        if gen.exists():
            shutil.rmtree(gen)
        dim = meta.get("dim")
        if self.level == "frame":
            offsets = np.cumsum([0] + [a.shape[0] for a in arrays]).astype(np.int64)
            atomic_save_npy(gen / "offsets.npy", offsets)
            data = np.concatenate(arrays, axis=0) if arrays else np.zeros((0, dim or 0), np.float32)
            if any(t is not None for t in row_times):
                atomic_save_npy(gen / "times.npy", _concat_times(arrays, row_times))
        else:
            data = np.stack(arrays) if arrays else np.zeros((0, dim or 0), np.float32)
        atomic_save_npy(gen / "features.npy", np.ascontiguousarray(data, dtype=np.float32))
        atomic_write_json(gen / "names.json", names)
        checksums = {f.name: sha256_file(f) for f in sorted(gen.iterdir()) if f.suffix in (".npy", ".json")}
        atomic_write_json(gen / "rows.json", {
            "format": FORMAT, "identity": meta.get("identity", self.identity), "names": names,
            "inputs": [state.inputs.get(n) for n in names], "crc32": [row_digest(n, a) for n, a in zip(names, arrays)],
            **({"times_crc32": [None if t is None else times_digest(n, t) for n, t in zip(names, row_times)]}
               if any(t is not None for t in row_times) else {}),
            "checksums": checksums})
        lines = self._failure_lines()
        kept = [lines[n] for n in sorted(state.failures) if n in lines]
        now = time.time_ns()
        kept += [(now, Failure(n, "cache_corrupt", f"the cached feature of {n} was dropped: {why}; the next fill "
                                                  "extracts it again", state.inputs.get(n)))
                 for n, why in sorted(state.rejected.items())]
        atomic_write_bytes(self.path / "failures.jsonl", _failure_bytes(kept))
        meta.update(generation=gen_no, dim=int(data.shape[-1]) if data.shape[-1] else dim,
                    count=len(names), updated=time.time(), format=FORMAT, checksums=checksums)
        self._write_meta(meta)
        # Index lines of parts written after our listing (another shard) must survive.
        folded = {p.name for p in parts}
        keep = [line for name, line in self._index().items() if name not in folded]
        atomic_write_bytes(self.path / "index.jsonl",
                           "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in keep).encode())
        for p in parts:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if old is not None and old != gen_no:
            shutil.rmtree(self.path / f"gen-{old}", ignore_errors=True)
        if state.rejected:
            log.warning("cache entry %s: %d stored features failed their check and were left out of gen-%d "
                        "(e.g. %s); the next fill extracts them again", self.path, len(state.rejected), gen_no,
                        next(iter(sorted(state.rejected))))
        return sorted(state.rejected)

    def verify(self, repair: bool = False) -> list[str]:
        """Check the entry: meta.json, every part against its indexed sha256, the generation
        against the checksums in meta.json, every row against its crc32 (name included) and for
        finite values, and the index and failure lines. Returns the problems found (empty: all
        good), each saying what ``repair`` does about it. With ``repair`` meta.json is rebuilt
        from the newest complete generation, unreadable parts are deleted, and the generation is
        rewritten from the rows that pass, the others recorded as ``cache_corrupt``: the next
        fill redoes exactly those samples."""
        problems: list[str] = []
        with self.lock():
            meta = self._meta()
            if meta and meta.get("broken"):
                gen_no = meta.get("generation")
                problems.append(f"{meta['broken']}; --repair " + (
                    f"rebuilds it from gen-{gen_no}" if gen_no is not None else
                    "removes it (no complete generation to rebuild it from): the next fill writes it anew, "
                    "keeps the parts and failures left and extracts the rest again"))
            index = self._index()
            for p in self._parts():
                line = index.get(p.name)
                block = self._read_block(p, line)
                bad = None
                if block.error:
                    bad = f"{block.error}; --repair deletes it and the next fill redoes its samples"
                elif line is not None and line.get("sha256") != sha256_file(p):
                    bad = f"{p} does not match its checksum in index.jsonl; --repair keeps the rows that pass their own checksums"
                if bad:
                    problems.append(bad)
                    if repair and block.error:
                        p.unlink()
            gen_block = self._generation(meta)
            rewrite = False
            if gen_block is not None:
                gen = self.path / f"gen-{meta['generation']}"
                sums = meta.get("checksums") or {}
                for fname, want in sums.items():
                    f = gen / fname
                    if not f.is_file():
                        problems.append(f"{f} is missing; --repair rewrites the generation from what is readable")
                        rewrite = True
                    elif sha256_file(f) != want:
                        problems.append(f"{f} does not match its checksum in meta.json; --repair rewrites the "
                                        "generation from the rows that pass their checks")
                        rewrite = True
                if not sums and not meta.get("broken"):
                    problems.append(f"{gen} has no recorded checksums (written by an older mer)")
                if gen_block.error:
                    rewrite = True
                    if not any(gen_block.error in p for p in problems):
                        problems.append(f"{gen_block.error}; --repair drops the generation and the next fill "
                                        "redoes its samples")
            state = self._scan(verify=True, trust_stamp=False)
            if state.rejected:
                names = sorted(state.rejected)
                problems.append(f"{len(names)} stored features fail their check ({names[0]}: {state.rejected[names[0]]}"
                                f"{'; also ' + ', '.join(names[1:5]) if len(names) > 1 else ''}); --repair records them "
                                "as cache_corrupt and the next fill re-extracts exactly those")
                rewrite = True
            for fname in ("index.jsonl", "failures.jsonl"):
                _, bad_lines = read_json_lines(self.path / fname)
                if bad_lines:
                    problems.append(f"{self.path / fname} has {bad_lines} damaged lines (skipped on reading"
                                    f"{'; their parts are read directly' if fname == 'index.jsonl' else '; those samples are redone'})")
            if repair and problems:
                if meta and meta.get("broken"):
                    if meta.get("generation") is None or "config" not in self.identity:
                        # Nothing to rebuild it from: the next fill writes a fresh one.
                        (self.path / "meta.json").unlink(missing_ok=True)
                        for g in self.path.glob("gen-*"):
                            shutil.rmtree(g, ignore_errors=True)
                        rewrite = False
                    else:
                        self._ensure_meta()
                if (rewrite or self._parts()) and "config" in self.identity:
                    self.consolidate(force=True)
                for fname in ("index.jsonl", "failures.jsonl"):
                    lines, bad_lines = read_json_lines(self.path / fname)
                    if bad_lines:
                        atomic_write_bytes(self.path / fname, "".join(json.dumps(d, ensure_ascii=False) + "\n"
                                                                      for d in lines).encode())
        return problems

    def mark_used(self) -> None:
        """Touch the ``.used`` marker: ``python -m mer.cache gc --unused-days`` reads it."""
        with contextlib.suppress(OSError):
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / ".used").touch()

    def size_bytes(self) -> int:
        total = 0
        for f in self.path.rglob("*"):
            with contextlib.suppress(OSError):
                if f.is_file():
                    total += f.stat().st_size
        return total

    def summary(self) -> dict[str, Any]:
        meta = self._meta() or {}
        return {"path": str(self.path), "key": self.key[:8], "count": meta.get("count", 0),
                "parts": len(self._parts()), "failures": len(self.failures()), "dim": self.dim()}


def _list_or_empty(x: Any) -> list[str]:
    return [str(n) for n in x] if isinstance(x, list) else []


def _check_shapes(data: np.ndarray, offsets: np.ndarray | None, n: int, level: str) -> None:
    if data.ndim != 2:
        raise ValueError(f"features are {data.ndim}-d, not [rows, D]")
    if level == "frame":
        if offsets is None or len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != len(data) \
                or (np.diff(offsets) < 0).any():
            raise ValueError(f"offsets do not describe {n} sequences over {len(data)} frames")
    elif len(data) != n:
        raise ValueError(f"{len(data)} feature rows for {n} names")


def _concat_times(arrays: Sequence[np.ndarray], times: Sequence[np.ndarray | None]) -> np.ndarray:
    """Per-row times of consecutive samples as one float64 ``[sum T]`` (NaN for unknown samples)."""
    return np.concatenate([np.full(len(a), np.nan) if t is None else np.asarray(t, np.float64)
                           for a, t in zip(arrays, times)]) if arrays else np.zeros(0, np.float64)


def _generation_times(gen: Path, data: np.ndarray, rows: Mapping[str, Any] | None, n: int
                      ) -> tuple[np.ndarray | None, list | None]:
    """A generation's ``times.npy`` and per-sample time checksums; (None, None) when it has none
    (written before times were recorded, or by an extractor that reports none) or they do not fit."""
    path = gen / "times.npy"
    if not path.is_file():
        return None, None
    try:
        times = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError):
        log.warning("%s is unreadable; the rows of %s load with unknown times", path, gen)
        return None, None
    crc = (rows or {}).get("times_crc32")
    if times.shape != (len(data),) or (crc is not None and len(crc) != n):
        return None, None
    return times, crc


def _part_time(path: Path) -> int:
    with contextlib.suppress(ValueError, IndexError):
        return int(path.name.split("-")[1])
    with contextlib.suppress(OSError):
        return path.stat().st_mtime_ns
    return 0


def _failure_line(t: int, f: Failure) -> dict[str, Any]:
    d = {"name": f.name, "reason": f.reason, "message": f.message, "t": int(t)}
    if f.inputs is not None:
        d["inputs"] = f.inputs
    return with_crc(d)


def _failure_bytes(items: Sequence[tuple[int, Failure]]) -> bytes:
    return "".join(json.dumps(_failure_line(t, f), ensure_ascii=False) + "\n" for t, f in items).encode()


def _row(data: np.ndarray, offsets: np.ndarray | None, i: int) -> np.ndarray:
    if offsets is None or len(offsets) == 0:
        return np.asarray(data[i])
    return np.asarray(data[offsets[i]:offsets[i + 1]])


def last_used(entry_path: Path) -> float:
    """When a run last filled or read an entry: its ``.used`` marker's mtime, else meta.json's."""
    for name in (".used", "meta.json"):
        with contextlib.suppress(FileNotFoundError):
            return (Path(entry_path) / name).stat().st_mtime
    return 0.0


def _read_part(path: Path) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as z:
        names = [str(n) for n in z["names"]]
        data = z["data"]
        offsets = z["offsets"]
    return names, data, (offsets if len(offsets) else None)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class FeatureStore:
    """Root of the cache: ``<root>/<dataset>/<condition>/<extractor>-<hash8>/``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def entry(self, dataset: str, identity: Mapping[str, Any], condition: str = "clean") -> CacheEntry:
        return CacheEntry(self.root / _safe(dataset) / _safe(condition) / entry_dirname(identity), identity)

    def entries(self) -> list[CacheEntry]:
        """Every entry folder (``<extractor>-<hash8>`` with a meta.json, a generation or parts),
        including broken ones: their ``problem`` says what is wrong and their identity is rebuilt
        from the newest complete generation where one is left."""
        out = []
        for d in sorted(self.root.glob("*/*/*")):
            if not d.is_dir() or not _ENTRY_NAME.match(d.name):
                continue
            if not ((d / "meta.json").exists() or any(d.glob("gen-*")) or (d / "parts").is_dir()
                    or (d / "failures.jsonl").exists()):
                continue
            out.append(open_entry(d))
        return out


_ENTRY_NAME = re.compile(r"^.+-[0-9a-f]{8}$")


def open_entry(path: Path) -> CacheEntry:
    """The entry at ``path`` with the identity its metadata records (rebuilt when meta.json is
    unreadable; a bare ``{"extractor": ...}`` from the folder name when nothing is left)."""
    path = Path(path)
    probe = CacheEntry(path, {"extractor": path.name.rsplit("-", 1)[0]})
    meta = probe._meta()
    identity = meta.get("identity") if meta else None
    entry = CacheEntry(path, identity if isinstance(identity, dict) else probe.identity)
    return entry


def _safe(part: str) -> str:
    bad = set('/\\:\0')
    if not part or part in {".", ".."} or any(c in bad for c in part):
        raise ValueError(f"{part!r} cannot be used as a cache folder name")
    return part
