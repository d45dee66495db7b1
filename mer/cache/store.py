"""The feature cache: one entry per (dataset, condition, extractor variant), crash-safe.

Layout of an entry ``<root>/<dataset>/<condition>/<extractor>-<hash8>/``::

    meta.json              identity (full config, version, weights/state digests), dim, level,
                           the current consolidated generation; replaced atomically
    parts/part-*.npz       features of one flushed batch (names, data, offsets); each written
                           atomically (temp file, fsync, rename), so a crash loses at most the
                           batch in flight
    index.jsonl            append-only: one line per part (file, sha256, names); a torn last
                           line is ignored, and a part without a line is read directly
    gen-<n>/features.npy   consolidated features (utterance: [N, D]; frame: [sum T, D]) for
    gen-<n>/names.json     memory-mapped loading, plus offsets.npy at frame level; meta.json
                           holds their sha256 (checked by ``python -m mer.cache verify``)
    failures.jsonl         one line per sample that produced no feature (reason + message);
                           append-only, a torn last line is ignored
    .lock                  flock held while writing (a part, failures, consolidation); several
                           processes may fill one entry at once (shards of one job)

A sample is *done* when it has a feature or a recorded failure; a fill only extracts the samples
that are not done, so an interrupted fill resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def cache_key(identity: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of an extractor's identity (family, config, version, digests)."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def entry_dirname(identity: Mapping[str, Any]) -> str:
    return f"{identity['extractor']}-{cache_key(identity)[:8]}"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[Any]:
    """A binary file handle whose content appears at ``path`` only once it is whole: a temp file in
    the same folder, fsync, atomic rename. Readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n").encode())


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with _atomic_file(path) as f:
        np.save(f, array, allow_pickle=False)


@dataclass(frozen=True)
class Failure:
    name: str
    reason: str
    message: str


