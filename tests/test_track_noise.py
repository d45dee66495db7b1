"""MER-NOISE track: the robust-training options, and ``track=noise`` end to end on a small demo
(corrupted copies in their own cache conditions, robustness curve, baseline, submissions)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import REPO
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.training.data import Split
from mer.training.estimator import FusionEstimator
from mer.tracks.base import build_strategy
from mer.tracks.data import curve_conditions
from submissions.validate import validate_submission

# 24 training clips keep 2 per class: 2 folds. Audio and video are what corruption changes.
TINY = ["data.demo.n_train=24", "data.demo.n_per_test=4", "train.epochs=3", "train.n_folds=2",
        "progress=false", "ablate_modalities=false", "modalities=[audio,visual]",
        "track.robustness.snr_db=[5]", "track.robustness.blur_factors=[4]"]


def _cfg(tmp, overrides=()):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.runs_dir={tmp / 'runs'}", "track=noise", *TINY, *overrides])


# --- the options -----------------------------------------------------------------------------


def _batch(n=400, present_rate=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, 5, generator=g) for m in ("audio", "text", "visual")}
    present = {m: torch.rand(n, generator=g) < present_rate for m in inputs}
    return inputs, present


def test_modality_dropout_hides_modalities_but_never_all_of_a_sample():
    strat = build_strategy("noise_robust", modality_dropout=0.5)
    inputs, present = _batch(present_rate=0.8)
    before = {m: x.clone() for m, x in inputs.items()}
    out_x, out_p = strat.augment(inputs, present, torch.Generator().manual_seed(1))
    shown = torch.stack([present[m] for m in sorted(present)], 1)
    kept = torch.stack([out_p[m] for m in sorted(out_p)], 1)
    assert not (kept & ~shown).any()                                    # nothing absent reappears
    assert (kept.any(1) == shown.any(1)).all()                          # never every modality of a sample
    rate = 1 - kept.sum() / shown.sum()
    assert 0.25 < float(rate) < 0.5                                     # ~0.5, minus the rescued rows
    for m in out_x:
        assert torch.equal(inputs[m], before[m])                        # inputs untouched
        assert (out_x[m][~out_p[m]] == 0).all()
    again = strat.augment(inputs, present, torch.Generator().manual_seed(1))
    assert all(torch.equal(again[1][m], out_p[m]) for m in out_p)       # follows the generator


def test_feature_noise_touches_present_rows_only():
    strat = build_strategy("noise_robust", feature_noise=0.3)
    inputs, present = _batch(present_rate=0.5)
    out_x, out_p = strat.augment(inputs, present, torch.Generator().manual_seed(0))
    for m in inputs:
        diff = out_x[m] - inputs[m]
        assert (diff[~present[m]] == 0).all()
        assert float(diff[present[m]].std()) == pytest.approx(0.3, rel=0.1)
        assert torch.equal(out_p[m], present[m])


def test_augmentation_on_frame_level_batches_keeps_masks_and_padding():
    """Sequence inputs ``[B, T, D]`` with step masks ``[B, T]`` (and a one-step utterance stream):
    a dropped modality loses every step, noise never reaches a padded step, shapes stay."""
    g = torch.Generator().manual_seed(3)
    B, T = 300, 7
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    steps = torch.arange(T)[None, :] < lengths[:, None]                       # [B, T]; some rows absent
    inputs = {"visual": torch.randn(B, T, 4, generator=g) * steps.unsqueeze(-1),
              "text": torch.randn(B, 1, 6, generator=g)}
    present = {"visual": steps, "text": torch.ones(B, 1, dtype=torch.bool)}
    strat = build_strategy("noise_robust", modality_dropout=0.5, feature_noise=0.2)
    out_x, out_p = strat.augment(inputs, present, torch.Generator().manual_seed(0))
    for m in inputs:
        assert out_x[m].shape == inputs[m].shape and out_p[m].shape == present[m].shape
        assert not (out_p[m] & ~present[m]).any()                             # nothing reappears
        assert (out_x[m][~out_p[m]] == 0).all()                               # hidden/padded steps stay zero
    row_kept = {m: out_p[m].any(1) for m in out_p}
    dropped_visual = present["visual"].any(1) & ~row_kept["visual"]
    assert dropped_visual.any()
    assert not (out_p["visual"][dropped_visual]).any()                       # a dropped row loses every step
    assert (row_kept["visual"] | row_kept["text"]).all()                     # never both modalities
    kept_steps = out_p["visual"]
    assert float((out_x["visual"] - inputs["visual"])[kept_steps].std()) == pytest.approx(0.2, rel=0.15)


def test_noise_strategy_trains_a_frame_level_model():
    rng = np.random.default_rng(0)
    n, T = 40, 6
    lengths = rng.integers(2, T + 1, n)
    X = rng.normal(size=(n, T, 5)).astype(np.float32) * (np.arange(T)[None, :, None] < lengths[:, None, None])
    y = np.arange(n) % 2
    X[y == 1, 0, :] += 2.0
    bundle = FeatureBundle([f"s{i}" for i in range(n)], {
        "visual": ModalityFeatures(X, lengths > 0, "t", lengths),
        "audio": ModalityFeatures(rng.normal(size=(n, 3)).astype(np.float32), np.ones(n, bool), "t")})
    split = Split(bundle, y.astype(np.int64), np.full(n, np.nan, np.float32))
    strat = build_strategy("noise_robust", train_on=[], modality_dropout=0.3, feature_noise=0.1)
    est = FusionEstimator("gru", {"hidden_dim": 8}, num_classes=2, has_valence=False, epochs=3, seed=0)
    strat.fit_fold(est, split, eval_set=split)
    assert est.predict_proba(split).shape == (n, 2)
    plain = FusionEstimator("gru", {"hidden_dim": 8}, num_classes=2, has_valence=False, epochs=3, seed=0).fit(split)
    assert plain.history_[0]["train_loss"] != est.history_[0]["train_loss"]   # the augmentation was applied


def test_options_are_checked():
    with pytest.raises(ValueError, match="modality_dropout"):
        build_strategy("noise_robust", modality_dropout=1.5)
    with pytest.raises(ValueError, match="select_on"):
        build_strategy("noise_robust", select_on="noisy")
    assert curve_conditions({"snr_db": [5, 7], "blur_factors": [1, 2], "mixed": True}) == \
        ["snr5", "snr7", "blur2", "mixed"]


def test_a_fold_trains_on_the_corrupted_copies_of_its_own_clips_only():
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(40)]
    y = np.arange(40) % 2
    clean = FeatureBundle(names, {"audio": ModalityFeatures(rng.normal(0, 1, (40, 3)).astype(np.float32),
                                                            np.ones(40, bool))})
    noisy = FeatureBundle(names, {"audio": ModalityFeatures(rng.normal(10, 1, (40, 3)).astype(np.float32),
                                                            np.ones(40, bool))})
    train = Split(clean, y, np.full(40, np.nan, np.float32))
    views = {"mixed": Split(noisy, y, train.v)}
    fold = train.rows(np.arange(20))
    est = FusionEstimator("mlp", {"hidden_dim": 8}, num_classes=2, has_valence=False, epochs=1)
    build_strategy("noise_robust").fit_fold(est, fold, eval_set=train.rows(np.arange(20, 40)),
                                            context={"views": views})
    want = np.concatenate([clean.modalities["audio"].X[:20], noisy.modalities["audio"].X[:20]]).mean(0)
    np.testing.assert_allclose(est.scalers_["audio"][0], want, rtol=1e-5)   # fitted on clean + its copies
    est = FusionEstimator("mlp", {"hidden_dim": 8}, num_classes=2, has_valence=False, epochs=1)
    build_strategy("noise_robust", train_on=[]).fit_fold(est, fold, context={"views": views})
    np.testing.assert_allclose(est.scalers_["audio"][0], clean.modalities["audio"].X[:20].mean(0), rtol=1e-5)


def test_out_of_fold_curve_from_views_of_the_training_split():
    from mer.tracks.base import TrackData
    from mer.tracks.outputs import robustness_curve

    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(60)]
    y = np.arange(60) % 2
    signal = (y[:, None] * 2.0 - 1.0) + rng.normal(0, 0.5, (60, 4))

    def view(noise_sd):
        X = (signal + rng.normal(0, noise_sd, signal.shape)).astype(np.float32)
        return Split(FeatureBundle(names, {"audio": ModalityFeatures(X, np.ones(60, bool))}), y,
                     np.full(60, np.nan, np.float32))

    data = TrackData(view(0.0), {}, views={"snr10": view(0.5), "snr5": view(4.0)})
    est = FusionEstimator("mlp", {"hidden_dim": 8}, num_classes=2, has_valence=False, epochs=30, lr=1e-2)
    res = build_strategy("supervised").cross_validate(est, data, seeds=[0], n_folds=3, progress=False)
    curve = robustness_curve(res, data, "train", ["snr10", "snr5", "blur2"], "train")
    assert set(curve) == {"clean", "snr10", "snr5"}                      # no view, no point
    assert curve["clean"] > 0.9 and curve["snr5"] < curve["clean"]      # louder noise, lower score


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    from mer.pipeline import run

    tmp = tmp_path_factory.mktemp("noise")
    cfg = _cfg(tmp)
    return tmp, cfg, run(cfg, out_dir=tmp / "out1")


@pytest.mark.slow
def test_noise_track_trains_on_corrupted_copies_and_plots_the_curve(noise_run):
    tmp, cfg, res = noise_run
    summary = json.loads((res.out_dir / "results.json").read_text())
    assert summary["strategy"] == "noise_robust" and summary["baseline"] == "supervised"
    curves = summary["robustness_curve"]
    assert set(curves) == {"noise_robust", "supervised (baseline)"}
    assert set(curves["noise_robust"]) == {"clean", "snr5", "blur4", "mixed"}
    table = pd.read_csv(res.out_dir / "robustness_curve.csv")
    assert len(table) == 8 and table["wf1"].between(0, 1).all()
    assert (res.out_dir / "robustness_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for k in ("oof_mixed_wf1", "test_test2_wf1", "baseline_test_test2_wf1", "curve_snr5_wf1",
              "baseline_curve_blur4_wf1"):
        assert k in res.metrics, k
    assert "supervised (baseline)" in res.table and "oof_mixed_wf1" in res.table
    # features of each condition in its own cache condition; text-free conditions touch only their modality
    feats = summary["features"]
    assert feats["audio@mixed"]["condition"] == "mixed" and feats["visual@mixed"]["condition"] == "mixed"
    assert "test1/audio@snr5" in feats and "test1/visual@snr5" not in feats   # snr5 keeps the clean video
    assert "test1/visual@blur4" in feats and "test1/audio@blur4" not in feats
    assert feats["audio@mixed"]["total"] == 24                          # the training clips
    assert feats["test1/audio@mixed"]["total"] == 4                     # test1, the curve's split


@pytest.mark.slow
def test_corrupted_material_lives_under_its_own_condition(noise_run):
    tmp, cfg, res = noise_run
    from pathlib import Path

    feats = json.loads((res.out_dir / "results.json").read_text())["features"]
    entry = Path(feats["audio@mixed"]["entry"])
    clean_entry = Path(feats["audio"]["entry"])
    assert entry.parent.name == "mixed" and clean_entry.parent.name == "clean"
    assert entry.parent.parent == clean_entry.parent.parent             # same dataset, other condition
    copy = Path(cfg.paths.cache_dir) / "corrupted" / entry.parent.parent.name / "mixed"
    table = pd.read_csv(copy / "train-corruption.csv")
    assert len(table) == 24 and table["snr_db"].between(5, 10).all() and set(table["blur_factor"]) <= {1, 2, 4}
    assert len(list((copy / "train").glob("*.corruption.json"))) == 24


@pytest.mark.slow
def test_noise_submissions_and_baseline_submissions_are_valid(noise_run):
    tmp, cfg, res = noise_run
    manifest = pd.read_json(res.out_dir / "manifest.jsonl", lines=True, dtype=False).iloc[1:]
    names = [n for n, s in zip(manifest["name"], manifest["split"]) if s == "test2"]
    assert validate_submission(res.submissions["noise"], "mer2023_noise", names=names) == []
    base = res.out_dir / "submissions" / "baseline-supervised" / "mer2023_noise.csv"
    assert validate_submission(base, "mer2023_noise", names=names) == []


@pytest.mark.slow
def test_second_run_reads_corrupted_features_from_cache(noise_run):
    from mer.pipeline import run

    tmp, cfg, res = noise_run
    res2 = run(cfg, out_dir=tmp / "out2")
    feats = json.loads((res2.out_dir / "results.json").read_text())["features"]
    assert all(i["extracted_now"] == 0 for i in feats.values())
    assert res2.metrics["curve_mixed_wf1"] == res.metrics["curve_mixed_wf1"]
