"""Rendering one planned clip into its mp4 (in worker processes), and the package versions that
decide the rendered bytes."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from mer.core.io import atomic_file
from mer.data.corrupt import mix_at_snr

from .design import ClipPlan, clip_rng
from .face import FPS, draw_face_shot, render_frames
from .mp4 import write_mp4
from .voice import babble, draw_speaker, synth_voice


def clip_path(plan: ClipPlan) -> str:
    """Where ``plan``'s clip lies in the corpus, relative to its root: ``<split>/<name>.mp4``."""
    return f"{plan.split}/{plan.name}.mp4"


def render_clip(plan: ClipPlan, out_dir: str | Path) -> str:
    """Write ``<out_dir>/<split>/<name>.mp4`` for ``plan``, atomically (:func:`mer.core.io.atomic_file`:
    the path holds a whole clip or nothing); returns the name."""
    rng = clip_rng(plan.seed, plan.name, "media")
    n_frames = int(round(plan.duration_s * FPS))
    frames = render_frames(plan.face_cue, plan.face_intensity, n_frames, draw_face_shot(rng), rng,
                           blur_factor=plan.blur_factor or 1, lead=plan.face_lead)
    speaker = draw_speaker(rng)
    audio = synth_voice(plan.voice_cue, plan.voice_intensity, speaker, plan.duration_s, rng)
    if plan.snr_db is not None:
        audio = mix_at_snr(audio, babble(audio.size, rng), plan.snr_db)
    with atomic_file(Path(out_dir) / clip_path(plan)) as f:
        write_mp4(f, frames, audio)
    return plan.name


def _worker_init() -> None:
    cv2.setNumThreads(1)  # the pool is the parallelism; nested OpenCV threads only oversubscribe


def _package_versions() -> dict[str, str]:
    return {"numpy": np.__version__, "opencv": cv2.__version__, "av": av.__version__}
