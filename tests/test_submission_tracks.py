"""Every challenge track is one row of the schema table: each kind of file (discrete, openset,
description, preference; CSV or npz) is validated, written and read back through the same code."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mer.ov.io as ov_io
import submissions.openset as openset
import submissions.writers as writers
from submissions.schema import FILE_KINDS, SUBMISSION_SCHEMAS, SubmissionSchema, get_schema
from submissions.validate import (
    KIND_PROBLEM_KINDS, Problem, main, problem_kinds, read_table, validate_submission,
)
from submissions.writers import SubmissionError, write_submission
from tests.conftest import REPO, shared_data

NAMES = ["sample_00000001", "sample_00000002", "sample_00000003"]
NEW_SCHEMAS = ["mer2024_ov", "mer2025_fg", "mer2026_fg", "mer2025_des", "mer2026_prefer",
               "mer2026_cross"]
GOOD_CELLS = {
    "discrete": ["happy", "neutral", "worried"],
    "openset": ["['happy', 'at ease']", "[]", "[\"surprised\"]"],
    "description": ['He smiles, and says "fine".', "  She frowns; her voice shakes.",
                    "Calm\tand quiet"],
    "preference": ["a1", "a2", "same"],
}
PREDICTIONS = {   # what a model hands the writer, per kind
    "discrete": ["happy", "neutral", "worried"],
    "openset": [["happy", "at ease"], [], ["looking forward to"]],
    "description": ['He smiles, and says "fine".', "She frowns, 'quietly'.", "Calm\tand quiet"],
    "preference": ["a1", "a2", "same"],
}


def write_rows(tmp_path: Path, track: str, rows: list[tuple[str, str]],
               columns: tuple[str, ...] | None = None, file_name: str | None = None) -> Path:
    """A file of ``rows`` (name, value) in ``track``'s container, written as a participant would:
    a CSV with the csv module (quoting as needed), an npz of string arrays."""
    schema = get_schema(track)
    columns = columns or schema.columns
    path = tmp_path / (file_name or schema.default_file_name())
    if schema.container == "npz":
        arrays = {columns[0]: np.array([r[0] for r in rows], dtype=np.str_),
                  columns[1]: np.array([r[1] for r in rows], dtype=np.str_)}
        np.savez_compressed(path, **arrays)
        return path
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def good_rows(track: str) -> list[tuple[str, str]]:
    return list(zip(NAMES, GOOD_CELLS[get_schema(track).kind]))


def kinds(problems: list[Problem]) -> set[str]:
    return {p.kind for p in problems}


def rows_2_and_3(track: str) -> str:
    """How messages place the 2nd and 3rd rows of ``track``'s file: CSV lines count the header."""
    return "entries 2, 3" if get_schema(track).container == "npz" else "lines 3, 4"


# ------------------------------------------------------------------------------ the table

def test_every_track_is_one_row_of_the_table():
    assert set(NEW_SCHEMAS) <= set(SUBMISSION_SCHEMAS.names())
    expected = {
        # name: (kind, columns, container, file name rule, official rows)
        "mer2024_ov": ("openset", ("name", "openset"), "csv", None, None),
        "mer2025_fg": ("openset", ("filenames", "fileitems"), "npz", "*-openset.npz", 20000),
        "mer2026_fg": ("openset", ("filenames", "fileitems"), "npz", "*-openset.npz", 20000),
        "mer2025_des": ("description", ("name", "reason"), "csv", None, 20000),
        "mer2026_prefer": ("preference", ("name", "preference"), "csv", None, 10000),
        "mer2026_cross": ("discrete", ("name", "discrete"), "csv", None, 20000),
    }
    for name, facts in expected.items():
        s = get_schema(name)
        assert (s.kind, s.columns, s.container, s.file_name, s.expected_rows) == facts, name
    assert get_schema("mer2026_prefer").classes == ("a1", "a2", "same")
    assert get_schema("mer2026_cross").classes == get_schema("mer2025_track1").classes
    for name in SUBMISSION_SCHEMAS.names():
        s = get_schema(name)
        assert s.kind in FILE_KINDS and s.source, name
        assert s.file_name_ok(s.default_file_name()), name
        # a format the organisers did not publish says so where users read it
        if s.source.startswith("not public"):
            assert "not public" in s.description, name


