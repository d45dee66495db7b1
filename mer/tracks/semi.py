"""MER-SEMI: pseudo-label self-training over the unlabelled pool.

MER2023 gives 3,373 labelled clips and a pool of 73k unlabelled ones (MER2024: ~115k) whose
labelled test subset is hidden inside it; the official toolkit never trains on the pool. Here:

* round 0: the supervised protocol (K folds x seeds) on the labelled rows;
* round r = 1..``rounds``: the previous round's **fold ensemble** (mean class probabilities of
  every fold model of every seed) labels the pool. Which rows it labels follows MER2023's own rule
  for choosing unlabelled clips (paper Algorithm 1): per class j the threshold ``lambda_j`` is the
  ``eta``-quantile of the confidences (max probability) of the labelled rows of class j predicted
  **correctly, out of fold**. The rule is applied per fold model, on that model's own scale (an
  average of models is less sure than any one of them, so ensemble confidences against
  single-model thresholds would admit almost nothing): a pool row is pseudo-labelled with the
  ensemble's label when most fold models reach their threshold for that same label
  (``fold_votes``). With ``class_floor`` no class threshold is below the same quantile over all
  classes: a class predicted correctly only a few times, unsurely, would otherwise admit nearly
  every prediction of it. The choice is made afresh every round (a row can change label or drop
  out; the round it first entered is kept). Then the whole protocol runs again, every fold
  training on its labelled rows plus the pseudo-labelled rows, weighted ``pseudo_weight`` (times
  the confidence with ``confidence_weight``). Held-out folds stay labelled-only, and
  pseudo-labelled rows carry no valence.

What is tracked: per pool row its label, confidence and the round it entered
(``pseudo_labels.csv``), every round's choice (``pseudo_labels_by_round.csv``), per round the
thresholds, counts per class, the pseudo-labels' accuracy where a label is known, and the scores
(``self_training_rounds.csv``, ``self_training.png``, MLflow metrics with the round as step).

Honesty: with ``teacher: ensemble`` the teacher saw every labelled row, held-out folds
included, so CV scores from round 1 on are optimistic, and so are the out-of-fold confidences the
next thresholds come from (with few labels they reach ~0.99 and the selection shrinks).
``teacher: fold`` removes the leak: fold k of seed s is taught by the previous round's model of
the same fold and seed (it never saw that fold's held-out rows; the folds follow the seed, so they
are the same every round), with thresholds from the out-of-fold confidences of the *other* folds'
rows. Its CV scores are honest, and they are the ones to compare with supervised-only CV. The
reported pseudo-label of a pool row is then the fold ensemble's, ``selected`` when most fold
teachers chose it (``fold_votes``). ``thresholds: supervised`` keeps the round-0 thresholds
instead of recomputing them every round; but then each round's teacher, trained on the pool
rows it labels, grows surer of them and nearly the whole pool passes. The honest comparison on
a test set hides part of the training labels (``track.hide_labels.fraction``): those rows join
the pool and are scored as the ``heldout`` split, as the MER-SEMI test subset is scored inside
its pool.
Round 0 is the supervised-only baseline of the same run (same folds, seeds and features).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mer.evaluation.reports import plot_self_training
from mer.evaluation.scoring import score_predictions
from mer.tracks.supervised import SupervisedStrategy
from mer.training.cv import run_seeds
from mer.training.data import Split, concat_splits

from .base import STRATEGIES, TrackData

log = logging.getLogger("mer")

POOL = "__pool__"
"""Name under which the pool rides along with the test splits (never written anywhere)."""


def class_thresholds(y: np.ndarray, probs: np.ndarray, eta: float, num_classes: int,
                     floor: bool = False) -> np.ndarray:
    """``[C]``: per class, the ``eta``-quantile of the confidences of the labelled rows of that
    class predicted correctly (``inf`` for a class with none: it gets no pseudo-labels).

    ``floor``: no class threshold below the ``eta``-quantile over every correct row, so a class
    the model gets right only a few times, unsurely, cannot admit every prediction of it.
    ``y [N]`` true labels (-1 ignored), ``probs [N, C]`` out-of-fold probabilities."""
    pred, conf = probs.argmax(1), probs.max(1)
    out = np.full(num_classes, np.inf)
    for j in range(num_classes):
        ok = (y == j) & (pred == j) & np.isfinite(conf)
        if ok.any():
            out[j] = float(np.quantile(conf[ok], eta))
    correct = (y >= 0) & (pred == y) & np.isfinite(conf)
    if floor and correct.any():
        out = np.maximum(out, float(np.quantile(conf[correct], eta)))
    return out


class PseudoLabels:
    """The pool's pseudo-labels over rounds: what each row got, how sure, since when."""

    def __init__(self, names: Sequence[str], truth: np.ndarray | None = None) -> None:
        self.names = list(names)
        n = len(self.names)
        self.truth = truth if truth is not None else np.full(n, -1)
        self.label = np.full(n, -1)
        self.confidence = np.full(n, np.nan)
        self.entered = np.full(n, -1)
        self.rounds_selected = np.zeros(n, int)
        self.changes = np.zeros(n, int)
        self.by_round: list[pd.DataFrame] = []

    def update(self, rnd: int, label: np.ndarray, confidence: np.ndarray, selected: np.ndarray,
               votes: np.ndarray | None = None) -> None:
        was = self.label >= 0
        changed = selected & was & (self.label != label)
        self.changes += changed
        self.entered = np.where(selected & (self.entered < 0), rnd, self.entered)
        self.rounds_selected += selected
        self.label = np.where(selected, label, -1)
        self.confidence = confidence.astype(float)
        frame = pd.DataFrame({"name": self.names, "round": rnd, "predicted": label.astype(int),
                              "confidence": np.round(confidence, 6), "selected": selected})
        if votes is not None:               # share of fold models sure of this label
            frame["fold_votes"] = np.round(votes, 4)
        self.by_round.append(frame)

    def frame(self, classes: Sequence[str]) -> pd.DataFrame:
        lab = lambda a: [classes[i] if i >= 0 else "" for i in a]  # noqa: E731
        return pd.DataFrame({"name": self.names, "pseudo_label": lab(self.label),
                             "confidence": np.round(self.confidence, 6),
                             "round_entered": self.entered, "rounds_selected": self.rounds_selected,
                             "label_changes": self.changes, "true_label": lab(self.truth)})

    def accuracy_where_known(self, selected: np.ndarray, label: np.ndarray) -> tuple[float | None, int]:
        known = selected & (self.truth >= 0)
        if not known.any():
            return None, 0
        return float((label[known] == self.truth[known]).mean()), int(known.sum())


