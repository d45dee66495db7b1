"""The face pipeline: detect faces per frame, follow the main face, crop it square.

A detector is anything with ``detect(frame_rgb) -> boxes [N, 4]`` (``x, y, w, h`` in pixels,
int); :class:`HaarFaceDetector` is the one that works offline today (OpenCV 4.14's Haar cascade).
Other detectors (YuNet, RetinaFace) plug in by implementing :class:`FaceDetector`.

:func:`track_main_face` links each frame's boxes to the nearest box of the frame before into
tracks and keeps the track with the largest summed area (big and present most of the time), so a
passer-by or a one-frame false detection does not steal the crop. :func:`crop_faces` then cuts a
square around each pick (with margin, shifted to stay inside the frame) and resizes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

Box = tuple[int, int, int, int]
"""``(x, y, w, h)`` in pixels of the frame."""


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in one RGB frame ``[H, W, 3]`` uint8 -> boxes ``[N, 4]`` int (x, y, w, h)."""

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray: ...


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

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        import cv2

        gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        scale = 1.0
        if self.max_side and max(gray.shape) > self.max_side:
            scale = self.max_side / max(gray.shape)
            size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
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


def track_main_face(boxes_per_frame: Sequence[np.ndarray], gate: float = 1.5) -> list[Box | None]:
    """One box per frame (``None`` where the main face is not found), following the main face.

    Boxes are linked into tracks frame by frame: a box joins the track whose last box is nearest
    (centre distance below ``gate`` times that box's side), else it starts a new track. The main
    face is the track with the largest summed area, so a face that is both big and present wins
    over a bigger face seen once (a passer-by, a false detection). ``boxes_per_frame``: T arrays
    ``[N_t, 4]``. A frame whose only face belongs to another track gets ``None``: it is dropped
    rather than filled with someone else.
    """
    tracks: list[dict[int, np.ndarray]] = []               # per track: frame -> box
    last: list[np.ndarray] = []                            # per track: its latest box
    for t, boxes in enumerate(boxes_per_frame):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        taken: set[int] = set()
        for box in boxes[np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")]:
            centre = box[:2] + box[2:] / 2
            best, best_dist = -1, np.inf
            for k, prev in enumerate(last):
                dist = np.linalg.norm(centre - (prev[:2] + prev[2:] / 2))
                if k not in taken and dist < gate * max(prev[2], prev[3]) and dist < best_dist:
                    best, best_dist = k, dist
            if best < 0:
                tracks.append({})
                last.append(box)
                best = len(tracks) - 1
            tracks[best][t] = box
            last[best] = box
            taken.add(best)
    picks: list[Box | None] = [None] * len(boxes_per_frame)
    if not tracks:
        return picks
    main = max(tracks, key=lambda tr: sum(b[2] * b[3] for b in tr.values()))
    for t, box in main.items():
        picks[t] = tuple(int(v) for v in box)
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


def crop_faces(frames: np.ndarray, detector: FaceDetector, size: int = 64, margin: float = 0.0,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Detect, track and crop the main face of each frame.

    ``frames`` uint8 ``[T, H, W, 3]`` RGB -> ``(crops, found)``: ``crops`` uint8
    ``[K, size, size, 3]`` RGB for the K frames where the face was found (in frame order);
    ``found`` bool ``[T]`` says which frames those are (frames without a face are dropped, and
    ``T - found.sum()`` counts them).
    """
    boxes = [detector.detect(f) for f in frames]
    picks = track_main_face(boxes)
    found = np.array([p is not None for p in picks], dtype=bool)
    crops = [resize_square(f, square_box(p, margin, f.shape[:2]), size)
             for f, p in zip(frames, picks, strict=True) if p is not None]
    if not crops:
        return np.zeros((0, size, size, 3), dtype=np.uint8), found
    return np.stack(crops), found


def resize_square(frame: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Cut ``box`` from ``frame`` and resize to ``size`` x ``size`` (area averaging when
    shrinking, which avoids aliasing; bilinear when enlarging)."""
    import cv2

    x, y, w, h = box
    patch = frame[y:y + h, x:x + w]
    interp = cv2.INTER_AREA if max(w, h) > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


# --- the face pipeline as one component ------------------------------------------------------

@dataclass(frozen=True)
class FaceConfig:
    """How face crops are made; every visual extractor that works on faces embeds one, so its
    cache key covers it, and extractors with equal ``FaceConfig`` share the cached crops."""

    detector: str = "haar"            # a registered detector name
    detector_weights: str = ""        # model file for detectors that need one (YuNet .onnx, ...)
    scale_factor: float = 1.1         # Haar detectMultiScale arguments
    min_neighbors: int = 5
    min_face_px: int = 30
    detect_max_side: int = 480        # frames are shrunk to this longer side for detection
    margin: float = 0.1               # square crop side = max(w, h) * (1 + 2 * margin)
    size: int = 112                   # crop side in pixels (the organisers' openface_face size)
    max_frames: int = 64              # frames sampled uniformly per clip (0: every frame)


@dataclass
class FaceClip:
    """The main face of one clip: ``crops`` uint8 ``[K, S, S, 3]`` RGB in frame order;
    ``frame_index`` int64 ``[K]`` the source frame each crop comes from; ``total_frames`` and
    ``fps`` of the source (fps 0.0 when unknown, e.g. for released crops); ``source`` is
    ``"video"`` (detected here) or ``"release"`` (the organisers' crops)."""

    crops: np.ndarray
    frame_index: np.ndarray
    total_frames: int
    fps: float
    source: str


def make_detector(cfg: FaceConfig) -> FaceDetector:
    if cfg.detector == "haar":
        return HaarFaceDetector(scale_factor=cfg.scale_factor, min_neighbors=cfg.min_neighbors,
                                min_size=(cfg.min_face_px,) * 2, max_side=cfg.detect_max_side)
    raise ValueError(f"unknown face detector {cfg.detector!r}; known: ['haar']")


def load_face_clip(sample, cfg: FaceConfig, context=None) -> FaceClip:
    """The main-face crops of ``sample``: the organisers' crops when ``sample.face_path`` is set
    (resized to ``cfg.size``), else detected and tracked in its video. Raises
    :class:`~feature_extractors.audio.io.MediaError` (``no_media``, decode reasons, ``no_face``).
    ``context`` (an ``ExtractContext``) names where crops are shared between extractors."""
    import cv2

    from feature_extractors.audio.io import MediaError
    from feature_extractors.visual.video import read_face_npy, read_frames, uniform_indices

    n = cfg.max_frames or None
    if sample.face_path:
        crops = read_face_npy(sample.face_path)
        total = len(crops)
        idx = uniform_indices(total, n) if n else np.arange(total)
        crops = crops[idx]
        if crops.shape[1:3] != (cfg.size, cfg.size):
            interp = cv2.INTER_AREA if crops.shape[1] > cfg.size else cv2.INTER_LINEAR
            crops = np.stack([cv2.resize(c, (cfg.size, cfg.size), interpolation=interp) for c in crops])
        return FaceClip(np.ascontiguousarray(crops), idx.astype(np.int64), total, 0.0, "release")
    if not sample.video_path:
        raise MediaError("no_media", f"sample {sample.name} has neither a video_path nor a face_path")
    frames, fps, total = read_frames(sample.video_path, num_frames=n if n else 1 << 30)
    idx = uniform_indices(total, n) if n else np.arange(total)
    crops, found = crop_faces(frames, make_detector(cfg), size=cfg.size, margin=cfg.margin)
    if len(crops) == 0:
        raise MediaError("no_face", f"no face in {len(found)} sampled frames of {sample.name}")
    return FaceClip(crops, idx[found].astype(np.int64), total, fps, "video")
