"""The face pipeline as a component: detectors, frame sampling, main-face tracking, aligned crops,
the shared crop cache (with concurrent writers and torn files) and the organisers' crop layouts.

Videos are written here with PyAV from ``skimage.data.astronaut()``, whose eyes sit at about
(203, 101) and (246, 102.5) in the 512x512 photo (a 2 degree roll).
"""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from mer.core.failures import MediaError  # noqa: E402
from feature_extractors.base import ExtractContext  # noqa: E402
from feature_extractors.visual import faces  # noqa: E402
from feature_extractors.visual.faces import (FACE_DETECTORS, Detections, FaceConfig,  # noqa: E402
                                             HaarEyeFinder, HaarFaceDetector, YuNetFaceDetector,
                                             alignment_matrix, eye_roll_deg, face_cache_path,
                                             face_config_from, face_config_hash, frame_faces,
                                             load_face_clip, make_detector, validate_face_config,
                                             yunet_rows_to_detections)
from feature_extractors.visual.video import uniform_indices  # noqa: E402
from mer.core.samples import Sample  # noqa: E402
from mer.core.registry import UnknownNameError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EYES = np.array([[203.0, 101.0], [246.0, 102.5]])      # in skimage.data.astronaut()
FACE_CENTRE = (224.5, 113.5)                           # of its Haar box [177, 66, 95, 95]


# --- media ------------------------------------------------------------------------------------
def write_video(path: Path, frames, fps: int = 10) -> Path:
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


