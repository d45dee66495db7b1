"""Lexical extractors: transcripts -> features."""
from __future__ import annotations

from feature_extractors.base import ExtractionFailure
from mer.data.manifest import Sample


def transcript_or_failure(sample: Sample, language: str) -> str | ExtractionFailure:
    """The stripped transcript, or the failure that explains why there is none to embed.

    Shared by the text extractors (``no_transcript``: the sample has no text in ``language``;
    ``empty_transcript``: it has one and it is blank).
    """
    text = sample.text(language)
    if text is None:
        have = ", ".join(sorted(sample.transcripts)) or "none"
        return ExtractionFailure(sample.name, "no_transcript",
                                 f"sample {sample.name} has no {language} transcript (has: {have})")
    if not text.strip():
        return ExtractionFailure(sample.name, "empty_transcript",
                                 f"the {language} transcript of sample {sample.name} is empty")
    return text.strip()
