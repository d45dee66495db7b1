"""Check a submission file against its track's schema and list every problem, not just the first.

    python -m submissions.validate FILE --track mer2023_multi --names NAMES.csv [--classes a,b,c]
        [--no-input-names RUN/no_input.csv] [--no-empty]

exits 0 and prints ``OK: <n> rows ...`` for a valid file, exits 1 and prints every problem
otherwise (2 for bad arguments). Every track of :data:`submissions.schema.SUBMISSION_SCHEMAS` is
checked, whatever its kind (discrete, openset, description, preference) or container (CSV, npz).
NAMES.csv is either a CSV with a ``name`` column (a label file works) or one name per line
without a header. ``--no-input-names`` (a run's ``no_input.csv``) lists the rows whose samples had
no input, whose predictions are the run's fallback (a ``FLAGGED`` line; they leave the file
valid). ``--no-empty`` (openset tracks) also reports empty word lists, which are legal but score 0.

A CSV is read with the ``csv`` module as text, not with pandas, so nothing is coerced: a label
``" happy"`` or a name ``"1e3"`` is seen exactly as the scorer will see it. It is read as a
stream with a row and a byte budget set by the expected size (:func:`read_limits`), so a wrong
file of hundreds of MB is refused at once (``too_large``) in bounded memory. An npz is opened
without unpickling (``allow_pickle=False``) after its unpacked size is checked against the same
budget.
"""
from __future__ import annotations

import argparse
import csv
import math
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from submissions.openset import cell_problem
from submissions.schema import (
    DEFAULT_MAX_ROW_BYTES, NAME_COLUMN, SUBMISSION_SCHEMAS, VALENCE_COLUMN, SubmissionSchema,
    get_schema,
)

COMMON_PROBLEM_KINDS: dict[str, str] = {
    "unreadable": "the file is missing, not UTF-8 text, not parseable as CSV, or not an npz of "
                  "1-D string arrays",
    "too_large": "the file holds far more rows or bytes than the expected names allow; not read whole",
    "empty_file": "the file has no header line",
    "file_name": "the track requires a different file name",
    "missing_columns": "a required column is not in the header",
    "extra_columns": "the header has a column the track does not accept, or a column twice",
    "column_order": "the header has the right columns in the wrong order",
    "row_length": "a row has more or fewer fields than the header (npz: the arrays differ in length)",
    "no_rows": "the file has a header but no data rows",
    "empty_name": "a row has an empty name",
    "duplicate_names": "a name appears in more than one row",
    "missing_names": "an expected name has no row",
    "unknown_names": "a row names a sample that is not expected",
    "row_count": "the number of rows differs from the number of expected names",
}
"""The problem kinds a file of every kind can have (file, header, names, rows)."""

KIND_PROBLEM_KINDS: dict[str, dict[str, str]] = {
    "discrete": {
        "bad_label": "a discrete label is not one of the allowed class strings",
        "valence_nan": "a valence is empty or NaN",
        "valence_not_numeric": "a valence is not a number",
        "valence_out_of_range": "a valence lies outside the valid range",
    },
    "openset": {
        "not_a_list": "an openset cell is not a Python-list string like \"['happy', 'relaxed']\"",
        "bad_word": "a word is empty, has surrounding spaces, contains a quote, comma, bracket or "
                    "line break, or stands outside the quotes",
        "parser_mismatch": "the official parsers (MER2024's and the MER2025+ wheel scorer's) read "
                           "different words from a cell",
        "empty_openset": "a word list is empty (legal, it scores 0; reported only on request)",
    },
    "description": {
        "empty_description": "a description is empty or only spaces",
        "bad_text": "a description contains a line break or another control character",
    },
    "preference": {
        "bad_preference": "a preference is not one of the allowed answers",
    },
}
"""The problem kinds only files of one kind can have, beyond :data:`COMMON_PROBLEM_KINDS`."""


def problem_kinds(kind: str) -> dict[str, str]:
    """Every problem kind a file of ``kind`` can have, with what it means."""
    return {**COMMON_PROBLEM_KINDS, **KIND_PROBLEM_KINDS[kind]}