class CacheEntry:
    """Features of one extractor variant on one dataset condition."""

    def __init__(self, path: Path, identity: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.identity = dict(identity)
        self.level = identity.get("level", "utterance")

    # --- metadata ---------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return cache_key(self.identity)

    def _meta(self) -> dict[str, Any] | None:
        try:
            with open(self.path / "meta.json", encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def _ensure_meta(self) -> dict[str, Any]:
        meta = self._meta()
        if meta is None:
            meta = {"identity": self.identity, "key": self.key, "created": time.time(),
                    "generation": None, "dim": None, "count": 0}
            atomic_write_json(self.path / "meta.json", meta)
        elif meta.get("key") != self.key:
            raise RuntimeError(f"cache entry {self.path} belongs to another identity "
                               f"(key {meta.get('key')} != {self.key}); remove the folder")
        return meta

    @contextlib.contextmanager
    def lock(self, timeout_s: float = 3600.0) -> Iterator[None]:
        """Exclusive lock for filling; a second filler waits (a reader never needs it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as fh:
            start = time.monotonic()
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - start > timeout_s:
                        raise TimeoutError(f"cache entry {self.path} is locked by another process")
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # --- reading ----------------------------------------------------------------------------
    def _parts(self) -> list[Path]:
        return sorted((self.path / "parts").glob("part-*.npz"))

    def _consolidated(self) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        meta = self._meta()
        if not meta or meta.get("generation") is None:
            return [], np.zeros((0, 0), np.float32), None
        gen = self.path / f"gen-{meta['generation']}"
        with open(gen / "names.json", encoding="utf-8") as f:
            names = json.load(f)
        data = np.load(gen / "features.npy", mmap_mode="r")
        offsets = np.load(gen / "offsets.npy") if self.level == "frame" else None
        return names, data, offsets

    def failures(self) -> dict[str, Failure]:
        out: dict[str, Failure] = {}
        try:
            with open(self.path / "failures.jsonl", encoding="utf-8") as f:
                for line in f:
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn last line from a crash mid-append
                    out[d["name"]] = Failure(d["name"], d["reason"], d["message"])
        except FileNotFoundError:
            pass
        return out

    def load(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """name -> feature (``[D]`` or ``[T, D]``) for every stored name (or the requested ones)."""
        out: dict[str, np.ndarray] = {}
        cnames, cdata, coffsets = self._consolidated()
        want = set(names) if names is not None else None
        for i, n in enumerate(cnames):
            if want is None or n in want:
                out[n] = _row(cdata, coffsets, i)
        for p in self._parts():
            pnames, pdata, poffsets = _read_part(p)
            for i, n in enumerate(pnames):
                if want is None or n in want:
                    out[n] = _row(pdata, poffsets, i)
        return out

    def load_matrix(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Utterance level: ``(X [N, D] float32, present [N] bool)`` in the order of ``names``;
        rows of absent names are zero and marked absent (never silently used)."""
        if self.level != "utterance":
            raise ValueError("load_matrix is for utterance-level entries")
        cnames, cdata, _ = self._consolidated()
        index = {n: i for i, n in enumerate(cnames)}
        extra = {}
        if len(index) < len(names) or self._parts():
            extra = self.load([n for n in names if n not in index])
        dim = self.dim()
        X = np.zeros((len(names), dim or 0), np.float32)
        present = np.zeros(len(names), bool)
        rows = np.array([index.get(n, -1) for n in names])
        hit = rows >= 0
        if hit.any():
            X[hit] = cdata[rows[hit]]
            present[hit] = True
        for j, n in enumerate(names):
            if not present[j] and n in extra:
                X[j] = extra[n]
                present[j] = True
        return X, present

    def dim(self) -> int | None:
        meta = self._meta()
        if meta and meta.get("dim") is not None:
            return int(meta["dim"])
        parts = self._parts()
        if parts:
            return int(_read_part(parts[0])[1].shape[-1])
        return None

    def _index(self) -> dict[str, dict[str, Any]]:
        """part file name -> its index line (file, sha256, names), torn last line ignored."""
        out: dict[str, dict[str, Any]] = {}
        try:
            with open(self.path / "index.jsonl", encoding="utf-8") as f:
                for line in f:
                    try:
                        d = json.loads(line)
                        out[d["part"]] = d
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
        except FileNotFoundError:
            pass
        return out

    def done_names(self) -> set[str]:
        """Names with a feature or a recorded failure (what a fill skips); cheap: reads the
        consolidated names, the part index and the failures, not the feature data."""
        cnames, _, _ = self._consolidated()
        done = set(cnames)
        index = self._index()
        for p in self._parts():
            line = index.get(p.name)
            if line is not None:
                done.update(line["names"])
            else:                               # written, then the process died before indexing it
                with contextlib.suppress(Exception):
                    done.update(_read_part(p)[0])
        done.update(self.failures())
        return done

    # --- writing ----------------------------------------------------------------------------
    def write_part(self, names: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
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
        buf = _npz_bytes(names=np.array(list(names), dtype=str), data=data, offsets=offsets)
        part = self.path / "parts" / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        atomic_write_bytes(part, buf)
        _append_lines(self.path / "index.jsonl", [{"part": part.name, "sha256": hashlib.sha256(buf).hexdigest(),
                                                   "names": list(names)}])

    def clear_failures(self, reasons: Sequence[str] | None = None) -> int:
        """Forget recorded failures (all, or those with one of ``reasons``) so the next fill
        retries them, e.g. after a ``timeout`` on a busy machine. Returns how many."""
        with self.lock():
            fails = self.failures()
            keep = [f for f in fails.values() if reasons is not None and f.reason not in reasons]
            dropped = len(fails) - len(keep)
            if dropped:
                lines = "".join(json.dumps({"name": f.name, "reason": f.reason, "message": f.message},
                                           ensure_ascii=False) + "\n" for f in keep)
                atomic_write_bytes(self.path / "failures.jsonl", lines.encode())
        return dropped

    def record_failures(self, failures: Sequence[Failure]) -> None:
        if not failures:
            return
        self._ensure_meta()
        _append_lines(self.path / "failures.jsonl", [{"name": fl.name, "reason": fl.reason,
                                                      "message": fl.message} for fl in failures])

    def consolidate(self) -> None:
        """Fold all parts into a new memory-mappable generation, then drop the parts.

        Order matters for crash safety: the new generation is written whole, meta.json is switched
        to it atomically, and only then are the parts and the old generation removed; a crash at
        any point leaves readable data (duplicates across generation and parts are harmless)."""
        parts = self._parts()
        if not parts:
            return
        meta = self._ensure_meta()
        items = self.load()
        names = sorted(items)
        arrays = [items[n] for n in names]
        gen_no = (meta.get("generation") or 0) + 1
        gen = self.path / f"gen-{gen_no}"
        if gen.exists():
            shutil.rmtree(gen)
        if self.level == "frame":
            offsets = np.cumsum([0] + [a.shape[0] for a in arrays]).astype(np.int64)
            _save_npy_atomic(gen / "offsets.npy", offsets)
            data = np.concatenate(arrays, axis=0) if arrays else np.zeros((0, 0), np.float32)
        else:
            data = np.stack(arrays) if arrays else np.zeros((0, 0), np.float32)
        _save_npy_atomic(gen / "features.npy", np.ascontiguousarray(data, dtype=np.float32))
        atomic_write_json(gen / "names.json", names)
        old = meta.get("generation")
        meta.update(generation=gen_no, dim=int(data.shape[-1]) if data.size else meta.get("dim"),
                    count=len(names), updated=time.time(),
                    checksums={f.name: _sha256_file(f) for f in sorted(gen.iterdir()) if f.suffix in (".npy", ".json")})
        atomic_write_json(self.path / "meta.json", meta)
        # Index lines of parts written after our listing (another shard) must survive.
        folded = {p.name for p in parts}
        keep = [line for name, line in self._index().items() if name not in folded]
        atomic_write_bytes(self.path / "index.jsonl",
                           "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in keep).encode())
        for p in parts:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if old is not None:
            shutil.rmtree(self.path / f"gen-{old}", ignore_errors=True)

    def verify(self, repair: bool = False) -> list[str]:
        """Check every part against its indexed sha256 and the consolidated generation against
        the checksums in meta.json; returns the problems found (empty: all good). With
        ``repair`` a corrupt part is deleted and a corrupt generation dropped from meta.json,
        so the next fill redoes exactly those samples."""
        problems: list[str] = []
        index = self._index()
        with self.lock():
            for p in self._parts():
                line = index.get(p.name)
                digest = _sha256_file(p)
                bad = None
                if line is None:
                    try:
                        _read_part(p)
                    except Exception as err:  # noqa: BLE001
                        bad = f"{p} is unreadable and unindexed ({type(err).__name__})"
                elif line.get("sha256") != digest:
                    bad = f"{p} does not match its checksum in index.jsonl"
                if bad:
                    problems.append(bad)
                    if repair:
                        p.unlink()
            meta = self._meta()
            if meta and meta.get("generation") is not None:
                gen = self.path / f"gen-{meta['generation']}"
                sums = meta.get("checksums") or {}
                for fname, want in sums.items():
                    f = gen / fname
                    if not f.is_file():
                        problems.append(f"{f} is missing")
                    elif _sha256_file(f) != want:
                        problems.append(f"{f} does not match its checksum in meta.json")
                if not sums:
                    problems.append(f"{gen} has no recorded checksums (written by an older mer)")
                if repair and any(str(gen) in p for p in problems):
                    meta.update(generation=None, count=0, checksums={})
                    atomic_write_json(self.path / "meta.json", meta)
                    shutil.rmtree(gen, ignore_errors=True)
        return problems

    def mark_used(self) -> None:
        """Touch the ``.used`` marker: ``python -m mer.cache gc --unused-days`` reads it."""
        with contextlib.suppress(OSError):
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / ".used").touch()

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def summary(self) -> dict[str, Any]:
        meta = self._meta() or {}
        return {"path": str(self.path), "key": self.key[:8], "count": meta.get("count", 0),
                "parts": len(self._parts()), "failures": len(self.failures()), "dim": self.dim()}


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


def _append_lines(path: Path, objs: Sequence[Mapping[str, Any]]) -> None:
    """Append JSON lines durably. One ``write`` of all lines on an O_APPEND descriptor:
    concurrent appenders never interleave, and a crash leaves at most a torn last line, which
    every reader skips."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A torn line from an earlier crash must not swallow this one.
        if os.fstat(fd).st_size:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _read_part(path: Path) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as z:
        names = [str(n) for n in z["names"]]
        data = z["data"]
        offsets = z["offsets"]
    return names, data, (offsets if len(offsets) else None)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

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
        out = []
        for meta in sorted(self.root.glob("*/*/*/meta.json")):
            with open(meta, encoding="utf-8") as f:
                out.append(CacheEntry(meta.parent, json.load(f)["identity"]))
        return out


def _safe(part: str) -> str:
    bad = set('/\\:\0')
    if not part or part in {".", ".."} or any(c in bad for c in part):
        raise ValueError(f"{part!r} cannot be used as a cache folder name")
    return part
