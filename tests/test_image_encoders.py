"""``hf_image`` and ``hf_video``: tiny random-init CLIP / DINOv2 / ViT / VideoMAE models and their
image processors saved into temp folders with ``save_pretrained``, run on real mp4 clips of the
astronaut photo. What is checked: the preprocessing matches the folder's own image processor, each
pooling option is the tensor it claims to be, frame-level and clip-level outputs agree, batches do
not mix samples, and misconfigurations fail early with a message that says what to set.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from feature_extractors.base import EXTRACTORS, ExtractContext
from mer.core.failures import ExtractionFailure  # noqa: E402
from feature_extractors.visual.faces import FaceConfig, load_face_clip  # noqa: E402
from feature_extractors.visual.image_encoders import (HFImageEncoder, HFVideoEncoder,  # noqa: E402
                                                      ImagePreprocess, spread_indices)
from mer.core.samples import Sample  # noqa: E402

torch.set_num_threads(1)
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
warnings.filterwarnings("ignore", message=".*torchvision.*")

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4,
            image_size=32, patch_size=8)


def write_video(path, frames, fps: int = 10):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from transformers import (BitImageProcessor, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel,
                              CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model,
                              Dinov2WithRegistersConfig, Dinov2WithRegistersModel, ViTConfig,
                              ViTImageProcessor, ViTModel, VideoMAEConfig, VideoMAEImageProcessor,
                              VideoMAEModel)

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    out = {}

    def save(name, model, processor):
        folder = root / name
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        out[name] = str(folder)

    clip_proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    save("clip", CLIPVisionModel(CLIPVisionConfig(**TINY)), clip_proc)
    save("clip_proj", CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY, projection_dim=16)), clip_proc)
    dino_proc = BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    save("dinov2", Dinov2Model(Dinov2Config(**TINY)), dino_proc)
    save("dinov2_registers", Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY, num_register_tokens=2)),
         dino_proc)
    save("vit_no_pooler", ViTModel(ViTConfig(**TINY), add_pooling_layer=False),
         ViTImageProcessor(size={"height": 32, "width": 32}))
    save("videomae", VideoMAEModel(VideoMAEConfig(**TINY, num_frames=4, tubelet_size=2)),
         VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-media")
    photo = skdata.astronaut()
    frames = [photo[10:250, 60 + 6 * t:380 + 6 * t] for t in range(12)]        # 320x240
    wall = np.full((240, 320, 3), 128, np.uint8)
    return {"astro": Sample("astro", "train", video_path=str(write_video(root / "astro.mp4", frames))),
            "short": Sample("short", "train", video_path=str(write_video(root / "short.mp4", frames[:3]))),
            "wall": Sample("wall", "train", video_path=str(write_video(root / "wall.mp4", [wall] * 4)))}


def manual_pixels(ext, images: np.ndarray) -> torch.Tensor:
    """uint8 [N, h, w, 3] -> normalised [N, 3, h, w] from the processor's numbers, by hand."""
    pre = ext.preprocess()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * pre.rescale_factor
    return (x - torch.tensor(pre.mean).view(3, 1, 1)) / torch.tensor(pre.std).view(3, 1, 1)


# --- preprocessing --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["clip", "dinov2", "vit_no_pooler", "videomae"])
def test_preprocessing_matches_the_folders_image_processor(folders, name):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folders[name])
    pre = ImagePreprocess.from_folder(folders[name])
    photo = skdata.astronaut()
    for image in (photo[50:180, 160:290], photo[0:240, 100:420]):          # a face crop, a frame
        if name == "videomae":
            ref = processor([image], return_tensors="np").pixel_values[0, 0]
        else:
            ref = processor(image, return_tensors="np").pixel_values[0]
        mine = pre.normalise(torch.from_numpy(pre.resize_and_crop(image[None])).permute(0, 3, 1, 2))[0]
        assert mine.shape == ref.shape
        # Same size, crop, mean and std; only OpenCV's vs PIL's resampling differs.
        assert np.abs(mine.numpy() - ref).mean() < 0.04


def test_spread_indices_repeat_frames_only_when_short():
    assert spread_indices(12, 4).tolist() == [1, 4, 7, 10]
    assert spread_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert spread_indices(0, 4).tolist() == []


