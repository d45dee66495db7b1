"""Merging ASR transcripts with the subtitles a dataset provides.

Policies (``asr.merge.policy`` in ``conf/asr/*.yaml``):

* ``provided`` -- keep the provided transcript; ASR fills in only where it is missing or blank
  (MER2024's ``merge_trans_with_checked`` did the reverse substitution: checked subtitles
  replace ASR where they exist -- the same result).
* ``asr`` -- the ASR transcript only, whatever was provided (what a model sees on clips that ship
  without subtitles). A sample whose ASR failed then has no transcript in that language, so the
  text extractors record it as ``no_transcript``.
* ``both`` -- ``provided + separator + asr`` when both are non-empty, else whichever one is.
  The default separator is ``" [SEP] "``: BERT-family tokenizers read it as their own separator
  token (the sentence-pair boundary they were pretrained on); other tokenizers see the plain text
  ``[SEP]``.

Every merged sample records where its text came from in ``meta["asr"]``: ``source``
(``provided`` | ``asr`` | ``both`` | ``none``), ``policy``, ``transcribed`` (whether ASR ran on it)
and ``failure`` (why ASR gave nothing, e.g. ``no_audio_stream``; else ``None``).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from feature_extractors.asr.base import Transcript
from mer.core.samples import Sample

MERGE_POLICIES = ("provided", "asr", "both")
DEFAULT_SEPARATOR = " [SEP] "


def _check_policy(policy: str) -> None:
    if policy not in MERGE_POLICIES:
        raise ValueError(f"ASR merge policy must be one of {MERGE_POLICIES}, got {policy!r}")


def merge_transcripts(sample: Sample, asr_text: str | None, policy: str, language: str = "english",
                      separator: str = DEFAULT_SEPARATOR) -> tuple[str | None, str]:
    """``(text, source)``: the transcript ``sample`` should carry in ``language`` under ``policy``.

    ``asr_text`` is ``None`` where ASR produced nothing usable (not run, or failed). ``text`` is
    ``None`` when the sample is left without a transcript; ``source`` is ``provided``, ``asr``,
    ``both`` or ``none``.
    """
    _check_policy(policy)
    provided = sample.text(language)
    has_provided = bool(provided and provided.strip())
    has_asr = bool(asr_text and asr_text.strip())
    if policy == "asr":
        return (asr_text.strip(), "asr") if asr_text is not None else (None, "none")
    if policy == "provided":
        if has_provided or not has_asr:
            return provided, ("provided" if provided is not None else "none")
        return asr_text.strip(), "asr"
    if has_provided and has_asr:
        return f"{provided.strip()}{separator}{asr_text.strip()}", "both"
    if has_asr:
        return asr_text.strip(), "asr"
    return provided, ("provided" if provided is not None else "none")


def samples_needing_asr(samples: Sequence[Sample], language: str, policy: str) -> list[Sample]:
    """The samples whose merged transcript can depend on ASR: under ``provided`` only those whose
    provided ``language`` transcript is missing or blank (the rest never use it, so a corpus with
    full subtitles costs no ASR at all); under ``asr`` and ``both`` every sample."""
    _check_policy(policy)
    if policy != "provided":
        return list(samples)
    return [s for s in samples if not (s.text(language) or "").strip()]


def apply_asr(manifest_samples: Sequence[Sample], transcripts: Mapping[str, Transcript], language: str,
              policy: str, separator: str = DEFAULT_SEPARATOR) -> list[Sample]:
    """New samples whose ``transcripts[language]`` follows ``policy``; the inputs are not touched.

    ``transcripts`` maps sample names to :class:`Transcript` (``transcribe_samples``'s result); a
    sample without one, or with a failed one, merges as if ASR had nothing to say.
    """
    _check_policy(policy)
    out = []
    for sample in manifest_samples:
        t = transcripts.get(sample.name)
        asr_text = t.text if t is not None and t.ok else None
        text, source = merge_transcripts(sample, asr_text, policy, language, separator)
        new_transcripts = dict(sample.transcripts)
        if text is None:
            new_transcripts.pop(language, None)
        else:
            new_transcripts[language] = text
        meta = {**dict(sample.meta), "asr": {"source": source, "policy": policy, "transcribed": t is not None,
                                             "failure": t.failure_reason if t is not None else None}}
        out.append(dataclasses.replace(sample, transcripts=new_transcripts, meta=meta))
    return out