@STRATEGIES.register("self_training")
class SelfTrainingStrategy(SupervisedStrategy):
    """Pseudo-label self-training with class-wise thresholds and fold-ensemble teachers (see the
    module docstring); the loss is the supervised one, weighted per row."""

    name = "self_training"
    needs_pool = True

    def __init__(self, rounds: int = 3, eta: float = 0.8, pseudo_weight: float = 0.5,
                 confidence_weight: bool = False, thresholds: str = "every_round", class_floor: bool = True,
                 teacher: str = "ensemble", **options: Any) -> None:
        super().__init__(**options)
        if teacher not in {"ensemble", "fold"}:
            raise ValueError(f"teacher must be 'ensemble' or 'fold', got {teacher!r}")
        self.teacher = teacher
        if thresholds not in {"supervised", "every_round"}:
            raise ValueError(f"thresholds must be 'supervised' or 'every_round', got {thresholds!r}")
        self.thresholds = thresholds
        self.class_floor = bool(class_floor)
        if int(rounds) < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta (a quantile) must be in [0, 1], got {eta}")
        if float(pseudo_weight) <= 0:
            raise ValueError(f"pseudo_weight must be > 0, got {pseudo_weight}")
        self.rounds = int(rounds)
        self.eta = float(eta)
        self.pseudo_weight = float(pseudo_weight)
        self.confidence_weight = bool(confidence_weight)

    def fit_fold(self, estimator, train, eval_set=None, context: Mapping[str, Any] | None = None):
        context = context or {}
        pseudo = context.get("pseudo")
        if isinstance(pseudo, Mapping):                    # teacher: fold, one pseudo-labelled set per fold
            pseudo = pseudo.get((context.get("seed"), context.get("fold")))
        if pseudo is not None and len(pseudo):
            train = concat_splits([train, pseudo])        # labelled rows weigh 1
        return estimator.fit(train, eval_set=eval_set, strategy=self)

    def _pseudo_split(self, data: TrackData, label: np.ndarray, conf: np.ndarray, selected: np.ndarray) -> Split:
        idx = np.flatnonzero(selected)
        weight = self.pseudo_weight * (conf[idx] if self.confidence_weight else np.ones(len(idx)))
        return Split(data.pool.X.rows(idx), label[idx].astype(np.int64),
                     np.full(len(idx), np.nan, np.float32), weight.astype(np.float32))

    def cross_validate(self, estimator, data: TrackData, *, seeds, n_folds, progress=True, label=None,
                       on_fold=None):
        if data.pool is None or len(data.pool) == 0:
            raise ValueError("self-training needs an unlabelled pool and there is none: set track.pool.splits "
                             "(e.g. [test3]) or hide part of the training labels (track.hide_labels.fraction)")
        tests = {**data.tests, **data.probes, POOL: data.pool}
        per_fold = self.teacher == "fold"
        bar_label = label             # `label` is reused below for the pseudo-labels

        def protocol(pseudo):
            return run_seeds(estimator, data.train, tests, seeds=seeds, n_folds=n_folds, strategy=self,
                             progress=progress, views=data.views, context={"pseudo": pseudo},
                             keep_fold_tests=[POOL], label=bar_label, on_fold=on_fold)

        results = [protocol(None)]
        history = [self._record(0, results[0], data, None, None, None)]
        tracker = PseudoLabels(data.pool.names, data.pool_truth)
        first_thresholds: dict[Any, np.ndarray] = {}
        C = estimator.num_classes

        def thresholds_for(key, y: np.ndarray, oof: np.ndarray) -> np.ndarray:
            if self.thresholds == "supervised" and key in first_thresholds:
                return first_thresholds[key]
            t = class_thresholds(y, oof, self.eta, C, floor=self.class_floor)
            first_thresholds.setdefault(key, t)
            return t

        for rnd in range(1, self.rounds + 1):
            teacher = results[-1]
            probs = teacher.test_predictions()[POOL].probs
            label, conf = probs.argmax(1), probs.max(1)
            # Every fold model judges the pool on its own scale: its confidences against thresholds
            # from its own kind of predictions (single-model, out of fold). Averaging models lowers the
            # ensemble's confidences, so ensemble confidences against single-model thresholds would
            # admit almost nothing.
            pseudo, sel_counts, votes, thr_all = {}, [], np.zeros(len(data.pool)), []
            for run in teacher.runs:
                shared = None if per_fold else thresholds_for(run.seed, data.train.y, run.oof.probs)
                for k, (fold_pred, va) in enumerate(zip(run.fold_tests[POOL], run.fold_val)):
                    t = shared
                    if per_fold:         # honest: nothing of the fold this model will teach
                        y = data.train.y.copy()
                        y[va] = -1
                        t = thresholds_for((run.seed, k), y, run.oof.probs)
                    lab_k, conf_k = fold_pred.probs.argmax(1), fold_pred.probs.max(1)
                    sel_k = conf_k >= t[lab_k]
                    votes += sel_k & (lab_k == label)
                    sel_counts.append(int(sel_k.sum()))
                    thr_all.append(t)
                    if per_fold and sel_k.any():
                        pseudo[(run.seed, k)] = self._pseudo_split(data, lab_k, conf_k, sel_k)
            votes /= max(1, len(sel_counts))
            # ensemble: a row is pseudo-labelled with the ensemble's label when most fold models are
            # sure of that label; fold: each fold trains on its own teacher's choice, and ``selected``
            # (reported) is what most fold teachers chose.
            selected = votes > 0.5
            thresholds = np.mean(np.where(np.isfinite(thr_all), thr_all, np.nan), axis=0)
            thresholds = np.where(np.isnan(thresholds), np.inf, thresholds)
            if per_fold:
                n_selected = int(round(float(np.mean(sel_counts)))) if sel_counts else 0
                pseudo = pseudo or None
            else:
                n_selected = int(selected.sum())
                pseudo = self._pseudo_split(data, label, conf, selected) if selected.any() else None
            tracker.update(rnd, label, conf, selected, votes)
            if pseudo is None:
                log.warning("self-training round %d: no pool row reaches its class threshold (eta=%.2f); "
                            "stopping after %d round(s)", rnd, self.eta, rnd - 1)
                history.append(self._record(rnd, None, data, selected, label, thresholds, tracker, n_selected))
                break
            log.info("self-training round %d: %d of %d pool rows pseudo-labelled%s", rnd, n_selected,
                     len(data.pool), " (mean over fold teachers)" if per_fold else "")
            results.append(protocol(pseudo))
            history.append(self._record(rnd, results[-1], data, selected, label, thresholds, tracker, n_selected))
        for res in results:
            for run in res.runs:
                run.tests.pop(POOL, None)
                run.fold_tests.pop(POOL, None)
        final = results[-1]
        final.extras.update({"rounds": history, "pseudo_labels": tracker,
                             "baseline": results[0] if len(results) > 1 else None})
        return final

    def _record(self, rnd: int, result, data: TrackData, selected, label, thresholds, tracker=None,
                n_selected: int | None = None) -> dict:
        rec: dict[str, Any] = {"round": rnd, "n_pseudo": 0 if selected is None else
                               int(selected.sum()) if n_selected is None else int(n_selected)}
        if selected is not None:
            counts = np.bincount(label[selected], minlength=len(thresholds))
            for j, (c, t) in enumerate(zip(counts, thresholds)):
                rec[f"n_pseudo_{j}"] = int(c)
                rec[f"threshold_{j}"] = float(t)
            acc, n_known = tracker.accuracy_where_known(selected, label)
            rec.update({"pseudo_acc_known": acc, "pseudo_n_known": n_known})
        if result is not None:
            summary = result.summary()
            rec.update({k: v["mean"] for k, v in summary.items() if k in {"cv_wf1", "oof_wf1", "cv_combined"}})
            preds = result.test_predictions()
            for name, split in data.tests.items():
                if name in preds and (split.y >= 0).any():
                    sc = score_predictions(split.y, preds[name].probs)
                    rec[f"{name}_wf1"] = sc["wf1"]
        return rec

    def report(self, result, data: TrackData, out_dir: Path, classes: Sequence[str], tracker=None
               ) -> dict[str, float]:
        rounds = result.extras.get("rounds") or []
        pl: PseudoLabels | None = result.extras.get("pseudo_labels")
        if pl is None:
            return {}
        out_dir = Path(out_dir)
        pl.frame(classes).to_csv(out_dir / "pseudo_labels.csv", index=False)
        if pl.by_round:
            long = pd.concat(pl.by_round, ignore_index=True)
            long["predicted"] = [classes[int(i)] for i in long["predicted"]]
            long.to_csv(out_dir / "pseudo_labels_by_round.csv", index=False)
        table = pd.DataFrame(rounds)
        table = table.rename(columns={f"{k}_{j}": f"{k}_{c}" for j, c in enumerate(classes)
                                      for k in ("n_pseudo", "threshold")})
        table.to_csv(out_dir / "self_training_rounds.csv", index=False)

        plot_self_training(table, classes, out_dir / "self_training.png")
        if tracker is not None:
            for rec in rounds:
                tracker.log_metrics({f"round_{k}": float(v) for k, v in rec.items()
                                     if k != "round" and isinstance(v, (int, float)) and np.isfinite(v)},
                                    step=int(rec["round"]))
            for name in ("pseudo_labels.csv", "pseudo_labels_by_round.csv", "self_training_rounds.csv",
                         "self_training.png"):
                if (out_dir / name).exists():
                    tracker.log_artifact(out_dir / name)
        last = rounds[-1] if rounds else {}
        metrics = {"semi_rounds": float(len(rounds) - 1), "semi_n_pseudo": float(last.get("n_pseudo", 0)),
                   "semi_pool_size": float(len(pl.names))}
        if last.get("pseudo_acc_known") is not None:
            metrics["semi_pseudo_acc_known"] = float(last["pseudo_acc_known"])
        return metrics
