"""``hf_audio``: hidden states of a local Hugging Face speech encoder, per frame or per utterance.

Any folder that ``transformers.AutoModel`` opens as a speech encoder works, loaded offline
(``local_files_only``): wav2vec2, HuBERT, WavLM, data2vec-audio (the MERTools baselines use
TencentGameMate/chinese-hubert-large and -base, chinese-wav2vec2-large, facebook/wav2vec2-large,
microsoft/wavlm-large...), and Whisper, whose encoder is taken (``WhisperModel.get_encoder()``).
The folder's ``preprocessor_config.json`` gives the feature extractor (``AutoFeatureExtractor``):
waveform normalisation for the wav2vec2 family, 30 s log-mel windows for Whisper.

Output (float32), by the ``level`` option:

* ``utterance``: ``[D]`` -- the frames of all chunks pooled (``mean``; ``mean_std`` gives
  ``[2 * D]``), as MERTools' ``UTT`` features;
* ``frame``: ``[T, D]`` -- 50 frames per second (20 ms hop), as MERTools' ``FRA`` features;
  each frame at the centre of its window (:meth:`HFAudioEncoder.frame_grid`,
  :mod:`mer.core.timebase`): 12.5 ms + 20 ms k for the wav2vec2 family, 20 ms k for Whisper.

``D`` is the model's hidden size. ``layers`` picks what a frame is: ``last`` (the final hidden
state, MERTools 2023), ``last4_sum`` (the sum of the last four hidden states, MERTools 2024+ for
wav2vec2/HuBERT/WavLM/data2vec), or a list of indices into the hidden states (0 = the input of
the first transformer layer; negative counts from the end), summed. The last hidden state is the
model's final output (after the final layer norm of the "stable layer norm" large models), as
transformers 4.x listed it when MERTools extracted its features.

Long audio is cut into ``chunk_s`` pieces (10 s by default, as MERTools) that are encoded
separately and whose frames are concatenated. The waveform is normalised over the whole clip
first (the feature extractor's ``do_normalize``), so every chunk sees the clip's statistics.

Batching: pieces from all clips of a batch are encoded ``batch_size`` at a time. Zero padding
with an attention mask leaves a clip's features unchanged only for wav2vec2, HuBERT and WavLM
models with layer-normalised convolutions (``feat_extract_norm == "layer"``) whose feature
extractor returns an attention mask (the large models). The base models normalise the
convolution features over time (group norm, no mask support) and data2vec-audio's positional
convolution stack carries padding into the real frames; for those, only pieces of equal length
share a forward (every full ``chunk_s`` piece does), so padding never touches a feature. Whisper
pieces are always full 30 s windows; frames past a piece's real audio are cut off.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from feature_extractors.audio.chunking import (
    autocast_dtype,
    check_level_and_pooling,
    chunk_frame_times,
    conv_frame_grid,
    finish,
    split_into_chunks,
)
from feature_extractors.audio.io import load_audio
from feature_extractors.base import EXTRACTORS, Extractor
from mer.core.failures import ExtractionFailure
from mer.core.hashing import folder_digest
from mer.core.samples import Sample
from mer.core.timebase import with_times

log = logging.getLogger(__name__)

LAYER_MODES = ("last", "last4_sum")
_MASKED_FAMILIES = frozenset({"wav2vec2", "hubert", "wavlm"})
"""Model types whose padded batches were checked equal to one-by-one runs (layer-norm variants)."""
_WINDOWED_FAMILIES = frozenset({"whisper"})
"""Encoders that take fixed-length log-mel windows."""


@dataclass(frozen=True)
class EncoderInput:
    """What :meth:`HFAudioEncoder.load` returns for one clip (picklable, no torch).

    ``pieces``: per chunk, the normalised waveform ``[n]`` (wav2vec2 family) or the log-mel window
    ``[n_mels, 3000]`` (Whisper); ``num_samples``: the real audio samples of each chunk.
    """

    pieces: tuple[np.ndarray, ...]
    num_samples: tuple[int, ...]


@EXTRACTORS.register("hf_audio")
class HFAudioEncoder(Extractor):
    """Local HF speech encoder -> float32 ``[D]`` (utterance) or ``[T, D]`` (frame, 50 Hz)."""

    name: ClassVar[str] = "hf_audio"
    modality: ClassVar[str] = "audio"
    level: ClassVar[str] = "utterance"   # replaced per instance by the ``level`` option
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("model", "_feature_extractor")

    @dataclass(frozen=True)
    class Config:
        model_path: str = ""                   # required: a local HF model folder
        layers: Any = "last4_sum"              # "last" | "last4_sum" | list of hidden-state indices (summed)
        level: str = "utterance"               # "utterance" -> [D]; "frame" -> [T, D]
        pooling: str = "mean"                  # utterance level: "mean" [D] | "mean_std" [2 * D]
        chunk_s: float = 10.0                  # long audio is encoded in pieces of this length
        min_duration_s: float = 0.05           # shorter clips fail as too_short (no encoder frame)
        batch_size: int = 8                    # clips per batch, and pieces per forward
        num_threads: int | None = None         # torch CPU threads (process-wide); None: torch's default

    def __init__(self, config: "HFAudioEncoder.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        c = self.config
        self.config = dataclasses.replace(c, layers=_normalise_layers(self.name, c.layers))
        check_level_and_pooling(self.name, c.level, c.pooling)
        if c.chunk_s <= 0 or c.min_duration_s <= 0:
            raise ValueError(f"{self.name}: chunk_s and min_duration_s must be > 0, "
                             f"got chunk_s={c.chunk_s}, min_duration_s={c.min_duration_s}")
        self.level = c.level
        self.model = None
        self._feature_extractor = None
        self._model_config: dict | None = None
        self._digest: str | None = None
        self._pads_safely = False

    # --- identity (cheap) -----------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        if not self.config.model_path:
            raise ValueError(f"{self.name} needs the option model_path: a local Hugging Face speech "
                             "encoder folder (config.json, weights, preprocessor_config.json), e.g. "
                             "chinese-hubert-large, wav2vec2-large or whisper-large-v3; set "
                             "features.audio.options.model_path=/path/to/folder")
        path = Path(self.config.model_path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{self.name}: model_path {path} is not a Hugging Face model folder "
                                    "(no config.json); download the model once with "
                                    "`huggingface-cli download <repo> --local-dir <folder>` and point "
                                    "model_path at that folder")
        return path

    def weights_digest(self) -> str:
        """Digest of the model folder (weights, configs); never loads the model."""
        if self._digest is None:
            self._digest = folder_digest(self.model_dir)
        return self._digest

    @property
    def model_config(self) -> dict:
        """The folder's ``config.json`` (read once; cheap)."""
        if self._model_config is None:
            with open(self.model_dir / "config.json", encoding="utf-8") as f:
                self._model_config = json.load(f)
        return self._model_config

    @property
    def family(self) -> str:
        """The model type from ``config.json`` (``wav2vec2``, ``hubert``, ``wavlm``, ``whisper``...)."""
        return str(self.model_config.get("model_type", ""))

    @property
    def windowed(self) -> bool:
        return self.family in _WINDOWED_FAMILIES

    @property
    def dim(self) -> int:
        """Output width ``D`` (``2 * D`` for ``mean_std`` pooling); reads config.json only."""
        cfg = self.model_config
        width = int(cfg["d_model"] if self.windowed else cfg["hidden_size"])
        return 2 * width if self.level == "utterance" and self.config.pooling == "mean_std" else width

    # --- CPU stage ------------------------------------------------------------------------
    def feature_extractor(self):
        """The folder's feature extractor (light: a json file; built lazily in each process)."""
        if self._feature_extractor is None:
            self._feature_extractor = _load_feature_extractor(self.model_dir, self.model_config)
        return self._feature_extractor

    def warmup(self) -> None:
        """Import transformers and read the feature extractor in a fresh decoding worker."""
        fe = self.feature_extractor()
        silence = np.zeros(int(fe.sampling_rate), dtype=np.float32)
        if self.windowed:
            fe([silence], sampling_rate=fe.sampling_rate, return_tensors="np")
        else:
            fe(silence, sampling_rate=fe.sampling_rate, return_tensors="np")

    def load(self, sample: Sample) -> EncoderInput:
        """Decode the audio, normalise it (wav2vec2 family) or make log-mel windows (Whisper), cut
        it into ``chunk_s`` pieces. Raises :class:`MediaError` for unreadable or too short audio."""
        fe = self.feature_extractor()
        sample_rate_hz = int(fe.sampling_rate)
        wav = load_audio(sample, sample_rate_hz)
        min_samples = max(1, int(round(self.config.min_duration_s * sample_rate_hz)))
        if self.windowed:
            self._check_window(fe)
            pieces = split_into_chunks(wav, int(self.config.chunk_s * sample_rate_hz), min_samples, self.name)
            mels = fe(pieces, sampling_rate=sample_rate_hz, return_tensors="np").input_features
            return EncoderInput(tuple(np.ascontiguousarray(m, dtype=np.float32) for m in mels),
                                tuple(p.size for p in pieces))
        # Normalise over the whole clip before cutting, so every piece has the clip's statistics.
        wav = np.asarray(fe(wav, sampling_rate=sample_rate_hz, return_tensors="np").input_values[0],
                         dtype=np.float32)
        pieces = split_into_chunks(wav, int(self.config.chunk_s * sample_rate_hz), min_samples, self.name)
        return EncoderInput(tuple(np.ascontiguousarray(p) for p in pieces), tuple(p.size for p in pieces))

    def _check_window(self, fe) -> None:
        window_s = fe.n_samples / fe.sampling_rate
        if self.config.chunk_s > window_s:
            raise ValueError(f"{self.name}: Whisper encodes {window_s:.0f} s windows; set chunk_s "
                             f"<= {window_s:.0f} (got {self.config.chunk_s})")

    # --- model stage ----------------------------------------------------------------------
    def setup(self, device: str = "cpu") -> None:
        import torch  # deferred: loads torch only when used

        if self.windowed:
            self._check_window(self.feature_extractor())   # a config error, before any weights load
        if self.model is None:
            from transformers import AutoModel  # deferred: loads transformers only when used
            from transformers.utils import logging as hf_logging  # deferred: loads transformers only when used

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            hf_logging.disable_progress_bar()
            model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True,
                                              dtype=torch.float32)
            # Whisper: the encoder alone (the decoder is never run; dropping it frees its memory).
            self.model = (model.get_encoder() if self.windowed else model).eval()
            self._pads_safely = _pads_safely(self.family, self.model_config, self.feature_extractor())
            _check_layers(self.name, self.config.layers, self.num_hidden_states)
        if self.config.num_threads:
            # A busy or shared CPU runs faster with fewer threads than cores (idle OpenMP threads spin).
            torch.set_num_threads(self.config.num_threads)
        self.model.to(device)
        super().setup(device)

    @property
    def num_hidden_states(self) -> int:
        """Hidden states the model reports: its transformer layers + 1 (the first layer's input)."""
        cfg = self.model_config
        return int(cfg["encoder_layers"] if self.windowed else cfg["num_hidden_layers"]) + 1

    def forward(self, samples: Sequence[Sample], inputs: Sequence[EncoderInput]
                ) -> list[np.ndarray | ExtractionFailure]:
        """One ``[D]`` or ``[T, D]`` float32 array per sample, in order."""
        import torch  # deferred: loads torch only when used

        pieces = [(i, j, x, n) for i, inp in enumerate(inputs)
                  for j, (x, n) in enumerate(zip(inp.pieces, inp.num_samples))]
        frames: dict[tuple[int, int], np.ndarray] = {}
        enabled, amp_dtype = autocast_dtype(self.device)
        device_type = torch.device(self.device).type
        with torch.inference_mode(), torch.autocast(device_type=device_type, dtype=amp_dtype, enabled=enabled):
            for batch in self._batches(pieces):
                for (i, j, _, _), out in zip(batch, self._encode(batch)):
                    frames[i, j] = out
        out = []
        for i, inp in enumerate(inputs):
            result = finish(np.concatenate([frames[i, j] for j in range(len(inp.pieces))]), self.level,
                            self.config.pooling)
            if self.level == "frame":
                result = with_times(result, self.frame_times([len(frames[i, j]) for j in range(len(inp.pieces))]))
            out.append(result)
        return out

    def frame_grid(self) -> tuple[float, float]:
        """``(hop, centre of frame 0)`` in input samples: Whisper's encoder frame ``k`` reads the
        centred mel frames around ``2k`` (conv stride 2); the wav2vec2 family's convolutional
        encoder gives hop 320 and a 400-sample window (from ``conv_kernel``/``conv_stride``)."""
        cfg = self.model_config
        if self.windowed:
            return 2.0 * int(self.feature_extractor().hop_length), 0.0
        hop, centre = conv_frame_grid(cfg.get("conv_kernel") or [10, 3, 3, 3, 3, 2, 2],
                                      cfg.get("conv_stride") or [5, 2, 2, 2, 2, 2, 2])
        return float(hop), centre

    def frame_times(self, frames_per_chunk: list[int]) -> np.ndarray:
        """Seconds of a clip's frames, chunk after chunk (:func:`~.chunking.chunk_frame_times`)."""
        rate = int(self.feature_extractor().sampling_rate)
        hop, centre = self.frame_grid()
        return chunk_frame_times(frames_per_chunk, int(self.config.chunk_s * rate), rate, hop, centre)

    def _batches(self, pieces: list) -> list[list]:
        """Groups of at most ``batch_size`` pieces that may share a forward (see module docstring)."""
        bs = max(1, self.config.batch_size)
        if self.windowed:
            groups = [pieces]                                  # all windows have the same shape
        elif self._pads_safely:
            # Longest first and neighbours in length together: little padding per batch.
            groups = [sorted(pieces, key=lambda p: -p[2].size)]
        else:
            by_length: dict[int, list] = defaultdict(list)
            for p in pieces:
                by_length[p[2].size].append(p)
            groups = list(by_length.values())
        return [g[k:k + bs] for g in groups for k in range(0, len(g), bs)]

    def _encode(self, batch: list) -> list[np.ndarray]:
        """Frames ``[T_real, D]`` of each piece of one batch."""
        import torch  # deferred: loads torch only when used

        lengths = [p[2].shape[-1] for p in batch]
        if self.windowed:
            x = torch.from_numpy(np.stack([p[2] for p in batch])).to(self.device)       # [B, M, 3000]
            out = self.model(input_features=x, output_hidden_states=True)
            hop = int(self.feature_extractor().hop_length)
            # Two mel frames per encoder frame (conv stride 2): 50 per second at 16 kHz.
            real = [max(1, -(-p[3] // (2 * hop))) for p in batch]
        else:
            x = np.zeros((len(batch), max(lengths)), dtype=np.float32)
            mask = np.zeros((len(batch), max(lengths)), dtype=np.int64)
            for k, p in enumerate(batch):
                x[k, :lengths[k]] = p[2]
                mask[k, :lengths[k]] = 1
            x_t = torch.from_numpy(x).to(self.device)
            if self._pads_safely:
                mask_t = torch.from_numpy(mask).to(self.device)
                out = self.model(input_values=x_t, attention_mask=mask_t, output_hidden_states=True)
                real = self.model._get_feat_extract_output_lengths(mask_t.sum(-1)).tolist()
            else:                                              # equal lengths: nothing is padded
                out = self.model(input_values=x_t, output_hidden_states=True)
                real = [out.last_hidden_state.shape[1]] * len(batch)
        selected = _select_layers(out, self.config.layers).float().cpu().numpy()     # [B, T, D]
        return [selected[k, :int(real[k])] for k in range(len(batch))]


# --- helpers ---------------------------------------------------------------------------------
def _normalise_layers(name: str, layers: Any) -> str | tuple[int, ...]:
    """``last`` | ``last4_sum`` | a non-empty tuple of ints (Hydra lists become tuples)."""
    if isinstance(layers, str):
        if layers not in LAYER_MODES:
            raise ValueError(f"{name}: layers must be one of {LAYER_MODES} or a list of hidden-state "
                             f"indices, got {layers!r}")
        return layers
    try:
        indices = tuple(int(i) for i in layers)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: layers must be one of {LAYER_MODES} or a list of hidden-state "
                         f"indices, got {layers!r}") from None
    if not indices:
        raise ValueError(f"{name}: layers is an empty list")
    return indices


def _layer_indices(layers: str | tuple[int, ...]) -> tuple[int, ...]:
    return {"last": (-1,), "last4_sum": (-4, -3, -2, -1)}.get(layers, layers)  # type: ignore[arg-type]


def _check_layers(name: str, layers: str | tuple[int, ...], num_hidden_states: int) -> None:
    bad = [i for i in _layer_indices(layers) if not -num_hidden_states <= i < num_hidden_states]
    if bad:
        raise ValueError(f"{name}: layers {layers!r} asks for hidden state(s) {bad}, but the model has "
                         f"{num_hidden_states} (its layers + 1)")


def _select_layers(out, layers: str | tuple[int, ...]):
    """``[B, T, D]``: the sum of the chosen hidden states."""
    hidden = list(out.hidden_states)
    # transformers 5 lists each layer's raw output; the final output (after the final layer norm
    # of stable-layer-norm models) is what transformers 4 listed last and what MERTools summed.
    hidden[-1] = out.last_hidden_state
    chosen = [hidden[i].float() for i in _layer_indices(layers)]
    total = chosen[0]
    for h in chosen[1:]:
        total = total + h
    return total


def _pads_safely(family: str, model_config: dict, feature_extractor) -> bool:
    """Whether zero padding + attention mask leaves every clip's frames as they are alone."""
    return (family in _MASKED_FAMILIES
            and model_config.get("feat_extract_norm", "group") == "layer"
            and bool(getattr(feature_extractor, "return_attention_mask", False)))


def _load_feature_extractor(model_dir: Path, model_config: dict):
    """``AutoFeatureExtractor`` of the folder; a folder without ``preprocessor_config.json`` (some
    wav2vec2-family uploads) gets the standard 16 kHz ``Wav2Vec2FeatureExtractor``."""
    # deferred: loads transformers only when used
    from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor

    if (model_dir / "preprocessor_config.json").is_file():
        return AutoFeatureExtractor.from_pretrained(str(model_dir), local_files_only=True)
    if model_config.get("model_type") in _WINDOWED_FAMILIES:
        raise FileNotFoundError(f"{model_dir} has no preprocessor_config.json; a Whisper folder needs "
                                "it (feature_size, n_samples); copy it from the model's Hub repository")
    layer_norm = model_config.get("feat_extract_norm", "layer") == "layer"
    log.warning("%s has no preprocessor_config.json; using Wav2Vec2FeatureExtractor(sampling_rate=16000, "
                "do_normalize=True, return_attention_mask=%s)", model_dir, layer_norm)
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=layer_norm)
