"""``name,openset`` files: the MER-OV label and submission format, read, written and validated.

The organisers' files (``check-openset.csv``, ``predict-openset.csv``) hold one row per sample;
``openset`` is a Python-list string of English emotion words::

    name,openset
    sample_00000007,"['excited', 'joyful', 'happy']"

Two list parsers exist because the two official scorers parse differently:

* :func:`parse_openset` is MER2024's ``string_to_list``: the text between the first ``[`` and
  the next ``]``, split on quote characters, dropping pieces that are empty or a bare comma after
  stripping. Words keep their inner spaces and are *not* stripped (a word written ``' happy'``
  stays ``' happy'``, exactly as the MER2024 scorer sees it). An empty cell is ``[]``.
* :func:`parse_openset_wheel` is the MER2025+ wheel scorer's parser: outer brackets dropped, split
  on quotes *and commas*, every piece stripped.

The writer emits ``repr(list_of_str)``, which both parsers read back unchanged as long as the
words contain no quote, comma or bracket characters; :func:`check_words` refuses such words
(and empty ones) with the sample's name, so a written file always scores as intended.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from mer.core.io import atomic_write_bytes
from submissions.validate import PROBLEM_KINDS, Problem, _read_csv, expected_name_list, preview

NAME_COLUMN = "name"
OPENSET_COLUMN = "openset"
HEADER = (NAME_COLUMN, OPENSET_COLUMN)
_FORBIDDEN = re.compile(r"['\",\[\]\n\r]")

OV_PROBLEM_KINDS: dict[str, str] = {
    **{k: PROBLEM_KINDS[k] for k in ("unreadable", "empty_file")},
    "header": "the header is not exactly name,openset",
    **{k: PROBLEM_KINDS[k] for k in ("row_length", "no_rows", "empty_name", "duplicate_names",
                                      "missing_names", "unknown_names")},
    "not_a_list": "an openset cell is not a Python-list string like \"['happy', 'relaxed']\"",
    "bad_word": "a word is empty, has surrounding spaces, or contains quotes, commas or brackets",
    "empty_openset": "a prediction is empty (it scores 0 for that sample)",
}
"""Every problem kind :func:`validate_openset_file` reports; ``empty_openset`` is a warning kind
(reported only with ``allow_empty=False``)."""


def parse_openset(text: object) -> list[str]:
    """MER2024 ``string_to_list``: ``"['a', 'b']"`` -> ``['a', 'b']``; empty/NaN -> ``[]``.

    Lists pass through. A non-empty string without ``[`` raises ``ValueError``."""
    if isinstance(text, (list, tuple)):
        return [str(w) for w in text]
    if text is None or (isinstance(text, float) and text != text) or str(text) == "":
        return []
    text = str(text)
    if "[" not in text:
        raise ValueError(f"{text[:60]!r} is not a Python-list string like \"['happy', 'relaxed']\"")
    inner = text.split("[", 1)[1].split("]", 1)[0]
    return [piece for piece in re.split("['\"]", inner) if piece.strip() not in ("", ",")]


def parse_openset_wheel(text: object) -> list[str]:
    """The MER2025+ wheel scorer's parser: split on quotes and commas, strip every word."""
    if isinstance(text, (list, tuple)):
        return [str(w) for w in text]
    if text is None or (isinstance(text, float) and text != text) or str(text) == "":
        return []
    text = str(text)
    if text[0] == "[":
        text = text[1:]
    if text and text[-1] == "]":
        text = text[:-1]
    return [piece.strip() for piece in re.split("['\",]", text) if piece.strip() not in ("", ",")]


def format_openset(words: Iterable[str]) -> str:
    """``['a', 'b']`` -> ``"['a', 'b']"`` (the organisers' spelling)."""
    return repr([str(w) for w in words])


def check_words(name: str, words: Sequence[str]) -> list[str]:
    """The words, checked: each non-empty, stripped, free of quotes/commas/brackets/newlines."""
    if isinstance(words, str):
        raise TypeError(f"{name}: the openset must be a list of words, got the string {words!r}")
    out = []
    for w in words:
        if not isinstance(w, str):
            raise TypeError(f"{name}: openset word {w!r} is not a string")
        if not w.strip() or w != w.strip() or _FORBIDDEN.search(w):
            raise ValueError(f"{name}: openset word {w!r} is empty, has surrounding spaces or "
                             f"contains a quote, comma, bracket or newline; the scorers would "
                             f"split or change it")
        out.append(w)
    return out


def read_openset_csv(path: str | Path, parser=None) -> dict[str, list[str]]:
    """``name -> words`` from a ``name,openset`` file; errors name the line and sample.

    ``parser``: :func:`parse_openset` (MER2024, the default) or :func:`parse_openset_wheel`."""
    parser = parser or parse_openset
    header, records, problems = _read(Path(path))
    fatal = [p for p in problems if p.kind != "empty_openset"]
    if header is None or fatal:
        raise ValueError(f"cannot read {path} as a name,openset file: "
                         + "; ".join(map(str, fatal or problems)))
    out: dict[str, list[str]] = {}
    for line, row in records:
        name = row[0]
        if name in out:
            raise ValueError(f"{path}: line {line}: sample {name!r} appears twice")
        try:
            out[name] = parser(row[1])
        except ValueError as err:
            raise ValueError(f"{path}: line {line}: sample {name!r}: {err}") from None
    return out


def write_openset_csv(predictions: Mapping[str, Sequence[str]], path: str | Path,
                      expected_names: Sequence[str] | None = None) -> Path:
    """Write ``name -> words`` as ``name,openset`` (atomic) and validate what was written.

    Rows follow ``expected_names`` when given (every expected name must have a prediction, and
    no other name may appear), else the mapping's order. Words are checked by :func:`check_words`.
    """
    names = list(predictions)
    expected = expected_name_list(expected_names)
    if expected is not None:
        missing = [n for n in expected if n not in predictions]
        unknown = sorted(set(names) - set(expected))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"{len(missing)} expected names have no prediction: {preview(missing)}")
            if unknown:
                parts.append(f"{len(unknown)} predicted names are not expected: {preview(unknown)}")
            raise ValueError("cannot write the openset file: " + "; ".join(parts))
        names = expected
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"sample name {name!r} is not a non-empty string")
        writer.writerow([name, format_openset(check_words(name, predictions[name]))])
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, buf.getvalue().encode("utf-8"))
    problems = validate_openset_file(target, expected)
    if problems:   # cannot happen for checked words; kept as the writer's own guarantee
        raise ValueError(f"the written {target} is invalid: " + "; ".join(map(str, problems)))
    return target


