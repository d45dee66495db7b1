"""The embedded demo corpus: a small MER2023-style release generated from a seed on first use.

``python -m mer.run`` needs data to run out of the box, and the real MER corpora sit behind a
licence. :func:`demo_corpus` writes a stand-in in the **MER2023 release layout** (``train/``,
``test1/``, ``test2/``, ``test3/`` mp4s, ``*-label.csv``, ``transcription-engchi-polish.csv``) from
pip packages alone, so the same recipe, extractors, fusion and metrics run on it unchanged.

How the signal is built, and why
--------------------------------
Every clip has a true class, a valence and an intensity. Each modality then *shows* a cue class
drawn from its own confusion table (:data:`CUE_TABLES`): the true class with some probability,
otherwise a muted (neutral) or a confusable one. The three draws are independent given the true
class, and the tables leave different gaps:

* face: strong on happy, surprise and angry; sad and worried look alike; often a poker face;
* voice: prosody shows each class about half the time; high-arousal classes get mixed up;
* text: emotion words most reliably for sad and worried, where the face is weakest; otherwise
  small talk.

So no modality is enough alone (a perfect reader of one scores 0.60-0.67 weighted F1 by the
tables), while all three together allow 0.86: fusion has to win, as it does on the real data.
Muted cues outnumber confusable ones, so the evidence is complementary more than contradictory,
which keeps fusion learnable from a 240-clip train split.

Order in time matters in two places, so frame-level models have something to find that a mean
over frames or tokens blurs: a share of the emotional transcripts (:data:`CONTRAST_RATE`) first
mention a *different* emotion and then turn ("I was furious about the rent earlier, but now I'm
glad about the trip"), so the emotion is the one after the turn, while the bag of tokens holds
both; and a share of the expressive faces (:data:`FACE_TURN_RATE`) first show another
expression, which fades, before their own rises, so the emotion is the later one, while the mean
over face frames holds both.

Intensity scales every cue (expression strength, prosody, intensifier words) and the valence, so
valence is predictable from the media too. ``test2`` is corrupted as MER-NOISE is (babble at
5-10 dB SNR, pyramid blur x1/x2/x4) and its drawn settings are saved in ``test2-corruption.csv``.

Determinism: every clip is planned and rendered from a generator seeded by ``(seed, name)``,
labels per split from ``(seed, split)``, so the output does not depend on worker scheduling.

The package, by job: :mod:`~mer.demo.design` (splits, class counts, cue tables, each clip's plan),
:mod:`~mer.demo.transcripts` (the phrase table and each clip's utterance), :mod:`~mer.demo.face`
and :mod:`~mer.demo.voice` (the rendered face and voice), :mod:`~mer.demo.mp4` (the container),
:mod:`~mer.demo.render` (one clip rendered from its plan), :mod:`~mer.demo.folders` (the corpus
folder, its partial folder, lock and resume log) and :mod:`~mer.demo.corpus` (:func:`demo_corpus`).
"""
from __future__ import annotations

from .corpus import demo_corpus
from .design import (BLUR_CHOICES, CLIP_SECONDS, CUE_TABLES, DEMO_VERSION, FACE_TURN_RATE, MER2023_TRAIN_COUNTS,
                     MIN_CLASS_SHARE, NOISY_SPLIT, SNR_CHOICES_DB, TEST_SPLITS, VALENCE_MEAN, ClipPlan, CueTable,
                     class_counts, clip_rng, plan_clip, plan_corpus, split_names)
from .face import (EXPRESSIONS, FPS, FRAME_SIZE, LEAD_SHARE, FaceShot, draw_face_shot, face_template, lead_curve,
                   onset_curve, render_face, render_frames)
from .folders import COMPLETE_MARKER, DONE_CLIPS, corpus_root, is_complete, partial_dir
from .mp4 import write_mp4
from .render import clip_path, render_clip
from .transcripts import CONTRAST_RATE, EMPTY_TRANSCRIPT_RATE, compose_transcript
from .voice import PROSODY, SAMPLE_RATE_HZ, Prosody, Speaker, babble, draw_speaker, synth_voice

__all__ = [
    # the corpus
    "COMPLETE_MARKER", "DEMO_VERSION", "DONE_CLIPS", "corpus_root", "demo_corpus", "is_complete", "partial_dir",
    # its design and each clip's plan
    "BLUR_CHOICES", "CLIP_SECONDS", "CONTRAST_RATE", "CUE_TABLES", "EMPTY_TRANSCRIPT_RATE", "FACE_TURN_RATE",
    "MER2023_TRAIN_COUNTS", "MIN_CLASS_SHARE", "NOISY_SPLIT", "SNR_CHOICES_DB", "TEST_SPLITS", "VALENCE_MEAN",
    "ClipPlan", "CueTable", "class_counts", "clip_rng", "compose_transcript", "plan_clip", "plan_corpus",
    "split_names",
    # rendering
    "EXPRESSIONS", "FPS", "FRAME_SIZE", "LEAD_SHARE", "PROSODY", "SAMPLE_RATE_HZ", "FaceShot", "Prosody", "Speaker",
    "babble", "clip_path", "draw_face_shot", "draw_speaker", "face_template", "lead_curve", "onset_curve",
    "render_clip", "render_face", "render_frames", "synth_voice", "write_mp4",
]
