"""What the video encoders over face clips share (``mae_dfer``, ``svfap``, ``hicmae``): weights from
a tag or a path, a cache key over the weights and the face pipeline, the checks of the common
options, the clips' ImageNet normalisation and the precision (autocast) they run in."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Mapping

import numpy as np
import torch

from feature_extractors.base import Extractor
from feature_extractors.checkpoints import read_checkpoint_args
from feature_extractors.visual.faces import (
    FaceConfig,
    face_config_from,
    face_key_config,
    face_weights_digest,
    validate_face_config,
)
from feature_extractors.visual.lgi_former import IMAGENET_MEAN, IMAGENET_STD
from feature_extractors.weights import resolve_weights
from mer.core.hashing import file_digest

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LEVELS = ("utterance", "frame")


class FaceClipEncoder(Extractor):
    """Base of the face-clip encoders. Subclasses' configs have ``weights``, ``level``,
    ``sampling_stride``, ``num_views``, ``precision`` and ``face``; they call
    :meth:`_check_common` with their default face config from ``__init__``."""

    def _check_common(self, default_face: FaceConfig) -> None:
        # Hydra hands ``face`` over as a mapping of the fields it sets (over the extractor's default).
        self.config = dataclasses.replace(self.config, face=face_config_from(self.config.face, default_face))
        c = self.config
        if c.level not in LEVELS:
            raise ValueError(f"{self.name}: level must be one of {LEVELS}, got {c.level!r}")
        if c.precision not in PRECISIONS:
            raise ValueError(f"{self.name}: precision must be one of {PRECISIONS}, got {c.precision!r}")
        if c.sampling_stride < 1 or c.num_views < 1:
            raise ValueError(f"{self.name}: sampling_stride and num_views must be >= 1")
        validate_face_config(c.face)
        self.level = c.level

    # --- identity -------------------------------------------------------------------------
    def weights_file(self) -> str:
        return str(resolve_weights(self.config.weights))

    def weights_digest(self) -> str:
        digest = file_digest(self.weights_file())
        face = face_weights_digest(self.config.face)
        return digest if face == "none" else f"{digest}+face:{face}"

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        return {**identity, "config": face_key_config(identity["config"])}

    def clip_shape(self) -> tuple[int, int]:
        """``(frames, pixels)`` of the checkpoint's clips: the loaded model's, else its file's
        ``args`` (:meth:`shape_from_args`; read without its tensors, once per process: the decoding
        workers never load the model)."""
        model = getattr(self, "_model", None)
        if model is not None:
            return model.cfg.num_frames, model.cfg.img_size
        if getattr(self, "_shape", None) is None:
            self._shape = self.shape_from_args(read_checkpoint_args(self.weights_file()))
        return self._shape

    def shape_from_args(self, args: Mapping[str, Any]) -> tuple[int, int]:
        """``(args.num_frames, args.input_size)``, 16 and 160 when absent."""
        return int(args.get("num_frames") or 16), int(args.get("input_size") or 160)

    # --- work -----------------------------------------------------------------------------
    def normalised(self, clips: np.ndarray) -> torch.Tensor:
        """uint8 clips ``[N, T, S, S, 3]`` -> float32 ``[N, 3, T, S, S]`` on the device, /255 and
        ImageNet mean/std."""
        device = self.device
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(device)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1, 1)
        return (x.permute(0, 4, 1, 2, 3).float() / 255 - mean) / std

    def precision_context(self) -> contextlib.AbstractContextManager:
        """Inference mode and the configured precision: ``auto`` is bf16 autocast on CUDA and fp32
        on a CPU; bf16 autocast also runs on CPUs, fp16 only on CUDA (a CPU then stays fp32)."""
        kind = torch.device(self.device).type
        c = self.config
        precision = ("bf16" if kind == "cuda" else "fp32") if c.precision == "auto" else c.precision
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        enabled = dtype is not None and (kind == "cuda" or dtype == torch.bfloat16)
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast(kind, dtype=dtype or torch.float32, enabled=enabled))
        return stack
