"""``fusion=<name>`` end to end through ``mer.pipeline.run`` on a tiny demo with frame-level text,
and the estimator's level handling (pooling for utterance models, one-step sequences for frame ones)."""
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from fusion.base import FUSION
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.data.frames import pad_sequences
from mer.pipeline import run
from mer.training.data import Split, concat_splits
from mer.training.estimator import FusionEstimator

pytestmark = pytest.mark.slow

TINY = ["data.demo.n_train=48", "data.demo.n_per_test=6", "train.epochs=2", "train.n_folds=3",
        "progress=false", "tracking=none", "ablate_modalities=false", "features/visual=none",
        "features.text.options.level=frame"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("fusion_zoo")


def _cfg(base, overrides=()):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.cache_dir={base / 'cache'}",
                                            f"paths.runs_dir={base / 'runs'}", *TINY, *overrides])


@pytest.mark.parametrize("name", ["attention", "mlp", "tfn", "lmf", "lf_dnn", "lstm", "gru", "tcn", "mult"])
def test_every_fusion_runs_end_to_end_with_frame_level_text(base, name):
    res = run(_cfg(base, [f"fusion={name}"]), out_dir=base / f"out-{name}")
    assert 0.0 <= res.metrics["cv_wf1"] <= 1.0
    assert np.isfinite(res.metrics["cv_mse"])
    assert res.submissions["multi"].is_file()
    import json
    feats = json.loads((res.out_dir / "results.json").read_text())["features"]
    assert feats["text"]["level"] == "frame" and feats["audio"]["level"] == "utterance"


def test_alignment_setting_reaches_the_bundle(base):
    res = run(_cfg(base, ["fusion=mult", "sequence.align=8", "sequence.method=linear"]), out_dir=base / "out-al")
    assert np.isfinite(res.metrics["cv_wf1"])
    with pytest.raises(SystemExit, match="not a frame-level stream"):
        run(_cfg(base, ["fusion=mult", "sequence.align=audio"]), out_dir=base / "out-bad")


def _frame_split(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    seqs = []
    for i in range(n):
        s = rng.normal(size=(int(rng.integers(2, 7)), 4)).astype(np.float32) * 0.3
        s[int(rng.integers(len(s))), y[i]] += 3.0             # the evidence sits in one step
        seqs.append(s if i % 9 else None)                    # some samples without text
    X, lengths = pad_sequences(seqs)
    audio = rng.normal(size=(n, 3)).astype(np.float32)
    bundle = FeatureBundle([f"s{i}" for i in range(n)],
                           {"text": ModalityFeatures(X, lengths > 0, "t", lengths),
                            "audio": ModalityFeatures(audio, np.ones(n, bool), "a")})
    return Split(bundle, y, np.zeros(n, np.float32))


def test_estimator_gives_each_model_its_level():
    split = _frame_split()
    est = FusionEstimator("attention", {}, num_classes=3, has_valence=False, epochs=1)
    pooled = est._level_split(split).X
    assert not pooled.has_sequences
    np.testing.assert_allclose(pooled.modalities["text"].X[1],
                               split.X.modalities["text"].X[1, :split.X.modalities["text"].lengths[1]].mean(0),
                               rtol=1e-6)
    seq = FusionEstimator("lstm", {}, num_classes=3, has_valence=False)._level_split(split).X
    assert seq.modalities["audio"].lengths.tolist() == [1] * 40
    assert all(FusionEstimator(n).fit for n in FUSION.names())


@pytest.mark.parametrize("name", ["lstm", "tcn", "mult", "lmf"])
def test_estimator_fits_and_predicts_frame_features_deterministically(name):
    split = _frame_split()
    kw = dict(num_classes=3, has_valence=True, epochs=3, batch_size=8, seed=3)
    a = FusionEstimator(name, {}, **kw).fit(split, eval_set=split).predict_proba(split)
    b = FusionEstimator(name, {}, **kw).fit(split, eval_set=split).predict_proba(split)
    assert a.shape == (40, 3) and np.allclose(a.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(a, b)


def test_concatenating_frame_level_splits_pads_to_the_widest():
    a, b = _frame_split(9, 0), _frame_split(9, 1)
    b = Split(FeatureBundle([f"b{n}" for n in b.names], b.X.modalities), b.y, b.v)
    both = concat_splits([a, b])
    t = both.X.modalities["text"]
    assert t.X.shape[0] == 18 and t.lengths.tolist() == a.X.modalities["text"].lengths.tolist() + \
        b.X.modalities["text"].lengths.tolist()
