"""The real extractors over a corpus of broken files mixed with good clips: no batch crashes,
every bad file is in failures.jsonl with its reason, no good sample is lost or changed."""
import numpy as np
import pytest

from feature_extractors.base import build_extractor
from mer.cache.fill import fill_entry, is_two_stage
from mer.cache.store import FeatureStore
from tests.media_faults import write_corpus

# Samples that still give a feature, per extractor, besides the good clips: a wav named .mp4 is
# still speech, an audio-only mp4 still has a voice.
STILL_FINE = {
    "librosa_prosody": {"bad_no_video", "bad_wrong_extension"},
    "fer2013_face": {"bad_no_audio", "bad_silent"},    # a face, whatever the sound
    "minilm": {"bad_truncated", "bad_random", "bad_zero_frames", "bad_no_audio", "bad_silent", "bad_nan_audio",
               "bad_one_black_frame", "bad_absurd_resolution", "bad_wrong_extension", "bad_directory",
               "bad_missing", "bad_hang_fifo"},
}
EXPECTED_REASON = {
    "librosa_prosody": {"bad_missing": "missing_file", "bad_no_media": "no_media",
                        "bad_silent": "silent_audio"},
    "fer2013_face": {"bad_missing": "missing_file", "bad_no_video": "no_video_stream",
                     "bad_one_black_frame": "no_face", "bad_no_media": "no_media"},
    "minilm": {"bad_empty": "empty_transcript", "bad_no_media": "no_transcript",
               "bad_undecodable_text": "undecodable_transcript"},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("faulty"))


@pytest.mark.parametrize("name", sorted(STILL_FINE))
def test_broken_files_fail_alone(name, corpus, tmp_path):
    import torch

    torch.set_num_threads(1)
    good, bad = corpus
    ext = build_extractor(name, {"batch_size": 4})
    if name != "minilm" and not is_two_stage(ext):
        pytest.skip(f"{name} decodes in the main process (no load stage): hangs cannot be supervised")
    store = FeatureStore(tmp_path)
    mixed = good[:2] + bad + good[2:]
    entry = store.entry("faulty", ext.identity())
    report = fill_entry(entry, ext, mixed, progress=False, workers=2, timeout_s=5, memory_mb=2048)
    feats, fails = entry.load(), entry.failures()
    assert entry.done_names() == {s.name for s in mixed}                        # nothing left undone
    want_feats = {s.name for s in good} | STILL_FINE[name]
    assert set(feats) == want_feats, (set(feats) ^ want_feats, {n: f.reason for n, f in fails.items()})
    assert set(fails) == {s.name for s in mixed} - want_feats
    for n, f in fails.items():
        assert f.reason and n in f.message, f
    for n, reason in EXPECTED_REASON[name].items():
        assert fails[n].reason == reason, (n, fails[n])
    if name != "minilm":       # refused up front as not a regular file, or stopped by the timeout
        assert fails["bad_hang_fifo"].reason in {"missing_file", "timeout"}, fails["bad_hang_fifo"]
    assert report.failed == len(fails)
    # the good clips' features are exactly what a clean run gives
    clean = store.entry("clean", ext.identity())
    fill_entry(clean, build_extractor(name, {"batch_size": 4}), good, progress=False, workers=0)
    ref = clean.load()
    for s in good:
        np.testing.assert_allclose(feats[s.name], ref[s.name], rtol=1e-5, atol=1e-5)


def test_non_utf8_transcript_fails_that_sample_only(tmp_path):
    from mer.data.recipes import prepare

    rows = [b"name,split,text,discrete", b"u1,train,a fine happy day,happy",
            b"u2,train,caf\xe9 \xff\xfe broken,sad", b"u3,train,another calm line,neutral"]
    (tmp_path / "manifest.csv").write_bytes(b"\n".join(rows) + b"\n")
    manifest = prepare("generic", tmp_path, manifest="manifest.csv", language="english")
    assert [s.name for s in manifest.samples] == ["u1", "u2", "u3"]     # nothing else lost
    ext = build_extractor("minilm")
    entry = FeatureStore(tmp_path / "cache").entry("t", ext.identity())
    fill_entry(entry, ext, manifest.samples, progress=False)
    assert set(entry.load()) == {"u1", "u3"}
    fail = entry.failures()["u2"]
    assert fail.reason == "undecodable_transcript" and "u2" in fail.message


def test_gbk_transcripts_are_read(tmp_path):
    from mer.data.recipes import prepare

    text = "name,split,text,discrete\nz1,train,我今天很开心,happy\n".encode("gbk")
    (tmp_path / "manifest.csv").write_bytes(text)
    manifest = prepare("generic", tmp_path, manifest="manifest.csv", language="chinese")
    assert manifest.samples[0].text("chinese") == "我今天很开心"
