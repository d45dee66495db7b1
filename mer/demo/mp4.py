"""The demo's container: frames and a waveform muxed into an H.264 + AAC mp4, bytes a function of
the inputs alone."""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import av
import numpy as np

from .face import FPS
from .voice import SAMPLE_RATE_HZ


def write_mp4(path: str | Path | IO[bytes], frames: np.ndarray, audio: np.ndarray, fps: int = FPS,
              sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
    """Mux ``frames`` [T, H, W, 3] uint8 RGB and mono ``audio`` [N] float32 into an H.264 + AAC mp4.

    One encoder thread and fixed settings make the bytes a function of the inputs alone.
    """
    with av.open(os.fspath(path) if isinstance(path, (str, os.PathLike)) else path, mode="w",
                 format="mp4") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "superfast",
                                                                   "threads": "1"})
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.codec_context.thread_count = 1
        sound = container.add_stream("aac", rate=sample_rate_hz, layout="mono", options={"aac_coder": "fast"})
        sound.bit_rate = 64000
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            container.mux(video.encode(vf))
        container.mux(video.encode())
        block = 1024
        pcm = np.ascontiguousarray(audio, dtype=np.float32)
        for start in range(0, pcm.size, block):
            af = av.AudioFrame.from_ndarray(pcm[None, start:start + block], format="fltp", layout="mono")
            af.sample_rate = sample_rate_hz
            af.pts = start
            container.mux(sound.encode(af))
        container.mux(sound.encode())
