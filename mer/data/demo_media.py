"""Media for the demo corpus: a face that shows an expression and a voice that shows a prosody.

Everything here is pure rendering: :mod:`mer.data.demo` decides *what* each clip shows (which
class cue each modality carries and how strongly); this module turns that plan into RGB frames,
a waveform and an mp4, from pip packages only (numpy, scipy, OpenCV, PyAV, scikit-image).

The face is the real photo ``skimage.data.astronaut()``: a real face keeps OpenCV's Haar
detector and face-expression CNNs working on it, which drawn cartoons would not. Her own smile
is kept for ``happy``; for every other class the mouth and brows are painted out once and
redrawn per frame. The voice is a source-filter synthesiser (glottal pulses -> vowel formants ->
syllable envelope) whose pitch, tempo, loudness and voice quality follow the emotion.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import av
import cv2
import numpy as np
from scipy.signal import lfilter

from .corrupt import mix_at_snr, no_clip as _no_clip, pyramid_blur as blur  # noqa: F401 - MER-NOISE's own operations

FRAME_SIZE = 224
"""Frames are square; a multiple of 4 so a blur factor of 4 (two ``pyrDown``) round-trips."""
FPS = 15
SAMPLE_RATE_HZ = 16000
"""The rate the audio extractors resample to anyway, so nothing is lost by synthesising at it."""

# ----------------------------------------------------------------------------------------------
# Face template (computed once per process from the astronaut photo)
# ----------------------------------------------------------------------------------------------

_ROI_X0, _ROI_Y0, _ROI_W, _ROI_H = 96, 0, 256, 288
"""Window of the 512x512 astronaut photo holding hair, face and collar; landmarks below are in it."""
_FACE_CENTRE = (128.5, 113.5)  # centre of the Haar box [177, 66, 95, 95] in ROI coordinates
_FACE_SIZE_PX = 95.0
_EYES = ((108.0, 101.0), (149.0, 102.5))
_BROWS = (  # (outer, peak, inner) per side, viewer's left first
    ((94.0, 90.0), (105.0, 89.0), (118.0, 92.0)),
    ((164.0, 92.5), (154.0, 90.0), (143.0, 92.0)),
)
_MOUTH_CENTRE = (129.0, 146.0)
_MOUTH_HALF_WIDTH = 17.0
_MOUTH_BASE_DROP = 1.5
"""Corners slightly down at rest: with a flat line, the photo's smile creases read as happy."""
_BROW_RGB = (112.0, 84.0, 58.0)
_LIP_RGB = (176.0, 104.0, 98.0)
_MOUTH_LINE_RGB = (92.0, 40.0, 40.0)
_MOUTH_INSIDE_RGB = (52.0, 18.0, 20.0)


@dataclass(frozen=True)
class _FaceTemplate:
    neutral: np.ndarray  # [H, W, 3] uint8 RGB: mouth and brows painted out (drawn per frame)
    smile: np.ndarray  # [H, W, 3] uint8 RGB: the photo as taken (a real smile)
    smile_alpha: np.ndarray  # [H, W, 1] float32: where the real smile replaces the painted-out mouth
    person_alpha: np.ndarray  # [H, W] float32: 1 on the person, 0 on the studio background


