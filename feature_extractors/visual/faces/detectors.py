"""Face detectors: the :data:`FACE_DETECTORS` registry, OpenCV's Haar cascade and YuNet."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mer.core.registry import Registry

Box = tuple[int, int, int, int]
"""``(x, y, w, h)`` in pixels of the frame."""


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in one RGB frame ``[H, W, 3]`` uint8 -> boxes ``[N, 4]`` int (x, y, w, h).

    A detector that also finds landmarks adds ``detect_with_landmarks(frame_rgb) ->
    Detections`` (boxes ``[N, 4]`` and landmarks ``[N, 5, 2]``: both eyes, nose tip, both mouth
    corners, in any left/right order; only the first two are used, to level the eyes)."""

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Detections:
    """Faces of one frame: ``boxes`` int64 ``[N, 4]`` (x, y, w, h); ``landmarks`` float32
    ``[N, 5, 2]`` (x, y) or None when the detector gives none."""

    boxes: np.ndarray
    landmarks: np.ndarray | None = None


FACE_DETECTORS: Registry[type] = Registry("face detector")
"""Detector classes by name (``FaceConfig.detector``).

To plug in another detector (RetinaFace-style), register a class in a module under
``feature_extractors/visual/`` (:data:`~feature_extractors.base.EXTRACTORS` imports every
module there, in worker processes too)::

    @FACE_DETECTORS.register("retinaface")
    class RetinaFaceDetector:
        @classmethod
        def from_face_config(cls, cfg: FaceConfig) -> "RetinaFaceDetector":
            return cls(cfg.detector_weights, cfg.score_threshold)   # load weights lazily
        def detect(self, frame_rgb):                 # [H, W, 3] uint8 RGB -> [N, 4] (x, y, w, h)
            return self.detect_with_landmarks(frame_rgb).boxes
        def detect_with_landmarks(self, frame_rgb):  # optional: landmarks level the eyes
            ...
            return Detections(boxes, landmarks)      # [N, 4] int, [N, 5, 2] float

``from_face_config`` is optional (without it the class is called with no argument); make it
cheap and load weights on first ``detect``: one instance is built per process and config.
"""


@FACE_DETECTORS.register("haar")
@dataclass(frozen=True)
class HaarFaceDetector:
    """OpenCV's Viola-Jones frontal-face cascade (``cv2.data.haarcascades``, OpenCV 4.x).

    ``scale_factor``, ``min_neighbors`` and ``min_size`` go to ``detectMultiScale`` as they are.
    Frames whose longer side exceeds ``max_side`` are shrunk to it before detection (boxes are
    scaled back): the cascade's cost grows with the pixel count (a 640x480 frame costs about
    1.8x a 480x360 one), and a close-up's face stays far above ``min_size`` at 480 px.
    ``min_size`` is in pixels of that shrunk image; ``max_side=0`` detects at full resolution.
    The cascade file is loaded on first use, so building the detector is free.
    """

    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: tuple[int, int] = (30, 30)
    max_side: int = 480
    cascade: str = "haarcascade_frontalface_default.xml"

    @classmethod
    def from_face_config(cls, cfg: Any) -> "HaarFaceDetector":    # a FaceConfig: .config imports this module
        return cls(scale_factor=cfg.scale_factor, min_neighbors=cfg.min_neighbors,
                   min_size=(cfg.min_face_px,) * 2, max_side=cfg.detect_max_side)

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        import cv2  # deferred: loads cv2 only when used

        gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        gray, scale = _shrink(gray, self.max_side)
        boxes = self._classifier().detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=tuple(self.min_size))
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return np.round(boxes / scale).astype(np.int64)

    def _classifier(self):
        # One classifier per detector object; a frozen dataclass keeps it off the fields.
        clf = self.__dict__.get("_clf")
        if clf is None:
            clf = load_cascade(self.cascade)
            object.__setattr__(self, "_clf", clf)
        return clf


YUNET_SOURCE = ("OpenCV Zoo: models/face_detection_yunet/face_detection_yunet_2023mar.onnx in "
                "the opencv/opencv_zoo repository (about 230 KB, MIT licence)")


