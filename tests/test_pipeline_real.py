"""The real MER2023 and MELD labels + transcripts through the whole pipeline (lexical modality)."""
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO, shared_data
from mer.pipeline import run
from submissions.validate import read_names, validate_submission

pytestmark = pytest.mark.slow


def _cfg(tmp_path, overrides):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.cache_dir={tmp_path / 'cache'}",
                                            f"paths.runs_dir={tmp_path / 'runs'}",
                                            "progress=false", *overrides])


def test_mer2023_lexical_cv_and_three_valid_submissions(tmp_path):
    root = shared_data("mer2023")
    cfg = _cfg(tmp_path, ["data=mer2023", f"data.root={root}", "features/text=tfidf",
                          "train.epochs=15", "train.n_folds=5", "train.seeds=[0]", "tracking=none"])
    res = run(cfg, out_dir=tmp_path / "out")
    assert 0.25 < res.metrics["cv_wf1"] < 0.9          # far above chance (0.26 weighted F1 of "neutral" is ~0.1)
    assert "cv_combined" in res.metrics and "cv_mse" in res.metrics
    expected = {"multi": ("mer2023_multi", "test1"), "noise": ("mer2023_noise", "test2"),
                "semi": ("mer2023_semi", "test3")}
    for track, (schema, split) in expected.items():
        path = res.submissions[track]
        names = read_names(root / f"{split}-names.csv")
        assert validate_submission(path, schema, names=names) == []
        df = pd.read_csv(path, dtype={"name": str})
        assert list(df.columns) == ["name", "discrete", "valence"] and len(df) == len(names)
    fails = pd.read_json(res.out_dir / "failures.jsonl", lines=True)
    assert (fails["reason"] == "empty_transcript").sum() == 217


def test_meld_seven_classes_scores_val_and_writes_test(tmp_path):
    root = shared_data("meld")
    cfg = _cfg(tmp_path, ["data=meld", f"data.root={root}", "features/text=tfidf",
                          "train.epochs=3", "train.n_folds=3", "train.seeds=[0]", "tracking=none"])
    res = run(cfg, out_dir=tmp_path / "out")
    assert "test_val_wf1" in res.metrics and res.metrics["test_val_wf1"] > 0.3
    assert "cv_combined" not in res.metrics                 # no valence in MELD
    df = pd.read_csv(res.submissions["multi"], dtype={"name": str})
    assert len(df) == 2610 and set(df["discrete"]) <= {"anger", "joy", "sadness", "neutral", "disgust",
                                                        "fear", "surprise"}
