"""Files written whole or not at all.

Every writer goes through :func:`atomic_file`: a temporary file in the target's own folder (so the
rename stays on one file system), flushed and fsync'd, renamed over the target, then the folder
fsync'd so the rename itself survives a crash. A reader sees the old file or the whole new one,
never a part, and a failure leaves no temporary file behind. The temporary file is created with
mode 0o666, so the user's umask decides the permissions (``mkstemp`` would force 0600).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import json
import os
import secrets
import time
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from mer.core.hashing import canonical_json


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable; file systems that cannot fsync a folder are fine."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary name beside ``path`` (``.<name>.<random>.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                newline: str | None = None, check: Callable[[Path], None] | None = None) -> Iterator[IO[Any]]:
    """A file handle (``mode`` ``"wb"`` or ``"w"``) whose content appears at ``path`` only once it
    is whole and the ``with`` block ended without an exception. ``check(temporary path)``, when
    given, runs on the complete file before the rename; an exception it raises leaves ``path``
    as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None,
                       newline=newline if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_file(path) as f:
        np.save(f, array, allow_pickle=False)


# --- append-only JSON lines with a crc per line ---------------------------------------------

def with_crc(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with a ``crc`` field: the crc32 of its canonical JSON, which :func:`line_ok` checks."""
    d = dict(obj)
    d["crc"] = zlib.crc32(canonical_json(d).encode())
    return d


def line_ok(d: Any) -> bool:
    """A parsed JSON line is whole: a mapping whose ``crc`` (format 2) matches its other fields."""
    if not isinstance(d, dict):
        return False
    if "crc" not in d:
        return True                 # written by an older mer
    rest = {k: v for k, v in d.items() if k != "crc"}
    return d["crc"] == zlib.crc32(canonical_json(rest).encode())


def read_json_lines(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The whole lines of an append-only JSON-lines file, and how many whole-looking lines were
    skipped as damaged (valid JSON whose checksum does not match). Torn lines (a kill mid-append:
    not valid JSON) are skipped too but not counted: they are normal after a crash."""
    out: list[dict[str, Any]] = []
    bad = 0
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return out, 0
    lines = raw.split(b"\n")
    for line in lines:
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except ValueError:
            d = None
        if line_ok(d):
            out.append(d)
        elif d is not None:
            bad += 1
    return out, bad


def append_json_lines(path: str | os.PathLike, objs: Sequence[Mapping[str, Any]], fsync: bool = True) -> None:
    """Append JSON lines durably. One ``write`` of all lines on an O_APPEND descriptor:
    concurrent appenders never interleave, and a crash leaves at most a torn last line, which
    every reader skips."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
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
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


class FolderLock:
    """An exclusive writer lock on ``<folder>/.lock`` (``fcntl.flock``), re-entrant within one
    object: a second process waits (polling every 0.2 s, saying once that it waits) and gets
    ``TimeoutError(timeout_message)`` after ``timeout_s`` (``None``: waits for ever)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self._depth = 0

    @contextlib.contextmanager
    def hold(self, timeout_s: float | None, timeout_message: str) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as fh:
            start, announced = time.monotonic(), False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not announced:
                        logging.getLogger("mer").info("another process is writing into %s; waiting for it",
                                                      self.folder)
                        announced = True
                    if timeout_s is not None and time.monotonic() - start > timeout_s:
                        raise TimeoutError(timeout_message) from None
                    time.sleep(0.2)
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)