def test_schema_rows_refuse_inconsistent_fields():
    with pytest.raises(ValueError, match="no class set"):
        SubmissionSchema(name="x", description="x", kind="openset", columns=("name", "openset"))
    with pytest.raises(ValueError, match="exactly two columns"):
        SubmissionSchema(name="x", description="x", kind="description", classes=None,
                         columns=("name", "reason", "valence"))
    with pytest.raises(ValueError, match="openset_parsers"):
        SubmissionSchema(name="x", description="x", kind="openset", classes=None,
                         columns=("name", "openset"), openset_parsers=("mer2099",))
    with pytest.raises(ValueError, match="kind"):
        SubmissionSchema(name="x", description="x", kind="audio", columns=("name", "x"))


def test_problem_kinds_are_documented_per_kind():
    assert set(KIND_PROBLEM_KINDS) == set(FILE_KINDS)
    assert "parser_mismatch" in problem_kinds("openset")
    assert "bad_preference" in problem_kinds("preference") and "bad_label" not in problem_kinds(
        "preference")


# ------------------------------------------------------------------------------- validator

@pytest.mark.parametrize("track", NEW_SCHEMAS)
def test_good_file_passes(tmp_path, track):
    path = write_rows(tmp_path, track, good_rows(track))
    assert validate_submission(path, track, NAMES) == []
    assert validate_submission(path, track, NAMES[::-1]) == []   # names are matched, not ordered


@pytest.mark.parametrize("track", NEW_SCHEMAS)
def test_wrong_header_is_caught(tmp_path, track):
    schema = get_schema(track)
    columns = (schema.name_column, "label") if schema.container == "csv" else ("names", "fileitems")
    path = write_rows(tmp_path, track, good_rows(track), columns=columns)
    problems = validate_submission(path, track, NAMES)
    assert {"missing_columns", "extra_columns"} <= kinds(problems), [str(p) for p in problems]
    assert ",".join(schema.columns) in str(problems)
    if schema.container == "csv":        # a space after the comma is another column name
        spaced = tmp_path / "spaced.csv"
        spaced.write_text(f"{schema.columns[0]}, {schema.columns[1]}\n", encoding="utf-8")
        assert "missing_columns" in kinds(validate_submission(spaced, track))


@pytest.mark.parametrize("track", NEW_SCHEMAS)
def test_duplicate_missing_and_extra_names_are_named(tmp_path, track):
    rows = good_rows(track)
    path = write_rows(tmp_path, track, [rows[0], rows[1], (rows[1][0], rows[2][1])])
    problems = {p.kind: p.message for p in validate_submission(path, track, NAMES)}
    assert set(problems) == {"duplicate_names", "missing_names"}
    assert f"'sample_00000002' ({rows_2_and_3(track)})" in problems["duplicate_names"]
    assert "'sample_00000003'" in problems["missing_names"]

    extra = write_rows(tmp_path, track, rows + [("sample_00000099", rows[0][1])])
    problems = {p.kind: p.message for p in validate_submission(extra, track, NAMES)}
    assert set(problems) == {"unknown_names", "row_count"}
    assert "'sample_00000099'" in problems["unknown_names"]


BAD_CELLS = [
    # (track, bad value for sample_00000002, problem kind, words the message must hold)
    ("mer2026_cross", "joy", "bad_label", "'joy'"),
    ("mer2026_cross", "Happy", "bad_label", "case- and space-sensitive"),
    ("mer2024_ov", "happy, sad", "not_a_list", "Python-list"),
    ("mer2024_ov", "['happy', 'sad'", "not_a_list", "Python-list"),
    ("mer2024_ov", " ['happy']", "not_a_list", "outside the brackets"),
    ("mer2024_ov", "['sad, tired']", "bad_word", "contains ','"),
    ("mer2024_ov", "[\"don't believe\"]", "bad_word", "quote inside a word"),
    ("mer2024_ov", "[' sad']", "bad_word", "surrounding spaces"),
    ("mer2024_ov", "['']", "bad_word", "is empty"),
    ("mer2024_ov", "[happy, sad]", "parser_mismatch", "mer2024 reads ['happy, sad']"),
    ("mer2025_fg", "['sad, tired']", "bad_word", "contains ','"),
    ("mer2025_fg", "[\"it's fine\"]", "bad_word", "quote inside a word"),
    ("mer2026_fg", "[happy, sad]", "parser_mismatch", "wheel reads ['happy', 'sad']"),
    ("mer2026_fg", "joyful", "not_a_list", "Python-list"),
    ("mer2025_des", "   ", "empty_description", "is empty"),
    ("mer2025_des", "", "empty_description", "is empty"),
    ("mer2025_des", "first line\nsecond line", "bad_text", "line break"),
    ("mer2025_des", "a bell \x07 rings", "bad_text", "control character"),
    ("mer2026_prefer", "b", "bad_preference", "a1,a2,same"),
    ("mer2026_prefer", "A1", "bad_preference", "case- and space-sensitive"),
    ("mer2026_prefer", "", "bad_preference", "''"),
]


