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

from fusion.base import FUSION, TargetHeads, build_fusion
from mer.data.frames import step_mask
from mer.data.sequences import frame_reference, window_bundle, window_frame_targets
from mer.evaluation.scoring import score_for_selection, score_outputs

from .convex import check_supported, fit_convex
from .data import Split
from .folds import GROUP_PROTOCOLS, make_folds, split_strata
from .loop import predict, to_tensors, train_loop
from .objective import SupervisedObjective
from .standardize import mean_and_scale


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


BLEND_GRID = (0.25, 0.5, 0.75)
"""The linear model's weights ``blend_linear='auto'`` chooses from (never all or nothing)."""


def blend_outputs(own: dict[str, np.ndarray], linear: dict[str, np.ndarray], weight: float) -> dict[str, np.ndarray]:
    """``own`` with its class probabilities, valence and arousal averaged with ``linear``'s:
    ``(1 - weight) * own + weight * linear``; every other output is ``own``'s."""
    out = dict(own)
    for key in ("probs", "valence", "arousal"):
        if key in own and key in linear:
            out[key] = ((1.0 - weight) * own[key] + weight * linear[key]).astype(own[key].dtype)
    return out


SELECTIONS = ("fold", "inner")
"""How the kept epoch is chosen: on the ``eval_set`` given to ``fit`` (the held-out fold, as the
official protocol does) or on an inner split of the training rows (honest out-of-fold scores)."""


