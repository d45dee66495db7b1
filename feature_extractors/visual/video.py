"""Reading frames for visual extractors: video files (PyAV) and pre-cropped face tracks.

* :func:`read_frames` samples ``num_frames`` frames uniformly over a clip -> ``[T, H, W, 3]`` RGB;
  :func:`map_frames` does the same but hands each chosen frame to a function as it is decoded, so
  a long clip never sits in memory whole (the face pipeline keeps only the crops).
* :func:`read_face_npy` reads the organisers' face crops: MER2024/2025 ``openface_face/<name>/<name>.npy``
  (uint8 ``[N, 112, 112, 3]`` BGR) or a MER2023 folder of per-frame ``.bmp`` crops -> RGB;
  :func:`read_face_track` also says which of the N frames were read.

Frames come out upright: a clip's orientation tag (the display matrix phones write for portrait
clips, or an older ``rotate`` tag) is applied to every decoded frame (:func:`upright`), as
players do, so a face filmed on its side is found.

Every failure is a :class:`MediaError` (the one the audio readers raise too, so one ``except``
serves every modality) with a short ``reason`` (``missing_file``, ``no_video_stream``,
``decode_error``, ``no_frames``) and a message naming the file; ``err.to_failure(name)`` turns
it into an ``ExtractionFailure`` and the batch goes on.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from mer.core.failures import MediaError

T = TypeVar("T")

__all__ = ["MediaError", "display_matrix", "frames_to_sample", "map_frames", "read_face_npy",
           "read_display_matrix", "read_face_track", "read_frames", "uniform_indices", "upright", "video_rate"]


def uniform_indices(total: int, num: int) -> np.ndarray:
    """``num`` indices spread evenly over ``range(total)``: the centre of each of ``num`` equal
    segments (so the first and last frames, often fades, are not favoured). All of them, in
    order, when ``total <= num``. ``[min(total, num)]`` int64."""
    if total <= 0 or num <= 0:
        return np.zeros(0, dtype=np.int64)
    if total <= num:
        return np.arange(total, dtype=np.int64)
    return np.minimum(((np.arange(num) + 0.5) * total / num).astype(np.int64), total - 1)


def frames_to_sample(total: int, num_frames: int, sample_fps: float = 0.0, fps: float = 0.0) -> int:
    """How many of a clip's ``total`` frames to sample: ``num_frames`` (``<= 0``: every frame),
    or, with ``sample_fps > 0`` and a known ``fps``, one frame per ``1 / sample_fps`` seconds of
    the clip (at least one) capped by ``num_frames``. A clip shorter than that gives all it has."""
    count = total if num_frames <= 0 else min(total, num_frames)
    if sample_fps > 0 and fps > 0 and total > 0:
        count = min(count, max(1, int(round(total * sample_fps / fps))))
    return count


def read_frames(path: str | os.PathLike, num_frames: int = 8, sample_fps: float = 0.0
                ) -> tuple[np.ndarray, float, int]:
    """Decode a video and keep ``num_frames`` frames sampled uniformly over its length
    (``num_frames <= 0``: every frame; ``sample_fps``: see :func:`frames_to_sample`).

    Returns ``(frames, fps, total_frames)``: ``frames`` uint8 ``[T, H, W, 3]`` RGB with
    ``T = min(num_frames, total_frames)``; ``fps`` the stream's average rate (0.0 when the
    container does not say); ``total_frames`` the number of frames actually decoded.
    """
    frames, _, fps, total = map_frames(path, _identity, num_frames, sample_fps)
    return np.stack(frames), fps, total


def _identity(frame: np.ndarray) -> np.ndarray:
    return frame


def map_frames(path: str | os.PathLike, fn: Callable[[np.ndarray], T], num_frames: int = 8,
               sample_fps: float = 0.0) -> tuple[list[T], np.ndarray, float, int]:
    """``fn(frame)`` for each frame sampled uniformly over a video, called as the frame is decoded.

    ``frame`` is uint8 ``[H, W, 3]`` RGB. Returns ``(results, frame_index, fps, total_frames)``:
    one result per sampled frame in frame order, ``frame_index`` int64 ``[T]`` the frames they
    come from, ``fps`` the stream's average rate (0.0 when unknown), ``total_frames`` the number
    of frames actually decoded. How many frames: :func:`frames_to_sample`.

    Frames are decoded in order and only the chosen ones are converted to RGB. The container's
    frame count is a guess (absent in some formats, wrong in damaged files), so when the decoded
    count differs from the guess the clip is decoded once more for the frames the true count
    chooses (``fn`` runs only on those not done yet): the sample is then exactly uniform.
    Damaged packets are skipped (real corpora have clips with a damaged tail); only a clip with
    no decodable frame at all is a ``decode_error``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MediaError("missing_file", f"video file {path} does not exist")
    guess, fps = _probe(path)

    def choose(total: int) -> np.ndarray:
        return uniform_indices(total, frames_to_sample(total, num_frames, sample_fps, fps))

    results, total = _decode(path, choose(guess) if guess > 0 else None, fn)
    if total == 0:
        raise MediaError("no_frames", f"{path} has a video stream but no decodable frame")
    chosen = choose(total)
    missing = np.array([i for i in chosen if int(i) not in results], dtype=np.int64)
    if len(missing):
        more, _ = _decode(path, missing, fn)
        results.update(more)
    return [results[int(i)] for i in chosen], chosen, fps, total


