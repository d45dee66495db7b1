"""HiCMAE: mer's audio-visual encoder and audio front end against outputs of the official code,
the full-size key list, checkpoints, and the ``hicmae`` extractor on a face track with its audio and
on the demo corpus.

The golden files in ``tests/golden/hicmae`` were made from the official repository
(``sunlicai/HiCMAE`` at ``cdd28d4``: ``modeling_finetune_av.py``) and torchaudio 2.11.1's
``compliance/kaldi.py`` (the pure-torch file from the wheel, run alone; torchaudio itself does not
install here), in a scratch environment outside the repository (torch 2.13.0+cpu, timm 0.4.12,
einops 0.6.1; timm's import of torchvision answered by an empty stand-in). No official code is in
the repository.

* ``hicmae_tiny_a_finetune.pth``: ``AudioVisionTransformer`` with the ``avit_*`` constructors' fixed
  kwargs (patch 16 for video and audio, mlp_ratio 4, q/v biases, LayerNorm eps 1e-6) and
  ``run_class_finetuning_av.py``'s (``all_frames=16, tubelet_size=2, drop_path_rate=0.1,
  init_scale=0.001, attn_type='joint'``), with ``img_size=64, embed_dim=64, num_heads=4,
  img_size_audio=(64, 32), embed_dim_audio=64, num_heads_audio=4, fusion_num_heads=4, depth=2,
  depth_audio=2, fusion_depth=2, num_classes=6``; parameters from ``torch.Generator().manual_seed(1)``
  (``N(0, 0.02)`` matrices, ``N(0, 0.1)`` vectors, 1 added to norm weights); saved as
  ``utils.save_model`` does, ``args`` with the official names (``args.model`` the released name,
  so head counts are given to mer).
* ``hicmae_tiny_b_finetune.pth``: widths 64 (video, 4 heads) and 48 (audio, 3 heads), fusion heads
  4, ``img_size=48, img_size_audio=(48, 32), depth=1, depth_audio=3, fusion_depth=1, num_classes=7``,
  seed 2: the fusion's cross-attention between two widths.
* ``hicmae_tiny_pretrain.pth``: ``modeling_pretrain_av.PretrainAudioVisionTransformer`` with a's
  encoder sizes (``decoder_embed_dim=16, decoder_depth=3`` for both decoders,
  ``return_intermediate_features=(0, 1)``), seed 3.
* ``hicmae_tiny_golden.pt``: for a and b the inputs (video ``[2, 3, 16, S, S]`` and audio
  ``[2, 1, T, F]``, ``N(0, 1)`` from seed 10) and ``forward_features`` and the logits in fp32 and fp64;
  ``fbank``: a 16 kHz int16 speech clip (espeak-ng, "I can't believe you did that again, it is
  wonderful news", resampled with librosa) and torchaudio's ``kaldi.fbank`` of it as
  ``kinetics_av.py`` calls it (``x / 32768``, mean removed, ``htk_compat=True, use_energy=False,
  window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10``), float32;
  ``pretrain_as_finetune``: a's fine-tune model after the pretraining file was loaded as
  ``run_class_finetuning_av.py --finetune`` does (no prefix rule, ``strict=False``), its features
  on a's inputs.
* ``hicmae_full_keys.json``: keys, shapes and parameter count of the full-size
  ``avit_dim512_patch16_160_a256`` with the fine-tuning scripts' depths (10, 10, 2), 6 classes.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

from conftest import REPO
from feature_extractors.audio.kaldi_fbank import kaldi_fbank, mel_banks
from feature_extractors.base import EXTRACTORS, build_extractor
from feature_extractors.visual.lgi_former.checkpoints import read_checkpoint
from feature_extractors.visual.avit import AudioVisionTransformer, AViTConfig, infer_config, load_hicmae, save_hicmae
from feature_extractors.visual.hicmae import AUDIO_MEAN, AUDIO_STD, HiCMAEExtractor, audio_segment, spectrogram
from feature_extractors.visual.mae_dfer import official_view_indices
from feature_extractors.weights import WEIGHT_TAGS
from mer.core.failures import ExtractionFailure
from mer.core.samples import Sample

GOLDEN = REPO / "tests" / "golden" / "hicmae"
TINY_A, TINY_B = str(GOLDEN / "hicmae_tiny_a_finetune.pth"), str(GOLDEN / "hicmae_tiny_b_finetune.pth")
HEADS = {"a": 4, "b": (4, 3, 4)}


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN / "hicmae_tiny_golden.pt", weights_only=True)


@pytest.mark.parametrize("name", ["a", "b"])
def test_outputs_equal_the_official_code_in_fp32_and_fp64(golden, name):
    model, report = load_hicmae(str(GOLDEN / f"hicmae_tiny_{name}_finetune.pth"), num_heads=HEADS[name])
    assert report.kind == "finetune" and report.missing == [] and report.unused == []
    g = golden[name]
    with torch.no_grad():
        feats = model.forward_features(g["video"], g["audio"])
        assert (feats - g["fp32"]["features"]).abs().max() <= 1e-5
        assert (model.head(feats) - g["fp32"]["logits"]).abs().max() <= 1e-5
        model = model.double()
        feats = model.forward_features(g["video"].double(), g["audio"].double())
        assert (feats - g["fp64"]["features"]).abs().max() <= 1e-9
        assert (model.head(feats) - g["fp64"]["logits"]).abs().max() <= 1e-9


def test_sizes_come_from_the_checkpoint_and_its_args():
    _, report = load_hicmae(TINY_B, num_heads=(4, 3, 4))
    c = report.config
    assert (c.embed_dim, c.embed_dim_audio, c.depth, c.depth_audio, c.fusion_depth, c.audio_size, c.num_classes) == \
        (64, 48, 1, 3, 1, (48, 32), 7)
    assert c.audio_grid == (3, 2) and c.feature_dim == 2 * (64 + 48)
    assert load_hicmae(TINY_A)[1].heads_source == "args.model=avit_dim512_patch16_160_a256"
    sd = read_checkpoint(TINY_A)[0]
    sd["encoder.blocks.0.gamma_1"] = torch.ones(64)
    with pytest.raises(ValueError, match="layer scale"):
        infer_config(sd, {})
    with pytest.raises(ValueError, match="not a HiCMAE"):
        infer_config({"blocks.0.norm1.weight": torch.ones(4)}, {})


def test_a_pretraining_file_loads_as_the_official_finetune_does(golden):
    model, report = load_hicmae(str(GOLDEN / "hicmae_tiny_pretrain.pth"), num_heads=4)
    assert report.kind == "pretrain"
    assert sorted(report.missing) == ["audio_layer_weights", "fc_norm.bias", "fc_norm.weight", "video_layer_weights"]
    assert "mask_token_audio" in report.unused and any(k.startswith("decoder_audio.") for k in report.unused)
    with torch.no_grad():
        feats = model.forward_features(golden["a"]["video"], golden["a"]["audio"])
    assert (feats - golden["pretrain_as_finetune"]["features"]).abs().max() <= 1e-5


def test_full_size_keys_and_parameters_match_the_official_model():
    full = json.loads((GOLDEN / "hicmae_full_keys.json").read_text())["finetune_cremad"]
    model = AudioVisionTransformer(AViTConfig(num_classes=6))
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == full["keys"]
    assert sum(p.numel() for p in model.parameters()) == full["parameters"] == 80_792_602


def test_saved_checkpoints_load_back(tmp_path, golden):
    model, _ = load_hicmae(TINY_B, num_heads=(4, 3, 4))
    save_hicmae(model, str(tmp_path / "b.pth"))
    again, report = load_hicmae(str(tmp_path / "b.pth"))          # the heads are in its args now
    assert report.config == model.cfg
    with torch.no_grad():
        assert torch.equal(again.forward_features(golden["b"]["video"], golden["b"]["audio"]),
                           model.forward_features(golden["b"]["video"], golden["b"]["audio"]))


def test_the_filterbank_equals_torchaudios_kaldi_fbank_on_speech(golden):
    pcm, want = golden["fbank"]["pcm16"].numpy(), golden["fbank"]["fbank"].numpy()
    wav = pcm.astype(np.float32) / 32768.0
    got = kaldi_fbank(wav - wav.mean(), 16000, 128)
    assert got.shape == want.shape == (1 + (len(wav) - 400) // 160, 128)
    # torchaudio computes in float32: its rounding shows only where the energies are tiny
    assert np.abs(got - want).max() < 5e-4 and np.abs(got - want).mean() < 2e-5
    loud = want > -10
    assert np.abs(got - want)[loud].max() < 1e-4
    assert mel_banks(128, 512, 16000).shape == (128, 257) and kaldi_fbank(wav[:399]).shape == (0, 128)


def test_spectrogram_pads_cuts_and_normalises_as_the_official_loader():
    wav = np.random.default_rng(0).normal(scale=0.1, size=16000).astype(np.float32)     # 1 s: 98 frames
    spec = spectrogram(wav, 256, 128)
    assert spec.shape == (256, 128)
    assert np.allclose(spec[98:], (0 - AUDIO_MEAN) / (2 * AUDIO_STD))                # zero frames, normalised
    assert spectrogram(wav, 64, 128).shape == (64, 128)
    assert len(audio_segment(wav, 10, 20, 40)) == 4000                                # frames 10..20 of 40
    assert len(audio_segment(wav, 10, 11, 400)) == 16000                             # too short: all of it


def _face_and_voice(tmp_path: Path, name: str, frames: int, seconds: float, size: int = 64) -> Sample:
    folder = tmp_path / name
    folder.mkdir()
    track = np.random.default_rng(frames).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    track[:, :4, :4] = np.arange(frames, dtype=np.uint8)[:, None, None, None]
    np.save(folder / f"{name}.npy", track)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(tmp_path / f"{name}.wav", (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(3 * t))).astype(np.float32),
             16000)
    return Sample(name, "train", face_path=str(folder), audio_path=str(tmp_path / f"{name}.wav"))


def test_tags_and_registry(monkeypatch, tmp_path):
    monkeypatch.setenv("MER_WEIGHTS_DIR", str(tmp_path))
    assert {"hicmae_voxceleb2", "hicmae_cremad_fold1", "hicmae_mafw_fold5"} <= set(WEIGHT_TAGS)
    assert WEIGHT_TAGS["hicmae_cremad_fold1"].classes == ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
    assert EXTRACTORS.get("hicmae") is HiCMAEExtractor
    with pytest.raises(FileNotFoundError, match=r"sharepoint.*hicmae_voxceleb2/checkpoint-99\.pth"):
        build_extractor("hicmae", {}).weights_digest()
    with pytest.raises(ValueError, match="parts"):
        build_extractor("hicmae", {"parts": ["video", "speech"]})


def test_the_extractor_pairs_each_view_with_its_audio(tmp_path):
    sample = _face_and_voice(tmp_path, "clip_a", frames=60, seconds=2.4)
    ex = HiCMAEExtractor(weights=TINY_A, num_heads=4, face={"max_frames": 0, "size": 64})
    views = ex.load(sample)
    assert views.clips.shape == (2, 16, 64, 64, 3) and views.spectrograms.shape == (2, 64, 32) and ex._model is None
    idx = official_view_indices(60, 16, 4, 2)
    assert (views.clips[:, :, 0, 0, 0] == idx).all()
    wav, _ = sf.read(tmp_path / "clip_a.wav", dtype="float32")
    want = spectrogram(wav[int(idx[1, 0] / 60 * len(wav)):int(idx[1, -1] / 60 * len(wav))], 64, 32)
    assert np.allclose(views.spectrograms[1], want, atol=1e-5)
    out = ex.extract_batch([sample, Sample("mute", "train", face_path=sample.face_path)])
    assert out[0].shape == (256,) and isinstance(out[1], ExtractionFailure) and out[1].reason == "no_media"
    video_only = HiCMAEExtractor(weights=TINY_A, num_heads=4, parts=["video", "fusion_audio"],
                                 face={"max_frames": 0, "size": 64}).extract_batch([sample])[0]
    assert video_only.shape == (128,) and np.allclose(video_only, np.concatenate([out[0][:64], out[0][192:]]), atol=1e-5)
    frames = HiCMAEExtractor(weights=TINY_A, num_heads=4, level="frame", head_probs=True,
                             face={"max_frames": 0, "size": 64}).extract_batch([sample])[0]
    assert frames.shape == (1, 256 + 6) and np.allclose(frames[:, 256:].sum(1), 1, atol=1e-5)   # 15 strided: 1 clip
    assert pickle.loads(pickle.dumps(ex))._model is None


@pytest.mark.slow
def test_hicmae_features_on_the_demo_are_cached(tmp_path):
    from mer.pipeline import run

    def cfg():
        with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
            return compose("config", overrides=[
                f"paths.runs_dir={tmp_path / 'runs'}", "progress=false", "tracking=none", "data.demo.n_train=24",
                "data.demo.n_per_test=3", "train.n_folds=2", "train.epochs=3", "features/text=none",
                "features/audio=none", "features/visual=hicmae", f"features.visual.options.weights={TINY_A}",
                "features.visual.options.num_heads=4", "features.visual.options.face.size=64",
                "ablate_modalities=false"])

    def visual(res):
        return json.loads((res.out_dir / "results.json").read_text())["features"]["visual"]

    first = visual(run(cfg(), out_dir=tmp_path / "one"))
    assert (first["extractor"], first["dim"], first["extracted_now"]) == ("hicmae", 256, first["total"])
    second = run(cfg(), out_dir=tmp_path / "two")
    again = visual(second)
    assert (again["extracted_now"], again["from_cache"], again["cache_key"]) == (0, first["total"], first["cache_key"])
    assert "cv_wf1" in second.metrics
