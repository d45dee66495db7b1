"""Write a track's submission file: join predictions to the test list by name, write atomically,
validate what was written.

:func:`write_submission` is the one writer for every schema of
:data:`submissions.schema.SUBMISSION_SCHEMAS`, whatever its kind (discrete, openset, description,
preference) or container (CSV, npz); the file it writes is checked by the same
:func:`submissions.validate.check_file` as any other before it is moved into place.

MERTools' writers zip predictions with the test list by row position, so a reordered prediction
file silently scores garbage. Here rows are matched by ``name`` only, and the file is in the
order of ``expected_names``.

Values, per kind (a bad one raises, naming the samples; nothing is changed silently except the
valence clipping below):

* ``discrete``: class strings, or integer indices into the classes;
* ``openset``: a list of words per sample, written as ``"['happy', 'sad']"``; a word may not be
  empty, have surrounding spaces or contain a quote, comma, bracket or line break (the scorers
  would split or change it); an empty list is written as ``[]``;
* ``description``: a non-empty string; commas and quotes are fine (the CSV quotes the cell), a
  line break is refused unless the schema allows it;
* ``preference``: one of the schema's classes (``a1``, ``a2``, ``same``), or an index into them.

Valence: NaN or non-numeric predictions raise (a NaN means the model produced nothing for that
sample). Finite values outside the track's range ([-5, 5]) are clipped to it, with one warning that
reports how many were clipped: a regression head may overshoot slightly, and clipping can only
lower the squared error against labels that lie inside the range.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from mer.core.io import atomic_file
from submissions.openset import format_openset, word_problem
from submissions.schema import NAME_COLUMN, VALENCE_COLUMN, SubmissionSchema, get_schema
from submissions.validate import (
    Problem, check_file, description_problem, expected_name_list, preview,
)


class SubmissionError(ValueError):
    """The written file failed validation; ``problems`` lists why. Nothing was left at the target."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def write_submission(schema_name: str | SubmissionSchema,
                     predictions: pd.DataFrame | Mapping[str, object],
                     out: str | Path, expected_names: Sequence[str] | None = None,
                     classes: Sequence[str] | None = None) -> Path:
    """Write ``predictions`` as a ``schema_name`` submission and return the file's path.

    Args:
        schema_name: a registered schema name (``submissions.schema``) or a schema.
        predictions: a DataFrame with a ``name`` column and the value column: ``discrete`` (and,
            for valence tracks, ``valence``), or for the other kinds the file's own value column
            (``openset``, ``fileitems``, ``reason``, ``preference``) or the kind's name
            (``openset``, ``description``, ``preference``); any row order. Or a mapping
            ``name -> value`` (a label, a list of words, a text, a preference). Other columns,
            and ``valence`` for tracks without it, are ignored.
        out: the file to write, or an existing directory (then the track's required file name,
            or ``<schema>.csv`` / ``<schema>-openset.npz`` when it has a pattern or none).
        expected_names: the official test list; the file gets exactly these rows in this order
            (for a ``superset`` schema, extra predicted names follow). None: every prediction, in
            the given order.
        classes: the allowed labels, for schemas without fixed classes (``generic``); ignored
            by kinds without a class set (openset, description).

    Raises:
        ValueError: predictions miss columns, repeat names, miss expected names or name unknown
            ones, or carry values the track does not accept (see the module docstring).
        SubmissionError: the written file failed validation (a bug here; the target is untouched).
    """
    schema = get_schema(schema_name)
    allowed = schema.resolve_classes(classes)
    expected = expected_name_list(expected_names)
    target = _target_path(out, schema)
    table = submission_table(schema, predictions, expected, allowed)
    _write_atomically(table, target, schema,
                      check=lambda tmp: check_file(tmp, schema, expected, allowed, target.name))
    return target


