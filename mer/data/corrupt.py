"""MER-NOISE corruption as the organisers made it, made reproducible and recorded.

Per clip (MER2023 ``main-corrupt.py``; MER2024 ``main-noise.py``):

* audio: speech noise mixed at an SNR drawn from the integers 5..10 dB. The noise is scaled so
  that ``RMS(clean) / RMS(noise)`` is the SNR, added, and the whole mix scaled down if it would
  clip (never hard-clipped);
* video: a blur factor drawn from {1, 2, 4}: ``log2(factor)`` x ``cv2.pyrDown`` then as many
  ``cv2.pyrUp``, the same factor for every frame of the clip (1 = untouched).

Conditions (the cache condition of corrupted features has the same name):

==================  =====================================================================
``clean``           untouched
``mixed``           the organisers' protocol: SNR and blur factor drawn per clip
``snr<k>``          audio at ``k`` dB SNR, video untouched (a point of a robustness curve)
``blur<f>``         video blurred by ``f``, audio untouched
``snr<k>_blur<f>``  both, fixed
==================  =====================================================================

Noise: a MUSAN-style folder of speech files (``noise_dir``; MUSAN's speech subset is what the
organisers used, because music and noise "convey emotion"): random files concatenated until
longer than the clip, then a random crop. Offline default: babble, ``babble_talkers`` such streams
built from *other* utterances of the same dataset, each RMS-normalised, summed.

Reproducibility: every random choice for a clip comes from a generator seeded by (seed, clip name,
purpose), never by call order, so the same seed gives byte-identical files for any number of
workers or any subset of clips. The noise segment of a clip does not depend on the condition:
``snr5`` and ``snr10`` of a clip carry the same noise at two levels, so a robustness curve
compares like with like. What each clip drew is saved beside it (``<clip>.corruption.json``) and
per split (``<split>-corruption.csv``: ``name,snr_db,blur_factor,noise``).

Where corrupted material lives: a corrupted copy of the media in the dataset's release layout
(each clip at its relative path, the release's top-level files copied), written once per
(dataset, condition, settings) under ``<cache>/corrupted/<dataset>/<condition>/``. A manifest
pointing at the copy lets every extractor run unchanged. Containers are rewritten packet for
packet where a stream is untouched (``snr7`` keeps the video's bytes; ``blur4`` the audio's), so an
untouched modality's features equal the clean ones. ``python -m mer.corrupt`` writes the same
copy of a whole dataset anywhere, to share or inspect.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

CORRUPTION_VERSION = 1
"""Bump whenever the corrupted bytes change for the same settings (it is in every copy's identity)."""

SAMPLE_RATE_HZ = 16000
"""The organisers demux to 16 kHz mono before mixing; the noisy audio is written at this rate."""

SNR_CHOICES_DB: tuple[int, ...] = tuple(range(5, 11))
BLUR_CHOICES: tuple[int, ...] = (1, 2, 4)

NOISE_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".m4a")
SETTINGS_FILE = "corruption.json"
SIDECAR_SUFFIX = ".corruption.json"
_CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
_SKIP_TOP_LEVEL = re.compile(r"(^|-)corruption\.(csv|json)$")


# ----------------------------------------------------------------------------------------------
# Signal operations
# ----------------------------------------------------------------------------------------------


