"""Cached transcripts follow the content of the media they were made from: a replaced recording is
transcribed again (and its text feature re-extracted), a moved or copied dataset folder nothing,
and transcripts cached before fingerprints were recorded are adopted, not redone."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from feature_extractors.asr import apply_asr, read_transcripts, transcribe_samples, transcript_dir
from feature_extractors.asr.wer import word_errors
from feature_extractors.asr.whisper import WhisperAsr
from mer.cache.fill import fill_entry
from mer.cache.store import FeatureStore
from mer.core.samples import LabelSpec, Sample
from mer.data.manifest import Manifest
from tests.test_asr import SENTENCES, SR, needs_espeak, speak
from tests.test_cache_integrity import WordVector as TextBytes   # reads the transcript it embeds


class CountingWhisper(WhisperAsr):
    """The real engine, recording which clips it actually decodes."""

    decoded: list[str] = []

    def transcribe(self, name, audio):
        type(self).decoded.append(name)
        return super().transcribe(name, audio)


@pytest.fixture(scope="module")
def engine() -> CountingWhisper:
    asr = CountingWhisper(num_threads=1)
    asr.setup()
    return asr


def _clips(folder, names) -> list[Sample]:
    return [Sample(n, "train", audio_path=str(folder / f"{n}.wav")) for n in names]


def _tones(folder, n=3) -> list[Sample]:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(SR) / SR
    for i in range(n):
        sf.write(folder / f"tone{i}.wav", (0.2 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32), SR)
    return _clips(folder, [f"tone{i}" for i in range(n)])


@needs_espeak
def test_a_replaced_recording_is_transcribed_again_and_its_text_feature_follows(engine, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    speak(SENTENCES[0], data / "a.wav")
    speak(SENTENCES[1], data / "b.wav")
    samples = _clips(data, ["a", "b"])
    cache = tmp_path / "cache" / "ds" / "clean" / "asr"
    ext = TextBytes()
    entry = FeatureStore(tmp_path / "cache" / "features").entry("ds", ext.identity())

    CountingWhisper.decoded = []
    first = transcribe_samples(samples, engine, cache, progress=False)
    assert CountingWhisper.decoded == ["a", "b"]
    assert word_errors(SENTENCES[1], first["b"].text).word_accuracy >= 0.7, first["b"].text
    rep = fill_entry(entry, ext, apply_asr(samples, first, "english", "asr"), progress=False)
    assert (rep.extracted, rep.failed) == (2, 0)
    assert transcribe_samples(samples, engine, cache, progress=False) == first   # unchanged: all reused
    assert CountingWhisper.decoded == ["a", "b"]

    speak(SENTENCES[3], data / "b.wav")           # another recording under the same name
    CountingWhisper.decoded = []
    second = transcribe_samples(samples, engine, cache, progress=False)
    assert CountingWhisper.decoded == ["b"]
    assert second["a"] == first["a"]
    assert word_errors(SENTENCES[3], second["b"].text).word_accuracy >= 0.7, second["b"].text
    assert word_errors(SENTENCES[1], second["b"].text).word_accuracy < 0.5, second["b"].text
    assert read_transcripts(transcript_dir(cache, engine) / "transcripts.jsonl")["b"] == second["b"]

    merged = apply_asr(samples, second, "english", "asr")
    rep = fill_entry(entry, ext, merged, progress=False)
    assert (rep.extracted, rep.stale, rep.cached) == (1, 1, 1)
    X, present = entry.load_matrix(["a", "b"])
    assert present.all()
    assert np.array_equal(X, np.stack(ext.extract_batch(merged)))   # b's row is the new sentence's

    CountingWhisper.decoded = []
    assert transcribe_samples(samples, engine, cache, progress=False) == second
    assert CountingWhisper.decoded == []


def test_a_moved_or_copied_dataset_folder_transcribes_nothing(engine, tmp_path):
    samples = _tones(tmp_path / "data")
    cache = tmp_path / "asr"
    CountingWhisper.decoded = []
    first = transcribe_samples(samples, engine, cache, progress=False)
    assert len(CountingWhisper.decoded) == 3
    shutil.move(tmp_path / "data", tmp_path / "moved")
    moved = _clips(tmp_path / "moved", [s.name for s in samples])
    assert transcribe_samples(moved, engine, cache, progress=False) == first
    shutil.copytree(tmp_path / "moved", tmp_path / "copy")         # new inodes and mtimes
    copied = _clips(tmp_path / "copy", [s.name for s in samples])
    assert transcribe_samples(copied, engine, cache, progress=False) == first
    assert len(CountingWhisper.decoded) == 3
    # the missing originals, by contrast, are a change
    assert {t.failure_reason for t in transcribe_samples(samples, engine, cache, progress=False).values()} \
        == {"missing_file"}


def test_the_pipeline_keeps_transcripts_of_a_moved_dataset_and_redoes_a_replaced_clip(tmp_path):
    samples = _tones(tmp_path / "data", n=2)
    cfg = OmegaConf.create({"asr": {"name": "whisper", "options": {"num_threads": 1}, "merge": {"policy": "asr"}},
                            "data": {"language": "english"}, "paths": {"cache_dir": str(tmp_path / "cache")},
                            "progress": False})
    from mer.features import apply_asr_config

    def run(folder):
        manifest = Manifest("ds", LabelSpec(("a", "b")), _clips(folder, [s.name for s in samples]))
        return apply_asr_config(cfg, manifest, "ds")

    _, tag = run(tmp_path / "data")
    [lines] = list((tmp_path / "cache" / "features" / "ds" / "clean" / "asr").glob("*/transcripts.jsonl"))
    assert tag and len(lines.read_text().splitlines()) == 2
    shutil.move(tmp_path / "data", tmp_path / "moved")
    assert run(tmp_path / "moved")[1] == tag
    assert len(lines.read_text().splitlines()) == 2                 # nothing transcribed again
    sf.write(tmp_path / "moved" / "tone1.wav", np.zeros(SR // 2, np.float32), SR)
    merged, _ = run(tmp_path / "moved")
    assert [json.loads(x)["name"] for x in lines.read_text().splitlines()] == ["tone0", "tone1", "tone1"]
    assert merged.samples[1].text("english") == ""                  # silence now


def test_transcripts_cached_without_a_fingerprint_are_adopted_then_checked(engine, tmp_path):
    samples = _tones(tmp_path / "data", n=2)
    cache = tmp_path / "asr"
    CountingWhisper.decoded = []
    first = transcribe_samples(samples, engine, cache, progress=False)
    path = transcript_dir(cache, engine) / "transcripts.jsonl"
    old = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(len(d.pop("media_fingerprint")) == 32 and d.pop("crc") for d in old)
    path.write_text("".join(json.dumps(d) + "\n" for d in old))     # as written before fingerprints
    assert transcribe_samples(samples, engine, cache, progress=False) == first
    assert len(CountingWhisper.decoded) == 2                         # trusted, not redone
    adopted = [json.loads(x) for x in path.read_text().splitlines()]
    assert [d["name"] for d in adopted] == ["tone0", "tone1", "tone0", "tone1"]
    assert all(d.get("media_fingerprint") for d in adopted[2:])
    sf.write(tmp_path / "data" / "tone0.wav", np.zeros(SR, np.float32), SR)   # now a change is seen
    out = transcribe_samples(samples, engine, cache, progress=False)
    assert CountingWhisper.decoded[2:] == ["tone0"] and out["tone0"].text == "" and out["tone1"] == first["tone1"]
