"""Open-vocabulary (MER-OV) metrics: MER2024's grouped set overlap and the MER2025+ wheel score.

MER2024 (``main-ov.py``), per sample ``i`` with ground-truth words ``G`` and predicted words ``P``:

1. lower-case every word (no stripping: the official parser keeps words as written);
2. a *grouper* partitions ``set(G) | set(P)`` into synonym groups (officially an LLM call per
   sample; see :mod:`mer.ov.groupers`); every word maps to its group's first word, later groups
   overwriting earlier ones; words no group lists stay as themselves;
3. ``accuracy_i = |G & P| / |P|`` (set precision) and ``recall_i = |G & P| / |G|`` on the mapped
   sets; an empty ``P`` scores ``0, 0``.

``accuracy`` and ``recall`` are the means over samples; ``score = (accuracy + recall) / 2`` (an
arithmetic mean, not an F1). The official code divides by ``|G|`` unguarded. mer's rule for an
empty ground truth (``empty_gt``): ``"skip"`` (default) leaves the sample out of both means and
counts it in ``n_skipped``, as the MER2025 wheel scorer does for empty ground truth; ``"error"``
refuses the input, naming the samples. Every score carries the grouper's name, because a score
means nothing without it.

MER2025+ wheel variant (``wheel.py``): each word is mapped deterministically through the
emotion-wheel assets (:mod:`mer.ov.wheel`) to a cluster of each of 5 wheels at level 1 or 2;
unmapped words are dropped; per wheel, samples whose mapped ground truth is empty are skipped,
an empty mapped prediction scores ``0, 0``, precision and recall are averaged over samples and
``F = 2PR / (P + R)`` of the means (0 when both are 0; the official code yields NaN there); the
level's score is the mean F over the wheels, and ``score`` the mean of the level-1 and level-2
scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import numpy as np

from submissions.validate import preview

EMPTY_GT_RULES = ("skip", "error")


class Grouper(Protocol):
    """Anything that partitions one sample's words into synonym groups."""

    name: str

    def group(self, sample: str, gt: Sequence[str], pred: Sequence[str]) -> list[list[str]]: ...


@dataclass(frozen=True)
class SampleOverlap:
    name: str
    accuracy: float
    recall: float
    gt: frozenset[str]
    pred: frozenset[str]


@dataclass
class OVScore:
    """MER2024 OV result: the three figures, how many samples, and which grouper made them."""

    accuracy: float
    recall: float
    score: float
    n_samples: int
    grouper: str
    n_skipped: int = 0
    per_sample: list[SampleOverlap] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, float | int | str]:
        return {"accuracy": self.accuracy, "recall": self.recall, "score": self.score,
                "n_samples": self.n_samples, "n_skipped_empty_gt": self.n_skipped,
                "grouper": self.grouper}

    def __str__(self) -> str:
        skipped = f", {self.n_skipped} with empty ground truth skipped" if self.n_skipped else ""
        return (f"accuracy {self.accuracy:.4f}  recall {self.recall:.4f}  score {self.score:.4f}  "
                f"({self.n_samples} samples{skipped}; grouper {self.grouper})")


def synonym_map(groups: Sequence[Sequence[str]]) -> dict[str, str]:
    """Every word of every group -> that group's first word (later groups overwrite)."""
    out: dict[str, str] = {}
    for group in groups:
        for word in group:
            out[word] = group[0]
    return out


def sample_overlap(gt: Sequence[str], pred: Sequence[str], groups: Sequence[Sequence[str]],
                   name: str = "") -> SampleOverlap:
    """One sample's MER2024 (accuracy, recall); ``gt`` and ``pred`` already lower-cased.

    Raises ``ValueError`` for an empty ground truth (the caller decides what that means)."""
    mapping = synonym_map(groups)
    g = frozenset(mapping.get(w, w) for w in gt)
    p = frozenset(mapping.get(w, w) for w in pred)
    if not g:
        raise ValueError(f"sample {name!r} has an empty ground truth; recall is undefined")
    if not p:
        return SampleOverlap(name, 0.0, 0.0, g, p)
    hit = len(g & p)
    return SampleOverlap(name, hit / len(p), hit / len(g), g, p)


