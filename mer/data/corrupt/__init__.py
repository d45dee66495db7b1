"""MER-NOISE corruption as the organisers made it, made reproducible and recorded.

Per clip (MER2023 ``main-corrupt.py``; MER2024 ``main-noise.py``):

* audio: speech noise mixed at an SNR drawn from the integers 5..10 dB. The noise is scaled so
  that ``RMS(clean) / RMS(noise)`` is the SNR, added, and the whole mix scaled down if it would
  clip (never hard-clipped);
* video: a blur factor drawn from {1, 2, 4}: ``log2(factor)`` x ``cv2.pyrDown`` then as many
  ``cv2.pyrUp``, the same factor for every frame of the clip (1 = untouched).

Conditions (the cache condition of corrupted features has the same name):

==================  =====================================================================
``clean``           untouched
``mixed``           the organisers' protocol: SNR and blur factor drawn per clip
``snr<k>``          audio at ``k`` dB SNR, video untouched (a point of a robustness curve)
``blur<f>``         video blurred by ``f``, audio untouched
``snr<k>_blur<f>``  both, fixed
==================  =====================================================================

Noise: a MUSAN-style folder of speech files (``noise_dir``; MUSAN's speech subset is what the
organisers used, because music and noise "convey emotion"): random files concatenated until
longer than the clip, then a random crop. Offline default: babble, ``babble_talkers`` such streams
built from *other* utterances of the same dataset, each RMS-normalised, summed.

Reproducibility: every random choice for a clip comes from a generator seeded by (seed, clip name,
purpose), never by call order, so the same seed gives byte-identical files for any number of
workers or any subset of clips. The noise segment of a clip does not depend on the condition:
``snr5`` and ``snr10`` of a clip carry the same noise at two levels, so a robustness curve
compares like with like. What each clip drew is saved beside it (``<clip>.corruption.json``) and
per split (``<split>-corruption.csv``: ``name,snr_db,blur_factor,noise``).

Where corrupted material lives: a corrupted copy of the media in the dataset's release layout
(each clip at its relative path, the release's top-level files copied), written once per
(dataset, condition, settings) under ``<cache>/corrupted/<dataset>/<condition>/``. A manifest
pointing at the copy lets every extractor run unchanged. Containers are rewritten packet for
packet where a stream is untouched (``snr7`` keeps the video's bytes; ``blur4`` the audio's), so an
untouched modality's features equal the clean ones. ``python -m mer.corrupt`` writes the same
copy of a whole dataset anywhere, to share or inspect.

The package, by job: :mod:`~mer.data.corrupt.conditions` (condition names, settings, per-clip
draws), :mod:`~mer.data.corrupt.audio` (mixing at an SNR, noise sources),
:mod:`~mer.data.corrupt.video` (pyramid blur, the container writer), :mod:`~mer.data.corrupt.clips`
(one clip's job and its sidecar), :mod:`~mer.data.corrupt.copies` (a dataset's corrupted copy and
its split tables).
"""
from __future__ import annotations

from __future__ import annotations

from .audio import NoiseSource, babble_pool, mix_at_snr, no_clip
from .clips import SIDECAR_SUFFIX, ClipJob, corrupt_clip
from .conditions import (BLUR_CHOICES, CORRUPTION_VERSION, NOISE_EXTS, SAMPLE_RATE_HZ, SNR_CHOICES_DB, Condition,
                         CorruptionSettings, clip_rng, draw_levels, folder_listing_digest, parse_condition)
from .copies import (SETTINGS_FILE, SPLIT_TABLE_COLUMNS, CorruptedCopy, copy_release_files, corrupt_manifest,
                     corrupt_samples, corrupted_root, plan_jobs, write_split_tables)
from .video import pyramid_blur, write_corrupted_container

__all__ = [
    "BLUR_CHOICES", "CORRUPTION_VERSION", "NOISE_EXTS", "SAMPLE_RATE_HZ", "SETTINGS_FILE", "SIDECAR_SUFFIX",
    "SNR_CHOICES_DB", "SPLIT_TABLE_COLUMNS",
    "ClipJob", "Condition", "CorruptedCopy", "CorruptionSettings", "NoiseSource",
    "babble_pool", "clip_rng", "copy_release_files", "corrupt_clip", "corrupt_manifest", "corrupt_samples",
    "corrupted_root", "draw_levels", "folder_listing_digest", "mix_at_snr", "no_clip", "parse_condition",
    "plan_jobs", "pyramid_blur", "write_corrupted_container", "write_split_tables",
]
