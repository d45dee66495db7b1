"""ARNet (IRNet): automatic refinement of noisy candidate sets around a partial-label learner.

The algorithm (arXiv 2211.04774; public code zeroQiaoba/IRNet), as mer runs it on cached features:

1. **Warm-up**: train the base learner (``PiCO`` when none is given; see "Base learner" below)
   on the given candidate sets.
2. **Automatic correction start**: after every epoch, score a held-out **validation** split and
   start correcting once its smoothed curve stops rising: with at least ``window`` epochs of
   history, smooth by a centred moving average of half-width ``window // 2`` (truncated at the
   ends, the right edge excluded as in the public code), take first differences and start when
   the mean of the last ``slope_epochs`` differences is below ``1e-6``. mer bounds this start
   to ``[min_warmup, max_warmup]`` (defaults: 50% and 70% of ``epochs``): it never fires before
   ``min_warmup`` and fires at ``max_warmup`` if the curve has not plateaued by then. Why: the
   candidate-coverage curve on ~10% of the rows is flat and noisy at large candidate sets, so
   with the earlier bound (epoch 30-40 of 100) the rule fired at the first allowed epoch while
   the model was still weak and early corrections locked in its mistakes (digits, tuning seeds
   100-103, PRODEN base, fixed starts 40 / 60 / 75: q=0.5 eta=0.3 0.724 / 0.769 / 0.751,
   q=0.3 eta=0.3 0.919 / 0.932 / 0.929); and on some seeds it never fired, leaving the
   validation rows out of training and the sets uncorrected (the deadline). Gating corrections
   to rows flagged with the same label on 3 epochs running did not help (q=0.5 eta=0.2, seeds
   104-109: 0.902 vs 0.904 ungated) and is not used. The public code feeds
   the *test-set* accuracy into this rule; mer never looks at test data: the curve is the
   validation split's candidate-coverage rate (the fraction of predictions inside the sample's
   candidate set, which needs no true labels), or its accuracy when ``fit`` is given validation
   truths. ``correct_start`` = an epoch number fixes the start instead. Once correction starts,
   the curve has done its job and (``merge_validation``, default) the validation rows join the
   training rows, so ARNet ends up training on as many rows as the learners it is compared with;
   from then on no validation score is recorded (``nan``).
3. **Detection** (every epoch from the start, on the training rows): for each of two stochastic
   views, ``a = max_{j in S} p_j``, ``b = max_{j not in S} p_j``, ``j^ = argmax_{j not in S} p_j``;
   a sample is noisy iff ``b > a + delta`` on both views and ``j^`` agrees across them. ``p`` is
   the classifier's softmax by default (``detect_on="classify"``). The public default is the
   prototype posterior (``correct_type='cluster'``; here ``detect_on="cluster"``, or ``"auto"``
   = cluster for PiCO): on cached features the prototype posterior (a softmax of cosines, no
   temperature) is so flat that ``delta`` ~ 0.01 rarely fires, and on digits the classifier
   posterior recovered far more true labels (contains truth 0.70 -> 0.92 vs 0.69 -> 0.71 at
   q=0.5, eta=0.3), so mer detects on the classifier.
4. **Correction**: add ``j^`` to the set (old candidates stay), give it confidence = its
   predicted probability (view 1), renormalise the row (the public code's ``case3``).
5. **Rounds**: steps 3-4 repeat every epoch until the end on the progressively purified sets
   (the public code corrects every mini-batch; mer once per epoch over all rows).

**Base learner.** The refiner wraps any learner. ``bench/pll.py`` (and ``run_setting`` with
``arnet_base="auto"``) picks it with :func:`choose_base` from the training candidate matrix alone:
PiCO while the sets cover at most half the label space on average, PRODEN above. On digits
(tuning seeds 100-103, corrections from epoch 60) PiCO + corrections lost accuracy at q=0.5
(eta=0.2: 0.833 vs PiCO alone 0.868, seeds 100-101) although contains truth rose to 0.97 (not
from merging the validation rows: with corrections switched off the merge left PiCO at 0.868;
a guess, not verified: its prototype pseudo-labels, argmax inside ever larger sets, pull
corrected rows back to wrong candidates), while PRODEN + corrections gained (0.898 vs
PRODEN 0.853 at eta=0.2, 0.769 vs 0.688 at eta=0.3); at q<=0.3 PiCO + corrections was the
stronger pair (q=0.3 eta=0.2: 0.947 vs 0.938 with PRODEN).

Per-epoch diagnostics (``diagnostics_``): epoch, phase, validation score, rows corrected, average
candidate-set size and, when the truth is passed to ``fit``, the fraction of sets containing it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from mer.pll.learners import PLLLearner, PiCOLearner, check_candidates


@dataclass
class EpochRecord:
    epoch: int
    phase: str                  # "warmup" | "correct"
    val_score: float
    n_corrected: int
    avg_size: float
    contains_truth: float | None


def should_start_correction(scores, window: int, slope_epochs: int = 10,
                            tol: float = 1e-6) -> bool:
    """The public code's plateau rule on a score history (see the module docstring)."""
    if len(scores) < window:
        return False
    half = window // 2
    n = len(scores)
    smooth = [np.mean(scores[max(0, e - half):min(n - 1, e + half)] or [scores[e]]) for e in range(n)]
    diffs = np.diff(smooth)
    return bool(np.mean(diffs[-slope_epochs:]) < tol)


