"""name,openset files: parser, writer/validator round trip, errors, and the CLI."""
import subprocess
import sys

import pytest

from mer.ov.io import parse_openset, read_openset_csv, validate_openset_file, write_openset_csv
from tests.conftest import REPO, shared_data


def test_parser_matches_the_mer2024_rules():
    assert parse_openset("['happy', 'looking forward to']") == ["happy", "looking forward to"]
    assert parse_openset("[]") == [] and parse_openset("") == []
    assert parse_openset("['don't believe']") == ["don", "t believe"]    # the official split
    with pytest.raises(ValueError, match="Python-list"):
        parse_openset("happy, sad")


def test_round_trip_keeps_order_and_words(tmp_path):
    preds = {"b": ["happy", "at ease"], "a": []}
    path = write_openset_csv(preds, tmp_path / "ov.csv", expected_names=["a", "b"])
    assert path.read_text().splitlines() == ["name,openset", "a,[]", "b,\"['happy', 'at ease']\""]
    assert read_openset_csv(path) == {"a": [], "b": ["happy", "at ease"]}
    assert validate_openset_file(path, ["a", "b"]) == []
    kinds = {p.kind for p in validate_openset_file(path, ["a", "b"], allow_empty=False)}
    assert kinds == {"empty_openset"}


def test_writer_refuses_bad_words_and_names(tmp_path):
    with pytest.raises(ValueError, match="sample_1.*'sad, tired'"):
        write_openset_csv({"sample_1": ["sad, tired"]}, tmp_path / "x.csv")
    with pytest.raises(ValueError, match="no prediction.*'c'"):
        write_openset_csv({"a": ["sad"]}, tmp_path / "x.csv", expected_names=["a", "c"])
    assert not (tmp_path / "x.csv").exists()


def test_validator_lists_every_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,openset\na,['sad']\na,['x']\nb,happy\n,['x']\nc,\"[' sad']\"\n")
    kinds = [p.kind for p in validate_openset_file(bad, ["a", "b", "c", "d"])]
    assert kinds.count("duplicate_names") == 1
    for kind in ("not_a_list", "empty_name", "bad_word", "missing_names"):
        assert kind in kinds
    header = tmp_path / "h.csv"
    header.write_text("name,discrete\na,happy\n")
    assert [p.kind for p in validate_openset_file(header)] == ["header"]


def test_organisers_files_are_valid():
    root = shared_data("mer2024-ov")
    assert validate_openset_file(root / "check-openset.csv") == []
    assert len(read_openset_csv(root / "predict-openset.csv")) == 332


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mer.ov", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_scores_and_validates(tmp_path):
    gold = tmp_path / "gold.csv"
    pred = tmp_path / "pred.csv"
    write_openset_csv({"a": ["happy"], "b": ["sad", "worried"]}, gold)
    write_openset_csv({"a": ["joyful"], "b": ["angry"]}, pred)
    out = _cli("score", "--pred", pred, "--gold", gold, "--grouper", "offline", "--no-wheel")
    assert out.returncode == 0, out.stderr
    assert "grouper offline" in out.stdout and "score 0.5000" in out.stdout
    out = _cli("validate", pred, "--names", gold)
    assert out.returncode == 0 and out.stdout.startswith("OK")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,openset\na,happy\n")
    out = _cli("validate", bad)
    assert out.returncode == 1 and "not_a_list" in out.stdout
