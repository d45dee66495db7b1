"""Hugging Face image and video encoders over face crops (or whole frames), from a local folder.

* ``hf_image``: an image encoder run per frame, then pooled over frames: CLIP's vision tower
  (``CLIPVisionModel`` / ``CLIPVisionModelWithProjection``), DINOv2, ViT, SigLIP or any
  ``AutoModel`` vision transformer. Per frame the embedding is the model's pooled output, the
  CLS token or the mean of the patch tokens, of the last layer or of the sum of the last four;
  per clip it is the mean over frames ``[D]``, or ``[T, D]`` with ``level=frame``.
* ``hf_video``: VideoMAE (``VideoMAEModel``): ``num_frames`` frames of the face track (the
  model's own count by default), mean over its output tokens; ``num_clips`` windows over the
  clip are averaged (or kept, ``[num_clips, D]``, with ``level=frame``).

Input: the main-face crops of the shared face pipeline (:func:`.faces.load_face_clip`, cached
and shared with every face extractor using the same ``face`` options) or, with
``input=frame``, whole frames (:func:`.video.read_frames`).

Preprocessing follows the folder's ``preprocessor_config.json`` (size, centre crop, rescale,
mean/std): the resize and crop run in the CPU stage (``load``, with OpenCV; area averaging when
shrinking, which matches PIL's antialiased resize better than plain bicubic), so ``forward``
only stacks uint8 arrays, rescales and normalises on the device, and runs the model in chunks
(bf16 autocast on CUDA).

Nothing is downloaded: ``model_path`` must be a local folder (``save_pretrained`` output or a
downloaded snapshot) holding ``config.json``, the weights and ``preprocessor_config.json``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from feature_extractors.base import EXTRACTORS, Extractor
from feature_extractors.visual.faces import (
    FaceConfig,
    face_config_from,
    face_key_config,
    face_times,
    face_weights_digest,
    load_face_clip,
    validate_face_config,
)
from feature_extractors.visual.video import map_frames, uniform_indices
from mer.core.failures import ExtractionFailure, no_media_error
from mer.core.hashing import folder_digest
from mer.core.samples import Sample
from mer.core.timebase import frame_times, times_of, with_times

log = logging.getLogger(__name__)

POOLS = ("pooler", "cls", "mean_patch", "image_embeds")
LAYERS = ("last", "last4_sum")
INPUTS = ("face", "frame")
LEVELS = ("utterance", "frame")


# --- preprocessing --------------------------------------------------------------------------

@dataclass(frozen=True)
class ImagePreprocess:
    """What a model folder's ``preprocessor_config.json`` says about images.

    ``shortest_edge`` (resize keeping the aspect) or ``resize_hw`` (to that size), then
    ``crop_hw`` (centre crop; None: none), then ``x * rescale_factor``, then ``(x - mean) / std``.
    ``resample`` is PIL's code (2 bilinear, 3 bicubic), used when enlarging.
    """

    shortest_edge: int | None = None
    resize_hw: tuple[int, int] | None = (224, 224)
    crop_hw: tuple[int, int] | None = None
    resample: int = 3
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "ImagePreprocess":
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no preprocessor_config.json: the image size and "
                                    "normalisation come from it (save the model's image processor "
                                    "there with processor.save_pretrained(folder))")
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "ImagePreprocess":
        def hw(value: Any) -> tuple[int, int] | None:
            if value is None:
                return None
            if isinstance(value, int):
                return (value, value)
            if "height" in value and "width" in value:
                return (int(value["height"]), int(value["width"]))
            return None

        do_crop = bool(cfg.get("do_center_crop", False))
        size = cfg.get("size")
        shortest = resize = None
        if cfg.get("do_resize", True) and size is not None:
            if isinstance(size, int):
                # An integer size means the shortest edge for processors that then crop (CLIP),
                # the full size for those that do not (ViT).
                shortest, resize = (size, None) if do_crop else (None, (size, size))
            elif "shortest_edge" in size:
                shortest = int(size["shortest_edge"])
            else:
                resize = hw(size)
        mean = cfg.get("image_mean", [0.5, 0.5, 0.5]) if cfg.get("do_normalize", True) else [0.0] * 3
        std = cfg.get("image_std", [0.5, 0.5, 0.5]) if cfg.get("do_normalize", True) else [1.0] * 3
        return cls(shortest_edge=shortest, resize_hw=resize,
                   crop_hw=hw(cfg.get("crop_size")) if do_crop else None,
                   resample=int(cfg.get("resample", 3) or 3),
                   rescale_factor=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
                   mean=tuple(float(v) for v in _three(mean)), std=tuple(float(v) for v in _three(std)))

    @property
    def output_hw(self) -> tuple[int, int] | None:
        """The model input's (height, width), when it does not depend on the image's aspect."""
        if self.crop_hw:
            return self.crop_hw
        return self.resize_hw

    def resize_and_crop(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, h, w, 3]``: resized and centre-cropped."""
        return np.stack([self._one(img) for img in images])

    def _one(self, img: np.ndarray) -> np.ndarray:
        import cv2  # deferred: loads cv2 only when used

        h, w = img.shape[:2]
        if self.shortest_edge:
            short, long = (h, w) if h <= w else (w, h)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            target = (new_short, new_long) if h <= w else (new_long, new_short)
        elif self.resize_hw:
            target = self.resize_hw
        else:
            target = (h, w)
        if target != (h, w):
            shrink = target[0] * target[1] < h * w
            interp = cv2.INTER_AREA if shrink else (cv2.INTER_CUBIC if self.resample == 3 else cv2.INTER_LINEAR)
            img = cv2.resize(img, (target[1], target[0]), interpolation=interp)
        if self.crop_hw:
            img = _centre_crop(img, self.crop_hw)
        return np.ascontiguousarray(img)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., 3, h, w]`` -> float32 normalised, on the tensor's device."""
        mean = torch.tensor(self.mean, device=pixels.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(3, 1, 1)
        return (pixels.float() * self.rescale_factor - mean) / std


def _three(values: Any) -> list[float]:
    values = [values] * 3 if isinstance(values, (int, float)) else list(values)
    if len(values) != 3:
        raise ValueError(f"expected 3 channel values (RGB), got {values}")
    return values


def _centre_crop(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The centre ``hw`` of ``img``, zero-padded where the image is smaller (as HF does)."""
    ch, cw = hw
    h, w = img.shape[:2]
    if h < ch or w < cw:
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        img = np.pad(img, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
        h, w = img.shape[:2]
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def spread_indices(total: int, num: int) -> np.ndarray:
    """Exactly ``num`` indices into ``range(total)`` spread evenly (segment centres); when
    ``total < num`` frames repeat in order (a model with a fixed frame count needs them all)."""
    if total <= 0:
        return np.zeros(0, np.int64)
    return np.minimum(((np.arange(num) + 0.5) * total / num).astype(np.int64), total - 1)


# --- model loading --------------------------------------------------------------------------

def _require_folder(extractor: str, model_path: str, example: str) -> None:
    if not model_path or model_path == "???":                    # "???": Hydra's unset value
        raise ValueError(f"{extractor} needs model_path: a local folder with config.json, the "
                         f"weights and preprocessor_config.json, e.g. "
                         f"features.visual.options.model_path={example} (nothing is downloaded)")
    if not os.path.isfile(os.path.join(model_path, "config.json")):
        raise FileNotFoundError(f"{extractor}: model_path {model_path} has no config.json; point it at "
                                f"a folder written by save_pretrained or a downloaded model snapshot")


def load_vision_model(model_path: str, pool: str = "cls") -> torch.nn.Module:
    """The vision encoder in ``model_path`` (local files only), in eval mode.

    CLIP and SigLIP folders (full or vision-only) give their vision tower (CLIP with its
    projection when ``pool="image_embeds"``); anything else goes through ``AutoModel``. Weights
    the checkpoint lacks are an error, not a random initialisation."""
    from transformers import AutoConfig, AutoModel  # deferred: loads transformers only when used

    config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    kind = config.model_type
    if kind in ("clip", "clip_vision_model"):
        # deferred: loads transformers only when used
        from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

        cls = CLIPVisionModelWithProjection if pool == "image_embeds" else CLIPVisionModel
    elif kind in ("siglip", "siglip_vision_model"):
        from transformers import SiglipVisionModel as cls  # deferred: loads transformers only when used
    else:
        cls = AutoModel
    if pool == "image_embeds" and kind not in ("clip", "clip_vision_model"):
        raise ValueError(f"pool=image_embeds is CLIP's projected embedding; {model_path} is a {kind!r} model")
    model, info = cls.from_pretrained(model_path, local_files_only=True, output_loading_info=True)
    missing = sorted(info.get("missing_keys", ()))
    only_pooler = all(k.startswith("pooler.") for k in missing)
    if missing and not (only_pooler and pool != "pooler"):      # an unused, untrained pooler is fine
        hint = " (no trained pooler: use pool=cls or pool=mean_patch)" if only_pooler else ""
        raise ValueError(f"{model_path}: {len(missing)} weights missing from the checkpoint for "
                         f"{type(model).__name__}: {missing[:8]}{hint}")
    return model.eval()


def _vision_config(model: torch.nn.Module) -> Any:
    cfg = model.config
    return getattr(cfg, "vision_config", None) or cfg


def _autocast(device: str):
    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _tokens(out: Any, layers: str) -> torch.Tensor:
    """``[N, L, D]``: the last layer's tokens, or the sum of the last four layers' tokens."""
    if layers == "last":
        return out.last_hidden_state
    hidden = out.hidden_states
    if hidden is None or len(hidden) < 5:
        raise ValueError("layers=last4_sum needs a model with at least 4 layers")
    return torch.stack(hidden[-4:]).sum(0)


class _FaceOrFrameInput:
    """Shared by both encoders: how a sample becomes ``[T, H, W, 3]`` uint8 RGB images."""

    config: Any
    context: Any

    def _images(self, sample: Sample, count: int, exact: bool) -> np.ndarray:
        """``count`` images of the sample spread over the clip (fewer when it has fewer, unless
        ``exact``: then frames repeat)."""
        return self._images_and_times(sample, count, exact)[0]

    def _images_and_times(self, sample: Sample, count: int, exact: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`_images` and the time of each image's source frame (seconds; None when the
        video's rate is unknown), :mod:`mer.core.timebase`."""
        if self.config.input == "face":
            clip = load_face_clip(sample, self.config.face, self.context)
            crops, times = clip.crops, face_times(clip, sample.video_path)
        else:
            if not sample.video_path:
                raise no_media_error(sample, f"sample {sample.name} has no video_path (input=frame "
                                             "needs the video; input=face also reads face crops)")
            frames, index, fps, _ = map_frames(sample.video_path, lambda f: f, num_frames=count)
            crops, times = np.stack(frames), frame_times(index, fps)
        if exact:
            idx = spread_indices(len(crops), count)
        else:
            idx = uniform_indices(len(crops), count)
        return crops[idx], None if times is None else times[idx]

    def weights_digest(self) -> str:
        digest = folder_digest(self.config.model_path)
        face = face_weights_digest(self.config.face) if self.config.input == "face" else "none"
        return digest if face == "none" else f"{digest}+face:{face}"

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        # Images per model call change speed, not the numbers; with input=frame no face is made.
        config = face_key_config(identity["config"])
        config.pop("images_per_forward", None)
        if config.get("input") == "frame":
            config.pop("face", None)
        return {**identity, "config": config}


def _face_options(extractor: Extractor) -> None:
    # Hydra hands ``face`` over as a mapping of the fields it sets.
    extractor.config = dataclasses.replace(extractor.config, face=face_config_from(extractor.config.face))
    if extractor.config.input not in INPUTS:
        raise ValueError(f"{extractor.name}: input={extractor.config.input!r}; choose one of {INPUTS}")
    if extractor.config.input == "face":
        validate_face_config(extractor.config.face)


# --- hf_image -------------------------------------------------------------------------------

@EXTRACTORS.register("hf_image")
class HFImageEncoder(_FaceOrFrameInput, Extractor):
    """A Hugging Face image encoder per frame, pooled over frames -> float32 ``[D]`` (or
    ``[T, D]`` with ``level=frame``)."""

    name: ClassVar[str] = "hf_image"
    modality: ClassVar[str] = "visual"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("_model",)

    @dataclass(frozen=True)
    class Config:
        batch_size: int = 8              # clips per batch
        model_path: str = ""             # local folder (required): CLIP, DINOv2, ViT, SigLIP, ...
        input: str = "face"              # face: main-face crops; frame: whole frames
        num_frames: int = 8              # images per clip, spread over it
        pool: str = "pooler"             # pooler | cls | mean_patch | image_embeds (CLIP projection)
        layers: str = "last"             # last | last4_sum (cls / mean_patch only)
        level: str = "utterance"         # utterance: mean over frames [D]; frame: [T, D]
        images_per_forward: int = 64     # images per model call (memory, not numbers)
        face: FaceConfig = field(default_factory=FaceConfig)

    def __init__(self, config: "HFImageEncoder.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        _face_options(self)
        _require_folder(self.name, cfg.model_path, "/models/clip-vit-base-patch32")
        for option, value, allowed in (("pool", cfg.pool, POOLS), ("layers", cfg.layers, LAYERS),
                                       ("level", cfg.level, LEVELS)):
            if value not in allowed:
                raise ValueError(f"hf_image: {option}={value!r}; choose one of {allowed}")
        if cfg.layers != "last" and cfg.pool in ("pooler", "image_embeds"):
            raise ValueError(f"hf_image: pool={cfg.pool} is computed from the last layer only; "
                             "layers=last4_sum goes with pool=cls or pool=mean_patch")
        if cfg.num_frames < 1:
            raise ValueError("hf_image: num_frames must be >= 1")
        self.level = cfg.level
        self._model = None
        self._preprocess: ImagePreprocess | None = None

    def preprocess(self) -> ImagePreprocess:
        if self._preprocess is None:
            self._preprocess = ImagePreprocess.from_folder(self.config.model_path)
        return self._preprocess

    def setup(self, device: str = "cpu") -> None:
        self._model = load_vision_model(self.config.model_path, self.config.pool).to(device)
        super().setup(device)

    def load(self, sample: Sample) -> np.ndarray:
        """uint8 ``[T, h, w, 3]``: the sample's images resized and cropped for the model (at
        frame level with their times, :class:`~mer.core.timebase.FrameRows`, where known)."""
        images, times = self._images_and_times(sample, self.config.num_frames, exact=False)
        images = self.preprocess().resize_and_crop(images)
        return with_times(images, times, dtype=np.uint8) if self.level == "frame" else images

    def forward(self, samples: Sequence[Sample], inputs: Sequence[np.ndarray]
                ) -> list[np.ndarray | ExtractionFailure]:
        """Per sample float32 ``[D]`` (mean over its frames) or ``[T, D]`` (``level=frame``)."""
        sizes = [len(x) for x in inputs]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):          # frames differ in size only with input=frame
            by_shape.setdefault(x.shape[1:], []).append(i)
        per_sample: list[np.ndarray | None] = [None] * len(inputs)
        for idx in by_shape.values():
            emb = self.embed_images(np.concatenate([inputs[i] for i in idx]))
            start = 0
            for i in idx:
                per_sample[i] = emb[start:start + sizes[i]]
                start += sizes[i]
        if self.level == "frame":
            return [with_times(e, times_of(x)) for e, x in zip(per_sample, inputs)]
        return [e.mean(0).astype(np.float32) for e in per_sample]

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``[N, h, w, 3]`` -> float32 ``[N, D]``, ``images_per_forward`` at a time."""
        out = []
        chunk = max(1, int(self.config.images_per_forward))
        for start in range(0, len(images), chunk):
            pixels = torch.from_numpy(images[start:start + chunk]).to(self.device).permute(0, 3, 1, 2)
            pixels = self.preprocess().normalise(pixels)
            with torch.inference_mode(), _autocast(self.device):
                result = self._model(pixel_values=pixels, output_hidden_states=self.config.layers != "last")
                out.append(self._pool(result, pixels.shape[-2:]).float().cpu().numpy())
        return np.concatenate(out)

    def _pool(self, result: Any, hw: tuple[int, int]) -> torch.Tensor:
        pool = self.config.pool
        if pool == "image_embeds":
            return result.image_embeds
        if pool == "pooler":
            if getattr(result, "pooler_output", None) is None:
                raise ValueError(f"{type(self._model).__name__} has no pooled output; use pool=cls "
                                 "or pool=mean_patch")
            return result.pooler_output
        tokens = _tokens(result, self.config.layers)
        patch = int(getattr(_vision_config(self._model), "patch_size", 0) or 0)
        num_patches = (hw[0] // patch) * (hw[1] // patch) if patch else tokens.shape[1] - 1
        specials = tokens.shape[1] - num_patches       # CLS (+ DINOv2's register tokens)
        if pool == "cls":
            if specials < 1:
                raise ValueError(f"{type(self._model).__name__} has no CLS token; use pool=mean_patch or pooler")
            return tokens[:, 0]
        return tokens[:, specials:].mean(1)


# --- hf_video -------------------------------------------------------------------------------

@EXTRACTORS.register("hf_video")
class HFVideoEncoder(_FaceOrFrameInput, Extractor):
    """VideoMAE over ``num_frames`` frames of the face track -> float32 ``[D]`` (mean over its
    tokens, averaged over ``num_clips`` windows), or ``[num_clips, D]`` with ``level=frame``."""

    name: ClassVar[str] = "hf_video"
    modality: ClassVar[str] = "visual"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("_model",)

    @dataclass(frozen=True)
    class Config:
        batch_size: int = 4              # clips per batch
        model_path: str = ""             # local VideoMAE folder (required)
        input: str = "face"              # face: main-face crops; frame: whole frames
        num_frames: int = 0              # frames per window; 0: the model's config.num_frames
        num_clips: int = 1               # windows over the clip (consecutive thirds for 3, ...)
        layers: str = "last"             # last | last4_sum
        level: str = "utterance"         # utterance: mean over windows [D]; frame: [num_clips, D]
        images_per_forward: int = 64     # frames per model call, in whole windows
        face: FaceConfig = field(default_factory=FaceConfig)

    def __init__(self, config: "HFVideoEncoder.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        _face_options(self)
        cfg = self.config
        _require_folder(self.name, cfg.model_path, "/models/videomae-base")
        model_cfg = json.loads(Path(cfg.model_path, "config.json").read_text())
        frames = int(model_cfg.get("num_frames", 16))
        if cfg.num_frames not in (0, frames):
            raise ValueError(f"hf_video: num_frames={cfg.num_frames}, but {cfg.model_path} was built "
                             f"for {frames} frames (VideoMAE's position embeddings fix it); leave it 0")
        self.config = dataclasses.replace(cfg, num_frames=frames)
        self._image_size = int(model_cfg.get("image_size", 224))
        for option, value, allowed in (("layers", cfg.layers, LAYERS), ("level", cfg.level, LEVELS)):
            if value not in allowed:
                raise ValueError(f"hf_video: {option}={value!r}; choose one of {allowed}")
        if cfg.num_clips < 1:
            raise ValueError("hf_video: num_clips must be >= 1")
        self.level = cfg.level
        self._model = None
        self._preprocess: ImagePreprocess | None = None

    def preprocess(self) -> ImagePreprocess:
        if self._preprocess is None:
            pre = ImagePreprocess.from_folder(self.config.model_path)
            if pre.output_hw not in (None, (self._image_size, self._image_size)):
                raise ValueError(f"hf_video: {self.config.model_path}'s processor makes {pre.output_hw} "
                                 f"images but the model takes {self._image_size}x{self._image_size}")
            if pre.output_hw is None:
                pre = dataclasses.replace(pre, crop_hw=(self._image_size, self._image_size))
            self._preprocess = pre
        return self._preprocess

    def setup(self, device: str = "cpu") -> None:
        from transformers import VideoMAEModel  # deferred: loads transformers only when used

        model, info = VideoMAEModel.from_pretrained(self.config.model_path, local_files_only=True,
                                                    output_loading_info=True)
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            raise ValueError(f"{self.config.model_path}: {len(missing)} VideoMAE weights missing from "
                             f"the checkpoint: {missing[:8]}")
        self._model = model.eval().to(device)
        super().setup(device)

    def load(self, sample: Sample) -> np.ndarray:
        """uint8 ``[num_clips, num_frames, h, w, 3]``: consecutive windows of the clip (at frame
        level with each window's time, the centre of its first and last frame, where known)."""
        t, k = self.config.num_frames, self.config.num_clips
        images, times = self._images_and_times(sample, t * k, exact=True)
        images = self.preprocess().resize_and_crop(images)
        windows = images.reshape(k, t, *images.shape[1:])
        if self.level != "frame" or times is None:
            return windows
        per_window = times.reshape(k, t)
        return with_times(windows, (per_window[:, 0] + per_window[:, -1]) / 2.0, dtype=np.uint8)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[np.ndarray]
                ) -> list[np.ndarray | ExtractionFailure]:
        windows = np.concatenate(list(inputs))                      # [B * num_clips, T, h, w, 3]
        per_call = max(1, int(self.config.images_per_forward) // self.config.num_frames)
        out = []
        for start in range(0, len(windows), per_call):
            pixels = torch.from_numpy(windows[start:start + per_call]).to(self.device)
            pixels = self.preprocess().normalise(pixels.permute(0, 1, 4, 2, 3))   # [b, T, 3, h, w]
            with torch.inference_mode(), _autocast(self.device):
                result = self._model(pixel_values=pixels, output_hidden_states=self.config.layers != "last")
                out.append(_tokens(result, self.config.layers).mean(1).float().cpu().numpy())
        emb = np.concatenate(out).reshape(len(inputs), self.config.num_clips, -1)
        if self.level == "frame":
            return [with_times(e, times_of(x)) for e, x in zip(emb, inputs)]
        return [e.mean(0).astype(np.float32) for e in emb]