# --- hf_image -------------------------------------------------------------------------------------
def test_hf_image_is_registered_and_cheap(folders):
    ext = EXTRACTORS.get("hf_image")(model_path=folders["clip"])
    assert (ext.modality, ext.level, ext._model) == ("visual", "utterance", None)
    key = ext.identity()
    assert "model_path" not in key["config"] and "images_per_forward" not in key["config"]
    assert key["config"]["face"]["max_frames"] == 16 and "detector_weights" not in key["config"]["face"]
    other = HFImageEncoder(model_path=folders["clip"], face={"max_frames": 8}, images_per_forward=3)
    assert other.identity()["config"] != key["config"]
    assert HFImageEncoder(model_path=folders["clip"], images_per_forward=3).identity() == key
    frames = HFImageEncoder(model_path=folders["clip"], input="frame").identity()
    assert "face" not in frames["config"]


def test_hf_image_pooler_is_the_models_pooled_output_of_the_face_crops(folders, clips):
    ext = HFImageEncoder(model_path=folders["clip"], num_frames=4)
    images = ext.load(clips["astro"])
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    crops = load_face_clip(clips["astro"], FaceConfig()).pick(4).crops
    resized = np.stack([cv2.resize(c, (32, 32), interpolation=cv2.INTER_AREA) for c in crops])
    np.testing.assert_array_equal(images, resized)

    ext.setup("cpu")
    (feature,) = ext.forward([clips["astro"]], [images])
    with torch.inference_mode():
        ref = ext._model(pixel_values=manual_pixels(ext, images)).pooler_output.mean(0).numpy()
    assert feature.shape == (32,) and feature.dtype == np.float32
    np.testing.assert_allclose(feature, ref, atol=1e-5)


@pytest.mark.parametrize("name, pool, layers", [
    ("dinov2", "cls", "last"), ("dinov2", "mean_patch", "last"), ("dinov2", "cls", "last4_sum"),
    ("dinov2", "mean_patch", "last4_sum"), ("dinov2_registers", "mean_patch", "last"),
    ("dinov2_registers", "cls", "last4_sum")])
def test_hf_image_token_pools_on_dinov2(folders, clips, name, pool, layers):
    ext = HFImageEncoder(model_path=folders[name], pool=pool, layers=layers, num_frames=3, level="frame")
    ext.setup("cpu")
    images = ext.load(clips["astro"])
    (feature,) = ext.forward([clips["astro"]], [images])
    with torch.inference_mode():
        out = ext._model(pixel_values=manual_pixels(ext, images), output_hidden_states=True)
    tokens = out.last_hidden_state if layers == "last" else sum(out.hidden_states[-4:])
    specials = 3 if name == "dinov2_registers" else 1          # CLS (+ 2 register tokens)
    assert tokens.shape[1] == specials + 16                    # + 4x4 patches
    ref = tokens[:, 0] if pool == "cls" else tokens[:, specials:].mean(1)
    assert feature.shape == (3, 32)
    np.testing.assert_allclose(feature, ref.numpy(), atol=1e-5)


def test_hf_image_clip_projection_and_frame_level(folders, clips):
    ext = HFImageEncoder(model_path=folders["clip_proj"], pool="image_embeds", level="frame", num_frames=5)
    frames = ext.extract_batch([clips["astro"]])[0]
    assert frames.shape == (5, 16)                             # projection_dim
    utt = HFImageEncoder(model_path=folders["clip_proj"], pool="image_embeds", num_frames=5)
    np.testing.assert_allclose(utt.extract_batch([clips["astro"]])[0], frames.mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="visual_projection"):
        HFImageEncoder(model_path=folders["clip"], pool="image_embeds").setup("cpu")


def test_hf_image_batches_do_not_mix_samples_and_failures_stay_per_sample(folders, clips):
    ext = HFImageEncoder(model_path=folders["clip"], num_frames=4, images_per_forward=3)
    out = ext.extract_batch([clips["astro"], clips["wall"], clips["short"], Sample("none", "train")])
    astro, wall, short, none = out
    assert isinstance(wall, ExtractionFailure) and wall.reason == "no_face" and "wall" in wall.message
    assert isinstance(none, ExtractionFailure) and none.reason == "no_media"
    np.testing.assert_allclose(ext.extract_batch([clips["astro"]])[0], astro, atol=1e-5)
    np.testing.assert_allclose(ext.extract_batch([clips["short"]])[0], short, atol=1e-5)
    assert not np.allclose(astro, short)