class FusionEstimator(ClassifierMixin, BaseEstimator):
    def __init__(self, fusion: str = "attention", fusion_params: Mapping[str, Any] | None = None, *,
                 num_classes: int = 6, has_valence: bool = True, epochs: int = 100, lr: float = 1e-3,
                 weight_decay: float = 1e-5, batch_size: int = 32, grad_clip: float | None = None,
                 select_metric: str = "wf1", standardize: bool = True, seed: int = 0,
                 device: str = "cpu", num_threads: int | None = 1, window_size: int | None = None,
                 window_hop: int | None = None, frame_reference: str | None = None,
                 selection: str = "fold", inner_fraction: float = 0.15, patience: int | None = None,
                 blend_linear: float = 0.0) -> None:
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
        self.window_size = window_size
        self.window_hop = window_hop
        self.frame_reference = frame_reference
        self.selection = selection
        self.inner_fraction = inner_fraction
        self.patience = patience
        self.blend_linear = blend_linear

    # --- fitting ----------------------------------------------------------------------------
    def _level_split(self, split: Split) -> Split:
        """The split at the level the fusion model reads: frame-level features mean-pooled over
        their real steps for an utterance-level model; utterance-level features as one-step
        sequences for a frame-level one."""
        if self._is_frame_model():
            X = split.X.as_sequences()
        elif split.X.has_sequences:
            X = split.X.pooled()
        else:
            return split
        return split.with_features(X)

    def _is_frame_model(self) -> bool:
        return getattr(FUSION.get(self.fusion), "input_level", "utterance") == "frame"

    def _windowed(self, split: Split):
        """``(windowed split, WindowPlan)`` for a frame-level model with ``window_size`` set (each
        window inherits its sample's utterance targets; per-frame targets are cut with it), else
        ``(split, None)``."""
        if not self.window_size or not self._is_frame_model() or not split.X.has_sequences:
            return split, None

        hop = int(self.window_hop or self.window_size)
        # per-frame labels live on the frame stream's steps; otherwise each sample's longest stream
        reference = self._frame_stream(split) if "frames" in split.targets else self.frame_reference
        X, plan = window_bundle(split.X, int(self.window_size), hop, reference)
        o = plan.owner
        targets = {k: (window_frame_targets(t, plan) if k == "frames" else t[o]) for k, t in split.targets.items()}
        return Split(X, split.y[o], split.v[o], None if split.weight is None else split.weight[o], targets,
                     valence_range=split.valence_range), plan

    def _frame_stream(self, split: Split) -> str:
        """The stream per-frame labels and outputs follow: ``frame_reference``, else the default
        rule of :func:`mer.data.sequences.frame_reference`."""
        return self.frame_reference or frame_reference(split.X)

    @staticmethod
    def _merge(out: dict[str, np.ndarray], plan) -> dict[str, np.ndarray]:
        """Window predictions back to one per sample: the mean over its windows, per-frame
        outputs averaged where windows overlap."""
        if plan is None:
            return out
        merged = {k: plan.mean_rows(v) for k, v in out.items() if k != "frame_probs"}
        if "frame_probs" in out:
            merged["frame_probs"] = plan.merge_steps(out["frame_probs"])
        return merged

    def _build_model(self, train: Split):
        model = build_fusion(self.fusion, self.input_dims_, self.num_classes, self.has_valence,
                             **dict(self.fusion_params or {}))
        arousal = "arousal" in train.targets
        frames = "frames" in train.targets
        if not (arousal or frames):
            return model

        if frames:
            if not getattr(model, "frame_outputs", False):
                raise SystemExit(f"fusion={self.fusion} gives no per-frame outputs; this dataset has per-frame "
                                 f"labels: use fusion=lstm, gru or tcn")
            model.frame_reference = self._frame_stream(train)
        inputs, present, _ = to_tensors(train.rows(np.arange(min(2, len(train)))), "cpu", self.scalers_)
        model.eval()
        with torch.no_grad():
            probe = model(inputs, present)
        model.train()
        return TargetHeads(model, probe["embedding"].shape[-1], arousal=arousal,
                           frame_classes=self.num_classes if frames else None,
                           frame_hidden=probe["frame_embedding"].shape[-1] if frames else None)

    def _scalers(self, train: Split) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for m, f in train.X.modalities.items():
            if f.is_sequence:
                rows = f.X[step_mask(f.lengths, f.X.shape[1])]      # every real step of every row
            else:
                rows = f.X[f.present]
            out[m] = mean_and_scale(rows, unit_std_below=1e-6, dtype=np.float32)
        return out

    def _is_convex(self) -> bool:
        return getattr(FUSION.get(self.fusion), "solver", "loop") == "convex"

    def _inner_rows(self, train: Split) -> tuple[np.ndarray, np.ndarray] | None:
        """``(fitting rows, inner validation rows)`` of a training fold for ``selection='inner'``:
        a seeded stratified (group-aware when the split has groups) share ``inner_fraction`` of the
        rows a person labelled. Corrupted copies (``<name>@<condition>``) and down-weighted rows
        (pseudo-labels) always stay on the fitting side. ``None`` when too few rows to split."""
        weight = train.weight if train.weight is not None else np.ones(len(train))
        eligible = np.array([("@" not in n) for n in train.names]) & (weight >= 1.0)
        strata = split_strata(train.y, train.v, 2).copy()
        strata[~eligible] = -1
        k = max(2, int(round(1.0 / float(self.inner_fraction))))
        counts = np.bincount(strata[strata >= 0]) if (strata >= 0).any() else np.zeros(1, int)
        if not counts.any() or counts[counts > 0].min() < k:
            return None
        groups = train.groups if train.protocol in GROUP_PROTOCOLS else None
        protocol = "stratified_group" if groups is not None else "stratified"
        try:
            folds = make_folds(strata, groups, protocol, k, self.seed + 104729)
        except ValueError:                  # too few groups for an inner group split
            folds = make_folds(strata, None, "stratified", k, self.seed + 104729)
        inner = np.sort(folds[0][1])
        return np.setdiff1d(np.arange(len(train)), inner), inner

    def _selection_score(self, pred: Mapping[str, np.ndarray], split: Split) -> float:
        """``select_metric`` of predictions of ``split``'s rows (higher is better)."""
        return score_for_selection(self.select_metric, split.y, pred["probs"], split.v, pred.get("valence"),
                                   outputs=pred, targets=split.targets, valence_range=split.valence_range)

    def _fit_convex(self, train: Split, eval_set: Split | None, strategy) -> "FusionEstimator":
        train = self._level_split(train)
        check_supported(train, strategy)
        self.input_dims_ = train.X.dims
        self.scalers_ = self._scalers(train) if self.standardize else None
        self.model_ = build_fusion(self.fusion, self.input_dims_, self.num_classes, self.has_valence,
                                   arousal="arousal" in train.targets, **dict(self.fusion_params or {}))
        inputs, present, batch = to_tensors(train, "cpu", self.scalers_)
        with torch_threads(self.num_threads):
            chosen = fit_convex(self.model_, inputs, present, batch, seed=self.seed)
        record = {"epoch": 0, "C": chosen.C, **{f"alpha_{k}": a for k, a in chosen.alphas.items()}}
        if eval_set is not None:
            record["score"] = float(self._selection_score(self.predict_outputs(eval_set), self._level_split(eval_set)))
        self.chosen_ = chosen
        self.best_epoch_ = 0
        self.best_score_ = record.get("score", float("nan"))
        self.history_ = [record]
        return self

    def fit(self, train: Split, eval_set: Split | None = None, strategy=None, on_epoch=None) -> "FusionEstimator":
        """Fit on ``train``. The epoch kept is the best by ``select_metric`` on ``eval_set``
        (``selection='fold'``, the MER2023 protocol: with the held-out fold as ``eval_set`` its
        score is optimistic) or on an inner split of ``train`` (``selection='inner'``: ``eval_set``
        is then only monitored, each epoch's scores recorded in ``history_``, so the held-out fold
        stays unseen and its score is honest)."""
        strategy = strategy or SupervisedObjective()
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self._is_convex():
            return self._fit_convex(train, eval_set, strategy)
        device = resolve_device(self.device)
        torch.manual_seed(self.seed)
        whole_train = train
        train = self._level_split(train)
        eval_whole = self._level_split(eval_set) if eval_set is not None else None
        monitor_whole = inner = None
        if self.selection == "inner":
            inner = self._inner_rows(train)
            if inner is not None:
                monitor_whole = eval_whole
                eval_whole = train.rows(inner[1])
                train = train.rows(inner[0])
        train, _ = self._windowed(train)
        eval_set, eval_plan = self._windowed(eval_whole) if eval_whole is not None else (None, None)
        monitor, monitor_plan = self._windowed(monitor_whole) if monitor_whole is not None else (None, None)
        self.input_dims_ = train.X.dims
        self.scalers_ = self._scalers(train) if self.standardize else None
        self.model_ = self._build_model(train)

        def score_fn(pred, split):
            if eval_plan is not None:         # windows -> samples, scored against the whole samples
                pred, split = self._merge(pred, eval_plan), eval_whole
            return self._selection_score(pred, split)

        def monitor_fn(pred, split):
            if monitor_plan is not None:
                pred, split = self._merge(pred, monitor_plan), monitor_whole
            return self._selection_score(pred, split), score_outputs(split.y, pred, split.v, split.targets,
                                                               split.valence_range)

        with torch_threads(self.num_threads if device == "cpu" else None):
            result = train_loop(self.model_, strategy.loss, train, eval_set, score_fn=score_fn,
                                epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
                                batch_size=self.batch_size, grad_clip=self.grad_clip, seed=self.seed,
                                device=device, scalers=self.scalers_, on_epoch=on_epoch,
                                augment=getattr(strategy, "augment", None),
                                monitor=monitor, monitor_fn=monitor_fn if monitor is not None else None,
                                patience=self.patience)
        self.best_epoch_ = result.best_epoch
        self.best_score_ = result.best_score
        self.history_ = result.history
        self.model_.cpu()
        self.linear_, self.blend_weight_ = self._fit_blend_partner(whole_train, strategy, inner)
        return self

    def _fit_blend_partner(self, train: Split, strategy, inner) -> tuple["FusionEstimator | None", float]:
        """With ``blend_linear``: ``fusion=linear`` fitted on the same rows (all of them; it chooses
        its regularisation by inner CV) and the weight its outputs get when averaged with this
        model's. ``blend_linear='auto'`` picks the weight from :data:`BLEND_GRID` by the selection
        metric on the inner split (the linear model refitted without it for that choice; ties go
        to 0.5), so it is chosen on training rows only. ``(None, 0)`` without blending, and for
        per-frame targets (a linear model has no per-frame head)."""
        if not self.blend_linear or "frames" in train.targets:
            return None, 0.0

        def linear() -> "FusionEstimator":
            return FusionEstimator(fusion="linear", fusion_params={}, num_classes=self.num_classes,
                                   has_valence=self.has_valence, select_metric=self.select_metric,
                                   standardize=self.standardize, seed=self.seed, num_threads=self.num_threads)

        weight = 0.5 if self.blend_linear == "auto" else float(self.blend_linear)
        if self.blend_linear == "auto" and inner is not None:
            held = train.rows(inner[1])
            own, lin = self._predict_model(held), linear().fit(train.rows(inner[0]), strategy=strategy).predict_outputs(held)

            weight = max(BLEND_GRID, key=lambda w: (self._selection_score(blend_outputs(own, lin, w), held),
                                                    -abs(w - 0.5)))
        return linear().fit(train, strategy=strategy), weight

    # --- prediction -------------------------------------------------------------------------
    def _predict_model(self, split: Split) -> dict[str, np.ndarray]:
        windows, plan = self._windowed(self._level_split(split))
        inputs, present, _ = to_tensors(windows, "cpu", self.scalers_)
        with torch_threads(self.num_threads):
            return self._merge(predict(self.model_, inputs, present), plan)

    def predict_outputs(self, split: Split) -> dict[str, np.ndarray]:
        out = self._predict_model(split)
        partner = getattr(self, "linear_", None)
        if partner is not None:
            out = blend_outputs(out, partner.predict_outputs(split), self.blend_weight_)
        return out

    def predict_proba(self, split: Split) -> np.ndarray:
        return self.predict_outputs(split)["probs"]

    def predict(self, split: Split) -> np.ndarray:
        return self.predict_proba(split).argmax(1)

