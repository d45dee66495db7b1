"""The open-vocabulary cell: a Python-list string of emotion words, ``"['happy', 'sad']"``.

This module is the one place that knows how the organisers read such a cell. Two official parsers
exist because the scorers parse differently:

* :func:`parse_openset` is MER2024's ``string_to_list`` (MERTools ``MER2024/toolkit/utils/
  functions.py``): the text between the first ``[`` and the next ``]``, split on quote
  characters, dropping pieces that are empty or a bare comma after stripping. Words keep their
  inner spaces and are *not* stripped (``' happy'`` stays ``' happy'``, as the MER2024 scorer
  sees it). An empty cell is ``[]``.
* :func:`parse_openset_wheel` is the MER2025+ wheel scorer's ``string_to_list``
  (``MER2025/MER2025_Track23/toolkit/utils/functions.py``, the same in ``MER2026_Track2``): outer
  brackets dropped, split on quotes *and commas*, every piece stripped.

:func:`format_openset` writes ``repr(list_of_str)``, which both parsers read back unchanged as
long as no word is empty, has surrounding spaces or contains a quote, comma, bracket or line
break; :func:`word_problem` names what is wrong with such a word and :func:`cell_problem` what is
wrong with a cell that the listed parsers would not read as the same clean words.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

FORBIDDEN_IN_WORD = re.compile(r"['\",\[\]\n\r]")
"""Characters a word may not contain: the scorers split or cut words at them."""

_QUOTE = re.compile("['\"]")


def _is_empty(text: object) -> bool:
    return text is None or (isinstance(text, float) and text != text) or str(text) == ""


def parse_openset(text: object) -> list[str]:
    """MER2024 ``string_to_list``: ``"['a', 'b']"`` -> ``['a', 'b']``; empty/NaN -> ``[]``.

    Lists pass through. A non-empty string without ``[`` raises ``ValueError``."""
    if isinstance(text, (list, tuple)):
        return [str(w) for w in text]
    if _is_empty(text):
        return []
    text = str(text)
    if "[" not in text:
        raise ValueError(f"{text[:60]!r} is not a Python-list string like \"['happy', 'relaxed']\"")
    inner = text.split("[", 1)[1].split("]", 1)[0]
    return [piece for piece in _QUOTE.split(inner) if piece.strip() not in ("", ",")]


def parse_openset_wheel(text: object) -> list[str]:
    """The MER2025+ wheel scorer's parser: split on quotes and commas, strip every word."""
    if isinstance(text, (list, tuple)):
        return [str(w) for w in text]
    if _is_empty(text):
        return []
    text = str(text)
    if text[0] == "[":
        text = text[1:]
    if text and text[-1] == "]":
        text = text[:-1]
    return [piece.strip() for piece in re.split("['\",]", text) if piece.strip() not in ("", ",")]


OPENSET_PARSERS: dict[str, Callable[[object], list[str]]] = {
    "mer2024": parse_openset,
    "wheel": parse_openset_wheel,
}
"""The official parsers by name; a schema lists those its cells must read the same under."""


def format_openset(words: Iterable[str]) -> str:
    """``['a', 'b']`` -> ``"['a', 'b']"`` (the organisers' spelling)."""
    return repr([str(w) for w in words])


def word_problem(word: object) -> str | None:
    """What makes ``word`` unusable in an openset cell (None when it is fine)."""
    if not isinstance(word, str):
        return f"{word!r} is not a string"
    if not word.strip():
        return f"{word!r} is empty"
    if word != word.strip():
        return f"{word!r} has surrounding spaces"
    forbidden = FORBIDDEN_IN_WORD.search(word)
    if forbidden:
        return f"{word!r} contains {forbidden.group()!r}"
    return None


def check_words(name: str, words: Sequence[str]) -> list[str]:
    """The words, checked: each non-empty, stripped, free of quotes/commas/brackets/newlines."""
    if isinstance(words, str):
        raise TypeError(f"{name}: the openset must be a list of words, got the string {words!r}")
    for w in words:
        if not isinstance(w, str):
            raise TypeError(f"{name}: openset word {w!r} is not a string")
        if word_problem(w):
            raise ValueError(f"{name}: openset word {w!r} is empty, has surrounding spaces or "
                             f"contains a quote, comma, bracket or newline; the scorers would "
                             f"split or change it")
    return list(words)


def cell_problem(cell: str, parsers: Sequence[str]) -> tuple[str, str] | None:
    """``(problem kind, what)`` for a non-empty cell that the ``parsers`` would not all read as
    the same clean words; None when they do.

    Kinds: ``not_a_list`` (no ``[...]`` around it), ``bad_word`` (an empty word, one with
    surrounding spaces or a forbidden character, or text outside the quotes: a quote inside a
    word splits it for every parser), ``parser_mismatch`` (the parsers read different words)."""
    if not (cell.startswith("[") and cell.endswith("]")):
        return "not_a_list", ("is not a Python-list string like \"['happy', 'relaxed']\" "
                              "(nothing may stand outside the brackets)")
    inner = cell[1:-1]
    quoted = bool(_QUOTE.search(inner))
    if quoted:
        pieces = _QUOTE.split(inner)
        # quoted words sit at the odd pieces; between them only spaces and commas may stand
        if len(pieces) % 2 == 0 or any(p.replace(",", "").strip() for p in pieces[0::2]):
            return "bad_word", ("has a quote inside a word or text outside the quotes; every "
                                "official parser splits words at each quote")
        # the parsers drop a piece that is only spaces or a comma, so check the words as written
        bad = [w for w in map(word_problem, pieces[1::2]) if w]
        if bad:
            return "bad_word", "word " + "; word ".join(bad)
    readings = {p: OPENSET_PARSERS[p](cell) for p in parsers}
    if len({tuple(words) for words in readings.values()}) > 1:
        read = "; ".join(f"{p} reads {words}" for p, words in readings.items())
        return "parser_mismatch", (f"reads differently under the official parsers ({read}); "
                                   f"quote every word: \"['happy', 'sad']\"")
    if not quoted:
        bad = [w for w in map(word_problem, next(iter(readings.values()), [])) if w]
        if bad:
            return "bad_word", "word " + "; word ".join(bad)
    return None
