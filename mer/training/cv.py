"""Cross-validation: seeded stratified folds, best epoch per fold, fold-ensembled test predictions.

Protocol (MER2023 baseline, made reproducible): K stratified folds of the training split from a
seeded shuffle (or the split's group-aware protocol: :mod:`mer.training.folds`); each fold's
model keeps its best epoch by the track metric on its held-out fold; the CV score is the mean
over folds of those best-epoch scores (as the official code reports it), and the pooled
out-of-fold score is reported beside it. Test prediction = mean over the fold models of the
class *probabilities* (the official code averages raw logits) and of the valences.
With ``seeds=[...]`` the whole protocol repeats per seed (folds and initialisation both follow
the seed); scores are reported as mean ± std over seeds and the test prediction averages every
fold model of every seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sklearn.base import clone
from tqdm.auto import tqdm

from mer.evaluation.scoring import score_outputs, score_predictions, score_targets

from .data import Split
from .folds import make_folds, split_strata


def stratified_folds(y: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified K-fold over the labelled rows (``y >= 0``) of ``y``."""
    return make_folds(y, None, "stratified", n_folds, seed)


def split_folds(train: Split, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds of a training split by its ``protocol`` and ``groups``, stratified on the class,
    or for sentiment data (no class known) on the valence's sign."""
    return make_folds(split_strata(train.y, train.v, n_folds), train.groups, train.protocol, n_folds, seed)


def official_scores(history: Sequence[Mapping[str, Any]], scores: Mapping[str, float]) -> dict[str, float]:
    """The official protocol's figure for one fold: the held-out fold's scores at the epoch that
    scores best *on that fold*. When the epoch was chosen on an inner split, the loop monitored the
    held-out fold (``monitor``) and this picks from those records (optimistic, as the official
    code reports); otherwise the kept epoch already is that epoch and ``scores`` are returned."""
    monitored = [r for r in history if "monitor" in r]
    if not monitored:
        return dict(scores)
    return dict(max(monitored, key=lambda r: r["monitor_score"])["monitor"])


@dataclass
class Predictions:
    """Predictions for a set of names: ``probs [N, C]``, ``valence [N]`` or None; ``extra``: more
    heads' outputs (``arousal [N]``, ``frame_probs [N, T, C]``)."""

    names: list[str]
    probs: np.ndarray
    valence: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_outputs(cls, names: list[str], out: Mapping[str, np.ndarray]) -> "Predictions":
        return cls(names, out["probs"], out.get("valence"),
                   {k: out[k] for k in EXTRA_OUTPUTS if k in out})

    def outputs(self) -> dict[str, np.ndarray]:
        out = {"probs": self.probs, **self.extra}
        if self.valence is not None:
            out["valence"] = self.valence
        return out

    def mean_with(self, others: Sequence["Predictions"]) -> "Predictions":
        allp = [self, *others]
        val = None if self.valence is None else np.mean([p.valence for p in allp], axis=0)
        extra = {k: np.mean([p.extra[k] for p in allp], axis=0) for k in self.extra}
        return Predictions(self.names, np.mean([p.probs for p in allp], axis=0), val, extra)


EXTRA_OUTPUTS = ("arousal", "frame_probs")


@dataclass
class CVResult:
    seed: int
    folds: list[dict[str, Any]]
    oof: Predictions
    tests: dict[str, Predictions]
    oof_scores: dict[str, float] = field(default_factory=dict)
    histories: list[list[dict]] = field(default_factory=list)
    view_oof: dict[str, Predictions] = field(default_factory=dict)
    view_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    fold_tests: dict[str, list[Predictions]] = field(default_factory=dict)
    """Per fold model, its own predictions of the test splits named in ``keep_fold_tests``."""
    fold_val: list[np.ndarray] = field(default_factory=list)
    """Per fold, the row indices of the training split it held out."""

    def fold_mean(self) -> dict[str, float]:
        keys = [k for k in self.folds[0] if k not in {"fold", "best_epoch", "n_train", "n_val"}]
        return {k: float(np.mean([f[k] for f in self.folds])) for k in keys}


def cross_validate(estimator, train: Split, tests: Mapping[str, Split], *, n_folds: int, seed: int,
                   strategy=None, progress: bool = True, context: Mapping[str, Any] | None = None,
                   on_fold: Callable[[dict], None] | None = None,
                   views: Mapping[str, Split] | None = None, keep_fold_tests: Sequence[str] = (),
                   label: str | None = None) -> CVResult:
    """Run the protocol once with ``seed``. ``estimator`` is cloned per fold (its seed set to
    ``seed * 1000 + fold`` so folds differ but everything is repeatable). ``keep_fold_tests``: test
    splits whose per-fold predictions are kept (``CVResult.fold_tests``) beside the fold ensemble's.
    ``label`` names the setting on the progress bar (``CV text | - seed 0``), so the CVs of one
    run can be told apart."""
    n = len(train)
    num_classes = estimator.num_classes
    oof_probs = np.full((n, num_classes), np.nan, np.float32)
    oof_val = np.full(n, np.nan, np.float32) if estimator.has_valence else None
    test_preds: dict[str, list[dict]] = {k: [] for k in tests}
    views = dict(views or {})
    for c, vs in views.items():
        if vs.names != train.names:
            raise ValueError(f"view {c!r} does not hold the training split's rows in its order")
    view_probs = {c: np.full((n, num_classes), np.nan, np.float32) for c in views}
    view_val = {c: np.full(n, np.nan, np.float32) for c in views} if estimator.has_valence else {}
    oof_arousal = np.full(n, np.nan, np.float32) if "arousal" in train.targets else None
    folds, histories = [], []
    splits = split_folds(train, n_folds, seed)
    bar = tqdm(splits, desc=f"CV {label} seed {seed}" if label else f"CV seed {seed}", unit="fold",
               disable=not progress, leave=False)
    for k, (tr, va) in enumerate(bar):
        est = clone(estimator).set_params(seed=seed * 1000 + k)
        if strategy is None:       # the estimator's own default: the supervised loss
            est.fit(train.rows(tr), eval_set=train.rows(va))
        else:
            strategy.fit_fold(est, train.rows(tr), eval_set=train.rows(va),
                              context={**(context or {}), "fold": k, "seed": seed})
        out = est.predict_outputs(train.rows(va))
        oof_probs[va] = out["probs"]
        if oof_val is not None:
            oof_val[va] = out["valence"]
        if oof_arousal is not None:
            oof_arousal[va] = out["arousal"]
        held = train.rows(va)
        scores = score_outputs(held.y, out, held.v, held.targets, held.valence_range)
        rec = {"fold": k, "best_epoch": est.best_epoch_, "n_train": len(tr), "n_val": len(va), **scores,
               **{f"official_{m}": x for m, x in official_scores(est.history_, scores).items()}}
        if getattr(est, "linear_", None) is not None:   # the blend's linear half alone: the floor, free
            rec["blend_weight"] = float(est.blend_weight_)
            lin = est.linear_.predict_outputs(held)
            rec.update({f"linear_{m}": x for m, x in
                        score_outputs(held.y, lin, held.v, held.targets, held.valence_range).items()})
        folds.append(rec)
        histories.append(est.history_)
        if on_fold is not None:
            on_fold(rec)
        for name, split in tests.items():
            test_preds[name].append(est.predict_outputs(split))
        for c, vs in views.items():
            vo = est.predict_outputs(vs.rows(va))
            view_probs[c][va] = vo["probs"]
            if c in view_val:
                view_val[c][va] = vo["valence"]
    oof = Predictions(train.names, oof_probs, oof_val, {} if oof_arousal is None else {"arousal": oof_arousal})
    fold_tests = {name: [Predictions.from_outputs(tests[name].names, o) for o in test_preds[name]]
                  for name in keep_fold_tests if name in test_preds}
    tests_out = {}
    for name, outs in test_preds.items():
        per_fold = [Predictions.from_outputs(tests[name].names, o) for o in outs]
        tests_out[name] = per_fold[0].mean_with(per_fold[1:])
    labelled = (train.y >= 0) | (np.isfinite(train.v) if train.valence_range is not None else False)
    oof_scores = score_predictions(train.y[labelled], oof_probs[labelled], train.v[labelled],
                                   None if oof_val is None else oof_val[labelled], train.valence_range)
    if oof_arousal is not None:
        oof_scores.update(score_targets({"arousal": train.targets["arousal"][labelled]},
                                        {"arousal": oof_arousal[labelled],
                                         **({} if oof_val is None else {"valence": oof_val[labelled]})},
                                        train.v[labelled]))
    view_oof = {c: Predictions(train.names, view_probs[c], view_val.get(c)) for c in views}
    view_scores = {c: score_predictions(train.y[labelled], p.probs[labelled], train.v[labelled],
                                        None if p.valence is None else p.valence[labelled], train.valence_range)
                   for c, p in view_oof.items()}
    return CVResult(seed, folds, oof, tests_out, oof_scores, histories, view_oof, view_scores, fold_tests,
                    [va for _, va in splits])


@dataclass
class MultiSeedResult:
    """Every seed's CV. ``extras``: what a strategy adds (self-training's rounds and pseudo-labels,
    its supervised round-0 result as ``baseline``)."""

    runs: list[CVResult]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def summary(self) -> dict[str, dict[str, float]]:
        """metric -> {'mean', 'std'} over seeds of the per-seed fold-mean scores (``cv_*``) and of
        the pooled out-of-fold scores (``oof_*``)."""
        per_seed = []
        for r in self.runs:
            row = {(k if k.startswith(("official_", "linear_")) else f"cv_{k}"): v for k, v in r.fold_mean().items()}
            row.update({f"oof_{k}": v for k, v in r.oof_scores.items()})
            for c, sc in r.view_scores.items():
                row.update({f"oof_{c}_{k}": v for k, v in sc.items()})
            per_seed.append(row)
        keys = per_seed[0].keys()
        return {k: {"mean": float(np.mean([p[k] for p in per_seed])),
                    "std": float(np.std([p[k] for p in per_seed]))} for k in keys}

    def test_predictions(self) -> dict[str, Predictions]:
        first = self.runs[0].tests
        return {k: first[k].mean_with([r.tests[k] for r in self.runs[1:]]) for k in first}

    def oof_predictions(self) -> Predictions:
        return self.runs[0].oof.mean_with([r.oof for r in self.runs[1:]])


def run_seeds(estimator, train: Split, tests: Mapping[str, Split], *, seeds: Sequence[int], n_folds: int,
              strategy=None, progress: bool = True, on_fold=None, views: Mapping[str, Split] | None = None,
              context: Mapping[str, Any] | None = None, keep_fold_tests: Sequence[str] = (),
              label: str | None = None) -> MultiSeedResult:
    """:func:`cross_validate` once per seed; ``context`` reaches the strategy's ``fit_fold``."""
    runs = []
    for seed in seeds:
        runs.append(cross_validate(estimator, train, tests, n_folds=n_folds, seed=seed, strategy=strategy,
                                   progress=progress, on_fold=on_fold, views=views, context=context,
                                   keep_fold_tests=keep_fold_tests, label=label))
    return MultiSeedResult(runs)