def choose_base(S, threshold: float = 0.5) -> str:
    """The base learner ARNet wraps by default in ``bench/pll.py``: ``"pico"`` while the candidate
    sets cover at most ``threshold`` of the label space on average, else ``"proden"`` (see the
    module docstring). Uses the (noisy) candidate matrix only, never a true label."""
    S = check_candidates(S)
    return "pico" if float(S.sum(1).mean()) / S.shape[1] <= threshold else "proden"


def warmup_epoch(value: int | float, epochs: int) -> int:
    """An epoch bound given as an epoch number or (a float in (0, 1)) a fraction of ``epochs``."""
    if isinstance(value, (float, np.floating)) and 0 < value < 1:
        return max(1, int(round(value * epochs)))
    if value < 0 or value != int(value):
        raise ValueError(f"warm-up bounds are epoch numbers or fractions in (0, 1), got {value!r}")
    return int(value)


def detect_noisy(S: np.ndarray, views: list[np.ndarray], delta: float):
    """Rows whose best non-candidate beats every candidate by ``delta`` on every view, with the
    same best non-candidate on all views. Returns ``(rows, labels, probs of view 1)``."""
    masks = S > 0
    agree = None
    ok = np.ones(len(S), dtype=bool)
    for p in views:
        a = np.where(masks, p, -np.inf).max(1)
        out = np.where(masks, -np.inf, p)
        j = out.argmax(1)
        b = out.max(1)
        ok &= np.isfinite(b) & (b > a + delta)
        agree = j if agree is None else agree
        ok &= j == agree
    rows = np.flatnonzero(ok)
    labels = agree[rows]
    return rows, labels, views[0][rows, labels]


