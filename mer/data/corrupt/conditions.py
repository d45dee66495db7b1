"""Corruption conditions and settings: what a condition names, what decides the corrupted bytes,
and what each clip draws (a generator seeded by seed, clip name and purpose, never by call order)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mer.core.rng import keyed_rng

CORRUPTION_VERSION = 1
"""Bump whenever the corrupted bytes change for the same settings (it is in every copy's identity)."""

SAMPLE_RATE_HZ = 16000
"""The organisers demux to 16 kHz mono before mixing; the noisy audio is written at this rate."""

SNR_CHOICES_DB: tuple[int, ...] = tuple(range(5, 11))
BLUR_CHOICES: tuple[int, ...] = (1, 2, 4)

NOISE_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".m4a")

_CONDITION = re.compile(r"^(?:snr(?P<snr>-?\d+))?(?:(?:^|_)blur(?P<blur>\d+))?$")


@dataclass(frozen=True)
class Condition:
    """A named way of corrupting clips; see the :mod:`mer.data.corrupt` docstring for the names."""

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
    """A generator that depends only on (seed, name, purpose), never on call order; the corruption's
    own streams (keyed ``"corrupt"`` first), apart from the demo generator's for the same names."""
    return keyed_rng(seed, "corrupt", name, purpose)


def draw_levels(settings: CorruptionSettings, condition: Condition, name: str) -> tuple[int | None, int]:
    """``(snr_db or None, blur_factor)`` of one clip under ``condition``."""
    if condition.drawn:
        rng = clip_rng(settings.seed, name, "levels")
        snr = int(settings.snr_choices_db[int(rng.integers(len(settings.snr_choices_db)))])
        blur = int(settings.blur_choices[int(rng.integers(len(settings.blur_choices)))])
        return snr, blur
    return condition.snr_db, condition.blur_factor or 1