PROBLEM_KINDS: dict[str, str] = problem_kinds("discrete")
"""Every problem kind a ``discrete`` file can have (the tracks the validator first knew), with
what it means; :func:`problem_kinds` gives those of the other kinds."""

PREVIEW = 5
"""How many names or lines a message shows before it summarises the rest."""

MAX_ROW_BYTES = DEFAULT_MAX_ROW_BYTES
"""The most bytes one row of a discrete submission plausibly takes; each schema sets its own
(``SubmissionSchema.max_row_bytes``)."""

UNKNOWN_SIZE_MAX_ROWS = 200_000
"""The most data rows read when neither the names nor the schema say how many to expect."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission: a short ``kind`` (see :data:`PROBLEM_KINDS`) and a message."""

    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def preview(items: Iterable[object], limit: int = PREVIEW) -> str:
    """``'a', 'b', 'c', ... (12 in total)``: the first few items and how many there are."""
    items = list(items)
    shown = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items)} in total)"


_PLURAL = {"line": "lines", "entry": "entries"}


def _lines(line_numbers: Sequence[int], unit: str = "line") -> str:
    word = unit if len(line_numbers) == 1 else _PLURAL[unit]
    return f"{word} {preview(line_numbers)}"


def expected_name_list(names: Sequence[str] | None) -> list[str] | None:
    """The reference names as a list, refusing an ambiguous reference (duplicates or empties)."""
    if names is None:
        return None
    names = [str(n) for n in names]
    repeated = [n for n, c in Counter(names).items() if c > 1]
    if repeated:
        raise ValueError(f"the expected names repeat {preview(repeated)}; a test list names each "
                         f"sample once")
    if any(not n.strip() for n in names):
        raise ValueError("the expected names include an empty name")
    return names


def read_names(path: str | Path) -> list[str]:
    """Names from a CSV with a ``name`` column, or from a file with one name per line and no header."""
    text = Path(path).read_text(encoding="utf-8-sig")
    rows = [row for row in csv.reader(text.splitlines()) if any(f.strip() for f in row)]
    if not rows:
        raise ValueError(f"names file {path} is empty")
    header = [f.strip() for f in rows[0]]
    if NAME_COLUMN in header:
        col = header.index(NAME_COLUMN)
        return [row[col].strip() for row in rows[1:] if len(row) > col and row[col].strip()]
    if len(header) > 1:
        raise ValueError(f"names file {path} looks like a CSV (header {','.join(header)}) but "
                         f"has no 'name' column")
    return [row[0].strip() for row in rows]


def validate_submission(path: str | Path, track: str | SubmissionSchema,
                        names: Sequence[str] | None = None,
                        classes: Sequence[str] | None = None, *,
                        allow_empty: bool = True) -> list[Problem]:
    """Every problem with the submission at ``path`` for ``track``; an empty list means valid.

    ``names`` are the expected sample names (the official test list); without them the name set
    and the row count are not checked. ``classes`` is needed only for schemas without fixed
    classes. ``allow_empty=False`` also reports empty word lists (openset tracks).
    """
    path = Path(path)
    return check_file(path, get_schema(track), names, classes, file_name=path.name,
                      allow_empty=allow_empty)


def check_file(path: Path, schema: SubmissionSchema, names: Sequence[str] | None,
               classes: Sequence[str] | None, file_name: str, *,
               allow_empty: bool = True) -> list[Problem]:
    """:func:`validate_submission` with the file name to judge given apart from ``path``.

    The writer checks its temporary file before renaming it to ``file_name``.
    """
    allowed = schema.resolve_classes(classes)
    expected = expected_name_list(names)
    problems = _check_file_name(file_name, schema)
    table = read_table(path, schema, read_limits(expected, schema))
    problems += table.problems
    if table.header is None:
        return problems
    header, records, unit = table.header, table.records, table.unit
    problems += _check_header(header, schema)
    if any(p.kind == "too_large" for p in table.problems):
        return problems              # the rows read are a prefix: counting them would mislead
    if schema.container == "csv":    # an npz reader pairs the arrays and reports unequal lengths
        problems += _check_row_lengths(header, records, unit)
    if not records:
        problems.append(Problem("no_rows", "the file has a header but no data rows"
                                if schema.container == "csv" else "the arrays hold no entries"))
    if schema.name_column in header:
        problems += _check_names(_column(header, records, schema.name_column), expected, schema,
                                 unit)
    if schema.value_column in header:
        problems += _VALUE_CHECKS[schema.kind](table, schema, allowed, allow_empty)
    problems += _check_row_count(len(records), expected, schema)
    return problems