@pytest.mark.parametrize("track, value, kind, words", BAD_CELLS,
                         ids=[f"{b[0]}-{b[2]}-{i}" for i, b in enumerate(BAD_CELLS)])
def test_bad_value_is_caught_naming_the_sample(tmp_path, track, value, kind, words):
    rows = good_rows(track)
    rows[1] = (rows[1][0], value)
    [problem] = validate_submission(write_rows(tmp_path, track, rows), track, NAMES)
    assert problem.kind == kind
    assert "sample_00000002" in problem.message and "sample_00000001" not in problem.message
    assert words in problem.message, problem.message


def test_nan_valence_names_the_sample(tmp_path):
    path = tmp_path / "test1.csv"
    path.write_text("name,discrete,valence\nsample_00000001,happy,1\nsample_00000002,sad,nan\n"
                    "sample_00000003,sad,0\n")
    [problem] = validate_submission(path, "mer2023_multi", NAMES)
    assert problem.kind == "valence_nan"
    assert "line 3" in problem.message and "'sample_00000002'" in problem.message


def test_empty_word_lists_are_legal_unless_refused(tmp_path):
    path = write_rows(tmp_path, "mer2024_ov", good_rows("mer2024_ov") + [("sample_00000004", "")])
    names = NAMES + ["sample_00000004"]
    assert validate_submission(path, "mer2024_ov", names) == []
    [problem] = validate_submission(path, "mer2024_ov", names, allow_empty=False)
    assert problem.kind == "empty_openset"
    assert "'sample_00000002'" in problem.message and "'sample_00000004'" in problem.message


@pytest.mark.parametrize("track", ["mer2025_fg", "mer2026_fg"])
def test_npz_tracks_require_their_file_name(tmp_path, track):
    path = write_rows(tmp_path, track, good_rows(track), file_name="predictions.npz")
    [problem] = validate_submission(path, track, NAMES)
    assert problem.kind == "file_name" and "'*-openset.npz'" in problem.message
    assert "predictions.npz" in problem.message


def test_npz_is_read_without_unpickling(tmp_path):
    path = tmp_path / "run-openset.npz"
    np.savez_compressed(path, filenames=np.array(NAMES, dtype=object),
                        fileitems=np.array(["['happy']"] * 3, dtype=object))
    [problem] = validate_submission(path, "mer2025_fg", NAMES)
    assert problem.kind == "unreadable" and "np.savez_compressed" in problem.message
    not_npz = write_rows(tmp_path, "mer2024_ov", good_rows("mer2024_ov"), file_name="x-openset.npz")
    assert kinds(validate_submission(not_npz, "mer2025_fg")) == {"unreadable"}


def test_npz_arrays_of_different_lengths(tmp_path):
    path = tmp_path / "run-openset.npz"
    np.savez_compressed(path, filenames=np.array(NAMES), fileitems=np.array(["['happy']"] * 2))
    problems = {p.kind: p.message for p in validate_submission(path, "mer2025_fg", NAMES)}
    assert set(problems) == {"row_length", "missing_names", "row_count"}
    assert "filenames has 3" in problems["row_length"]
    assert "'sample_00000003'" in problems["missing_names"]


def test_descriptions_round_trip_csv_quoting(tmp_path):
    texts = ['He said "no", then left.', "commas, commas", "'single' and \"double\"",
             "  leading spaces are kept"]
    names = [f"s{i}" for i in range(len(texts))]
    path = write_rows(tmp_path, "mer2025_des", list(zip(names, texts)))
    assert validate_submission(path, "mer2025_des", names) == []
    assert pd.read_csv(path, keep_default_na=False)["reason"].tolist() == texts