def rotated_astronaut(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo rotated by ``angle_deg`` (anticlockwise as seen) about the face, and where the
    eyes went ``[2, 2]``."""
    m = cv2.getRotationMatrix2D(FACE_CENTRE, angle_deg, 1.0)
    image = cv2.warpAffine(skdata.astronaut(), m, (512, 512), borderMode=cv2.BORDER_REFLECT)
    return image, np.c_[EYES, np.ones(2)] @ m.T


def face_window(image: np.ndarray, dx: int = 0) -> np.ndarray:
    """A 320x240 frame around the face of a 512x512 photo, shifted ``dx`` pixels."""
    return image[10:250, 60 + dx:380 + dx]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faces-media")
    upright = skdata.astronaut()
    tilted, _ = rotated_astronaut(-15)
    wall = np.full((240, 320, 3), 128, np.uint8)
    wall[:, :160] = 90
    # Two people: the astronaut (main, every frame) and a smaller copy of her on the right in
    # frames 0-5 only (a passer-by).
    small = cv2.resize(upright[16:216, 130:330], (150, 150), interpolation=cv2.INTER_AREA)
    two = []
    for t in range(10):
        canvas = np.full((260, 420, 3), 110, np.uint8)
        canvas[20:220, 5 * t:5 * t + 200] = upright[16:216, 130:330]
        if t < 6:
            canvas[60:210, 260:410] = small
        two.append(canvas)
    return {
        "upright": write_video(root / "upright.mp4", [face_window(upright, 4 * t) for t in range(10)]),
        "tilted": write_video(root / "tilted.mp4", [face_window(tilted, 4 * t) for t in range(10)]),
        "wall": write_video(root / "wall.mp4", [wall] * 6),
        "two_faces": write_video(root / "two.mp4", two),
        "long": write_video(root / "long.mp4", [face_window(upright, t) for t in range(30)], fps=10),
    }


@FACE_DETECTORS.register("counting_haar")
class CountingHaarDetector(HaarFaceDetector):
    """The Haar detector, counting the frames it is asked about (to see when the cache is read)."""

    calls = 0

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        type(self).calls += 1
        return super().detect(frame_rgb)


@FACE_DETECTORS.register("fixed_landmarks")
class FixedLandmarkDetector:
    """A landmark detector for frames whose face is known: one box and its 5 points, always."""

    box = np.array([[170, 60, 110, 110]])
    landmarks = np.zeros((1, 5, 2), np.float32)

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        return self.detect_with_landmarks(frame_rgb).boxes

    def detect_with_landmarks(self, frame_rgb: np.ndarray) -> Detections:
        return Detections(self.box.copy(), self.landmarks.copy())


COUNTING = FaceConfig(detector="counting_haar")


def counting_calls() -> int:
    return CountingHaarDetector.calls


def context(tmp_path: Path) -> ExtractContext:
    return ExtractContext(cache_root=str(tmp_path / "cache"), dataset="demo", condition="clean")


# --- detectors ----------------------------------------------------------------------------------
def test_detector_registry_builds_from_the_face_config(tmp_path):
    assert {"haar", "yunet"} <= set(FACE_DETECTORS.names())
    det = make_detector(FaceConfig(min_neighbors=3, min_face_px=40, detect_max_side=320))
    assert isinstance(det, HaarFaceDetector)
    assert (det.min_neighbors, det.min_size, det.max_side) == (3, (40, 40), 320)
    assert make_detector(FaceConfig(min_neighbors=3, min_face_px=40, detect_max_side=320)) is det

    with pytest.raises(UnknownNameError, match="haar") as err:
        validate_face_config(FaceConfig(detector="retinafac"))
    assert "yunet" in str(err.value)


def test_yunet_without_weights_says_which_option_and_where_they_come_from(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        validate_face_config(FaceConfig(detector="yunet"))
    message = str(err.value)
    assert "face.detector_weights" in message and "opencv_zoo" in message and "haar" in message
    with pytest.raises(FileNotFoundError, match="face.detector_weights"):
        make_detector(FaceConfig(detector="yunet", detector_weights=str(tmp_path / "absent.onnx")))
    from feature_extractors.visual.fer_face import Fer2013FaceExtractor

    with pytest.raises(FileNotFoundError, match="face_detection_yunet"):
        Fer2013FaceExtractor(face={"detector": "yunet"})     # caught before any worker starts


def test_yunet_rows_become_boxes_and_landmarks_in_frame_pixels(tmp_path):
    # FaceDetectorYN.detect rows: x, y, w, h, 5 x (x, y), score -- here on a frame shrunk by 0.5.
    row = np.array([[10, 20, 30, 40, 15, 30, 32, 31, 24, 38, 17, 48, 30, 48, 0.93]], np.float32)
    det = yunet_rows_to_detections(row, scale=0.5)
    assert det.boxes.tolist() == [[20, 40, 60, 80]]
    assert det.landmarks.shape == (1, 5, 2) and det.landmarks[0, 1].tolist() == [64.0, 62.0]
    assert yunet_rows_to_detections(None).boxes.shape == (0, 4)

    weights = tmp_path / "yunet.onnx"
    weights.write_bytes(b"not read until the first frame")
    det = make_detector(FaceConfig(detector="yunet", detector_weights=str(weights), score_threshold=0.8))
    assert isinstance(det, YuNetFaceDetector) and det.score_threshold == 0.8 and det.weights == str(weights)


def test_a_plugged_in_landmark_detector_levels_the_eyes():
    image, eyes = rotated_astronaut(15)
    FixedLandmarkDetector.landmarks = np.zeros((1, 5, 2), np.float32)
    FixedLandmarkDetector.landmarks[0, :2] = eyes[::-1]          # order does not matter
    det = make_detector(FaceConfig(detector="fixed_landmarks"))
    found = faces.frame_faces(image, det, size=112, margin=0.1, align=True)
    assert found.aligned.tolist() == [True]
    assert found.roll_deg[0] == pytest.approx(eye_roll_deg(eyes), abs=1e-4)
    m = alignment_matrix(tuple(found.boxes[0]), float(found.roll_deg[0]), 0.1, 112)
    eyes_in_crop = np.c_[eyes, np.ones(2)] @ m.T
    assert abs(eye_roll_deg(eyes_in_crop)) < 1e-3


# --- alignment ----------------------------------------------------------------------------------
@pytest.mark.parametrize("angle", [15, -15])
def test_haar_eyes_level_a_rotated_face(angle):
    image, eyes = rotated_astronaut(angle)
    assert abs(eye_roll_deg(eyes)) > 12                          # the eye line starts tilted
    found = frame_faces(image, HaarFaceDetector(), size=112, margin=0.1, align=True,
                        eye_finder=HaarEyeFinder())
    assert len(found.boxes) == 1 and found.aligned.tolist() == [True]
    m = alignment_matrix(tuple(found.boxes[0]), float(found.roll_deg[0]), 0.1, 112)
    eyes_in_crop = np.c_[eyes, np.ones(2)] @ m.T
    assert abs(eye_roll_deg(eyes_in_crop)) < 4                   # level within a few degrees
    assert (eyes_in_crop > 15).all() and (eyes_in_crop < 97).all()   # and inside the crop
    assert eyes_in_crop[:, 1].mean() < 56                         # in the upper half

    plain = frame_faces(image, HaarFaceDetector(), size=112, margin=0.1, align=False)
    assert plain.aligned.tolist() == [False] and plain.roll_deg.tolist() == [0.0]
    assert np.abs(plain.crops[0].astype(int) - found.crops[0]).mean() > 10


def test_the_face_clip_of_a_tilted_video_is_aligned(media):
    clip = load_face_clip(Sample("tilted", "train", video_path=str(media["tilted"])), FaceConfig())
    assert len(clip.crops) >= 8 and clip.crops.shape[1:] == (112, 112, 3) and clip.source == "video"
    assert (np.abs(clip.roll_deg - 17) < 4).sum() >= 7           # the photo's 2 + the video's 15
    flat = load_face_clip(Sample("tilted", "train", video_path=str(media["tilted"])),
                          FaceConfig(align=False))
    assert (flat.roll_deg == 0).all() and not np.array_equal(flat.crops, clip.crops)


def test_a_big_face_is_shrunk_before_the_warp_to_the_same_crop():
    image, eyes = rotated_astronaut(15)
    big = cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_CUBIC)     # face ~220 px
    box, roll = (342, 122, 216, 216), eye_roll_deg(eyes)
    crop = faces.aligned_crop(big, box, roll, 0.1, 48)         # side 259 > 2 x 48: shrink first
    direct = cv2.warpAffine(cv2.GaussianBlur(big, (0, 0), 2.0), alignment_matrix(box, roll, 0.1, 48),
                            (48, 48), flags=cv2.INTER_LINEAR)  # a low-passed warp of the whole frame
    assert crop.shape == (48, 48, 3)
    assert np.abs(crop.astype(int) - direct).mean() < 8
    eyes_in_crop = np.c_[eyes * 2, np.ones(2)] @ alignment_matrix(box, roll, 0.1, 48).T
    assert abs(eye_roll_deg(eyes_in_crop)) < 1e-3


def test_no_eyes_means_the_roll_before_or_a_plain_square_crop():
    wall = np.full((200, 200, 3), 128, np.uint8)
    assert HaarEyeFinder().find(cv2.cvtColor(wall, cv2.COLOR_RGB2GRAY), (40, 40, 110, 110)) is None
    image, _ = rotated_astronaut(15)
    seen = []
    hinted = frame_faces(image, HaarFaceDetector(), 112, 0.1, align=True, eye_finder=None,
                         roll_hint=lambda box: seen.append(box) or -12.5)
    assert hinted.aligned.tolist() == [True] and hinted.roll_deg.tolist() == [-12.5]
    assert seen == [tuple(int(v) for v in hinted.boxes[0])]
    plain = frame_faces(image, HaarFaceDetector(), 112, 0.1, align=True, eye_finder=None,
                        roll_hint=lambda box: None)
    assert plain.aligned.tolist() == [False]
    np.testing.assert_array_equal(
        plain.crops[0], faces.resize_square(image, faces.square_box(tuple(plain.boxes[0]), 0.1, (512, 512)), 112))


# --- frames and tracking ------------------------------------------------------------------------
def test_frames_are_sampled_uniformly_or_by_rate(media):
    sample = Sample("long", "train", video_path=str(media["long"]))          # 30 frames, 10 fps
    clip = load_face_clip(sample, FaceConfig(max_frames=4))
    assert (clip.total_frames, clip.fps, clip.frames_tried) == (30, 10.0, 4)
    assert clip.frame_index.tolist() == uniform_indices(30, 4).tolist()
    every = load_face_clip(sample, FaceConfig(max_frames=0))
    assert every.frames_tried == 30 and len(every.crops) >= 28
    by_rate = load_face_clip(sample, FaceConfig(max_frames=0, sample_fps=2.0))  # 3 s at 2 fps
    assert by_rate.frames_tried == 6 and by_rate.frame_index.tolist() == uniform_indices(30, 6).tolist()
    capped = load_face_clip(sample, FaceConfig(max_frames=4, sample_fps=2.0))
    assert capped.frames_tried == 4


def test_the_main_face_is_followed_past_a_smaller_one(media):
    clip = load_face_clip(Sample("two", "train", video_path=str(media["two_faces"])),
                          FaceConfig(align=False))
    boxes = HaarFaceDetector().detect(av_frame(media["two_faces"], 0))
    assert len(boxes) == 2                                        # both faces are found ...
    assert len(clip.crops) >= 9
    centres_x = clip.boxes[:, 0] + clip.boxes[:, 2] / 2
    assert (centres_x < 260).all()                                # ... the crops follow hers
    assert (clip.boxes[:, 2] > 80).all()


def av_frame(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise IndexError(index)


def test_no_face_names_the_sample_and_the_frames_tried(media, tmp_path):
    sample = Sample("sample_00000007", "train", video_path=str(media["wall"]))
    with pytest.raises(MediaError) as err:
        load_face_clip(sample, FaceConfig(max_frames=4))
    assert err.value.reason == "no_face"
    assert err.value.message.startswith("no face in 0 of 4 frames of sample_00000007")
    with pytest.raises(MediaError) as err:
        load_face_clip(Sample("nothing", "train"), FaceConfig())
    assert err.value.reason == "no_media"


# --- the shared cache ---------------------------------------------------------------------------
def test_the_cache_hash_covers_every_field_and_the_version(monkeypatch):
    base = FaceConfig()
    assert face_config_hash(base) == face_config_hash(FaceConfig())
    changed = {"detector": "yunet", "scale_factor": 1.2, "min_neighbors": 4, "min_face_px": 31,
               "score_threshold": 0.5, "nms_threshold": 0.4, "detect_max_side": 640, "margin": 0.2,
               "size": 96, "max_frames": 8, "sample_fps": 5.0, "align": False}
    hashes = {face_config_hash(FaceConfig(**{k: v})) for k, v in changed.items()}
    assert len(hashes) == len(changed) and face_config_hash(base) not in hashes
    assert set(changed) | {"detector_weights"} == {f for f in FaceConfig.__dataclass_fields__}
    original = face_config_hash(base)
    monkeypatch.setattr(faces.config, "FACE_PIPELINE_VERSION", "test-only")
    assert face_config_hash(base) != original


def test_the_second_call_reads_the_cache_and_does_not_detect(media, tmp_path):
    ctx = context(tmp_path)
    sample = Sample("sample_00000001", "train", video_path=str(media["upright"]))
    before = counting_calls()
    first = load_face_clip(sample, COUNTING, ctx)
    assert counting_calls() - before == 10
    path = face_cache_path(ctx, COUNTING, sample.name)
    assert path.is_file() and path.parent.name == face_config_hash(COUNTING)[:8]
    assert path.parent.parent == tmp_path / "cache" / "demo" / "clean" / "faces"

    before = counting_calls()
    again = load_face_clip(sample, FaceConfig(detector="counting_haar"), ctx)   # an equal config
    assert counting_calls() == before                                           # read, not detected
    for field in ("crops", "frame_index", "boxes", "roll_deg"):
        np.testing.assert_array_equal(getattr(again, field), getattr(first, field))
    assert (again.total_frames, again.fps, again.frames_tried) == (first.total_frames, first.fps, 10)

    # Another visual extractor with the same face options reuses the crops too.
    from feature_extractors.visual.fer_face import Fer2013FaceExtractor

    fer = Fer2013FaceExtractor(face={"detector": "counting_haar"}, num_frames=4)
    fer.context = ctx
    gray = fer.load(sample)
    assert counting_calls() == before and gray.shape == (4, 64, 64) and gray.dtype == np.uint8

    load_face_clip(sample, FaceConfig(detector="counting_haar", margin=0.2), ctx)  # other options
    assert counting_calls() == before + 10
    assert len(list((tmp_path / "cache" / "demo" / "clean" / "faces").iterdir())) == 2


def test_no_face_is_cached_as_a_marker(media, tmp_path):
    ctx = context(tmp_path)
    sample = Sample("wall", "train", video_path=str(media["wall"]))
    with pytest.raises(MediaError) as first:
        load_face_clip(sample, COUNTING, ctx)
    entry = faces.face_entry(face_cache_path(ctx, COUNTING, "wall").parent, COUNTING)
    reason, message = entry.read("wall").failure
    assert reason == "no_face" and "0 of 6 frames of wall" in message
    assert not face_cache_path(ctx, COUNTING, "wall").exists()       # a record, no file
    before = counting_calls()
    with pytest.raises(MediaError) as second:
        load_face_clip(sample, COUNTING, ctx)
    assert counting_calls() == before
    assert (second.value.reason, second.value.message) == (first.value.reason, first.value.message)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_torn_or_corrupt_cache_file_is_a_miss(media, tmp_path, damage):
    ctx = context(tmp_path)
    sample = Sample("clip", "train", video_path=str(media["upright"]))
    good = load_face_clip(sample, COUNTING, ctx)
    path = face_cache_path(ctx, COUNTING, "clip")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "garbage": b"\x00\x01 not a zip" * 50,
                      "empty": b""}[damage])
    before = counting_calls()
    again = load_face_clip(sample, COUNTING, ctx)
    assert counting_calls() == before + 10                       # detected again ...
    np.testing.assert_array_equal(again.crops, good.crops)
    with np.load(path) as rewritten:                              # ... and the file rewritten
        np.testing.assert_array_equal(rewritten["crops"], good.crops)
    before = counting_calls()
    load_face_clip(sample, COUNTING, ctx)
    assert counting_calls() == before


def test_released_crops_are_read_not_cached(tmp_path):
    ctx = context(tmp_path)
    # MER2024/2025: openface_face/<name>/<name>.npy, uint8 [N, 112, 112, 3] BGR.
    bgr = np.zeros((40, 112, 112, 3), np.uint8)
    bgr[..., 0] = 200                                            # blue, in BGR order
    bgr[:, 0, 0, 1] = np.arange(40)                              # the frame number, in green
    folder = tmp_path / "openface_face" / "sample_00000002"
    folder.mkdir(parents=True)
    np.save(folder / "sample_00000002.npy", bgr)
    clip = load_face_clip(Sample("sample_00000002", "train", face_path=str(folder)),
                          FaceConfig(max_frames=8), ctx)
    assert clip.source == "release" and (clip.total_frames, clip.fps) == (40, 0.0)
    assert clip.crops.shape == (8, 112, 112, 3)
    assert clip.crops[..., 2].min() == 200 and clip.crops[..., 0].max() == 0     # now RGB
    assert clip.frame_index.tolist() == uniform_indices(40, 8).tolist()
    assert clip.crops[:, 0, 0, 1].tolist() == uniform_indices(40, 8).tolist()

    # MER2023: openface_face/<name>/ with one .bmp per frame, in natural order.
    bmps = tmp_path / "openface_face" / "sample_00000003"
    bmps.mkdir()
    for i in range(1, 13):                                       # OpenFace's names
        cv2.imwrite(str(bmps / f"frame_det_00_{i:06d}.bmp"), np.full((112, 112, 3), (0, 0, 10 * i), np.uint8))
    clip = load_face_clip(Sample("sample_00000003", "train", face_path=str(bmps)),
                          FaceConfig(max_frames=0, size=64), ctx)
    assert clip.crops.shape == (12, 64, 64, 3) and clip.total_frames == 12
    assert clip.crops[:, 5, 5, 0].tolist() == [10 * i for i in range(1, 13)]    # red, in order
    assert not (tmp_path / "cache").exists()                     # nothing was cached


_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from feature_extractors.base import ExtractContext
    from feature_extractors.visual.faces import FACE_DETECTORS, FaceConfig, HaarFaceDetector, load_face_clip
    from mer.data.manifest import Sample

    @FACE_DETECTORS.register("counting_haar")
    class Counting(HaarFaceDetector):
        calls = 0
        def detect(self, frame):
            type(self).calls += 1
            return super().detect(frame)

    go = Path({go!r})
    Path(sys.argv[1]).touch()                  # imported: ready to start
    while not go.exists():
        time.sleep(0.005)
    clip = load_face_clip(Sample("shared", "train", video_path={video!r}),
                          FaceConfig(detector="counting_haar", max_frames=0),
                          ExtractContext(cache_root={root!r}, dataset="demo"))
    print(Counting.calls, len(clip.crops), int(clip.crops.sum()))
""")


