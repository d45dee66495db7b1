"""track=ov options: defaults live in conf/track/ov.yaml only (a missing one is a one-line error
naming its key), and every grouper class reads its own options from the track config."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import REPO, shared_data
from mer.core.errors import UserError
from mer.ov.groupers import ExactGrouper, OfficialCacheGrouper, OfflineGrouper
from mer.tracks.ov import _OVModels, build_groupers

TRACK = OmegaConf.load(REPO / "mer" / "conf" / "track" / "ov.yaml")
CLASSES = ["neutral", "angry", "happy"]


def _models(predictor_options):
    track = OmegaConf.merge(TRACK, {"predictor_options": None})
    track.predictor_options = predictor_options
    names = [f"s{i}" for i in range(12)]
    samples = [SimpleNamespace(name=n, discrete=CLASSES[i % 3]) for i, n in enumerate(names)]
    ctx = SimpleNamespace(cfg=SimpleNamespace(track=track), train_samples=lambda: samples,
                          manifest=SimpleNamespace(label_spec=SimpleNamespace(classes=CLASSES)))
    X = np.eye(3, dtype=np.float32)[np.arange(12) % 3] + 0.01 * np.arange(12)[:, None]
    return _OVModels(ctx, X, {n: i for i, n in enumerate(names)}, {}, None, str.lower, None, 0), names


def test_yaml_holds_every_option_the_predictors_read():
    models, names = _models(TRACK.predictor_options)
    pred = models.fit_predict("probabilities", {}, names[:8], names[8:])
    assert set(pred) == set(names[8:]) and all(pred.values())


def test_a_missing_option_is_one_line_naming_its_key():
    models, names = _models({"probabilities": {"C": 1.0, "max_classes": 2}})
    with pytest.raises(UserError, match=r"^config option track\.predictor_options\.probabilities\.min_prob "
                                        r"is missing") as err:
        models.fit_predict("probabilities", {}, names[:8], names[8:])
    assert "\n" not in str(err.value)


def test_build_groupers_asks_each_grouper_class(tmp_path):
    gold = tmp_path / "ov" / "check-openset.csv"
    gold.parent.mkdir()
    gold.write_text("name,openset\n")
    cfg = OmegaConf.create({"track": TRACK})
    groupers, skipped = build_groupers(cfg, str(gold))
    assert list(groupers) == ["offline", "exact"] and isinstance(groupers["exact"], ExactGrouper)
    assert groupers["offline"].wheel_dir is None                    # auto, and no emotion-wheel/ there
    assert skipped == {"official_cache": "no official groupings (track.official_groupings)"}
    zip_path = gold.parent / "openset-synonym.zip"
    zip_path.write_bytes(b"")
    assert OfficialCacheGrouper.from_track(TRACK, gold.parent).path == zip_path   # auto: beside the gold file
    assert isinstance(OfficialCacheGrouper.from_track(TRACK, None), str)           # no gold file: skipped
    assert OfflineGrouper.from_track(OmegaConf.merge(TRACK, {"wheel_dir": None}), gold.parent).wheel_dir is None
    with pytest.raises(UserError, match=r"track\.wheel_dir is missing"):
        OfflineGrouper.from_track({"grouper": "offline"}, gold.parent)


def test_default_from_track_passes_grouper_options(tmp_path):
    from mer.ov.groupers import LLMGrouper

    track = OmegaConf.merge(TRACK, {"grouper_options": {"llm": {
        "base_url": "http://127.0.0.1:9/v1", "model": "m", "cache_path": str(tmp_path / "c.jsonl")}}})
    g = LLMGrouper.from_track(track, None)
    assert isinstance(g, LLMGrouper) and g.client.model == "m" and Path(g.cache.path) == tmp_path / "c.jsonl"


def test_offline_finds_the_wheel_beside_the_released_gold_folder():
    ov = shared_data("mer2024-ov")
    wheel = ov.parent / "emotion-wheel"
    if not wheel.is_dir():
        pytest.skip(f"no emotion-wheel folder at {wheel}")
    assert OfflineGrouper.from_track(TRACK, ov).wheel_dir == str(wheel)