def test_a_schema_row_can_accept_what_only_the_wheel_scorer_reads(tmp_path):
    # the organisers' MER2025 label extraction writes unquoted lists; a schema may accept them
    wheel_only = SubmissionSchema(
        name="fg_wheel_only", description="test", kind="openset", classes=None,
        columns=("name", "openset"), openset_parsers=("wheel",))
    path = write_rows(tmp_path, "mer2024_ov", [("a", "[happy, sad]"), ("b", "[]")])
    assert validate_submission(path, wheel_only, ["a", "b"]) == []
    assert kinds(validate_submission(path, "mer2024_ov", ["a", "b"])) == {"parser_mismatch"}


def test_cell_rules_agree_with_both_official_parsers():
    # whatever passes reads the same under both parsers, and as the words written
    for words in (["happy"], ["at ease", "looking forward to"], [], ["Angry", "self-doubt"]):
        cell = openset.format_openset(words)
        assert openset.cell_problem(cell, ("mer2024", "wheel")) is None
        assert openset.parse_openset(cell) == openset.parse_openset_wheel(cell) == words


def test_organisers_example_prediction_is_read_as_the_scorer_reads_it():
    path = shared_data("mer2024-ov", "predict-openset.csv")
    problems = validate_submission(path, "mer2024_ov")
    assert [p.kind for p in problems] == ["bad_word"]
    assert "sample_00001774" in problems[0].message           # "don't believe", split by both
    words = ov_io.read_openset_csv(path)
    assert len(words) == 332 and words["sample_00001774"][:2] == ["don", "t believe"]


# --------------------------------------------------------------------------------- writer

@pytest.mark.parametrize("track", NEW_SCHEMAS)
def test_writer_round_trip(tmp_path, track):
    schema = get_schema(track)
    values = PREDICTIONS[schema.kind]
    predictions = dict(zip(NAMES[::-1], values[::-1]))          # any order: joined by name
    path = write_submission(track, predictions, tmp_path, NAMES)
    assert path == tmp_path / schema.default_file_name()
    assert sorted(os.listdir(tmp_path)) == [path.name]           # no temporary file left
    assert validate_submission(path, track, NAMES) == []
    table = read_table(path, schema)
    assert table.header == list(schema.columns)
    assert [fields[0] for _, fields in table.records] == NAMES
    cells = [fields[1] for _, fields in table.records]
    if schema.kind == "openset":
        for parse in openset.OPENSET_PARSERS.values():
            assert [parse(c) for c in cells] == values
    else:
        assert cells == values


def test_writer_takes_a_frame_with_the_kind_or_the_file_column(tmp_path):
    frame = pd.DataFrame({"name": NAMES, "description": PREDICTIONS["description"]})
    path = write_submission("mer2025_des", frame, tmp_path / "des.csv", NAMES)
    frame = pd.DataFrame({"name": NAMES, "reason": PREDICTIONS["description"]})
    again = write_submission("mer2025_des", frame, tmp_path / "des2.csv", NAMES)
    assert path.read_text() == again.read_text()
    frame = pd.DataFrame({"name": NAMES, "openset": PREDICTIONS["openset"]})
    path = write_submission("mer2025_fg", frame, tmp_path, NAMES)
    assert validate_submission(path, "mer2025_fg", NAMES) == []


BAD_PREDICTIONS = [
    # (track, predictions for NAMES, message pattern)
    ("mer2024_ov", [["sad, tired"], [], ["happy"]], r"sample_00000001: word 'sad, tired' contains ','"),
    ("mer2025_fg", [["happy"], ["don't believe"], []], r"sample_00000002: word .don.*t believe. contains"),
    ("mer2026_fg", [["happy"], [], [" sad"]], r"sample_00000003: word ' sad' has surrounding"),
    ("mer2024_ov", [["happy"], "happy", []], r"sample_00000002: the openset must be a list"),
    ("mer2025_des", ["fine", "", "fine"], r"sample_00000002: the description is empty"),
    ("mer2025_des", ["fine", "one\ntwo", "fine"], r"sample_00000002: the description has a line break"),
    ("mer2025_des", ["fine", 3, "fine"], r"sample_00000002: 3 is not a string"),
    ("mer2026_prefer", ["a1", "b", "a2"], r"'b' x1.*sample_00000002"),
    ("mer2026_cross", ["happy", "joy", "sad"], r"'joy' x1.*sample_00000002"),
]


