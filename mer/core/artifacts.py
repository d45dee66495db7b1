"""Derived artifacts (face crops, transcripts, corrupted media copies): one crash-safe entry format.

An *artifact entry* holds what one configuration (its *identity*: options, versions, weight
digests) made of many *items* (one per clip), each made from one source file. It lives where the
feature entries of the same dataset and condition live, so a noisy condition gets artifacts of its
own and ``python -m mer.cache list --dataset`` and ``gc`` see them together::

    <cache root>/<dataset>/<condition>/<kind>/<key8>/     key8: cache_key(identity)[:8]
        meta.json        kind, identity, key, format, the record layout, created; a crc of itself;
                         replaced atomically (a missing or damaged one is rewritten by the next
                         writer: the folder name is the key)
        <records>        append-only JSON lines, one per item written, later lines win: the item's
                         name, the fingerprint of its source (mer.core.fingerprints), the time, a
                         line crc, and one of: a file (its name, size and sha256), a failure
                         (reason and message), or the kind's data inline (a transcript)
        <stem><suffix>   one file per item for kinds that store files (face crops), written
                         atomically before its record line
        .lock            flock held while writing; .used: touched when a run reads the entry

Reading an item verifies it: a torn or damaged record line, a file that is missing or does not
match its sha256, or a source whose fingerprint changed reads as absent, so the item is made
again; a damaged file is also recorded (a ``dropped`` line), so ``verify`` and ``list`` show it
until it is remade. :meth:`ArtifactEntry.verify` checks every record and file, and with
``repair`` rewrites the records without the bad ones and deletes files nothing records (a writer
that died between its file and its record). ``python -m mer.cache`` lists, verifies, repairs and
garbage-collects every kind through :func:`find_artifacts`.

Design: items are independent and written by several processes at once (shards of one job), so
an entry is a folder of whole files plus one append-only log; the log makes "what is done" one
read, and a file is only trusted through its record's checksum. This is the shape of git's loose
objects and of DVC's cache, kept to what mer needs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from mer.core.errors import UserError
from mer.core.fingerprints import FingerprintCache
from mer.core.hashing import cache_key
from mer.core.io import FolderLock, append_json_lines, atomic_write_bytes, atomic_write_json, line_ok, with_crc

log = logging.getLogger(__name__)

FORMAT = 1
"""Layout version of artifact entries (meta.json's ``format``)."""

META_FILE = "meta.json"
_USED = ".used"
_LOCK = ".lock"


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of artifact: ``name`` is also the folder its entries live in; ``records`` the
    log's file name; ``item_field`` / ``source_field`` the record fields that hold the item's name
    and its source fingerprint (a kind that predates this module keeps its own names, so its old
    logs read as they are); ``legacy_identity`` a file in which an older layout kept the
    identity (meta.json is written from it); ``owns_folder`` False for an entry whose folder also
    holds other files (a corrupted copy of a dataset: its labels, its media), which ``repair``
    must never delete."""

    name: str
    records: str = "records.jsonl"
    item_field: str = "item"
    source_field: str = "source"
    legacy_identity: str | None = None
    owns_folder: bool = True

    def layout(self) -> dict[str, Any]:
        return {"records": self.records, "item_field": self.item_field, "source_field": self.source_field,
                "owns_folder": self.owns_folder}


ARTIFACT_KINDS: dict[str, ArtifactKind] = {}
"""Kinds by name; each kind's module registers it (:func:`register_kind`) when imported."""


def register_kind(kind: ArtifactKind) -> ArtifactKind:
    known = ARTIFACT_KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ValueError(f"artifact kind {kind.name!r} is registered twice ({known} and {kind})")
    ARTIFACT_KINDS[kind.name] = kind
    return kind


def artifact_stem(name: str) -> str:
    """A file stem for an item name: the name itself where it is a plain file name, else a
    cleaned name with 8 digits of its hash (so two names never share a file)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe != name or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe


@dataclass(frozen=True)
class Item:
    """One item as read: its latest ``record`` and, for a file item, the file's verified bytes."""

    name: str
    record: Mapping[str, Any]
    data: bytes | None = None

    @property
    def failure(self) -> tuple[str, str] | None:
        """``(reason, message)`` when the item is a recorded failure."""
        f = self.record.get("failure")
        return (str(f.get("reason")), str(f.get("message"))) if isinstance(f, dict) else None


class ArtifactEntry:
    """The items one identity made, in one folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, kind: ArtifactKind, identity: Mapping[str, Any] | None = None
                 ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.identity = dict(identity) if identity is not None else None
        self._lock = FolderLock(self.path)
        self._meta_checked = False
        self._used = False
        self._log_state: tuple[int, int, int] | None = None     # (inode, bytes parsed, mtime_ns)
        self._latest: dict[str, dict[str, Any]] = {}
        self._damaged = 0
        self.fingerprints = FingerprintCache()   # checks ``outputs``; a kind may give a persistent one

    @property
    def key(self) -> str | None:
        return cache_key(self.identity) if self.identity is not None else None

    @property
    def records_path(self) -> Path:
        return self.path / self.kind.records

    def __repr__(self) -> str:
        return f"ArtifactEntry({str(self.path)!r}, kind={self.kind.name!r})"

    # --- metadata ---------------------------------------------------------------------------
    def meta(self) -> dict[str, Any] | None:
        """meta.json (None when absent); ``broken`` says what is wrong with an unreadable one."""
        try:
            meta = json.loads((self.path / META_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError) as err:
            return {"broken": f"{self.path / META_FILE} is unreadable ({type(err).__name__}: {err})"}
        if not isinstance(meta, dict) or not isinstance(meta.get("identity"), dict) or not line_ok(meta) \
                or meta.get("key") != cache_key(meta["identity"]):
            return {"broken": f"{self.path / META_FILE} does not match its checksum"}
        meta.pop("crc", None)
        return meta

    def _write_meta(self) -> None:
        assert self.identity is not None
        atomic_write_json(self.path / META_FILE, with_crc({
            "kind": self.kind.name, "identity": self.identity, "key": self.key, "format": FORMAT,
            **self.kind.layout(), "created": time.time()}))

    def ensure_meta(self) -> None:
        """Write meta.json when it is missing or damaged; refuse a folder of another identity."""
        if self._meta_checked:
            return
        if self.identity is None:
            raise ValueError(f"{self}: cannot write without its identity")
        meta = self.meta()
        if meta is None or meta.get("broken"):
            if meta is not None:
                log.warning("%s; rewriting it", meta["broken"])
            self._write_meta()
        elif meta["key"] != self.key:
            raise self._foreign(meta["key"])
        self._meta_checked = True

    def _foreign(self, key: str) -> UserError:
        return UserError(f"the {self.kind.name} cache entry {self.path} belongs to another configuration (key "
                         f"{key[:8]}, not {str(self.key)[:8]}: copied or moved by hand?); remove it "
                         f"(rm -r {self.path}) and the next run makes it anew")

    def lock(self, timeout_s: float | None = 3600.0) -> contextlib.AbstractContextManager[None]:
        """Exclusive writer lock (re-entrant within this object); readers never need it."""
        waited = "" if timeout_s is None else f" for {timeout_s:.0f} s"   # None: waits for ever
        return self._lock.hold(timeout_s, f"{self.path} stayed locked by another process{waited}; "
                                          f"if none runs, delete {self.path / _LOCK}")

    # --- records ----------------------------------------------------------------------------
    def records(self) -> dict[str, dict[str, Any]]:
        """item name -> its latest whole record (``dropped`` ones included). Reads only what was
        appended since the last call (a corpus of clips costs one pass over the log, not one per
        clip); a rewritten log is read again from the start."""
        try:
            st = os.stat(self.records_path)
        except FileNotFoundError:
            self._log_state, self._latest, self._damaged = None, {}, 0
            return self._latest
        state = self._log_state
        if state is not None and state[0] == st.st_ino and state[1] == st.st_size and state[2] == st.st_mtime_ns:
            return self._latest
        if state is None or state[0] != st.st_ino or st.st_size <= state[1]:     # rewritten, not appended
            self._latest, self._damaged, start = {}, 0, 0
        else:
            start = state[1]
        with open(self.records_path, "rb") as f:
            f.seek(start)
            raw = f.read()
        end = raw.rfind(b"\n") + 1          # a line still being appended is read next time
        for line in raw[:end].split(b"\n"):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError:
                continue                     # torn by a crash mid-append: normal, not counted
            if not line_ok(d) or not isinstance(d.get(self.kind.item_field), str):
                self._damaged += 1
                continue
            self._latest[d[self.kind.item_field]] = d
        self._log_state = (st.st_ino, start + end, st.st_mtime_ns if end == len(raw) else -1)
        return self._latest

    @property
    def damaged_lines(self) -> int:
        """Whole-looking record lines that failed their crc (skipped), as of the last read."""
        self.records()
        return self._damaged

    def record(self, name: str, source: str | None, **fields: Any) -> dict[str, Any]:
        """A record for item ``name`` made from a source with fingerprint ``source``."""
        return {**fields, self.kind.item_field: name, self.kind.source_field: source, "t": time.time_ns()}

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append whole records (each with a line crc) in one write; writes meta.json first."""
        if not records:
            return
        self.ensure_meta()
        append_json_lines(self.records_path, [with_crc({"t": time.time_ns(), **r}) for r in records])

    def item_path(self, name: str, suffix: str) -> Path:
        return self.path / f"{artifact_stem(name)}{suffix}"

    def write(self, name: str, data: bytes, source: str | None, suffix: str = "", *, relpath: str | None = None,
              outputs: Mapping[str, str] | None = None, **fields: Any) -> None:
        """Store ``data`` as item ``name``'s file (``<stem><suffix>``, or ``relpath`` inside the
        entry's folder), then its record (under the lock, so a reader that sees a file and a
        record of another write can wait for the writer and look again). ``outputs``: other
        files the item made, ``{path relative to the folder: content fingerprint}``
        (:class:`~mer.core.fingerprints.FingerprintCache`), checked on every read too."""
        path = self.path / relpath if relpath else self.item_path(name, suffix)
        with self.lock():
            self.ensure_meta()
            atomic_write_bytes(path, data)
            extra = {"outputs": dict(outputs)} if outputs else {}
            self.append([self.record(name, source, file=path.relative_to(self.path).as_posix(), size=len(data),
                                     sha256=hashlib.sha256(data).hexdigest(), **extra, **fields)])

    def write_failure(self, name: str, reason: str, message: str, source: str | None, **fields: Any) -> None:
        """Record that item ``name`` could not be made from this source, and why."""
        with self.lock():
            self.append([self.record(name, source, failure={"reason": reason, "message": message}, **fields)])

    def drop(self, name: str, why: str) -> None:
        """Record that item ``name``'s stored data is bad: it reads as absent until made again."""
        with contextlib.suppress(OSError, ValueError):
            self.append([self.record(name, None, dropped=why)])
        log.warning("%s: the stored %s of %s is dropped (%s); it is made again", self.path, self.kind.name, name, why)

    def read(self, name: str, source: str | None = None) -> Item | None:
        """Item ``name`` as stored, verified (None when absent, stale, dropped or damaged).
        ``source`` is the current fingerprint of its source; a record of another one is stale."""
        self._check_meta_once()
        rec = self.records().get(name)
        if rec is None or rec.get("dropped") is not None:
            return None
        if source is not None and rec.get(self.kind.source_field) != source:
            return None
        if rec.get("file") is None:
            self.mark_used()
            return Item(name, rec)
        data, why = self._file_bytes(rec)
        if why is not None:
            # The file may be a newer write whose record is not appended yet: look again once
            # the writer is done before calling it damaged.
            try:
                with self.lock(timeout_s=60.0):
                    rec = self.records().get(name)
                    if rec is None or rec.get("dropped") is not None or rec.get("file") is None:
                        return None
                    data, why = self._file_bytes(rec)
                    if why is not None:
                        self.drop(name, why)
                        return None
            except (TimeoutError, OSError):
                return None
            if source is not None and rec.get(self.kind.source_field) != source:
                return None
        self.mark_used()
        return Item(name, rec, data)

    def _file_bytes(self, rec: Mapping[str, Any]) -> tuple[bytes | None, str | None]:
        path = self.path / str(rec["file"])
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, f"{path.name} is missing"
        except OSError as err:
            return None, f"{path.name} cannot be read ({err})"
        if hashlib.sha256(data).hexdigest() != rec.get("sha256"):
            return None, f"{path.name} does not match its sha256 (torn, truncated or overwritten)"
        for rel, want in sorted((rec.get("outputs") or {}).items()):
            got = self.fingerprints.file(self.path / rel)
            if got != want:
                return None, f"{rel} is missing" if got == "missing" else f"{rel} has changed since it was written"
        return data, None

    def _check_meta_once(self) -> None:
        if self._meta_checked:
            return
        meta = self.meta()
        if meta is not None and meta.get("broken"):
            log.warning("%s; the items are read by their own checksums and the next write rewrites it",
                        meta["broken"])
        elif meta is not None and self.key is not None and meta["key"] != self.key:
            raise self._foreign(meta["key"])
        else:
            self._meta_checked = meta is not None

    # --- upkeep -----------------------------------------------------------------------------
    def _bookkeeping(self) -> set[str]:
        names = {META_FILE, self.kind.records, _USED, _LOCK}
        if self.kind.legacy_identity:
            names.add(self.kind.legacy_identity)
        return names

    def verify(self, repair: bool = False) -> list[str]:
        """Check meta.json, every record line and every item file against its sha256; returns
        the problems found (empty: all good), each saying what ``repair`` does about it. With
        ``repair`` the records are rewritten without damaged lines, bad items and dropped
        records (those items are made again by the next run), and unrecorded files are deleted."""
        problems: list[str] = []
        with self.lock():
            meta = self.meta()
            if meta is None or meta.get("broken"):
                if self.identity is None:
                    legacy = self._legacy_identity()
                    if legacy is not None:
                        self.identity = legacy
                what = meta["broken"] if meta else f"{self.path / META_FILE} is missing" + (
                    f" (an older layout: {self.kind.legacy_identity} holds the identity)"
                    if self.identity is not None and self.kind.legacy_identity else "")
                problems.append(f"{what}; --repair " + (
                    "writes it anew" if self.identity is not None else
                    "leaves it to the next run that writes here (and deletes the folder if it holds no item)"))
                if repair and self.identity is not None:
                    self._write_meta()
            self._log_state = None
            latest = self.records()
            keep: dict[str, dict[str, Any]] = {}
            bad: dict[str, str] = {}
            dropped = 0
            for name, rec in latest.items():
                if rec.get("dropped") is not None:
                    dropped += 1
                    continue
                if rec.get("file") is not None:
                    _, why = self._file_bytes(rec)
                    if why is not None:
                        bad[name] = why
                        continue
                keep[name] = rec
            if self._damaged:
                problems.append(f"{self.records_path} has {self._damaged} damaged lines (skipped on reading: those "
                                "items are made again); --repair rewrites it without them")
            if bad:
                first = sorted(bad)[0]
                problems.append(f"{len(bad)} stored items fail their check ({first}: {bad[first]}); --repair drops "
                                "them and the next run makes exactly those again")
            if dropped:
                problems.append(f"{dropped} items were dropped as damaged when read and are not made again yet; "
                                "--repair forgets them")
            recorded = {str(r["file"]) for r in latest.values() if r.get("file") is not None}
            orphans = sorted(p for p in self.path.iterdir() if p.is_file() and not p.name.startswith(".")
                             and p.name not in self._bookkeeping() and p.name not in recorded) \
                if self.path.is_dir() and self.kind.owns_folder else []
            if orphans:
                problems.append(f"{len(orphans)} files have no record ({orphans[0].name}; a writer that died before "
                                "its record, or an older layout); --repair deletes them")
            if repair:
                if self._damaged or bad or dropped:
                    atomic_write_bytes(self.records_path, "".join(
                        json.dumps(r, ensure_ascii=False) + "\n" for r in keep.values()).encode())
                    self._log_state = None
                for name in bad:
                    with contextlib.suppress(OSError):
                        (self.path / str(latest[name]["file"])).unlink()
                for p in orphans:
                    with contextlib.suppress(OSError):
                        p.unlink()
                if self.identity is None and not keep and self.kind.owns_folder:
                    shutil.rmtree(self.path, ignore_errors=True)     # nothing left, nothing to name it
        return problems

    def clear_failures(self, reasons: Sequence[str] | None = None) -> int:
        """Forget recorded failures (all, or those with one of ``reasons``) so the next run makes
        those items again. Returns how many."""
        with self.lock():
            self._log_state = None
            latest = self.records()
            forget = [n for n, r in latest.items() if isinstance(r.get("failure"), dict)
                      and (reasons is None or r["failure"].get("reason") in reasons)]
            if forget:
                atomic_write_bytes(self.records_path, "".join(
                    json.dumps(r, ensure_ascii=False) + "\n" for n, r in latest.items() if n not in forget).encode())
                self._log_state = None
        return len(forget)

    def _legacy_identity(self) -> dict[str, Any] | None:
        if not self.kind.legacy_identity:
            return None
        try:
            d = json.loads((self.path / self.kind.legacy_identity).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        identity = d.get("identity") if isinstance(d, dict) else None
        if isinstance(identity, dict) and cache_key(identity)[:8] == self.path.name:
            return identity
        return None

    def mark_used(self) -> None:
        """Touch ``.used`` (once per entry object): ``python -m mer.cache gc --unused-days``."""
        if self._used:
            return
        self._used = True
        with contextlib.suppress(OSError):
            (self.path / _USED).touch()

    def summary(self) -> dict[str, Any]:
        """What ``python -m mer.cache list`` shows: counts of items, failures and dropped items,
        damaged lines, files, bytes, the last use and what is wrong with meta.json."""
        self._log_state = None
        latest = self.records()
        failures = sum(1 for r in latest.values() if isinstance(r.get("failure"), dict))
        dropped = sum(1 for r in latest.values() if r.get("dropped") is not None)
        meta = self.meta()
        problem = meta.get("broken") if meta else (
            None if self.identity is not None else f"{self.path / META_FILE} is missing")
        return {"kind": self.kind.name, "path": str(self.path), "key": self.path.name,
                "items": len(latest) - failures - dropped, "failures": failures, "dropped": dropped,
                "damaged_lines": self._damaged, "size": size_bytes(self.path), "last_used": last_used(self.path),
                "problem": problem}


def size_bytes(path: str | os.PathLike) -> int:
    total = 0
    for f in Path(path).rglob("*"):
        with contextlib.suppress(OSError):
            if f.is_file():
                total += f.stat().st_size
    return total


def last_used(path: str | os.PathLike) -> float:
    """When a run last wrote or read an entry folder: the newest of its ``.used`` marker,
    meta.json and the records (the folder's own mtime without them)."""
    path = Path(path)
    times = []
    for name in (_USED, META_FILE, *{k.records for k in ARTIFACT_KINDS.values()}):
        with contextlib.suppress(OSError):
            times.append((path / name).stat().st_mtime)
    if not times:
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times, default=0.0)


def open_artifact(path: str | os.PathLike) -> ArtifactEntry | None:
    """The entry at ``path`` with the kind and identity its meta.json records; an entry whose
    meta.json is missing or damaged gets the kind its parent folder names (None: no known kind)."""
    path = Path(path)
    meta = ArtifactEntry(path, ArtifactKind("?")).meta()
    if meta is not None and not meta.get("broken") and isinstance(meta.get("kind"), str):
        known = ARTIFACT_KINDS.get(meta["kind"])
        kind = ArtifactKind(meta["kind"], **{k: str(meta[k]) for k in ("records", "item_field", "source_field")
                                            if isinstance(meta.get(k), str)},
                            legacy_identity=known.legacy_identity if known else None,
                            owns_folder=meta.get("owns_folder") is not False)
        return ArtifactEntry(path, kind, meta["identity"])
    kind = ARTIFACT_KINDS.get(path.parent.name)
    if kind is None:
        return None
    entry = ArtifactEntry(path, kind)
    entry.identity = entry._legacy_identity()
    return entry


_KEY8 = re.compile(r"^[0-9a-f]{8}$")


def find_artifacts(root: str | os.PathLike, pattern: str = "*/*/*/*") -> list[ArtifactEntry]:
    """Every artifact entry in the folders ``pattern`` matches under ``root`` (by default
    ``<dataset>/<condition>/<kind>/<key8>/``): those whose meta.json names a kind, and those
    named by a key under a registered kind's folder (entries of an older layout or with a
    damaged meta.json, so ``verify`` can see them)."""
    out = []
    for d in sorted(Path(root).glob(pattern)):
        if not d.is_dir():
            continue
        meta = ArtifactEntry(d, ArtifactKind("?")).meta() if (d / META_FILE).is_file() else None
        if not (meta is not None and isinstance(meta.get("kind"), str)) \
                and not (_KEY8.match(d.name) and d.parent.name in ARTIFACT_KINDS):
            continue
        entry = open_artifact(d)
        if entry is not None:
            out.append(entry)
    return out