def submission_table(schema: SubmissionSchema, predictions: pd.DataFrame | Mapping[str, object],
                     expected_names: Sequence[str] | None, classes: Sequence[str]) -> pd.DataFrame:
    """The rows to write, checked, as the file's text cells and in expected-name order."""
    frame = _prediction_frame(schema, predictions)
    source = _value_source(schema, frame)
    names = _checked_names(frame[NAME_COLUMN])
    cells = _VALUE_CELLS[schema.kind](schema, frame[source], names, classes)
    table = pd.DataFrame({schema.name_column: names, schema.value_column: cells})
    columns = [schema.name_column, schema.value_column]
    if schema.kind == "discrete" and (schema.has_valence or (schema.has_valence is None
                                                             and VALENCE_COLUMN in frame.columns)):
        if VALENCE_COLUMN not in frame.columns:
            raise ValueError(f"predictions lack column(s) 'valence' needed by {schema.name} "
                             f"(have {', '.join(map(str, frame.columns))})")
        table[VALENCE_COLUMN] = _checked_valences(frame[VALENCE_COLUMN], names,
                                                  schema.valence_range)
        columns.append(VALENCE_COLUMN)
    order = _row_order(list(names), expected_names, schema)
    return table.set_index(schema.name_column).loc[order].reset_index()[columns]


def _prediction_frame(schema: SubmissionSchema,
                      predictions: pd.DataFrame | Mapping[str, object]) -> pd.DataFrame:
    if isinstance(predictions, pd.DataFrame):
        return predictions
    if not isinstance(predictions, Mapping):
        raise TypeError(f"predictions for {schema.name} must be a DataFrame or a mapping "
                        f"name -> value, got {type(predictions).__name__}")
    return pd.DataFrame({NAME_COLUMN: list(predictions),
                         schema.value_column: pd.Series(list(predictions.values()))})


def _value_source(schema: SubmissionSchema, frame: pd.DataFrame) -> str:
    """The predictions' column that holds the values: the file's own column, or the kind's name."""
    wanted = list(dict.fromkeys([schema.value_column, schema.kind]))
    if NAME_COLUMN not in frame.columns:
        raise ValueError(f"predictions lack column(s) 'name' needed by {schema.name} "
                         f"(have {', '.join(map(str, frame.columns))})")
    for column in wanted:
        if column in frame.columns:
            return column
    raise ValueError(f"predictions lack column(s) {' or '.join(map(repr, wanted))} needed by "
                     f"{schema.name} (have {', '.join(map(str, frame.columns))})")


def _checked_names(names: pd.Series) -> np.ndarray:
    values = names.to_numpy()
    not_text = [v for v in values if not isinstance(v, str)]
    if not_text:
        raise TypeError(f"sample names must be the dataset's own id strings; {len(not_text)} are "
                        f"not: {preview(not_text)}")
    empty = int(sum(not v.strip() for v in values))
    if empty:
        raise ValueError(f"{empty} prediction(s) have an empty name")
    counts = pd.Series(values).value_counts()
    repeated = counts[counts > 1].index.tolist()
    if repeated:
        raise ValueError(f"{len(repeated)} name(s) have more than one prediction: "
                         f"{preview(repeated)}")
    return values


def _label_strings(schema: SubmissionSchema, labels: pd.Series, names: np.ndarray,
                   classes: Sequence[str]) -> np.ndarray:
    values = labels.to_numpy()
    if pd.api.types.is_integer_dtype(labels.dtype):
        bad = (values < 0) | (values >= len(classes))
        if bad.any():
            raise ValueError(f"{int(bad.sum())} label indices are outside 0..{len(classes) - 1}, "
                             f"for {preview(names[bad].tolist())}")
        return np.asarray(classes, dtype=object)[values]
    allowed = set(classes)
    bad = np.array([v not in allowed for v in values], dtype=bool)
    if bad.any():
        found = pd.Series(values[bad]).astype(str).value_counts()
        listed = preview([f"{label!r} x{count}" for label, count in found.items()])
        raise ValueError(f"{int(bad.sum())} prediction(s) have labels outside "
                         f"{','.join(classes)}: {listed}; first names: "
                         f"{preview(names[bad].tolist())}")
    return values.astype(object)


def _openset_cells(schema: SubmissionSchema, values: pd.Series, names: np.ndarray,
                   classes: Sequence[str]) -> np.ndarray:
    bad: list[str] = []
    cells = []
    for name, words in zip(names, values.to_numpy()):
        if isinstance(words, str) or not isinstance(words, (list, tuple, np.ndarray)):
            bad.append(f"{name}: the openset must be a list of words, got {words!r}")
            cells.append("")
            continue
        problems = [p for p in map(word_problem, words) if p]
        if problems:
            bad.append(f"{name}: word {'; word '.join(problems)}")
        cells.append(format_openset(words))
    if bad:
        raise ValueError(f"{len(bad)} prediction(s) have openset words the scorers would split or "
                         f"change (a word may not be empty, have surrounding spaces or contain a "
                         f"quote, comma, bracket or line break): {preview(bad)}")
    return np.asarray(cells, dtype=object)


