"""The corpus design: splits, class counts, valences, the cue tables, and the plan of each clip
(what each modality shows and how strongly; cheap, drawn up front in the parent process)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from mer.core.rng import keyed_rng
from mer.core.samples import MER_CLASSES

from .face import FPS
from .transcripts import compose_transcript

DEMO_VERSION = 3
"""Bump whenever generated content changes: it is part of the corpus folder name.
2: transcripts that turn from one emotion to another (:data:`CONTRAST_RATE`).
3: faces that show another expression first, then their own (:data:`FACE_TURN_RATE`)."""

TEST_SPLITS = ("test1", "test2", "test3")
NOISY_SPLIT = "test2"

MER2023_TRAIN_COUNTS: Mapping[str, int] = {
    "neutral": 871, "angry": 822, "happy": 689, "sad": 383, "worried": 462, "surprise": 146,
}
"""Class counts of the real MER2023 train set; the demo keeps its imbalance."""

MIN_CLASS_SHARE = 0.05
"""Floor per class, so a 240-clip train split has 12 surprise clips to learn from (MER2023: 4.3 %)."""

VALENCE_MEAN: Mapping[str, float] = {
    "neutral": 0.0, "angry": -2.5, "happy": 2.5, "sad": -2.5, "worried": -1.5, "surprise": 1.0,
}

SNR_CHOICES_DB = tuple(range(5, 11))
BLUR_CHOICES = (1, 2, 4)

CLIP_SECONDS = (2.0, 3.0)

FACE_TURN_RATE = 0.7
"""Share of expressive faces that first show another emotion (a lead expression over the first
:data:`mer.demo.face.LEAD_SHARE` of the clip), then turn to their own cue: frames in order tell the
two apart, their mean holds both about equally."""

CueTable = Mapping[str, Mapping[str, float]]

CUE_TABLES: Mapping[str, CueTable] = {
    "face": {
        "neutral": {"neutral": 0.88, "angry": 0.03, "sad": 0.03, "worried": 0.03, "happy": 0.03},
        "angry": {"angry": 0.55, "neutral": 0.40, "worried": 0.05},
        "happy": {"happy": 0.60, "neutral": 0.40},
        "sad": {"sad": 0.40, "worried": 0.20, "neutral": 0.40},
        "worried": {"worried": 0.35, "sad": 0.25, "neutral": 0.40},
        "surprise": {"surprise": 0.55, "happy": 0.05, "neutral": 0.40},
    },
    "voice": {
        "neutral": {"neutral": 0.84, "sad": 0.08, "worried": 0.08},
        "angry": {"angry": 0.50, "happy": 0.10, "neutral": 0.40},
        "happy": {"happy": 0.50, "angry": 0.10, "neutral": 0.40},
        "sad": {"sad": 0.55, "worried": 0.05, "neutral": 0.40},
        "worried": {"worried": 0.50, "sad": 0.10, "neutral": 0.40},
        "surprise": {"surprise": 0.50, "happy": 0.10, "neutral": 0.40},
    },
    "text": {
        "neutral": {"neutral": 0.92, "worried": 0.03, "happy": 0.03, "angry": 0.02},
        "angry": {"angry": 0.50, "neutral": 0.50},
        "happy": {"happy": 0.55, "neutral": 0.45},
        "sad": {"sad": 0.70, "neutral": 0.30},
        "worried": {"worried": 0.60, "sad": 0.05, "neutral": 0.35},
        "surprise": {"surprise": 0.45, "happy": 0.05, "neutral": 0.50},
    },
}
"""P(cue a modality shows | true class). Rows sum to 1; see the :mod:`mer.demo` docstring for the why."""


@dataclass(frozen=True)
class ClipPlan:
    """Everything that decides one clip's content; the media are a pure function of it."""

    seed: int
    name: str
    split: str
    discrete: str
    valence: float
    intensity: float  # shared emotional strength in [0, 1]; also drives the valence magnitude
    face_cue: str
    face_intensity: float
    voice_cue: str
    voice_intensity: float
    text_cue: str
    english: str
    chinese: str
    duration_s: float
    snr_db: int | None = None  # set on the noisy split only
    blur_factor: int | None = None
    face_lead: str | None = None  # the expression shown before the face cue (a face turn), if any


def clip_rng(seed: int, name: str, purpose: str) -> np.random.Generator:
    """A generator that depends only on (seed, name, purpose), never on call order."""
    return keyed_rng(seed, name, purpose)


