"""One clip's main-face crops (:class:`FaceClip`): detected, tracked and aligned in its video, or
the organisers' released crops."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from feature_extractors.visual.faces.align import FrameFaces, HaarEyeFinder, frame_faces
from feature_extractors.visual.faces.config import FaceConfig, make_detector
from feature_extractors.visual.faces.detectors import Box, FaceDetector
from feature_extractors.visual.faces.tracking import main_face_indices
from feature_extractors.visual.video import map_frames, read_face_track, uniform_indices, video_rate
from mer.core.failures import MediaError
from mer.core.timebase import frame_times


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
        idx = uniform_indices(len(self.crops), num)
        return dataclasses.replace(
            self, crops=self.crops[idx], frame_index=self.frame_index[idx],
            boxes=None if self.boxes is None else self.boxes[idx],
            roll_deg=None if self.roll_deg is None else self.roll_deg[idx])


def face_times(clip: FaceClip, video_path: str | None = None) -> np.ndarray | None:
    """When each crop of ``clip`` is (seconds, :mod:`mer.core.timebase`): its source frame over the
    video's rate, so frames without a face drop out with their time. The organisers' crops carry
    no rate: the sample's video gives it when the track holds one crop per video frame (its length
    within 1 % of the video's frame count); else, and without a video, None (unknown)."""
    return frame_times(clip.frame_index, clip_rate(clip, video_path))


def clip_rate(clip: FaceClip, video_path: str | None = None) -> float:
    """The frame rate ``clip.frame_index`` counts in (0.0: unknown); see :func:`face_times`."""
    if clip.fps > 0:
        return float(clip.fps)
    if clip.source == "release" and video_path:
        count, fps = video_rate(video_path)
        if fps > 0 and count > 0 and abs(count - clip.total_frames) <= max(2, 0.01 * count):
            return float(fps)
    return 0.0


_EYE_FINDER = HaarEyeFinder()


def detect_face_clip(video_path: str, cfg: FaceConfig, name: str = "") -> FaceClip:
    """:func:`load_face_clip` for a video, without the cache."""
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


def release_clip(face_path: str, cfg: FaceConfig) -> FaceClip:
    import cv2  # deferred: loads cv2 only when used

    crops, idx, total = read_face_track(face_path, cfg.max_frames or None)
    if crops.shape[1:3] != (cfg.size, cfg.size):
        interp = cv2.INTER_AREA if crops.shape[1] > cfg.size else cv2.INTER_LINEAR
        crops = np.stack([cv2.resize(c, (cfg.size, cfg.size), interpolation=interp) for c in crops])
    return FaceClip(np.ascontiguousarray(crops), idx, total, 0.0, "release")


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