def test_two_processes_writing_the_same_clip_at_once(media, tmp_path):
    go = tmp_path / "go"
    script = _WORKER.format(repo=str(REPO), go=str(go), video=str(media["long"]),
                            root=str(tmp_path / "cache"))
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()                                                   # both start detecting now
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(out.split())
    assert results[0][1:] == results[1][1:]                     # the same crops in both
    assert [int(r[0]) for r in results] == [30, 30]             # both detected: a real race
    cfg = FaceConfig(detector="counting_haar", max_frames=0)
    path = face_cache_path(ExtractContext(cache_root=str(tmp_path / "cache"), dataset="demo"), cfg, "shared")
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) \
        == ["meta.json", "records.jsonl", "shared.npz"]                        # no temp file left
    assert not list(path.parent.glob(".*.tmp"))
    with np.load(path) as data:
        assert int(data["crops"].sum()) == int(results[0][2])


def test_face_options_from_hydra_mappings():
    cfg = face_config_from({"max_frames": 32, "align": False}, FaceConfig(size=96))
    assert (cfg.max_frames, cfg.align, cfg.size, cfg.detector) == (32, False, 96, "haar")
    with pytest.raises(TypeError, match="max_frame"):
        face_config_from({"max_frame": 3})
    assert math.isclose(face_config_from(None).margin, 0.1)
