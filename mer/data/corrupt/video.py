"""Video corruption: MER-NOISE's pyramid blur, and the container writer that blurs a clip's frames
and swaps in its noisy audio (each untouched stream copied packet for packet)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import IO

import numpy as np

from feature_extractors.visual.video import read_display_matrix, upright

from .conditions import SAMPLE_RATE_HZ

_CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


def pyramid_blur(frame: np.ndarray, factor: int) -> np.ndarray:
    """MER-NOISE's video corruption: ``log2(factor)`` pyrDown then as many pyrUp (1 = untouched).

    Each pyrUp returns to the size before the matching pyrDown, so odd sizes round-trip too."""
    import cv2  # heavy: deferred until a frame is blurred

    steps = int(round(math.log2(factor)))
    sizes = []
    for _ in range(steps):
        sizes.append((frame.shape[1], frame.shape[0]))
        frame = cv2.pyrDown(frame)
    for size in reversed(sizes):
        frame = cv2.pyrUp(frame, dstsize=size)
    return frame


def write_corrupted_container(src: str, dst: str | IO[bytes], audio: np.ndarray | None, blur_factor: int,
                              sample_rate_hz: int = SAMPLE_RATE_HZ, container: str | None = None) -> None:
    """Write a copy of the media container ``src`` to ``dst``.

    Video: every frame blurred by ``blur_factor`` and re-encoded (MPEG-4 Part 2 at qscale 2, one
    thread, so the bytes depend on the input alone); copied packet for packet when the factor is 1.
    Audio:
    replaced by ``audio`` (``[N]`` float32 mono at ``sample_rate_hz``, AAC) or copied when None.
    The container format is ``container`` (an FFmpeg name), else follows ``dst``'s suffix (a path;
    a file object needs ``container``)."""
    import av  # heavy: deferred until a container is written

    fmt = container or _CONTAINER_FORMATS.get(Path(dst).suffix.lower(), "mp4")
    # Re-encoded frames are written upright (the source's orientation tag applied), so the copy
    # shows what the source shows in any container, tagged or not.
    matrix = read_display_matrix(src) if blur_factor != 1 else None
    with av.open(src) as inp, av.open(dst, mode="w", format=fmt) as out:
        vin = inp.streams.video[0] if inp.streams.video else None
        ain = inp.streams.audio[0] if inp.streams.audio else None
        copy_video = vin is not None and blur_factor == 1
        copy_audio = ain is not None and audio is None
        vout = aout = None
        if vin is not None:
            if copy_video:
                vout = out.add_stream_from_template(vin)
            else:
                rate = vin.average_rate or vin.guessed_rate or 25
                # MPEG-4 Part 2 (DivX), as the organisers wrote their noisy videos; unlike libx264 it
                # gives the same bytes on every run here (x264 did not, even on one thread).
                vout = out.add_stream("mpeg4", rate=rate, options={"qscale": "2"})
                shown_hw = upright(np.zeros((vin.codec_context.height, vin.codec_context.width, 0),
                                            np.uint8), matrix).shape[:2]
                vout.width = shown_hw[1] // 2 * 2                    # 4:2:0 needs even sizes
                vout.height = shown_hw[0] // 2 * 2
                vout.pix_fmt = "yuv420p"
                vout.codec_context.thread_count = 1
        if copy_audio:
            aout = out.add_stream_from_template(ain)
        elif audio is not None:
            aout = out.add_stream("aac", rate=sample_rate_hz, layout="mono", options={"aac_coder": "fast"})
            aout.bit_rate = 64000
        wanted = [s for s, keep in ((vin, vin is not None), (ain, copy_audio)) if keep]
        index = 0
        for packet in inp.demux(*wanted):
            if packet.stream is vin and not copy_video:
                for frame in packet.decode():
                    rgb = upright(frame.to_ndarray(format="rgb24"), matrix)[:vout.height, :vout.width]
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(pyramid_blur(rgb, blur_factor)),
                                                    format="rgb24")
                    vf.pts = index
                    index += 1
                    out.mux(vout.encode(vf))
                continue
            if packet.dts is None:                 # demuxer flush packets carry no data
                continue
            packet.stream = vout if packet.stream is vin else aout
            out.mux(packet)
        if vout is not None and not copy_video:
            out.mux(vout.encode())
        if audio is not None and aout is not None:
            pcm = np.ascontiguousarray(audio, dtype=np.float32)
            for start in range(0, pcm.size, 1024):
                af = av.AudioFrame.from_ndarray(pcm[None, start:start + 1024], format="fltp", layout="mono")
                af.sample_rate = sample_rate_hz
                af.pts = start
                out.mux(aout.encode(af))
            out.mux(aout.encode())
