"""Partial-label track (``track=pll``): learn the discrete classes from candidate sets.

Candidate sets (``track.candidates``) for the labelled training rows:

``generated``  the ARNet/IRNet protocol on the true training labels (``q``: each wrong label joins
               with probability q; ``eta``: the truth is swapped out with probability eta);
               ``candidate_seed`` null = each seed of ``train.seeds`` draws its own sets;
``votes``      every class an annotator voted for (``Sample.meta["votes"]``; a dataset whose recipe
               records no votes is refused with the list of those that do);
``ov_words``   open-vocabulary words (``track.gold``, or the demo's derived OV labels, see
               ``mer/tracks/ov.py``) mapped to classes through the offline grouper's synonym
               families (:data:`FAMILY_CLASS`); only those samples are used.

Features: :class:`mer.tracks._common.FlatFeatures` (the run's streams, standardised, absent
streams zero plus presence indicators). Learner ``track.learner`` (cc | proden | pico | auto: chosen from the training folds' candidate
sets by :func:`mer.pll.arnet.choose_base`), refiner
``track.refine`` (arnet | none); with ARNet the learner alone is also run (``track.baseline``).

Protocol: seeded stratified K folds (``train.n_folds``, one split per seed, the same folds for every
method, :func:`mer.training.cv.stratified_folds`);
each method is fitted on the training folds' candidate sets only and scored on the held-out fold
against the TRUE labels (accuracy, weighted F1). ARNet's correction start is chosen on a
validation split carved out of the training folds (their candidate sets, no true labels): the
scored fold is never passed to ``fit``. Contains-truth and set size are measured on the rows ARNet
trained on, before and after refinement. Test splits are predicted by the mean of the fold models'
probabilities (over folds and seeds) and written as ``track.submission_schema`` files.

Outputs: ``pll_scores.csv`` (per method, seed, fold), ``pll_epochs.csv`` + ``pll_epochs.png``
(per-epoch set size, contains-truth, corrections, validation curve), predictions, submissions;
MLflow metrics per epoch (``pll_<method>_avg_size``, ``pll_<method>_contains_truth``, step = epoch).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from mer.evaluation.metrics import accuracy, weighted_f1
from mer.ov.groupers import OfflineGrouper
from mer.pll.arnet import ARNetRefiner, choose_base
from mer.pll.candidates import candidate_stats, candidates_from_votes, candidates_from_words, noisy_candidates
from mer.pll.learners import build_learner
from mer.tracks._common import FlatFeatures, mean_std, safe_name
from mer.tracks.base import STRATEGIES, Strategy, TrackData, TrackOutcome
from mer.tracks.ov import load_ov_gold
from mer.training.cv import stratified_folds
from mer.training.data import Split
from submissions.validate import validate_submission
from submissions.writers import write_submission

log = logging.getLogger("mer")

CANDIDATE_SOURCES = ("generated", "votes", "ov_words")
DATASETS_WITH_VOTES: tuple[str, ...] = ()
"""Layouts whose recipe records annotators' votes per sample (``Sample.meta["votes"]``)."""
FAMILY_CLASS = {"happy": "happy", "angry": "angry", "sad": "sad", "worried": "worried",
                "surprised": "surprise", "relaxed": "neutral", "neutral": "neutral"}
"""Offline grouper family head -> MER class, for ``candidates: ov_words``."""


def make_candidates(ctx, samples: list, y: np.ndarray, seed: int) -> tuple[list, np.ndarray, np.ndarray]:
    """``(samples, y, S)``; ``ov_words`` keeps only the samples with OV labels."""
    t, classes = ctx.cfg.track, list(ctx.manifest.label_spec.classes)
    source = str(t.candidates)
    if source == "generated":
        cseed = seed if t.get("candidate_seed") is None else int(t.candidate_seed)
        return samples, y, noisy_candidates(y, len(classes), float(t.q), float(t.eta), cseed)
    if source == "votes":
        votes = [s.meta.get("votes") for s in samples]
        if not any(votes):
            have = ", ".join(DATASETS_WITH_VOTES) or "none of the bundled recipes"
            raise SystemExit(f"track.candidates=votes: {ctx.manifest.dataset} records no annotator votes "
                             f"(Sample.meta['votes']); datasets with votes: {have}. Use "
                             f"track.candidates=generated or ov_words.")
        keep = [i for i, v in enumerate(votes) if v]
        return ([samples[i] for i in keep], y[keep],
                candidates_from_votes([votes[i] for i in keep], classes, [samples[i].name for i in keep]))
    if source == "ov_words":
        gold, _ = load_ov_gold(ctx)
        keep = [i for i, s in enumerate(samples) if s.name in gold]
        if not keep:
            raise SystemExit("track.candidates=ov_words: no labelled training sample has OV words")
        key = OfflineGrouper().key
        words = [gold[samples[i].name] for i in keep]
        table = {w.lower().strip(): FAMILY_CLASS[key(w)] for ws in words for w in ws if key(w) in FAMILY_CLASS}
        return ([samples[i] for i in keep], y[keep],
                candidates_from_words(words, table, classes, names=[samples[i].name for i in keep]))
    raise SystemExit(f"track.candidates={source}; known: {', '.join(CANDIDATE_SOURCES)}")