def _aligned(gold: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]]) -> list[str]:
    missing = [n for n in gold if n not in pred]
    if missing:
        raise ValueError(f"{len(missing)} of {len(gold)} ground-truth samples have no prediction: "
                         f"{preview(missing)}")
    return list(gold)


def mer2024_ov_score(gold: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]],
                     grouper: Grouper, empty_gt: str = "skip") -> OVScore:
    """The MER2024 OV metric of ``pred`` against ``gold`` (``name -> words``) under ``grouper``.

    Samples are those of ``gold``; every one needs a prediction (an empty list is a valid, zero
    scoring prediction). Predictions for names outside ``gold`` are ignored, as the official
    scorer ignores them."""
    if empty_gt not in EMPTY_GT_RULES:
        raise ValueError(f"empty_gt must be one of {EMPTY_GT_RULES}, got {empty_gt!r}")
    names = _aligned(gold, pred)
    empty = [n for n in names if not gold[n]]
    if empty and empty_gt == "error":
        raise ValueError(f"{len(empty)} samples have an empty ground truth: {preview(empty)}; "
                         f"pass empty_gt='skip' to leave them out of the means")
    rows = []
    for n in names:
        if not gold[n]:
            continue
        g = [w.lower() for w in gold[n]]
        p = [w.lower() for w in pred[n]]
        rows.append(sample_overlap(g, p, grouper.group(n, g, p), n))
    if not rows:
        raise ValueError("no sample with a non-empty ground truth to score")
    acc = float(np.mean([r.accuracy for r in rows]))
    rec = float(np.mean([r.recall for r in rows]))
    return OVScore(acc, rec, float(np.mean([acc, rec])), len(rows), grouper.name, len(empty), rows)


# --- MER2025+ emotion-wheel variant ----------------------------------------------------------
@dataclass
class WheelScore:
    """Per level: per-wheel (precision, recall, F) and the mean F; ``score`` = mean of levels."""

    per_wheel: dict[str, list[tuple[float, float, float]]]
    level_scores: dict[str, float]
    score: float
    n_samples: dict[str, list[int]]
    grouper: str = "emotion-wheel"

    def as_dict(self) -> dict:
        return {"score": self.score, **{f"{lvl}_f": v for lvl, v in self.level_scores.items()},
                "grouper": self.grouper}

    def __str__(self) -> str:
        levels = "  ".join(f"{lvl} F {v:.4f}" for lvl, v in self.level_scores.items())
        return f"{levels}  mean {self.score:.4f}  (5 emotion wheels; unmapped words dropped)"


def wheel_ov_score(gold: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]],
                   assets, levels: Sequence[str] = ("level1", "level2")) -> WheelScore:
    """The MER2025/2026 emotion-wheel OV score (``assets``: :class:`mer.ov.wheel.WheelAssets`).

    ``gold``/``pred`` should be parsed with :func:`mer.ov.io.parse_openset_wheel` to match the
    official reader exactly; words are lower-cased and stripped here."""
    names = _aligned(gold, pred)
    per_wheel: dict[str, list[tuple[float, float, float]]] = {}
    counts: dict[str, list[int]] = {}
    for level in levels:
        per_wheel[level], counts[level] = [], []
        for wheel in range(len(assets.wheels)):
            precision, recall = [], []
            for n in names:
                g = {m for w in gold[n] if (m := assets.map_word(w.lower().strip(), wheel, level))}
                if not g:
                    continue
                p = {m for w in pred[n] if (m := assets.map_word(w.lower().strip(), wheel, level))}
                if not p:
                    precision.append(0.0)
                    recall.append(0.0)
                else:
                    precision.append(len(g & p) / len(p))
                    recall.append(len(g & p) / len(g))
            pm = float(np.mean(precision)) if precision else 0.0
            rm = float(np.mean(recall)) if recall else 0.0
            f = 2 * pm * rm / (pm + rm) if pm + rm > 0 else 0.0
            per_wheel[level].append((pm, rm, f))
            counts[level].append(len(precision))
    level_scores = {lvl: float(np.mean([f for _, _, f in per_wheel[lvl]])) for lvl in levels}
    return WheelScore(per_wheel, level_scores, float(np.mean(list(level_scores.values()))), counts)
