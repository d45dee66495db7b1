"""Per-sample problems that never stop a batch: why one sample gave no feature.

An extractor turns whatever goes wrong with one sample (no face, a corrupt video, an empty
transcript) into an :class:`ExtractionFailure`; the cache records it beside the rows, the run
reports it, and every other sample goes on. Media readers raise :class:`MediaError`, whose
``reason`` is that failure's short type and whose message names the file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mer.core.samples import Sample


@dataclass(frozen=True)
class ExtractionFailure:
    """Why one sample produced no feature. ``reason`` is a short type (``no_face``,
    ``decode_error``, ``empty_transcript``, ``no_audio_stream``...); ``message`` is for people."""

    name: str
    reason: str
    message: str

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


class MediaError(Exception):
    """A media file could not give what an extractor reads (a waveform, frames, a face).

    ``reason`` is one of ``no_media`` (the sample names no audio or video file), ``external_link``
    (its file links out of the dataset root and was not followed), ``missing_file``,
    ``no_audio_stream``, ``decode_error``, ``empty_audio``. Audio extractors raise it too for a
    waveform they cannot describe (``too_short``, ``silent_audio``), so one ``except`` turns every
    per-clip problem into an :class:`ExtractionFailure`.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def to_failure(self, sample_name: str) -> ExtractionFailure:
        return ExtractionFailure(sample_name, self.reason, self.message)


def no_media_error(sample: Sample, message: str) -> MediaError:
    """The error for a sample without the media an extractor needs: ``external_link`` (with what
    was refused, see :func:`mer.data.recipe_io.refuse_external_links`) when the recipe dropped a
    path that links out of the dataset root, else ``no_media`` with ``message``."""
    refused = dict(sample.meta or {}).get("refused_media")
    if refused:
        return MediaError("external_link", "; ".join(str(v) for v in dict(refused).values()))
    return MediaError("no_media", message)
