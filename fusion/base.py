"""The fusion contract.

A fusion model is a plain ``nn.Module`` built from known per-modality input dims and a label spec:
``forward(inputs, present) -> dict`` with ``inputs[m]: [B, D_m]`` float, ``present[m]: [B]`` bool,
returning at least ``logits: [B, C]`` and, when the label spec has valence, ``valence: [B]``.

Frame-level models (class attribute ``input_level = "frame"``) get sequences instead:
``inputs[m]: [B, T_m, D_m]`` zero-padded and ``present[m]: [B, T_m]`` bool, True on real steps (a
sample without the modality has none); what sits in a padded step must never change an output.
The estimator hands each model the level it declares: frame-level features are mean-pooled over
their real steps for an utterance-level model, utterance-level features are one-step sequences
for a frame-level model.
A modality whose row is absent (no face, empty transcript, failed decode) is *masked*: the model
must never read its zero-filled row as if it were a real feature.
The estimator owns optimisation, the strategy owns the loss, the loop owns batches.

Targets beyond the discrete label and valence are heads the estimator adds around any model
(:class:`TargetHeads`): ``arousal [B]`` from the model's ``embedding [B, H]``, and per-frame class
logits ``frame_logits [B, T, C]`` from ``frame_embedding [B, T, H]``, which frame-level models that
keep their time axis (``lstm``, ``gru``, ``tcn``) return on the steps of the stream named by their
``frame_reference`` attribute (set by the estimator when a dataset has per-frame labels).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from mer.core.registry import Registry

FUSION: Registry[type["FusionModel"]] = Registry("fusion model", package="fusion")


class FusionModel(nn.Module):
    input_level = "utterance"
    """``utterance``: ``[B, D_m]`` inputs; ``frame``: ``[B, T_m, D_m]`` with step masks."""
    frame_outputs = False
    """Whether the model can return ``frame_embedding`` (per-step fused states) for per-frame targets."""
    frame_reference: str | None = None
    """The stream whose steps ``frame_embedding`` follows; ``None``: no per-frame outputs."""

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, has_valence: bool) -> None:
        super().__init__()
        if not input_dims:
            raise ValueError("a fusion model needs at least one modality")
        self.modalities = sorted(input_dims)
        self.input_dims = dict(input_dims)
        self.num_classes = num_classes
        self.has_valence = has_valence

    def forward(self, inputs: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def mlp(in_dim: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    """``layers`` x (Linear -> ReLU -> Dropout), ending at ``hidden`` features."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout)]
        d = hidden
    return nn.Sequential(*mods)


class Heads(nn.Module):
    """Discrete head (``logits [B, C]``) and, when the dataset has valence, a valence head (``[B]``)."""

    def __init__(self, hidden: int, num_classes: int, has_valence: bool) -> None:
        super().__init__()
        self.discrete = nn.Linear(hidden, num_classes)
        self.valence = nn.Linear(hidden, 1) if has_valence else None

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"logits": self.discrete(h), "embedding": h}
        if self.valence is not None:
            out["valence"] = self.valence(h).squeeze(-1)
        return out


class TargetHeads(nn.Module):
    """A fusion model plus heads for more targets: ``arousal`` (regression on ``embedding``) and
    ``frame_logits`` (per-frame classes on ``frame_embedding``, with ``frame_mask``)."""

    def __init__(self, model: FusionModel, hidden: int, *, arousal: bool = False,
                 frame_classes: int | None = None, frame_hidden: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.arousal = nn.Linear(hidden, 1) if arousal else None
        self.frames = nn.Linear(frame_hidden or hidden, frame_classes) if frame_classes else None

    def forward(self, inputs, present):
        out = self.model(inputs, present)
        if self.arousal is not None:
            out["arousal"] = self.arousal(out["embedding"]).squeeze(-1)
        if self.frames is not None:
            if "frame_embedding" not in out:
                raise ValueError(f"{type(self.model).__name__} gives no per-frame outputs; per-frame labels need "
                                 f"a model that keeps its time axis (fusion=lstm, gru or tcn)")
            out["frame_logits"] = self.frames(out["frame_embedding"])
        return out


def build_fusion(name: str, input_dims: Mapping[str, int], num_classes: int, has_valence: bool,
                 **params) -> FusionModel:
    return FUSION.get(name)(input_dims, num_classes, has_valence, **params)
