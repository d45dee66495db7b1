"""The embedded demo corpus: MER2023 layout, determinism, media that extractors can read, atomicity."""
import csv
import os
import re
import socket
import time

import av
import cv2
import numpy as np
import pytest

from mer import demo
from mer.core.samples import MER_CLASSES
from mer.data.corrupt import mix_at_snr

N_TRAIN, N_PER_TEST = 24, 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return demo.demo_corpus(tmp_path_factory.mktemp("demo-a"), seed=0, n_train=N_TRAIN, n_per_test=N_PER_TEST,
                            progress=False, workers=1)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _audio(path):
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().ravel() for f in c.decode(audio=0)])


def _frames(path, n=8):
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return [frames[i] for i in np.linspace(0, len(frames) - 1, n).round().astype(int)]


def test_layout_headers_and_names(corpus):
    assert corpus.name == f"v{demo.DEMO_VERSION}-seed0-n{N_TRAIN}-{N_PER_TEST}"
    assert corpus.parent.name == "demo"
    all_names = []
    for split, n in (("train", N_TRAIN), ("test1", N_PER_TEST), ("test2", N_PER_TEST), ("test3", N_PER_TEST)):
        header, rows = _rows(corpus / f"{split}-label.csv")
        assert header == (["name", "discrete"] if split == "test3" else ["name", "discrete", "valence"])
        names = [r["name"] for r in rows]
        assert len(names) == n
        pattern = r"samplenew_\d{8}" if split == "test3" else r"sample_\d{8}"
        assert all(re.fullmatch(pattern, name) for name in names), names
        assert sorted(p.stem for p in (corpus / split).glob("*.mp4")) == sorted(names)
        assert {r["discrete"] for r in rows} <= set(MER_CLASSES)
        for r in rows if split != "test3" else ():
            v = float(r["valence"])
            assert -5 <= v <= 5 and v * 4 == round(v * 4)
        all_names += names
    assert len(set(all_names)) == len(all_names)
    header, rows = _rows(corpus / "transcription-engchi-polish.csv")
    assert header == ["name", "chinese", "english"]
    assert sorted(r["name"] for r in rows) == sorted(all_names)
    assert sum(bool(r["english"]) for r in rows) > 0.7 * len(rows)
    assert all(bool(r["english"]) == bool(r["chinese"]) for r in rows)
    _, train = _rows(corpus / "train-label.csv")
    assert {r["discrete"] for r in train} == set(MER_CLASSES)  # the floor keeps rare classes


def test_class_counts_keep_mer2023_imbalance_with_a_floor():
    counts = demo.class_counts(240)
    assert sum(counts.values()) == 240
    assert counts["neutral"] > counts["angry"] > counts["happy"] > counts["worried"] > counts["sad"]
    assert counts["surprise"] >= 12
    assert sum(demo.class_counts(7).values()) == 7


def test_valence_follows_class():
    plans = demo.plan_corpus(1, 240, 0)
    mean = {c: np.mean([p.valence for p in plans if p.discrete == c]) for c in MER_CLASSES}
    assert mean["happy"] > mean["surprise"] > mean["neutral"] > mean["worried"] > mean["sad"]
    assert mean["angry"] < -1.5


def test_every_mp4_has_one_h264_video_and_one_aac_audio_stream(corpus):
    for path in sorted(corpus.glob("*/*.mp4")):
        with av.open(str(path)) as c:
            kinds = sorted((s.type, s.codec_context.name) for s in c.streams)
            assert kinds == [("audio", "aac"), ("video", "h264")], path
            video = c.streams.video[0]
            assert (video.codec_context.width, video.codec_context.height) == (demo.FRAME_SIZE,) * 2
            assert 1.9 <= float(video.frames / video.average_rate) <= 3.1, path


def test_haar_finds_the_face_in_sampled_frames(corpus):
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    _, noisy = _rows(corpus / "test2-corruption.csv")
    blurriest = max(noisy, key=lambda r: int(r["blur_factor"]))["name"]
    clips = [corpus / "train" / "sample_00000001.mp4", corpus / "train" / "sample_00000002.mp4",
             corpus / "test3" / "samplenew_00000001.mp4", corpus / "test2" / f"{blurriest}.mp4"]
    found = total = 0
    for clip in clips:
        for frame in _frames(clip):
            boxes = cascade.detectMultiScale(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(30, 30))
            found += len(boxes) > 0
            total += 1
            if len(boxes):
                w = max(b[2] for b in boxes)
                assert 60 <= w <= 150, (clip, boxes)
    assert found >= 0.9 * total, f"face found in {found} of {total} frames"


def test_noisy_split_settings_are_recorded(corpus):
    header, rows = _rows(corpus / "test2-corruption.csv")
    assert header == ["name", "snr_db", "blur_factor"]
    _, labels = _rows(corpus / "test2-label.csv")
    assert [r["name"] for r in rows] == [r["name"] for r in labels]
    assert all(5 <= int(r["snr_db"]) <= 10 and int(r["blur_factor"]) in (1, 2, 4) for r in rows)


def test_same_seed_same_corpus_any_worker_count(corpus, tmp_path):
    again = demo.demo_corpus(tmp_path, seed=0, n_train=N_TRAIN, n_per_test=N_PER_TEST, progress=False,
                             workers=2)
    for name in ("train-label.csv", "test1-label.csv", "test2-label.csv", "test3-label.csv",
                 "transcription-engchi-polish.csv", "test2-corruption.csv"):
        assert (again / name).read_bytes() == (corpus / name).read_bytes(), name
    clip = "train/sample_00000003.mp4"
    np.testing.assert_array_equal(_audio(again / clip), _audio(corpus / clip))
    np.testing.assert_array_equal(_frames(again / clip, 3), _frames(corpus / clip, 3))


