"""``clip_zeroshot``: zero-shot emotion scores of the face from a CLIP or SigLIP model and text prompts.

EmoCapCLIP's setting: a face is classified by its similarity to prompts such as "a photo of a face
showing {emotion}." Per class the text embeddings of every template (and every word given for the
class) are L2-normalised, averaged and normalised again (CLIP's prompt ensembling). Per frame the
image embedding is L2-normalised and

* CLIP (softmax): ``logits = logit_scale * cos(image, class)``, ``p = softmax(logits)``;
* SigLIP (sigmoid, the model has a ``logit_bias``): ``p = sigmoid(logit_scale * cos + logit_bias)``,
  one independent score per class (they do not sum to 1).

``pool`` pools the frames of a clip: ``mean_prob`` (mean of the per-frame probabilities),
``mean_logit`` (the activation of the mean logits) or ``max`` (per class, the largest per-frame
probability; not renormalised).

Output columns, in this order (:func:`zero_shot_predict` turns them into labels):

* ``level=utterance``: float32 ``[C]``, the pooled probabilities in ``labels`` order, then with
  ``append_embedding=true`` the ``[D]`` mean of the L2-normalised frame embeddings (``[C + D]``),
  so the same entry is a zero-shot predictor and a feature for fusion;
* ``level=frame``: ``[T, C]`` per-frame probabilities (``[T, C + D]`` with the embeddings).

``labels`` empty means the dataset's classes: the run binds them before extraction
(:class:`~feature_extractors.base.ClassBound`), so they are part of the cache key. The words put in
the prompts come from ``label_words`` (class -> a word or a list of words), else
:data:`LABEL_WORDS` (MER's and MELD's classes and a few more), else the class string itself.

Input and frame sampling are ``hf_image``'s (:mod:`.image_encoders`): main-face crops of the
shared face pipeline, or whole frames with ``input=frame``; the folder's
``preprocessor_config.json`` decides size, crop and normalisation. Nothing is downloaded:
``model_path`` is a local folder with a full CLIP or SigLIP model (``CLIPModel`` /
``SiglipModel``: both towers), its tokenizer and its image processor config.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from feature_extractors.base import EXTRACTORS, ClassBound, Extractor
from feature_extractors.visual.faces import FaceConfig
from feature_extractors.visual.image_encoders import (ImagePreprocess, _face_options, _FaceOrFrameInput,
                                                      _require_folder)
from mer.core.failures import ExtractionFailure
from mer.core.samples import Sample
from mer.core.timebase import times_of, with_times

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a face showing {}.",
    "a photo of a {} looking face.",
    "a close-up photo of a person feeling {}.",
    "a face that looks {}.",
    "a photo of a person with a {} expression.",
)
"""Prompt templates; ``{}`` takes the class's word(s)."""

LABEL_WORDS: dict[str, str] = {
    # MER2023-2025: neutral, angry, happy, sad, worried, surprise
    "neutral": "neutral", "angry": "angry", "happy": "happy", "sad": "sad", "worried": "worried",
    "surprise": "surprised",
    # MELD: anger, joy, sadness, neutral, disgust, fear, surprise
    "anger": "angry", "joy": "happy", "sadness": "sad", "disgust": "disgusted", "fear": "fearful",
    # DFEW / MAFW / IEMOCAP extras
    "happiness": "happy", "contempt": "contemptuous", "anxiety": "anxious", "helplessness": "helpless",
    "disappointment": "disappointed", "excited": "excited", "frustrated": "frustrated",
}
"""Built-in class -> prompt word; a class not here is put in the prompt as written (``_`` -> space)."""

