"""ASR language checks: a clip in another language than the dataset's never gets a made-up
transcript. The real Whisper tiny.en (English-only) is refused up front on Mandarin clips (espeak-ng
``cmn`` speech); a multilingual model's per-clip detection is judged by ``language_failure``."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from feature_extractors.asr import read_transcripts, transcribe_samples
from feature_extractors.asr.whisper import WhisperAsr, language_failure
from mer.core.samples import Sample
from mer.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SR = 16000
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install -y espeak-ng)")


def speak(text: str, voice: str, path: Path) -> Path:
    """``text`` spoken by espeak-ng in ``voice``, as 16 kHz mono WAV at ``path``."""
    import librosa

    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True,
                   capture_output=True)
    wav, rate = sf.read(raw, dtype="float32")
    sf.write(path, librosa.resample(wav, orig_sr=rate, target_sr=SR), SR)
    return path


def sample(name: str, audio: Path) -> Sample:
    return Sample(name=name, split="test", audio_path=str(audio))


@needs_espeak
def test_english_only_model_is_refused_on_mandarin_clips(tmp_path):
    clip = speak("我今天非常高兴见到你。", "cmn", tmp_path / "zh.wav")
    engine = WhisperAsr(language="english", spoken_language="chinese", num_threads=1)
    cache = tmp_path / "asr"
    with pytest.raises(UserError, match="English-only") as err:
        transcribe_samples([sample("clip_zh", clip)], engine, cache, progress=False)
    assert "asr.options.model_path" in str(err.value) and "\n" not in str(err.value)
    assert engine.model is None                          # refused before loading the model
    assert all(read_transcripts(f) == {} for f in cache.rglob("transcripts.jsonl"))   # nothing recorded


@needs_espeak
def test_english_clips_with_english_only_model_still_transcribe(tmp_path):
    clip = speak("Please put the red book on the table.", "en-us", tmp_path / "en.wav")
    engine = WhisperAsr(language="english", spoken_language="english", num_threads=1)
    out = transcribe_samples([sample("clip_en", clip)], engine, None, progress=False)
    assert out["clip_en"].ok and "book" in out["clip_en"].text.lower()


def test_multilingual_model_refuses_a_translation_it_cannot_do(tmp_path):
    # a folder that says it is multilingual (51 865-token vocabulary); no weights are loaded
    (tmp_path / "model.bin").write_bytes(b"")
    (tmp_path / "vocabulary.txt").write_text("t\n" * 51865)
    engine = WhisperAsr(model_path=str(tmp_path), language="english", spoken_language="chinese")
    with pytest.raises(UserError, match="does not translate"):
        engine.setup()
    ok = WhisperAsr(model_path=str(tmp_path), language="chinese", spoken_language="chinese")
    ok.check_languages()
    assert ok.expected_language == "zh"
    assert WhisperAsr(model_path=str(tmp_path), language=None).expected_language is None


def test_language_failure_judges_the_detection():
    wrong = language_failure("clip_zh", "zh", 0.97, "en", 0.5)
    assert "clip_zh" in wrong and "'zh'" in wrong and "'en'" in wrong
    unsure = language_failure("clip_mix", "en", 0.31, "en", 0.5)
    assert "0.31" in unsure and "min_language_probability" in unsure
    assert language_failure("clip_en", "en", 0.9, "en", 0.5) is None
    with pytest.raises(ValueError, match="min_language_probability"):
        WhisperAsr(min_language_probability=1.5)


def test_spoken_language_reaches_the_engine_from_the_dataset_config():
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        mer = compose("config", overrides=["data=mer2023", "asr=whisper"])
        demo = compose("config", overrides=["asr=whisper"])
    assert OmegaConf.to_container(mer.asr.options, resolve=True)["spoken_language"] == "chinese"
    assert OmegaConf.to_container(demo.asr.options, resolve=True)["spoken_language"] is None
    assert WhisperAsr(spoken_language="chinese").identity() != WhisperAsr().identity()