@pytest.mark.parametrize("track, values, match", BAD_PREDICTIONS,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_PREDICTIONS)])
def test_writer_refuses_bad_predictions_and_leaves_nothing(tmp_path, track, values, match):
    target = tmp_path / get_schema(track).default_file_name()
    with pytest.raises(ValueError, match=match):
        write_submission(track, dict(zip(NAMES, values)), target, NAMES)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("track", NEW_SCHEMAS)
def test_writer_refuses_missing_extra_and_repeated_names(tmp_path, track):
    value = PREDICTIONS[get_schema(track).kind][0]
    with pytest.raises(ValueError, match="no prediction: 'sample_00000003'"):
        write_submission(track, dict.fromkeys(NAMES[:2], value), tmp_path, NAMES)
    with pytest.raises(ValueError, match="not in the expected names: 'sample_00000099'"):
        write_submission(track, dict.fromkeys(NAMES + ["sample_00000099"], value), tmp_path, NAMES)
    repeated = pd.DataFrame({"name": NAMES + NAMES[:1], get_schema(track).kind: [value] * 4})
    with pytest.raises(ValueError, match="more than one prediction: 'sample_00000001'"):
        write_submission(track, repeated, tmp_path, NAMES)
    assert os.listdir(tmp_path) == []


def test_writer_refuses_a_file_name_the_platform_refuses(tmp_path):
    with pytest.raises(ValueError, match=r"\*-openset\.npz"):
        write_submission("mer2025_fg", dict(zip(NAMES, PREDICTIONS["openset"])),
                         tmp_path / "predictions.npz", NAMES)
    assert os.listdir(tmp_path) == []


def test_invalid_written_npz_is_not_moved_into_place(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "check_file",
                        lambda *args, **kwargs: [Problem("bad_word", "injected")])
    with pytest.raises(SubmissionError, match="injected"):
        write_submission("mer2025_fg", dict(zip(NAMES, PREDICTIONS["openset"])), tmp_path, NAMES)
    assert os.listdir(tmp_path) == []


def test_the_ov_io_names_go_through_the_shared_table(tmp_path):
    assert ov_io.parse_openset is openset.parse_openset
    assert ov_io.parse_openset_wheel is openset.parse_openset_wheel
    predictions = {"b": ["happy", "at ease"], "a": []}
    path = ov_io.write_openset_csv(predictions, tmp_path / "ov.csv", ["a", "b"])
    assert validate_submission(path, "mer2024_ov", ["a", "b"]) == []
    assert ov_io.read_openset_csv(path) == {"a": [], "b": ["happy", "at ease"]}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,openset\na,\"[happy, sad]\"\n")
    assert [p.kind for p in ov_io.validate_openset_file(bad)] == ["parser_mismatch"]
    assert set(ov_io.OV_PROBLEM_KINDS) - {"header"} <= set(problem_kinds("openset"))


# ------------------------------------------------------------------------------------ CLI

def test_cli_track_choices_are_every_schema(capsys):
    with pytest.raises(SystemExit) as info:
        main(["x.csv", "--track", "mer2099_nothing"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    for name in SUBMISSION_SCHEMAS.names():
        assert repr(name) in error, name


def test_cli_validates_every_kind(tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES) + "\n")
    for track in NEW_SCHEMAS:
        path = write_rows(tmp_path, track, good_rows(track))
        assert main([str(path), "--track", track, "--names", str(names)]) == 0, track
        assert capsys.readouterr().out.startswith(f"OK: 3 rows in {path}")
    rows = good_rows("mer2025_fg")
    rows[2] = (rows[2][0], "[sad, tired]")
    path = write_rows(tmp_path, "mer2025_fg", rows)
    assert main([str(path), "--track", "mer2025_fg", "--names", str(names)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("INVALID") and "parser_mismatch" in out and "sample_00000003" in out
    ov = write_rows(tmp_path, "mer2024_ov", good_rows("mer2024_ov"))
    assert main([str(ov), "--track", "mer2024_ov", "--no-empty"]) == 1
    assert "empty_openset" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main([str(ov), "--track", "mer2026_cross", "--no-empty"])
    assert info.value.code == 2


def test_cli_help_lists_every_schema_with_its_kind():
    result = subprocess.run([sys.executable, "-m", "submissions.validate", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for name in SUBMISSION_SCHEMAS.names():
        [line] = [line for line in lines if line.split()[:1] == [name]]
        assert get_schema(name).kind in line.split()[1], line
