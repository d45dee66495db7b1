"""Random generators keyed by names, so a draw never depends on the order of the calls before it."""
from __future__ import annotations

import hashlib

import numpy as np


def keyed_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the ``keys`` (joined by NUL, hashed with sha256).

    ``keyed_rng(seed, name, purpose)`` gives each (clip, purpose) its own stream; a leading key
    (``"corrupt"``) keeps one component's streams apart from another's for the same names. The
    streams are part of generated content (the demo corpus, the corrupted copies): changing the
    derivation changes every clip."""
    digest = hashlib.sha256("\x00".join(keys).encode()).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])
