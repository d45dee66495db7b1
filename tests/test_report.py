"""Ablation reports from a real Hydra multirun (features × fusion models × seeds): the table, the
plots, the same table from the MLflow store, feature ranking and a runnable top-n fusion."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from mer.evaluation.ablation import (RunRecord, cells, contributions, feature_ranking, markdown, pooled, table,
                                     top_n_overrides)

SMALL = ["data.demo.n_train=48", "data.demo.n_per_test=6", "features/visual=none", "train.epochs=4",
         "train.n_folds=3", "progress=false"]


def test_pooled_mean_and_std_equal_those_of_all_seeds():
    rng = np.random.default_rng(0)
    groups = [rng.normal(size=k) for k in (2, 3, 5)]
    parts = [(g.mean(), g.std(), len(g)) for g in groups]
    mean, std, n = pooled(parts)
    allv = np.concatenate(groups)
    assert n == 10 and mean == pytest.approx(allv.mean()) and std == pytest.approx(allv.std())


def test_top_n_fuses_each_modality_once():
    rank = pd.DataFrame({"modality": ["text", "text", "text", "audio", "audio"],
                         "extractor": ["minilm", "tfidf", "hf_text", "librosa_prosody", "egemaps_librosa"]})
    ov = top_n_overrides(rank, 2, ["audio", "text"])
    assert ov == ["features/text=minilm", "+features.text_2.name=tfidf", "features/audio=librosa_prosody",
                  "+features.audio_2.name=egemaps_librosa", "features/visual=none"]
    assert sum("tfidf" in o for o in ov) == 1          # MERTools' AT mode would list the text features twice
    with pytest.raises(ValueError, match="twice"):
        top_n_overrides(rank, 2, ["text", "text"])


def _record(fusion, scores, seeds=(0, 1)):
    """A run's record as ``results.json`` holds it: one ablation row per setting ``mods -> cv wf1``."""
    feats = {"text": {"extractor": "tfidf", "modality": "text"},
             "audio": {"extractor": "librosa_prosody", "modality": "audio"}}
    rows = [{"modalities": list(mods), "strategy": "supervised", "cv": {"cv_wf1": {"mean": m, "std": 0.0}},
             "test": {}} for mods, m in scores.items()]
    return RunRecord(f"run-{fusion}", fusion, feats, list(seeds), rows)


def test_single_modality_rows_say_dash_for_fusion_as_the_run_table_does():
    from mer.tracks.outputs import results_row

    recs = [_record("attention", {("text",): 0.4, ("audio",): 0.2, ("audio", "text"): 0.5}),
            _record("mlp", {("text",): 0.6, ("audio",): 0.2, ("audio", "text"): 0.7})]
    df = table(cells(recs), ["wf1"])
    single = df[df["modalities"] == "text"]
    assert list(single["fusion"]) == ["-"] and single["models"].iloc[0] == "attention+mlp"
    assert single["cv_wf1_mean"].iloc[0] == pytest.approx(0.5) and single["seeds"].iloc[0] == 4
    assert set(df[df["modalities"] == "audio+text"]["fusion"]) == {"attention", "mlp"}
    md_rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in markdown(df, ["wf1"]).splitlines()[2:]]
    assert ["text=tfidf", "text", "-"] in [r[:3] for r in md_rows]
    ab = recs[0].ablation[0]
    assert results_row(ab, "attention", 2)["fusion"] == "-"        # the run's own table
    contrib = contributions(df)
    mlp = contrib[contrib["setting"].str.startswith("audio+text (mlp")].set_index("modality")["delta"]
    assert mlp["audio"] == pytest.approx(0.7 - 0.5) and mlp["text"] == pytest.approx(0.7 - 0.2)
    assert feature_ranking(df).set_index("extractor").loc["tfidf", "fusion_models"] == "attention+mlp"
    # the same model on the same seeds in a second run is the same setting: counted once
    again = table(cells(recs + [_record("mlp", {("text",): 0.6})]), ["wf1"])
    assert again[again["modalities"] == "text"]["seeds"].iloc[0] == 4


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablation")
    cmd = [sys.executable, "-m", "mer.run", "-m", "features/text=minilm,tfidf", "fusion=attention,mlp",
           "train.seeds=[0,1]", f"paths.runs_dir={tmp}", *SMALL]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = list((tmp / "multirun").iterdir())
    return tmp, sweep


