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
   stored once in the artifact entry ``<shared_dir>/<face-config-hash8>/`` (:mod:`.cache`: one
   ``<name>.npz`` per clip, each recorded with its sha256 and its video's fingerprint) and every
   later call with the same :class:`FaceConfig`, from any extractor or process, reads them. A clip
   without a face (or whose video cannot be decoded) is recorded as a failure with the reason
   instead, so it is not retried by each extractor.

The organisers' crops (``Sample.face_path``: MER2023 per-frame ``.bmp`` folders, MER2024/2025
``<name>.npy`` uint8 ``[N, 112, 112, 3]`` BGR) are already aligned faces: they are read (and
resized to ``cfg.size``) instead of detecting, and are not cached again.

Why ``align`` is on by default: on the demo corpus (300 clips of 224 px, 16 frames each, head
roll within about +-10 degrees) the eye cascade found an accepted pair of eyes in 94.3 % of the
4,800 main-face crops and in at least one frame of 299 of the 300 clips; within a clip the
measured roll varies by about 1 degree (median std over 20 clips), so it measures the head and
not noise. The eye search costs about a third of the Haar face detection per frame.

Modules: :mod:`.detectors` (the :data:`FACE_DETECTORS` registry, Haar, YuNet), :mod:`.align` (eyes,
roll, levelled and square crops), :mod:`.tracking` (the main face), :mod:`.config`
(:class:`FaceConfig`, its key), :mod:`.clip` (:class:`FaceClip`, detection over a video),
:mod:`.cache` (the crops kept), :mod:`.loader` (:func:`load_face_clip`).
"""
from feature_extractors.visual.faces.detectors import (FACE_DETECTORS, YUNET_SOURCE, Box, Detections, FaceDetector,
                                                       HaarFaceDetector, YuNetFaceDetector, detect_faces,
                                                       yunet_rows_to_detections)
from feature_extractors.visual.faces.align import (FrameFaces, HaarEyeFinder, aligned_crop, alignment_matrix,
                                                   eye_roll_deg, frame_faces, resize_square, square_box)
from feature_extractors.visual.faces.tracking import main_face_indices, track_main_face
from feature_extractors.visual.faces.config import (FACE_PIPELINE_VERSION, FaceConfig, face_config_from,
                                                    face_config_hash, face_identity, face_key_config,
                                                    face_weights_digest, make_detector, validate_face_config)
from feature_extractors.visual.faces.clip import (FaceClip, clip_rate, crop_faces, detect_face_clip, face_times,
                                                  release_clip)
from feature_extractors.visual.faces.cache import (CACHED_FAILURES, FACE_KIND, face_cache, face_cache_dir,
                                                   face_cache_path, face_entry, read_cached_clip, write_cached_clip,
                                                   write_cached_failure)
from feature_extractors.visual.faces.loader import load_face_clip

__all__ = ["CACHED_FAILURES", "FACE_DETECTORS", "FACE_KIND", "FACE_PIPELINE_VERSION", "YUNET_SOURCE", "Box",
           "Detections", "FaceClip", "FaceConfig", "FaceDetector", "FrameFaces", "HaarEyeFinder",
           "HaarFaceDetector", "YuNetFaceDetector", "aligned_crop", "clip_rate", "alignment_matrix", "crop_faces",
           "detect_face_clip", "detect_faces", "eye_roll_deg", "face_cache", "face_cache_dir", "face_cache_path",
           "face_config_from", "face_config_hash", "face_entry", "face_identity", "face_key_config", "face_times",
           "face_weights_digest", "frame_faces", "load_face_clip", "main_face_indices", "make_detector",
           "read_cached_clip", "release_clip", "resize_square", "square_box", "track_main_face", "validate_face_config",
           "write_cached_clip", "write_cached_failure", "yunet_rows_to_detections"]
