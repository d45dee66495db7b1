"""Targets beyond the utterance class and valence: arousal heads, the CCC loss option, per-frame
labels (ABAW Expr) through the generic manifest, and windowed training of frame-level models."""
import csv

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import REPO
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.data.manifest import read_frame_labels
from mer.data.frames import pad_sequences
from mer.data.sequences import window_bundle, window_frame_targets
from mer.evaluation.metrics import ccc
from mer.evaluation.scoring import score_targets
from mer.pipeline import run
from mer.tracks.supervised import SupervisedStrategy
from mer.training.data import Split, concat_splits
from mer.training.estimator import FusionEstimator
from mer.training.losses import ccc_loss


def _seq_split(n=60, seed=0, T=(6, 14), with_frames=False):
    """Visual sequences whose per-step class is readable from the step's features: the first half
    of each sequence shows one class, the rest another; the utterance label is the later class."""
    C, D = 3, 8
    protos = np.random.default_rng(123).normal(size=(C, D)).astype(np.float32) * 2   # shared by every split
    rng = np.random.default_rng(seed)
    seqs, y, frames, arousal = [], [], [], []
    for i in range(n):
        t = int(rng.integers(*T))
        first, later = rng.choice(C, 2, replace=False)
        cls = np.array([first] * (t // 2) + [later] * (t - t // 2))
        seqs.append(protos[cls] + rng.normal(scale=0.5, size=(t, D)).astype(np.float32))
        y.append(later)
        frames.append(cls)
        arousal.append(float(later) - 1.0 + rng.normal(scale=0.1))
    X, lengths = pad_sequences(seqs, dim=D)
    targets = {"arousal": np.asarray(arousal, np.float32)}
    if with_frames:
        F = np.full((n, X.shape[1]), -1, np.int64)
        for i, f in enumerate(frames):
            F[i, :len(f)] = f
        targets["frames"] = F
    bundle = FeatureBundle([f"s{seed}_{i}" for i in range(n)], {"visual": ModalityFeatures(X, lengths > 0, "t", lengths)})
    return Split(bundle, np.asarray(y, np.int64), np.full(n, np.nan, np.float32), targets=targets)


def test_arousal_head_learns_and_is_scored_with_ccc():
    train, test = _seq_split(80, 0), _seq_split(40, 1)
    est = FusionEstimator("gru", {"hidden_dim": 16}, num_classes=3, has_valence=False, epochs=25, lr=3e-3,
                          batch_size=16, seed=0, select_metric="arousal_ccc").fit(train, eval_set=test)
    out = est.predict_outputs(test)
    assert out["arousal"].shape == (40,)
    scores = score_targets(test.targets, out)
    assert scores["arousal_ccc"] == pytest.approx(ccc(test.targets["arousal"], out["arousal"]))
    assert scores["arousal_ccc"] > 0.5


def test_ccc_dimension_loss_is_one_minus_ccc_and_checked():
    strat = SupervisedStrategy(dimension_loss="ccc", valence_weight=1.0, arousal_weight=0.5)
    logits = torch.zeros(4, 3)
    outputs = {"logits": logits, "valence": torch.tensor([0.1, 0.4, -0.2, 0.3]),
               "arousal": torch.tensor([1.0, 0.0, 0.5, 0.2])}
    batch = {"y": torch.tensor([0, 1, 2, 0]), "v": torch.tensor([0.0, 0.5, float("nan"), 0.4]),
             "a": torch.tensor([0.9, 0.1, 0.4, 0.3])}
    ce = torch.nn.functional.cross_entropy(logits, batch["y"])
    expected = ce + ccc_loss(outputs["valence"], batch["v"]) + 0.5 * ccc_loss(outputs["arousal"], batch["a"])
    assert float(strat.loss(outputs, batch)) == pytest.approx(float(expected), rel=1e-5)
    assert float(ccc_loss(outputs["valence"], batch["v"])) > 0.0
    with pytest.raises(ValueError, match="dimension_loss"):
        SupervisedStrategy(dimension_loss="mae")


def test_per_frame_head_learns_frame_classes():
    train, test = _seq_split(80, 0, with_frames=True), _seq_split(40, 1, with_frames=True)
    est = FusionEstimator("tcn", {"hidden_dim": 16}, num_classes=3, has_valence=False, epochs=20, lr=3e-3,
                          batch_size=16, seed=0, select_metric="frame_f1").fit(train, eval_set=test)
    out = est.predict_outputs(test)
    assert out["frame_probs"].shape[:2] == test.targets["frames"].shape
    padded = test.targets["frames"] < 0
    assert np.all(out["frame_probs"][padded] == 0)             # nothing predicted past a sample's end
    assert score_targets(test.targets, out)["frame_f1"] > 0.8


def test_per_frame_labels_need_a_model_that_keeps_time():
    train = _seq_split(20, 0, with_frames=True)
    with pytest.raises(SystemExit, match="per-frame"):
        FusionEstimator("mlp", num_classes=3, has_valence=False, epochs=1).fit(train)


def test_window_bundle_round_trips_steps_and_targets():
    split = _seq_split(5, 2, T=(20, 40), with_frames=True)
    X, plan = window_bundle(split.X, size=8, hop=4)
    assert X.modalities["visual"].lengths.max() <= 8
    assert len(X) == len(plan.owner) > len(split)
    # each window holds its sample's steps from its start: merging the windows gives the samples back
    win = X.modalities["visual"].X
    merged = plan.merge_steps(win)
    orig = split.X.modalities["visual"]
    for i in range(len(split)):
        n = int(orig.lengths[i])
        np.testing.assert_allclose(merged[i, :n], orig.X[i, :n], rtol=1e-6)
    frames = window_frame_targets(split.targets["frames"], plan)
    for k, (i, s) in enumerate(zip(plan.owner, plan.start)):
        L = int(plan.length[k])
        np.testing.assert_array_equal(frames[k, :L], split.targets["frames"][i, s:s + L])


def test_windowed_training_predicts_one_row_per_sample():
    train, test = _seq_split(60, 0, T=(20, 40), with_frames=True), _seq_split(20, 1, T=(20, 40), with_frames=True)
    est = FusionEstimator("gru", {"hidden_dim": 16}, num_classes=3, has_valence=False, epochs=15, lr=3e-3,
                          batch_size=16, seed=0, window_size=10, window_hop=5,
                          select_metric="frame_f1").fit(train, eval_set=test)
    out = est.predict_outputs(test)
    assert out["probs"].shape == (20, 3)
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, rtol=1e-5)
    assert out["frame_probs"].shape[0] == 20
    assert score_targets(test.targets, out)["frame_f1"] > 0.8
    # the windows are what it trained on: without windowing the same model sees other inputs
    whole = FusionEstimator("gru", {"hidden_dim": 16}, num_classes=3, has_valence=False, epochs=1, seed=0).fit(train)
    assert whole.history_[0]["train_loss"] != est.history_[0]["train_loss"]


def test_concatenated_splits_keep_extra_targets():
    a, b = _seq_split(4, 0, with_frames=True), _seq_split(3, 1, T=(20, 24), with_frames=True)
    both = concat_splits([a, b])
    assert both.targets["frames"].shape == (7, max(a.targets["frames"].shape[1], b.targets["frames"].shape[1]))
    np.testing.assert_array_equal(both.targets["arousal"][4:], b.targets["arousal"])
    assert both.rows([5]).targets["frames"][0].tolist() == b.targets["frames"][1].tolist()


def test_frame_label_files_are_read_and_checked(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("Neutral,Anger,Other\n0\n-1\n2\n")
    assert read_frame_labels(good, 3).tolist() == [0, -1, 2]
    bad = tmp_path / "b.txt"
    bad.write_text("0\n7\n")
    with pytest.raises(ValueError, match="b.txt:2"):
        read_frame_labels(bad, 3)


WORDS = {"calm": "quiet calm peaceful", "excited": "thrilled excited energetic", "gloomy": "grey gloomy miserable"}


@pytest.mark.slow
def test_abaw_style_dataset_through_the_generic_manifest(tmp_path):
    """Per-frame labels (ABAW Expr files) and arousal through the generic manifest, with token-level
    text as the frame stream: every frame label is read, mapped to the stream's steps, learned by a
    per-frame head, scored as frame_f1 and written per step."""
    root = tmp_path / "abaw"
    (root / "labels").mkdir(parents=True)
    classes = ["calm", "excited", "gloomy"]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        first, later = rng.choice(3, 2, replace=False)
        text = f"{WORDS[classes[first]]} then {WORDS[classes[later]]}"
        n_frames = int(rng.integers(40, 60))            # video frames, more than tokens
        labels = [first] * (n_frames // 2) + [later] * (n_frames - n_frames // 2)
        (root / "labels" / f"v{i:03d}.txt").write_text("calm,excited,gloomy\n" + "\n".join(map(str, labels)) + "\n")
        split = "train" if i < 40 else "test"
        rows.append((f"v{i:03d}", split, text, f"labels/v{i:03d}.txt", f"{later - 1 + 0.1 * rng.normal():.3f}"))
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "split", "text", "frame_labels", "arousal"])
        w.writerows(rows)
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"paths.cache_dir={tmp_path / 'cache'}", f"paths.runs_dir={tmp_path / 'runs'}", "progress=false",
            "tracking=none", "data=generic", f"data.root={root}", "+data.options.classes=[calm,excited,gloomy]",
            "features/audio=none", "features/visual=none", "features.text.options.level=frame", "fusion=gru",
            "fusion.params.hidden_dim=32", "train.epochs=30", "train.lr=3e-3", "train.n_folds=2",
            "ablate_modalities=false"])
    res = run(cfg, out_dir=tmp_path / "out")
    assert res.metrics["cv_frame_f1"] > 0.7
    assert "cv_arousal_ccc" in res.metrics
    frames = pd.read_csv(tmp_path / "out" / "predictions" / "test-frames.csv")
    assert set(frames["name"]) == {f"v{i:03d}" for i in range(40, 48)}
    assert set(frames["discrete"]) <= set(classes)
    preds = pd.read_csv(tmp_path / "out" / "predictions" / "test.csv")
    assert "arousal" in preds.columns


