"""Partial-label learners on cached feature vectors, with the scikit-learn contract.

``fit(X, S)`` takes features ``X [N, D]`` and a 0/1 candidate matrix ``S [N, C]`` (row ``i`` marks
the labels sample ``i`` may have; the true label may be missing when the sets are noisy);
``predict_proba(X) -> [N, C]``, ``predict(X) -> [N]`` class indices. ``__init__`` stores
hyper-parameters only, so ``sklearn.base.clone`` rebuilds any learner.

Learners (registered in ``LEARNERS``):

``cc``      classifier-consistent loss ``-log sum_{j in S} p_j`` (Feng et al. 2020).
``proden``  RC / PRODEN: cross-entropy against per-sample label confidences, initialised uniform
            over ``S`` and re-estimated after every mini-batch as the model's probabilities
            restricted to ``S`` and renormalised.
``pico``    PiCO adapted to cached features: an MLP encoder with a classifier head and a projection
            head; class prototypes (EMA of L2-normalised projections, momentum 0.99); label
            confidences updated by EMA towards the one-hot of ``argmax(prototype posterior * S)``
            (momentum 0.95 -> 0.8 over training); a supervised contrastive loss (weight 0.5,
            temperature 0.07) between two stochastic views of each batch, positives sharing a
            pseudo-label (in-batch instead of a MoCo queue).

Views: cached features cannot be cropped or colour-jittered, so a "view" is the standardised
vector with feature dropout (``view_dropout``) and Gaussian noise (``view_noise``).

Besides ``fit``, every learner exposes the stepwise interface a refiner (``mer.pll.arnet``) drives:
``begin(X, S)``, ``train_epoch()``, ``view_proba(X, seed, kind)``, ``add_candidates(rows,
labels, probs)``, ``candidates_`` and ``confidence_``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from mer.core.registry import Registry
from mer.training.loop import epoch_steps
from mer.training.standardize import mean_and_scale

LEARNERS: Registry[Callable[..., "PLLLearner"]] = Registry("partial-label learner")


def check_candidates(S, n_samples: int | None = None) -> np.ndarray:
    """``S`` as a float32 0/1 matrix; every row needs at least one candidate."""
    S = np.asarray(S)
    if S.ndim != 2:
        raise ValueError(f"candidate sets must be an [N, C] 0/1 matrix, got shape {S.shape}")
    if n_samples is not None and S.shape[0] != n_samples:
        raise ValueError(f"{S.shape[0]} candidate rows for {n_samples} samples")
    if not np.isin(S, (0, 1)).all():
        raise ValueError("candidate matrix entries must be 0 or 1")
    empty = np.flatnonzero(S.sum(1) == 0)
    if len(empty):
        raise ValueError(f"{len(empty)} samples have an empty candidate set (rows "
                         f"{empty[:5].tolist()}{'...' if len(empty) > 5 else ''})")
    return S.astype(np.float32)


class _MLP(nn.Module):
    def __init__(self, d_in: int, hidden: int, n_classes: int, dropout: float, proj_dim: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, n_classes)
        self.proj = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, proj_dim)) \
            if proj_dim else None

    def forward(self, x):  # [B, D] -> logits [B, C], normalised projection [B, P] or None
        h = self.encoder(x)
        z = F.normalize(self.proj(h), dim=1) if self.proj is not None else None
        return self.head(h), z


class PLLLearner(BaseEstimator, ClassifierMixin):
    """Shared MLP training for the partial-label learners (see the module docstring).

    Args:
        hidden: MLP width. epochs: passes over the data. lr, weight_decay: AdamW settings.
        batch_size: mini-batch size. dropout: hidden-layer dropout.
        view_dropout, view_noise: feature dropout rate and Gaussian noise std of a stochastic view
            (on standardised features); training batches are views too.
        seed: torch/numpy seed of initialisation, batching and views.
    """

    kind = "base"
    _proj_dim = 0

    def __init__(self, hidden: int = 256, epochs: int = 100, lr: float = 1e-3,
                 weight_decay: float = 1e-3, batch_size: int = 512, dropout: float = 0.3,
                 view_dropout: float = 0.2, view_noise: float = 0.1, seed: int = 0) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.dropout = dropout
        self.view_dropout = view_dropout
        self.view_noise = view_noise
        self.seed = seed

    # --- sklearn contract ------------------------------------------------------------------
    def fit(self, X, S):
        self.begin(X, S)
        for _ in range(self.epochs):
            self.train_epoch()
        return self.end()

    def predict_proba(self, X) -> np.ndarray:
        self._model.eval()
        with torch.no_grad():
            logits, _ = self._model(self._prep(X))
        return torch.softmax(logits, 1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(1)

    # --- stepwise interface ----------------------------------------------------------------
    def begin(self, X, S) -> "PLLLearner":
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must be [N, D] features, got shape {X.shape}")
        S = check_candidates(S, len(X))
        torch.manual_seed(self.seed)
        self._rng = np.random.default_rng(self.seed)
        self._gen = torch.Generator().manual_seed(self.seed + 1)
        self.mean_, self.scale_ = mean_and_scale(X, add_to_std=1e-6)
        self.n_classes_ = S.shape[1]
        self.classes_ = np.arange(self.n_classes_)
        self._X = self._prep(X)
        self._S = torch.from_numpy(S)
        self._conf = self._S / self._S.sum(1, keepdim=True)
        self._model = _MLP(X.shape[1], self.hidden, self.n_classes_, self.dropout, self._proj_dim)
        self._opt = torch.optim.AdamW(self._model.parameters(), lr=self.lr,
                                      weight_decay=self.weight_decay)
        self.epoch_ = 0
        self._setup_extra()
        return self

    def end(self) -> "PLLLearner":
        self.candidates_ = self._S.numpy().copy()
        self.confidence_ = self._conf.numpy().copy()
        return self

    def train_epoch(self) -> float:
        """One pass over the training data; returns the mean loss."""
        self._model.train()
        order = torch.randperm(len(self._X), generator=self._gen)
        steps = epoch_steps(self._opt, order, self.batch_size, self._batch_loss)   # mer's one batch loop
        self.epoch_ += 1
        return float(np.mean([loss for loss, _ in steps]))

    def view(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        gen = generator or self._gen
        if self.view_dropout > 0:
            keep = (torch.rand(x.shape, generator=gen) >= self.view_dropout).float()
            x = x * keep / (1 - self.view_dropout)
        if self.view_noise > 0:
            x = x + self.view_noise * torch.randn(x.shape, generator=gen)
        return x

    def view_proba(self, X=None, seed: int = 0, kind: str = "classify") -> np.ndarray:
        """Probabilities ``[N, C]`` on one stochastic view (``X`` None: the training features).

        ``kind``: ``classify`` (classifier softmax) or ``cluster`` (prototype posterior, PiCO)."""
        x = self._X if X is None else self._prep(X)
        gen = torch.Generator().manual_seed(10_000 + seed)
        self._model.eval()
        with torch.no_grad():
            logits, z = self._model(self.view(x, gen))
            if kind == "cluster":
                return self._cluster_proba(z).numpy()
            if kind != "classify":
                raise ValueError(f"view kind must be 'classify' or 'cluster', got {kind!r}")
            return torch.softmax(logits, 1).numpy()

    def add_candidates(self, rows, labels, probs) -> None:
        """Add ``labels[k]`` to the candidate set of training row ``rows[k]``, give it confidence
        ``probs[k]`` and renormalise that row's confidences over its new set."""
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        if len(rows) == 0:
            return
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self._S[rows, labels] = 1.0
        conf = self._conf[rows] * self._S[rows]
        conf[torch.arange(len(rows)), labels] = torch.as_tensor(np.asarray(probs), dtype=torch.float32)
        self._conf[rows] = conf / conf.sum(1, keepdim=True).clamp_min(1e-12)

    def add_rows(self, X, S) -> None:
        """Append training rows (features ``X``, candidate sets ``S``, confidences uniform over
        ``S``) mid-training; the standardisation fitted in ``begin`` is kept."""
        S = torch.from_numpy(check_candidates(S, len(X)))
        self._X = torch.cat([self._X, self._prep(X)])
        self._S = torch.cat([self._S, S])
        self._conf = torch.cat([self._conf, S / S.sum(1, keepdim=True)])

    @property
    def current_candidates(self) -> np.ndarray:
        return self._S.numpy()

    # --- per-learner pieces ----------------------------------------------------------------
    def _prep(self, X) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float32)
        return torch.from_numpy((X - self.mean_) / self.scale_)

    def _setup_extra(self) -> None:
        pass

    def _cluster_proba(self, z) -> torch.Tensor:
        raise ValueError(f"{type(self).__name__} has no prototypes; use kind='classify'")

    def _batch_loss(self, idx) -> torch.Tensor:
        raise NotImplementedError


