"""Write a track's submission file: join predictions to the test list by name, write atomically,
validate what was written.

MERTools' writers zip predictions with the test list by row position, so a reordered prediction
file silently scores garbage. Here rows are matched by ``name`` only, and the file is in the
order of ``expected_names``.

Valence: NaN or non-numeric predictions raise (a NaN means the model produced nothing for that
sample). Finite values outside the track's range ([-5, 5]) are clipped to it, with one warning that
reports how many were clipped: a regression head may overshoot slightly, and clipping can only
lower the squared error against labels that lie inside the range.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from mer.core.io import atomic_file
from submissions.schema import (
    LABEL_COLUMN, NAME_COLUMN, VALENCE_COLUMN, SubmissionSchema, get_schema,
)
from submissions.validate import Problem, check_file, expected_name_list, preview


class SubmissionError(ValueError):
    """The written file failed validation; ``problems`` lists why. Nothing was left at the target."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def write_submission(schema_name: str | SubmissionSchema, predictions: pd.DataFrame,
                     out: str | Path, expected_names: Sequence[str] | None = None,
                     classes: Sequence[str] | None = None) -> Path:
    """Write ``predictions`` as a ``schema_name`` submission and return the file's path.

    Args:
        schema_name: a registered schema name (``submissions.schema``) or a schema.
        predictions: columns ``name``, ``discrete`` (class strings, or integer indices into the
            classes) and, for valence tracks, ``valence``; any row order. Other columns, and
            ``valence`` for tracks without it, are ignored.
        out: the file to write, or an existing directory (then the track's required file name,
            or ``<schema>.csv`` when it has none).
        expected_names: the official test list; the file gets exactly these rows in this order
            (for a ``superset`` schema, extra predicted names follow). None: every prediction, in
            the given order.
        classes: the allowed labels, for schemas without fixed classes (``generic``).

    Raises:
        ValueError: predictions miss columns, repeat names, miss expected names or name unknown
            ones, carry labels outside the classes or NaN/non-numeric valences.
        SubmissionError: the written file failed validation (a bug here; the target is untouched).
    """
    schema = get_schema(schema_name)
    allowed = schema.resolve_classes(classes)
    expected = expected_name_list(expected_names)
    target = _target_path(out, schema)
    table = submission_table(schema, predictions, expected, allowed)
    _write_atomically(table, target,
                      check=lambda tmp: check_file(tmp, schema, expected, allowed, target.name))
    return target


def submission_table(schema: SubmissionSchema, predictions: pd.DataFrame,
                     expected_names: Sequence[str] | None, classes: Sequence[str]) -> pd.DataFrame:
    """The rows to write, checked, with string labels and in expected-name order."""
    columns = _output_columns(schema, predictions)
    names = _checked_names(predictions[NAME_COLUMN])
    frame = pd.DataFrame({NAME_COLUMN: names,
                          LABEL_COLUMN: _label_strings(predictions[LABEL_COLUMN], names, classes)})
    if VALENCE_COLUMN in columns:
        frame[VALENCE_COLUMN] = _checked_valences(predictions[VALENCE_COLUMN], names,
                                                  schema.valence_range)
    order = _row_order(list(names), expected_names, schema)
    return frame.set_index(NAME_COLUMN).loc[order].reset_index()[columns]


def _output_columns(schema: SubmissionSchema, predictions: pd.DataFrame) -> list[str]:
    required = [NAME_COLUMN, LABEL_COLUMN] + ([VALENCE_COLUMN] if schema.has_valence else [])
    missing = [c for c in required if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack column(s) {preview(missing)} needed by {schema.name} "
                         f"(have {', '.join(map(str, predictions.columns))})")
    if schema.has_valence is None and VALENCE_COLUMN in predictions.columns:
        return required + [VALENCE_COLUMN]
    return required


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


def _label_strings(labels: pd.Series, names: np.ndarray, classes: Sequence[str]) -> np.ndarray:
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
    if schema.file_name is not None and target.name != schema.file_name:
        raise ValueError(f"{schema.name} submissions must be named {schema.file_name!r}; "
                         f"got {str(target)!r} (pass a directory to use the required name)")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _write_atomically(table: pd.DataFrame, target: Path,
                      check: Callable[[Path], list[Problem]]) -> None:
    """Write ``table`` beside ``target``, validate, then rename over it, so readers see the old
    file or the complete new one, never a partial one, and a failure leaves no temporary file."""
    def validate(temp: Path) -> None:
        problems = check(temp)
        if problems:
            raise SubmissionError(f"the written {target.name} is invalid: "
                                  + "; ".join(map(str, problems)), problems)

    with atomic_file(target, "w", encoding="utf-8", newline="", check=validate) as handle:
        table.to_csv(handle, index=False, lineterminator="\n")