Record = tuple[int, list[str]]  # (line number in the file, or entry number in an npz; fields)
Cell = tuple[int, str, str]      # (line or entry number, sample name, value)


@dataclass(frozen=True)
class Table:
    """A submission as read: its ``header`` (None when there is none; an npz's array names),
    ``records``, the ``problems`` met while reading, and the ``unit`` its rows are counted in
    (``line`` for a CSV, ``entry`` for an npz), for messages."""

    header: list[str] | None
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unit: str = "line"


@dataclass(frozen=True)
class ReadLimits:
    """How much of a file is read before it is refused as ``too_large``: ``max_rows`` data rows
    and ``max_bytes`` bytes; ``basis`` says where the budget comes from, for the message."""

    max_rows: int
    max_bytes: int
    basis: str


def read_limits(expected: Sequence[str] | None, schema: SubmissionSchema) -> ReadLimits:
    """The read budget for a submission: the expected row count (the names given, else the
    schema's official size) plus a margin (10 %, at least 1000 rows) so that a near miss is still
    read whole and every problem in it listed, at the schema's ``max_row_bytes`` per row."""
    if expected is not None and schema.name_set == "exact":
        known, basis = len(expected), f"{len(expected)} names are expected"
    elif expected is None and schema.expected_rows:
        known, basis = schema.expected_rows, f"the official {schema.name} list has {schema.expected_rows}"
    else:
        known, basis = None, "no row count is expected"
    rows = UNKNOWN_SIZE_MAX_ROWS if known is None else known + max(1000, known // 10)
    if known is None and expected is not None:
        rows = max(rows, 10 * len(expected))
    return ReadLimits(rows, (rows + 1) * schema.max_row_bytes, basis)


class _TooLarge(Exception):
    pass


def _bounded_lines(handle, max_chars: int) -> Iterable[str]:
    """The lines of ``handle``, raising :class:`_TooLarge` once more than ``max_chars`` are read;
    a line is read in bounded pieces, so one endless line costs no more than the budget."""
    left = max_chars
    while True:
        line = handle.readline(left + 1)
        if not line:
            return
        left -= len(line)
        if left < 0:
            raise _TooLarge
        yield line


def _read_csv(path: Path, limits: ReadLimits | None = None
              ) -> tuple[list[str] | None, list[Record], list[Problem]]:
    """Header and data records; empty lines are skipped, as pandas does. With ``limits``, a file
    above the byte budget is refused before it is read, and reading stops (with a ``too_large``
    problem and the rows read so far) past the row or byte budget."""
    rows: list[Record] = []
    try:
        if limits is not None and path.is_file() and path.stat().st_size > limits.max_bytes:
            return None, [], [Problem("too_large", _too_large_bytes(path, limits))]
        with path.open(encoding="utf-8-sig", newline="") as handle:
            lines = _bounded_lines(handle, limits.max_bytes) if limits is not None else handle
            reader = csv.reader(lines, strict=True)
            for row in reader:
                if not row:
                    continue
                rows.append((reader.line_num, row))
                if limits is not None and len(rows) > limits.max_rows + 1:     # + the header
                    header = rows[0][1]
                    return header, rows[1:], [Problem("too_large", _too_large_rows(path, limits))]
    except _TooLarge:
        return (rows[0][1] if rows else None), rows[1:], [Problem("too_large", _too_large_bytes(path, limits))]
    except FileNotFoundError:
        return None, [], [Problem("unreadable", f"no such file: {path}")]
    except UnicodeDecodeError as err:
        return None, [], [Problem("unreadable", f"{path.name} is not UTF-8 text ({err.reason} at "
                                                f"byte {err.start}); is it a CSV file?")]
    except (OSError, csv.Error) as err:
        return None, [], [Problem("unreadable", f"cannot read {path.name} as CSV: {err}")]
    if not rows:
        return None, [], [Problem("empty_file", f"{path.name} is empty: no header line")]
    return rows[0][1], rows[1:], []


def read_table(path: str | Path, schema: SubmissionSchema,
               limits: ReadLimits | None = None) -> Table:
    """The header and rows of the submission at ``path`` as ``schema``'s container holds them,
    as text; nothing is judged but whether it can be read (and, with ``limits``, its size)."""
    path = Path(path)
    if schema.container == "npz":
        return _read_npz(path, schema, limits)
    header, records, problems = _read_csv(path, limits)
    return Table(header, records, problems)


def _read_npz(path: Path, schema: SubmissionSchema, limits: ReadLimits | None) -> Table:
    """An npz of 1-D string arrays as rows: entry ``i`` of each array in ``schema.columns``
    order (then any others) is row ``i``. Nothing is unpickled."""
    def unreadable(message: str) -> Table:
        return Table(None, [], [Problem("unreadable", message)])

    try:
        if limits is not None and path.is_file() and path.stat().st_size > limits.max_bytes:
            return Table(None, [], [Problem("too_large", _too_large_bytes(path, limits))])
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
        # numpy keeps text as UTF-32, 4 bytes a character: the budget is in bytes of UTF-8 text
        if limits is not None and unpacked > 4 * limits.max_bytes:
            return Table(None, [], [Problem("too_large", _too_large_unpacked(path, unpacked, limits))])
        with np.load(path, allow_pickle=False) as npz:
            files = list(npz.files)
            arrays = {key: npz[key] for key in files if key in schema.columns}
    except FileNotFoundError:
        return unreadable(f"no such file: {path}")
    except zipfile.BadZipFile:
        return unreadable(f"{path.name} is not an .npz archive (np.savez_compressed writes one)")
    except ValueError as err:
        if "pickle" not in str(err):
            return unreadable(f"cannot read {path.name} as an npz: {err}")
        return unreadable(f"{path.name} holds arrays of Python objects, which are not unpickled "
                          f"(unsafe: {err}); save string arrays: np.savez_compressed(path, "
                          f"{schema.name_column}=np.array(names), "
                          f"{schema.value_column}=np.array(items))")
    except OSError as err:
        return unreadable(f"cannot read {path.name} as an npz: {err}")
    if not files:
        return Table(None, [], [Problem("empty_file", f"{path.name} holds no arrays")])
    known = [c for c in schema.columns if c in arrays]
    header = known + sorted(k for k in files if k not in schema.columns)   # others: extra_columns
    not_text = [f"{k} ({arrays[k].dtype}, shape {arrays[k].shape})" for k in known
                if arrays[k].ndim != 1 or arrays[k].dtype.kind not in "US"]
    if not_text:
        return unreadable(f"{path.name}: array(s) {preview(not_text)} are not 1-D arrays of "
                          f"strings")
    try:
        columns = [[v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arrays[k].tolist()]
                   for k in known]
    except UnicodeDecodeError as err:
        return unreadable(f"{path.name}: a byte-string array is not UTF-8 ({err.reason})")
    if not columns:
        return Table(header, [], [])
    problems = []
    lengths = {k: len(c) for k, c in zip(known, columns)}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        problems.append(Problem("row_length", f"the arrays differ in length ({shown} entries); "
                                              f"only the first {min(lengths.values())} pair up"))
    n_rows = min(lengths.values())
    if limits is not None and n_rows > limits.max_rows:
        problems.append(Problem("too_large", _too_large_rows(path, limits)))
        n_rows = limits.max_rows
    records = [(i + 1, [c[i] for c in columns]) for i in range(n_rows)]
    return Table(header, records, problems, unit="entry")


def _too_large_unpacked(path: Path, unpacked: int, limits: ReadLimits) -> str:
    return (f"{path.name} unpacks to {unpacked / 1e6:.1f} MB, but {limits.max_rows} rows of a "
            f"submission take at most {4 * limits.max_bytes / 1e6:.1f} MB ({limits.basis}); "
            f"refused without unpacking it: is it the right file?")


def _too_large_bytes(path: Path, limits: ReadLimits) -> str:
    size = f"{path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "more than that"
    return (f"{path.name} is {size}, but {limits.max_rows} rows of a submission take at most "
            f"{limits.max_bytes / 1e6:.1f} MB ({limits.basis}); refused without reading it whole: "
            f"is it the right file?")


def _too_large_rows(path: Path, limits: ReadLimits) -> str:
    return (f"{path.name} has more than {limits.max_rows} data rows ({limits.basis}); reading "
            f"stopped there: is it the right file?")


def _column(header: list[str], records: list[Record], column: str) -> list[tuple[int, str]]:
    """``(line, value)`` for every record long enough to have ``column`` (short rows are
    reported once, as ``row_length``)."""
    index = header.index(column)
    return [(line, fields[index]) for line, fields in records if len(fields) > index]


def _cells(table: Table, column: str, schema: SubmissionSchema) -> list[Cell]:
    """``(line, sample name, value)`` of ``column`` for every record long enough to have it."""
    header = table.header or []
    index = header.index(column)
    at = header.index(schema.name_column) if schema.name_column in header else None
    return [(line, fields[at] if at is not None and len(fields) > at else "?", fields[index])
            for line, fields in table.records if len(fields) > index]


def _samples(cells: Sequence[Cell]) -> str:
    """``samples 'a', 'b'``: the names of some rows, for a message."""
    names = [name for _, name, _ in cells]
    return f"{'sample' if len(names) == 1 else 'samples'} {preview(names)}"


def _listed(cells: Sequence[tuple[Cell, str]], unit: str) -> str:
    """``'a' (line 3): 'happy' is ...; 'b' (line 9): ...``: each row's sample, place and problem."""
    shown = [f"{name!r} ({unit} {line}): {value[:60]!r} {what}"
             for (line, name, value), what in list(cells)[:PREVIEW]]
    more = f"; ... ({len(cells)} in total)" if len(cells) > PREVIEW else ""
    return "; ".join(shown) + more


def _check_file_name(file_name: str, schema: SubmissionSchema) -> list[Problem]:
    if schema.file_name_ok(file_name):
        return []
    rule = "named like" if "*" in (schema.file_name or "") else "named"
    return [Problem("file_name", f"{schema.name} requires the file to be {rule} "
                                 f"{schema.file_name!r}, not {file_name!r}")]


def _check_header(header: list[str], schema: SubmissionSchema) -> list[Problem]:
    accepted = schema.headers()
    if tuple(header) in accepted:
        return []
    wanted = " or ".join(",".join(h) for h in accepted)
    if schema.container == "npz":
        got = f"the arrays are {','.join(header)!r}; {schema.name} wants exactly {wanted}"
    else:
        got = f"header is {','.join(header)!r}; {schema.name} wants {wanted}"
    problems = []
    missing = [c for c in accepted[-1] if c not in header]  # the shortest accepted header
    if missing:
        problems.append(Problem("missing_columns", f"missing column(s) {preview(missing)}: {got}"
                                                   f"{_separator_hint(header)}"))
    counts = Counter(header)
    extra = [c for c in counts if c not in accepted[0] or counts[c] > 1]
    if extra:
        problems.append(Problem("extra_columns", f"unexpected or repeated column(s) "
                                                 f"{preview(extra)}: {got}"))
    if not problems:
        problems.append(Problem("column_order", f"columns in the wrong order: {got}"))
    return problems


def _separator_hint(header: list[str]) -> str:
    if len(header) == 1 and any(sep in header[0] for sep in "\t;"):
        return " (the file looks tab- or semicolon-separated; it must be comma-separated)"
    return ""


def _check_row_lengths(header: list[str], records: list[Record], unit: str = "line") -> list[Problem]:
    ragged = [line for line, fields in records if len(fields) != len(header)]
    if not ragged:
        return []
    return [Problem("row_length", f"{len(ragged)} row(s) do not have {len(header)} fields: "
                                  f"{_lines(ragged, unit)}")]


def _check_names(values: list[tuple[int, str]], expected: list[str] | None,
                 schema: SubmissionSchema, unit: str = "line") -> list[Problem]:
    problems = []
    empty = [line for line, name in values if not name.strip()]
    if empty:
        problems.append(Problem("empty_name", f"{len(empty)} row(s) have an empty name: "
                                              f"{_lines(empty, unit)}"))
    lines_of: dict[str, list[int]] = {}
    for line, name in values:
        if name.strip():
            lines_of.setdefault(name, []).append(line)
    repeated = {n: ls for n, ls in lines_of.items() if len(ls) > 1}
    if repeated:
        shown = [f"{n!r} ({_lines(ls, unit)})" for n, ls in list(repeated.items())[:PREVIEW]]
        more = f", ... ({len(repeated)} in total)" if len(repeated) > PREVIEW else ""
        problems.append(Problem("duplicate_names", f"{len(repeated)} name(s) appear in more than "
                                                   f"one row: {', '.join(shown)}{more}"))
    if expected is not None:
        problems += _check_name_set(lines_of, expected, schema)
    return problems


def _check_name_set(lines_of: dict[str, list[int]], expected: list[str],
                    schema: SubmissionSchema) -> list[Problem]:
    problems = []
    missing = [n for n in expected if n not in lines_of]
    if missing:
        problems.append(Problem("missing_names", f"{len(missing)} of {len(expected)} expected "
                                                 f"names have no row: {preview(missing)}"))
    if schema.name_set == "exact":
        expected_set = set(expected)
        unknown = [n for n in lines_of if n not in expected_set]
        if unknown:
            hint = (" (some match after removing spaces; names are compared exactly)"
                    if any(n.strip() in expected_set for n in unknown) else "")
            problems.append(Problem("unknown_names", f"{len(unknown)} name(s) are not in the "
                                                     f"expected names: {preview(unknown)}{hint}"))
    return problems


def _check_labels(cells: Sequence[Cell], allowed: tuple[str, ...], unit: str = "line",
                  kind: str = "bad_label", what: str = "a label") -> list[Problem]:
    allowed_set = set(allowed)
    bad: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell[2] not in allowed_set:
            bad.setdefault(cell[2], []).append(cell)
    if not bad:
        return []
    n_rows = sum(len(cs) for cs in bad.values())
    shown = [f"{label!r} ({len(cs)} row(s), {_lines([c[0] for c in cs], unit)})"
             for label, cs in list(bad.items())[:PREVIEW]]
    more = f", ... ({len(bad)} labels in total)" if len(bad) > PREVIEW else ""
    lowered = {a.lower() for a in allowed}
    hint = (" (labels are case- and space-sensitive)"
            if any(b.strip().lower() in lowered for b in bad) else "")
    return [Problem(kind, f"{n_rows} row(s) have {what} outside {','.join(allowed)}: "
                          f"{', '.join(shown)}{more}{hint}; "
                          f"{_samples([c for cs in bad.values() for c in cs])}")]


def _check_valences(cells: Sequence[Cell], valid: tuple[float, float],
                    unit: str = "line") -> list[Problem]:
    low, high = valid
    kinds: dict[str, list[Cell]] = {"valence_nan": [], "valence_not_numeric": [],
                                    "valence_out_of_range": []}
    for cell in cells:
        kind = _valence_problem(cell[2], low, high)
        if kind:
            kinds[kind].append(cell)
    what = {"valence_nan": "an empty or NaN valence",
            "valence_not_numeric": "a valence that is not a number",
            "valence_out_of_range": f"a valence outside [{low:g}, {high:g}]"}
    return [Problem(kind, f"{len(cs)} row(s) have {what[kind]}: "
                          f"{_lines([c[0] for c in cs], unit)} ({_samples(cs)})")
            for kind, cs in kinds.items() if cs]


def _valence_problem(text: str, low: float, high: float) -> str | None:
    if not text.strip():
        return "valence_nan"
    try:
        value = float(text)
    except ValueError:
        return "valence_not_numeric"
    if math.isnan(value):
        return "valence_nan"
    return None if low <= value <= high else "valence_out_of_range"


def _check_discrete(table: Table, schema: SubmissionSchema, allowed: tuple[str, ...],
                    allow_empty: bool) -> list[Problem]:
    problems = _check_labels(_cells(table, schema.value_column, schema), allowed, table.unit)
    if VALENCE_COLUMN in (table.header or []) and schema.has_valence is not False:
        problems += _check_valences(_cells(table, VALENCE_COLUMN, schema), schema.valence_range,
                                    table.unit)
    return problems


def _check_preferences(table: Table, schema: SubmissionSchema, allowed: tuple[str, ...],
                       allow_empty: bool) -> list[Problem]:
    return _check_labels(_cells(table, schema.value_column, schema), allowed, table.unit,
                         kind="bad_preference", what="a preference")


_OPENSET_TITLES = {
    "not_a_list": "an openset that is not a Python-list string",
    "bad_word": "a word the scorers would split or change",
    "parser_mismatch": "an openset the official parsers read differently",
    "empty_openset": "an empty word list (legal, but it scores 0)",
}


def _check_opensets(table: Table, schema: SubmissionSchema, allowed: tuple[str, ...],
                    allow_empty: bool) -> list[Problem]:
    found: dict[str, list[tuple[Cell, str]]] = {kind: [] for kind in _OPENSET_TITLES}
    for cell in _cells(table, schema.value_column, schema):
        text = cell[2]
        problem = cell_problem(text, schema.openset_parsers) if text else None
        if problem:
            found[problem[0]].append((cell, problem[1]))
        elif not allow_empty and not text.strip("[] "):
            found["empty_openset"].append((cell, "has no words"))
    return [Problem(kind, f"{len(items)} row(s) have {_OPENSET_TITLES[kind]}: "
                          f"{_listed(items, table.unit)}")
            for kind, items in found.items() if items]


def description_problem(text: str, allow_newlines: bool) -> str | None:
    """What makes ``text`` unusable as a description (None when it is fine): a line break
    (unless ``allow_newlines``) or another control character than tab."""
    for char in text:
        if char in "\n\r" and allow_newlines:
            continue
        if char == "\t" or unicodedata.category(char) != "Cc":
            continue
        if char in "\n\r":
            return ("has a line break; a description must be one line (join its lines with "
                    "spaces, as the organisers' own code does)")
        return f"has the control character {char!r}"
    return None


def _check_descriptions(table: Table, schema: SubmissionSchema, allowed: tuple[str, ...],
                        allow_empty: bool) -> list[Problem]:
    empty: list[tuple[Cell, str]] = []
    bad: list[tuple[Cell, str]] = []
    for cell in _cells(table, schema.value_column, schema):
        if not cell[2].strip():
            empty.append((cell, "is empty"))
        elif (why := description_problem(cell[2], schema.allow_newlines)):
            bad.append((cell, why))
    problems = []
    if empty:
        problems.append(Problem("empty_description", f"{len(empty)} row(s) have an empty "
                                                     f"description: {_listed(empty, table.unit)}"))
    if bad:
        problems.append(Problem("bad_text", f"{len(bad)} description(s) hold characters the "
                                            f"track does not accept: {_listed(bad, table.unit)}"))
    return problems


_VALUE_CHECKS: dict[str, Callable[[Table, SubmissionSchema, tuple[str, ...], bool], list[Problem]]] = {
    "discrete": _check_discrete,
    "openset": _check_opensets,
    "description": _check_descriptions,
    "preference": _check_preferences,
}
"""The checks of the value column(s), per file kind."""


def _check_row_count(n_rows: int, expected: list[str] | None,
                     schema: SubmissionSchema) -> list[Problem]:
    if expected is None:
        return []
    if schema.name_set == "exact" and n_rows != len(expected):
        return [Problem("row_count", f"{n_rows} rows, but {len(expected)} names are expected")]
    if schema.name_set == "superset" and n_rows < len(expected):
        return [Problem("row_count", f"{n_rows} rows, but at least {len(expected)} are expected")]
    return []


# ---------------------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    tracks = "\n".join(f"  {name:<16} {schema.kind:<12} {schema.description}"
                       for name, schema in ((n, SUBMISSION_SCHEMAS.get(n))
                                            for n in SUBMISSION_SCHEMAS.names()))
    parser = argparse.ArgumentParser(
        prog="python -m submissions.validate",
        description="Check a MER submission file and list every problem.",
        epilog=f"tracks (name, kind, format):\n{tracks}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="the submission file (CSV, or npz for the tracks "
                                                "that take one)")
    parser.add_argument("--track", required=True, choices=SUBMISSION_SCHEMAS.names(),
                        metavar="TRACK", help="submission schema (listed below)")
    parser.add_argument("--names", type=Path, help="expected names: a CSV with a 'name' column "
                                                   "or one name per line; without it the name "
                                                   "set and row count are not checked")
    parser.add_argument("--classes", help="comma-separated allowed labels (for --track generic)")
    parser.add_argument("--no-input-names", type=Path, metavar="FILE",
                        help="names of samples with no input (a run's no_input.csv): the file's rows "
                             "for them, fallback predictions, are listed (they do not make it invalid)")
    parser.add_argument("--no-empty", action="store_true",
                        help="openset tracks: also report empty word lists (legal, they score 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 valid, 1 invalid, 2 bad arguments)."""
    parser = _parser()
    args = parser.parse_args(argv)
    schema = SUBMISSION_SCHEMAS.get(args.track)
    if args.no_empty and schema.kind != "openset":
        parser.error(f"--no-empty is for openset tracks; {schema.name} is a {schema.kind} track")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        names = read_names(args.names) if args.names else None
        no_input = read_names(args.no_input_names) if args.no_input_names else None
        problems = validate_submission(args.file, schema, names, classes,
                                       allow_empty=not args.no_empty)
    except (OSError, ValueError) as err:
        parser.error(str(err))  # exits 2
    flagged = no_input_rows(args.file, no_input, schema) if no_input and not problems else []
    if problems:
        print(f"INVALID: {args.file} as {schema.name}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(_ok_message(args.file, schema, names))
    if no_input is not None:
        print(f"FLAGGED: {len(flagged)} row(s) are fallback predictions for samples with no input "
              f"(listed in {args.no_input_names}){': ' + preview(flagged) if flagged else ''}")
    return 0


def no_input_rows(path: str | Path, no_input_names: Iterable[str],
                  schema: str | SubmissionSchema = "generic") -> list[str]:
    """The names of the submission's rows whose samples had no input (every modality missing):
    a run writes their names to ``no_input.csv`` and gives them a fallback prediction (the
    training prior), which this lets a reviewer see before uploading. In file order."""
    schema = get_schema(schema)
    table = read_table(path, schema)
    if table.header is None or schema.name_column not in table.header:
        return []
    col, wanted = table.header.index(schema.name_column), set(no_input_names)
    return [row[col] for _, row in table.records if len(row) > col and row[col] in wanted]


def _ok_message(path: Path, schema: SubmissionSchema, names: list[str] | None) -> str:
    n_rows = len(read_table(path, schema).records)
    if names is not None:
        checked = f"names match the {len(names)} expected"
    else:
        official = f"; the official list has {schema.expected_rows}" if schema.expected_rows else ""
        checked = f"names not checked (pass --names{official})"
    return f"OK: {n_rows} rows in {path} are a valid {schema.name} submission; {checked}"


if __name__ == "__main__":
    from mer.core.errors import run_cli

    run_cli(main)