@FACE_DETECTORS.register("yunet")
@dataclass(frozen=True)
class YuNetFaceDetector:
    """OpenCV's YuNet (``cv2.FaceDetectorYN``, OpenCV >= 4.8): boxes and 5 landmarks per face.

    ``weights`` is YuNet's ``.onnx`` (not shipped with OpenCV's wheels: see
    :data:`YUNET_SOURCE`). Frames are shrunk to ``max_side`` as for Haar; the net is built on
    first use and its input size follows each frame's.
    """

    weights: str
    score_threshold: float = 0.7
    nms_threshold: float = 0.3
    max_side: int = 480

    def __post_init__(self) -> None:
        if not self.weights or not os.path.isfile(self.weights):
            raise FileNotFoundError(
                f"face detector 'yunet' needs its ONNX model: set face.detector_weights (now "
                f"{self.weights!r}) to the file, e.g. features.visual.options.face."
                f"detector_weights=/models/face_detection_yunet_2023mar.onnx. It comes from "
                f"{YUNET_SOURCE}; or use face.detector=haar, which works offline")

    @classmethod
    def from_face_config(cls, cfg: Any) -> "YuNetFaceDetector":
        return cls(weights=cfg.detector_weights, score_threshold=cfg.score_threshold,
                   nms_threshold=cfg.nms_threshold, max_side=cfg.detect_max_side)

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        return self.detect_with_landmarks(frame_rgb).boxes

    def detect_with_landmarks(self, frame_rgb: np.ndarray) -> Detections:
        import cv2  # deferred: loads cv2 only when used

        bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
        bgr, scale = _shrink(bgr, self.max_side)
        net = self._net()
        net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = net.detect(bgr)
        return yunet_rows_to_detections(rows, scale)

    def _net(self):
        net = self.__dict__.get("_yunet")
        if net is None:
            import cv2  # deferred: loads cv2 only when used

            if not hasattr(cv2, "FaceDetectorYN"):
                raise RuntimeError(f"OpenCV {cv2.__version__} has no FaceDetectorYN (4.8+ has it)")
            net = cv2.FaceDetectorYN.create(self.weights, "", (320, 320), self.score_threshold,
                                            self.nms_threshold)
            object.__setattr__(self, "_yunet", net)
        return net


def yunet_rows_to_detections(rows: np.ndarray | None, scale: float = 1.0) -> Detections:
    """``FaceDetectorYN.detect``'s ``[N, 15]`` rows (x, y, w, h, 5 landmark (x, y) pairs, score;
    None when nothing is found) at an image shrunk by ``scale`` -> :class:`Detections` in pixels
    of the original frame."""
    if rows is None or len(rows) == 0:
        return Detections(np.zeros((0, 4), np.int64), np.zeros((0, 5, 2), np.float32))
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 15)
    boxes = np.round(rows[:, :4] / scale).astype(np.int64)
    landmarks = (rows[:, 4:14].reshape(-1, 5, 2) / scale).astype(np.float32)
    return Detections(boxes, landmarks)


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` shrunk (area averaging) so its longer side is at most ``max_side`` (0: as is),
    and the factor applied."""
    import cv2  # deferred: loads cv2 only when used

    if not max_side or max(image.shape[:2]) <= max_side:
        return image, 1.0
    scale = max_side / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def load_cascade(filename: str):
    import cv2  # deferred: loads cv2 only when used

    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise RuntimeError(f"OpenCV {cv2.__version__} has no Haar cascades (5.x dropped them); "
                           "install opencv-python-headless==4.14.0.94 (see constraints.txt)")
    path = filename if "/" in filename else cv2.data.haarcascades + filename
    clf = cv2.CascadeClassifier(path)
    if clf.empty():
        raise FileNotFoundError(f"cannot load the Haar cascade {path}")
    return clf


def detect_faces(detector: FaceDetector, frame_rgb: np.ndarray) -> Detections:
    """The detector's faces in one frame, with landmarks when it gives them."""
    with_landmarks = getattr(detector, "detect_with_landmarks", None)
    if with_landmarks is not None:
        det = with_landmarks(frame_rgb)
        boxes = np.asarray(det.boxes, dtype=np.int64).reshape(-1, 4)
        marks = None if det.landmarks is None else np.asarray(det.landmarks, np.float32).reshape(-1, 5, 2)
        return Detections(boxes, marks)
    return Detections(np.asarray(detector.detect(frame_rgb), dtype=np.int64).reshape(-1, 4))
