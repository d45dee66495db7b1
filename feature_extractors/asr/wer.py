"""Word error rate by word-level edit distance (what ASR accuracy is reported in).

Words are compared after lower-casing and dropping punctuation (apostrophes inside words stay:
"I'm" is one word, and "I am" -> "I'm" costs a substitution and a deletion).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def normalize_words(text: str) -> list[str]:
    """``"Hello, World!"`` -> ``["hello", "world"]``."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class WordErrors:
    """Edit operations that turn the reference words into the hypothesis words."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors per reference word (can exceed 1 with many insertions); 0 for an empty pair."""
        if self.reference_words == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_words

    @property
    def word_accuracy(self) -> float:
        """``1 - WER``."""
        return 1.0 - self.wer

    def __add__(self, other: "WordErrors") -> "WordErrors":
        return WordErrors(self.substitutions + other.substitutions, self.deletions + other.deletions,
                          self.insertions + other.insertions, self.reference_words + other.reference_words)


def word_errors(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> WordErrors:
    """Minimum substitutions + deletions + insertions (Levenshtein over words), with the counts of
    each kind along one optimal alignment. Strings are split with :func:`normalize_words`."""
    ref = normalize_words(reference) if isinstance(reference, str) else list(reference)
    hyp = normalize_words(hypothesis) if isinstance(hypothesis, str) else list(hypothesis)
    # cost[i][j]: (errors, subs, dels, ins) turning ref[:i] into hyp[:j]; tuples compare by errors first.
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            e, s, d, n = prev[j - 1]
            same = ref[i - 1] == hyp[j - 1]
            diagonal = (e, s, d, n) if same else (e + 1, s + 1, d, n)
            e, s, d, n = prev[j]
            deletion = (e + 1, s, d + 1, n)
            e, s, d, n = cur[j - 1]
            insertion = (e + 1, s, d, n + 1)
            cur.append(min(diagonal, deletion, insertion))
        prev = cur
    errors, subs, dels, ins = prev[-1]
    return WordErrors(subs, dels, ins, len(ref))
