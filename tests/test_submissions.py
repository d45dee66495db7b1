"""Submission schemas, the validator (every problem kind, the CLI) and the by-name atomic writer."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer.core.samples import MER_CLASSES
from mer.evaluation.metrics import TRACK_METRICS
from submissions.schema import SUBMISSION_SCHEMAS, SubmissionSchema, get_schema
from submissions.validate import PROBLEM_KINDS, read_names, validate_submission
from submissions.writers import SubmissionError, write_submission

REPO = Path(__file__).resolve().parents[1]
NAMES = ["sample_00000001", "sample_00000002", "sample_00000003"]
VALID_MULTI = ("name,discrete,valence\n"
               "sample_00000001,neutral,0.5\n"
               "sample_00000002,angry,-1\n"
               "sample_00000003,happy,2.25\n")
VALID_SEMI24 = "name,discrete\nsample_00000001,neutral\nsample_00000002,sad\nsample_00000003,worried\n"


def write(tmp_path: Path, text: str | bytes, file_name: str = "sub.csv") -> Path:
    path = tmp_path / file_name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def kinds(problems) -> set[str]:
    return {p.kind for p in problems}


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


# ------------------------------------------------------------------------------------- schemas

def test_registered_tracks_and_their_metrics_agree():
    assert set(SUBMISSION_SCHEMAS.names()) == set(TRACK_METRICS) == {
        "mer2023_multi", "mer2023_noise", "mer2023_semi", "mer2024_semi", "mer2024_noise",
        "mer2025_track1", "mer2026_cross", "mer2024_ov", "mer2025_fg", "mer2026_fg", "mer2025_des",
        "mer2026_prefer", "generic"}
    for name in SUBMISSION_SCHEMAS.names():
        schema = get_schema(name)
        if TRACK_METRICS[name] == "combined":
            assert schema.has_valence is True


def test_schema_facts():
    assert get_schema("mer2023_multi").columns == ("name", "discrete", "valence")
    assert get_schema("mer2024_noise").columns == ("name", "discrete")
    track1 = get_schema("mer2025_track1")
    assert (track1.file_name, track1.expected_rows, track1.classes) == (
        "submission.csv", 20000, MER_CLASSES)
    assert get_schema("generic").headers() == [("name", "discrete", "valence"), ("name", "discrete")]
    with pytest.raises(KeyError, match="mer2023_multi"):
        get_schema("mer2023_mutli")
    with pytest.raises(ValueError, match="classes"):
        get_schema("generic").resolve_classes(None)
    with pytest.raises(ValueError, match="accepts exactly"):
        get_schema("mer2024_semi").resolve_classes(["joy", "anger"])


# ----------------------------------------------------------------------------------- validator

def test_valid_files_pass(tmp_path):
    assert validate_submission(write(tmp_path, VALID_MULTI), "mer2023_multi", NAMES) == []
    assert validate_submission(write(tmp_path, VALID_MULTI), "mer2023_noise") == []
    assert validate_submission(write(tmp_path, VALID_SEMI24), "mer2024_semi", NAMES) == []
    track1 = write(tmp_path, VALID_SEMI24, "submission.csv")
    assert validate_submission(track1, "mer2025_track1", NAMES) == []
    # generic: runtime classes, valence optional; a trailing blank line is fine (pandas skips it)
    generic = write(tmp_path, "name,discrete\nclip_a,joy\nclip_b,anger\n\n")
    assert validate_submission(generic, "generic", ["clip_b", "clip_a"], ["joy", "anger"]) == []


HEADER = "name,discrete,valence\n"
FAILURES = [
    # (id, track, file name, contents, expected names, expected problem kinds)
    ("missing file", "mer2023_multi", None, None, NAMES, {"unreadable"}),
    ("binary file", "mer2023_multi", "sub.csv", b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01", NAMES,
     {"unreadable"}),
    ("bad quoting", "mer2023_multi", "sub.csv", HEADER + 'sample_00000001,"happy"x,1\n', NAMES,
     {"unreadable"}),
    ("empty", "mer2023_multi", "sub.csv", "", NAMES, {"empty_file"}),
    ("far too many rows", "mer2023_multi", "sub.csv",
     HEADER + "".join(f"sample_{i:08d},sad,0\n" for i in range(1100)), NAMES, {"too_large"}),
    ("track1 name", "mer2025_track1", "preds.csv", VALID_SEMI24, NAMES, {"file_name"}),
    ("no valence column", "mer2023_multi", "sub.csv", VALID_SEMI24, NAMES, {"missing_columns"}),
    ("valence not accepted", "mer2024_semi", "sub.csv", VALID_MULTI, NAMES, {"extra_columns"}),
    ("repeated column", "mer2024_semi", "sub.csv",
     "name,discrete,discrete\nsample_00000001,sad,sad\n", None, {"extra_columns"}),
    ("misordered", "mer2023_multi", "sub.csv",
     "name,valence,discrete\nsample_00000001,0,sad\nsample_00000002,1,sad\n"
     "sample_00000003,2,sad\n", NAMES, {"column_order"}),
    ("ragged rows", "mer2023_multi", "sub.csv",
     VALID_MULTI.replace("angry,-1", "angry,-1,x").replace("happy,2.25", "happy"), NAMES,
     {"row_length"}),
    ("header only", "mer2023_multi", "sub.csv", HEADER, None, {"no_rows"}),
    ("empty name", "mer2023_multi", "sub.csv", VALID_MULTI.replace("sample_00000003", " "), None,
     {"empty_name"}),
    ("duplicate", "mer2023_multi", "sub.csv", VALID_MULTI.replace("sample_00000003", "sample_00000001"),
     None, {"duplicate_names"}),
    ("missing row", "mer2023_multi", "sub.csv", VALID_MULTI.replace("sample_00000003,happy,2.25\n", ""),
     NAMES, {"missing_names", "row_count"}),
    ("unknown row", "mer2023_multi", "sub.csv", VALID_MULTI + "sample_00000099,sad,0\n", NAMES,
     {"unknown_names", "row_count"}),
    ("bad labels", "mer2023_multi", "sub.csv",
     VALID_MULTI.replace("neutral", "Happy").replace("angry", "joy"), NAMES, {"bad_label"}),
    ("nan valence", "mer2023_multi", "sub.csv",
     VALID_MULTI.replace("0.5", "").replace("-1", "nan"), NAMES, {"valence_nan"}),
    ("text valence", "mer2023_multi", "sub.csv", VALID_MULTI.replace("0.5", "high"), NAMES,
     {"valence_not_numeric"}),
    ("valence range", "mer2023_multi", "sub.csv",
     VALID_MULTI.replace("0.5", "7.5").replace("-1", "-inf"), NAMES, {"valence_out_of_range"}),
]


@pytest.mark.parametrize("track, file_name, contents, names, expected",
                         [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_each_failure_kind(tmp_path, track, file_name, contents, names, expected):
    path = tmp_path / "absent.csv" if contents is None else write(tmp_path, contents, file_name)
    problems = validate_submission(path, track, names)
    assert kinds(problems) == expected, [str(p) for p in problems]


def test_every_kind_is_exercised():
    exercised = set().union(*(f[-1] for f in FAILURES))
    assert exercised == set(PROBLEM_KINDS)


def test_all_problems_are_listed_at_once(tmp_path):
    text = ("name,discrete,valence\n"
            "sample_00000001,joy,9\n"
            "sample_00000001,happy,x\n"
            "sample_00000042,sad,\n")
    problems = validate_submission(write(tmp_path, text, "wrong.csv"), "mer2023_multi", NAMES)
    assert kinds(problems) == {"duplicate_names", "missing_names", "unknown_names", "bad_label",
                               "valence_out_of_range", "valence_not_numeric", "valence_nan"}


def test_messages_name_rows_and_counts(tmp_path):
    labels = ["Happy"] * 7 + ["joy"]
    text = "name,discrete\n" + "".join(f"s{i},{label}\n" for i, label in enumerate(labels))
    [problem] = validate_submission(write(tmp_path, text), "mer2024_semi")
    assert problem.kind == "bad_label"
    assert "8 row(s)" in problem.message
    assert "'Happy' (7 row(s), lines 2, 3, 4, 5, 6, ... (7 in total))" in problem.message
    assert "'joy' (1 row(s), line 9)" in problem.message
    assert "case- and space-sensitive" in problem.message

    many = [f"extra_{i:03d}" for i in range(20)]
    [missing, count] = validate_submission(write(tmp_path, VALID_SEMI24), "mer2024_semi",
                                           NAMES + many)
    assert missing.kind == "missing_names"
    assert "20 of 23 expected names" in missing.message and "(20 in total)" in missing.message
    assert "'extra_000', 'extra_001'" in missing.message
    assert count.kind == "row_count" and "3 rows, but 23" in count.message


def test_superset_schema_accepts_extra_names_but_not_missing_ones(tmp_path):
    schema = SubmissionSchema(name="semi_superset", description="test", columns=("name", "discrete"),
                              name_set="superset")
    path = write(tmp_path, VALID_SEMI24)
    assert validate_submission(path, schema, NAMES[:2]) == []
    assert kinds(validate_submission(path, schema, NAMES + ["sample_00000004"])) == {
        "missing_names", "row_count"}


def test_reference_names_must_be_unambiguous(tmp_path):
    with pytest.raises(ValueError, match="repeat"):
        validate_submission(write(tmp_path, VALID_SEMI24), "mer2024_semi", NAMES + NAMES[:1])


def test_read_names_detects_the_format(tmp_path):
    label_csv = write(tmp_path, "name,discrete,valence\na,happy,1\nb,sad,0\n", "labels.csv")
    assert read_names(label_csv) == ["a", "b"]
    plain = write(tmp_path, "a\nb\n\nc\n", "names.txt")
    assert read_names(plain) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="no 'name' column"):
        read_names(write(tmp_path, "id,discrete\na,happy\n", "other.csv"))


# ------------------------------------------------------------------------------------------ CLI

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "submissions.validate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_valid_file_exits_0(tmp_path):
    names = write(tmp_path, "\n".join(NAMES) + "\n", "names.txt")
    result = run_cli(str(write(tmp_path, VALID_MULTI)), "--track", "mer2023_multi",
                     "--names", str(names))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK: 3 rows")


def test_cli_invalid_file_exits_1_and_prints_every_problem(tmp_path):
    names = write(tmp_path, "name\n" + "\n".join(NAMES) + "\n", "names.csv")
    bad = VALID_MULTI.replace("neutral", "joy").replace("2.25", "12")
    result = run_cli(str(write(tmp_path, bad)), "--track", "mer2023_multi", "--names", str(names))
    assert result.returncode == 1
    assert result.stdout.startswith("INVALID")
    assert "bad_label:" in result.stdout and "valence_out_of_range:" in result.stdout


def test_cli_generic_classes_and_usage_errors(tmp_path):
    path = write(tmp_path, "name,discrete\nclip_a,joy\n")
    assert run_cli(str(path), "--track", "generic", "--classes", "joy,anger").returncode == 0
    assert run_cli(str(path), "--track", "generic").returncode == 2          # no classes
    assert run_cli(str(path), "--track", "mer2099").returncode == 2          # unknown track


def test_cli_help_lists_tracks():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in SUBMISSION_SCHEMAS.names():
        assert name in result.stdout


# --------------------------------------------------------------------------------------- writer

def predictions_frame(names, labels, valences=None) -> pd.DataFrame:
    frame = pd.DataFrame({"name": names, "discrete": labels})
    if valences is not None:
        frame["valence"] = valences
    return frame


def test_writer_joins_by_name_not_position(tmp_path):
    rng = np.random.default_rng(0)
    expected = [f"sample_{i:08d}" for i in range(50)]
    truth = {n: (MER_CLASSES[i % 6], (i % 11) - 5.0) for i, n in enumerate(expected)}
    shuffled = list(rng.permutation(expected))
    preds = predictions_frame(shuffled, [truth[n][0] for n in shuffled],
                              [truth[n][1] for n in shuffled])
    path = write_submission("mer2023_multi", preds, tmp_path / "test1.csv", expected)
    rows = read_rows(path)
    assert rows[0] == ["name", "discrete", "valence"]
    assert [r[0] for r in rows[1:]] == expected
    for name, label, valence in rows[1:]:
        assert (label, float(valence)) == truth[name]
    assert sorted(os.listdir(tmp_path)) == ["test1.csv"]  # no temporary files left


def test_writer_maps_indices_and_uses_the_required_file_name(tmp_path):
    preds = predictions_frame(NAMES[::-1], [2, 0, 5])
    path = write_submission("mer2025_track1", preds, tmp_path, NAMES)
    assert path == tmp_path / "submission.csv"
    assert read_rows(path)[1:] == [[NAMES[0], "surprise"], [NAMES[1], "neutral"],
                                   [NAMES[2], "happy"]]
    with pytest.raises(ValueError, match="submission.csv"):
        write_submission("mer2025_track1", preds, tmp_path / "track1.csv", NAMES)


def test_writer_reports_missing_and_unknown_names(tmp_path):
    preds = predictions_frame(NAMES[:2] + ["sample_00000777"], ["sad"] * 3)
    with pytest.raises(ValueError) as info:
        write_submission("mer2024_semi", preds, tmp_path / "out.csv", NAMES)
    message = str(info.value)
    assert "1 of 3 expected names have no prediction: 'sample_00000003'" in message
    assert "1 predicted names are not in the expected names: 'sample_00000777'" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("preds, match", [
    (predictions_frame(NAMES, ["sad", "sad", "sad"]), "valence"),                 # column missing
    (predictions_frame(NAMES, ["sad", "joy", "sad"], [0, 0, 0]), "'joy' x1"),      # bad label
    (predictions_frame(NAMES, [0, 6, 1], [0, 0, 0]), "outside 0..5"),             # bad index
    (predictions_frame(NAMES, ["sad"] * 3, [0, np.nan, 0]), "NaN"),               # NaN valence
    (predictions_frame(NAMES, ["sad"] * 3, [0, "high", 0]), "not numbers"),       # text valence
    (predictions_frame(NAMES[:2] * 2, ["sad"] * 4, [0] * 4), "more than one"),    # duplicates
])
def test_writer_rejects_bad_predictions(tmp_path, preds, match):
    with pytest.raises(ValueError, match=match):
        write_submission("mer2023_multi", preds, tmp_path / "out.csv", None)
    assert os.listdir(tmp_path) == []


def test_writer_clips_valence_with_a_warning(tmp_path):
    preds = predictions_frame(NAMES, ["sad"] * 3, [5.5, -7.0, 1.0])
    with pytest.warns(UserWarning, match="clipped 2 of 3"):
        path = write_submission("mer2023_noise", preds, tmp_path / "test2.csv", NAMES)
    assert [float(r[2]) for r in read_rows(path)[1:]] == [5.0, -5.0, 1.0]


def test_writer_generic_keeps_valence_only_when_given(tmp_path):
    classes = ["joy", "anger"]
    with_valence = write_submission("generic", predictions_frame(["b", "a"], ["joy", "anger"],
                                                                 [0.1, 0.2]),
                                    tmp_path / "v.csv", ["a", "b"], classes)
    assert read_rows(with_valence) == [["name", "discrete", "valence"], ["a", "anger", "0.2"],
                                       ["b", "joy", "0.1"]]
    without = write_submission("generic", predictions_frame(["a"], ["joy"]), tmp_path / "d.csv",
                               None, classes)
    assert read_rows(without) == [["name", "discrete"], ["a", "joy"]]


def test_failure_mid_write_leaves_old_target_and_no_temp_file(tmp_path, monkeypatch):
    target = write(tmp_path, "old contents\n", "out.csv")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_submission("mer2024_semi", predictions_frame(NAMES, ["sad"] * 3), target, NAMES)
    assert target.read_text() == "old contents\n"
    assert os.listdir(tmp_path) == ["out.csv"]

    fresh = tmp_path / "fresh.csv"
    with pytest.raises(OSError):
        write_submission("mer2024_semi", predictions_frame(NAMES, ["sad"] * 3), fresh, NAMES)
    assert not fresh.exists()
    assert os.listdir(tmp_path) == ["out.csv"]


def test_invalid_written_file_is_not_moved_into_place(tmp_path, monkeypatch):
    import submissions.writers as writers
    from submissions.validate import Problem

    monkeypatch.setattr(writers, "check_file",
                        lambda *args, **kwargs: [Problem("bad_label", "injected")])
    with pytest.raises(SubmissionError, match="injected") as info:
        write_submission("mer2024_semi", predictions_frame(NAMES, ["sad"] * 3),
                         tmp_path / "out.csv", NAMES)
    assert [p.kind for p in info.value.problems] == ["bad_label"]
    assert os.listdir(tmp_path) == []