def _fit(method: str, ctx, X, S, y, seed: int) -> tuple[Any, list[dict], dict[str, Any]]:
    """Fit one method on training-fold rows; returns (model, per-epoch rows, set stats)."""
    t = ctx.cfg.track
    epochs = int(t.epochs)
    name = str(t.learner)
    if name == "auto":                  # from the training folds' candidate sets alone

        name = choose_base(S)
    learner = build_learner(name, epochs=epochs, seed=seed, **dict(t.get("learner_params") or {}))
    before = candidate_stats(S, y)
    if method.endswith("+arnet"):
        est = ARNetRefiner(learner, epochs=epochs, seed=seed, **dict(t.get("arnet") or {}))
        est.fit(X, S, y_true=y)          # X, S: training folds only; validation carved out inside
        rows = est.train_rows_
        b = candidate_stats(S[rows], y[rows])
        a = candidate_stats(est.candidates_, y[rows])
        stats = {"truth_before": b.contains_truth, "size_before": b.avg_size, "truth_after": a.contains_truth,
                 "size_after": a.avg_size, "correction_epoch": est.correction_epoch_,
                 "n_corrected": int(sum(r.n_corrected for r in est.diagnostics_)), "learner": name}
        return est, est.diagnostics_table(), stats
    learner.begin(X, S)
    epochs_rows = []
    for e in range(1, epochs + 1):
        loss = learner.train_epoch()
        epochs_rows.append({"epoch": e, "phase": "train", "val_score": float("nan"), "n_corrected": 0,
                            "avg_size": before.avg_size, "contains_truth": before.contains_truth, "loss": loss})
    learner.end()
    stats = {"truth_before": before.contains_truth, "size_before": before.avg_size,
             "truth_after": before.contains_truth, "size_after": before.avg_size}
    return learner, epochs_rows, stats