def _description_cells(schema: SubmissionSchema, values: pd.Series, names: np.ndarray,
                       classes: Sequence[str]) -> np.ndarray:
    bad: list[str] = []
    for name, text in zip(names, values.to_numpy()):
        if not isinstance(text, str):
            bad.append(f"{name}: {text!r} is not a string")
        elif not text.strip():
            bad.append(f"{name}: the description is empty")
        elif (why := description_problem(text, schema.allow_newlines)):
            bad.append(f"{name}: the description {why}")
    if bad:
        raise ValueError(f"{len(bad)} prediction(s) are not descriptions {schema.name} accepts: "
                         f"{preview(bad)}")
    return values.to_numpy().astype(object)


_VALUE_CELLS: dict[str, Callable[[SubmissionSchema, pd.Series, np.ndarray, Sequence[str]],
                                 np.ndarray]] = {
    "discrete": _label_strings,
    "preference": _label_strings,
    "openset": _openset_cells,
    "description": _description_cells,
}
"""The checked text cells of the value column, per file kind."""


def _checked_valences(valences: pd.Series, names: np.ndarray,
                      valid: tuple[float, float]) -> np.ndarray:
    numeric = pd.to_numeric(valences, errors="coerce").to_numpy(dtype=np.float64)
    not_numeric = np.isnan(numeric) & valences.notna().to_numpy()
    if not_numeric.any():
        raise ValueError(f"{int(not_numeric.sum())} valence(s) are not numbers, for "
                         f"{preview(names[not_numeric].tolist())}")
    not_finite = ~np.isfinite(numeric)
    if not_finite.any():
        raise ValueError(f"{int(not_finite.sum())} valence(s) are NaN or infinite, for "
                         f"{preview(names[not_finite].tolist())}; the valence head produced "
                         f"no value there")
    low, high = valid
    outside = (numeric < low) | (numeric > high)
    if outside.any():
        warnings.warn(f"clipped {int(outside.sum())} of {len(numeric)} valence predictions to "
                      f"[{low:g}, {high:g}] (e.g. {preview(names[outside].tolist(), 3)})",
                      stacklevel=4)
    return np.clip(numeric, low, high)


def _row_order(names: list[str], expected: list[str] | None,
               schema: SubmissionSchema) -> list[str]:
    if expected is None:
        return names
    predicted = set(names)
    missing = [n for n in expected if n not in predicted]
    expected_set = set(expected)
    unknown = [n for n in names if n not in expected_set]
    errors = []
    if missing:
        errors.append(f"{len(missing)} of {len(expected)} expected names have no prediction: "
                      f"{preview(missing)}")
    if unknown and schema.name_set == "exact":
        errors.append(f"{len(unknown)} predicted names are not in the expected names: "
                      f"{preview(unknown)}")
    if errors:
        raise ValueError(f"cannot write {schema.name}: " + "; ".join(errors))
    return expected + unknown  # unknown is empty unless the schema accepts a superset


def _target_path(out: str | Path, schema: SubmissionSchema) -> Path:
    """The file to write: ``out`` itself, or the track's file name inside directory ``out``."""
    is_dir = Path(out).is_dir() or str(out).endswith(("/", os.sep))
    target = Path(out) / schema.default_file_name() if is_dir else Path(out)
    if not schema.file_name_ok(target.name):
        raise ValueError(f"{schema.name} submissions must be named {schema.file_name!r}; "
                         f"got {str(target)!r} (pass a directory to use the required name)")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _write_atomically(table: pd.DataFrame, target: Path, schema: SubmissionSchema,
                      check: Callable[[Path], list[Problem]]) -> None:
    """Write ``table`` beside ``target``, validate, then rename over it, so readers see the old
    file or the complete new one, never a partial one, and a failure leaves no temporary file."""
    def validate(temp: Path) -> None:
        problems = check(temp)
        if problems:
            raise SubmissionError(f"the written {target.name} is invalid: "
                                  + "; ".join(map(str, problems)), problems)

    if schema.container == "npz":
        with atomic_file(target, "wb", check=validate) as handle:
            np.savez_compressed(handle, **{column: np.asarray(table[column].tolist(), dtype=np.str_)
                                           for column in table.columns})
        return
    with atomic_file(target, "w", encoding="utf-8", newline="", check=validate) as handle:
        table.to_csv(handle, index=False, lineterminator="\n")