def validate_openset_file(path: str | Path, names: Sequence[str] | None = None,
                          allow_empty: bool = True) -> list[Problem]:
    """Every problem with a ``name,openset`` file (an empty list means valid).

    ``names``: the expected sample names (then missing and unknown names are problems).
    ``allow_empty=False`` also reports empty predictions (legal, but they score 0)."""
    header, records, problems = _read(Path(path))
    if header is None:
        return problems
    if allow_empty:
        problems = [p for p in problems if p.kind != "empty_openset"]
    if not records and not problems:
        problems.append(Problem("no_rows", f"{Path(path).name} has a header but no data rows"))
    expected = expected_name_list(names)
    if expected is not None:
        seen = [row[0] for _, row in records]
        missing = [n for n in expected if n not in set(seen)]
        unknown = [n for n in seen if n not in set(expected)]
        if missing:
            problems.append(Problem("missing_names", f"{len(missing)} of {len(expected)} expected "
                                                     f"names have no row: {preview(missing)}"))
        if unknown:
            problems.append(Problem("unknown_names", f"{len(unknown)} rows name unexpected samples: "
                                                     f"{preview(unknown)}"))
    return problems


def _read(path: Path) -> tuple[list[str] | None, list[tuple[int, list[str]]], list[Problem]]:
    first, data, problems = _read_csv(path)
    if first is None:
        if problems and problems[0].kind == "empty_file":
            problems = [Problem("empty_file", f"{path.name} is empty (expected the header name,openset)")]
        return None, [], problems
    rows = [(1, first), *data]
    header = [h.strip() for h in rows[0][1]]
    problems: list[Problem] = []
    if tuple(header) != HEADER:
        problems.append(Problem("header", f"the header is {','.join(header)!r}; expected "
                                          f"'name,openset'"))
        return header, [], problems
    records: list[tuple[int, list[str]]] = []
    seen: dict[str, int] = {}
    for line, row in rows[1:]:
        if len(row) != 2:
            problems.append(Problem("row_length", f"line {line} has {len(row)} fields, expected 2"))
            continue
        name, cell = row
        if not name.strip():
            problems.append(Problem("empty_name", f"line {line} has an empty name"))
            continue
        if name in seen:
            problems.append(Problem("duplicate_names", f"{name!r} on line {line} already appeared "
                                                       f"on line {seen[name]}"))
            continue
        seen[name] = line
        if cell.strip() == "":
            problems.append(Problem("empty_openset", f"{name} (line {line}) has an empty openset"))
            records.append((line, row))
            continue
        stripped = cell.strip()
        if not (stripped.startswith("[") and stripped.endswith("]")):
            problems.append(Problem("not_a_list", f"{name} (line {line}): {cell[:60]!r} is not a "
                                                  f"Python-list string like \"['happy']\""))
            continue
        words = parse_openset(cell)
        if not words:
            problems.append(Problem("empty_openset", f"{name} (line {line}) has an empty openset"))
        bad = [w for w in words if w != w.strip() or not w.strip() or "," in w or "[" in w or "]" in w]
        if bad:
            problems.append(Problem("bad_word", f"{name} (line {line}): word(s) {preview(bad)} are "
                                                f"empty, have surrounding spaces or contain commas "
                                                f"or brackets"))
            continue
        records.append((line, row))
    return header, records, problems