@LEARNERS.register("cc")
class CCLearner(PLLLearner):
    """Classifier-consistent partial-label loss: ``-log sum_{j in S} p_j``."""

    kind = "cc"

    def _batch_loss(self, idx):
        logits, _ = self._model(self.view(self._X[idx]))
        S = self._S[idx]
        masked = logits.masked_fill(S == 0, float("-inf"))
        return (torch.logsumexp(logits, 1) - torch.logsumexp(masked, 1)).mean()


@LEARNERS.register("proden")
class PRODENLearner(PLLLearner):
    """RC / PRODEN: CE against confidences re-estimated from the model inside ``S``."""

    kind = "proden"

    def _batch_loss(self, idx):
        logits, _ = self._model(self.view(self._X[idx]))
        loss = -(self._conf[idx] * F.log_softmax(logits, 1)).sum(1).mean()
        with torch.no_grad():
            p = torch.softmax(logits, 1) * self._S[idx]
            self._conf[idx] = p / p.sum(1, keepdim=True).clamp_min(1e-12)
        return loss


@LEARNERS.register("pico")
class PiCOLearner(PLLLearner):
    """PiCO-style learner on cached features (see the module docstring).

    Extra args: proj_dim (projection width), proto_momentum (prototype EMA), conf_momentum
    (start, end) of the confidence EMA, proto_start (epoch from which confidences follow the
    prototypes), contrastive_weight, temperature, loss (``ce`` | ``sce``, with sce_alpha and
    sce_beta).
    """

    kind = "pico"

    def __init__(self, hidden: int = 256, epochs: int = 100, lr: float = 1e-3,
                 weight_decay: float = 1e-3, batch_size: int = 512, dropout: float = 0.3,
                 view_dropout: float = 0.2, view_noise: float = 0.1, seed: int = 0,
                 proj_dim: int = 64, proto_momentum: float = 0.99,
                 conf_momentum: tuple[float, float] = (0.95, 0.8), proto_start: int = 20,
                 contrastive_weight: float = 0.5, temperature: float = 0.07,
                 loss: str = "ce", sce_alpha: float = 6.0, sce_beta: float = 1.0) -> None:
        super().__init__(hidden, epochs, lr, weight_decay, batch_size, dropout, view_dropout,
                         view_noise, seed)
        self.proj_dim = proj_dim
        self.proto_momentum = proto_momentum
        self.conf_momentum = conf_momentum
        self.proto_start = proto_start
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        self.loss = loss
        self.sce_alpha = sce_alpha
        self.sce_beta = sce_beta

    @property
    def _proj_dim(self) -> int:  # type: ignore[override]
        return self.proj_dim

    def _setup_extra(self) -> None:
        self._protos = torch.zeros(self.n_classes_, self.proj_dim)

    def _cluster_proba(self, z):
        return torch.softmax(z @ self._protos.T, 1)

    def _momentum(self) -> float:
        start, end = self.conf_momentum
        total = max(1, self.epochs - 1)
        return start + (end - start) * min(1.0, self.epoch_ / total)

    def _batch_loss(self, idx):
        x = self._X[idx]
        logits, z1 = self._model(self.view(x))
        _, z2 = self._model(self.view(x))
        S = self._S[idx]
        loss_cls = _confidence_loss(logits, self._conf[idx], self.loss, self.sce_alpha, self.sce_beta)
        with torch.no_grad():
            prot = self._cluster_proba(z1) * S
            pseudo = prot.argmax(1)
            if self.epoch_ >= self.proto_start:
                m = self._momentum()
                onehot = F.one_hot(pseudo, self.n_classes_).float()
                self._conf[idx] = m * self._conf[idx] + (1 - m) * onehot
            # prototypes follow the classifier's pseudo-labels inside S (as in PiCO)
            cls_pseudo = (torch.softmax(logits, 1) * S).argmax(1)
            for c in cls_pseudo.unique():
                mean_z = z1[cls_pseudo == c].mean(0)
                self._protos[c] = F.normalize(self.proto_momentum * self._protos[c]
                                              + (1 - self.proto_momentum) * mean_z, dim=0)
        # contrastive positives share the classifier's pseudo-label inside S (as in PiCO)
        loss_con = _supcon(torch.cat([z1, z2]), torch.cat([cls_pseudo, cls_pseudo]), self.temperature)
        return loss_cls + self.contrastive_weight * loss_con


