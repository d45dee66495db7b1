"""What a cached feature was made from: one fingerprint per sample, recorded with its row.

An extractor says which inputs of a sample it reads (:meth:`Extractor.inputs
<feature_extractors.base.Extractor.inputs>`: transcripts by language, media files by role). The
sample's fingerprint hashes them by *content*:

* a transcript: sha256 of its text (absent and empty differ);
* a media file: its size plus sha256 of its first and last MiB and of 8 blocks of 64 KiB spread
  evenly between them (the whole file when it is at most 2 MiB); a folder (released face crops):
  the relative names and fingerprints of its files.

Paths and mtimes are not in the fingerprint, so moving or copying a dataset folder keeps every
entry valid, while an edited transcript or a replaced video changes exactly that sample's
fingerprint, and the next fill re-extracts it. Reading files is what costs: a file's fingerprint is
remembered under its (path, size, mtime_ns, ctime_ns, inode) in this process and in
``<cache root>/<dataset>/.fingerprints.jsonl``, so a rerun on unchanged files only ``stat``\\ s
them. Any change of that stat (a rewrite, a ``touch``, a copy) re-reads the file; the fingerprint
decides whether the feature is stale.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from mer.core.io import append_json_lines

_MIB = 1 << 20
_EDGE = _MIB
_PROBES = 8
_PROBE = 64 << 10
_FULL_BELOW = 2 * _MIB
_SETTLED_NS = 2_000_000_000


def text_fingerprint(text: str | None) -> str:
    if text is None:
        return "absent"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _read_fingerprint(path: str, size: int) -> str:
    h = hashlib.sha256(str(size).encode() + b":")
    with open(path, "rb") as f:
        if size <= _FULL_BELOW:
            for block in iter(lambda: f.read(_MIB), b""):
                h.update(block)
        else:
            h.update(f.read(_EDGE))
            span = size - 2 * _EDGE
            for k in range(_PROBES):
                f.seek(_EDGE + (span - _PROBE) * k // max(_PROBES - 1, 1))
                h.update(f.read(_PROBE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return h.hexdigest()[:32]


class FingerprintCache:
    """File fingerprints remembered by stat: in memory, and (with ``path``) in an append-only
    JSON-lines file shared by every entry of a dataset (a torn or garbled line is ignored)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._known: dict[tuple, str] = {}
        self._new: list[dict[str, Any]] = []
        self.reads = 0
        if self.path is not None:
            with contextlib.suppress(OSError):
                with open(self.path, "rb") as f:
                    for raw in f:
                        with contextlib.suppress(ValueError, TypeError, KeyError):
                            d = json.loads(raw)
                            self._known[tuple(d["stat"])] = str(d["fp"])

    @staticmethod
    def _stat_key(path: str) -> tuple | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "special"
        return (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, kind)

    def file(self, path: str | os.PathLike | None) -> str:
        """The content fingerprint of a file or folder (``missing`` when it does not exist)."""
        if not path:
            return "none"
        path = os.fspath(path)
        key = self._stat_key(path)
        if key is None:
            return "missing"
        if key[-1] == "special":            # a pipe or device: opening it here could block forever
            return f"special:{key[4]}"
        if key[-1] == "dir":
            h = hashlib.sha256(b"dir:")
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for fn in sorted(files):
                    p = os.path.join(root, fn)
                    h.update(os.path.relpath(p, path).encode("utf-8", "surrogatepass") + b"\0")
                    h.update(self.file(p).encode() + b"\n")
            return h.hexdigest()[:32]
        hit = _PROCESS.get(key) or self._known.get(key)
        if hit is None:
            try:
                hit = _read_fingerprint(path, key[1])
            except OSError:
                return "unreadable"
            self.reads += 1
            # A file changed within the clock's granularity of its stat could change again
            # under the same stat ("racily clean"): remember only files that have been still.
            if time.time_ns() - key[2] < _SETTLED_NS:
                return hit
            self._new.append({"stat": list(key), "fp": hit})
        _PROCESS[key] = hit
        return hit

    def save(self) -> None:
        """Append what was read this time (one write: concurrent shards never interleave)."""
        if self.path is None or not self._new:
            return
        with contextlib.suppress(OSError):
            append_json_lines(self.path, self._new, fsync=False)
        self._new = []


_PROCESS: dict[tuple, str] = {}


def sample_fingerprint(texts: Mapping[str, str | None], files: Mapping[str, Any],
                       cache: FingerprintCache) -> str:
    """One fingerprint over what an extractor reads of a sample (see the module docstring)."""
    parts = [f"t\0{k}\0{text_fingerprint(v)}" for k, v in sorted(texts.items())]
    parts += [f"f\0{k}\0{cache.file(v)}" for k, v in sorted(files.items())]
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:24]


def fingerprints(extractor, samples: Sequence, cache: FingerprintCache) -> dict[str, str]:
    """name -> the current fingerprint of each sample's inputs for ``extractor``."""
    out = {}
    for s in samples:
        inputs = extractor.inputs(s)
        out[s.name] = sample_fingerprint(inputs.texts, inputs.files, cache)
    cache.save()
    return out