def test_different_seed_differs(corpus, tmp_path):
    other = demo.plan_corpus(1, N_TRAIN, N_PER_TEST)
    _, labels = _rows(corpus / "train-label.csv")
    _, text = _rows(corpus / "transcription-engchi-polish.csv")
    assert [p.discrete for p in other if p.split == "train"] != [r["discrete"] for r in labels]
    assert [p.english for p in other] != [r["english"] for r in text]
    (tmp_path / "train").mkdir()
    demo.render_clip(other[2], tmp_path)
    assert not np.array_equal(_audio(tmp_path / "train" / "sample_00000003.mp4"),
                              _audio(corpus / "train" / "sample_00000003.mp4"))


def test_second_call_returns_existing_root_without_work(corpus, monkeypatch):
    monkeypatch.setattr("mer.demo.corpus._generate", lambda *a, **k: pytest.fail("regenerated a complete corpus"))
    start = time.perf_counter()
    assert demo.demo_corpus(corpus.parents[1], seed=0, n_train=N_TRAIN, n_per_test=N_PER_TEST) == corpus
    assert time.perf_counter() - start < 0.5


def test_leftover_partial_is_not_complete_and_is_replaced(tmp_path):
    root = demo.corpus_root(tmp_path, seed=3, n_train=6, n_per_test=1)
    # What a killed run leaves: a temp folder (here even with labels and a marker) from a dead pid.
    dead_pid = 2**22 + 12345
    partial = root.parent / f".{root.name}.partial-{socket.gethostname()}-{dead_pid}-deadbeef"
    (partial / "train").mkdir(parents=True)
    (partial / "train-label.csv").write_text("name,discrete,valence\n")
    (partial / demo.COMPLETE_MARKER).write_text("{}")
    assert not demo.is_complete(root) and not root.exists()
    out = demo.demo_corpus(tmp_path, seed=3, n_train=6, n_per_test=1, progress=False, workers=1)
    assert out == root and demo.is_complete(root)
    assert len(list((root / "train").glob("*.mp4"))) == 6
    assert not partial.exists()


def test_crash_during_generation_leaves_no_corpus_and_resumes(tmp_path, monkeypatch):
    calls = []
    real_render = demo.render_clip

    def flaky(plan, out_dir):
        calls.append(plan.name)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real_render(plan, out_dir)

    monkeypatch.setattr("mer.demo.corpus.render_clip", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.demo_corpus(tmp_path, seed=4, n_train=6, n_per_test=1, progress=False, workers=1)
    root = demo.corpus_root(tmp_path, seed=4, n_train=6, n_per_test=1)
    assert not root.exists() and not demo.is_complete(demo.partial_dir(root))
    # the next call renders only what the crash left out
    out = demo.demo_corpus(tmp_path, seed=4, n_train=6, n_per_test=1, progress=False, workers=1)
    assert out == root and demo.is_complete(root)
    assert len(calls) == 3 + (6 + 3 * 1) - 2
    assert len(list(root.glob("*/*.mp4"))) == 9 and not list(root.glob("*/.*"))
    assert sorted(os.listdir(root.parent)) == [root.name]


def test_folder_without_marker_is_refused(tmp_path):
    root = demo.corpus_root(tmp_path, seed=5, n_train=6, n_per_test=1)
    (root / "train").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="delete it"):
        demo.demo_corpus(tmp_path, seed=5, n_train=6, n_per_test=1, progress=False)


def test_expressions_differ_at_peak_and_agree_at_rest():
    rest = {c: demo.render_face(c, 0.0) for c in MER_CLASSES}
    peak = {c: demo.render_face(c, 1.0).astype(np.int16) for c in MER_CLASSES}
    for c in MER_CLASSES:
        np.testing.assert_array_equal(rest[c], rest["neutral"])
        if c != "neutral":
            assert np.abs(peak[c] - peak["neutral"]).mean() > 0.3, c


def test_prosody_separates_arousal_for_one_speaker():
    speaker = demo.Speaker(f0_hz=120.0, formant_scale=1.0, rate_scale=1.0, breathiness=0.02,
                                 gain_db=0.0, room_snr_db=35.0)

    def voice(cls):
        y = demo.synth_voice(cls, 1.0, speaker, 2.5, np.random.default_rng(0)).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(y)) ** 2
        pitch = np.fft.rfftfreq(y.size, 1 / demo.SAMPLE_RATE_HZ)
        return np.sqrt(np.mean(y**2)), (pitch * spectrum).sum() / spectrum.sum()

    (rms_angry, centroid_angry), (rms_sad, centroid_sad) = voice("angry"), voice("sad")
    rms_neutral, _ = voice("neutral")
    assert rms_angry > 2 * rms_neutral and rms_neutral > 1.8 * rms_sad  # designed: +10 dB, -8 dB
    assert centroid_angry > centroid_sad


def test_mix_at_snr_scales_noise_and_never_clips():
    rng = np.random.default_rng(0)
    clean = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    noise = rng.standard_normal(16000)
    mixed = mix_at_snr(clean, noise, 5)
    residual = mixed - clean
    assert 10 * np.log10(np.mean(clean**2) / np.mean(residual**2)) == pytest.approx(5.0, abs=0.01)
    loud = mix_at_snr(np.full(100, 0.9, np.float32), np.ones(100), 0)
    assert np.abs(loud).max() <= 1.0
