"""The extractor contract.

An extractor is a named class with a frozen ``Config`` dataclass. Construction is cheap (no
weights): listing, hashing and validating never touch weights. ``setup(device)`` loads weights
once; ``extract_batch(samples)`` returns one result per sample, in order: a float32 array
(``[D]`` at utterance level, ``[T, D]`` at frame level) or an :class:`ExtractionFailure` that says
why that one sample has no feature. A failure never stops the batch.

Extractors that learn state from the corpus (TF-IDF's vocabulary) implement ``fit(samples)``;
their ``state_digest()`` then covers the fitted state, so the cache key changes with it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from mer.data.manifest import Sample
from mer.registry import Registry

MODALITIES = ("text", "audio", "visual")


@dataclass(frozen=True)
class ExtractionFailure:
    """Why one sample produced no feature. ``reason`` is a short type (``no_face``,
    ``decode_error``, ``empty_transcript``, ``no_audio_stream``...); ``message`` is for people."""

    name: str
    reason: str
    message: str

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


class Extractor:
    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    level: ClassVar[str] = "utterance"   # "utterance" -> [D]; "frame" -> [T, D]
    version: ClassVar[str] = "1"         # bump when the output changes for the same config

    @dataclass(frozen=True)
    class Config:
        batch_size: int = 16

    needs_fit: ClassVar[bool] = False

    def __init__(self, config: "Extractor.Config | None" = None, **overrides: Any) -> None:
        cfg = config if config is not None else self.Config()
        if overrides:
            known = {f.name for f in dataclasses.fields(cfg)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise TypeError(f"extractor {self.name!r} has no option(s) {unknown}; "
                                f"options: {sorted(known)}")
            cfg = dataclasses.replace(cfg, **overrides)
        self.config = cfg
        self.device = "cpu"
        self._ready = False

    # --- identity (cheap, no weights loaded) ---------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def weights_digest(self) -> str:
        """Digest of the weights this extractor would load ("none" when it has none)."""
        return "none"

    def state_digest(self) -> str:
        """Digest of fitted state (only for ``needs_fit`` extractors)."""
        return "none"

    def identity(self) -> dict[str, Any]:
        """Everything that decides the output: the cache key is a hash of this."""
        return {"extractor": self.name, "modality": self.modality, "level": self.level,
                "version": self.version, "config": _cache_relevant(self.config_dict()),
                "weights": self.weights_digest(), "state": self.state_digest()}

    # --- work -----------------------------------------------------------------------------
    def fit(self, samples: Sequence[Sample]) -> "Extractor":
        return self

    def setup(self, device: str = "cpu") -> None:
        """Load weights once. Subclasses call ``super().setup(device)``."""
        self.device = device
        self._ready = True

    def extract_batch(self, samples: Sequence[Sample]) -> list[np.ndarray | ExtractionFailure]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


# Options that change speed but never the numbers are left out of the key.
_NOT_IN_KEY = {"batch_size", "num_workers", "device", "num_threads",
               # the digest of the weights is in the key; where they lie is not
               "weights_path", "model_path"}


def _cache_relevant(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _NOT_IN_KEY}


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so repeated calls are free."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    hit = _DIGESTS.get(key)
    if hit is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
        hit = _DIGESTS[key] = h.hexdigest()
    return hit


def folder_digest(path: str | os.PathLike, suffixes=(".safetensors", ".bin", ".pt", ".pth", ".onnx",
                                                     ".hdf5", ".h5", ".json", ".txt", ".model")) -> str:
    """Digest over a model folder's weight and config files (names and contents)."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for fn in sorted(files):
            if fn.endswith(suffixes):
                p = os.path.join(root, fn)
                h.update(os.path.relpath(p, path).encode())
                h.update(file_digest(p).encode())
    return h.hexdigest()


_DIGESTS: dict[tuple, str] = {}


def text_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


EXTRACTORS: Registry[type[Extractor]] = Registry("feature extractor")


def load_extractors() -> Registry[type[Extractor]]:
    """Import every extractor module under ``feature_extractors/<modality>/`` (they self-register)."""
    import feature_extractors as pkg

    for sub in MODALITIES:
        subpkg = importlib.import_module(f"feature_extractors.{sub}")
        for mod in pkgutil.iter_modules(subpkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"feature_extractors.{sub}.{mod.name}")
    del pkg
    return EXTRACTORS


def build_extractor(name: str, options: Mapping[str, Any] | None = None) -> Extractor:
    cls = load_extractors().get(name)
    return cls(**dict(options or {}))
