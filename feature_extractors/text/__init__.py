"""Lexical extractors: transcripts -> features."""
from __future__ import annotations

from mer.core.failures import ExtractionFailure
from mer.core.samples import Sample


def transcript_or_failure(sample: Sample, language: str) -> str | ExtractionFailure:
    """The stripped transcript, or the failure that explains why there is none to embed.

    Shared by the text extractors (``no_transcript``: the sample has no text in ``language``;
    ``empty_transcript``: it has one and it is blank; ``undecodable_transcript``: it holds
    U+FFFD replacement characters, i.e. bytes that were not valid in the file's encoding, so the
    words are lost and an embedding of them would be noise).
    """
    text = sample.text(language)
    if text is None:
        have = ", ".join(sorted(sample.transcripts)) or "none"
        return ExtractionFailure(sample.name, "no_transcript",
                                 f"sample {sample.name} has no {language} transcript (has: {have})")
    if not text.strip():
        return ExtractionFailure(sample.name, "empty_transcript",
                                 f"the {language} transcript of sample {sample.name} is empty")
    if "\ufffd" in text:
        return ExtractionFailure(sample.name, "undecodable_transcript",
                                 f"the {language} transcript of sample {sample.name} holds "
                                 f"{text.count(chr(0xFFFD))} undecodable character(s) (bytes not valid in the "
                                 "transcript file's encoding): fix the file's encoding")
    return text.strip()