@pytest.mark.slow
def test_report_from_a_multirun_folder(multirun, tmp_path):
    tmp, sweep = multirun
    proc = subprocess.run([sys.executable, "-m", "mer.report", str(sweep), "--out", str(tmp_path / "rep"),
                           "--top-n", "2", "--modalities", "text,audio"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_csv(tmp_path / "rep" / "ablation.csv")
    fused = df[df["modalities"] == "audio+text"]
    assert len(fused) == 4 and set(fused["fusion"]) == {"attention", "mlp"}
    assert set(fused["features"]) == {"audio=librosa_prosody, text=minilm", "audio=librosa_prosody, text=tfidf"}
    assert (fused["seeds"] == 2).all()
    text_alone = df[df["modalities"] == "text"]           # a single modality says "-" and pools both models
    assert len(text_alone) == 2 and set(text_alone["features"]) == {"text=minilm", "text=tfidf"}
    assert set(text_alone["fusion"]) == {"-"} and set(text_alone["models"]) == {"attention+mlp"}
    audio_alone = df[df["modalities"] == "audio"]         # 4 runs, one distinct setting per fusion model
    assert len(audio_alone) == 1 and audio_alone["seeds"].iloc[0] == 4 and audio_alone["runs"].iloc[0] == 2
    # the cell's numbers are those of the run that produced it
    run_dir = next(p.parent for p in sweep.glob("*/results.json")
                   if "name: tfidf" in (p.parent / "config_resolved.yaml").read_text()
                   and "name: mlp" in (p.parent / "config_resolved.yaml").read_text())
    r0 = json.loads((run_dir / "results.json").read_text())
    row = df[(df["modalities"] == "audio+text") & (df["features"] == "audio=librosa_prosody, text=tfidf")
             & (df["fusion"] == "mlp")].iloc[0]
    ab = next(a for a in r0["ablation"] if a["modalities"] == ["audio", "text"])
    assert row["cv_wf1_mean"] == pytest.approx(ab["cv"]["cv_wf1"]["mean"])
    assert row["cv_wf1_std"] == pytest.approx(ab["cv"]["cv_wf1"]["std"]) and row["cv_wf1_std"] > 0
    md = (tmp_path / "rep" / "ablation.md").read_text()
    assert md.count("±") >= 2 * len(df) and "audio=librosa_prosody, text=minilm" in md
    for png in ("ablation_bars.png", "modality_contribution.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"
    contrib = pd.read_csv(tmp_path / "rep" / "modality_contribution.csv")
    assert len(contrib) == 4 * 2 and set(contrib["modality"]) == {"audio", "text"}
    rank = pd.read_csv(tmp_path / "rep" / "feature_ranking.csv")
    text_rank = rank[rank["modality"] == "text"].sort_values("rank")
    assert list(text_rank["rank"]) == [1, 2] and text_rank["cv_wf1"].is_monotonic_decreasing
    cmd = (tmp_path / "rep" / "top_n_command.txt").read_text().split()
    best, second = text_rank["extractor"].tolist()
    assert f"features/text={best}" in cmd and f"+features.text_2.name={second}" in cmd
    assert "features/visual=none" in cmd and "features/audio=librosa_prosody" in cmd


@pytest.mark.slow
def test_report_from_mlflow_equals_the_folder_report(multirun, tmp_path):
    tmp, sweep = multirun
    from mer.report import main

    assert main([str(sweep), "--out", str(tmp_path / "a")]) == 0
    assert main(["mlflow:mer", "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--out", str(tmp_path / "b")]) == 0
    a = pd.read_csv(tmp_path / "a" / "ablation.csv").drop(columns="runs")
    b = pd.read_csv(tmp_path / "b" / "ablation.csv").drop(columns="runs")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_top_n_command_runs_each_feature_once(multirun, tmp_path):
    from mer.pipeline import run

    tmp, sweep = multirun
    from mer.report import main

    main([str(sweep), "--out", str(tmp_path / "r"), "--top-n", "2", "--modalities", "text,audio"])
    overrides = (tmp_path / "r" / "top_n_command.txt").read_text().split()[3:]
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *SMALL, f"paths.runs_dir={tmp}", "tracking=none",
                                           "ablate_modalities=false"])
    res = run(cfg, out_dir=tmp_path / "topn")
    info = json.loads((res.out_dir / "results.json").read_text())["features"]
    assert sorted(info) == ["audio", "text", "text_2"]
    assert sorted(i["extractor"] for i in info.values()) == ["librosa_prosody", "minilm", "tfidf"]
    assert res.ablation[-1]["modalities"] == ["audio", "text", "text_2"]