def no_clip(x: np.ndarray, limit: float = 0.99) -> np.ndarray:
    """Scale the whole signal down if it would clip (as MER-NOISE does), never hard-clip it."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (limit / peak) if peak > limit else x


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """MER-NOISE's mixing: scale ``noise`` so RMS(clean)/RMS(noise) is ``snr_db``, add, avoid clipping.

    ``clean`` and ``noise`` are ``[N]``; returns float32 ``[N]``."""
    rms_clean = np.sqrt(np.mean(clean.astype(np.float64) ** 2))
    rms_noise = np.sqrt(np.mean(noise.astype(np.float64) ** 2)) + 1e-12
    noisy = clean + noise * (rms_clean / 10 ** (snr_db / 20)) / rms_noise
    return no_clip(noisy).astype(np.float32)


def pyramid_blur(frame: np.ndarray, factor: int) -> np.ndarray:
    """MER-NOISE's video corruption: ``log2(factor)`` pyrDown then as many pyrUp (1 = untouched).

    Each pyrUp returns to the size before the matching pyrDown, so odd sizes round-trip too."""
    import cv2

    steps = int(round(math.log2(factor)))
    sizes = []
    for _ in range(steps):
        sizes.append((frame.shape[1], frame.shape[0]))
        frame = cv2.pyrDown(frame)
    for size in reversed(sizes):
        frame = cv2.pyrUp(frame, dstsize=size)
    return frame


# ----------------------------------------------------------------------------------------------
# Conditions and settings
# ----------------------------------------------------------------------------------------------

_CONDITION = re.compile(r"^(?:snr(?P<snr>-?\d+))?(?:(?:^|_)blur(?P<blur>\d+))?$")


@dataclass(frozen=True)
class Condition:
    """A named way of corrupting clips; see the module docstring for the names."""

    name: str
    snr_db: int | None = None
    blur_factor: int | None = None
    drawn: bool = False

    @property
    def is_clean(self) -> bool:
        return self.name == "clean"

    @property
    def touches_audio(self) -> bool:
        return self.drawn or self.snr_db is not None

    @property
    def touches_video(self) -> bool:
        return self.drawn or (self.blur_factor or 1) > 1

    def touches(self, modality: str) -> bool:
        """Whether features of ``modality`` (``audio``, ``visual``, ``text``) can change; text
        changes only through ASR of the noisy audio, which the caller knows about."""
        return {"audio": self.touches_audio, "visual": self.touches_video}.get(modality, False)


def parse_condition(name: str) -> Condition:
    """``clean`` | ``mixed`` | ``snr<k>`` | ``blur<f>`` | ``snr<k>_blur<f>`` (``f`` a power of 2)."""
    name = str(name).strip()
    if name == "clean":
        return Condition("clean")
    if name == "mixed":
        return Condition("mixed", drawn=True)
    m = _CONDITION.match(name)
    if not name or not m or (m["snr"] is None and m["blur"] is None):
        raise ValueError(f"unknown corruption condition {name!r}: use clean, mixed, snr<k> (e.g. snr7), "
                         f"blur<f> (f in 1, 2, 4, 8...) or snr<k>_blur<f>")
    blur = int(m["blur"]) if m["blur"] is not None else None
    if blur is not None and (blur < 1 or blur & (blur - 1)):
        raise ValueError(f"condition {name!r}: the blur factor must be a power of 2 (1, 2, 4, 8...)")
    return Condition(name, snr_db=int(m["snr"]) if m["snr"] is not None else None, blur_factor=blur)


@dataclass(frozen=True)
class CorruptionSettings:
    """How clips are corrupted, besides the condition: the seed, the noise, what ``mixed`` draws."""

    seed: int = 0
    noise_dir: str | None = None
    babble_talkers: int = 4
    snr_choices_db: tuple[int, ...] = SNR_CHOICES_DB
    blur_choices: tuple[int, ...] = BLUR_CHOICES

    def __post_init__(self) -> None:
        if self.babble_talkers < 1:
            raise ValueError("corruption.babble_talkers must be at least 1")
        if not self.snr_choices_db or not self.blur_choices:
            raise ValueError("corruption.snr_choices_db and corruption.blur_choices must not be empty")
        for f in self.blur_choices:
            if f < 1 or f & (f - 1):
                raise ValueError(f"corruption.blur_choices: {f} is not a power of 2")
        if self.noise_dir and not Path(self.noise_dir).is_dir():
            raise ValueError(f"corruption.noise_dir={self.noise_dir} is not a folder; point it at a folder "
                             f"of speech recordings (e.g. musan/speech) or set it to null for babble")

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> "CorruptionSettings":
        node = dict(node or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ValueError(f"unknown corruption option(s) {unknown}; options: {sorted(known)}")
        kw = {k: node[k] for k in known if k in node and node[k] is not None}
        for k in ("snr_choices_db", "blur_choices"):
            if k in kw:
                kw[k] = tuple(int(x) for x in kw[k])
        if "noise_dir" in kw:
            kw["noise_dir"] = str(Path(str(kw["noise_dir"])).expanduser())
        return cls(**kw)

    def noise_id(self) -> str:
        return f"folder:{folder_listing_digest(self.noise_dir)}" if self.noise_dir else \
            f"babble:{self.babble_talkers}"

    def identity(self, condition: Condition) -> dict[str, Any]:
        """Everything that decides the corrupted bytes of a condition (stored with every copy)."""
        out: dict[str, Any] = {"version": CORRUPTION_VERSION, "condition": condition.name, "seed": self.seed}
        if condition.touches_audio:
            out["noise"] = self.noise_id()
        if condition.drawn:
            out["snr_choices_db"] = list(self.snr_choices_db)
            out["blur_choices"] = list(self.blur_choices)
        return out

    def tag(self, condition: Condition | str) -> str:
        """The cache condition name: the condition's own name with the default settings
        (seed 0, babble of 4 talkers, the official draws), else ``<name>-<hash6>``."""
        condition = parse_condition(condition) if isinstance(condition, str) else condition
        if condition.is_clean:
            return "clean"
        if self.identity(condition) == CorruptionSettings().identity(condition):
            return condition.name
        digest = hashlib.sha256(json.dumps(self.identity(condition), sort_keys=True).encode()).hexdigest()
        return f"{condition.name}-{digest[:6]}"


def folder_listing_digest(folder: str | os.PathLike) -> str:
    """sha256 of a noise folder's file names and sizes (cheap; a changed folder changes the digest)."""
    h = hashlib.sha256()
    for path in _noise_files(folder):
        h.update(f"{os.path.relpath(path, folder)}\0{os.path.getsize(path)}\n".encode())
    return h.hexdigest()[:16]