class ARNetRefiner(BaseEstimator, ClassifierMixin):
    """ARNet around any :class:`mer.pll.learners.PLLLearner` (cloned, never modified).

    Args:
        base: the learner (unfitted; default ``PiCOLearner()``); its ``epochs`` are overridden by
            ``epochs`` here.
        epochs: total training epochs (warm-up + correction).
        delta: detection margin (the public runs use 0.002-0.02).
        correct_start: ``"auto"`` (plateau of the smoothed validation curve) or an epoch number.
        window: moving-average window of the plateau rule (public code: 100 of 1000 epochs).
        slope_epochs: how many recent slopes are averaged (public code: 10).
        min_warmup: never start before this epoch; a float in (0, 1) is a fraction of ``epochs``
            (default 0.5: epoch 50 of 100).
        max_warmup: start at this epoch at the latest, plateau or not (``None``: no deadline);
            a float in (0, 1) is a fraction of ``epochs`` (default 0.7: epoch 70 of 100).
        validation_fraction: rows held out of training for the validation curve when ``fit``
            is not given ``eval_set``.
        merge_validation: add those rows to training (and correction) once correction starts.
        detect_on: ``"classify"`` (default), ``"cluster"`` or ``"auto"``.
        seed: the validation split's seed (the base learner keeps its own).
    """

    def __init__(self, base: PLLLearner | None = None, epochs: int = 150, delta: float = 0.01,
                 correct_start: str | int = "auto", window: int = 40, slope_epochs: int = 10,
                 min_warmup: int | float = 0.5, max_warmup: int | float | None = 0.7,
                 validation_fraction: float = 0.1,
                 merge_validation: bool = True, detect_on: str = "classify", seed: int = 0) -> None:
        self.base = base
        self.epochs = epochs
        self.delta = delta
        self.correct_start = correct_start
        self.window = window
        self.slope_epochs = slope_epochs
        self.min_warmup = min_warmup
        self.max_warmup = max_warmup
        self.validation_fraction = validation_fraction
        self.merge_validation = merge_validation
        self.detect_on = detect_on
        self.seed = seed

    def fit(self, X, S, y_true=None, eval_set=None):
        """Train with refinement. ``y_true`` (optional, diagnostics only) gives the truth of the
        training rows; ``eval_set=(X_val, S_val[, y_val])`` replaces the internal split (with
        ``y_val`` the curve is validation accuracy)."""
        X = np.asarray(X, dtype=np.float32)
        S = check_candidates(S, len(X))
        if self.correct_start != "auto" and not isinstance(self.correct_start, (int, np.integer)):
            raise ValueError(f"correct_start must be 'auto' or an epoch number, got {self.correct_start!r}")
        lo = warmup_epoch(self.min_warmup, self.epochs)
        hi = None if self.max_warmup is None else max(lo, warmup_epoch(self.max_warmup, self.epochs))
        train = np.arange(len(X))
        y_val = None
        if eval_set is not None:
            X_val, S_val = np.asarray(eval_set[0], np.float32), check_candidates(eval_set[1])
            y_val = None if len(eval_set) < 3 or eval_set[2] is None else np.asarray(eval_set[2])
        elif self.validation_fraction > 0:
            rng = np.random.default_rng(self.seed)
            perm = rng.permutation(len(X))
            n_val = max(1, int(round(self.validation_fraction * len(X))))
            val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            X_val, S_val = X[val], S[val]
        else:
            X_val = S_val = None
        merge = eval_set is None and X_val is not None and self.merge_validation
        self.train_rows_ = train
        y_tr = None if y_true is None else np.asarray(y_true)[train]
        learner = clone(self.base if self.base is not None else PiCOLearner())
        learner.set_params(epochs=self.epochs)
        learner.begin(X[train], S[train])
        kind = self.detect_on
        if kind == "auto":
            kind = "cluster" if isinstance(learner, PiCOLearner) else "classify"
        self.detect_kind_ = kind
        self.correction_epoch_ = None if self.correct_start == "auto" else int(self.correct_start)
        scores: list[float] = []
        self.diagnostics_: list[EpochRecord] = []
        for epoch in range(1, self.epochs + 1):
            learner.train_epoch()
            val_score = float("nan")
            if X_val is not None and not (merge and self.correction_epoch_ is not None
                                          and epoch > self.correction_epoch_):
                pred = learner.predict(X_val)
                val_score = float(np.mean(pred == y_val)) if y_val is not None else \
                    float(np.mean(S_val[np.arange(len(pred)), pred] > 0))
                scores.append(val_score)
            if self.correction_epoch_ is None and epoch >= lo and (
                    (scores and should_start_correction(scores, self.window, self.slope_epochs))
                    or (hi is not None and epoch >= hi)):
                self.correction_epoch_ = epoch
            n_fixed = 0
            correcting = self.correction_epoch_ is not None and epoch >= self.correction_epoch_
            if correcting and merge and epoch == self.correction_epoch_:
                # the curve has done its job: its rows join training (and correction)
                learner.add_rows(X[val], S[val])
                train = np.concatenate([train, val])
                self.train_rows_ = train
                y_tr = None if y_true is None else np.asarray(y_true)[train]
            if correcting:
                views = [learner.view_proba(seed=epoch * 2 + v, kind=kind) for v in range(2)]
                rows, labels, probs = detect_noisy(learner.current_candidates, views, self.delta)
                learner.add_candidates(rows, labels, probs)
                n_fixed = len(rows)
            cur = learner.current_candidates
            truth = None if y_tr is None else float(cur[np.arange(len(cur)), y_tr].mean())
            self.diagnostics_.append(EpochRecord(epoch, "correct" if correcting else "warmup",
                                                 val_score, n_fixed, float(cur.sum(1).mean()), truth))
        self.learner_ = learner.end()
        self.candidates_ = self.learner_.candidates_
        self.classes_ = self.learner_.classes_
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self.learner_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        return self.learner_.predict(X)

    def diagnostics_table(self) -> list[dict]:
        return [asdict(r) for r in self.diagnostics_]