def test_window_setting_reaches_the_estimator():
    from mer.core.samples import LabelSpec
    from mer.data.manifest import Manifest
    from mer.tracks.supervised import make_estimator
    from mer.tracks.data import resolve_metric

    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["fusion=gru", "sequence.window.size=1000", "sequence.window.hop=200"])
    spec = LabelSpec(("a", "b"), has_valence=False, has_frame_labels=True)
    manifest = Manifest("x", spec, [])
    est = make_estimator(cfg, manifest, resolve_metric(cfg, manifest), "cpu")
    assert (est.window_size, est.window_hop, est.select_metric) == (1000, 200, "frame_f1")


def test_windows_of_per_frame_labels_follow_the_label_stream():
    """With a longer second stream, windows are still cut on the stream the frame labels live on."""
    split = _seq_split(6, 3, T=(20, 30), with_frames=True)
    rng = np.random.default_rng(0)
    long_audio = [rng.normal(size=(3 * int(n), 4)).astype(np.float32) for n in split.X.modalities["visual"].lengths]
    X, lengths = pad_sequences(long_audio, dim=4)
    bundle = FeatureBundle(split.names, {**split.X.modalities, "audio": ModalityFeatures(X, lengths > 0, "t", lengths)})
    split = split.with_features(bundle)
    est = FusionEstimator("gru", num_classes=3, has_valence=False, window_size=8, window_hop=4)
    windows, plan = est._windowed(split)
    np.testing.assert_array_equal(plan.ref_lengths, split.X.modalities["visual"].lengths)
    assert windows.X.modalities["visual"].lengths.max() <= 8
