"""MER-NOISE corruption on real media files: the organisers' recipe, reproducible to the byte,
recorded per clip, untouched streams copied, and a noisy copy in the release layout."""
import csv
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from conftest import REPO
from feature_extractors.audio.io import load_audio
from mer import demo
from mer.data.corrupt import (CorruptionSettings, NoiseSource, corrupt_manifest, draw_levels, mix_at_snr,
                              parse_condition, pyramid_blur)
from mer.data.recipes import prepare

SR = 16000


def _clip(rng, seconds=1.0, size=64):
    """Frames with texture (so blur shows) and a wordless voice, as the demo renders them."""
    n = int(seconds * demo.FPS)
    base = rng.integers(0, 255, (size // 4, size // 4, 3)).astype(np.uint8)
    frames = np.stack([np.kron(np.roll(base, i, axis=1), np.ones((4, 4, 1), np.uint8)) for i in range(n)])
    voice = demo.synth_voice("happy", 0.8, demo.draw_speaker(rng), seconds, rng)
    return frames, voice


def write_release(root, n_train=6, n_test=3, wav_sample=True):
    """A tiny MER2023-layout release: train/ and test1/ mp4s, labels, names, transcripts; one
    training clip also has its own ``audio/<name>.wav`` (as after MERTools' demuxing)."""
    rng = np.random.default_rng(7)
    classes = ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    names = {}
    for split, n in (("train", n_train), ("test1", n_test)):
        (root / split).mkdir(parents=True)
        names[split] = [f"sample_{split}_{i:02d}" for i in range(n)]
        for name in names[split]:
            frames, voice = _clip(rng)
            demo.write_mp4(root / split / f"{name}.mp4", frames, voice)
    if wav_sample:
        import soundfile as sf

        (root / "audio").mkdir()
        _, voice = _clip(rng)
        sf.write(root / "audio" / f"{names['train'][0]}.wav", voice * 0.3, SR, subtype="PCM_16")
    with open(root / "train-label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "discrete", "valence"])
        for i, n in enumerate(names["train"]):
            w.writerow([n, classes[i % 6], 0.5])
    (root / "test1-names.csv").write_text("name\n" + "\n".join(names["test1"]) + "\n")
    with open(root / "transcription-engchi-polish.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "chinese", "english"])
        for n in names["train"] + names["test1"]:
            w.writerow([n, "你好", "hello there"])
    return prepare("mer2023", root, language="english")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    return root, write_release(root)


def _packets(path, kind):
    with av.open(str(path)) as c:
        stream = getattr(c.streams, kind)[0]
        return [bytes(p) for p in c.demux(stream) if p.dts is not None]


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _visible_files(root):
    """Every file but the hidden lock and file-fingerprint stamps of the copy's records."""
    return {k: v for k, v in _files(root).items() if not os.path.basename(k).startswith(".")}


def _copy_files(root):
    """The copy as a dataset: every file but its records (meta.json with its creation time,
    corruption.jsonl in the order clips finished, hidden locks and stamps)."""
    return {k: v for k, v in _visible_files(root).items() if k not in ("meta.json", "corruption.jsonl")}


# --- conditions and signal operations ----------------------------------------------------------


def test_condition_names():
    assert parse_condition("mixed").drawn and parse_condition("mixed").touches("audio")
    c = parse_condition("snr7")
    assert (c.snr_db, c.touches("audio"), c.touches("visual")) == (7, True, False)
    c = parse_condition("blur4")
    assert (c.blur_factor, c.touches("audio"), c.touches("visual")) == (4, False, True)
    c = parse_condition("snr5_blur2")
    assert (c.snr_db, c.blur_factor) == (5, 2)
    assert not parse_condition("blur1").touches("visual")
    for bad in ("noisy", "blur3", "snr", "snr7blur4", ""):
        with pytest.raises(ValueError, match="condition"):
            parse_condition(bad)


def test_mix_at_snr_hits_the_snr_and_scales_instead_of_clipping():
    rng = np.random.default_rng(0)
    clean, noise = 0.1 * rng.standard_normal(SR), rng.standard_normal(SR)
    for snr in (5, 10):
        mixed = mix_at_snr(clean, noise, snr)
        got = 20 * np.log10(np.sqrt(np.mean(clean ** 2)) / np.sqrt(np.mean((mixed - clean) ** 2)))
        assert got == pytest.approx(snr, abs=1e-3)
    loud = mix_at_snr(np.full(100, 0.95), rng.standard_normal(100), 5)
    assert np.abs(loud).max() == pytest.approx(0.99, abs=1e-6)      # whole mix scaled down, not clipped
    assert len(np.unique(np.round(loud, 6))) > 50


def test_pyramid_blur_keeps_size_and_removes_detail():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (101, 75, 3), dtype=np.uint8)       # odd sizes round-trip too
    assert np.array_equal(pyramid_blur(frame, 1), frame)
    b2, b4 = pyramid_blur(frame, 2), pyramid_blur(frame, 4)
    assert b2.shape == b4.shape == frame.shape
    detail = [np.abs(np.diff(x.astype(float), axis=1)).mean() for x in (frame, b2, b4)]
    assert detail[0] > detail[1] > detail[2]


def test_settings_tag_names_non_default_settings():
    assert CorruptionSettings().tag("mixed") == "mixed"
    assert CorruptionSettings().tag("clean") == "clean"
    assert CorruptionSettings(seed=1).tag("mixed").startswith("mixed-")
    assert CorruptionSettings(seed=1).tag("mixed") != CorruptionSettings(seed=2).tag("mixed")
    assert CorruptionSettings(babble_talkers=2).tag("blur4") == "blur4"       # blur uses no noise
    with pytest.raises(ValueError, match="noise_dir"):
        CorruptionSettings(noise_dir="/no/such/folder")


def test_draws_follow_the_official_choices_and_the_seed():
    s = CorruptionSettings()
    draws = [draw_levels(s, parse_condition("mixed"), f"clip{i}") for i in range(300)]
    assert {d[0] for d in draws} == set(range(5, 11)) and {d[1] for d in draws} == {1, 2, 4}
    assert draws == [draw_levels(s, parse_condition("mixed"), f"clip{i}") for i in range(300)]
    assert draws != [draw_levels(CorruptionSettings(seed=1), parse_condition("mixed"), f"clip{i}")
                     for i in range(300)]
    assert draw_levels(s, parse_condition("snr7"), "clip0") == (7, 1)


# --- a dataset ------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_copies_with_recorded_draws(release, tmp_path):
    root, manifest = release
    a, copy_a = corrupt_manifest(manifest, "mixed", CorruptionSettings(), tmp_path / "a", workers=0,
                                 progress=False)
    b, _ = corrupt_manifest(manifest, "mixed", CorruptionSettings(), tmp_path / "b", workers=2, progress=False)
    files_a, files_b = _copy_files(tmp_path / "a"), _copy_files(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    media = [k for k in files_a if k.endswith((".mp4", ".wav"))]
    assert len(media) == 10                                       # 9 videos + the wav
    assert all(files_a[k] == files_b[k] for k in files_a)         # byte-identical, any worker count
    c, _ = corrupt_manifest(manifest, "mixed", CorruptionSettings(seed=1), tmp_path / "c", workers=0,
                            progress=False)
    name = manifest.split("test1")[0].name
    assert load_audio(a[name]).tolist() != load_audio(c[name]).tolist()
    # every clip's draw beside it and per split, and the samples carry it
    for s in manifest.samples:
        rec = copy_a.records[s.name]
        assert rec["snr_db"] in range(5, 11) and rec["blur_factor"] in (1, 2, 4)
        assert (rec["snr_db"], rec["blur_factor"]) == draw_levels(CorruptionSettings(), parse_condition("mixed"),
                                                                  s.name)
        sidecar = os.path.splitext(a[s.name].video_path)[0] + ".corruption.json"
        assert json.loads(open(sidecar).read())["snr_db"] == rec["snr_db"]
        assert s.name not in rec["noise"] and len(rec["noise"]) >= 4       # babble of 4 other utterances
        assert a[s.name].meta["corruption"]["blur_factor"] == rec["blur_factor"]
    with open(tmp_path / "a" / "test1-corruption.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == sorted(s.name for s in manifest.split("test1"))
    assert all(int(r["snr_db"]) == copy_a.records[r["name"]]["snr_db"] for r in table)


def test_fixed_snr_is_met_and_the_video_is_copied(release, tmp_path):
    root, manifest = release
    noisy, copy = corrupt_manifest(manifest, "snr6", CorruptionSettings(), tmp_path / "snr6", workers=0,
                                   progress=False)
    wav_sample = next(s for s in manifest.samples if s.audio_path)
    clean, mixed = load_audio(wav_sample.audio_path), load_audio(noisy[wav_sample.name].audio_path)
    snr = 20 * np.log10(np.sqrt(np.mean(clean ** 2)) / np.sqrt(np.mean((mixed - clean) ** 2)))
    assert snr == pytest.approx(6.0, abs=0.05)                   # 16-bit PCM: exact up to quantisation
    # that clip's video carries the same noisy audio as its wav
    assert np.corrcoef(load_audio(noisy[wav_sample.name].video_path)[:SR // 2], mixed[:SR // 2])[0, 1] > 0.95
    for s in manifest.samples:
        assert _packets(noisy[s.name].video_path, "video") == _packets(s.video_path, "video")
        assert _packets(noisy[s.name].video_path, "audio") != _packets(s.video_path, "audio")


def test_noise_of_a_clip_is_the_same_segment_at_every_snr(release, tmp_path):
    _, manifest = release
    s = CorruptionSettings()
    _, c5 = corrupt_manifest(manifest, "snr5", s, tmp_path / "5", workers=0, progress=False)
    _, c9 = corrupt_manifest(manifest, "snr9", s, tmp_path / "9", workers=0, progress=False)
    assert all(c5.records[n]["noise"] == c9.records[n]["noise"] for n in c5.records)


def test_blur_leaves_the_audio_bytes_and_blurs_every_frame(release, tmp_path):
    from feature_extractors.visual.video import read_frames

    _, manifest = release
    noisy, _ = corrupt_manifest(manifest, "blur4", CorruptionSettings(), tmp_path / "blur4", workers=0,
                                progress=False)
    s = manifest.split("train")[1]
    assert _packets(noisy[s.name].video_path, "audio") == _packets(s.video_path, "audio")
    clean = np.stack(read_frames(s.video_path, 4)[0]).astype(float)
    blurred = np.stack(read_frames(noisy[s.name].video_path, 4)[0]).astype(float)
    assert clean.shape == blurred.shape
    detail = lambda x: np.abs(np.diff(x, axis=2)).mean()       # noqa: E731
    assert detail(blurred) < 0.6 * detail(clean)


def test_a_noise_folder_replaces_babble(release, tmp_path):
    import soundfile as sf

    _, manifest = release
    musan = tmp_path / "musan" / "speech" / "librivox"
    musan.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(3):
        sf.write(musan / f"speech-{i}.wav", 0.1 * rng.standard_normal(SR // 2), SR)
    settings = CorruptionSettings(noise_dir=str(tmp_path / "musan"))
    assert NoiseSource.from_settings(settings).kind == "folder"
    _, copy = corrupt_manifest(manifest, "snr5", settings, tmp_path / "out", names=[manifest.samples[0].name],
                               workers=0, progress=False)
    used = copy.records[manifest.samples[0].name]["noise"]
    assert used and all(u.startswith("speech/librivox/speech-") for u in used)
    assert settings.tag("snr5") != "snr5"                         # other noise, other cache condition


def test_other_settings_never_mix_into_a_copy(release, tmp_path):
    _, manifest = release
    corrupt_manifest(manifest, "mixed", CorruptionSettings(), tmp_path / "x", names=[manifest.samples[1].name],
                     workers=0, progress=False)
    with pytest.raises(RuntimeError, match="other settings"):
        corrupt_manifest(manifest, "mixed", CorruptionSettings(seed=5), tmp_path / "x", workers=0, progress=False)


def test_cli_writes_a_noisy_release_that_reads_like_the_original(release, tmp_path):
    root, manifest = release
    out = tmp_path / "noisy"
    cmd = [sys.executable, "-m", "mer.corrupt", "data=mer2023", f"data.root={root}", f"out_dir={out}",
           "condition=mixed", "progress=false", "workers=0", f"paths.runs_dir={tmp_path / 'runs'}",
           f"paths.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "9 clips of train, test1 corrupted (mixed)" in proc.stdout
    copy = prepare("mer2023", out, language="english")
    assert [(s.name, s.split, s.discrete) for s in copy.samples] == \
        [(s.name, s.split, s.discrete) for s in manifest.samples]
    assert all(s.video_path and s.video_path.startswith(str(out)) for s in copy.samples)
    assert {"train-label.csv", "test1-names.csv", "transcription-engchi-polish.csv", "train-corruption.csv",
            "test1-corruption.csv", "corruption.json"} <= {p.name for p in out.iterdir()}
    # the same command again changes nothing (every clip is done)
    before = _visible_files(out)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and _visible_files(out) == before


def test_split_table_keeps_clips_of_earlier_calls(release, tmp_path):
    _, manifest = release
    names = [s.name for s in manifest.split("train")]
    for part in (names[:2], names[2:]):
        corrupt_manifest(manifest, "blur2", CorruptionSettings(), tmp_path / "t", names=part, workers=0,
                         progress=False)
    with open(tmp_path / "t" / "train-corruption.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == sorted(names)


def test_an_avi_stays_an_avi(tmp_path):
    rng = np.random.default_rng(2)
    frames, voice = _clip(rng)
    src = tmp_path / "rel" / "train" / "clip.avi"
    src.parent.mkdir(parents=True)
    with av.open(str(src), "w", format="avi") as out:
        v = out.add_stream("mpeg4", rate=demo.FPS)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        a = out.add_stream("aac", rate=SR, layout="mono")
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            out.mux(v.encode(vf))
        out.mux(v.encode())
        for start in range(0, voice.size, 1024):
            af = av.AudioFrame.from_ndarray(voice[None, start:start + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = SR, start
            out.mux(a.encode(af))
        out.mux(a.encode())
    import soundfile as sf

    from mer.core.samples import LabelSpec, Sample
    from mer.data.manifest import Manifest

    (tmp_path / "speech").mkdir()
    sf.write(tmp_path / "speech" / "talk.wav", 0.1 * rng.standard_normal(SR), SR)
    m = Manifest("t", LabelSpec(("a", "b")), [Sample("clip", "train", video_path=str(src))], root=str(tmp_path / "rel"))
    noisy, copy = corrupt_manifest(m, "snr5_blur4", CorruptionSettings(noise_dir=str(tmp_path / "speech")),
                                   tmp_path / "out", workers=0, progress=False)
    assert copy.failed == {} and noisy["clip"].video_path.endswith("train/clip.avi")
    with av.open(noisy["clip"].video_path) as c:
        assert c.format.name == "avi" and len([f for f in c.decode(video=0)]) == len(frames)


def test_a_broken_clip_is_recorded_and_the_others_are_corrupted(tmp_path):
    root = tmp_path / "rel"
    manifest = write_release(root, n_train=6, n_test=2, wav_sample=False)
    bad = manifest.split("train")[1]
    data = open(bad.video_path, "rb").read()
    open(bad.video_path, "wb").write(data[: len(data) // 3])          # truncated mid-stream
    empty = manifest.split("test1")[0]
    open(empty.video_path, "wb").close()                               # zero bytes
    noisy, copy = corrupt_manifest(manifest, "mixed", CorruptionSettings(), tmp_path / "out", workers=0,
                                   progress=False)
    assert empty.name in copy.failed and noisy[empty.name].video_path is None
    for s in manifest.samples:
        if s.name in copy.failed:
            assert copy.failed[s.name] and s.name in {bad.name, empty.name}
            continue
        assert os.path.getsize(noisy[s.name].video_path) > 0
        assert load_audio(noisy[s.name].video_path).size > 0
    with open(tmp_path / "out" / "test1-corruption.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert rows[empty.name]["note"]                                   # the reason is in the table too
    # a rerun retries nothing that worked and gives the same records
    _, again = corrupt_manifest(manifest, "mixed", CorruptionSettings(), tmp_path / "out", workers=0,
                                progress=False)
    assert {n: r for n, r in again.records.items() if n not in copy.failed} == \
        {n: r for n, r in copy.records.items() if n not in copy.failed}
