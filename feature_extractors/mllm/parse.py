"""Reading a chat model's answer: per item ``{'name':, 'result':}`` records, then the result by task.

Models answer in many shapes: the asked-for Python-dict records, JSON, a list in a sentence
("From most to least likely: happy, neutral, sad"), Markdown fences. :func:`answer_items` finds
the records (JSON objects or Python literals holding a ``result``; failing that, GPT-4V-emotion's
own reader: split on the words ``name``/``result`` and take the text between ``[`` and ``]``);
a one-item request whose answer has no record is read whole. Then, per task:

``discrete``     the labels in the order given, each matched to the candidate set case-blind, by
                 its exact string or a *morphological* variant only (anger -> angry, happiness ->
                 happy, surprised -> surprise, sadness -> sad, worry -> worried, fearful -> fear,
                 disgusted -> disgust); no synonym is guessed (nervous is not worried). A result
                 with no list is searched for candidate words in order of appearance;
``valence``      the first number of the result; outside the dataset's range it is rejected;
``ov``           the list's words, lower-cased, stripped of quotes and brackets;
``description``  the text, whitespace collapsed;
``preference``   ``A`` or ``B`` (``description A``, ``1``/``2`` too).

An answer nothing can be read from is a :class:`Parsed` with ``ok=False`` and the reason; it is
recorded as it came and never replaced by a guess.
"""
from __future__ import annotations

import ast
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

_RECORD = re.compile(r"\{[^{}]*\}", re.DOTALL)
_FENCE = re.compile(r"```(?:json|python)?", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_WORD_SPLIT = re.compile(r"\s*(?:,|;|/|\band\b|\n)\s*")

# Morphological variants only (module docstring): a variant maps to a candidate that is one of
# its family, and never when the variant is itself a candidate.
_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("angry", "anger", "angered", "angrily"),
    ("happy", "happiness", "happily"),
    ("sad", "sadness", "sadly"),
    ("worried", "worry", "worrying", "worries"),
    ("surprise", "surprised", "surprising", "surprisingly"),
    ("fear", "fearful", "fears", "feared"),
    ("disgust", "disgusted", "disgusting"),
    ("contempt", "contemptuous"),
    ("neutral", "neutrality"),
    ("joy", "joyful", "joyous"),
    ("calm", "calmness"),
    ("positive", "positively"), ("negative", "negatively"),
)


@dataclass(frozen=True)
class Parsed:
    """One item's reading: ``value`` (a list of labels, a float, a list of words, a string or
    ``"A"``/``"B"``), ``ok`` and, when not ok, ``reason``; ``raw`` is the item's result text."""

    ok: bool
    value: Any = None
    reason: str = ""
    raw: str = ""


def strip_answer_prefix(answer: str) -> str:
    """A chat answer without what models put around the content: code fences and an "Output:"
    (or "输出：") prefix. The OV grouper's answers go through it too."""
    text = _FENCE.sub("", answer or "").strip()
    for prefix in ("output", "Output", "OUTPUT", "输出"):
        if text.startswith(prefix):
            text = text[len(prefix):].lstrip(" :：")
    return text.strip()


_AST_LOCK = threading.Lock()
"""CPython 3.11's parser is not safe when threads call ``ast.literal_eval`` at once ("AST constructor
recursion depth mismatch"); answers are parsed in the request threads."""


def _literal_eval(text: str) -> Any:
    with _AST_LOCK:
        return ast.literal_eval(text)


def _literal(text: str) -> Any:
    for reader in (json.loads, _literal_eval):
        try:
            return reader(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


@dataclass
class _Record:
    name: Any
    result: Any
    raw: str = field(default="")


def _records(text: str) -> list[_Record]:
    whole = _literal(text)
    if isinstance(whole, list) and all(isinstance(x, dict) for x in whole) and whole:
        return [_Record(x.get("name"), x.get("result"), json.dumps(x.get("result"), ensure_ascii=False))
                for x in whole if "result" in x]
    if isinstance(whole, dict) and "result" in whole:
        return [_Record(whole.get("name"), whole["result"], str(whole["result"]))]
    out = []
    for match in _RECORD.finditer(text):
        d = _literal(match.group(0))
        if isinstance(d, dict) and "result" in d:
            out.append(_Record(d.get("name"), d["result"], match.group(0)))
    if out:
        return out
    # GPT-4V-emotion's reader: split on the keys, keep what is between brackets
    pieces = text.replace("name", "\x00").replace("result", "\x00").split("\x00")
    return [_Record(None, p.split("[", 1)[1].split("]", 1)[0], p) for p in pieces if "[" in p]


def answer_items(answer: str, n: int) -> list[str | list | Any] | None:
    """The ``n`` items' results of one answer in order, or ``None`` when the answer holds a
    different number of records (the request is then asked again in smaller parts). Records
    whose ``name`` is a number 1..n are put at that position."""
    text = strip_answer_prefix(answer)
    records = _records(text)
    if not records:
        return [text] if n == 1 and text else None
    if len(records) != n:
        return None
    positions = [_position(r.name, n) for r in records]
    if all(p is not None for p in positions) and sorted(positions) == list(range(n)):   # type: ignore[type-var]
        ordered: list[Any] = [None] * n
        for p, r in zip(positions, records):
            ordered[p] = r.result                                           # type: ignore[index]
        return ordered
    return [r.result for r in records]


def _position(name: Any, n: int) -> int | None:
    m = re.search(r"\d+", str(name)) if name is not None else None
    if m is None:
        return None
    k = int(m.group(0))
    return k - 1 if 1 <= k <= n else None


def label_aliases(labels: Sequence[str]) -> dict[str, str]:
    """``lower-cased word -> candidate label``: each candidate, and its family's variants that are
    not candidates themselves."""
    out = {lab.lower(): lab for lab in labels}
    for family in _FAMILIES:
        present = [lab for lab in labels if lab.lower() in family]
        if len(present) != 1:
            continue
        for variant in family:
            out.setdefault(variant, present[0])
    return out


def _as_list(value: Any) -> list[str] | None:
    if isinstance(value, (list, tuple)):
        return [str(x) for x in value]
    if isinstance(value, str):
        inner = value.strip()
        if inner.startswith("[") and "]" in inner:
            inner = inner[1:inner.rindex("]")]
        parsed = _literal(f"[{inner}]")
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed) and parsed:
            return parsed
        if "," in inner or ";" in inner or "\n" in inner:
            return [p for p in _WORD_SPLIT.split(inner) if p.strip()]
        return None
    return None


