"""FusionEstimator: a fusion model behind the scikit-learn contract.

``__init__`` stores hyperparameters only; ``fit`` learns and returns ``self``; learned state ends in
``_``; ``sklearn.base.clone`` rebuilds an unfitted copy, so every fold, seed and tuning trial
starts from a clone.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from fusion.base import build_fusion, load_fusion_models

from .data import Split
from .loop import predict, to_tensors, train_loop


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore. Small fusion MLPs gain nothing from more
    threads, and on a busy 2-core machine spinning threads made an epoch 10x slower."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class FusionEstimator(ClassifierMixin, BaseEstimator):
    def __init__(self, fusion: str = "attention", fusion_params: Mapping[str, Any] | None = None, *,
                 num_classes: int = 6, has_valence: bool = True, epochs: int = 100, lr: float = 1e-3,
                 weight_decay: float = 1e-5, batch_size: int = 32, grad_clip: float | None = None,
                 select_metric: str = "wf1", standardize: bool = True, seed: int = 0,
                 device: str = "cpu", num_threads: int | None = 1) -> None:
        self.fusion = fusion
        self.fusion_params = fusion_params
        self.num_classes = num_classes
        self.has_valence = has_valence
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.grad_clip = grad_clip
        self.select_metric = select_metric
        self.standardize = standardize
        self.seed = seed
        self.device = device
        self.num_threads = num_threads

    # --- fitting ----------------------------------------------------------------------------
    def _level_split(self, split: Split) -> Split:
        """The split at the level the fusion model reads: frame-level features mean-pooled over
        their real steps for an utterance-level model; utterance-level features as one-step
        sequences for a frame-level one."""
        level = getattr(load_fusion_models().get(self.fusion), "input_level", "utterance")
        if level == "frame":
            X = split.X.as_sequences()
        elif split.X.has_sequences:
            X = split.X.pooled()
        else:
            return split
        return Split(X, split.y, split.v, split.weight)

    def _scalers(self, train: Split) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for m, f in train.X.modalities.items():
            if f.is_sequence:
                from mer.data.sequences import step_mask

                rows = f.X[step_mask(f.lengths, f.X.shape[1])]      # every real step of every row
            else:
                rows = f.X[f.present]
            if len(rows) == 0:
                mu, sd = np.zeros(f.dim, np.float32), np.ones(f.dim, np.float32)
            else:
                mu = rows.mean(0).astype(np.float32)
                sd = rows.std(0).astype(np.float32)
                sd[sd < 1e-6] = 1.0
            out[m] = (mu, sd)
        return out

    def fit(self, train: Split, eval_set: Split | None = None, strategy=None, on_epoch=None) -> "FusionEstimator":
        from mer.evaluation.scoring import score_for_selection
        from mer.tracks.base import SupervisedStrategy

        strategy = strategy or SupervisedStrategy()
        device = resolve_device(self.device)
        torch.manual_seed(self.seed)
        train = self._level_split(train)
        eval_set = self._level_split(eval_set) if eval_set is not None else None
        self.input_dims_ = train.X.dims
        self.scalers_ = self._scalers(train) if self.standardize else None
        self.model_ = build_fusion(self.fusion, self.input_dims_, self.num_classes, self.has_valence,
                                   **dict(self.fusion_params or {}))

        def score_fn(probs, valence, split):
            return score_for_selection(self.select_metric, split.y, probs, split.v, valence)

        with torch_threads(self.num_threads if device == "cpu" else None):
            result = train_loop(self.model_, strategy.loss, train, eval_set, score_fn=score_fn,
                                epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
                                batch_size=self.batch_size, grad_clip=self.grad_clip, seed=self.seed,
                                device=device, scalers=self.scalers_, on_epoch=on_epoch,
                                augment=getattr(strategy, "augment", None))
        self.best_epoch_ = result.best_epoch
        self.best_score_ = result.best_score
        self.history_ = result.history
        self.model_.cpu()
        return self

    # --- prediction -------------------------------------------------------------------------
    def predict_outputs(self, split: Split) -> dict[str, np.ndarray]:
        inputs, present, _ = to_tensors(self._level_split(split), "cpu", self.scalers_)
        with torch_threads(self.num_threads):
            return predict(self.model_, inputs, present)

    def predict_proba(self, split: Split) -> np.ndarray:
        return self.predict_outputs(split)["probs"]

    def predict(self, split: Split) -> np.ndarray:
        return self.predict_proba(split).argmax(1)
