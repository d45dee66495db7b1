"""Extractors whose ``load`` misbehaves on purpose, for the supervised-decoding tests.

They stand for what real decoders do on real bad files but cannot be produced on demand with a
healthy FFmpeg: a native crash (a segfault), a hang, a runaway allocation. The media extractors
themselves are tested on real corrupt files (tests/test_corrupt_media.py).
"""
from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from feature_extractors.base import Extractor


class Misbehaving(Extractor):
    """Feature = a name-seeded vector; a sample named ``*segv*`` segfaults its decoder, ``*hang*``
    never returns, ``*hog*`` allocates ``hog_mb``, ``*raise*`` raises, ``*kill*`` SIGKILLs itself."""

    name: ClassVar[str] = "misbehaving"
    modality: ClassVar[str] = "text"

    @dataclass(frozen=True)
    class Config:
        dim: int = 8
        batch_size: int = 4
        hog_mb: int = 8192
        slow_s: float = 0.0
        log_path: str = ""          # every load appends the sample's name here (which ones were redone)

    def load(self, sample):
        n = sample.name
        if self.config.log_path:
            fd = os.open(self.config.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, (n + "\n").encode())
            os.close(fd)
        if self.config.slow_s:
            time.sleep(self.config.slow_s)
        if "segv" in n:
            ctypes.string_at(0)                     # reads address 0: SIGSEGV in native code
        if "hang" in n:
            while True:
                time.sleep(1)
        if "hog" in n:
            block = np.ones(self.config.hog_mb << 20, dtype=np.uint8)
            return block[:1]
        if "kill" in n:
            os.kill(os.getpid(), 9)
        if "raise" in n:
            raise ValueError(f"cannot parse {n}")
        seed = sum(map(ord, n))
        return np.random.default_rng(seed).normal(size=self.config.dim).astype(np.float32)

    def forward(self, samples, inputs):
        return [np.asarray(x, np.float32) * 2 for x in inputs]
