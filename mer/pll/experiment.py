"""One noisy partial-label experiment: split, corrupt, train the learners, score — shared by
``python -m mer.pll`` and ``bench/pll.py``.

Protocol: a stratified train/test split of a labelled feature set (``test_size``, seeded); the
training labels become candidate sets by the ARNet/IRNet protocol (``q``, ``eta``, same seed);
every learner trains on the candidate sets only; accuracy is measured on the untouched test
labels. ARNet's correction start is chosen on a validation split carved from the *training* rows
(their candidate sets, no true labels), which joins training once correction starts; the test
split is never used before the final score. ``arnet_base="auto"`` (default) picks the learner ARNet
wraps from the training candidate sets alone (:func:`mer.pll.arnet.choose_base`: PiCO while sets
cover at most half the classes on average, PRODEN above).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split

from mer.pll.arnet import ARNetRefiner, choose_base
from mer.pll.candidates import candidate_stats, noisy_candidates
from mer.pll.datasets import FeatureSet
from mer.pll.learners import build_learner

METHODS = ("cc", "proden", "pico", "arnet")


@dataclass
class Result:
    dataset: str
    q: float
    eta: float
    seed: int
    accuracy: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    truth_before: float = float("nan")
    truth_after: float = float("nan")
    size_before: float = float("nan")
    size_after: float = float("nan")
    correction_epoch: int | None = None
    arnet_base: str | None = None
    n_corrected: int = 0


def run_setting(fs: FeatureSet, dataset: str, q: float, eta: float, seed: int,
                methods=METHODS, epochs: int = 100, test_size: float = 0.3,
                learner_params: dict | None = None, arnet_params: dict | None = None,
                arnet_base: str = "auto") -> Result:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    Xtr, Xte, ytr, yte = train_test_split(fs.X, fs.y, test_size=test_size, random_state=seed,
                                          stratify=fs.y)
    S = noisy_candidates(ytr, len(fs.classes), q, eta, seed)
    res = Result(dataset, q, eta, seed)
    before = candidate_stats(S, ytr)
    res.truth_before, res.size_before = before.contains_truth, before.avg_size
    if arnet_base == "auto":  # decided on the training candidate sets only
        arnet_base = choose_base(S)
    params = {"epochs": epochs, "seed": seed, **(learner_params or {})}
    for m in methods:
        t = time.perf_counter()
        if m == "arnet":
            base = build_learner(arnet_base, **params)
            est = ARNetRefiner(base, epochs=epochs, seed=seed, **(arnet_params or {}))
            est.fit(Xtr, S, y_true=ytr)
            rows = est.train_rows_
            after = candidate_stats(est.candidates_, ytr[rows])
            res.truth_before = candidate_stats(S[rows], ytr[rows]).contains_truth
            res.size_before = float(S[rows].sum(1).mean())
            res.truth_after, res.size_after = after.contains_truth, after.avg_size
            res.correction_epoch = est.correction_epoch_
            res.arnet_base = arnet_base
            res.n_corrected = int(sum(r.n_corrected for r in est.diagnostics_))
        else:
            est = build_learner(m, **params).fit(Xtr, S)
        res.accuracy[m] = float(np.mean(est.predict(Xte) == yte))
        res.seconds[m] = time.perf_counter() - t
    return res
