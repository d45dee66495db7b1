"""``opensmile_egemaps``: openSMILE functionals (eGeMAPSv02 by default), an OPTIONAL extra.

LICENCE: openSMILE is distributed under audEERING's research licence, which allows private,
research and educational use only -- **no commercial use** without a separate licence from
audEERING GmbH. mer therefore does not install it: ``pip install -c constraints.txt
opensmile==2.6.0`` adds it, and by installing it you accept that licence. ``egemaps_librosa``
approximates the same 88 eGeMAPS parameters with librosa and carries no such restriction.

This is the reference implementation of the hand-crafted sets MERTools uses (its ``eGeMAPS``,
``IS09`` and ``IS10`` features; MERTools ran openSMILE 2.3 with ``eGeMAPSv01a``, the pip package
ships ``eGeMAPSv02``). Output: float32 ``[D]`` utterance functionals in openSMILE's column order
(:meth:`OpenSmileFunctionals.feature_names`), with ``D`` by ``feature_set``: eGeMAPSv02 88,
GeMAPSv01b 62, ComParE_2016 6373, emobase 988, IS09 384, IS10 1582.

The extractor is registered whether or not openSMILE is installed (construction is cheap and
imports nothing); ``setup`` and ``load`` raise an ``ImportError`` that names the pip command and
the licence when it is missing. Both stages: ``load`` decodes the audio and runs openSMILE (pure
CPU, in the decoding worker, one ``Smile`` per process); ``forward`` hands the vectors on.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import ClassVar, Sequence

import numpy as np

from feature_extractors.audio.io import load_audio
from feature_extractors.base import EXTRACTORS, Extractor
from mer.core.failures import MediaError
from mer.core.samples import Sample

SUPPORTED_VERSION = "2.6.0"
FEATURE_SET_DIMS = {"eGeMAPSv02": 88, "GeMAPSv01b": 62, "ComParE_2016": 6373, "emobase": 988,
                    "IS09": 384, "IS10": 1582}
"""Functionals per feature set (openSMILE 2.6.0)."""

NOT_INSTALLED = (
    "opensmile_egemaps needs the optional package opensmile, which mer does not install because "
    "its licence (audEERING research licence) allows non-commercial research and educational use "
    "only. If that fits your use, run `pip install -c constraints.txt opensmile==2.6.0`; otherwise "
    "use the egemaps_librosa extractor (the same 88 eGeMAPS parameters approximated with librosa, "
    "no licence restriction).")


def _import_opensmile():
    try:
        import opensmile  # optional dependency, imported on use
    except ImportError:
        raise ImportError(NOT_INSTALLED) from None
    return opensmile


@EXTRACTORS.register("opensmile_egemaps")
class OpenSmileFunctionals(Extractor):
    """openSMILE functionals -> float32 ``[D]`` (88 for eGeMAPSv02). Non-commercial licence."""

    name: ClassVar[str] = "opensmile_egemaps"
    modality: ClassVar[str] = "audio"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("_smile",)

    @dataclass(frozen=True)
    class Config:
        feature_set: str = "eGeMAPSv02"    # eGeMAPSv02 | ComParE_2016 | GeMAPSv01b | emobase | IS09 | IS10
        sample_rate_hz: int = 16000
        min_duration_s: float = 0.1        # openSMILE fills shorter clips with NaN
        batch_size: int = 16

    def __init__(self, config: "OpenSmileFunctionals.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        if self.config.feature_set not in FEATURE_SET_DIMS:
            raise ValueError(f"{self.name}: feature_set must be one of {sorted(FEATURE_SET_DIMS)}, "
                             f"got {self.config.feature_set!r}")
        self._smile = None

    # --- identity (cheap; works without opensmile installed) --------------------------------
    def weights_digest(self) -> str:
        """The openSMILE version (its configs decide the numbers); the supported pin when absent,
        so a cache filled elsewhere is still found."""
        try:
            installed = metadata.version("opensmile")
        except metadata.PackageNotFoundError:
            installed = SUPPORTED_VERSION
        return f"opensmile=={installed}"

    @property
    def dim(self) -> int:
        return FEATURE_SET_DIMS[self.config.feature_set]

    def feature_names(self) -> list[str]:
        """openSMILE's column names, in output order (needs opensmile)."""
        return list(self.smile().feature_names)

    # --- work ----------------------------------------------------------------------------
    def smile(self):
        """The ``opensmile.Smile`` of this process (built lazily; about 0.2 s)."""
        if self._smile is None:
            opensmile = _import_opensmile()
            self._smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, self.config.feature_set),
                                          feature_level=opensmile.FeatureLevel.Functionals)
        return self._smile

    def setup(self, device: str = "cpu") -> None:
        self.smile()            # fail here, with the licence and the pip command, not per clip
        super().setup(device)

    def warmup(self) -> None:
        """Build this worker's ``Smile`` (about 0.2 s) before it takes clips."""
        self.smile()

    def load(self, sample: Sample) -> np.ndarray:
        """Decode and run openSMILE (CPU, in the decoding worker): float32 ``[D]``."""
        wav = load_audio(sample, self.config.sample_rate_hz)
        return self.features(wav)

    def features(self, wav: np.ndarray) -> np.ndarray:
        """Float32 ``[D]`` for a mono waveform ``[N]`` at ``sample_rate_hz``. Raises
        :class:`MediaError` ``too_short`` / ``nonfinite_feature``."""
        duration_s = wav.size / self.config.sample_rate_hz
        if duration_s < self.config.min_duration_s:
            raise MediaError("too_short", f"{duration_s:.3f} s of audio; {self.name} needs at least "
                             f"min_duration_s={self.config.min_duration_s}")
        frame = self.smile().process_signal(np.ascontiguousarray(wav, dtype=np.float32),
                                            self.config.sample_rate_hz)
        out = frame.to_numpy(dtype=np.float32)[0]
        if not np.all(np.isfinite(out)):
            bad = [n for n, v in zip(frame.columns, out) if not np.isfinite(v)]
            raise MediaError("nonfinite_feature", f"openSMILE returned non-finite {bad[:5]}")
        return out

    def forward(self, samples: Sequence[Sample], inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The functionals are done in :meth:`load`; one ``[D]`` float32 vector per sample."""
        return [np.asarray(x, dtype=np.float32) for x in inputs]
