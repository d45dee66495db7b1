"""The face pipeline: sample frames, detect faces, follow the main face, align and crop it, cache.

One call does it all for a clip, :func:`load_face_clip(sample, cfg, context) <load_face_clip>`,
shared by every visual extractor that works on faces:

1. **Frames**: ``cfg.max_frames`` frames spread uniformly over the clip (0: every frame), or one
   per ``1 / cfg.sample_fps`` seconds capped by ``max_frames`` (:func:`.video.map_frames`: frames
   are handled as they are decoded, only crops are kept).
2. **Detection**: a detector from :data:`FACE_DETECTORS` (``haar``: OpenCV's Viola-Jones cascade,
   offline; ``yunet``: OpenCV's ``FaceDetectorYN``, needs its ``.onnx``). Another detector
   (RetinaFace, SCRFD, ...) plugs in by registering a class, see :data:`FACE_DETECTORS`.
3. **Main face**: :func:`track_main_face` links boxes across frames and keeps the track with the
   largest summed area, so a passer-by or a one-frame false detection does not steal the crop.
4. **Crop**: a square of side ``max(w, h) * (1 + 2 * margin)`` around the box. With
   ``cfg.align``, when the eyes are found (the detector's 5-point landmarks, or OpenCV's eye
   cascade inside the face box for Haar) the crop is rotated so the eye line is level (a
   similarity transform, :func:`aligned_crop`); else it is the plain square crop.
5. **Cache**: with a ``context`` whose ``shared_dir("faces")`` is set, each clip's crops are
   stored once in ``<shared_dir>/<face-config-hash8>/<name>.npz`` (written atomically) and every
   later call with the same :class:`FaceConfig`, from any extractor or process, reads them. A clip
   without a face (or whose video cannot be decoded) leaves a small ``<name>.fail.json`` marker
   with the reason instead, so it is not retried by each extractor.

The organisers' crops (``Sample.face_path``: MER2023 per-frame ``.bmp`` folders, MER2024/2025
``<name>.npy`` uint8 ``[N, 112, 112, 3]`` BGR) are already aligned faces: they are read (and
resized to ``cfg.size``) instead of detecting, and are not cached again.

Why ``align`` is on by default: on the demo corpus (300 clips of 224 px, 16 frames each, head
roll within about +-10 degrees) the eye cascade found an accepted pair of eyes in 94.3 % of the
4,800 main-face crops and in at least one frame of 299 of the 300 clips; within a clip the
measured roll varies by about 1 degree (median std over 20 clips), so it measures the head and
not noise. The eye search costs about a third of the Haar face detection per frame.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from mer.registry import Registry

log = logging.getLogger(__name__)

FACE_PIPELINE_VERSION = "2"
"""Bump when the crops change for the same :class:`FaceConfig` (it is part of the cache folder's
hash, so old cached crops are simply not found any more)."""

Box = tuple[int, int, int, int]
"""``(x, y, w, h)`` in pixels of the frame."""


# --- detectors ------------------------------------------------------------------------------

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
``feature_extractors/visual/`` (:func:`~feature_extractors.base.load_extractors` imports every
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
    def from_face_config(cls, cfg: "FaceConfig") -> "HaarFaceDetector":
        return cls(scale_factor=cfg.scale_factor, min_neighbors=cfg.min_neighbors,
                   min_size=(cfg.min_face_px,) * 2, max_side=cfg.detect_max_side)

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        import cv2

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
            clf = _load_cascade(self.cascade)
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
    def from_face_config(cls, cfg: "FaceConfig") -> "YuNetFaceDetector":
        return cls(weights=cfg.detector_weights, score_threshold=cfg.score_threshold,
                   nms_threshold=cfg.nms_threshold, max_side=cfg.detect_max_side)

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        return self.detect_with_landmarks(frame_rgb).boxes

    def detect_with_landmarks(self, frame_rgb: np.ndarray) -> Detections:
        import cv2

        bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
        bgr, scale = _shrink(bgr, self.max_side)
        net = self._net()
        net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = net.detect(bgr)
        return yunet_rows_to_detections(rows, scale)

    def _net(self):
        net = self.__dict__.get("_yunet")
        if net is None:
            import cv2

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
    import cv2

    if not max_side or max(image.shape[:2]) <= max_side:
        return image, 1.0
    scale = max_side / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _load_cascade(filename: str):
    import cv2

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


# --- eyes (for detectors without landmarks) -------------------------------------------------

@dataclass(frozen=True)
class HaarEyeFinder:
    """Both eyes inside a face box with OpenCV's ``haarcascade_eye.xml``.

    The cascade runs on the band of the box where eyes sit (rows 15-60 % of the box height) and
    a pair is accepted only if it looks like two eyes: one in each half of the box, about as big
    as each other, 25-65 % of the box width apart, the line between them within
    ``max_roll_deg`` of level. Of the accepted pairs, the one nearest the usual eye positions
    (30 % and 70 % across, 40 % down) wins. None when no pair passes: the crop is then left
    unrotated rather than rotated by a guess.
    """

    min_neighbors: int = 3
    max_roll_deg: float = 30.0
    work_width: int = 120

    def find(self, gray: np.ndarray, box: Box) -> np.ndarray | None:
        """Eye centres ``[2, 2]`` (x, y) in frame pixels, the left one in the image first.

        The band is searched at most ``work_width`` pixels wide (a bigger face is shrunk first):
        eyes stay well above the cascade's 20 px window, and the cost no longer grows with the
        face's size."""
        import cv2

        x, y, w, h = (int(v) for v in box)
        top, bottom = y + int(0.15 * h), y + int(0.60 * h)
        x0, x1 = max(x, 0), min(x + w, gray.shape[1])
        top, bottom = max(top, 0), min(bottom, gray.shape[0])
        if x1 - x0 < 20 or bottom - top < 10:
            return None
        band = gray[top:bottom, x0:x1]
        scale = min(1.0, self.work_width / w)
        if scale < 1.0:
            band = cv2.resize(band, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ws = w * scale
        # Eyes are 15-25 % of a Haar face box wide; a 1.15 step finds them as often as 1.1 on
        # the demo corpus (both eyes in 100 % of 240 boxes) at about 3/4 of the cost.
        eyes = self._classifier().detectMultiScale(
            band, scaleFactor=1.15, minNeighbors=self.min_neighbors,
            minSize=(max(8, int(ws * 0.12)),) * 2, maxSize=(max(9, int(ws * 0.35)),) * 2)
        eyes = np.asarray(eyes, dtype=np.float64).reshape(-1, 4) / scale
        if len(eyes) < 2:
            return None
        centres = eyes[:, :2] + eyes[:, 2:] / 2 + [x0, top]
        sizes = eyes[:, 2]
        expected = np.array([[x + 0.3 * w, y + 0.4 * h], [x + 0.7 * w, y + 0.4 * h]])
        best, best_cost = None, np.inf
        mid = x + w / 2
        for i in range(len(eyes)):
            for j in range(len(eyes)):
                left, right = centres[i], centres[j]
                if not (left[0] < mid <= right[0]):
                    continue
                dist = right[0] - left[0]
                roll = math.degrees(math.atan2(right[1] - left[1], dist))
                if not (0.25 * w <= dist <= 0.65 * w) or abs(roll) > self.max_roll_deg:
                    continue
                if max(sizes[i], sizes[j]) > 1.6 * min(sizes[i], sizes[j]):
                    continue
                cost = np.linalg.norm(left - expected[0]) + np.linalg.norm(right - expected[1])
                if cost < best_cost:
                    best, best_cost = np.stack([left, right]), cost
        return best

    def _classifier(self):
        clf = self.__dict__.get("_clf")
        if clf is None:
            clf = _load_cascade("haarcascade_eye.xml")
            object.__setattr__(self, "_clf", clf)
        return clf


def eye_roll_deg(eyes: np.ndarray) -> float:
    """Angle of the eye line in degrees (``[2, 2]`` eye centres, any order; image y points down,
    so a positive angle means the face is tilted clockwise as seen)."""
    left, right = sorted(np.asarray(eyes, np.float64)[:2], key=lambda p: p[0])
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


# --- tracking and cropping ------------------------------------------------------------------

def track_main_face(boxes_per_frame: Sequence[np.ndarray], gate: float = 1.5) -> list[Box | None]:
    """One box per frame (``None`` where the main face is not found), following the main face.

    Boxes are linked into tracks frame by frame: a box joins the track whose last box is nearest
    (centre distance below ``gate`` times that box's side), else it starts a new track. The main
    face is the track with the largest summed area, so a face that is both big and present wins
    over a bigger face seen once (a passer-by, a false detection). ``boxes_per_frame``: T arrays
    ``[N_t, 4]``. A frame whose only face belongs to another track gets ``None``: it is dropped
    rather than filled with someone else.
    """
    picks = main_face_indices(boxes_per_frame, gate)
    out: list[Box | None] = []
    for boxes, k in zip(boxes_per_frame, picks, strict=True):
        out.append(None if k is None else
                   tuple(int(v) for v in np.asarray(boxes).reshape(-1, 4)[k]))
    return out


def main_face_indices(boxes_per_frame: Sequence[np.ndarray], gate: float = 1.5) -> list[int | None]:
    """:func:`track_main_face` as the index of the main face's box in each frame's array."""
    tracks: list[dict[int, int]] = []                      # per track: frame -> box index
    areas: list[float] = []                                # per track: summed box area
    last: list[np.ndarray] = []                            # per track: its latest box
    for t, boxes in enumerate(boxes_per_frame):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        taken: set[int] = set()
        for i in np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable"):
            box = boxes[i]
            centre = box[:2] + box[2:] / 2
            best, best_dist = -1, np.inf
            for k, prev in enumerate(last):
                dist = np.linalg.norm(centre - (prev[:2] + prev[2:] / 2))
                if k not in taken and dist < gate * max(prev[2], prev[3]) and dist < best_dist:
                    best, best_dist = k, dist
            if best < 0:
                tracks.append({})
                areas.append(0.0)
                last.append(box)
                best = len(tracks) - 1
            tracks[best][t] = int(i)
            areas[best] += float(box[2] * box[3])
            last[best] = box
            taken.add(best)
    picks: list[int | None] = [None] * len(boxes_per_frame)
    if not tracks:
        return picks
    for t, i in tracks[int(np.argmax(areas))].items():
        picks[t] = i
    return picks


def square_box(box: Box, margin: float, frame_hw: tuple[int, int]) -> Box:
    """A square around ``box``: side ``max(w, h) * (1 + 2 * margin)``, same centre, then shifted
    (not clipped) to lie inside the frame so the crop keeps the face's aspect; shrunk only when
    the frame itself is smaller than the side."""
    x, y, w, h = box
    height, width = frame_hw
    side = int(round(max(w, h) * (1 + 2 * margin)))
    side = max(1, min(side, height, width))
    cx, cy = x + w / 2.0, y + h / 2.0
    left = int(round(min(max(cx - side / 2.0, 0), width - side)))
    top = int(round(min(max(cy - side / 2.0, 0), height - side)))
    return left, top, side, side


def resize_square(frame: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Cut ``box`` from ``frame`` and resize to ``size`` x ``size`` (area averaging when
    shrinking, which avoids aliasing; bilinear when enlarging)."""
    import cv2

    x, y, w, h = box
    patch = frame[y:y + h, x:x + w]
    interp = cv2.INTER_AREA if max(w, h) > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def alignment_matrix(box: Box, roll_deg: float, margin: float, size: int) -> np.ndarray:
    """The similarity transform ``[2, 3]`` (frame pixels -> crop pixels) of :func:`aligned_crop`:
    rotate by ``roll_deg`` about the box centre (levelling an eye line at that angle), scale the
    square of side ``max(w, h) * (1 + 2 * margin)`` to ``size``, centre it in the crop."""
    import cv2

    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    centre = (x + w / 2.0, y + h / 2.0)
    m = cv2.getRotationMatrix2D(centre, roll_deg, size / side)
    m[:, 2] += np.array([size / 2.0, size / 2.0]) - np.array(centre)
    return m


def aligned_crop(frame: np.ndarray, box: Box, roll_deg: float, margin: float, size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop of the face in ``box``, rotated so an eye line at ``roll_deg``
    becomes level (``cv2.warpAffine`` with :func:`alignment_matrix`). Pixels outside the frame
    repeat its border. A big face is first shrunk with area averaging (warping alone would
    alias when scaling down by more than 2)."""
    import cv2

    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    if side > 2 * size:
        # Cut a region that holds the rotated square (half-diagonal ~0.71 side), pad it where it
        # leaves the frame, and shrink it to twice the crop size before warping.
        half = int(math.ceil(side * 0.75))
        cx, cy = int(round(x + w / 2.0)), int(round(y + h / 2.0))
        x0, y0 = cx - half, cy - half
        pads = [max(0, -y0), max(0, y0 + 2 * half - frame.shape[0]),
                max(0, -x0), max(0, x0 + 2 * half - frame.shape[1])]
        region = frame[max(y0, 0):y0 + 2 * half, max(x0, 0):x0 + 2 * half]
        if any(pads):
            region = cv2.copyMakeBorder(region, *pads, cv2.BORDER_REPLICATE)
        factor = 2 * size / side
        small = cv2.resize(region, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        fx, fy = small.shape[1] / region.shape[1], small.shape[0] / region.shape[0]
        box = ((x - x0) * fx, (y - y0) * fy, w * fx, h * fy)
        frame = small
    m = alignment_matrix(box, roll_deg, margin, size)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class FrameFaces:
    """Every face found in one frame, cropped: ``boxes`` int64 ``[N, 4]``; ``crops`` uint8
    ``[N, S, S, 3]`` RGB; ``roll_deg`` float32 ``[N]`` the rotation applied (0 when the crop is
    not aligned); ``aligned`` bool ``[N]``."""

    boxes: np.ndarray
    crops: np.ndarray
    roll_deg: np.ndarray
    aligned: np.ndarray


def frame_faces(frame: np.ndarray, detector: FaceDetector, size: int, margin: float, align: bool,
                eye_finder: HaarEyeFinder | None = None,
                roll_hint: Callable[[Box], float | None] | None = None) -> FrameFaces:
    """Detect and crop every face of one RGB frame ``[H, W, 3]`` (aligned where eyes are found
    and ``align`` is on: the detector's landmarks first, else ``eye_finder``; where neither
    finds them, ``roll_hint(box)`` may give the roll to use, e.g. that of the same face in the
    frame before)."""
    det = detect_faces(detector, frame)
    n = len(det.boxes)
    crops = np.zeros((n, size, size, 3), np.uint8)
    roll = np.zeros(n, np.float32)
    aligned = np.zeros(n, bool)
    gray = None
    for i, box in enumerate(det.boxes):
        box = tuple(int(v) for v in box)
        eyes = None
        if align and det.landmarks is not None:
            eyes = det.landmarks[i, :2]
        elif align and eye_finder is not None:
            if gray is None:
                import cv2

                gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            eyes = eye_finder.find(gray, box)
        hint = None
        if eyes is not None and np.isfinite(eyes).all():
            hint = eye_roll_deg(eyes)
        elif align and roll_hint is not None:
            hint = roll_hint(box)
        if hint is not None:
            roll[i] = hint
            aligned[i] = True
            crops[i] = aligned_crop(frame, box, float(hint), margin, size)
        else:
            crops[i] = resize_square(frame, square_box(box, margin, frame.shape[:2]), size)
    return FrameFaces(det.boxes, crops, roll, aligned)


def crop_faces(frames: np.ndarray, detector: FaceDetector, size: int = 64, margin: float = 0.0,
               align: bool = False, eye_finder: HaarEyeFinder | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Detect, track and crop the main face of each frame.

    ``frames`` uint8 ``[T, H, W, 3]`` RGB -> ``(crops, found)``: ``crops`` uint8
    ``[K, size, size, 3]`` RGB for the K frames where the face was found (in frame order);
    ``found`` bool ``[T]`` says which frames those are (frames without a face are dropped, and
    ``T - found.sum()`` counts them). ``align``: see :func:`frame_faces`.
    """
    if align and eye_finder is None:
        eye_finder = HaarEyeFinder()
    per_frame = [frame_faces(f, detector, size, margin, align, eye_finder) for f in frames]
    picks = main_face_indices([p.boxes for p in per_frame])
    found = np.array([k is not None for k in picks], dtype=bool)
    crops = [p.crops[k] for p, k in zip(per_frame, picks) if k is not None]
    if not crops:
        return np.zeros((0, size, size, 3), dtype=np.uint8), found
    return np.stack(crops), found


# --- the face pipeline as one component ------------------------------------------------------

@dataclass(frozen=True)
class FaceConfig:
    """How face crops are made; every visual extractor that works on faces embeds one, so its
    cache key covers it, and extractors with equal ``FaceConfig`` share the cached crops."""

    detector: str = "haar"            # a FACE_DETECTORS name: haar (offline), yunet, a plugin
    detector_weights: str = ""        # model file for detectors that need one (YuNet .onnx, ...)
    scale_factor: float = 1.1         # Haar detectMultiScale arguments
    min_neighbors: int = 5
    min_face_px: int = 30
    score_threshold: float = 0.7      # YuNet (and plugins): minimum face score ...
    nms_threshold: float = 0.3        # ... and the IoU above which overlapping boxes merge
    detect_max_side: int = 480        # frames are shrunk to this longer side for detection
    margin: float = 0.1               # square crop side = max(w, h) * (1 + 2 * margin)
    size: int = 112                   # crop side in pixels (the organisers' openface_face size)
    max_frames: int = 16              # frames sampled uniformly per clip (0: every frame)
    sample_fps: float = 0.0           # > 0: one frame per 1/sample_fps s, at most max_frames
    align: bool = True                # rotate crops so the eyes are level (where eyes are found)


def face_config_from(value: Any, default: FaceConfig | None = None) -> FaceConfig:
    """A :class:`FaceConfig` from a config value: a FaceConfig as is, a mapping (Hydra's
    ``options.face: {max_frames: 32}``) over ``default``'s fields, None -> ``default``."""
    base = default or FaceConfig()
    if value is None:
        return base
    if isinstance(value, FaceConfig):
        return value
    if isinstance(value, dict) or hasattr(value, "items"):
        options = dict(value.items())
        known = {f.name for f in dataclasses.fields(FaceConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"face options {unknown} do not exist; FaceConfig has {sorted(known)}")
        return dataclasses.replace(base, **options)
    raise TypeError(f"face options must be a mapping or a FaceConfig, not {type(value).__name__}")


def validate_face_config(cfg: FaceConfig) -> None:
    """Fail early (in the main process, before any worker starts) on a config that cannot work:
    an unknown detector, a detector whose weights are missing, nonsense sizes."""
    det_cls = FACE_DETECTORS.get(cfg.detector)        # unknown -> lists the known names
    if cfg.size < 8:
        raise ValueError(f"face.size={cfg.size}: crops must be at least 8 pixels")
    if cfg.max_frames < 0 or cfg.sample_fps < 0:
        raise ValueError("face.max_frames and face.sample_fps must be >= 0 (0: no limit)")
    if cfg.margin < 0:
        raise ValueError(f"face.margin={cfg.margin} must be >= 0")
    _build_detector(det_cls, cfg)                     # cheap: weights load on first use


def face_weights_digest(cfg: FaceConfig) -> str:
    """sha256 of the detector's weights file ("none" when it has none)."""
    if not cfg.detector_weights:
        return "none"
    from feature_extractors.base import file_digest

    return file_digest(cfg.detector_weights)


def face_key_config(config: dict[str, Any]) -> dict[str, Any]:
    """An extractor's config dict for its cache key: the ``face`` entry without
    ``detector_weights`` (the weights are in the key by digest, see :func:`face_weights_digest`;
    where they lie is not)."""
    config = dict(config)
    if isinstance(config.get("face"), dict):
        config["face"] = {k: v for k, v in config["face"].items() if k != "detector_weights"}
    return config


def face_config_hash(cfg: FaceConfig) -> str:
    """sha256 over every FaceConfig field, :data:`FACE_PIPELINE_VERSION` and the detector's
    weights digest (not the path: moving the file keeps the cache)."""
    fields = dataclasses.asdict(cfg)
    fields["detector_weights"] = face_weights_digest(cfg)
    payload = json.dumps({"face_pipeline": FACE_PIPELINE_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class FaceClip:
    """The main face of one clip: ``crops`` uint8 ``[K, S, S, 3]`` RGB in frame order;
    ``frame_index`` int64 ``[K]`` the source frame each crop comes from; ``total_frames`` and
    ``fps`` of the source (fps 0.0 when unknown, e.g. for released crops); ``source`` is
    ``"video"`` (detected here) or ``"release"`` (the organisers' crops). For detected crops,
    ``boxes`` int64 ``[K, 4]`` (x, y, w, h in source pixels), ``roll_deg`` float32 ``[K]`` the
    rotation applied to level the eyes (0 where none was) and ``frames_tried`` the number of
    frames searched; None / 0 for released crops."""

    crops: np.ndarray
    frame_index: np.ndarray
    total_frames: int
    fps: float
    source: str
    boxes: np.ndarray | None = None
    roll_deg: np.ndarray | None = None
    frames_tried: int = 0

    def pick(self, num: int) -> "FaceClip":
        """``num`` crops spread uniformly over the clip's crops (all when it has fewer)."""
        from feature_extractors.visual.video import uniform_indices

        idx = uniform_indices(len(self.crops), num)
        return dataclasses.replace(
            self, crops=self.crops[idx], frame_index=self.frame_index[idx],
            boxes=None if self.boxes is None else self.boxes[idx],
            roll_deg=None if self.roll_deg is None else self.roll_deg[idx])


_DETECTORS: dict[FaceConfig, FaceDetector] = {}
_EYE_FINDER = HaarEyeFinder()


def _build_detector(cls: type, cfg: FaceConfig) -> FaceDetector:
    factory = getattr(cls, "from_face_config", None)
    return factory(cfg) if factory is not None else cls()


def make_detector(cfg: FaceConfig) -> FaceDetector:
    """The detector ``cfg`` names, built once per process (its weights load on first use)."""
    det = _DETECTORS.get(cfg)
    if det is None:
        det = _DETECTORS[cfg] = _build_detector(FACE_DETECTORS.get(cfg.detector), cfg)
    return det


def load_face_clip(sample, cfg: FaceConfig, context=None) -> FaceClip:
    """The main-face crops of ``sample``: the organisers' crops when ``sample.face_path`` is set
    (resized to ``cfg.size``), else detected, tracked and aligned in its video. Raises
    :class:`~feature_extractors.audio.io.MediaError` (``no_media``, decode reasons, ``no_face``).
    ``context`` (an ``ExtractContext``) names where crops are shared between extractors: with
    its ``shared_dir("faces")`` set, a clip is detected once and read from there afterwards."""
    from feature_extractors.audio.io import MediaError, no_media_error

    if sample.face_path:
        return _release_clip(sample.face_path, cfg)
    if not sample.video_path:
        raise no_media_error(sample, f"sample {sample.name} has neither a video_path nor a face_path")
    path = face_cache_path(context, cfg, sample.name)
    if path is not None:
        hit = read_cached_clip(path, cfg, sample.video_path)
        if isinstance(hit, MediaError):
            raise hit
        if hit is not None:
            return hit
    try:
        clip = detect_face_clip(sample.video_path, cfg, sample.name)
    except MediaError as err:
        if path is not None and err.reason in _CACHED_FAILURES:
            write_cached_failure(path, err, sample.video_path)
        raise
    if path is not None:
        write_cached_clip(path, clip, sample.video_path)
    return clip


def detect_face_clip(video_path: str, cfg: FaceConfig, name: str = "") -> FaceClip:
    """:func:`load_face_clip` for a video, without the cache."""
    from feature_extractors.audio.io import MediaError
    from feature_extractors.visual.video import map_frames

    detector = make_detector(cfg)
    eye_finder = _EYE_FINDER if cfg.align else None
    # A face whose eyes are missed in one frame (a blink, a blur) keeps the roll it had in the
    # frame before, so a clip's crops do not jump between levelled and tilted.
    previous: list[tuple[np.ndarray, float, float]] = []      # (centre, side, roll) per face

    def roll_before(box: Box) -> float | None:
        centre = np.array(box[:2], np.float64) + np.array(box[2:], np.float64) / 2
        for prev_centre, side, roll in previous:
            if np.linalg.norm(centre - prev_centre) < 0.5 * side:
                return roll
        return None

    def per_frame(frame: np.ndarray) -> FrameFaces:
        found = frame_faces(frame, detector, cfg.size, cfg.margin, cfg.align, eye_finder, roll_before)
        previous[:] = [(b[:2] + b[2:] / 2.0, float(max(b[2], b[3])), float(r))
                       for b, r, a in zip(found.boxes.astype(np.float64), found.roll_deg, found.aligned) if a]
        return found

    faces, index, fps, total = map_frames(video_path, per_frame, cfg.max_frames, cfg.sample_fps)
    picks = main_face_indices([f.boxes for f in faces])
    keep = [t for t, k in enumerate(picks) if k is not None]
    if not keep:
        raise MediaError("no_face", f"no face in 0 of {len(faces)} frames of {name or video_path} "
                                    f"(sampled from {total}; detector {cfg.detector})")
    crops = np.stack([faces[t].crops[picks[t]] for t in keep])
    boxes = np.stack([faces[t].boxes[picks[t]] for t in keep]).astype(np.int64)
    roll = np.array([faces[t].roll_deg[picks[t]] for t in keep], np.float32)
    return FaceClip(crops, index[keep].astype(np.int64), int(total), float(fps), "video",
                    boxes=boxes, roll_deg=roll, frames_tried=len(faces))


def _release_clip(face_path: str, cfg: FaceConfig) -> FaceClip:
    import cv2

    from feature_extractors.visual.video import read_face_track

    crops, idx, total = read_face_track(face_path, cfg.max_frames or None)
    if crops.shape[1:3] != (cfg.size, cfg.size):
        interp = cv2.INTER_AREA if crops.shape[1] > cfg.size else cv2.INTER_LINEAR
        crops = np.stack([cv2.resize(c, (cfg.size, cfg.size), interpolation=interp) for c in crops])
    return FaceClip(np.ascontiguousarray(crops), idx, total, 0.0, "release")


# --- the shared crop cache ------------------------------------------------------------------

_CACHED_FAILURES = {"no_face", "decode_error", "no_frames", "no_video_stream"}
"""Failures worth remembering: they come from the file itself. ``missing_file``/``no_media`` are
not cached (a file may be added later, and noticing them costs nothing)."""


def face_cache_dir(context, cfg: FaceConfig) -> Path | None:
    """``<context.shared_dir("faces")>/<face-config-hash8>``, or None without a shared cache."""
    shared = context.shared_dir("faces") if context is not None else None
    if not shared:
        return None
    return Path(shared) / face_config_hash(cfg)[:8]


def face_cache_path(context, cfg: FaceConfig, name: str) -> Path | None:
    """Where the crops of sample ``name`` are cached (``.npz``; the failure marker beside it is
    ``.fail.json``), or None."""
    folder = face_cache_dir(context, cfg)
    return None if folder is None else folder / f"{_file_stem(name)}.npz"


def _file_stem(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe != name or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe


def _failure_path(path: Path) -> Path:
    return path.with_name(path.name[:-len(".npz")] + ".fail.json")


def _source_size(video_path: str) -> int:
    try:
        return os.path.getsize(video_path)
    except OSError:
        return -1


def _source_fingerprint(video_path: str) -> str:
    """The video's content fingerprint (the feature cache's, remembered by stat): a replaced
    video of the same size must not get the old crops."""
    from mer.cache.inputs import FingerprintCache

    return FingerprintCache().file(video_path)


def read_cached_clip(path: Path, cfg: FaceConfig, video_path: str):
    """The cached :class:`FaceClip` at ``path``, the cached failure (a ``MediaError``), or None
    on a miss. A file that cannot be read whole (torn, corrupt, another version, made from a
    video of another size) is a miss: the clip is detected again and the file replaced."""
    from feature_extractors.audio.io import MediaError

    size = _source_size(video_path)
    fp = _source_fingerprint(video_path)
    fail = _failure_path(path)
    if fail.is_file():
        try:
            info = json.loads(fail.read_text())
            if info.get("version") == FACE_PIPELINE_VERSION and info.get("source_bytes") == size \
                    and info.get("source_fp", fp) == fp:
                return MediaError(info["reason"], info["message"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("face cache: ignoring unreadable failure marker %s (%s)", fail, err)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["version"]) != FACE_PIPELINE_VERSION or int(data["source_bytes"]) != size \
                    or ("source_fp" in data.files and str(data["source_fp"]) != fp):
                return None
            clip = FaceClip(crops=data["crops"], frame_index=data["frame_index"].astype(np.int64),
                            total_frames=int(data["total_frames"]), fps=float(data["fps"]),
                            source="video", boxes=data["boxes"].astype(np.int64),
                            roll_deg=data["roll_deg"].astype(np.float32),
                            frames_tried=int(data["frames_tried"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("face cache: %s is unreadable (%s: %s); detecting again", path, type(err).__name__, err)
        return None
    k = len(clip.crops)
    if (clip.crops.dtype != np.uint8 or clip.crops.shape[1:] != (cfg.size, cfg.size, 3) or k == 0
            or clip.frame_index.shape != (k,) or clip.boxes.shape != (k, 4) or clip.roll_deg.shape != (k,)):
        log.warning("face cache: %s holds crops of another shape; detecting again", path)
        return None
    return clip


def write_cached_clip(path: Path, clip: FaceClip, video_path: str) -> None:
    """Store ``clip`` at ``path`` atomically (several processes may write the same clip at once:
    each writes its own temp file and the last rename wins, with equal content)."""
    from mer.cache.store import atomic_write_bytes

    buf = io.BytesIO()
    # Compressed: crops are most of a face cache's bytes (16 x 112 x 112 x 3 per clip) and
    # lossless compression keeps features from cached crops equal to those from fresh ones.
    np.savez_compressed(buf, crops=clip.crops, frame_index=clip.frame_index,
                        total_frames=np.int64(clip.total_frames), fps=np.float64(clip.fps),
                        boxes=clip.boxes, roll_deg=clip.roll_deg,
                        frames_tried=np.int64(clip.frames_tried),
                        source_bytes=np.int64(_source_size(video_path)),
                        source_fp=np.array(_source_fingerprint(video_path)),
                        version=np.array(FACE_PIPELINE_VERSION))
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as err:             # a full or read-only disk costs speed, not the clip
        log.warning("face cache: cannot write %s (%s)", path, err)


def write_cached_failure(path: Path, err, video_path: str) -> None:
    """A small ``.fail.json`` marker beside ``path``: why the clip has no crops."""
    from mer.cache.store import atomic_write_bytes

    info = {"reason": err.reason, "message": err.message, "version": FACE_PIPELINE_VERSION,
            "source_bytes": _source_size(video_path), "source_fp": _source_fingerprint(video_path)}
    try:
        atomic_write_bytes(_failure_path(path), (json.dumps(info) + "\n").encode())
    except OSError as werr:
        log.warning("face cache: cannot write %s (%s)", _failure_path(path), werr)