@functools.lru_cache(maxsize=1)
def face_template() -> _FaceTemplate:
    """The astronaut photo prepared once: background matte, and a copy without mouth and brows."""
    from skimage.data import astronaut

    roi = np.ascontiguousarray(astronaut()[_ROI_Y0:_ROI_Y0 + _ROI_H, _ROI_X0:_ROI_X0 + _ROI_W])

    # The studio backdrop is bright and grey; the person is whatever is not backdrop connected to
    # the frame's top and sides, so highlights and teeth inside the face stay foreground.
    hsv = cv2.cvtColor(roi, cv2.COLOR_RGB2HSV)
    backdrop = ((hsv[..., 2] > 150) & (hsv[..., 1] < 45)).astype(np.uint8)
    backdrop = cv2.morphologyEx(backdrop, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _, parts = cv2.connectedComponents(backdrop)
    edge_parts = set(np.unique(np.concatenate([parts[0], parts[:, 0], parts[:, -1]]))) - {0}
    background = np.isin(parts, list(edge_parts)).astype(np.uint8)
    person = cv2.morphologyEx(1 - background, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    person_alpha = cv2.GaussianBlur(person.astype(np.float32), (0, 0), 1.5)

    paint_out = np.zeros(roi.shape[:2], np.uint8)
    cx, cy = _MOUTH_CENTRE
    # Wide enough to take the smile's creases too, or every class would look a little happy.
    cv2.ellipse(paint_out, (int(cx), int(cy)), (34, 15), 0, 0, 360, 255, -1)
    for side in _BROWS:
        cv2.polylines(paint_out, [np.round(np.array(side)).astype(np.int32)], False, 255, 6)
    neutral = cv2.inpaint(roi, paint_out, 5, cv2.INPAINT_TELEA)
    neutral = np.where(paint_out[..., None] > 0, cv2.GaussianBlur(neutral, (0, 0), 0.8), neutral)

    smile_alpha = np.zeros(roi.shape[:2], np.float32)
    cv2.ellipse(smile_alpha, (int(cx), int(cy)), (24, 10), 0, 0, 360, 1.0, -1)
    smile_alpha = cv2.GaussianBlur(smile_alpha, (0, 0), 2.0)[..., None]
    return _FaceTemplate(
        neutral=neutral,
        smile=roi,
        smile_alpha=smile_alpha,
        person_alpha=person_alpha,
    )


# ----------------------------------------------------------------------------------------------
# Expressions
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Expression:
    """Facial geometry at full intensity, as offsets from the neutral face (pixels, ROI scale).

    Each field is multiplied by the current intensity ``a`` in [0, 1], so ``a = 0`` is the same
    neutral face for every class and an onset is just ``a`` rising over the clip.
    """

    smile: float = 0.0  # 1 = the photo's real smile blended in
    corner_drop: float = 0.0  # mouth corners down (+) or up (-)
    mouth_open: float = 0.0  # height of the dark opening
    mouth_narrow: float = 0.0  # half-width reduction
    lip_press: float = 0.0  # 1 = lips pressed thin
    mouth_wave: float = 0.0  # amplitude of a wavy (trembling) mouth line
    brow_raise: float = 0.0  # whole brow up (+)
    brow_inner_raise: float = 0.0  # inner ends up (+) or down (-)
    brow_inner_in: float = 0.0  # inner ends pulled toward the nose
    frown_lines: float = 0.0  # vertical creases between the brows
    eye_open: float = 0.0  # relative change of eye opening (+ wide, - squint)


EXPRESSIONS: Mapping[str, _Expression] = {
    "neutral": _Expression(),
    "happy": _Expression(smile=1.0, eye_open=-0.25, brow_raise=1.5),
    "surprise": _Expression(mouth_open=15.0, mouth_narrow=7.0, brow_raise=8.0, eye_open=0.45),
    "angry": _Expression(corner_drop=2.5, mouth_narrow=3.0, lip_press=1.0, brow_raise=-3.0,
                         brow_inner_raise=-6.0, brow_inner_in=3.5, frown_lines=1.0, eye_open=-0.35),
    "sad": _Expression(corner_drop=7.0, mouth_narrow=2.0, brow_inner_raise=6.0, brow_raise=-1.0,
                       eye_open=-0.25),
    "worried": _Expression(corner_drop=4.0, mouth_narrow=-3.0, mouth_wave=1.5, brow_inner_raise=6.0,
                           brow_inner_in=2.5, eye_open=0.1),
}
"""The cue each class draws. Checked against the FER2013 mini-Xception on Haar crops: happy,
surprise and angry read as themselves, worried mostly as fear, sad as sad/fear; ``sad`` and
``worried`` share inner-raised brows and lowered corners on purpose (the face confuses them)."""


def _draw_brows(img: np.ndarray, e: _Expression, a: float) -> None:
    for (outer, peak, inner), side in zip(_BROWS, (1.0, -1.0)):
        lift = a * e.brow_raise
        pts = np.array([
            (outer[0], outer[1] - lift),
            (peak[0], peak[1] - lift - 0.4 * a * e.brow_inner_raise),
            (inner[0] + side * a * e.brow_inner_in, inner[1] - lift - a * e.brow_inner_raise),
        ])
        cv2.polylines(img, [np.round(pts * 4).astype(np.int32)], False, _BROW_RGB, 3, cv2.LINE_AA, 2)
    if e.frown_lines * a > 0.2:
        shade = tuple(c * (1 - 0.2 * a) for c in (196.0, 150.0, 128.0))
        for x in (125.5, 134.5):
            p0, p1 = (x, 93.0), (x + (1.0 if x > 130 else -1.0), 101.0)
            cv2.line(img, _fx(p0), _fx(p1), shade, 1, cv2.LINE_AA, 2)


def _fx(p: Sequence[float]) -> tuple[int, int]:
    """A point in the 2-bit fixed point OpenCV's ``shift=2`` drawing expects (sub-pixel shapes)."""
    return int(round(p[0] * 4)), int(round(p[1] * 4))


def _draw_mouth(img: np.ndarray, e: _Expression, a: float) -> None:
    cx, cy = _MOUTH_CENTRE
    hw = _MOUTH_HALF_WIDTH - a * e.mouth_narrow
    u = np.linspace(-1.0, 1.0, 25)
    drop = _MOUTH_BASE_DROP + a * e.corner_drop
    line = cy + drop * (u**2 - 0.5) + a * e.mouth_wave * np.sin(3 * np.pi * u)
    bulge = np.sqrt(np.clip(1 - u**2, 0, 1))
    opening = a * e.mouth_open * bulge
    lip = (1.0 - 0.6 * a * e.lip_press)
    x = cx + hw * u
    upper_outer = np.stack([x, line - opening / 2 - 3.0 * lip * bulge], 1)
    lower_outer = np.stack([x, line + opening / 2 + 4.0 * lip * bulge], 1)
    cv2.fillPoly(img, [np.round(np.concatenate([upper_outer, lower_outer[::-1]]) * 4).astype(np.int32)],
                 _LIP_RGB, cv2.LINE_AA, 2)
    if a * e.mouth_open > 1.5:
        inner = np.concatenate([np.stack([x, line - opening / 2], 1), np.stack([x, line + opening / 2], 1)[::-1]])
        cv2.fillPoly(img, [np.round(inner * 4).astype(np.int32)], _MOUTH_INSIDE_RGB, cv2.LINE_AA, 2)
    else:
        thick = 2 if a * e.lip_press > 0.5 else 1
        cv2.polylines(img, [np.round(np.stack([x, line], 1) * 4).astype(np.int32)], False,
                      _MOUTH_LINE_RGB, thick, cv2.LINE_AA, 2)


def _eye_maps(e: _Expression, a: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Backward maps that stretch (or squint) the eyes vertically about their centres."""
    k = 1.0 + a * e.eye_open
    if abs(k - 1.0) < 0.02:
        return None
    ys, xs = np.mgrid[0:_ROI_H, 0:_ROI_W].astype(np.float32)
    map_y = ys.copy()
    for ex, ey in _EYES:
        w = np.exp(-(((xs - ex) / 11.0) ** 2) - ((ys - ey) / 7.0) ** 2)
        map_y += w * (ey + (ys - ey) / k - ys)
    return xs, map_y


@functools.lru_cache(maxsize=64)
def _cached_eye_maps(cls: str, a_q: int) -> tuple[np.ndarray, np.ndarray] | None:
    return _eye_maps(EXPRESSIONS[cls], a_q / 32.0)


def render_face(cls: str, a: float) -> np.ndarray:
    """The face ROI showing class ``cls`` at intensity ``a`` in [0, 1]: [H, W, 3] uint8 RGB."""
    t = face_template()
    e = EXPRESSIONS[cls]
    img = t.neutral.copy()
    _draw_mouth(img, e if e.smile == 0 else EXPRESSIONS["neutral"], a)
    if e.smile > 0 and a > 0:
        alpha = t.smile_alpha * (a * e.smile)
        img = np.round(img * (1 - alpha) + t.smile * alpha).astype(np.uint8)
    _draw_brows(img, e, a)
    maps = _cached_eye_maps(cls, int(round(a * 32)))
    if maps is not None:
        img = cv2.remap(img, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return img


# ----------------------------------------------------------------------------------------------
# Video
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceShot:
    """How one clip is filmed: everything here is nuisance, none of it depends on the emotion."""

    face_px: float  # face width in the frame
    centre_xy: tuple[float, float]
    rotation_deg: float
    flip: bool
    sway_px: float  # amplitude of slow head motion
    sway_hz: float
    brightness: float  # additive, in 0..255 units
    contrast: float
    colour_gain: tuple[float, float, float]
    noise_sigma: float
    background_rgb: tuple[float, float, float]
    background_texture: float  # 0 = flat colour


def draw_face_shot(rng: np.random.Generator) -> FaceShot:
    """Random camera, lighting and background for one clip."""
    return FaceShot(
        face_px=float(rng.uniform(88, 112)),
        centre_xy=(float(FRAME_SIZE / 2 + rng.uniform(-14, 14)), float(FRAME_SIZE / 2 + rng.uniform(-16, 8))),
        rotation_deg=float(rng.uniform(-7, 7)),
        flip=bool(rng.random() < 0.5),
        sway_px=float(rng.uniform(0.5, 3.0)),
        sway_hz=float(rng.uniform(0.2, 0.8)),
        brightness=float(rng.uniform(-25, 25)),
        contrast=float(rng.uniform(0.75, 1.15)),
        colour_gain=tuple(float(g) for g in rng.uniform(0.88, 1.12, 3)),
        noise_sigma=float(rng.uniform(1.0, 6.0)),
        background_rgb=tuple(float(c) for c in rng.uniform(20, 235, 3)),
        background_texture=float(rng.uniform(0, 40)),
    )


def _background(shot: FaceShot, rng: np.random.Generator) -> np.ndarray:
    base = np.empty((FRAME_SIZE, FRAME_SIZE, 3), np.float32)
    base[:] = shot.background_rgb
    gradient = np.linspace(-1, 1, FRAME_SIZE, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * gradient[None, :] + np.sin(angle) * gradient[:, None]
    base += (rng.uniform(10, 40) * ramp)[..., None]
    coarse = rng.normal(0, 1, (6, 6, 3)).astype(np.float32)
    base += shot.background_texture * cv2.resize(coarse, (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_CUBIC)
    return base


def onset_curve(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Expression strength over time, 0 -> 1: neutral at the start, a smooth rise, a held peak."""
    t = np.linspace(0.0, 1.0, n_frames)
    start = rng.uniform(0.05, 0.35)
    rise = rng.uniform(0.2, 0.45)
    x = np.clip((t - start) / rise, 0.0, 1.0)
    return x * x * (3 - 2 * x)


LEAD_SHARE = 0.5
"""A face turn's lead expression fills this share of the clip (rising and fading), the face cue the rest."""


def lead_curve(n_frames: int) -> np.ndarray:
    """A lead expression's strength over its frames: a rise from neutral to a peak and back."""
    t = np.linspace(0.0, 1.0, n_frames + 2)[1:-1]
    return np.sin(np.pi * t) ** 0.5


def render_frames(cls: str, intensity: float, n_frames: int, shot: FaceShot, rng: np.random.Generator,
                  blur_factor: int = 1, lead: str | None = None) -> np.ndarray:
    """The clip's video: [T, FRAME_SIZE, FRAME_SIZE, 3] uint8 RGB. With ``lead``, the first
    :data:`LEAD_SHARE` of the frames show that expression (rising, then fading back to neutral)
    and the face cue ``cls`` rises only after it."""
    t = face_template()
    # Camera response (contrast, brightness, colour cast) is affine per channel, so it commutes
    # with alpha compositing: apply it to the background once and to each warped face.
    gain = np.asarray(shot.colour_gain, np.float32)
    camera = np.zeros((3, 4), np.float32)
    camera[:, :3] = np.diag(gain * shot.contrast)
    camera[:, 3] = gain * (128.0 * (1 - shot.contrast) + shot.brightness)
    background = cv2.transform(_background(shot, rng), camera)
    # Sensor noise: random windows into one noise field, far cheaper than fresh noise per frame.
    pad = 32
    noise = rng.standard_normal((FRAME_SIZE + pad, FRAME_SIZE + pad, 3), dtype=np.float32) * shot.noise_sigma
    n_lead = int(round(LEAD_SHARE * n_frames)) if lead and n_frames >= 4 else 0
    curve = intensity * np.concatenate([lead_curve(n_lead), onset_curve(n_frames - n_lead, rng)])
    classes = [lead] * n_lead + [cls] * (n_frames - n_lead)
    scale = shot.face_px / _FACE_SIZE_PX
    phase = rng.uniform(0, 2 * np.pi, 2)
    offsets = rng.integers(0, pad, (n_frames, 2))
    size = (FRAME_SIZE, FRAME_SIZE)
    frames = np.empty((n_frames, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    for i in range(n_frames):
        time_s = i / FPS
        dx = shot.sway_px * math.sin(2 * math.pi * shot.sway_hz * time_s + phase[0])
        dy = 0.6 * shot.sway_px * math.sin(2 * math.pi * shot.sway_hz * 1.3 * time_s + phase[1])
        m = cv2.getRotationMatrix2D(_FACE_CENTRE, shot.rotation_deg + 0.8 * dx, scale)
        m[0, 2] += shot.centre_xy[0] + dx - _FACE_CENTRE[0]
        m[1, 2] += shot.centre_xy[1] + dy - _FACE_CENTRE[1]
        face = cv2.warpAffine(render_face(classes[i], float(curve[i])), m, size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        # Replicating the matte's border continues the collar and shoulders off the template's edge.
        alpha = cv2.warpAffine(t.person_alpha, m, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)[..., None]
        img = cv2.transform(face.astype(np.float32), camera)
        img -= background
        img *= alpha
        img += background
        oy, ox = offsets[i]
        img += noise[oy:oy + FRAME_SIZE, ox:ox + FRAME_SIZE]
        frame = np.clip(img, 0, 255, out=img).astype(np.uint8)
        if shot.flip:
            frame = frame[:, ::-1]
        frames[i] = blur(np.ascontiguousarray(frame), blur_factor) if blur_factor > 1 else frame
    return frames


# ----------------------------------------------------------------------------------------------
# Voice
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speaker:
    """Who is talking and how they are recorded: nuisance the audio model has to see past."""

    f0_hz: float  # habitual pitch
    formant_scale: float  # vocal tract length (higher = shorter tract, brighter vowels)
    rate_scale: float  # habitual tempo
    breathiness: float
    gain_db: float  # microphone distance / recording level
    room_snr_db: float  # the recording's own background noise


def draw_speaker(rng: np.random.Generator) -> Speaker:
    female = rng.random() < 0.5
    return Speaker(
        f0_hz=float(rng.uniform(170, 250) if female else rng.uniform(90, 145)),
        formant_scale=float(rng.uniform(1.05, 1.2) if female else rng.uniform(0.9, 1.03)),
        rate_scale=float(rng.uniform(0.85, 1.15)),
        breathiness=float(rng.uniform(0.01, 0.06)),
        gain_db=float(rng.uniform(-3, 3)),
        room_snr_db=float(rng.uniform(22, 40)),
    )


@dataclass(frozen=True)
class Prosody:
    """How an emotion sounds at full intensity; each field moves away from ``neutral`` with ``a``."""

    f0_scale: float = 1.0  # pitch relative to the speaker's habitual pitch
    f0_range_st: float = 2.0  # size of pitch accents, semitones
    final_rise_st: float = 0.0  # pitch movement over the last part of the utterance (+ rise, - fall)
    syllables_per_s: float = 4.0
    loudness_db: float = 0.0
    open_quotient: float = 0.6  # glottal open phase: low = pressed, bright; high = lax, dark
    tilt: float = 0.3  # pre-emphasis (+ brighter, - darker)
    tremolo_depth: float = 0.0  # pitch (semitones) and loudness wobble at ~6 Hz
    jitter: float = 0.004  # cycle-to-cycle pitch irregularity
    breath: float = 0.0  # extra aspiration noise
    attack_s: float = 0.025  # syllable onset: abrupt (angry) .. soft (sad)


PROSODY: Mapping[str, Prosody] = {
    "neutral": Prosody(final_rise_st=-1.0),
    "angry": Prosody(f0_scale=1.3, f0_range_st=3.0, final_rise_st=-4.0, syllables_per_s=6.0, loudness_db=10.0,
                     open_quotient=0.3, tilt=0.95, jitter=0.012, attack_s=0.005),
    "happy": Prosody(f0_scale=1.35, f0_range_st=12.0, final_rise_st=2.0, syllables_per_s=4.6, loudness_db=4.0,
                     open_quotient=0.55, tilt=0.45, attack_s=0.02),
    "sad": Prosody(f0_scale=0.8, f0_range_st=0.8, final_rise_st=-4.0, syllables_per_s=2.6, loudness_db=-8.0,
                   open_quotient=0.8, tilt=-0.5, breath=0.12, attack_s=0.07),
    "surprise": Prosody(f0_scale=1.22, f0_range_st=4.0, final_rise_st=12.0, syllables_per_s=3.6, loudness_db=3.0,
                        open_quotient=0.5, tilt=0.5, attack_s=0.012),
    "worried": Prosody(f0_scale=1.15, f0_range_st=2.5, final_rise_st=2.0, syllables_per_s=5.0, loudness_db=-4.0,
                       open_quotient=0.66, tilt=0.15, tremolo_depth=1.0, jitter=0.03, breath=0.1, attack_s=0.03),
}
"""Prosody per class, after the acoustic correlates of emotion (arousal: loudness, pitch, tempo,
vocal effort). High-arousal classes deliberately sound alike, as do the low-arousal ones."""

_VOWEL_FORMANTS_HZ = (  # adult male averages; a speaker's formant_scale shifts them
    (730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410), (300, 870, 2240),
    (660, 1720, 2410), (490, 1350, 1690),
)


def _blend(neutral: float, target: float, a: float) -> float:
    return neutral + a * (target - neutral)


def _resonator(freq_hz: float, bandwidth_hz: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    r = math.exp(-math.pi * bandwidth_hz / sr)
    theta = 2 * math.pi * freq_hz / sr
    a = np.array([1.0, -2 * r * math.cos(theta), r * r])
    return np.array([a.sum()]), a  # unity gain at DC keeps vowels comparable in level


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.normal(size=n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def synth_voice(cls: str, intensity: float, speaker: Speaker, duration_s: float, rng: np.random.Generator,
                sr: int = SAMPLE_RATE_HZ, room_noise: bool = True) -> np.ndarray:
    """A wordless utterance with the prosody of ``cls`` at ``intensity``: [N] float32 in [-1, 1].

    Syllables are vowels with an optional fricative or plosive onset, so tempo shows up in the
    onset rate and zero-crossing rate, and voice quality in the spectral shape, as in real speech.
    """
    # Prosody is subtler than a face at equal intensity (and speakers differ more), so a voice that
    # carries an emotion at all starts 40 % of the way to the full prosody.
    a = 0.4 + 0.6 * float(np.clip(intensity, 0.0, 1.0)) if intensity > 0 else 0.0
    p, p0 = PROSODY[cls], PROSODY["neutral"]
    n = int(round(duration_s * sr))
    f0_base = speaker.f0_hz * _blend(1.0, p.f0_scale, a)
    rate = _blend(p0.syllables_per_s, p.syllables_per_s, a) * speaker.rate_scale
    range_st = _blend(p0.f0_range_st, p.f0_range_st, a)
    oq = _blend(p0.open_quotient, p.open_quotient, a)
    tilt = _blend(p0.tilt, p.tilt, a)
    attack = _blend(p0.attack_s, p.attack_s, a)

    # Syllable timing: speech between a short lead-in and tail, one optional phrase pause.
    start, stop = rng.uniform(0.05, 0.25) * sr, n - rng.uniform(0.1, 0.3) * sr
    bounds = []
    t = start
    pause_at = rng.uniform(0.35, 0.65) if rng.random() < 0.5 else 2.0
    while True:
        length = sr / rate * rng.uniform(0.75, 1.25)
        if t + length > stop:
            break
        bounds.append((int(t), int(t + length)))
        gap = sr / rate * rng.uniform(0.05, 0.2)
        if (t - start) / max(stop - start, 1) < pause_at <= (t + length - start) / max(stop - start, 1):
            gap += rng.uniform(0.15, 0.3) * sr
        t += length + gap
    if not bounds:
        bounds = [(int(start), int(stop))]

    # Pitch: accents per syllable, a declination, the emotion's final movement, tremolo, jitter;
    # built at a 200 Hz control rate (smoothing at the audio rate costs more than the rest).
    time = np.arange(n) / sr
    control_hz = 200
    ct = np.arange(int(n / sr * control_hz) + 2) / control_hz
    knots_t = np.array([0.0] + [(b0 + b1) / 2 / sr for b0, b1 in bounds] + [ct[-1]])
    accents = rng.uniform(-0.5, 0.5, knots_t.size) * range_st
    window = np.hanning(17)
    semis = np.convolve(np.interp(ct, knots_t, accents), window / window.sum(), "same")
    progress = np.clip((ct * sr - start) / max(stop - start, 1), 0, 1)
    final = _blend(p0.final_rise_st, p.final_rise_st, a)
    semis += -1.0 * progress + final * np.clip((progress - 0.5) / 0.5, 0, 1) ** 1.5
    jitter = _blend(p0.jitter, p.jitter, a)
    semis += 12 * np.log2(1 + jitter * 3 * rng.normal(size=ct.size).cumsum() / np.sqrt(np.arange(1, ct.size + 1)))
    semis = np.interp(time, ct, semis)
    tremolo = a * p.tremolo_depth
    if tremolo > 0:
        semis += tremolo * np.sin(2 * np.pi * rng.uniform(5, 7) * time)
    f0 = f0_base * 2.0 ** (semis / 12)

    # Glottal source: Rosenberg pulses differentiated (lip radiation); a small open quotient makes
    # pressed, harmonically rich voice.
    phase = np.cumsum(f0 / sr) % 1.0
    tp, tn = 0.6 * oq, 0.4 * oq
    pulse = np.where(phase < tp, 0.5 * (1 - np.cos(np.pi * phase / tp)),
                     np.where(phase < tp + tn, np.cos(0.5 * np.pi * (phase - tp) / tn), 0.0))
    source = np.diff(pulse, prepend=0.0) * (f0_base / 120.0) ** -0.5
    breath = speaker.breathiness + a * p.breath
    source += breath * 0.05 * rng.normal(size=n) * (0.5 + pulse)

    voice = np.zeros(n)
    for b0, b1 in bounds:
        seg_len = b1 - b0
        vowel = _VOWEL_FORMANTS_HZ[rng.integers(len(_VOWEL_FORMANTS_HZ))]
        den = np.array([1.0])
        gain = 1.0
        for k, (f, bw) in enumerate(zip(vowel, (80, 100, 140))):
            num_k, den_k = _resonator(f * speaker.formant_scale * rng.uniform(0.95, 1.05), bw, sr)
            den = np.convolve(den, den_k)
            gain *= num_k[0]
        lo, hi = max(b0 - 200, 0), min(b1 + 200, n)
        seg = lfilter([gain], den, source[lo:hi])[b0 - lo:b0 - lo + seg_len]
        env_t = np.arange(seg_len) / sr
        env = np.minimum(1.0, env_t / max(attack, 1e-3)) * np.minimum(1.0, (seg_len / sr - env_t) / 0.04)
        stress = rng.uniform(0.6, 1.0)
        voice[b0:b1] += seg * env * stress
        onset = rng.random()
        if onset < 0.35:  # fricative: high-passed noise before the vowel
            fl = int(rng.uniform(0.04, 0.1) * sr)
            fr = lfilter([1, -0.95], [1], rng.normal(size=fl)) * np.hanning(fl) * 0.02
            s0 = max(b0 - fl // 2, 0)
            voice[s0:s0 + fl] += fr[: n - s0]
        elif onset < 0.6:  # plosive burst
            bl = int(0.012 * sr)
            voice[b0:b0 + bl] += rng.normal(size=bl)[: n - b0] * np.hanning(bl)[: n - b0] * 0.05

    if tremolo > 0:
        voice *= 1 + 0.4 * tremolo * np.sin(2 * np.pi * 6.0 * time + 1.0)
    voice = lfilter([1.0, -tilt], [1.0], voice) if tilt >= 0 else lfilter([1.0 + tilt], [1.0, tilt], voice)

    level_db = _blend(p0.loudness_db, p.loudness_db, a) + speaker.gain_db
    voice *= 0.03 * 10 ** (level_db / 20) / (np.sqrt(np.mean(voice**2)) + 1e-12)
    if room_noise:
        noise = _pink_noise(n, rng)
        noise *= 0.03 * 10 ** ((speaker.gain_db - speaker.room_snr_db) / 20) / (np.sqrt(np.mean(noise**2)) + 1e-12)
        voice += noise
    return _no_clip(voice).astype(np.float32)


def babble(n: int, rng: np.random.Generator, talkers: int = 4, sr: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Several emotionally flat talkers at once: a stand-in for MUSAN's speech subset."""
    out = np.zeros(n)
    for _ in range(talkers):
        speaker = draw_speaker(rng)
        voice = synth_voice("neutral", 0.0, speaker, n / sr + 0.5, rng, sr=sr, room_noise=False).astype(np.float64)
        offset = rng.integers(0, voice.size - n + 1)
        out += voice[offset:offset + n] * rng.uniform(0.5, 1.0)
    return out


# ----------------------------------------------------------------------------------------------
# Container
# ----------------------------------------------------------------------------------------------


def write_mp4(path: str | Path, frames: np.ndarray, audio: np.ndarray, fps: int = FPS,
              sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
    """Mux ``frames`` [T, H, W, 3] uint8 RGB and mono ``audio`` [N] float32 into an H.264 + AAC mp4.

    One encoder thread and fixed settings make the bytes a function of the inputs alone.
    """
    with av.open(str(path), mode="w", format="mp4") as container:
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
