"""Fitting convex fusion models (``fusion=linear``): logistic and ridge heads on a fixed design.

The discrete head is multinomial logistic regression with an L2 penalty, fitted with L-BFGS in
float32 on the full training rows (float64 took 8x longer for the same choices); its objective is scikit-learn's (``C * sum_i w_i CE_i +
||W||^2 / 2``, bias unpenalised), so ``C`` means what it means there. The valence and arousal heads
are ridge regressions solved in closed form through one SVD of the centred design. Each head's
strength is chosen by inner cross-validation on the training rows only: stratified folds
(log-loss) for ``C``, the exact leave-one-out error (the hat-matrix shortcut, as ``RidgeCV``
computes it) for ``alpha``. Nothing here ever sees the held-out fold of the outer protocol.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from mer.core.errors import UserError

from .data import Split


@dataclass
class ConvexFit:
    """What was chosen: ``C`` of the discrete head, ``alpha`` per regression head, and each
    candidate's inner-CV loss (for the record)."""

    C: float | None
    alphas: dict[str, float]
    inner_logloss: dict[float, float]
    inner_mse: dict[str, dict[float, float]]


def _logistic(Z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, num_classes: int, C: float,
              init: tuple[torch.Tensor, torch.Tensor] | None = None, max_iter: int = 500
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W [C, P], b [C])`` minimising ``C * sum_i w_i CE_i + ||W||^2 / 2`` with L-BFGS."""
    P = Z.shape[1]
    W = (init[0].clone() if init else torch.zeros(num_classes, P, dtype=Z.dtype)).requires_grad_(True)
    b = (init[1].clone() if init else torch.zeros(num_classes, dtype=Z.dtype)).requires_grad_(True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")
    scale = 1.0 / float(w.sum())          # the same minimiser, a better-conditioned objective

    def closure():
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(Z @ W.T + b, y, reduction="none")
        loss = scale * (C * (w * ce).sum() + 0.5 * (W * W).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def _logloss(Z: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cross_entropy(Z @ W.T + b, y))


def choose_C(Z: np.ndarray, y: np.ndarray, w: np.ndarray, num_classes: int, Cs: Sequence[float],
             inner_folds: int, seed: int) -> tuple[float, dict[float, float]]:
    """The ``C`` of ``Cs`` with the lowest mean inner-fold log-loss (ties: the smaller ``C``)."""
    counts = np.bincount(y, minlength=num_classes)
    k = int(min(inner_folds, counts[counts > 0].min()))
    if k < 2 or len(Cs) == 1:
        return float(sorted(Cs)[len(Cs) // 2]), {}
    Zt, yt, wt = torch.as_tensor(Z, dtype=torch.float32), torch.as_tensor(y), torch.as_tensor(w, dtype=torch.float32)
    losses = {float(c): 0.0 for c in Cs}
    for tr, va in StratifiedKFold(k, shuffle=True, random_state=seed).split(Z, y):
        tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
        init = None
        for c in sorted(Cs):              # warm start along the path: each C starts from the last
            init = _logistic(Zt[tr_t], yt[tr_t], wt[tr_t], num_classes, c, init)
            losses[float(c)] += _logloss(Zt[va_t], yt[va_t], *init) / k
    best = min(sorted(losses), key=lambda c: losses[c])
    return best, losses


def ridge_loo(Z: np.ndarray, t: np.ndarray, w: np.ndarray, alphas: Sequence[float]
              ) -> tuple[float, dict[float, float], np.ndarray, float]:
    """Weighted ridge with the intercept unpenalised: the ``alpha`` with the lowest exact
    leave-one-out MSE, that alpha's ``(coef [P], intercept)``, and every alpha's LOO MSE."""
    sw = np.sqrt(w / w.mean())
    zm = np.average(Z, axis=0, weights=w)
    tm = float(np.average(t, weights=w))
    A = (Z - zm) * sw[:, None]
    r = (t - tm) * sw
    # torch's LAPACK: numpy's SVD was 20x slower on the 2-core machines mer is developed on
    U, s, Vt = (x.numpy() for x in torch.linalg.svd(torch.as_tensor(A), full_matrices=False))
    Ur = U.T @ r
    scores = {}
    for a in alphas:
        f = s ** 2 / (s ** 2 + a)
        fitted = U @ (f * Ur)
        # hat-matrix diagonal of the centred problem plus the intercept's 1/n share
        h = (U ** 2) @ f + (sw ** 2) / (sw ** 2).sum()
        loo = (r - fitted) / np.clip(1.0 - h, 1e-12, None)
        scores[float(a)] = float(np.mean((loo / np.maximum(sw, 1e-12)) ** 2 * (w / w.mean())))
        del fitted
    best = min(sorted(scores), key=lambda a: scores[a])
    coef = Vt.T @ ((s / (s ** 2 + best)) * Ur)
    intercept = tm - float(zm @ coef)
    return best, scores, coef, intercept


def fit_convex(model, inputs: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor],
               batch: Mapping[str, torch.Tensor], *, seed: int) -> ConvexFit:
    """Fit ``model`` (a :class:`fusion.linear.LinearFusion`) on the rows of one training fold:
    ``inputs``/``present``/``batch`` as :func:`mer.training.loop.to_tensors` gives them."""
    with torch.no_grad():
        Z = model.design(inputs, present).double().cpu().numpy()
    y = batch["y"].cpu().numpy()
    w = batch["weight"].double().cpu().numpy() if "weight" in batch else np.ones(len(y))
    C, path = None, {}
    labelled = (y >= 0) & (w > 0)
    if labelled.any():
        yl, Zl, wl = y[labelled], Z[labelled], w[labelled]
        C, path = choose_C(Zl, yl, wl, model.num_classes, model.Cs, model.inner_folds, seed)
        W, b = _logistic(torch.as_tensor(Zl, dtype=torch.float32), torch.as_tensor(yl),
                         torch.as_tensor(wl, dtype=torch.float32), model.num_classes, C)
        with torch.no_grad():
            model.discrete.weight.copy_(W.to(model.discrete.weight.dtype))
            model.discrete.bias.copy_(b.to(model.discrete.bias.dtype))
    alphas, mses = {}, {}
    for head, key in (("valence", "v"), ("arousal", "a")):
        layer = getattr(model, head)
        if layer is None or key not in batch:
            continue
        t = batch[key].double().cpu().numpy()
        known = np.isfinite(t) & (w > 0)
        if known.sum() < 3:
            continue
        a, mses[head], coef, icpt = ridge_loo(Z[known], t[known], w[known], model.alphas)
        alphas[head] = a
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(coef, dtype=layer.weight.dtype)[None])
            layer.bias.fill_(icpt)
    if C is None and not alphas:
        raise UserError("fusion=linear: the training rows have no known class and no known valence to fit")
    return ConvexFit(C, alphas, path, mses)


def check_supported(split: Split, strategy) -> None:
    """The convex fit reads classes, valence, arousal and row weights, and nothing else."""
    if "frames" in split.targets:
        raise UserError("fusion=linear gives no per-frame outputs; this dataset has per-frame labels: "
                        "use fusion=lstm, gru or tcn")
    if getattr(strategy, "augment", None) is not None:
        logging.getLogger("mer").info("fusion=linear: the strategy's batch augmentation (modality dropout, "
                                      "feature noise) does not apply to a convex fit; corrupted copies still do")
