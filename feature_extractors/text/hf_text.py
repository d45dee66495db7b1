"""``hf_text``: token hidden states of any local Hugging Face text encoder, pooled without specials.

The encoders MERTools extracts lexical features with (bert-base-chinese,
chinese-roberta-wwm-ext(-large), chinese-macbert-base/large, chinese-electra-180g-*,
deberta-chinese-large, albert_chinese_*, xlm-roberta, roberta-base/large ...) all load from a
local folder holding ``config.json``, the weights and the tokenizer files, through
``AutoModel``/``AutoTokenizer``; decoder-only LMs (GPT-2 family) work too (their EOS token pads).
Nothing is downloaded.

Layers (``layers``): ``"last"`` = the model's ``last_hidden_state``; ``"last4_sum"`` = the sum of
the last 4 entries of ``hidden_states`` (MER2023's ``chinese-macbert-large-4-UTT`` features); or a
list of indices into ``hidden_states`` (0 = the embedding output, -1 = the last layer), summed.

Pooling (``pooling: mean``, the default): special tokens are dropped, as MERTools drops
``[CLS]``/``[SEP]``: [CLS], [SEP], <s>, </s> and padding (the tokenizer's ``special_tokens_mask``),
and special tokens typed in the text, such as the ``[SEP]`` that joins provided and ASR
transcripts; ``[UNK]`` stays, it stands for real words. Utterance level: the mean over the
remaining tokens, float32 ``[D]``; frame level (``level: frame``): those tokens' states, float32
``[T, D]``. ``layers: last4_sum`` with ``pooling: mean`` is MERBench's recipe for
chinese-macbert-large, chinese-roberta-wwm-ext-large and the other BERT-style encoders.
``pooling: cls`` takes the state of the first token (``[CLS]``/``<s>``), the dense embedding of
BAAI/bge-m3 (with ``layers: last`` and ``normalize: true``); it is utterance level only.
``normalize: true`` L2-normalises the utterance vector. Transcripts longer than ``max_length``
tokens are truncated. A transcript that tokenises to special tokens only is the failure
``no_tokens``.

``model_id`` (e.g. ``hfl/chinese-macbert-large``) only names, in the error shown when
``model_path`` is missing, what the folder must hold; the cache key holds the folder's digest.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from feature_extractors.base import EXTRACTORS, Extractor
from feature_extractors.text import transcript_or_failure
from feature_extractors.text._torch_text import autocast_settings, local_model_dir, set_torch_threads
from mer.core.failures import ExtractionFailure
from mer.core.hashing import folder_digest
from mer.core.samples import Sample

_LAYER_PRESETS = ("last", "last4_sum")
_LEVELS = ("utterance", "frame")
_POOLINGS = ("mean", "cls")
_NEEDS = "a Hugging Face text encoder (config.json, weights, tokenizer files)"


@EXTRACTORS.register("hf_text")
class HFText(Extractor):
    """Transcript -> ``[D]`` (utterance) or ``[T, D]`` (frame) hidden states without special tokens."""

    name: ClassVar[str] = "hf_text"
    modality: ClassVar[str] = "text"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("tokenizer", "model", "_special_ids")

    @dataclass(frozen=True)
    class Config:
        model_path: str | None = None                  # required: a local HF model folder
        language: str = "english"                      # which transcript of the sample to embed
        layers: str | tuple[int, ...] = "last4_sum"    # last | last4_sum | indices into hidden_states
        level: str = "utterance"                       # utterance -> [D]; frame -> [T, D] (tokens)
        max_length: int = 512                          # tokens incl. specials; longer is truncated
        pooling: str = "mean"                          # mean (non-special tokens) | cls (first token)
        normalize: bool = False                        # L2-normalise the utterance vector
        model_id: str | None = None                    # what model_path should hold (error messages only)
        batch_size: int = 32
        num_threads: int | None = None                 # torch CPU threads; None: torch's default

    def __init__(self, config: "HFText.Config | None" = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        layers = c.layers
        if isinstance(layers, str):
            if layers not in _LAYER_PRESETS:
                raise ValueError(f"hf_text layers must be one of {_LAYER_PRESETS} or a list of "
                                 f"hidden_states indices, got {layers!r}")
        else:
            layers = tuple(int(i) for i in layers)   # Hydra hands over a ListConfig
            if not layers:
                raise ValueError("hf_text layers is an empty list; give at least one index (-1 = last layer)")
            self.config = c = replace(c, layers=layers)
        if c.level not in _LEVELS:
            raise ValueError(f"hf_text level must be one of {_LEVELS}, got {c.level!r}")
        if c.max_length < 3:
            raise ValueError(f"hf_text max_length must be >= 3 (room for the special tokens), got {c.max_length}")
        if c.pooling not in _POOLINGS:
            raise ValueError(f"hf_text pooling must be one of {_POOLINGS}, got {c.pooling!r}")
        if c.pooling == "cls" and c.level == "frame":
            raise ValueError("hf_text pooling=cls gives one vector per transcript; use level=utterance "
                             "(or pooling=mean for token states)")
        self.level = c.level
        self.model_dir = local_model_dir(c.model_path, "hf_text", _NEEDS, c.model_id)
        self._digest: str | None = None
        self.tokenizer = None
        self.model = None
        self._special_ids = None   # ids of the special tokens except [UNK] (set by setup)

    def config_dict(self) -> dict:
        # model_id only words error messages. pooling and normalize at their defaults are left out
        # so that entries made before these options existed keep their keys.
        out = super().config_dict()
        out.pop("model_id", None)
        if out.get("pooling") == "mean":
            out.pop("pooling")
        if out.get("normalize") is False:
            out.pop("normalize")
        return out

    def weights_digest(self) -> str:
        """Digest of the model folder (weights, config, tokenizer); never loads the model."""
        if self._digest is None:
            self._digest = folder_digest(self.model_dir)
        return self._digest

    @property
    def dim(self) -> int:
        """Output width (``hidden_size``); reads config.json, not the weights."""
        with open(Path(self.model_dir) / "config.json", encoding="utf-8") as f:
            cfg = json.load(f)
        for key in ("hidden_size", "d_model", "n_embd", "dim"):
            if key in cfg:
                return int(cfg[key])
        raise KeyError(f"{self.model_dir}/config.json names no hidden size")

    # --- work -----------------------------------------------------------------------------
    def setup(self, device: str = "cpu") -> None:
        if self.model is None:
            import torch  # deferred: loads torch only when used
            from transformers import AutoModel, AutoTokenizer  # deferred: loads transformers only when used
            from transformers.utils import logging as hf_logging  # deferred: loads transformers only when used

            hf_logging.disable_progress_bar()
            path = str(self.model_dir)
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            if self.tokenizer.pad_token is None:
                # Decoder-only LMs ship no pad token; padded positions are masked out anyway.
                fallback = self.tokenizer.eos_token or self.tokenizer.unk_token
                if fallback is None:
                    raise ValueError(f"the tokenizer in {path} has no pad, eos or unk token to pad batches with")
                self.tokenizer.pad_token = fallback
            if self.config.pooling == "cls":
                self.tokenizer.padding_side = "right"   # the first token of every row is then its own
            self.model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
            unk = self.tokenizer.unk_token_id
            self._special_ids = torch.tensor(sorted(i for i in self.tokenizer.all_special_ids if i != unk),
                                             dtype=torch.long)
            self._check_layers()
        set_torch_threads(self.config.num_threads)
        self.model.to(device)
        super().setup(device)

    def _check_layers(self) -> None:
        n_states = int(getattr(self.model.config, "num_hidden_layers", 0)) + 1   # + the embedding output
        wanted = self.layer_indices()
        if wanted is None:
            return
        if n_states > 1 and any(not -n_states <= i < n_states for i in wanted):
            raise ValueError(f"hf_text layers {list(wanted)} out of range: {self.model_dir} has "
                             f"{n_states} hidden states (indices {-n_states}..{n_states - 1})")

    def layer_indices(self) -> tuple[int, ...] | None:
        """Indices into ``hidden_states`` that are summed (``None``: ``last_hidden_state``)."""
        layers = self.config.layers
        if layers == "last":
            return None
        if layers == "last4_sum":
            return (-4, -3, -2, -1)
        return tuple(layers)

    def load(self, sample: Sample) -> str | ExtractionFailure:
        """The stripped transcript (CPU stage; tokenising happens in ``forward``)."""
        return transcript_or_failure(sample, self.config.language)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[str]) -> list[np.ndarray | ExtractionFailure]:
        """``[D]`` (or ``[T, D]``) float32 per transcript, in order."""
        import torch  # deferred: loads torch only when used

        if not self._ready:
            self.setup(self.device)
        out: list[Any] = [None] * len(inputs)
        # Similar lengths in one batch pad less.
        order = np.argsort([len(t) for t in inputs], kind="stable")
        bs = max(1, self.config.batch_size)
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = [int(i) for i in order[start:start + bs]]
                states, keep = self._encode([inputs[i] for i in idx])          # [B, L, D], [B, L]
                for row, i in enumerate(idx):
                    mask = keep[row]
                    n = int(mask.sum())
                    if n == 0:
                        out[i] = ExtractionFailure(samples[i].name, "no_tokens",
                                                   f"the {self.config.language} transcript of {samples[i].name} "
                                                   f"has no tokens besides special ones")
                    elif self.level == "frame":
                        out[i] = states[row][mask].cpu().numpy().astype(np.float32)            # [T, D]
                    else:
                        out[i] = self._pool(states[row], mask, n)                              # [D]
        return out

    def _pool(self, states, mask, n: int) -> np.ndarray:
        """One transcript's ``[L, D]`` states -> float32 ``[D]`` (mean of kept tokens, or the first)."""
        import torch  # deferred: loads torch only when used

        # Right padding (set in setup for pooling=cls) keeps [CLS]/<s> at position 0.
        vec = states[0] if self.config.pooling == "cls" else states[mask].sum(0) / n
        if self.config.normalize:
            vec = torch.nn.functional.normalize(vec, p=2, dim=0)
        return vec.cpu().numpy().astype(np.float32)

    def _encode(self, texts: Sequence[str]):
        """Hidden states ``[B, L, D]`` (float32) and the mask of real, non-special tokens ``[B, L]``."""
        import torch  # deferred: loads torch only when used

        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                             return_special_tokens_mask=True, return_tensors="pt")
        special = enc.pop("special_tokens_mask").bool()
        # The mask marks the specials the tokenizer added; a special typed in the text (the
        # " [SEP] " that joins provided and ASR transcripts) is caught by its id. [UNK] stays:
        # it stands for real words.
        typed = torch.isin(enc["input_ids"], self._special_ids)
        keep = enc["attention_mask"].bool() & ~special & ~typed
        enc = {k: v.to(self.device) for k, v in enc.items()}
        device_type, enabled, dtype = autocast_settings(self.device)
        layers = self.layer_indices()
        with torch.autocast(device_type=device_type, dtype=dtype, enabled=enabled):
            result = self.model(**enc, output_hidden_states=layers is not None)
        if layers is None:
            states = result.last_hidden_state.float()
        else:
            states = torch.stack([result.hidden_states[i].float() for i in layers]).sum(0)
        return states, keep.to(states.device)

    @property
    def max_tokens(self) -> int:
        """``max_length``, capped by what the tokenizer says the model can take."""
        model_max = getattr(self.tokenizer, "model_max_length", None) if self.tokenizer is not None else None
        if model_max and model_max < 1_000_000:   # tokenizers without a limit report ~1e30
            return min(self.config.max_length, int(model_max))
        return self.config.max_length
