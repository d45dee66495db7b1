"""The clip loader: a sample's main-face crops, from the organisers' crops, the shared crop cache,
or detection (whose result the cache then keeps)."""
from __future__ import annotations

from feature_extractors.visual.faces.cache import (
    CACHED_FAILURES,
    face_cache,
    read_cached_clip,
    write_cached_clip,
    write_cached_failure,
)
from feature_extractors.visual.faces.clip import FaceClip, detect_face_clip, release_clip
from feature_extractors.visual.faces.config import FaceConfig
from mer.core.failures import MediaError, no_media_error


def load_face_clip(sample, cfg: FaceConfig, context=None) -> FaceClip:
    """The main-face crops of ``sample``: the organisers' crops when ``sample.face_path`` is set
    (resized to ``cfg.size``), else detected, tracked and aligned in its video. Raises
    :class:`~mer.core.failures.MediaError` (``no_media``, decode reasons, ``no_face``).
    ``context`` (an ``ExtractContext``) names where crops are shared between extractors: with
    its ``shared_dir("faces")`` set, a clip is detected once and read from there afterwards."""
    if sample.face_path:
        return release_clip(sample.face_path, cfg)
    if not sample.video_path:
        raise no_media_error(sample, f"sample {sample.name} has neither a video_path nor a face_path")
    cache = face_cache(context, cfg)
    if cache is not None:
        hit = read_cached_clip(cache, sample.name, cfg, sample.video_path)
        if isinstance(hit, MediaError):
            raise hit
        if hit is not None:
            return hit
    try:
        clip = detect_face_clip(sample.video_path, cfg, sample.name)
    except MediaError as err:
        if cache is not None and err.reason in CACHED_FAILURES:
            write_cached_failure(cache, sample.name, err, sample.video_path)
        raise
    if cache is not None:
        write_cached_clip(cache, sample.name, clip, sample.video_path)
    return clip