def video_rate(path: str | os.PathLike | None) -> tuple[int, float]:
    """``(frame-count guess, fps)`` of a video from its container header (no decoding);
    ``(0, 0.0)`` when there is no such file or it cannot be read: the rate is then unknown."""
    if not path or not os.path.isfile(os.fspath(path)):
        return 0, 0.0
    try:
        return _probe(os.fspath(path))
    except MediaError:
        return 0, 0.0


def _probe(path: str) -> tuple[int, float]:
    """(frame-count guess, fps) from the container header: cheap, no decoding."""
    import av  # deferred: loads av only when used

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise MediaError("no_video_stream", f"{path} has no video stream "
                                                    f"({len(container.streams.audio)} audio)")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            guess = int(stream.frames or 0)
            if guess <= 0 and stream.duration and stream.time_base and fps > 0:
                guess = int(round(float(stream.duration * stream.time_base) * fps))
            return guess, fps
    except av.FFmpegError as err:
        raise MediaError("decode_error", f"cannot open {path}: {err}") from err


def _decode(path: str, keep: np.ndarray | None, fn: Callable[[np.ndarray], T]) -> tuple[dict[int, T], int]:
    """Decode every frame in order, converting to RGB and passing to ``fn`` only the indices in
    ``keep`` (none when ``keep`` is None: a counting pass). Returns ({index: fn(frame)}, number
    of frames decoded).

    A packet the decoder rejects is skipped, as FFmpeg's own tools do, and a read error ends the
    clip: a damaged tail costs the frames it holds, not the clip. Only a clip of which not one
    frame decodes raises ``decode_error``.
    """
    import av  # deferred: loads av only when used

    wanted = set(int(i) for i in keep) if keep is not None else set()
    kept: dict[int, T] = {}
    total = 0
    first_error: Exception | None = None
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rotate_tag = stream.metadata.get("rotate") or stream.metadata.get("ROTATE")
            # No frame threading: with it a rejected packet also loses the frames queued in
            # the other threads, so a clip with a damaged tail could yield none at all.
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as err:           # unreadable container data: stop here
                    first_error = first_error or err
                    break
                try:
                    for frame in packet.decode():       # the last (empty) packet flushes
                        if total in wanted:
                            matrix = display_matrix(frame, rotate_tag)
                            kept[total] = fn(upright(frame.to_ndarray(format="rgb24"), matrix))
                        total += 1
                except av.FFmpegError as err:
                    first_error = first_error or err
    except av.FFmpegError as err:
        raise MediaError("decode_error", f"cannot open {path}: {err}") from err
    if total == 0 and first_error is not None:
        raise MediaError("decode_error", f"cannot decode any frame of {path}: {first_error}")
    return kept, total


def display_matrix(frame, rotate_tag: str | None = None) -> np.ndarray | None:
    """The 3x3 display matrix (int32 ``[9]``, FFmpeg's layout) of a decoded PyAV video frame, or
    None when the clip is stored upright. Without the matrix side data, a ``rotate`` stream tag
    (degrees clockwise, as older muxers and Matroska files carry it) gives the matrix instead."""
    from av.sidedata.sidedata import Type  # deferred: loads av only when used

    side = frame.side_data.get(Type.DISPLAYMATRIX)
    if side is not None:
        matrix = np.frombuffer(bytes(side), dtype="<i4")
        if matrix.size == 9:
            return matrix
    if rotate_tag:
        try:
            quarter = int(round(float(rotate_tag) / 90.0)) % 4
        except ValueError:
            return None
        # A clockwise turn of 90 degrees sends (col, row) to (-row, col): FFmpeg's matrix for it.
        a, b, c, d = {0: (1, 0, 0, 1), 1: (0, 1, -1, 0), 2: (-1, 0, 0, -1), 3: (0, -1, 1, 0)}[quarter]
        return np.array([a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30], dtype=np.int32)
    return None


