"""The per-sample answer cache: what a chat model said, kept so a rerun asks nothing.

One append-only JSON-lines file per folder (``answers.jsonl``), a line per answered sample, each
line carrying a checksum (:func:`mer.core.io.with_crc`): a crash leaves at most a torn last line,
which readers skip, and concurrent processes append whole lines. A line holds the key (a hash of
the model, the rendered instruction, the task's labels, the sample's media digests and transcript
and every request setting: :meth:`MLLMPredictor.key`), the sample's name, the model, the task and
setting, the sample's *item* (its part of the answer, as the model wrote it), the whole answer
text when the request held several samples, and the request's token counts split evenly over its
samples. Answers are stored raw and parsed when read, so a better parser needs no new request;
an endpoint error is never stored (the next run asks again).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from mer.core.io import append_json_lines, read_json_lines, with_crc

FILE_NAME = "answers.jsonl"


class AnswerCache:
    """``AnswerCache(folder)``: ``get(key)`` -> the stored record or None; ``put(records)``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        self.path = self.folder / FILE_NAME
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] | None = None
        self.damaged = 0

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            rows, self.damaged = read_json_lines(self.path)
            self._data = {r["key"]: r for r in rows if "key" in r}
        return self._data

    def get(self, key: str) -> Mapping[str, Any] | None:
        with self._lock:
            return self._load().get(key)

    def put(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Store ``records`` (each with a ``key``) durably, in one append."""
        if not records:
            return
        stamped = [with_crc({**r, "time": round(time.time(), 3)}) for r in records]
        with self._lock:
            append_json_lines(self.path, stamped)
            data = self._load()
            for r in stamped:
                data[r["key"]] = dict(r)

    def __len__(self) -> int:
        with self._lock:
            return len(self._load())
