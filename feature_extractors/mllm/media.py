"""A sample's inputs as chat content parts: its transcript, sampled video frames (or main-face
crops from the shared face pipeline) as JPEG ``image_url`` data URLs, and its audio as a WAV
``input_audio`` part (for endpoints that take audio).

Frames: ``frames`` of them, spread uniformly over the clip (the centre of equal segments,
:func:`feature_extractors.visual.video.uniform_indices`; GPT-4V-emotion took the first frame of
each segment, half a segment earlier), resized so the longer side is at most ``size`` pixels.
Faces: the main-face crops of the face pipeline (``source: face``), shared with every visual
extractor that uses the same :class:`FaceConfig`.

:func:`media_key` is what an answer's cache key holds of the media: the digests of the files read
(content, not path or time) and every setting that changes what is sent, so a rerun finds its
answers without decoding anything and a changed clip or setting asks again.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from feature_extractors.audio.io import load_audio, media_path
from feature_extractors.visual.faces import FaceConfig, load_face_clip
from feature_extractors.visual.video import map_frames
from mer.core.failures import MediaError
from mer.core.hashing import file_digest, folder_digest
from mer.core.samples import Sample

MEDIA_VERSION = "1"
"""Bump when the frames or audio sent for the same settings change."""

SOURCES = ("frame", "face")


@dataclass(frozen=True)
class MediaSettings:
    """What of a clip's media a request carries (module docstring)."""

    frames: int = 3
    size: int = 336
    source: str = "frame"
    jpeg_quality: int = 90
    audio_max_s: float = 30.0
    language: str | None = None
    face: FaceConfig = dataclasses.field(default_factory=FaceConfig)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"mllm frames source must be one of {SOURCES}, got {self.source!r}")
        if self.frames < 1:
            raise ValueError("mllm frames count must be at least 1")


def transcript(sample: Sample, language: str | None) -> str:
    """The sample's transcript in ``language`` (``None``: the first non-empty one), tabs and
    newlines folded as GPT-4V-emotion does; ``""`` when it has none."""
    text = sample.text(language) if language else next((t for t in sample.transcripts.values() if t), "")
    return " ".join(str(text or "").replace("\t", " ").split())


def _jpeg_url(rgb: np.ndarray, size: int, quality: int) -> str:
    import cv2  # deferred: registry discovery imports this module; cv2 only when a frame is sent
    h, w = rgb.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise MediaError("decode_error", "a frame could not be encoded as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def frame_urls(sample: Sample, settings: MediaSettings, context: Any = None) -> list[str]:
    """The sample's frames (or face crops) as JPEG data URLs."""
    if settings.source == "face":
        clip = load_face_clip(sample, settings.face, context).pick(settings.frames)
        return [_jpeg_url(c, settings.size, settings.jpeg_quality) for c in clip.crops]
    if not sample.video_path:
        raise MediaError("no_media", f"sample {sample.name} has no video to take frames from")
    urls, _, _, _ = map_frames(sample.video_path, lambda f: _jpeg_url(f, settings.size, settings.jpeg_quality),
                               settings.frames)
    return urls


def audio_part(sample: Sample, settings: MediaSettings) -> dict[str, Any]:
    """The sample's audio as an OpenAI ``input_audio`` part (16 kHz mono WAV, at most
    ``audio_max_s`` seconds)."""
    import soundfile as sf  # deferred: registry discovery imports this module; soundfile only for audio

    wave = load_audio(sample)[: int(settings.audio_max_s * 16000)]
    buf = io.BytesIO()
    sf.write(buf, wave, 16000, format="WAV", subtype="PCM_16")
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(buf.getvalue()).decode("ascii"),
                                                   "format": "wav"}}


def sample_parts(sample: Sample, inputs: frozenset[str], settings: MediaSettings, index: int = 1,
                 context: Any = None, extra_text: str | None = None) -> list[dict[str, Any]]:
    """The content parts of one item of a request: a header naming its position, the transcript,
    the frames, the audio, and ``extra_text`` (the two descriptions of a preference item)."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": f"name: {index}"}]
    if "text" in inputs:
        parts.append({"type": "text", "text": f"Subtitle: {transcript(sample, settings.language) or '(none)'}"})
    if "video" in inputs:
        parts += [{"type": "image_url", "image_url": {"url": u}} for u in frame_urls(sample, settings, context)]
    if "audio" in inputs:
        parts.append(audio_part(sample, settings))
    if extra_text:
        parts.append({"type": "text", "text": extra_text})
    return parts


def media_key(sample: Sample, inputs: frozenset[str], settings: MediaSettings) -> dict[str, Any]:
    """What the cache key holds of the sample's media (module docstring)."""
    key: dict[str, Any] = {"media_version": MEDIA_VERSION}
    if "text" in inputs:
        key["text"] = transcript(sample, settings.language)
    if "video" in inputs:
        src = sample.face_path if settings.source == "face" and sample.face_path else sample.video_path
        key["video"] = _digest(src) if src else None
        key["frames"] = {"n": settings.frames, "size": settings.size, "source": settings.source,
                         "quality": settings.jpeg_quality,
                         "face": dataclasses.asdict(settings.face) if settings.source == "face" else None}
    if "audio" in inputs:
        path = media_path(sample) if (sample.audio_path or sample.video_path) else None
        key["audio"] = _digest(path) if path else None
        key["audio_max_s"] = settings.audio_max_s
    return key


def _digest(path: str) -> str:
    """A file's content digest, or a folder's (released face crops); a missing file is the
    sample's ``missing_file`` failure."""
    if os.path.isdir(path):
        return folder_digest(path, suffixes=(".jpg", ".jpeg", ".png", ".bmp", ".npy"))
    if not os.path.isfile(path):
        raise MediaError("missing_file", f"{path} does not exist")
    return file_digest(path)


def needs_media(inputs: Sequence[str]) -> bool:
    return bool(set(inputs) & {"video", "audio"})
