"""How face crops are made: :class:`FaceConfig`, its parsing and checks, its cache digest, and the
detector it names (built once per process)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from feature_extractors.visual.faces.detectors import FACE_DETECTORS, FaceDetector
from mer.core.hashing import cache_key, file_digest

FACE_PIPELINE_VERSION = "2"
"""Bump when the crops change for the same :class:`FaceConfig` (it is part of the cache entry's
key, so old cached crops are simply not found any more)."""


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

    return file_digest(cfg.detector_weights)


def face_key_config(config: dict[str, Any]) -> dict[str, Any]:
    """An extractor's config dict for its cache key: the ``face`` entry without
    ``detector_weights`` (the weights are in the key by digest, see :func:`face_weights_digest`;
    where they lie is not)."""
    config = dict(config)
    if isinstance(config.get("face"), dict):
        config["face"] = {k: v for k, v in config["face"].items() if k != "detector_weights"}
    return config


def face_identity(cfg: FaceConfig) -> dict[str, Any]:
    """What the crops of ``cfg`` depend on: every FaceConfig field, :data:`FACE_PIPELINE_VERSION`
    and the detector's weights digest (not the path: moving the file keeps the cache)."""
    fields = dataclasses.asdict(cfg)
    fields["detector_weights"] = face_weights_digest(cfg)
    return {"face_pipeline": FACE_PIPELINE_VERSION, **fields}


def face_config_hash(cfg: FaceConfig) -> str:
    """``cache_key`` of :func:`face_identity`: its first 8 digits name the crop cache entry."""
    return cache_key(face_identity(cfg))


_DETECTORS: dict[FaceConfig, FaceDetector] = {}


def _build_detector(cls: type, cfg: FaceConfig) -> FaceDetector:
    factory = getattr(cls, "from_face_config", None)
    return factory(cfg) if factory is not None else cls()


def make_detector(cfg: FaceConfig) -> FaceDetector:
    """The detector ``cfg`` names, built once per process (its weights load on first use)."""
    det = _DETECTORS.get(cfg)
    if det is None:
        det = _DETECTORS[cfg] = _build_detector(FACE_DETECTORS.get(cfg.detector), cfg)
    return det
