"""Samples with no feature in any modality: never trained on, never in the CV scores, counted in
the results, a documented fallback (training prior) in the submission, flagged by the validator."""
import csv
import json

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.core.errors import UserError
from mer.training.no_input import NoInput, drop_no_input, no_input_mask, no_input_names
from mer.pipeline import run
from mer.training.cv import Predictions
from mer.training.data import Split
from submissions.validate import main as validate_main
from submissions.validate import no_input_rows

PHRASES = {"calm": "a quiet calm peaceful evening", "excited": "so excited thrilled energetic now",
           "gloomy": "a gloomy grey dull miserable day"}


def _bundle(present_text, present_audio):
    n = len(present_text)
    text = ModalityFeatures(np.ones((n, 3), np.float32) * np.asarray(present_text)[:, None], np.asarray(present_text))
    audio = ModalityFeatures(np.ones((n, 2), np.float32), np.asarray(present_audio))
    return FeatureBundle([f"s{i}" for i in range(n)], {"text": text, "audio": audio})


def test_mask_needs_every_modality_missing():
    b = _bundle([True, False, False, True], [False, True, False, False])
    assert no_input_mask(b).tolist() == [False, False, True, False]
    split = Split(b, np.array([0, 1, 1, 0]), np.full(4, np.nan, np.float32))
    assert drop_no_input(split).names == ["s0", "s1", "s3"]
    nothing = Split(_bundle([False, False], [False, False]), np.array([0, 1]), np.full(2, np.nan, np.float32))
    with pytest.raises(UserError, match="none of the 2 training samples has a feature"):
        drop_no_input(nothing)


def test_fallback_is_the_training_prior():
    class Spec:
        classes = ("a", "b", "c")

    class Sample:
        def __init__(self, name, split):
            self.name, self.split = name, split

    class Manifest:
        label_spec = Spec()
        samples = [Sample(f"s{i}", "train" if i < 4 else "test") for i in range(6)]

    bundle = _bundle([True, True, True, False, True, False], [False] * 6)
    train = Split(bundle.take(["s0", "s1", "s2"]), np.array([2, 2, 0]), np.array([1.0, 2.0, 3.0], np.float32))
    ni = NoInput.of(Manifest(), bundle, train)
    assert ni.names == {"train": ["s3"], "test": ["s5"]} and ni.count == 2
    assert ni.discrete == 2 and ni.valence == pytest.approx(2.0)
    preds = Predictions(["s4", "s5"], np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]]), np.array([0.1, 0.2]))
    filled = ni.fill({"test": preds})["test"]
    assert filled.probs[0].tolist() == [0.5, 0.3, 0.2]              # a sample with input keeps its prediction
    assert filled.probs[1].tolist() == [0.0, 0.0, 1.0] and filled.valence[1] == pytest.approx(2.0)
    assert preds.probs[1].tolist() == [0.6, 0.3, 0.1]               # the input is not modified
    rec = ni.record("train")
    assert rec["by_split"] == {"test": 1, "train": 1} and rec["fallback"]["discrete"] == "c"
    assert rec["fallback_rows"] == {"test": 1}


@pytest.fixture(scope="module")
def no_input_run(tmp_path_factory):
    """A text-only generic dataset (TF-IDF) where some transcripts are empty: those samples have no
    feature at all. calm is the most frequent training class."""
    tmp = tmp_path_factory.mktemp("no_input")
    root = tmp / "corpus"
    root.mkdir()
    labels = ["calm"] * 14 + ["excited"] * 9 + ["gloomy"] * 9
    empty_train = {"utt005", "utt020", "utt030"}             # an excited, a gloomy ... no text at all
    rows = []
    for i, c in enumerate(labels):
        name = f"utt{i:03d}"
        rows.append((name, "train", "" if name in empty_train else PHRASES[c], c))
    tests = [(f"tst{i:02d}", list(PHRASES)[i % 3]) for i in range(9)]
    empty_test = {"tst01", "tst05"}                           # an excited and a gloomy sample
    rows += [(n, "test", "" if n in empty_test else PHRASES[c], "") for n, c in tests]
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "split", "text", "discrete"])
        w.writerows(rows)
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "data=generic", f"data.root={root}", f"paths.cache_dir={tmp / 'cache'}", f"paths.runs_dir={tmp / 'runs'}",
            "progress=false", "tracking=none", "features/text=tfidf", "features/audio=none",
            "features/visual=none", "train.epochs=15", "train.n_folds=2"])
    return run(cfg, out_dir=tmp / "out"), empty_train, empty_test


@pytest.mark.slow
def test_no_input_samples_never_reach_cv(no_input_run):
    res, empty_train, _ = no_input_run
    oof = pd.read_csv(res.out_dir / "predictions" / "train-oof.csv", dtype=str)
    assert len(oof) == 29 and not empty_train & set(oof["name"])
    folds = pd.read_csv(res.out_dir / "folds.csv", dtype=str)
    assert not empty_train & set(folds["name"])                 # never in a training or held-out fold
    assert res.metrics["cv_wf1"] > 0.9                          # the rest still give their class away


@pytest.mark.slow
def test_no_input_samples_are_counted_and_listed(no_input_run):
    res, empty_train, empty_test = no_input_run
    assert res.metrics["n_no_input"] == 5
    summary = json.loads((res.out_dir / "results.json").read_text())["no_input"]
    assert summary["count"] == 5 and summary["by_split"] == {"test": 2, "train": 3}
    assert summary["excluded_from_training"] == 3
    assert summary["fallback"]["discrete"] == "calm" and summary["fallback_rows"] == {"test": 2}
    assert set(no_input_names(res.out_dir / "no_input.csv")) == empty_train | empty_test
    assert set(no_input_names(res.out_dir / "no_input.csv", ["test"])) == empty_test
    assert any("5 samples" in note and "3 of train left out" in note for note in res.notes)


@pytest.mark.slow
def test_submission_fallback_and_validator_flag(no_input_run, capsys):
    res, _, empty_test = no_input_run
    sub = res.submissions["multi"]
    df = pd.read_csv(sub, dtype=str).set_index("name")
    assert (df.loc[sorted(empty_test), "discrete"] == "calm").all()          # the training prior
    assert (df.drop(index=sorted(empty_test))["discrete"] != "").all()
    preds = pd.read_csv(res.out_dir / "predictions" / "test.csv").set_index("name")
    assert (preds.loc[sorted(empty_test), "p_calm"] == 1.0).all()
    assert no_input_rows(sub, no_input_names(res.out_dir / "no_input.csv")) == sorted(empty_test)
    status = validate_main([str(sub), "--track", "generic", "--classes", "calm,excited,gloomy",
                            "--no-input-names", str(res.out_dir / "no_input.csv")])
    out = capsys.readouterr().out
    assert status == 0 and "OK:" in out
    assert "FLAGGED: 2 row(s) are fallback predictions" in out and "'tst01', 'tst05'" in out
