"""What every ASR engine gives back, and the registry configs name engines by.

An engine (``feature_extractors/asr/<engine>.py``) is a named class with a frozen ``Config``:
construction is cheap (no weights), ``identity()`` says everything that decides its transcripts
(the transcript cache is keyed by it), ``setup()`` loads the model once, and
``transcribe(name, audio)`` turns one 16 kHz mono waveform ``[N]`` into a :class:`Transcript`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from mer.core.registry import Registry

SAMPLE_RATE_HZ = 16000
"""Every engine takes audio at this rate (``feature_extractors.audio.io.load_audio``'s default)."""


@dataclass(frozen=True)
class TranscriptSegment:
    """One decoded stretch of speech; times in seconds from the start of the clip."""

    start_s: float
    end_s: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


@dataclass(frozen=True)
class Transcript:
    """What ASR made of one sample.

    ``text`` is the joined, stripped segment texts (``""`` when no speech was found: a real, empty
    transcript). ``language`` is the language code the engine decoded in. ``avg_logprob`` and
    ``no_speech_prob`` are token-weighted means over the segments (``None`` without segments).
    A sample whose audio could not be read has ``failure_reason`` set (``no_audio_stream``,
    ``decode_error``, ``empty_audio``, ``missing_file``, ``no_media``, ``asr_error``), as has one
    whose speech is not in the dataset's language (``wrong_language``); then ``text == ""`` and
    there are no segments.
    """

    name: str
    text: str
    language: str | None = None
    segments: tuple[TranscriptSegment, ...] = ()
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    duration_s: float | None = None
    failure_reason: str | None = None
    failure_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure_reason is None

    @classmethod
    def failed(cls, name: str, reason: str, message: str) -> "Transcript":
        return cls(name=name, text="", failure_reason=reason, failure_message=message)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["segments"] = [dataclasses.asdict(s) for s in self.segments]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Transcript":
        fields = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in d.items() if k in fields}
        kept["segments"] = tuple(TranscriptSegment(**s) for s in d.get("segments") or ())
        return cls(**kept)


def pooled_scores(segments: tuple[TranscriptSegment, ...], token_counts: list[int]
                  ) -> tuple[float | None, float | None]:
    """``(avg_logprob, no_speech_prob)`` of a transcript: means over segments weighted by tokens."""
    scored = [(s, max(n, 1)) for s, n in zip(segments, token_counts) if s.avg_logprob is not None]
    if not scored:
        return None, None
    total = sum(n for _, n in scored)
    logprob = sum(s.avg_logprob * n for s, n in scored) / total
    no_speech = sum((s.no_speech_prob or 0.0) * n for s, n in scored) / total
    return float(logprob), float(no_speech)


class AsrEngine:
    """Base of ASR engines; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"   # bump when transcripts change for the same config and weights

    @dataclass(frozen=True)
    class Config:
        pass

    # Options that change speed or placement, never the words.
    _NOT_IN_KEY: ClassVar[frozenset[str]] = frozenset({"model_path", "num_threads", "device", "batch_size"})

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        cfg = config if config is not None else self.Config()
        if overrides:
            known = {f.name for f in dataclasses.fields(cfg)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise TypeError(f"ASR engine {self.name!r} has no option(s) {unknown}; options: {sorted(known)}")
            cfg = dataclasses.replace(cfg, **overrides)
        self.config = cfg
        self._ready = False

    def identity(self) -> dict[str, Any]:
        """Everything that decides the transcripts; the transcript cache key is a hash of this."""
        config = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in self._NOT_IN_KEY}
        return {"asr": self.name, "version": self.version, "config": config,
                "weights": self.weights_digest(), "runtime": self.runtime_versions()}

    def weights_digest(self) -> str:
        return "none"

    def runtime_versions(self) -> dict[str, str]:
        """Versions of the libraries that decode (a new decoder may change the words)."""
        return {}

    def setup(self) -> None:
        self._ready = True

    def transcribe(self, name: str, audio: np.ndarray) -> Transcript:
        """One float32 mono waveform ``[N]`` at :data:`SAMPLE_RATE_HZ` -> its transcript."""
        raise NotImplementedError

    _transient: ClassVar[tuple[str, ...]] = ()
    """Attributes ``setup`` fills (the model) that are dropped when the engine is pickled."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for k in self._transient:
            state[k] = None
        state["_ready"] = False
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


ASR_ENGINES: Registry[type[AsrEngine]] = Registry("ASR engine", package="feature_extractors.asr",
                                                 skip=("base", "cache", "merge", "wer"))
"""Engines are the modules of ``feature_extractors/asr/`` other than these helpers."""


def build_asr(name: str, options: Mapping[str, Any] | None = None) -> AsrEngine:
    """The engine registered as ``name`` with ``options`` (the ``asr.options`` of the Hydra config)."""
    return ASR_ENGINES.get(name)(**dict(options or {}))


def engine_for(asr: "AsrEngine | Any") -> AsrEngine:
    """An engine as given, or the engine whose ``Config`` class ``asr`` is an instance of."""
    if isinstance(asr, AsrEngine):
        return asr
    for engine_name in ASR_ENGINES.names():
        cls = ASR_ENGINES.get(engine_name)
        if isinstance(asr, cls.Config):
            return cls(asr)
    raise TypeError(f"expected an ASR engine or an engine Config (e.g. WhisperConfig), got {type(asr).__name__}")