def _confidence_loss(logits, conf, kind: str, alpha: float, beta: float) -> torch.Tensor:
    """Loss of ``logits`` against label confidences: ``ce`` (as RC/PRODEN) or ``sce`` (symmetric
    CE, ``alpha * CE(p, conf) + beta * CE(conf, p)`` with conf clamped at 1e-4 and p at 1e-7,
    the loss of the public ARNet runs on CIFAR-10/KMNIST)."""
    ce = -(conf * F.log_softmax(logits, 1)).sum(1)
    if kind == "ce":
        return ce.mean()
    if kind != "sce":
        raise ValueError(f"loss must be 'ce' or 'sce', got {kind!r}")
    p = torch.softmax(logits, 1).clamp(1e-7, 1.0)
    rce = -(p * torch.log(conf.clamp(1e-4, 1.0))).sum(1)
    return (alpha * ce + beta * rce).mean()


def _supcon(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss over ``z [2B, P]`` (normalised) with positives = same label."""
    sim = z @ z.T / temperature
    n = len(z)
    self_mask = torch.eye(n, dtype=torch.bool)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, 1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(1).clamp_min(1)
    return -(log_prob.masked_fill(~pos, 0).sum(1) / n_pos).mean()


def build_learner(name: str, **params) -> PLLLearner:
    return LEARNERS.get(name)(**params)