def test_hf_image_on_whole_frames(folders, clips):
    ext = HFImageEncoder(model_path=folders["clip"], input="frame", num_frames=3, pool="cls")
    images = ext.load(clips["wall"])                           # no face needed
    assert images.shape == (3, 32, 32, 3)
    assert np.abs(images.astype(int) - 128).max() <= 3        # the wall, scaled down
    face = HFImageEncoder(model_path=folders["clip"], num_frames=3, pool="cls")
    assert not np.allclose(ext.extract_batch([clips["astro"]])[0], face.extract_batch([clips["astro"]])[0])


def test_hf_image_shares_the_face_cache(folders, clips, tmp_path):
    ctx = ExtractContext(cache_root=str(tmp_path), dataset="d")
    ext = HFImageEncoder(model_path=folders["clip"], num_frames=2)
    ext.context = ctx
    ext.load(clips["astro"])
    cached = list((tmp_path / "d" / "clean" / "faces").glob("*/astro.npz"))
    assert len(cached) == 1
    video = HFVideoEncoder(model_path=folders["videomae"])
    video.context = ctx
    stamp = cached[0].stat().st_mtime_ns
    video.load(clips["astro"])
    assert cached[0].stat().st_mtime_ns == stamp               # read, not rewritten


def test_hf_image_options_fail_early_with_what_to_set(folders, tmp_path):
    with pytest.raises(ValueError, match="model_path"):
        HFImageEncoder()
    with pytest.raises(FileNotFoundError, match="config.json"):
        HFImageEncoder(model_path=str(tmp_path))
    with pytest.raises(ValueError, match="last4_sum goes with pool=cls"):
        HFImageEncoder(model_path=folders["clip"], layers="last4_sum")
    with pytest.raises(ValueError, match="pool"):
        HFImageEncoder(model_path=folders["clip"], pool="max")
    with pytest.raises(ValueError, match="pool=cls"):       # a checkpoint without a trained pooler
        HFImageEncoder(model_path=folders["vit_no_pooler"]).setup("cpu")
    vit = HFImageEncoder(model_path=folders["vit_no_pooler"], pool="cls", num_frames=2)
    assert vit.extract_batch([Sample("x", "train", face_path=str(_release_faces(tmp_path)))])[0].shape == (32,)


def _release_faces(tmp_path):
    folder = tmp_path / "openface_face" / "x"
    folder.mkdir(parents=True)
    crops = np.random.default_rng(0).integers(0, 255, (6, 112, 112, 3), dtype=np.uint8)
    np.save(folder / "x.npy", crops)
    return folder


# --- hf_video -------------------------------------------------------------------------------------
def test_hf_video_is_the_mean_of_videomae_tokens(folders, clips):
    ext = HFVideoEncoder(model_path=folders["videomae"])
    assert ext.config.num_frames == 4                          # the model's own count
    ext.setup("cpu")
    windows = ext.load(clips["astro"])
    assert windows.shape == (1, 4, 32, 32, 3)
    (feature,) = ext.forward([clips["astro"]], [windows])
    pixels = manual_pixels(ext, windows[0])[None]              # [1, T, 3, h, w]
    with torch.inference_mode():
        ref = ext._model(pixel_values=pixels).last_hidden_state.mean(1)[0].numpy()
    assert feature.shape == (32,)
    np.testing.assert_allclose(feature, ref, atol=1e-5)


def test_hf_video_windows_short_clips_and_batches(folders, clips):
    ext = HFVideoEncoder(model_path=folders["videomae"], num_clips=2, level="frame", images_per_forward=4)
    astro, short, wall = ext.extract_batch([clips["astro"], clips["short"], clips["wall"]])
    assert astro.shape == (2, 32) and short.shape == (2, 32)  # 3 face frames repeated to 2 x 4
    assert not np.allclose(astro[0], astro[1])
    assert isinstance(wall, ExtractionFailure) and wall.reason == "no_face"
    np.testing.assert_allclose(ext.extract_batch([clips["short"]])[0], short, atol=1e-5)
    utt = HFVideoEncoder(model_path=folders["videomae"], num_clips=2)
    np.testing.assert_allclose(utt.extract_batch([clips["astro"]])[0], astro.mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="built for 4 frames"):
        HFVideoEncoder(model_path=folders["videomae"], num_frames=16)
