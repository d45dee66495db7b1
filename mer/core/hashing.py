"""Digests: canonical JSON and config keys, and sha256 of files and model folders."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".hdf5", ".h5", ".json", ".txt", ".model")
"""The files of a model folder that :func:`folder_digest` hashes."""


def canonical_json(obj: Any) -> str:
    """One JSON text per value: sorted keys, no spaces, non-JSON values as ``str``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def cache_key(identity: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of an identity (an extractor's family, config, version, digests)."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file's whole content (read in ``chunk``-byte blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """:func:`sha256_file`, remembered per (path, size, mtime) in this process, so repeated calls
    are free."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    hit = _DIGESTS.get(key)
    if hit is None:
        hit = _DIGESTS[key] = sha256_file(path)
    return hit


def folder_digest(path: str | os.PathLike, suffixes: tuple[str, ...] = WEIGHT_SUFFIXES) -> str:
    """Digest over a model folder's weight and config files (relative names and contents)."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for fn in sorted(files):
            if fn.endswith(suffixes):
                p = os.path.join(root, fn)
                h.update(os.path.relpath(p, path).encode())
                h.update(file_digest(p).encode())
    return h.hexdigest()