def _norm(word: str) -> str:
    return re.sub(r"[^a-z ]", "", word.lower()).strip()


def parse_ranking(value: Any, labels: Sequence[str]) -> Parsed:
    """The candidate labels a result ranks, best first (module docstring)."""
    aliases = label_aliases(labels)
    raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    listed = _as_list(value)
    ranked: list[str] = []
    if listed is not None:
        for word in listed:
            lab = aliases.get(_norm(word))
            for hit in ([lab] if lab is not None else _labels_in(word, aliases)):
                if hit not in ranked:
                    ranked.append(hit)
    if not ranked:
        for lab in _labels_in(raw, aliases):
            if lab not in ranked:
                ranked.append(lab)
    if not ranked:
        return Parsed(False, reason="no candidate label in the answer", raw=raw[:500])
    return Parsed(True, ranked, raw=raw[:500])


def _labels_in(text: str, aliases: dict[str, str]) -> list[str]:
    """Candidate labels named in free ``text``, in order of first appearance."""
    found = []
    for alias, lab in aliases.items():
        for m in re.finditer(rf"\b{re.escape(alias)}\b", text.lower()):
            found.append((m.start(), lab))
    return [lab for _, lab in sorted(found)]


def parse_valence(value: Any, lo: float, hi: float) -> Parsed:
    raw = str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        x = float(value)
    else:
        m = _NUMBER.search(raw)
        if m is None:
            return Parsed(False, reason="no number in the answer", raw=raw[:500])
        x = float(m.group(0))
    if not lo <= x <= hi:
        return Parsed(False, reason=f"valence {x:g} outside [{lo:g}, {hi:g}]", raw=raw[:500])
    return Parsed(True, x, raw=raw[:500])


def parse_words(value: Any) -> Parsed:
    raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    listed = _as_list(value)
    if listed is None and isinstance(value, str) and value.strip():
        listed = [p for p in _WORD_SPLIT.split(value.strip()) if p.strip()]
    words = []
    for w in listed or []:
        w = re.sub(r"['\"\[\]{}]", "", str(w)).strip().lower().rstrip(".")
        if w and w not in words:
            words.append(w)
    if not words:
        return Parsed(False, reason="no emotion word in the answer", raw=raw[:500])
    return Parsed(True, words, raw=raw[:500])


def parse_description(value: Any) -> Parsed:
    text = " ".join(str(value if value is not None else "").split())
    if not text:
        return Parsed(False, reason="empty description", raw="")
    return Parsed(True, text, raw=text[:500])


def parse_preference(value: Any) -> Parsed:
    raw = str(value).strip()
    m = re.fullmatch(r"(?:description|option|candidate)?\s*['\"(]?\s*([ABab12])\s*[)'\".]?", raw)
    if m is None:
        hits = {h.upper() for h in re.findall(r"\b(?:description|option|candidate)\s+([AB])\b", raw, re.I)}
        if len(hits) == 1:
            return Parsed(True, hits.pop(), raw=raw[:500])
        return Parsed(False, reason="neither A nor B in the answer", raw=raw[:500])
    return Parsed(True, {"1": "A", "2": "B"}.get(m.group(1), m.group(1).upper()), raw=raw[:500])


def parse_result(task: str, value: Any, labels: Sequence[str] = (),
                 valence_range: Sequence[float] = (-5.0, 5.0)) -> Parsed:
    """One item's result read for ``task`` (``prompts.TASKS``)."""
    if task == "discrete":
        return parse_ranking(value, labels)
    if task == "valence":
        return parse_valence(value, float(valence_range[0]), float(valence_range[1]))
    if task == "ov":
        return parse_words(value)
    if task == "description":
        return parse_description(value)
    if task == "preference":
        return parse_preference(value)
    raise ValueError(f"unknown MLLM task {task!r}")


def rank_scores(ranked: Sequence[str], labels: Sequence[str]) -> list[float]:
    """A ranking as a distribution over ``labels``: reciprocal rank (1, 1/2, 1/3...) normalised to
    sum to 1; labels the answer did not rank score 0."""
    weights = {lab: 1.0 / (i + 1) for i, lab in enumerate(ranked)}
    total = sum(weights.values()) or 1.0
    return [weights.get(lab, 0.0) / total for lab in labels]
