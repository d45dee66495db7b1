"""Speech recognition: audio -> transcripts, cached per dataset condition, merged with subtitles.

    from feature_extractors.asr import apply_asr, build_asr, samples_needing_asr, transcribe_samples
    engine = build_asr("whisper", {"language": "english"})            # cheap: no weights yet
    todo = samples_needing_asr(samples, "english", "provided")         # all, unless "provided"
    transcripts = transcribe_samples(todo, engine, cache_dir)         # {name: Transcript}
    samples = apply_asr(samples, transcripts, "english", "provided")  # new Sample objects

Engines register by name (``whisper``: faster-whisper over a local CTranslate2 folder). ASR is
not a feature extractor: it makes text that the text extractors then embed.
"""
from feature_extractors.asr.base import (ASR_ENGINES, AsrEngine, Transcript, TranscriptSegment, build_asr,
                                         engine_for)
from feature_extractors.asr.cache import asr_tag, read_transcripts, transcribe_samples, transcript_dir
from feature_extractors.asr.merge import (DEFAULT_SEPARATOR, MERGE_POLICIES, apply_asr, merge_transcripts,
                                          samples_needing_asr)

__all__ = ["ASR_ENGINES", "AsrEngine", "DEFAULT_SEPARATOR", "MERGE_POLICIES", "Transcript", "TranscriptSegment",
           "apply_asr", "asr_tag", "build_asr", "engine_for", "merge_transcripts", "read_transcripts",
           "samples_needing_asr", "transcribe_samples", "transcript_dir"]
