"""How closely one grouper reproduces another (the official MER2024 groupings, usually).

Two definitions, both over the samples the reference covers:

* **pair agreement**: within each sample, every unordered pair of distinct (lower-cased) words of
  ``gt | pred``; a pair is "together" when both words land in the same group. Reported: the
  fraction of pairs on which the groupers agree, and precision / recall / F1 of the candidate's
  "together" pairs against the reference's (pairs pooled over samples).
* **score agreement**: the MER2024 metric of a given prediction under each grouper; reported are
  both scores and the mean absolute per-sample difference of accuracy and of recall.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

from mer.ov.metric import mer2024_ov_score, synonym_map


@dataclass
class Agreement:
    candidate: str
    reference: str
    n_samples: int
    n_pairs: int
    pair_accuracy: float
    together_precision: float
    together_recall: float
    together_f1: float
    score_candidate: float
    score_reference: float
    mean_abs_accuracy_diff: float
    mean_abs_recall_diff: float
    same_sample_score: float

    def __str__(self) -> str:
        return (f"{self.candidate} vs {self.reference} on {self.n_samples} samples, {self.n_pairs} "
                f"word pairs: pair agreement {self.pair_accuracy:.3f}; 'same group' precision "
                f"{self.together_precision:.3f} recall {self.together_recall:.3f} F1 "
                f"{self.together_f1:.3f}; example score {self.score_candidate:.4f} vs "
                f"{self.score_reference:.4f}; mean |diff| per sample: accuracy "
                f"{self.mean_abs_accuracy_diff:.3f}, recall {self.mean_abs_recall_diff:.3f}; "
                f"samples with identical (accuracy, recall): {self.same_sample_score:.3f}")


def grouper_agreement(gold: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]],
                      candidate, reference, names: Sequence[str] | None = None) -> Agreement:
    names = list(names if names is not None else gold)
    tp = fp = fn = agree = total = 0
    for n in names:
        g = [w.lower() for w in gold[n]]
        p = [w.lower() for w in pred.get(n, [])]
        words = sorted(set(g) | set(p))
        ref = synonym_map(reference.group(n, g, p))
        cand = synonym_map(candidate.group(n, g, p))
        for a, b in combinations(words, 2):
            r = ref.get(a, a) == ref.get(b, b)
            c = cand.get(a, a) == cand.get(b, b)
            total += 1
            agree += r == c
            tp += r and c
            fp += c and not r
            fn += r and not c
    sub_gold = {n: gold[n] for n in names}
    sc = mer2024_ov_score(sub_gold, pred, candidate)
    sr = mer2024_ov_score(sub_gold, pred, reference)
    da = np.array([abs(a.accuracy - b.accuracy) for a, b in zip(sc.per_sample, sr.per_sample)])
    dr = np.array([abs(a.recall - b.recall) for a, b in zip(sc.per_sample, sr.per_sample)])
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return Agreement(getattr(candidate, "name", "?"), getattr(reference, "name", "?"), len(names),
                     total, agree / total if total else 1.0, prec, rec,
                     2 * prec * rec / (prec + rec) if prec + rec else 0.0,
                     sc.score, sr.score, float(da.mean()), float(dr.mean()),
                     float(np.mean((da < 1e-12) & (dr < 1e-12))))
