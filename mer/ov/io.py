"""``name,openset`` files: the MER-OV label and submission format, read, written and validated.

The organisers' files (``check-openset.csv``, ``predict-openset.csv``) hold one row per sample;
``openset`` is a Python-list string of English emotion words::

    name,openset
    sample_00000007,"['excited', 'joyful', 'happy']"

The format itself is known in one place: the ``mer2024_ov`` row of
:data:`submissions.schema.SUBMISSION_SCHEMAS`, with the cell rules and the two official parsers in
:mod:`submissions.openset` (:func:`parse_openset` is MER2024's, :func:`parse_openset_wheel` the
MER2025+ wheel scorer's; both are re-exported here). This module keeps the names the OV code has
always called: :func:`write_openset_csv` is :func:`submissions.writers.write_submission` and
:func:`validate_openset_file` is :func:`submissions.validate.validate_submission` for that schema.

The writer emits ``repr(list_of_str)``, which both parsers read back unchanged as long as the
words contain no quote, comma or bracket characters; such words (and empty ones) are refused with
the sample's name, so a written file always scores as intended.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from submissions.openset import (
    check_words, format_openset, parse_openset, parse_openset_wheel, word_problem,
)
from submissions.schema import NAME_COLUMN, OPENSET_COLUMN, get_schema
from submissions.validate import Problem, problem_kinds, read_table, validate_submission
from submissions.writers import write_submission

__all__ = ["HEADER", "NAME_COLUMN", "OPENSET_COLUMN", "OV_PROBLEM_KINDS", "OV_SCHEMA",
           "check_words", "format_openset", "parse_openset", "parse_openset_wheel",
           "read_openset_csv", "validate_openset_file", "word_problem", "write_openset_csv"]

OV_SCHEMA = "mer2024_ov"
"""The registered schema of a ``name,openset`` CSV."""

HEADER = get_schema(OV_SCHEMA).columns

_HEADER_KINDS = ("missing_columns", "extra_columns", "column_order")

OV_PROBLEM_KINDS: dict[str, str] = {
    "header": "the header is not exactly name,openset",
    **{k: v for k, v in problem_kinds("openset").items() if k not in (*_HEADER_KINDS, "file_name")},
}
"""Every problem kind :func:`validate_openset_file` reports: those of an openset file, with the
header problems folded into one ``header`` kind (``mer2024_ov`` has no file name rule);
``empty_openset`` is reported only with ``allow_empty=False``."""


def validate_openset_file(path: str | Path, names: Sequence[str] | None = None,
                          allow_empty: bool = True) -> list[Problem]:
    """Every problem with a ``name,openset`` file (an empty list means valid).

    ``names``: the expected sample names (then missing and unknown names are problems).
    ``allow_empty=False`` also reports empty predictions (legal, but they score 0)."""
    problems = validate_submission(path, OV_SCHEMA, names, allow_empty=allow_empty)
    header = [p for p in problems if p.kind in _HEADER_KINDS]
    if not header:
        return problems
    rest = [p for p in problems if p.kind not in _HEADER_KINDS]
    return [Problem("header", "; ".join(p.message for p in header)), *rest]


_READ_AS_THE_SCORER_DOES = ("bad_word", "parser_mismatch", "no_rows")


def read_openset_csv(path: str | Path, parser=None) -> dict[str, list[str]]:
    """``name -> words`` from a ``name,openset`` file, each cell read as ``parser`` reads it;
    a file that is no such table raises, naming the line and sample (a wrong header, ragged
    rows, empty or repeated names, a cell that is not a list).

    Words the validator would refuse in a submission (a quote inside a word, surrounding spaces:
    ``bad_word``, ``parser_mismatch``) are read as the official scorer reads them, not refused:
    the organisers' own ``predict-openset.csv`` writes ``"don't believe"``, which both scorers
    split into ``don`` and ``t believe``.

    ``parser``: :func:`parse_openset` (MER2024, the default) or :func:`parse_openset_wheel`."""
    parser = parser or parse_openset
    problems = [p for p in validate_openset_file(path) if p.kind not in _READ_AS_THE_SCORER_DOES]
    if problems:
        raise ValueError(f"cannot read {path} as a name,openset file: "
                         + "; ".join(map(str, problems)))
    table = read_table(path, get_schema(OV_SCHEMA))
    return {name: parser(cell) for _, (name, cell) in table.records}


def write_openset_csv(predictions: Mapping[str, Sequence[str]], path: str | Path,
                      expected_names: Sequence[str] | None = None) -> Path:
    """Write ``name -> words`` as ``name,openset`` (atomic) and validate what was written.

    Rows follow ``expected_names`` when given (every expected name must have a prediction, and
    no other name may appear), else the mapping's order. A word that the scorers would split or
    change raises, naming the sample."""
    return write_submission(OV_SCHEMA, predictions, path, expected_names)
