"""Orientation tags: a phone stores a portrait clip sideways with a display matrix (or an older
``rotate`` tag) saying how to show it; frames are decoded upright, the face pipeline finds the face,
and the noise track's re-encoded copy shows what the source shows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from feature_extractors.visual.faces import FaceConfig, detect_face_clip  # noqa: E402
from feature_extractors.visual.video import read_frames, upright  # noqa: E402


def marked_frame(h: int = 48, w: int = 80) -> np.ndarray:
    """A dark frame, upright, with a white marker in its top-left corner."""
    frame = np.full((h, w, 3), 20, np.uint8)
    frame[:12, :12] = 255
    return frame


def write_video(path: Path, frames, *, ccw_deg: float | None = None, rotate_tag: str | None = None,
                fmt: str = "mp4") -> Path:
    """Frames stored as given; ``ccw_deg``: a display matrix asking players to turn them that many
    degrees anticlockwise; ``rotate_tag``: the older stream tag (degrees clockwise)."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("mpeg4", rate=10, options={"qscale": "2"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if ccw_deg is not None:
            stream.set_display_rotation(ccw_deg)
        if rotate_tag is not None:
            stream.metadata["rotate"] = rotate_tag
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def marker_corner(frame: np.ndarray) -> str:
    h, w = frame.shape[:2]
    corners = {"top-left": frame[:8, :8], "top-right": frame[:8, w - 8:],
               "bottom-left": frame[h - 8:, :8], "bottom-right": frame[h - 8:, w - 8:]}
    return max(corners, key=lambda k: corners[k].mean())


@pytest.mark.parametrize("ccw_deg", [90, -90, 180])
def test_display_matrix_turns_frames_upright(tmp_path, ccw_deg):
    shown = marked_frame()
    stored = np.rot90(shown, k=-round(ccw_deg / 90))          # what the camera wrote
    path = write_video(tmp_path / "phone.mp4", [stored] * 4, ccw_deg=ccw_deg)
    frames, _, total = read_frames(path, num_frames=2)
    assert total == 4
    assert frames.shape[1:3] == shown.shape[:2]
    assert all(marker_corner(f) == "top-left" for f in frames)
    assert np.abs(frames[0].astype(int) - shown).mean() < 4


def test_rotate_tag_without_matrix_is_honoured(tmp_path):
    shown = marked_frame()
    stored = np.rot90(shown, k=1)                # shown = stored turned 90 degrees clockwise
    path = write_video(tmp_path / "old.mkv", [stored] * 3, rotate_tag="90", fmt="matroska")
    frames, _, _ = read_frames(path, num_frames=1)
    assert frames.shape[1:3] == shown.shape[:2]
    assert marker_corner(frames[0]) == "top-left"


def test_untagged_clip_is_left_as_stored(tmp_path):
    stored = np.rot90(marked_frame(), k=1)
    frames, _, _ = read_frames(write_video(tmp_path / "plain.mp4", [stored] * 2), num_frames=1)
    assert frames.shape[1:3] == stored.shape[:2]
    assert marker_corner(frames[0]) == marker_corner(stored) == "bottom-left"


def test_mirror_in_matrix():
    image = marked_frame()
    mirror = np.array([-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30], np.int32)   # columns mirrored
    assert marker_corner(upright(image, mirror)) == "top-right"


def test_face_found_in_sideways_phone_clip(tmp_path):
    face = skdata.astronaut()[10:250, 60:380]                          # upright face, 240x320
    path = write_video(tmp_path / "portrait.mp4", [np.rot90(face, k=-1)] * 4, ccw_deg=90)
    clip = detect_face_clip(str(path), FaceConfig(detector="haar", max_frames=4), name="portrait")
    assert len(clip.crops) >= 3


def test_noisy_copy_keeps_orientation(tmp_path):
    from mer.data.corrupt import write_corrupted_container

    shown = marked_frame()
    src = write_video(tmp_path / "phone.mp4", [np.rot90(shown, k=-1)] * 3, ccw_deg=90)
    for blur in (1, 2):
        dst = tmp_path / f"blur{blur}.mp4"
        write_corrupted_container(str(src), str(dst), None, blur)
        frames, _, _ = read_frames(dst, num_frames=1)
        assert frames.shape[1:3] == shown.shape[:2]
        assert marker_corner(frames[0]) == "top-left"
