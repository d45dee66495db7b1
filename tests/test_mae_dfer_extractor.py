"""The ``mae_dfer`` extractor: weight tags, face options, the official test views, outputs against
the golden official features, the frame level, and failures. Checkpoints are the tiny official-format ones read in place
from ``../shared/golden/maedfer`` (tests that need them skip when it is absent)."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_extractors.base import EXTRACTORS, build_extractor
from mer.core.failures import ExtractionFailure
from feature_extractors.visual.lgi_former import IMAGENET_MEAN, IMAGENET_STD
from feature_extractors.visual.mae_dfer import (MAEDFERExtractor, nearest_available, official_view_indices,
                                               window_indices)
from feature_extractors.weights import WEIGHT_TAGS, resolve_weights
from mer.core.samples import Sample

from tests.conftest import golden_dir, needs_golden

FIXTURES = golden_dir("maedfer")
FINETUNE = str(FIXTURES / "maedfer_tiny_finetune.pth")
PRETRAIN = str(FIXTURES / "maedfer_tiny_pretrain.pth")
with_golden = needs_golden("maedfer")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    from tests.test_mae_dfer import load_golden

    g = load_golden()
    return {k: g[k].numpy() for k in ("input_uint8", "ft_region_feature_fp32", "ft_region_logits_fp64",
                                      "pt_encoder_allvisible_mean_fp32", "pt_as_ft_region_feature_fp32")}


def clips_of(golden) -> np.ndarray:
    return np.ascontiguousarray(golden["input_uint8"].transpose(0, 2, 3, 4, 1))   # [B, T, H, W, 3]


def face_track(tmp_path: Path, name: str, frames: int, size: int = 112) -> Sample:
    """MER2024-style ``openface_face/<name>/<name>.npy`` (BGR); frame k is filled with level k."""
    folder = tmp_path / name
    folder.mkdir()
    rng = np.random.default_rng(frames)
    track = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    track[:, :4, :4] = np.arange(frames, dtype=np.uint8)[:, None, None, None]
    np.save(folder / f"{name}.npy", track)
    return Sample(name, "train", face_path=str(folder))


def test_registered_and_cheap_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("MER_WEIGHTS_DIR", str(tmp_path))
    assert EXTRACTORS.get("mae_dfer") is MAEDFERExtractor
    ex = build_extractor("mae_dfer", {"face": {"max_frames": 32}, "feature": "org"})
    assert ex.config.face.max_frames == 32 and ex.config.face.size == 160     # a mapping becomes a FaceConfig
    assert ex._model is None
    with pytest.raises(FileNotFoundError, match="drive.google.com.*mae_dfer_voxceleb2"):
        ex.identity()                                   # the tag is absent: says where to get it
    with pytest.raises(ValueError, match="feature must be one of"):
        MAEDFERExtractor(feature="cls")


@with_golden
def test_weight_tags_resolve_under_the_weights_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MER_WEIGHTS_DIR", str(tmp_path))
    tag = WEIGHT_TAGS["mae_dfer_dfew_fold1"]
    assert tag.kind == "finetune" and len(tag.classes) == 7 and len(WEIGHT_TAGS["mae_dfer_mafw_fold3"].classes) == 11
    (tmp_path / tag.tag).mkdir()
    shutil.copyfile(FINETUNE, tmp_path / tag.tag / tag.filename)
    assert resolve_weights("mae_dfer_dfew_fold1") == tmp_path / tag.tag / tag.filename
    by_tag = MAEDFERExtractor(weights="mae_dfer_dfew_fold1")
    by_path = MAEDFERExtractor(weights=FINETUNE)
    assert by_tag.identity() == by_path.identity()      # the key follows the file's content, not its name
    assert MAEDFERExtractor(weights=PRETRAIN).identity() != by_path.identity()
    assert MAEDFERExtractor(weights=FINETUNE, feature="org").identity() != by_path.identity()
    with pytest.raises(FileNotFoundError, match="neither a file nor a weight tag"):
        resolve_weights("no_such_weights")


def test_official_test_views():
    views = official_view_indices(100, 16, 4, 2)        # 25 strided frames: starts 0 and 9
    assert views.shape == (2, 16)
    assert views[0].tolist() == list(range(0, 64, 4)) and views[1].tolist() == list(range(36, 100, 4))
    short = official_view_indices(10, 16, 4, 2)         # 3 frames, padded with the last
    assert short[0].tolist() == [0, 4, 8] + [8] * 13 and (short[1] == short[0]).all()
    assert official_view_indices(200, 16, 1, 1)[0].tolist() == list(range(16))
    assert nearest_available(np.array([0, 5, 6, 31]), np.array([0, 4, 8, 30])).tolist() == [0, 1, 1, 3]


@with_golden
def test_features_are_the_official_ones_for_the_official_input(golden):
    clips = clips_of(golden)
    ft = MAEDFERExtractor(weights=FINETUNE)
    np.testing.assert_allclose(ft.embed_clips(clips), golden["ft_region_feature_fp32"], atol=1e-5)
    probs = MAEDFERExtractor(weights=FINETUNE, head_probs=True).embed_clips(clips)
    assert probs.shape == (2, 64 + 6)
    expected = torch.softmax(torch.from_numpy(golden["ft_region_logits_fp64"]), -1).numpy()
    np.testing.assert_allclose(probs[:, 64:], expected, atol=1e-5)
    enc = MAEDFERExtractor(weights=PRETRAIN, feature="encoder_norm").embed_clips(clips)
    np.testing.assert_allclose(enc, golden["pt_encoder_allvisible_mean_fp32"], atol=1e-5)
    pt_region = MAEDFERExtractor(weights=PRETRAIN).embed_clips(clips)
    np.testing.assert_allclose(pt_region, golden["pt_as_ft_region_feature_fp32"], atol=1e-5)
    with pytest.raises(ValueError, match="head_probs needs a fine-tuned checkpoint"):
        MAEDFERExtractor(weights=PRETRAIN, head_probs=True).setup()


@with_golden
def test_load_takes_the_official_views_from_a_full_face_track(tmp_path):
    sample = face_track(tmp_path, "clip_a", frames=50)
    ex = MAEDFERExtractor(weights=FINETUNE, face={"max_frames": 0})
    views = ex.load(sample)
    assert views.shape == (2, 16, 160, 160, 3) and views.dtype == np.uint8
    # the corner level is the source frame (nearest-neighbour resize 112 -> 160 keeps the 4x4 block)
    picked = views[:, :, 0, 0, 0]
    assert (picked == official_view_indices(50, 16, 4, 2)).all()


@with_golden
def test_batch_output_is_the_mean_over_views_and_bad_samples_fail_alone(tmp_path):
    good = face_track(tmp_path, "clip_b", frames=40)
    missing = Sample("clip_c", "train", face_path=str(tmp_path / "nowhere"))
    nothing = Sample("clip_d", "train")
    ex = MAEDFERExtractor(weights=FINETUNE, face={"max_frames": 0})
    out = ex.extract_batch([missing, good, nothing])
    assert isinstance(out[0], ExtractionFailure) and out[0].reason == "missing_file"
    assert isinstance(out[2], ExtractionFailure) and out[2].reason == "no_media"
    assert out[1].shape == (64,) and out[1].dtype == np.float32
    np.testing.assert_allclose(out[1], ex.embed_clips(ex.load(good)).mean(0), atol=1e-6)


@with_golden
def test_pickles_without_weights_for_decoding_workers():
    ex = MAEDFERExtractor(weights=FINETUNE)
    ex.setup("cpu")
    clone = pickle.loads(pickle.dumps(ex))
    assert clone._model is None and not clone._ready and ex._model is not None
    assert EXTRACTORS.get("mae_dfer") is MAEDFERExtractor


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@with_golden
def test_on_cuda_the_features_match_the_official_ones(golden):
    clips = clips_of(golden)
    fp32 = MAEDFERExtractor(weights=FINETUNE, precision="fp32")
    fp32.setup("cuda")
    # cuDNN's TF32 convolution (torch's default) costs about 1e-3 here; bf16 about 1e-2
    np.testing.assert_allclose(fp32.embed_clips(clips), golden["ft_region_feature_fp32"], atol=5e-3)
    bf16 = MAEDFERExtractor(weights=FINETUNE, precision="bf16")
    bf16.setup("cuda")
    np.testing.assert_allclose(bf16.embed_clips(clips), golden["ft_region_feature_fp32"], atol=5e-2)
    auto = MAEDFERExtractor(weights=FINETUNE)                       # the default: bf16 autocast on CUDA
    auto.setup("cuda")
    np.testing.assert_array_equal(auto.embed_clips(clips), bf16.embed_clips(clips))


@with_golden
def test_bf16_runs_on_the_cpu_close_to_fp32(golden):
    clips = clips_of(golden)[:1]
    fp32 = MAEDFERExtractor(weights=FINETUNE).embed_clips(clips)          # 'auto' is fp32 on a CPU
    np.testing.assert_array_equal(fp32, MAEDFERExtractor(weights=FINETUNE, precision="fp32").embed_clips(clips))
    bf16 = MAEDFERExtractor(weights=FINETUNE, precision="bf16").embed_clips(clips)
    fp16 = MAEDFERExtractor(weights=FINETUNE, precision="fp16").embed_clips(clips)   # CPU: stays fp32
    assert 0 < np.abs(bf16 - fp32).max() < 0.1
    np.testing.assert_array_equal(fp16, fp32)


@with_golden
def test_face_options_are_the_shared_pipelines_with_every_frame_at_160():
    from feature_extractors.visual.faces import FaceConfig

    ex = MAEDFERExtractor(weights=FINETUNE)
    assert ex.config.face == FaceConfig(size=160, max_frames=0)          # every frame: the views need every 4th
    assert MAEDFERExtractor(face={"max_frames": 32}).config.face == FaceConfig(size=160, max_frames=32)
    with pytest.raises(KeyError, match="haar"):
        MAEDFERExtractor(face={"detector": "no_such_detector"})          # validated like every face extractor
    with pytest.raises(ValueError, match="at least 8 pixels"):
        MAEDFERExtractor(face={"size": 4})
    key = ex.identity()["config"]
    assert key["face"]["max_frames"] == 0 and "detector_weights" not in key["face"]
    assert MAEDFERExtractor(weights=FINETUNE, face={"size": 112}).identity() != ex.identity()


def test_window_indices_cover_the_strided_track():
    windows, strided = window_indices(100, 16, 4)                        # 25 strided frames -> 2 windows
    assert strided == 25 and windows.shape == (2, 16)
    assert windows.reshape(-1)[:25].tolist() == list(range(0, 100, 4)) and (windows[1, 9:] == 96).all()


@with_golden
def test_frame_level_gives_one_row_per_time_region_in_time_order(tmp_path):
    sample = face_track(tmp_path, "clip_f", frames=100)                  # 25 strided frames: 2 windows, 7 rows
    ex = MAEDFERExtractor(weights=FINETUNE, level="frame", feature="org", face={"max_frames": 0})
    assert ex.level == "frame" and ex.identity()["level"] == "frame"
    assert ex.identity() != MAEDFERExtractor(weights=FINETUNE, feature="org", face={"max_frames": 0}).identity()
    loaded = ex.load(sample)
    assert loaded.clips.shape == (2, 16, 160, 160, 3) and loaded.frames == 25
    assert (loaded.clips[:, :, 0, 0, 0].reshape(-1)[:25] == np.arange(0, 100, 4)).all()   # frame k has level k
    out = ex.extract_batch([sample])[0]
    assert out.shape == (7, 64) and out.dtype == np.float32              # ceil(25 / 4) rows of 4 strided frames
    # row r: fc_norm of the mean of the local tokens of time region r (regions n = nt * 2 + nh)
    model = ex._model
    x = (torch.from_numpy(loaded.clips).permute(0, 4, 1, 2, 3).float() / 255
         - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        tokens = model.forward_tokens(x)                                  # [2, 8, 101, 64]
        rows = model.fc_norm(tokens[:, :, 1:].reshape(2, 4, 2 * 100, 64).mean(2)).reshape(8, 64)
    np.testing.assert_allclose(out, rows[:7].numpy(), atol=1e-5)
    probs = MAEDFERExtractor(weights=FINETUNE, level="frame", head_probs=True).extract_batch([sample])[0]
    assert probs.shape == (7, 64 + 6) and np.allclose(probs[:, 64:].sum(1), 1, atol=1e-5)


def test_a_checkpoint_of_another_clip_size_runs_through_the_extractor(tmp_path):
    from feature_extractors.visual.lgi_former import create_model, save_mae_dfer

    model = create_model("lgi_former_tiny", img_size=80, num_frames=8, region_size=(2, 5, 5), num_classes=3)
    path = tmp_path / "small.pth"
    save_mae_dfer(model.eval(), str(path))
    sample = face_track(tmp_path, "clip_s", frames=70)
    ex = MAEDFERExtractor(weights=str(path), face={"max_frames": 0, "size": 80})
    views = ex.load(sample)                                   # a worker: the size comes from the file's args
    assert views.shape == (2, 8, 80, 80, 3) and ex._model is None
    assert (views[:, :, 0, 0, 0] == official_view_indices(70, 8, 4, 2)).all()
    out = ex.extract_batch([sample])[0]
    assert out.shape == (64,) and np.allclose(out, ex.embed_clips(views).mean(0), atol=1e-6)
    rows = MAEDFERExtractor(weights=str(path), level="frame", face={"max_frames": 0, "size": 80}).extract_batch([sample])[0]
    assert rows.shape == (5, 64)                              # 18 strided frames, 4 per time region
