"""The extractor contract.

An extractor is a named class with a frozen ``Config`` dataclass. Construction is cheap (no
weights): listing, hashing and validating never touch weights. Work comes in two stages:

* ``load(sample)`` -- the CPU stage: read and decode the sample's media (audio samples, frames,
  face crops, the transcript) into the model's input, a picklable value (numpy arrays, strings).
  It runs in supervised decoding worker processes (per-sample timeout, memory cap, a native
  crash costs only that sample) and so must not use anything ``setup`` loads; light per-process
  resources (a Haar cascade) are created lazily. Bad input raises :class:`MediaError` (or any
  exception) or returns an :class:`ExtractionFailure`.
* ``forward(samples, inputs)`` -- the model stage: one batched call in the main process after
  ``setup(device)``, on the accelerator when there is one. It returns one result per sample, in
  order: a float32 array (``[D]`` at utterance level, ``[T, D]`` at frame level) or an
  :class:`ExtractionFailure` that says why that one sample has no feature.

``extract_batch(samples)`` chains the two in-process (tests, small jobs). Decoding of batch k+1
overlaps the forward of batch k when the cache filler runs workers. A failure never stops the
batch. ``context`` (an :class:`ExtractContext`, set by the filler before workers start) tells
``load`` where shared intermediate caches live, e.g. the face crops every visual extractor reuses.

Extractors that learn state from the corpus (TF-IDF's vocabulary) implement ``fit(samples)``;
their ``state_digest()`` then covers the fitted state, so the cache key changes with it.

Extractors whose output is over the dataset's label classes (a zero-shot CLIP scorer, an MLLM
asked to pick a class) take the :class:`ClassBound` mixin and a ``labels`` config field (empty:
the dataset's classes). The run calls ``extractor = extractor.bind_classes(classes)`` right after
building it (:func:`mer.features.plan_streams`), which returns a rebuilt copy whose ``labels`` are
the dataset's classes when they were empty, so the classes are part of the config and hence of
the cache key; labels set in the config are kept.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence, TypeVar

import numpy as np

from mer.core.failures import ExtractionFailure, MediaError
from mer.core.registry import Registry
from mer.core.samples import Sample

MODALITIES = ("text", "audio", "visual")


@dataclass(frozen=True)
class Inputs:
    """What an extractor reads of one sample: transcripts by language (the text itself, ``None``
    when absent) and media by role (a file or folder path, ``None`` when the sample has none).
    The cache fingerprints them by content and re-extracts a sample whose inputs changed."""

    texts: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    files: Mapping[str, str | None] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ExtractContext:
    """Where an extraction runs: shared intermediate caches (face crops, ASR transcripts) live
    under ``<cache_root>/<dataset>/<condition>/``. ``None`` fields: no shared cache."""

    cache_root: str | None = None
    dataset: str = "default"
    condition: str = "clean"

    def shared_dir(self, kind: str) -> str | None:
        if not self.cache_root:
            return None
        return os.path.join(self.cache_root, self.dataset, self.condition, kind)


class Extractor:
    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    level: ClassVar[str] = "utterance"   # "utterance" -> [D]; "frame" -> [T, D]
    version: ClassVar[str] = "1"         # bump when the output changes for the same config

    @dataclass(frozen=True)
    class Config:
        batch_size: int = 16

    needs_fit: ClassVar[bool] = False

    def __init__(self, config: Any = None, **overrides: Any) -> None:   # a subclass's own Config
        cfg = config if config is not None else self.Config()
        if overrides:
            known = {f.name for f in dataclasses.fields(cfg)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise TypeError(f"extractor {self.name!r} has no option(s) {unknown}; "
                                f"options: {sorted(known)}")
            # A nested config (e.g. a FaceConfig) may come from YAML as a mapping of its fields.
            for key, value in overrides.items():
                current = getattr(cfg, key)
                if isinstance(value, Mapping) and dataclasses.is_dataclass(current):
                    overrides[key] = dataclasses.replace(current, **value)
            cfg = dataclasses.replace(cfg, **overrides)
        self.config: Any = cfg          # typed as each subclass's own Config, not the base one
        self.device = "cpu"
        self.context = ExtractContext()
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

    def inputs(self, sample: Sample) -> Inputs:
        """What this extractor reads of ``sample`` (its feature is stale when these change).
        Default by modality: text, the transcript in ``config.language`` (every transcript when
        the config names none); audio, the file it decodes (``audio_path``, else ``video_path``);
        visual, the released face crops and the video. Override when an extractor reads more
        (or less) than that."""
        if self.modality == "text":
            language = getattr(self.config, "language", None)
            if language:
                return Inputs(texts={language: sample.text(language)})
            return Inputs(texts=dict(sample.transcripts))
        if self.modality == "audio":
            return Inputs(files={"audio": sample.audio_path or sample.video_path})
        if self.modality == "visual":
            return Inputs(files={"face": sample.face_path, "video": sample.video_path})
        return Inputs()

    # --- work -----------------------------------------------------------------------------
    def fit(self, samples: Sequence[Sample]) -> "Extractor":
        return self

    def setup(self, device: str = "cpu") -> None:
        """Load weights once. Subclasses call ``super().setup(device)``."""
        self.device = device
        self._ready = True

    def warmup(self) -> None:
        """Pay one-off costs of ``load`` (lazy imports, JIT compilation) in a fresh decoding
        worker before it takes samples, so they are not charged to the first clip's timeout."""

    def load(self, sample: Sample) -> Any:
        """CPU stage (worker process): the sample's decoded model input. Default: the sample."""
        return sample

    def forward(self, samples: Sequence[Sample], inputs: Sequence[Any]
                ) -> list[np.ndarray | ExtractionFailure]:
        """Model stage (main process, after ``setup``): one result per sample, in order.
        ``inputs[i]`` is what ``load(samples[i])`` returned (never a failure)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither forward nor extract_batch")

    def extract_batch(self, samples: Sequence[Sample]) -> list[np.ndarray | ExtractionFailure]:
        """Both stages in this process; a sample whose ``load`` fails is a failure, the rest go on."""
        if not self._ready:
            self.setup(self.device)
        loaded = [load_or_failure(self, s) for s in samples]
        ok = [i for i, x in enumerate(loaded) if not isinstance(x, ExtractionFailure)]
        out: list[np.ndarray | ExtractionFailure] = list(loaded)
        if ok:
            results = self.forward([samples[i] for i in ok], [loaded[i] for i in ok])
            if len(results) != len(ok):
                raise RuntimeError(f"{self.name}.forward returned {len(results)} results for {len(ok)} samples")
            for i, r in zip(ok, results):
                out[i] = r
        return out

    def __getstate__(self) -> dict[str, Any]:
        # Workers get the extractor before setup: never ship loaded weights across processes.
        state = dict(self.__dict__)
        for k in getattr(self, "_transient", ()):
            state[k] = None
        state["_ready"] = False
        return state

    _transient: ClassVar[tuple[str, ...]] = ()
    """Attribute names ``setup`` fills (models, tokenizers) that are dropped when pickled."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