def class_counts(n: int, floor_share: float = MIN_CLASS_SHARE) -> dict[str, int]:
    """Split ``n`` clips over :data:`MER_CLASSES` like MER2023 train, lifting rare classes to a floor.

    Largest-remainder rounding of the MER2023 proportions; a class under ``ceil(floor_share * n)``
    is raised to it at the expense of the largest classes, so the imbalance is otherwise kept.
    """
    total = sum(MER2023_TRAIN_COUNTS.values())
    shares = {c: n * MER2023_TRAIN_COUNTS[c] / total for c in MER_CLASSES}
    counts = {c: int(shares[c]) for c in MER_CLASSES}
    by_remainder = sorted(MER_CLASSES, key=lambda c: (-(shares[c] - counts[c]), MER_CLASSES.index(c)))
    for c in by_remainder[: n - sum(counts.values())]:
        counts[c] += 1
    floor = min(math.ceil(floor_share * n), n // len(MER_CLASSES))
    for c in MER_CLASSES:
        while counts[c] < floor:
            counts[max(MER_CLASSES, key=lambda k: (counts[k], -MER_CLASSES.index(k)))] -= 1
            counts[c] += 1
    return counts


def split_names(n_train: int, n_per_test: int) -> dict[str, list[str]]:
    """Sample names per split: ``sample_*`` numbered across train/test1/test2, ``samplenew_*`` for test3."""
    names: dict[str, list[str]] = {}
    k = 0
    for split, n in (("train", n_train), ("test1", n_per_test), ("test2", n_per_test)):
        names[split] = [f"sample_{k + i + 1:08d}" for i in range(n)]
        k += n
    names["test3"] = [f"samplenew_{i + 1:08d}" for i in range(n_per_test)]
    return names


def _draw_cue(rng: np.random.Generator, table: CueTable, true_class: str) -> str:
    row = table[true_class]
    cues = list(row)
    return cues[int(rng.choice(len(cues), p=np.asarray([row[c] for c in cues]) / sum(row.values())))]


def _cue_intensity(rng: np.random.Generator, cue: str, true_class: str, intensity: float) -> float:
    if cue == "neutral":
        return 0.0
    if true_class == "neutral":  # a stray cue on a neutral clip is a mild one
        return float(rng.uniform(0.3, 0.6))
    return float(np.clip(intensity * rng.uniform(0.8, 1.2), 0.25, 1.0))


def plan_clip(seed: int, name: str, split: str, discrete: str) -> ClipPlan:
    """Draw one clip's cues, valence, transcript and (on the noisy split) corruption."""
    rng = clip_rng(seed, name, "plan")
    intensity = float(rng.uniform(0.35, 1.0)) if discrete != "neutral" else float(rng.uniform(0.0, 0.3))
    valence = VALENCE_MEAN[discrete] * (0.4 + 0.9 * intensity) + rng.normal(0.0, 0.6)
    valence = float(np.clip(np.round(valence * 4) / 4, -5.0, 5.0)) + 0.0
    cues = {m: _draw_cue(rng, CUE_TABLES[m], discrete) for m in ("face", "voice", "text")}
    face_intensity = _cue_intensity(rng, cues["face"], discrete, intensity)
    voice_intensity = _cue_intensity(rng, cues["voice"], discrete, intensity)
    text_intensity = _cue_intensity(rng, cues["text"], discrete, intensity)
    english, chinese = compose_transcript(cues["text"], text_intensity, rng)
    duration_s = float(np.round(rng.uniform(*CLIP_SECONDS) * FPS) / FPS)  # whole frames
    noisy = split == NOISY_SPLIT
    face_lead = None
    turn_rng = clip_rng(seed, name, "face-turn")  # its own stream: the other draws stay as they were
    if cues["face"] != "neutral" and turn_rng.random() < FACE_TURN_RATE:
        others = [c for c in MER_CLASSES if c not in ("neutral", cues["face"])]
        face_lead = others[int(turn_rng.integers(len(others)))]
    return ClipPlan(
        seed=seed, name=name, split=split, discrete=discrete, valence=valence, intensity=intensity,
        face_cue=cues["face"], face_intensity=face_intensity,
        voice_cue=cues["voice"], voice_intensity=voice_intensity,
        text_cue=cues["text"], english=english, chinese=chinese, duration_s=duration_s,
        snr_db=int(rng.choice(SNR_CHOICES_DB)) if noisy else None,
        blur_factor=int(rng.choice(BLUR_CHOICES)) if noisy else None,
        face_lead=face_lead,
    )


def plan_corpus(seed: int, n_train: int, n_per_test: int) -> list[ClipPlan]:
    """Plans for every clip of every split, in split then name order."""
    plans = []
    for split, names in split_names(n_train, n_per_test).items():
        labels = [c for c, k in class_counts(len(names)).items() for _ in range(k)]
        order = clip_rng(seed, split, "labels").permutation(len(labels))
        plans += [plan_clip(seed, name, split, labels[i]) for name, i in zip(names, order)]
    return plans
