"""End to end on a small demo corpus: extraction, CV, submissions, MLflow, cache reuse, CLI."""
import json
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from mer.pipeline import run
from submissions.validate import validate_submission

pytestmark = pytest.mark.slow

SMALL = ["data.demo.n_train=48", "data.demo.n_per_test=6", "train.epochs=6", "train.n_folds=3",
         "progress=false"]


def _untracked():
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def _cfg(base, overrides=()):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.cache_dir={base / 'cache'}",
                                            f"paths.runs_dir={base / 'runs'}", *SMALL, *overrides])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    cfg = _cfg(base)
    return base, cfg, run(cfg, out_dir=base / "out1")


def test_run_outputs_scores_and_valid_submissions(demo_run):
    base, cfg, res = demo_run
    for k in ("cv_wf1", "cv_acc", "cv_mse", "cv_combined", "oof_wf1", "test_test1_combined",
              "test_test3_wf1"):
        assert k in res.metrics, k
    assert "audio+text+visual" in res.table and "attention" in res.table
    assert [a["modalities"] for a in res.ablation] == [["audio"], ["text"], ["visual"],
                                                        ["audio", "text", "visual"]]
    manifest = pd.read_json(res.out_dir / "manifest.jsonl", lines=True, dtype=False).iloc[1:]
    for track, schema, split in [("multi", "mer2023_multi", "test1"), ("noise", "mer2023_noise", "test2"),
                                 ("semi", "mer2023_semi", "test3")]:
        names = [n for n, s in zip(manifest["name"], manifest["split"]) if s == split]
        assert validate_submission(res.submissions[track], schema, names=names) == []
    for f in ("config_resolved.yaml", "results.json", "results.md", "per_class_cv.csv",
              "confusion_matrix_cv.png", "predictions/train-oof.csv", "predictions/test1.csv"):
        assert (res.out_dir / f).is_file(), f
    assert (res.out_dir / "confusion_matrix_cv.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = (res.out_dir / "config_resolved.yaml").read_text()
    assert "n_train: 48" in resolved and "${" not in resolved


def test_mlflow_run_recorded_with_metrics_params_and_artifacts(demo_run):
    base, cfg, res = demo_run
    db = base / "runs" / "mlflow.db"
    assert db.is_file()
    con = sqlite3.connect(db)
    status, = con.execute("select status from runs where run_uuid=?", (res.run_id,)).fetchone()
    assert status == "FINISHED"
    metrics = {k for k, in con.execute("select key from metrics where run_uuid=?", (res.run_id,))}
    assert {"cv_wf1", "cv_combined", "fold_wf1"} <= metrics
    params = dict(con.execute("select key, value from params where run_uuid=?", (res.run_id,)))
    assert params["fusion.name"] == "attention" and len(params["cache.text.key"]) == 64
    tags = dict(con.execute("select key, value from tags where run_uuid=?", (res.run_id,)))
    assert "git_commit" in tags
    art = base / "runs" / "mlartifacts"
    files = {p.relative_to(art).parts[-1] for p in art.rglob("*") if p.is_file()}
    assert {"mer2023_multi.csv", "confusion_matrix_cv.png", "config_resolved.yaml", "test1.csv"} <= files


def test_second_run_reads_every_feature_from_cache(demo_run):
    base, cfg, res = demo_run
    res2 = run(cfg, out_dir=base / "out2")
    info = json.loads((res2.out_dir / "results.json").read_text())["features"]
    assert set(info) == {"text", "audio", "visual"}
    assert all(i["extracted_now"] == 0 and i["from_cache"] == i["total"] for i in info.values())
    assert res2.metrics["cv_wf1"] == res.metrics["cv_wf1"]          # bit-for-bit repeatable


def test_failed_run_is_marked_failed(demo_run, tmp_path):
    base, _, _ = demo_run
    con = sqlite3.connect(base / "runs" / "mlflow.db")
    n_runs = con.execute("select count(*) from runs").fetchone()[0]
    with pytest.raises(SystemExit, match="unknown fusion model"):      # a config error: refused before it starts
        run(_cfg(base, ["fusion.name=no_such_fusion", "modalities=[text]"]), out_dir=tmp_path / "refused")
    assert con.execute("select count(*) from runs").fetchone()[0] == n_runs
    cfg = _cfg(base, ["track.metric=frame_f1", "modalities=[text]"])     # the demo has no per-frame labels
    with pytest.raises(ValueError, match="frame_f1"):
        run(cfg, out_dir=tmp_path / "failed")
    statuses = [s for s, in con.execute("select status from runs order by start_time")]
    assert statuses[-1] == "FAILED"


def test_cli_multirun_over_fusion_models(demo_run, tmp_path):
    base, _, _ = demo_run
    cmd = [sys.executable, "-m", "mer.run", "-m", "fusion=attention,mlp", "modalities=[text,audio]",
           f"paths.cache_dir={base / 'cache'}", f"paths.runs_dir={tmp_path}", "tracking=none",
           "ablate_modalities=false", *SMALL]
    before = _untracked()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _untracked() == before             # nothing written into the source tree
    results = sorted(tmp_path.glob("multirun/*/*/results.json"))
    assert len(results) == 2
    for r in results:
        assert [a["modalities"] for a in json.loads(r.read_text())["ablation"]] == [["audio", "text"]]
    cfgs = [(r.parent / "config_resolved.yaml").read_text() for r in results]
    assert any("name: mlp" in c for c in cfgs) and any("name: attention" in c for c in cfgs)
    assert "audio+text" in proc.stdout
