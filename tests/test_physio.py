"""Physiological signals as a frame-level modality (the MER-PS recipe): signal files named by the
generic manifest, windowed statistics with their times, bad files failing only their sample, and
a run on signals alone."""
import json

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from feature_extractors.base import build_extractor
from feature_extractors.physio.signal_stats import read_signal, window_statistics
from mer.core.failures import MediaError
from mer.core.samples import Sample
from mer.core.timebase import times_of
from mer.data.prepare_generic import prepare_generic


def test_windows_give_mean_std_extremes_and_slope_per_channel(tmp_path):
    t = np.arange(0, 6, 0.25)                        # 4 Hz, 6 s
    path = tmp_path / "s.csv"
    pd.DataFrame({"time": t, "eda": 2.0 + 0.5 * t, "hr": np.where(t < 3, 60.0, 90.0)}).to_csv(path, index=False)
    values, times, names = read_signal(str(path), None, ())
    assert names == ["eda", "hr"] and values.shape == (24, 2)
    rows, centres = window_statistics(values, times, 2.0, 1.0)
    assert rows.shape == (4, 10) and np.allclose(centres, [1, 2, 3, 4])
    eda = rows[:, :5]
    assert np.allclose(eda[:, 4], 0.5)                          # slope, units per second
    assert np.allclose(eda[0, 0], 2.0 + 0.5 * np.mean(t[t < 2]))
    assert eda[0, 2] == pytest.approx(2.0) and eda[0, 3] == pytest.approx(2.0 + 0.5 * 1.75)
    hr = rows[:, 5:]
    assert hr[0, 1] == 0 and hr[2, 1] > 0                       # the step falls in the third window


def test_gaps_are_interpolated_and_arrays_take_a_rate(tmp_path):
    x = np.linspace(0, 1, 40)
    x[5:8] = np.nan
    np.save(tmp_path / "a.npy", x)
    values, times, _ = read_signal(str(tmp_path / "a.npy"), 10.0, ())
    assert np.isfinite(values).all() and values[6, 0] == pytest.approx(6 / 39)
    assert times[-1] == pytest.approx(3.9)
    with pytest.raises(ValueError, match="rate_hz"):
        read_signal(str(tmp_path / "a.npy"), None, ())


def _sample(name, path):
    return Sample(name, "train", meta={"signals": {"physio": str(path)}})


def test_a_bad_file_fails_its_sample_with_the_reason(tmp_path):
    ext = build_extractor("physio_stats", {"rate_hz": 8.0})
    good = tmp_path / "good.npy"
    np.save(good, np.random.default_rng(0).normal(size=(80, 3)))
    (tmp_path / "garbage.npy").write_bytes(b"not an array")
    np.save(tmp_path / "short.npy", np.zeros((4, 3)))
    np.save(tmp_path / "empty_channel.npy", np.full((80, 2), np.nan))
    out = ext.extract_batch([_sample("ok", good), _sample("bad", tmp_path / "garbage.npy"),
                             _sample("brief", tmp_path / "short.npy"), _sample("blank", tmp_path / "empty_channel.npy"),
                             Sample("none", "train")])
    assert out[0].shape == (8, 15) and np.allclose(times_of(out[0]), np.arange(1, 9))   # 10 s: 8 whole windows
    assert [getattr(r, "reason", None) for r in out[1:]] == ["decode_error", "too_short", "decode_error", "no_media"]
    assert all(n in r.message for n, r in zip(["bad", "brief", "blank", "none"], out[1:]))
    with pytest.raises(MediaError, match="does not exist"):
        ext.load(_sample("gone", tmp_path / "missing.npy"))


def _corpus(root, n=48):
    """Signals whose level and trend follow the class: calm (low, flat), aroused (high, rising),
    tired (low, falling)."""
    rng = np.random.default_rng(0)
    classes = ["calm", "aroused", "tired"]
    rows = []
    (root / "signals").mkdir(parents=True)
    for i in range(n):
        c = classes[i % 3]
        t = np.arange(0, 8, 0.125)
        level, trend = {"calm": (1.0, 0.0), "aroused": (3.0, 0.3), "tired": (1.2, -0.15)}[c]
        eda = level + trend * t + rng.normal(scale=0.3, size=len(t))
        bvp = np.sin(2 * np.pi * (1.0 + level / 3) * t) + rng.normal(scale=0.2, size=len(t))
        pd.DataFrame({"time": t, "eda": eda, "bvp": bvp}).to_csv(root / "signals" / f"s{i:03d}.csv", index=False)
        rows.append({"name": f"s{i:03d}", "split": "train" if i < 42 else "test", "signal": f"signals/s{i:03d}.csv",
                     "discrete": c if i < 42 else ""})
    (root / "signals" / "s007.csv").write_text("time,eda\n0,oops\n")        # one corrupt file
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return classes


def test_generic_manifest_names_signal_files(tmp_path):
    _corpus(tmp_path / "ps")
    m = prepare_generic(tmp_path / "ps", manifest="manifest.csv", classes=["calm", "aroused", "tired"])
    s = m["s001"]
    assert s.meta["signals"]["physio"] == str(tmp_path / "ps" / "signals" / "s001.csv")
    assert "signal" not in s.meta and "physio" in m.modalities_present()


@pytest.mark.slow
def test_a_run_on_physiological_signals_alone(tmp_path):
    from mer.pipeline import run

    root = tmp_path / "ps"
    classes = _corpus(root)
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"paths.runs_dir={tmp_path / 'runs'}", "progress=false", "tracking=none", "data=generic",
            f"data.root={root}", "data.options.manifest=manifest.csv", f"data.options.classes=[{','.join(classes)}]",
            "features/text=none", "features/audio=none", "features/visual=none", "features/physio=stats",
            "train.n_folds=3", "ablate_modalities=false"])
    res = run(cfg, out_dir=tmp_path / "out")
    assert res.metrics["cv_wf1"] > 0.8, res.metrics["cv_wf1"]
    failures = [json.loads(line) for line in (res.out_dir / "failures.jsonl").read_text().splitlines()]
    assert [(f["stream"], f["name"], f["reason"]) for f in failures] == [("physio", "s007", "decode_error")]
    assert "channel eda has no finite value" in failures[0]["message"]
    preds = pd.read_csv(res.submissions["multi"])
    assert len(preds) == 6 and set(preds.discrete) <= set(classes)