POOLS = ("mean_prob", "mean_logit", "max")
INPUTS = ("face", "frame")
LEVELS = ("utterance", "frame")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def class_words(label: str, label_words: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The words prompts use for ``label``: ``label_words[label]`` (a word or a list), else
    :data:`LABEL_WORDS`, else the label with ``_`` as spaces."""
    given = (label_words or {}).get(label)
    if given is None:
        given = LABEL_WORDS.get(label, label.replace("_", " "))
    words = (given,) if isinstance(given, str) else tuple(str(w) for w in given)
    if not words or not all(w.strip() for w in words):
        raise ValueError(f"clip_zeroshot: label_words[{label!r}] = {given!r}; give a word or a non-empty list")
    return words


def zero_shot_predict(probabilities: np.ndarray, labels: Sequence[str]) -> list[str]:
    """The zero-shot label of each row: argmax over the first ``len(labels)`` columns (the class
    probabilities of a ``clip_zeroshot`` feature, in its ``labels`` order; an appended embedding
    after them is ignored). ``[N, C(+D)]`` -> N labels; a single ``[C(+D)]`` row -> one label."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        p = p[None]
    labels = list(labels)
    if p.ndim != 2 or p.shape[1] < len(labels) or not labels:
        raise ValueError(f"zero_shot_predict: probabilities of shape {np.shape(probabilities)} do not hold "
                         f"{len(labels)} class columns ({labels})")
    p = p[:, :len(labels)]
    bad = np.flatnonzero(~np.isfinite(p).all(1))
    if bad.size:
        raise ValueError(f"zero_shot_predict: {bad.size} rows have non-finite probabilities (first: row "
                         f"{int(bad[0])}); a sample without a feature has no zero-shot label")
    return [labels[i] for i in p.argmax(1)]


def _autocast(device: str, precision: str):
    """bf16 (``auto``, ``bf16``) or fp16 autocast on CUDA; fp32 elsewhere."""
    if not str(device).startswith("cuda") or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


def _embeds(out: Any) -> torch.Tensor:
    """``get_*_features`` returns the projected embedding, or (transformers 5) an output whose
    ``pooler_output`` holds it."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_clip_model(model_path: str) -> tuple[torch.nn.Module, Any]:
    """The image-text model and its tokenizer in ``model_path`` (local files only), in eval mode.
    Weights the checkpoint lacks are an error, not a random initialisation."""
    from transformers import AutoModel, AutoTokenizer  # deferred: loads transformers only when used

    model, info = AutoModel.from_pretrained(model_path, local_files_only=True, output_loading_info=True)
    for need in ("get_text_features", "get_image_features", "logit_scale"):
        if not hasattr(model, need):
            raise ValueError(f"clip_zeroshot: {model_path} holds a {type(model).__name__}, not an image-text "
                             f"model with both towers (CLIPModel, SiglipModel); a vision-only folder goes "
                             f"with features/visual=hf_image")
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise ValueError(f"{model_path}: {len(missing)} weights missing from the checkpoint for "
                         f"{type(model).__name__}: {missing[:8]}")
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    return model.eval(), tokenizer


@EXTRACTORS.register("clip_zeroshot")
class ClipZeroShot(ClassBound, _FaceOrFrameInput, Extractor):
    """Zero-shot class probabilities of the face from a CLIP / SigLIP model -> float32 ``[C]``
    (``[C + D]`` with ``append_embedding``; ``[T, C(+D)]`` with ``level=frame``), columns in
    ``labels`` order."""

    name: ClassVar[str] = "clip_zeroshot"
    modality: ClassVar[str] = "visual"
    level: ClassVar[str] = "utterance"
    version: ClassVar[str] = "1"
    _transient: ClassVar[tuple[str, ...]] = ("_model", "_tokenizer", "_class_embeds")

    @dataclass(frozen=True)
    class Config:
        batch_size: int = 8              # clips per batch
        model_path: str = ""             # local CLIPModel / SiglipModel folder (required)
        input: str = "face"              # face: main-face crops; frame: whole frames
        num_frames: int = 8              # images per clip, spread over it
        labels: tuple[str, ...] = ()     # output columns; empty: the dataset's classes (bound by the run)
        label_words: Mapping[str, Any] = field(default_factory=dict)   # class -> word or [words] in prompts
        templates: tuple[str, ...] = DEFAULT_TEMPLATES                  # each with one {}
        pool: str = "mean_prob"          # mean_prob | mean_logit | max (over frames)
        level: str = "utterance"         # utterance: [C] | frame: [T, C]
        append_embedding: bool = False   # also the mean L2-normalised image embedding [D]
        precision: str = "auto"          # auto / bf16: bf16 autocast on CUDA | fp16 (CUDA) | fp32; CPU: fp32
        images_per_forward: int = 64     # images per model call (memory, not numbers)
        face: FaceConfig = field(default_factory=FaceConfig)

    def __init__(self, config: "ClipZeroShot.Config | None" = None, **overrides) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        self.config = cfg = dataclasses.replace(
            cfg, labels=tuple(str(c) for c in cfg.labels), templates=tuple(str(t) for t in cfg.templates),
            label_words={str(k): v if isinstance(v, str) else list(v) for k, v in dict(cfg.label_words).items()})
        _face_options(self)
        _require_folder(self.name, cfg.model_path, "/models/clip-vit-base-patch32")
        for option, value, allowed in (("pool", cfg.pool, POOLS), ("level", cfg.level, LEVELS),
                                       ("precision", cfg.precision, PRECISIONS)):
            if value not in allowed:
                raise ValueError(f"clip_zeroshot: {option}={value!r}; choose one of {allowed}")
        if cfg.num_frames < 1:
            raise ValueError("clip_zeroshot: num_frames must be >= 1")
        if not cfg.templates or any(t.count("{}") != 1 for t in cfg.templates):
            raise ValueError(f"clip_zeroshot: templates={list(cfg.templates)}; give at least one, each with "
                             "exactly one {} where the class word goes")
        if len(set(cfg.labels)) != len(cfg.labels):
            raise ValueError(f"clip_zeroshot: labels={list(cfg.labels)} repeat a class")
        for label in cfg.labels:
            class_words(label, cfg.label_words)
        self.level = cfg.level
        self._model = None
        self._tokenizer = None
        self._class_embeds: torch.Tensor | None = None
        self._preprocess: ImagePreprocess | None = None

    # --- identity -------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        """The output's class columns, in order (empty until bound to a dataset's classes)."""
        return self.config.labels

    def columns(self) -> list[str]:
        """The output's column names: the ``labels``, then ``embedding_<i>`` with
        ``append_embedding`` (the width read from the folder's config.json, no weights loaded)."""
        if not self.config.append_embedding:
            return list(self.labels)
        cfg = json.loads(Path(self.config.model_path, "config.json").read_text())
        # CLIP projects to projection_dim; SigLIP's image embedding is its vision tower's width.
        dim = cfg.get("projection_dim") or (cfg.get("vision_config") or {}).get("hidden_size")
        return [*self.labels, *(f"embedding_{i}" for i in range(int(dim)))]

    def prompts(self) -> dict[str, list[str]]:
        """Class -> the prompts whose embeddings are averaged for it."""
        return {c: [t.format(w) for w in class_words(c, self.config.label_words) for t in self.config.templates]
                for c in self.labels}

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        # The words each class actually gets (the built-in map included) decide the output.
        config = dict(identity["config"])
        config["label_words"] = {c: list(class_words(c, self.config.label_words)) for c in self.labels}
        return {**identity, "config": config}

    # --- work -----------------------------------------------------------------------------
    def preprocess(self) -> ImagePreprocess:
        if self._preprocess is None:
            self._preprocess = ImagePreprocess.from_folder(self.config.model_path)
        return self._preprocess

    @property
    def uses_sigmoid(self) -> bool:
        """SigLIP-style scoring (the model has a ``logit_bias``); known after ``setup``."""
        return getattr(self._model, "logit_bias", None) is not None

    def setup(self, device: str = "cpu") -> None:
        if not self.labels:
            raise ValueError("clip_zeroshot has no labels: set features.visual.options.labels=[...] or run it "
                             "through mer.run / mer.extract, which bind the dataset's classes")
        if not str(device).startswith("cuda") and self.config.precision in ("bf16", "fp16"):
            log.info("clip_zeroshot: precision=%s autocasts on CUDA only; running fp32 on %s",
                     self.config.precision, device)
        model, tokenizer = load_clip_model(self.config.model_path)
        self._model, self._tokenizer = model.to(device), tokenizer
        super().setup(device)
        self._class_embeds = self.class_embeddings()

    def class_embeddings(self) -> torch.Tensor:
        """float32 ``[C, D]``: per class the mean of its L2-normalised prompt embeddings, normalised."""
        prompts = self.prompts()
        texts = [p for c in self.labels for p in prompts[c]]
        sigmoid = self.uses_sigmoid
        text_cfg = getattr(self._model.config, "text_config", None)
        max_length = int(getattr(text_cfg, "max_position_embeddings", 0) or 0) or None
        # SigLIP was trained on max_length-padded text without a mask (its pooled token is the
        # last one); CLIP pools at the end token and takes the mask.
        tokens = self._tokenizer(texts, padding="max_length" if sigmoid else True, truncation=True,
                                 max_length=max_length, return_tensors="pt")
        kwargs = {"input_ids": tokens["input_ids"].to(self.device)}
        if not sigmoid and "attention_mask" in tokens:
            kwargs["attention_mask"] = tokens["attention_mask"].to(self.device)
        with torch.inference_mode():
            emb = torch.nn.functional.normalize(_embeds(self._model.get_text_features(**kwargs)).float(), dim=-1)
        sizes = [len(prompts[c]) for c in self.labels]
        per_class = torch.stack([chunk.mean(0) for chunk in torch.split(emb, sizes)])
        return torch.nn.functional.normalize(per_class, dim=-1)

    def load(self, sample: Sample) -> np.ndarray:
        """uint8 ``[T, h, w, 3]``: the sample's images resized and cropped for the model (at
        frame level with their times, :class:`~mer.core.timebase.FrameRows`, where known)."""
        images, times = self._images_and_times(sample, self.config.num_frames, exact=False)
        images = self.preprocess().resize_and_crop(images)
        return with_times(images, times, dtype=np.uint8) if self.level == "frame" else images

    def embed_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``[N, h, w, 3]`` -> float32 L2-normalised ``[N, D]``, ``images_per_forward`` at a time."""
        out = []
        chunk = max(1, int(self.config.images_per_forward))
        for start in range(0, len(images), chunk):
            pixels = torch.from_numpy(np.ascontiguousarray(images[start:start + chunk])).to(self.device)
            pixels = self.preprocess().normalise(pixels.permute(0, 3, 1, 2))
            with torch.inference_mode(), _autocast(self.device, self.config.precision):
                out.append(_embeds(self._model.get_image_features(pixel_values=pixels)).float())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    def frame_logits(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` normalised image embeddings -> ``[N, C]`` logits (SigLIP's bias included)."""
        logits = self._model.logit_scale.float().exp() * image_embeds @ self._class_embeds.T
        if self.uses_sigmoid:
            logits = logits + self._model.logit_bias.float()
        return logits

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.uses_sigmoid else torch.softmax(logits, dim=-1)

    def forward(self, samples: Sequence[Sample], inputs: Sequence[np.ndarray]
                ) -> list[np.ndarray | ExtractionFailure]:
        """Per sample float32 ``[C(+D)]`` (pooled over its frames) or ``[T, C(+D)]`` (``level=frame``)."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):          # frames differ in size only with input=frame
            by_shape.setdefault(x.shape[1:], []).append(i)
        per_sample: list[torch.Tensor | None] = [None] * len(inputs)
        for idx in by_shape.values():
            emb = self.embed_images(np.concatenate([np.asarray(inputs[i]) for i in idx]))
            for i, part in zip(idx, torch.split(emb, [len(inputs[i]) for i in idx])):
                per_sample[i] = part
        out: list[np.ndarray | ExtractionFailure] = []
        with torch.inference_mode():
            for x, emb in zip(inputs, per_sample):
                out.append(self._result(emb, times_of(x)))
        return out

    def _result(self, emb: torch.Tensor, times: np.ndarray | None) -> np.ndarray:
        logits = self.frame_logits(emb)                                  # [T, C]
        if self.level == "frame":
            rows = self._activate(logits)
            if self.config.append_embedding:
                rows = torch.cat([rows, emb], dim=-1)
            return with_times(rows.cpu().numpy(), times)
        if self.config.pool == "mean_logit":
            pooled = self._activate(logits.mean(0))
        elif self.config.pool == "max":
            pooled = self._activate(logits).max(0).values
        else:
            pooled = self._activate(logits).mean(0)
        if self.config.append_embedding:
            pooled = torch.cat([pooled, emb.mean(0)])
        return pooled.cpu().numpy().astype(np.float32)