def _noise_files(folder: str | os.PathLike) -> list[str]:
    out = [os.path.join(r, f) for r, _, files in os.walk(folder) for f in files if f.lower().endswith(NOISE_EXTS)]
    return sorted(out)


def clip_rng(seed: int, name: str, purpose: str) -> np.random.Generator:
    """A generator that depends only on (seed, name, purpose), never on call order."""
    digest = hashlib.sha256(f"corrupt\x00{name}\x00{purpose}".encode()).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def draw_levels(settings: CorruptionSettings, condition: Condition, name: str) -> tuple[int | None, int]:
    """``(snr_db or None, blur_factor)`` of one clip under ``condition``."""
    if condition.drawn:
        rng = clip_rng(settings.seed, name, "levels")
        snr = int(settings.snr_choices_db[int(rng.integers(len(settings.snr_choices_db)))])
        blur = int(settings.blur_choices[int(rng.integers(len(settings.blur_choices)))])
        return snr, blur
    return condition.snr_db, condition.blur_factor or 1


# ----------------------------------------------------------------------------------------------
# Noise sources
# ----------------------------------------------------------------------------------------------


@dataclass
class NoiseSource:
    """Speech noise for a clip: ``talkers`` streams, each random recordings of ``sources``
    concatenated until longer than the clip then randomly cropped, RMS-normalised and summed.

    ``sources`` is ``[(id, path)]`` sorted by id: files of a noise folder, or (name, media path)
    of a dataset's utterances, in which case a clip never hears itself."""

    sources: list[tuple[str, str]]
    talkers: int = 1
    kind: str = "folder"
    _decoded: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: CorruptionSettings, babble_pool: Sequence[tuple[str, str]] = ()
                      ) -> "NoiseSource":
        if settings.noise_dir:
            files = _noise_files(settings.noise_dir)
            if not files:
                raise ValueError(f"corruption.noise_dir={settings.noise_dir} holds no audio files "
                                 f"({', '.join(NOISE_EXTS)})")
            return cls([(os.path.relpath(p, settings.noise_dir), p) for p in files], 1, "folder")
        pool = sorted(babble_pool)
        if len(pool) < 2:
            raise ValueError("babble needs other utterances of the dataset, and it has fewer than 2 clips "
                             "with audio; set corruption.noise_dir=/path/to/musan/speech")
        return cls(pool, settings.babble_talkers, "babble")

    def _load(self, path: str) -> np.ndarray:
        from feature_extractors.audio.io import load_audio

        wav = self._decoded.get(path)
        if wav is None:
            if len(self._decoded) > 256:          # bounded: a worker meets thousands of sources
                self._decoded.clear()
            wav = self._decoded[path] = load_audio(path, SAMPLE_RATE_HZ).astype(np.float64)
        return wav

    def _stream(self, n: int, rng: np.random.Generator, exclude: str | None, used: list[str]) -> np.ndarray:
        parts, total, tries = [], 0, 0
        while total <= n:
            tries += 1
            if tries > 50 + 4 * max(1, n // SAMPLE_RATE_HZ):
                raise RuntimeError(f"no usable noise after {tries - 1} picks from {len(self.sources)} "
                                   f"{self.kind} sources (silent or undecodable)")
            sid, path = self.sources[int(rng.integers(len(self.sources)))]
            if sid == exclude:
                continue
            try:
                wav = self._load(path)
            except Exception as err:  # noqa: BLE001 - a broken source is skipped, not fatal
                log.debug("noise source %s skipped: %s", path, err)
                continue
            if wav.size == 0 or np.sqrt(np.mean(wav ** 2)) < 1e-5:
                continue
            parts.append(wav)
            used.append(sid)
            total += wav.size
        joined = np.concatenate(parts)
        start = int(rng.integers(0, joined.size - n + 1))
        return joined[start:start + n]

    def noise_for(self, name: str, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
        """``([n] float64 noise, ids of the recordings used)`` for the clip ``name``; the same for
        every condition and call order."""
        rng = clip_rng(seed, name, "noise")
        used: list[str] = []
        out = np.zeros(n)
        for _ in range(self.talkers):
            s = self._stream(n, rng, name if self.kind == "babble" else None, used)
            out += s / (np.sqrt(np.mean(s ** 2)) + 1e-12)
        return out, used


def babble_pool(samples: Iterable[Any]) -> list[tuple[str, str]]:
    """``[(name, media path)]`` of every sample with audio (an audio file, else its video)."""
    return sorted((s.name, s.audio_path or s.video_path) for s in samples if s.audio_path or s.video_path)


# ----------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------


def write_corrupted_container(src: str, dst: str, audio: np.ndarray | None, blur_factor: int,
                              sample_rate_hz: int = SAMPLE_RATE_HZ, container: str | None = None) -> None:
    """Write a copy of the media container ``src`` to ``dst``.

    Video: every frame blurred by ``blur_factor`` and re-encoded (MPEG-4 Part 2 at qscale 2, one
    thread, so the bytes depend on the input alone); copied packet for packet when the factor is 1.
    Audio:
    replaced by ``audio`` (``[N]`` float32 mono at ``sample_rate_hz``, AAC) or copied when None.
    The container format is ``container`` (an FFmpeg name), else follows ``dst``'s suffix."""
    import av

    from feature_extractors.visual.video import read_display_matrix, upright

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


def _write_wav(path: str, audio: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
    import soundfile as sf

    sf.write(path, np.asarray(audio, np.float32), sample_rate_hz, subtype="PCM_16", format="WAV")


# ----------------------------------------------------------------------------------------------
# One clip
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipJob:
    """One clip to corrupt: where its media are and where the corrupted copies go."""

    name: str
    split: str
    video_src: str | None
    audio_src: str | None
    video_dst: str | None
    audio_dst: str | None
    sidecar: str


def _atomic(dst: str) -> str:
    return f"{dst}.{uuid.uuid4().hex[:8]}.tmp"


def corrupt_clip(job: ClipJob, condition: Condition, settings: CorruptionSettings, noise: NoiseSource
                 ) -> dict[str, Any]:
    """Write the corrupted media of one clip and its sidecar (last); returns the sidecar record."""
    from feature_extractors.audio.io import MediaError, load_audio

    snr_db, blur = draw_levels(settings, condition, job.name)
    record: dict[str, Any] = {"name": job.name, "split": job.split, **settings.identity(condition),
                              "snr_db": snr_db, "blur_factor": blur, "noise": [], "note": ""}
    Path(job.sidecar).parent.mkdir(parents=True, exist_ok=True)
    noisy = None
    try:
        if snr_db is not None:
            try:
                clean = load_audio(job.audio_src or job.video_src, SAMPLE_RATE_HZ)
            except MediaError as err:
                record["note"] = f"audio left as is: {err.reason}"
                record["snr_db"] = None
            else:
                wave, used = noise.noise_for(job.name, clean.size, settings.seed)
                noisy = mix_at_snr(clean, wave, snr_db)
                record["noise"] = used
        if job.video_src and job.video_dst:
            if not (job.video_src.lower().endswith(tuple(_CONTAINER_FORMATS))):
                record["note"] += " (unknown container: written as mp4)"
            Path(job.video_dst).parent.mkdir(parents=True, exist_ok=True)
            tmp = _atomic(job.video_dst)
            try:
                # A clip with its own audio file: its video's soundtrack gets the same noisy audio.
                write_corrupted_container(job.video_src, tmp, noisy, blur, container=_CONTAINER_FORMATS.get(
                    Path(job.video_dst).suffix.lower(), "mp4"))
                os.replace(tmp, job.video_dst)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        if job.audio_src and job.audio_dst:
            Path(job.audio_dst).parent.mkdir(parents=True, exist_ok=True)
            tmp = _atomic(job.audio_dst)
            try:
                if noisy is not None:
                    _write_wav(tmp, noisy)
                else:
                    shutil.copyfile(job.audio_src, tmp)
                os.replace(tmp, job.audio_dst)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
    except Exception as err:  # noqa: BLE001 - one broken clip is recorded, the rest go on
        record["error"] = f"{type(err).__name__}: {err}"
    record["note"] = record["note"].strip()
    tmp = _atomic(job.sidecar)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False, indent=1)
    os.replace(tmp, job.sidecar)
    return record


# Worker processes get the (possibly large) noise source once, not with every clip.
_WORKER: dict[str, Any] = {}


def _worker_init(condition: Condition, settings: CorruptionSettings, noise: NoiseSource) -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism
    _WORKER.update(condition=condition, settings=settings, noise=noise)


def _worker_clip(job: ClipJob) -> dict[str, Any]:
    return corrupt_clip(job, _WORKER["condition"], _WORKER["settings"], _WORKER["noise"])


# ----------------------------------------------------------------------------------------------
# A dataset
# ----------------------------------------------------------------------------------------------


@dataclass
class CorruptedCopy:
    """The corrupted copy of some clips of a dataset: ``samples`` point at the corrupted media
    (``None`` paths where a clip could not be corrupted), ``records`` are the sidecars."""

    root: Path
    condition: Condition
    tag: str
    samples: list[Any]
    records: dict[str, dict[str, Any]]

    @property
    def failed(self) -> dict[str, str]:
        return {n: r["error"] for n, r in self.records.items() if "error" in r}


def _relative(path: str, src_root: Path | None, split: str) -> str:
    if src_root is not None:
        try:
            rel = os.path.relpath(os.path.realpath(path), os.path.realpath(src_root))
            if not rel.startswith(".."):
                return rel
        except ValueError:
            pass
    return os.path.join(split, os.path.basename(path))


def _dst(rel: str) -> str:
    stem, suffix = os.path.splitext(rel)
    known = suffix.lower() in _CONTAINER_FORMATS or suffix.lower() in {".wav", ".flac", ".ogg"}
    if suffix.lower() in {".flac", ".ogg"}:
        return stem + ".wav"            # noisy audio is written as 16-bit PCM wav
    return rel if known else stem + ".mp4"


def plan_jobs(samples: Sequence[Any], out_root: Path, src_root: Path | None) -> list[ClipJob]:
    jobs = []
    for s in samples:
        if not (s.video_path or s.audio_path):
            continue
        v_rel = _relative(s.video_path, src_root, s.split) if s.video_path else None
        a_rel = _relative(s.audio_path, src_root, s.split) if s.audio_path else None
        v_dst = str(out_root / _dst(v_rel)) if v_rel else None
        a_dst = str(out_root / _dst(a_rel)) if a_rel else None
        primary = v_dst or a_dst
        jobs.append(ClipJob(s.name, s.split, s.video_path, s.audio_path, v_dst, a_dst,
                            os.path.splitext(primary)[0] + SIDECAR_SUFFIX))
    return jobs


def _check_settings(out_root: Path, identity: Mapping[str, Any], source_root: str | None) -> None:
    path = out_root / SETTINGS_FILE
    want = {"corruption": dict(identity), "source_root": source_root}
    if path.is_file():
        have = json.loads(path.read_text(encoding="utf-8"))
        if have.get("corruption") != want["corruption"]:
            raise RuntimeError(f"{out_root} holds clips corrupted with other settings "
                               f"({have.get('corruption')} instead of {want['corruption']}); "
                               f"delete that folder or write to another one")
        return
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = _atomic(str(path))
    Path(tmp).write_text(json.dumps(want, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def copy_release_files(src_root: str | os.PathLike | None, out_root: Path) -> list[str]:
    """Copy the files directly in the release's root (labels, transcripts, name lists) so the copy
    reads like the release; corruption records of the source are not copied."""
    if not src_root or not Path(src_root).is_dir():
        return []
    copied = []
    for p in sorted(Path(src_root).iterdir()):
        if p.is_file() and not _SKIP_TOP_LEVEL.search(p.name) and p.name != SETTINGS_FILE:
            dst = out_root / p.name
            if not dst.exists() or dst.stat().st_size != p.stat().st_size:
                shutil.copyfile(p, dst)
            copied.append(p.name)
    return copied


SPLIT_TABLE_COLUMNS = ("name", "snr_db", "blur_factor", "noise", "note")


def write_split_tables(out_root: Path, records: Iterable[Mapping[str, Any]]) -> list[Path]:
    """``<split>-corruption.csv`` (``name,snr_db,blur_factor,noise,note``) for every split in
    ``records``; rows of clips corrupted by earlier calls are kept."""
    by_split: dict[str, dict[str, list[str]]] = {}
    for r in records:
        note = r.get("error") or r.get("note", "")
        by_split.setdefault(r["split"], {})[r["name"]] = [
            r["name"], "" if r["snr_db"] is None else str(r["snr_db"]), str(r["blur_factor"]),
            " ".join(r.get("noise", [])), note]
    written = []
    for split, rows in sorted(by_split.items()):
        path = out_root / f"{split}-corruption.csv"
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                for old in csv.DictReader(f):
                    rows.setdefault(old["name"], [old.get(c, "") for c in SPLIT_TABLE_COLUMNS])
        tmp = _atomic(str(path))
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(SPLIT_TABLE_COLUMNS)
            w.writerows(rows[n] for n in sorted(rows))
        os.replace(tmp, path)
        written.append(path)
    return written


def _read_sidecar(path: str, identity: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = all(rec.get(k) == v for k, v in identity.items())
    return rec if same else None


def corrupt_samples(samples: Sequence[Any], condition: Condition | str, settings: CorruptionSettings,
                    out_root: str | os.PathLike, *, src_root: str | os.PathLike | None = None,
                    babble_from: Sequence[Any] = (), workers: int | None = None,
                    progress: bool = True) -> CorruptedCopy:
    """Corrupt ``samples`` into ``out_root`` (kept relative to ``src_root``), skipping clips done
    before with the same settings; returns them pointing at their corrupted media.

    ``babble_from``: the samples whose utterances make babble (the whole dataset, so a clip's
    noise does not depend on which clips are corrupted with it). ``workers``: processes (default:
    up to 2 for more than 16 clips; 0 = this process). Resumable: each clip's sidecar is written
    last, atomically; a rerun does what is missing."""
    condition = parse_condition(condition) if isinstance(condition, str) else condition
    if condition.is_clean:
        raise ValueError("the clean condition is the dataset itself: nothing to corrupt")
    out_root = Path(out_root)
    identity = settings.identity(condition)
    src = str(Path(src_root).resolve()) if src_root else None
    _check_settings(out_root, identity, src)
    copy_release_files(src_root, out_root)
    jobs = plan_jobs(samples, out_root, Path(src) if src else None)
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for j in jobs:
        rec = _read_sidecar(j.sidecar, identity)
        if rec is not None:
            records[j.name] = rec
        else:
            todo.append(j)
    if todo:
        noise = NoiseSource.from_settings(settings, babble_pool(babble_from or samples)) \
            if condition.touches_audio else NoiseSource([], 1, "none")
        records.update(_run_jobs(todo, condition, settings, noise, workers, progress))
    write_split_tables(out_root, [_read_sidecar(j.sidecar, identity) or records[j.name] for j in jobs
                                  if j.name in records])
    by_name = {j.name: j for j in jobs}
    out = []
    for s in samples:
        j = by_name.get(s.name)
        if j is None:
            out.append(s)
            continue
        ok = "error" not in records[s.name]
        out.append(dataclasses.replace(s, video_path=j.video_dst if ok and j.video_dst else None,
                                       audio_path=j.audio_dst if ok and j.audio_dst else None,
                                       face_path=None, meta={**dict(s.meta), "corruption": records[s.name]}))
    copy = CorruptedCopy(out_root, condition, settings.tag(condition), out, records)
    if copy.failed:
        first = next(iter(copy.failed.items()))
        log.warning("%d of %d clips could not be corrupted (e.g. %s: %s); they have no media in condition %s "
                    "and their features are masked", len(copy.failed), len(jobs), *first, copy.tag)
    return copy


def _run_jobs(todo: list[ClipJob], condition: Condition, settings: CorruptionSettings, noise: NoiseSource,
              workers: int | None, progress: bool) -> dict[str, dict[str, Any]]:
    from tqdm.auto import tqdm

    n_workers = min(2, os.cpu_count() or 1) if workers is None and len(todo) > 16 else int(workers or 0)
    bar = tqdm(total=len(todo), desc=f"corrupting ({condition.name})", unit="clip", disable=not progress)
    out: dict[str, dict[str, Any]] = {}
    try:
        if n_workers <= 1:
            for j in todo:
                out[j.name] = corrupt_clip(j, condition, settings, noise)
                bar.update(1)
        else:
            from concurrent.futures import ProcessPoolExecutor, as_completed
            from multiprocessing import get_context

            # spawn, not fork: the caller may hold torch/OpenMP threads that fork would copy.
            with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn"), initializer=_worker_init,
                                     initargs=(condition, settings, noise)) as pool:
                futures = {pool.submit(_worker_clip, j): j for j in todo}
                try:
                    for fut in as_completed(futures):
                        rec = fut.result()
                        out[rec["name"]] = rec
                        bar.update(1)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    return out


def corrupted_root(cache_dir: str | os.PathLike, dataset_id: str, tag: str) -> Path:
    """Where the pipeline keeps the corrupted copy of a dataset condition."""
    return Path(cache_dir) / "corrupted" / dataset_id / tag


def corrupt_manifest(manifest: Any, condition: Condition | str, settings: CorruptionSettings,
                     out_root: str | os.PathLike, *, names: Sequence[str] | None = None,
                     workers: int | None = None, progress: bool = True) -> tuple[Any, CorruptedCopy]:
    """The manifest with ``names`` (default: every sample) pointing at corrupted media in
    ``out_root`` (written where missing); other samples are left as they are."""
    from mer.data.manifest import Manifest

    chosen = manifest.samples if names is None else [manifest[n] for n in names]
    copy = corrupt_samples(chosen, condition, settings, out_root, src_root=manifest.root,
                           babble_from=manifest.samples, workers=workers, progress=progress)
    replaced = {s.name: s for s in copy.samples}
    samples = [replaced.get(s.name, s) for s in manifest.samples]
    return Manifest(manifest.dataset, manifest.label_spec, samples, manifest.train_split, str(out_root)), copy
