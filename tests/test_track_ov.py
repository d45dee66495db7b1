"""MER-OV track: the demo's derived OV ground truth, ``track=ov`` end to end on the demo, and on
the 332 released MER2024 OV samples (MER2023 transcripts) beside the official example prediction."""
import json
import sqlite3

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO, shared_data
from mer.ov.groupers import OfflineGrouper
from mer.ov.io import read_openset_csv, validate_openset_file
from mer.tracks.ov import DEMO_TIERS, demo_ov_gold


def _cfg(tmp, overrides=()):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.runs_dir={tmp / 'runs'}", "track=ov", "progress=false",
                                            *overrides])


def test_demo_ov_words_follow_class_intensity_and_visible_cues(tmp_path):
    cues = tmp_path / "demo-cues.csv"
    cues.write_text("name,split,discrete,intensity,face_cue,voice_cue,text_cue\n"
                    "a,train,angry,0.95,angry,surprise,neutral\n"
                    "b,train,sad,0.40,neutral,neutral,neutral\n"
                    "c,train,neutral,0.10,neutral,worried,neutral\n")
    gold = demo_ov_gold(cues, seed=0)
    assert gold == demo_ov_gold(cues, seed=0)                        # deterministic
    assert gold["a"][0] in DEMO_TIERS["angry"][2] and gold["a"][1:] == ["surprised"]
    assert gold["b"] == ["down"] and gold["c"][1:] == ["worried"]
    key = OfflineGrouper().key                                       # every word stays in its family
    for cls, tiers in DEMO_TIERS.items():
        assert len({key(w) for tier in tiers for w in tier}) == 1, cls


@pytest.mark.slow
def test_ov_track_on_the_demo(tmp_path):
    from mer.pipeline import run

    cfg = _cfg(tmp_path, ["data.demo.n_train=24", "data.demo.n_per_test=4", "train.n_folds=2",
                          "features/visual=none", "features/audio=none", "features/text=tfidf",
                          "track.predictors=[probabilities,multilabel]",
                          "track.predictor_options.multilabel.min_count=2"])
    res = run(cfg, out_dir=tmp_path / "out")
    out = res.out_dir
    gold = read_openset_csv(out / "ov_gold.csv")
    assert len(gold) == 24 and all(gold.values())
    scores = pd.read_csv(out / "ov_scores.csv")
    assert set(scores.grouper) == {"offline", "exact"}               # no official groupings for the demo
    assert set(scores.predictor) == {"probabilities", "multilabel"}
    assert scores[["accuracy", "recall", "score"]].apply(lambda c: c.between(0, 1).all()).all()
    oof = pd.read_csv(out / "predictions" / "ov-oof.csv")
    assert len(oof) == 24 and {"gold", "probabilities", "multilabel"} <= set(oof.columns)
    manifest = pd.read_json(out / "manifest.jsonl", lines=True, dtype=False).iloc[1:]
    for sp in ("test1", "test2", "test3"):
        names = manifest[manifest.split == sp].name.tolist()
        assert validate_openset_file(res.submissions[f"ov-{sp}"], names) == []
    assert "ov_score_offline" in res.metrics
    assert all("offline" in k or "exact" in k for k in res.metrics if k.startswith("ov_"))
    assert "grouper" in res.table and "offline" in res.table
    con = sqlite3.connect(tmp_path / "runs" / "mlflow.db")
    keys = {k for k, in con.execute("select distinct key from metrics where run_uuid=?", (res.run_id,))}
    assert {"ov_multilabel_offline_score", "ov_probabilities_exact_recall"} <= keys


@pytest.mark.slow
def test_ov_track_on_the_released_ov_samples(tmp_path):
    from mer.pipeline import run

    root = shared_data("mer2023")
    ov = shared_data("mer2024-ov")
    cfg = _cfg(tmp_path, ["data=mer2023", f"data.root={root}", f"track.gold={ov / 'check-openset.csv'}",
                          "features/text=tfidf", "features/audio=none", "features/visual=none", "train.n_folds=2",
                          "tracking=none", "track.predictors=[probabilities]", "track.submit_splits=[test1]"])
    res = run(cfg, out_dir=tmp_path / "out")
    scores = pd.read_csv(res.out_dir / "ov_scores.csv")
    ref = scores[scores.predictor == "reference"].set_index("grouper")
    assert ref.loc["official_cache", "score"] == pytest.approx(0.5397841365461847, abs=1e-12)   # golden
    assert {"offline", "exact"} <= set(ref.index)
    ours = scores[scores.predictor != "reference"]
    assert (ours.n_samples == 332).all() and ours.score.between(0.05, 1).all()
    assert ours[ours.grouper == "official_cache"].coverage.between(0, 1).all()
    test1 = pd.read_csv(root / "test1-names.csv")["name"].tolist()
    assert validate_openset_file(res.submissions["ov-test1"], test1) == []
    summary = json.loads((res.out_dir / "results.json").read_text())
    assert summary["ov"]["n_labelled"] == 332 and summary["ov"]["headline_grouper"] == "offline"