ClassBoundT = TypeVar("ClassBoundT", bound="ClassBound")


class ClassBound:
    """Mixin for an :class:`Extractor` whose ``Config`` has ``labels: tuple[str, ...]``, the
    classes its output columns are over, in order; empty means "the dataset's classes"."""

    config: Any
    context: ExtractContext
    device: str

    def bind_classes(self: ClassBoundT, classes: Sequence[str]) -> ClassBoundT:
        """This extractor with ``labels`` set to ``classes`` when its ``labels`` are empty: a copy
        rebuilt from the updated config (so its checks run again), with the same context and
        device. Labels already given, or no classes (a valence-only dataset), return ``self``."""
        if not any(f.name == "labels" for f in dataclasses.fields(self.config)):
            raise TypeError(f"{type(self).__name__} uses ClassBound but its Config has no `labels` field")
        if tuple(self.config.labels) or not classes:
            return self
        rebuild: Any = type(self)          # an Extractor subclass: __init__(config, **overrides)
        bound = rebuild(dataclasses.replace(self.config, labels=tuple(str(c) for c in classes)))
        bound.context, bound.device = self.context, self.device
        return bound


def load_or_failure(extractor: Extractor, sample: Sample) -> Any:
    """``extractor.load(sample)`` with every exception turned into an :class:`ExtractionFailure`
    (``MediaError`` keeps its reason; anything else is ``decode_error`` naming the exception)."""
    try:
        return extractor.load(sample)
    except MediaError as err:
        return err.to_failure(sample.name)
    except MemoryError:
        return ExtractionFailure(sample.name, "out_of_memory",
                                 f"decoding {sample.name} for {extractor.name} ran out of memory")
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
        return ExtractionFailure(sample.name, "decode_error",
                                 f"{extractor.name} could not load {sample.name}: {type(err).__name__}: {err}")


# Options that change speed but never the numbers are left out of the key.
_NOT_IN_KEY = {"batch_size", "num_workers", "device", "num_threads",
               # the digest of the weights is in the key; where they lie (or their tag) is not
               "weights_path", "model_path", "weights"}


def _cache_relevant(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _NOT_IN_KEY}




def text_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


EXTRACTORS: Registry[type[Extractor]] = Registry(
    "feature extractor", package=(*(f"feature_extractors.{m}" for m in MODALITIES), "feature_extractors.mllm",
                                    "feature_extractors.physio"))
"""Every extractor module under ``feature_extractors/<modality>/`` registers itself here, and the
multimodal chat model's answers (``feature_extractors/mllm/``)."""


def build_extractor(name: str, options: Mapping[str, Any] | None = None) -> Extractor:
    cls = EXTRACTORS.get(name)
    return cls(**dict(options or {}))
