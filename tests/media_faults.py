"""A corrupt-media corpus written by the tests: the kinds of broken files real MER releases ship,
mixed with good clips. :func:`write_corpus` returns ``(good, bad)`` lists of Samples; every bad
sample's ``meta["fault"]`` names what is wrong with it."""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from mer import demo
from mer.core.samples import Sample

FPS = demo.FPS
SR = demo.SAMPLE_RATE_HZ


def good_clip(path: Path, seed: int, seconds: float = 1.6) -> None:
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    frames = demo.render_frames("happy", 0.8, n, demo.draw_face_shot(rng), rng)
    audio = demo.synth_voice("happy", 0.8, demo.draw_speaker(rng), seconds, rng)
    demo.write_mp4(path, frames, audio)


def _video_only(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), mode="w", format="mp4") as c:
        v = c.add_stream("libx264", rate=FPS, options={"preset": "superfast", "threads": "1"})
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = i
            c.mux(v.encode(vf))
        c.mux(v.encode())


def _audio_only_mp4(path: Path, audio: np.ndarray) -> None:
    with av.open(str(path), mode="w", format="mp4") as c:
        s = c.add_stream("aac", rate=SR, layout="mono")
        for start in range(0, audio.size, 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, start:start + 1024], np.float32),
                                            format="fltp", layout="mono")
            af.sample_rate, af.pts = SR, start
            c.mux(s.encode(af))
        c.mux(s.encode())


def _zero_frames(path: Path) -> None:
    with av.open(str(path), mode="w", format="mp4") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"


def write_corpus(root: Path, n_good: int = 4, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    root.mkdir(parents=True, exist_ok=True)
    good: list[Sample] = []
    for i in range(n_good):
        p = root / f"good_{i}.mp4"
        good_clip(p, seed + i)
        good.append(Sample(f"good_{i}", "train", video_path=str(p), audio_path=str(p),
                           transcripts={"english": "I am so happy today, this is wonderful."}))
    ref = root / "good_0.mp4"
    data = ref.read_bytes()
    rng = np.random.default_rng(seed)
    bad: list[Sample] = []

    def add(name: str, fault: str, path: Path | None, transcript: str | None = "fine words here") -> None:
        p = str(path) if path is not None else None
        bad.append(Sample(name, "train", video_path=p, audio_path=p,
                          transcripts={} if transcript is None else {"english": transcript}, meta={"fault": fault}))

    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    add("bad_truncated", "truncated mp4 (first third of the bytes)", root / "truncated.mp4")
    (root / "empty.mp4").write_bytes(b"")
    add("bad_empty", "empty file", root / "empty.mp4", transcript="")
    (root / "noise.mp4").write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    add("bad_random", "random bytes named .mp4", root / "noise.mp4")
    _zero_frames(root / "zero_frames.mp4")
    add("bad_zero_frames", "mp4 with a video stream and no frame", root / "zero_frames.mp4")
    audio = demo.synth_voice("sad", 0.5, demo.draw_speaker(rng), 1.0, rng)
    _audio_only_mp4(root / "no_video.mp4", audio)
    add("bad_no_video", "no video stream (audio only)", root / "no_video.mp4", transcript=None)
    frames = demo.render_frames("angry", 0.9, 12, demo.draw_face_shot(rng), rng)
    _video_only(root / "no_audio.mp4", frames)
    add("bad_no_audio", "no audio stream (video only)", root / "no_audio.mp4")
    demo.write_mp4(root / "silent.mp4", frames, np.zeros(int(0.5 * SR), np.float32))
    add("bad_silent", "silent audio", root / "silent.mp4")
    sf.write(root / "nan.wav", np.full(SR, np.nan, np.float32), SR, subtype="FLOAT")
    add("bad_nan_audio", "NaN samples in a float wav", root / "nan.wav")
    _video_only(root / "one_frame.mp4", np.zeros((1, 64, 64, 3), np.uint8))
    add("bad_one_black_frame", "one black frame, no audio", root / "one_frame.mp4")
    (root / "huge.y4m.mp4").write_bytes(b"YUV4MPEG2 W60000 H60000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x00" * 4096)
    add("bad_absurd_resolution", "header claims 60000x60000 frames", root / "huge.y4m.mp4")
    sf.write(root / "speech_as_video.mp4", audio, SR, format="WAV")
    add("bad_wrong_extension", "a wav file named .mp4", root / "speech_as_video.mp4")
    (root / "a_folder.mp4").mkdir(exist_ok=True)
    add("bad_directory", "a directory where the clip should be", root / "a_folder.mp4")
    add("bad_missing", "file does not exist", root / "not_there.mp4")
    fifo = root / "stuck.mp4"
    if not fifo.exists():
        os.mkfifo(fifo)
    add("bad_hang_fifo", "a named pipe nobody writes to: opening it blocks forever", fifo)
    add("bad_no_media", "no media path and no transcript", None, transcript=None)
    add("bad_undecodable_text", "transcript of undecodable bytes", None, transcript="caf\ufffd \ufffd\ufffd")
    return good, bad
