"""The same run on other release layouts: MER2025 Track1 (submission.csv, no valence) and a generic
manifest with a transcript-only dataset of its own classes."""
import csv

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from mer.core.samples import MER_CLASSES
from mer.pipeline import run
from submissions.validate import validate_submission

pytestmark = pytest.mark.slow

WORDS = {"neutral": "the meeting is at noon today", "angry": "I am furious and angry at you",
         "happy": "what a happy wonderful joyful day", "sad": "I feel so sad and lonely tonight",
         "worried": "I am worried and nervous about it", "surprise": "wow what a surprise really"}


def _write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _cfg(tmp_path, overrides):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.cache_dir={tmp_path / 'cache'}",
                                            f"paths.runs_dir={tmp_path / 'runs'}", "progress=false",
                                            "tracking=none", "features/text=tfidf", "train.epochs=3",
                                            "train.n_folds=2", *overrides])


def test_mer2025_track1_writes_submission_csv(tmp_path):
    root = tmp_path / "mer2025"
    root.mkdir()
    rng = np.random.default_rng(0)
    train = [(f"sample_{i:05d}", MER_CLASSES[i % 6]) for i in range(36)]
    cands = [f"samplenew3_{i:05d}" for i in range(10)]
    _write(root / "track1_train_disdim.csv", ["name", "discrete", "valence"],
           [(n, c, "0") for n, c in train])
    _write(root / "track_all_candidates.csv", ["name"], [(n,) for n in cands])
    subs = [(n, "中文", WORDS[c]) for n, c in train] + [(n, "中文", WORDS[MER_CLASSES[rng.integers(6)]])
                                                        for n in cands]
    _write(root / "subtitle_chieng.csv", ["name", "chinese", "english"], subs)
    res = run(_cfg(tmp_path, ["data=mer2025", f"data.root={root}"]), out_dir=tmp_path / "out")
    path = res.submissions["track1"]
    assert path.name == "submission.csv"
    assert validate_submission(path, "mer2025_track1", names=cands) == []
    df = pd.read_csv(path, dtype=str)
    assert list(df.columns) == ["name", "discrete"] and df["name"].tolist() == cands
    assert "cv_wf1" in res.metrics and "cv_mse" not in res.metrics


def test_generic_manifest_with_own_classes_text_only(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    classes = ["calm", "excited", "gloomy"]
    phrases = {"calm": "a quiet calm peaceful evening", "excited": "so excited thrilled energetic now",
               "gloomy": "a gloomy grey dull miserable day"}
    rows = [(f"utt{i:03d}", "train" if i < 30 else "test", phrases[classes[i % 3]],
             classes[i % 3] if i < 30 else "") for i in range(40)]
    _write(root / "manifest.csv", ["name", "split", "text", "discrete"], rows)
    res = run(_cfg(tmp_path, ["data=generic", f"data.root={root}"]), out_dir=tmp_path / "out")
    assert res.metrics["cv_wf1"] > 0.9                  # the phrases give the class away
    df = pd.read_csv(res.submissions["multi"], dtype=str)
    assert df["name"].tolist() == [f"utt{i:03d}" for i in range(30, 40)]
    assert df["discrete"].tolist() == [classes[i % 3] for i in range(30, 40)]


def test_mer2026_cross_reads_track1_files_and_a_pairs_file(tmp_path):
    root = tmp_path / "mer2026"
    root.mkdir()
    train = [(f"sample_{i:05d}", MER_CLASSES[i % 6]) for i in range(36)]
    cands = [f"samplenew_{i:05d}" for i in range(8)]
    _write(root / "track1_train.csv", ["name", "discrete"], train)
    _write(root / "track1_track2_candidate.csv", ["name"], [(n,) for n in cands])
    _write(root / "subtitle_chieng.csv", ["name", "chinese", "english"],
           [(n, "中文", WORDS[c]) for n, c in train] + [(n, "中文", WORDS["happy"]) for n in cands])
    pairs = tmp_path / "pairs.csv"                  # train clips paired among themselves, candidates too
    _write(pairs, ["name", "partner"], [(train[i][0], train[i ^ 1][0]) for i in range(36)]
           + [(cands[i], cands[i ^ 1]) for i in range(8)])
    res = run(_cfg(tmp_path, ["data=mer2026", f"data.root={root}", "track=cross", f"track.pairs={pairs}",
                              "data.language=english", "ablate_modalities=false"]), out_dir=tmp_path / "out")
    path = res.submissions["cross"]
    assert validate_submission(path, "mer2026_cross", names=cands) == []
    assert pd.read_csv(path, dtype=str)["name"].tolist() == cands
    folds = pd.read_csv(res.out_dir / "folds.csv")
    assert folds.groupby(["seed", "group"]).fold.nunique().max() == 1
    assert "cv_wf1" in res.metrics and res.metrics["cross_n_paired_train"] == 36