def read_display_matrix(path: str | os.PathLike) -> np.ndarray | None:
    """:func:`display_matrix` of a video's first frame (None when upright or undecodable)."""
    import av  # deferred: loads av only when used

    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            tag = stream.metadata.get("rotate") or stream.metadata.get("ROTATE")
            for frame in container.decode(stream):
                return display_matrix(frame, tag)
    except av.FFmpegError:
        return None
    return None


def upright(image: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """``image`` ``[H, W, C]`` as it is meant to be shown: the quarter turns and mirrors of the
    display ``matrix`` (FFmpeg's row-vector convention: a stored pixel at column ``p``, row ``q``
    is shown at column ``a p + c q``, row ``b p + d q``) applied. A matrix that is not a multiple
    of a quarter turn (rare; players resample it) is applied to the nearest quarter turn."""
    if matrix is None:
        return image
    a, b, _, c, d = (int(v) for v in np.asarray(matrix[:5]))
    if abs(a) + abs(d) >= abs(b) + abs(c):           # no quarter turn: mirrors at most
        flip_cols, flip_rows, out = a < 0, d < 0, image
    else:                                            # shown column from row q, shown row from column p
        flip_cols, flip_rows, out = c < 0, b < 0, image.transpose(1, 0, *range(2, image.ndim))
    if flip_rows:
        out = out[::-1]
    if flip_cols:
        out = out[:, ::-1]
    return out if out is image else np.ascontiguousarray(out)


def read_face_npy(path: str | os.PathLike, num_frames: int | None = None) -> np.ndarray:
    """Pre-cropped face frames as uint8 ``[T, H, W, 3]`` RGB.

    ``path`` is one of: a ``.npy`` of ``[N, H, W, 3]`` BGR crops (MER2024/2025
    ``openface_face/<name>/<name>.npy``); a folder holding ``<folder name>.npy`` (or exactly one
    ``.npy``); a folder of per-frame ``.bmp``/``.jpg``/``.png`` crops (MER2023), read in natural
    order (``frame_2`` before ``frame_10``). With ``num_frames`` only that many frames, spread
    uniformly, are read (the ``.npy`` is memory-mapped, so long tracks cost nothing extra).
    """
    return read_face_track(path, num_frames)[0]


def read_face_track(path: str | os.PathLike, num_frames: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`read_face_npy` that also says what it read: ``(crops [T, H, W, 3] RGB,
    frame_index int64 [T] into the track, track length N)``."""
    p = Path(path)
    if not p.exists():
        raise MediaError("missing_file", f"face crops {p} do not exist")
    if p.is_dir():
        npys = sorted(p.glob("*.npy"))
        named = p / f"{p.name}.npy"
        if named.is_file():
            return _read_npy(named, num_frames)
        if len(npys) == 1:
            return _read_npy(npys[0], num_frames)
        if len(npys) > 1:
            raise MediaError("decode_error", f"{p} holds {len(npys)} .npy files and none is "
                                             f"named {p.name}.npy; which one is the face track?")
        return _read_image_folder(p, num_frames)
    return _read_npy(p, num_frames)


def _read_npy(path: Path, num_frames: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    try:
        track = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise MediaError("decode_error", f"cannot read face crops {path}: {err}") from err
    if track.ndim != 4 or track.shape[-1] != 3 or track.dtype != np.uint8:
        raise MediaError("decode_error", f"face crops {path} are {track.dtype} {track.shape}, "
                                         "expected uint8 [N, H, W, 3]")
    if len(track) == 0:
        raise MediaError("no_frames", f"face crops {path} hold no frame")
    idx = uniform_indices(len(track), num_frames) if num_frames else np.arange(len(track))
    try:
        crops = np.ascontiguousarray(track[idx][..., ::-1])         # BGR (OpenFace/cv2) -> RGB
    except (ValueError, OSError) as err:                             # a truncated file
        raise MediaError("decode_error", f"cannot read face crops {path}: {err}") from err
    return crops, idx.astype(np.int64), len(track)


_IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png")


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _read_image_folder(folder: Path, num_frames: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    import cv2  # deferred: loads cv2 only when used

    files = sorted((f for f in folder.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES),
                   key=lambda f: _natural_key(f.name))
    if not files:
        raise MediaError("no_frames", f"face folder {folder} holds no .npy and no image")
    idx = uniform_indices(len(files), num_frames) if num_frames else np.arange(len(files))
    frames = []
    for i in idx:
        img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise MediaError("decode_error", f"cannot read face image {files[i]}")
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if len({f.shape for f in frames}) != 1:
        raise MediaError("decode_error", f"face images in {folder} differ in size")
    return np.stack(frames), idx.astype(np.int64), len(files)
