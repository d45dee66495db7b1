"""The demo's video: a face that shows an expression, filmed with random camera, light and background.

The face is the real photo ``skimage.data.astronaut()``: a real face keeps OpenCV's Haar
detector and face-expression CNNs working on it, which drawn cartoons would not. Her own smile
is kept for ``happy``; for every other class the mouth and brows are painted out once and
redrawn per frame.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import cv2
import numpy as np

from mer.data.corrupt import pyramid_blur as blur  # MER-NOISE's own blur

FRAME_SIZE = 224
"""Frames are square; a multiple of 4 so a blur factor of 4 (two ``pyrDown``) round-trips."""
FPS = 15


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
    from skimage.data import astronaut  # deferred: scikit-image is slow to import and needed once

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