@STRATEGIES.register("partial_label")
class PartialLabelStrategy(Strategy):
    """``track=pll`` (module docstring): partial-label learners, alone and refined by ARNet,
    cross-validated on seeded stratified folds of the training rows, scored against the true
    labels; the test splits predicted by the fold models' mean."""

    name = "partial_label"

    def methods(self, t) -> list[str]:
        if str(t.refine) not in ("arnet", "none"):
            raise SystemExit(f"track.refine={t.refine}; known: arnet, none")
        methods = [str(t.learner)]
        if str(t.refine) == "arnet":
            methods = ([methods[0]] if t.get("baseline", True) else []) + [f"{t.learner}+arnet"]
        return methods

    def prepare(self, ctx) -> TrackData:
        cfg, manifest, bundle = ctx.cfg, ctx.manifest, ctx.bundle
        t = cfg.track
        classes = list(manifest.label_spec.classes)
        methods = self.methods(t)
        flat = FlatFeatures().fit(bundle.take([s.name for s in ctx.train_samples()]))
        X_all = flat.transform(bundle)
        row = {n: i for i, n in enumerate(bundle.names)}
        n_folds = int(cfg.train.n_folds)
        base = ctx.train_samples()
        y0 = np.array([classes.index(s.discrete) for s in base])
        candidates, cand_info = {}, {}
        for seed in [int(s) for s in cfg.train.seeds]:
            samples, y, S = make_candidates(ctx, base, y0, seed)
            st = candidate_stats(S, y)
            cand_info[f"seed{seed}"] = {"n": len(y), "avg_size": st.avg_size, "contains_truth": st.contains_truth}
            log.info("PLL seed %d: %s candidates, %s", seed, t.candidates, st)
            if len(y) < 2 * n_folds:
                raise SystemExit(f"{len(y)} training rows are too few for {n_folds} folds")
            candidates[seed] = (samples, y, S)
        names = [s.name for s in base]
        train = Split(bundle.take(names), y0, np.full(len(names), np.nan, np.float32))
        return TrackData(train, {}, extras=dict(
            classes=classes, methods=methods, flat=flat, X_all=X_all, row=row, candidates=candidates,
            cand_info=cand_info, test_names={sp: [s.name for s in manifest.split(sp)] for sp in manifest.test_splits}))

    def evaluate(self, ctx, data: TrackData) -> dict[str, Any]:
        """Every method on every fold of every seed; ``on_fold`` hears the fold's scores (``acc``,
        ``wf1``: the submitted method's, and each method's as ``<method>_acc``...)."""
        e, cfg = data.extras, ctx.cfg
        classes, methods, X_all, row = e["classes"], e["methods"], e["X_all"], e["row"]
        n_folds = int(cfg.train.n_folds)
        test_probs = {m: {sp: np.zeros((len(v), len(classes))) for sp, v in e["test_names"].items()} for m in methods}
        n_models = 0
        score_rows, epoch_rows, oof_frames = [], [], []
        for seed, (samples, y, S) in e["candidates"].items():
            X = X_all[[row[s.name] for s in samples]]
            oof = {m: np.zeros((len(y), len(classes))) for m in methods}
            for fold, (tr, va) in enumerate(stratified_folds(y, n_folds, seed)):
                record: dict[str, Any] = {"seed": seed, "fold": fold, "n_train": len(tr), "n_val": len(va)}
                for m in methods:
                    est, epochs, stats = _fit(m, ctx, X[tr], S[tr], y[tr], seed)
                    p = est.predict_proba(X[va])
                    oof[m][va] = p
                    acc, wf1 = accuracy(y[va], p.argmax(1)), weighted_f1(y[va], p.argmax(1))
                    score_rows.append({"method": m, "seed": seed, "fold": fold, "n_train": len(tr), "n_val": len(va),
                                       "acc": acc, "wf1": wf1, **stats})
                    record.update({f"{m}_acc": acc, f"{m}_wf1": wf1, "acc": acc, "wf1": wf1})
                    epoch_rows += [{"method": m, "seed": seed, "fold": fold, **r} for r in epochs]
                    for sp, names in e["test_names"].items():
                        if names:
                            test_probs[m][sp] += est.predict_proba(X_all[[row[n] for n in names]])
                n_models += 1
                if ctx.on_fold is not None:
                    ctx.on_fold(record)       # acc/wf1: the last method's, the one submitted
            frame = pd.DataFrame({"name": [s.name for s in samples], "seed": seed,
                                  "true": [classes[i] for i in y],
                                  "candidates": ["|".join(classes[j] for j in np.flatnonzero(r)) for r in S]})
            for m in methods:
                frame[f"pred_{m}"] = [classes[i] for i in oof[m].argmax(1)]
                score_rows.append({"method": m, "seed": seed, "fold": "oof", "acc": accuracy(y, oof[m].argmax(1)),
                                   "wf1": weighted_f1(y, oof[m].argmax(1))})
            oof_frames.append(frame)
        return {"scores": pd.DataFrame(score_rows), "epochs": pd.DataFrame(epoch_rows), "oof": oof_frames,
                "test_probs": test_probs, "n_models": n_models}

    def write_outputs(self, ctx, data: TrackData, evaluation: Mapping[str, Any]) -> TrackOutcome:
        cfg, manifest, out, e = ctx.cfg, ctx.manifest, ctx.out, data.extras
        t = cfg.track
        classes, methods = e["classes"], e["methods"]
        main_method = methods[-1]
        scores, epochs_df = evaluation["scores"], evaluation["epochs"]
        scores.to_csv(out / "pll_scores.csv", index=False)
        epochs_df.to_csv(out / "pll_epochs.csv", index=False)
        (out / "predictions").mkdir(exist_ok=True)
        pd.concat(evaluation["oof"]).to_csv(out / "predictions" / "train-oof.csv", index=False)

        rows, metrics = [], {}
        folds = scores[scores.fold != "oof"]
        for m in methods:
            f = folds[folds.method == m]
            per_seed = scores[(scores.method == m) & (scores.fold == "oof")]
            mk = safe_name(m.replace("+", "_"))
            r = {"method": m, "candidates": str(t.candidates)}
            for k in ("acc", "wf1"):
                mu, sd = mean_std(per_seed[k].tolist())
                r[f"cv_{k}"] = f"{mu:.4f}" + (f" ± {sd:.4f}" if len(per_seed) > 1 else "")
                metrics[f"pll_{mk}_cv_{k}"] = mu
            for k in ("truth_before", "truth_after", "size_before", "size_after"):
                mu = mean_std(f[k].tolist())[0]
                r[k] = f"{mu:.3f}"
                metrics[f"pll_{mk}_{k}"] = mu
            if "correction_epoch" in f and f.correction_epoch.notna().any():
                r["correction_epoch"] = f"{f.correction_epoch.astype(float).mean():.1f}"
                metrics[f"pll_{mk}_correction_epoch"] = float(f.correction_epoch.astype(float).mean())
            rows.append(r)
            per_epoch = epochs_df[epochs_df.method == m].groupby("epoch")[["avg_size", "contains_truth",
                                                                            "n_corrected"]].mean()
            for ep, vals in per_epoch.iterrows():
                ctx.tracker.log_metrics({f"pll_{mk}_{k}": float(v) for k, v in vals.items() if np.isfinite(v)},
                                        step=int(ep))
        mk = safe_name(main_method.replace("+", "_"))
        metrics["cv_acc"], metrics["cv_wf1"] = metrics[f"pll_{mk}_cv_acc"], metrics[f"pll_{mk}_cv_wf1"]
        plot_epochs(epochs_df, out / "pll_epochs.png",
                    title=f"{manifest.dataset}: {t.candidates} candidates"
                          + (f" (q={t.q}, eta={t.eta})" if str(t.candidates) == "generated" else ""))

        subs: dict[str, Path] = {}
        schema = str(t.get("submission_schema", "generic"))
        for sp, names in e["test_names"].items():
            if not names:
                continue
            probs = evaluation["test_probs"][main_method][sp] / max(evaluation["n_models"], 1)
            pred = probs.argmax(1)
            df = pd.DataFrame({"name": names, "discrete": [classes[i] for i in pred],
                               **{f"p_{c}": probs[:, j] for j, c in enumerate(classes)}})
            df.to_csv(out / "predictions" / f"{sp}.csv", index=False)
            truth = [manifest[n].discrete for n in names]
            if all(d is not None for d in truth):          # labelled test split (the demo): scored
                yt = np.array([classes.index(d) for d in truth])
                metrics[f"test_{sp}_acc"] = accuracy(yt, pred)
                metrics[f"test_{sp}_wf1"] = weighted_f1(yt, pred)
            path = write_submission(schema, df[["name", "discrete"]], out / "submissions" / f"pll-{sp}.csv",
                                    expected_names=names, classes=classes)
            problems = validate_submission(path, schema, names=names, classes=classes)
            if problems:
                raise RuntimeError(f"submission {path} failed validation: {problems}")
            subs[f"pll-{sp}"] = path
        summary = {"pll": {"methods": methods, "submitted": main_method, "candidates": str(t.candidates),
                           "candidate_sets": e["cand_info"], "features": e["flat"].describe(),
                           "seeds": [int(s) for s in cfg.train.seeds], "n_folds": int(cfg.train.n_folds),
                           "folds": "stratified on the true class"}}
        return TrackOutcome(rows, metrics, subs, summary,
                            [out / "pll_scores.csv", out / "pll_epochs.csv", out / "pll_epochs.png"])


def plot_epochs(df: pd.DataFrame, path: Path, title: str = "") -> None:
    """Average candidate-set size and contains-truth rate per epoch (mean over folds and seeds)."""
    import matplotlib  # deferred: loads matplotlib only when used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: loads matplotlib only when used

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for m, g in df.groupby("method", sort=False):
        per = g.groupby("epoch")[["avg_size", "contains_truth"]].mean()
        axes[0].plot(per.index, per.avg_size, label=m)
        axes[1].plot(per.index, per.contains_truth, label=m)
        if "phase" in g and (g.phase == "correct").any():
            start = g[g.phase == "correct"].groupby(["seed", "fold"]).epoch.min().mean()
            for ax in axes:
                ax.axvline(start, ls=":", c="grey")
    axes[0].set(xlabel="epoch", ylabel="average candidate-set size")
    axes[1].set(xlabel="epoch", ylabel="contains truth")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title + "  (dotted: mean correction start)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
