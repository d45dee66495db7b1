"""The shared crop cache: an artifact entry (:mod:`mer.core.artifacts`) of kind ``faces`` per
:class:`FaceConfig`, ``<shared_dir("faces")>/<key8>/`` with key8 = :func:`face_config_hash`.

Each clip is an item: ``<name>.npz`` (crops, frame indices, boxes, roll, frame counts; compressed,
lossless) with its record in ``records.jsonl`` (the sha256 of the file and the content
fingerprint of the video it was detected in); a clip without a face, or whose video cannot be
decoded, is a failure record instead, so no extractor retries it. A replaced video (another
fingerprint) or a damaged file reads as a miss: the clip is detected again and stored anew.

Crop caches of the layout before artifact entries (``<hash8>/<name>.npz`` with ``.fail.json``
markers, under another hash) are not read: detection is minutes per corpus, so their clips are
simply detected again; ``python -m mer.cache gc`` deletes them.
"""
from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np

from feature_extractors.visual.faces.clip import FaceClip
from feature_extractors.visual.faces.config import FaceConfig, face_config_hash, face_identity
from mer.core.artifacts import ArtifactEntry, ArtifactKind, register_kind
from mer.core.failures import MediaError
from mer.core.fingerprints import FingerprintCache

log = logging.getLogger(__name__)

FACE_KIND = register_kind(ArtifactKind("faces"))
SUFFIX = ".npz"

CACHED_FAILURES = frozenset({"no_face", "decode_error", "no_frames", "no_video_stream"})
"""Failures worth remembering: they come from the file itself. ``missing_file``/``no_media`` are
not cached (a file may be added later, and noticing them costs nothing)."""

_ENTRIES: dict[Path, ArtifactEntry] = {}


def face_cache_dir(context, cfg: FaceConfig) -> Path | None:
    """``<context.shared_dir("faces")>/<face-config-hash8>``, or None without a shared cache."""
    shared = context.shared_dir("faces") if context is not None else None
    if not shared:
        return None
    return Path(shared) / face_config_hash(cfg)[:8]


def face_cache(context, cfg: FaceConfig) -> ArtifactEntry | None:
    """The crop cache entry of ``cfg`` under ``context`` (one object per folder and process, so
    its records are read once), or None without a shared cache."""
    folder = face_cache_dir(context, cfg)
    return None if folder is None else face_entry(folder, cfg)


def face_entry(folder: str | Path, cfg: FaceConfig) -> ArtifactEntry:
    """The crop cache entry of ``cfg`` at ``folder``."""
    folder = Path(folder)
    entry = _ENTRIES.get(folder)
    if entry is None or entry.identity != face_identity(cfg):
        entry = _ENTRIES[folder] = ArtifactEntry(folder, FACE_KIND, face_identity(cfg))
    return entry


def face_cache_path(context, cfg: FaceConfig, name: str) -> Path | None:
    """Where the crops of sample ``name`` are cached (``.npz``), or None."""
    entry = face_cache(context, cfg)
    return None if entry is None else entry.item_path(name, SUFFIX)


def _source_fingerprint(video_path: str) -> str:
    """The video's content fingerprint (the feature cache's, remembered by stat): a replaced
    video, even of the same size, must not get the old crops."""
    return FingerprintCache().file(video_path)


def read_cached_clip(entry: ArtifactEntry, name: str, cfg: FaceConfig, video_path: str):
    """The cached :class:`FaceClip` of ``name``, the cached failure (a ``MediaError``), or None
    on a miss. A file that cannot be read whole (torn, corrupt, of another shape) or made from
    another video is a miss: the clip is detected again and stored anew."""
    item = entry.read(name, _source_fingerprint(video_path))
    if item is None:
        return None
    if item.failure is not None:
        return MediaError(*item.failure)
    try:
        with np.load(io.BytesIO(item.data), allow_pickle=False) as data:
            clip = FaceClip(crops=data["crops"], frame_index=data["frame_index"].astype(np.int64),
                            total_frames=int(data["total_frames"]), fps=float(data["fps"]),
                            source="video", boxes=data["boxes"].astype(np.int64),
                            roll_deg=data["roll_deg"].astype(np.float32),
                            frames_tried=int(data["frames_tried"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        entry.drop(name, f"unreadable ({type(err).__name__}: {err})")
        return None
    k = len(clip.crops)
    if (clip.crops.dtype != np.uint8 or clip.crops.shape[1:] != (cfg.size, cfg.size, 3) or k == 0
            or clip.frame_index.shape != (k,) or clip.boxes.shape != (k, 4) or clip.roll_deg.shape != (k,)):
        entry.drop(name, "it holds crops of another shape")
        return None
    return clip


def write_cached_clip(entry: ArtifactEntry, name: str, clip: FaceClip, video_path: str) -> None:
    """Store ``clip`` as item ``name`` (several processes may write the same clip at once:
    each writes its own temp file, and the last file and its record win together)."""
    buf = io.BytesIO()
    # Compressed: crops are most of a face cache's bytes (16 x 112 x 112 x 3 per clip) and
    # lossless compression keeps features from cached crops equal to those from fresh ones.
    np.savez_compressed(buf, crops=clip.crops, frame_index=clip.frame_index,
                        total_frames=np.int64(clip.total_frames), fps=np.float64(clip.fps),
                        boxes=clip.boxes, roll_deg=clip.roll_deg,
                        frames_tried=np.int64(clip.frames_tried))
    try:
        entry.write(name, buf.getvalue(), _source_fingerprint(video_path), SUFFIX,
                    crops=int(len(clip.crops)))
    except (OSError, TimeoutError) as err:       # a full or read-only disk costs speed, not the clip
        log.warning("face cache: cannot write the crops of %s into %s (%s)", name, entry.path, err)


def write_cached_failure(entry: ArtifactEntry, name: str, err, video_path: str) -> None:
    """Record why clip ``name`` has no crops (a ``MediaError``)."""
    try:
        entry.write_failure(name, err.reason, err.message, _source_fingerprint(video_path))
    except (OSError, TimeoutError) as werr:
        log.warning("face cache: cannot record the failure of %s in %s (%s)", name, entry.path, werr)
