"""Differentiable objectives a strategy can put beside cross-entropy.

``ccc_loss`` is ``1 - CCC`` of a dimensional target (valence, arousal), the loss ABAW VA systems
train with: it rewards matching the targets' spread and level, which MSE lets a model trade away
by predicting close to the mean.
"""
from __future__ import annotations

import torch


def ccc_torch(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The concordance correlation coefficient of two ``[N]`` tensors (population moments),
    differentiable; :func:`mer.evaluation.metrics.ccc` is the numpy reference."""
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    pred, target = pred.reshape(-1).to(dtype), target.reshape(-1).to(dtype)
    mp, mt = pred.mean(), target.mean()
    cov = ((pred - mp) * (target - mt)).mean()
    denom = pred.var(unbiased=False) + target.var(unbiased=False) + (mp - mt) ** 2
    return 2 * cov / (denom + eps)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - CCC`` over the rows whose target is known (finite); 0 when fewer than two are."""
    known = torch.isfinite(target)
    if int(known.sum()) < 2:
        return pred.sum() * 0.0
    return 1.0 - ccc_torch(pred[known], target[known])
