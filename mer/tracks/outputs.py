"""What a supervised-family run writes: per-sample predictions (out of fold and per test split),
the per-class table and confusion matrix, the folds, the submissions (validated as written), the
results table's rows and the tracked metrics, and the robustness curve."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from mer.data.manifest import Manifest
from mer.evaluation.reports import fusion_label, per_class_table, plot_confusion_matrix, plot_robustness_curve
from mer.evaluation.scoring import score_outputs, score_predictions
from mer.training.cv import MultiSeedResult, Predictions
from mer.training.data import Split
from submissions.validate import validate_submission
from submissions.writers import write_submission

from .base import TrackData
from .data import VALENCE_ONLY_METRIC

log = logging.getLogger("mer")


def fmt_mean_std(mean: float, std: float, n: int) -> str:
    """``0.4169 ± 0.0023`` over ``n`` seeds; the mean alone for one."""
    return f"{mean:.4f}" if n == 1 else f"{mean:.4f} ± {std:.4f}"


def predictions_frame(manifest: Manifest, preds: Predictions) -> pd.DataFrame:
    """``name, discrete[, valence][, arousal], p_<class>...``; sentiment data: ``name, valence``."""
    spec = manifest.label_spec
    classes = spec.classes if spec.has_discrete else ()
    df = pd.DataFrame({"name": preds.names})
    if classes:
        df["discrete"] = [classes[i] for i in preds.probs.argmax(1)]
    if preds.valence is not None:
        df["valence"] = np.clip(preds.valence, *spec.valence_range)
    if "arousal" in preds.extra:
        df["arousal"] = np.clip(preds.extra["arousal"], *spec.valence_range)
    for i, c in enumerate(classes):
        df[f"p_{c}"] = preds.probs[:, i]
    return df


def frame_predictions(preds: Predictions, classes) -> pd.DataFrame:
    """Per-frame predictions in long form (``name, step, discrete``) over each sample's real steps
    of the reference stream (steps past a sample's length carry all-zero probabilities)."""
    fp = preds.extra["frame_probs"]
    real = fp.sum(-1) > 0
    rows, steps = np.nonzero(real)
    return pd.DataFrame({"name": [preds.names[i] for i in rows], "step": steps,
                         "discrete": [classes[k] for k in fp[rows, steps].argmax(-1)]})


def write_submissions(cfg: DictConfig, manifest: Manifest, tests: Mapping[str, Predictions], out_dir: Path,
                      subdir: str = "submissions") -> dict[str, Path]:
    """The validated submission files of ``data.submissions`` from a model's test predictions."""
    if manifest.label_spec.valence_only:
        if cfg.data.get("submissions"):
            log.info("sentiment data: no submission file (the schemas need a discrete column); the valences "
                     "are in predictions/<split>.csv")
        return {}
    return write_submission_frames(cfg, manifest, {sp: predictions_frame(manifest, p) for sp, p in tests.items()},
                                   out_dir, subdir)


def write_submission_frames(cfg: DictConfig, manifest: Manifest, frames: Mapping[str, pd.DataFrame],
                            out_dir: Path, subdir: str = "submissions") -> dict[str, Path]:
    """The validated submission files of ``data.submissions`` from per-split prediction tables
    (``name, discrete[, valence]``; other columns are ignored), one per configured track."""
    written: dict[str, Path] = {}
    if manifest.label_spec.valence_only:
        return written
    target = out_dir / subdir
    target.mkdir(parents=True, exist_ok=True)
    for track, sub in (cfg.data.get("submissions") or {}).items():
        if sub.split not in frames:
            continue
        df = frames[sub.split]
        cols = ["name", "discrete"] + (["valence"] if "valence" in df else [])
        expected = [s.name for s in manifest.split(sub.split)]
        path = write_submission(sub.schema, df[cols], target, expected_names=expected,
                                classes=list(manifest.label_spec.classes))
        problems = validate_submission(path, sub.schema, names=expected, classes=list(manifest.label_spec.classes))
        if problems:
            raise RuntimeError(f"submission {path} failed validation: {problems}")
        written[track] = path
    return written


def score_tests(preds: Mapping[str, Predictions], tests: Mapping[str, Split]) -> dict[str, float]:
    """``{<split>_<metric>: value}`` of the ensembled test predictions, for splits with labels."""
    out: dict[str, float] = {}
    for sp, p in preds.items():
        sc = score_outputs(tests[sp].y, p.outputs(), tests[sp].v, tests[sp].targets, tests[sp].valence_range)
        out.update({f"{sp}_{k}": v for k, v in sc.items()})
    return out


TABLE_SENTIMENT = ("non0_acc2", "non0_f1", "has0_acc2", "acc7", "mae", "corr")
"""Sentiment scores the printed table shows (every one is in ``results.json``)."""


def ensemble_oof_scores(result: MultiSeedResult, train: Split) -> dict[str, float]:
    """Scores of the seed ensemble's out-of-fold predictions (each row's prediction is the mean
    over seeds of a model that never saw it): the honest figure of what the test prediction, an
    ensemble over folds and seeds, does."""
    ens = result.oof_predictions()
    known = (train.y >= 0) | (np.isfinite(train.v) if train.valence_range is not None else False)
    out = {k: v[known] for k, v in ens.outputs().items()}
    return score_outputs(train.y[known], out, train.v[known], {k: t[known] for k, t in train.targets.items()},
                         train.valence_range)


def results_row(ablation: Mapping[str, Any], fusion: str, n_seeds: int) -> dict[str, str]:
    """One line of the printed table: CV mean (± std over seeds) and the test scores."""
    mods, summ = ablation["modalities"], ablation["cv"]
    row = {"modalities": "+".join(mods), "strategy": ablation.get("strategy", "supervised"),
           "fusion": fusion_label(mods, fusion)}
    for k in ("wf1", "acc", "mse", "combined", *TABLE_SENTIMENT):
        if f"cv_{k}" in summ:
            row[f"cv_{k}"] = fmt_mean_std(summ[f"cv_{k}"]["mean"], summ[f"cv_{k}"]["std"], n_seeds)
    for k in ("wf1", "combined"):       # the official protocol's figure: best epoch on the scored fold
        if f"official_{k}" in summ and f"cv_{k}" in summ:
            row[f"official_{k}"] = fmt_mean_std(summ[f"official_{k}"]["mean"], summ[f"official_{k}"]["std"], n_seeds)
    for k in ("wf1", "combined"):       # the linear floor on the same folds (the blend's linear half)
        if f"linear_{k}" in summ:
            row[f"linear_{k}"] = fmt_mean_std(summ[f"linear_{k}"]["mean"], summ[f"linear_{k}"]["std"], n_seeds)
    for k, v in (ablation.get("ensemble_oof") or {}).items():   # the fold x seed ensemble, out of fold
        if k in ("wf1", "combined", *TABLE_SENTIMENT[:2]):
            row[f"ens_oof_{k}"] = f"{v:.4f}"
    for k, ms in summ.items():          # out-of-fold scores of corrupted copies of the training clips
        if k.startswith("oof_") and k.endswith(("_wf1", "_combined")) and k.count("_") > 1:
            row[k] = fmt_mean_std(ms["mean"], ms["std"], n_seeds)
    row.update({k: f"{v:.4f}" for k, v in ablation["test"].items()
                if k.endswith(("_wf1", "_combined", "_non0_acc2", "_non0_f1", "_mae"))})
    return row


def cv_label(modalities, fusion: str, baseline: str | None = None) -> str:
    """The progress bar's name for one CV of a run: ``text+audio | attention``, ``text | -``, and
    ``... (supervised baseline)`` for the comparison a track asks for."""
    mods = list(modalities)
    label = f"{'+'.join(mods)} | {fusion_label(mods, fusion)}"
    return f"{label} ({baseline} baseline)" if baseline else label


def run_metrics(ablation: list[Mapping[str, Any]], n_seeds: int) -> dict[str, float]:
    """Tracked metrics: the fused setting's CV (and std over seeds) and test scores, plus each
    single modality's CV headline."""
    fused = ablation[-1]
    metrics: dict[str, float] = {}
    for k, ms in fused["cv"].items():
        metrics[k] = ms["mean"]
        if n_seeds > 1:
            metrics[f"{k}_std"] = ms["std"]
    metrics.update({f"test_{k}": v for k, v in fused["test"].items()})
    metrics.update({f"ens_oof_{k}": v for k, v in (fused.get("ensemble_oof") or {}).items()})
    for abl in ablation[:-1]:
        name = "-".join(abl["modalities"])          # MLflow names admit no "+"
        metrics.update({f"unimodal_{name}_{k}": v["mean"] for k, v in abl["cv"].items()
                        if k in {"cv_wf1", "cv_combined", f"cv_{VALENCE_ONLY_METRIC}"}})
    return metrics


def write_predictions(out: Path, manifest: Manifest, train: Split, oof: Predictions,
                      tests: Mapping[str, Predictions], modalities: list[str]) -> Path:
    """Per-sample predictions (out-of-fold and per test split), the per-class table and the
    confusion matrix of the out-of-fold predictions."""
    classes = list(manifest.label_spec.classes)
    pred_dir = out / "predictions"
    pred_dir.mkdir(exist_ok=True)
    oof_df = predictions_frame(manifest, oof)
    if manifest.label_spec.valence_only:
        oof_df.insert(1, "true_valence", train.v)
    else:
        oof_df.insert(1, "true", [classes[i] for i in train.y])
    oof_df.to_csv(pred_dir / f"{manifest.train_split}-oof.csv", index=False)
    for sp, p in tests.items():
        predictions_frame(manifest, p).to_csv(pred_dir / f"{sp}.csv", index=False)
        if "frame_probs" in p.extra:
            frame_predictions(p, classes).to_csv(pred_dir / f"{sp}-frames.csv", index=False)
    if manifest.label_spec.valence_only:
        return pred_dir
    y_oof = oof.probs.argmax(1)
    per_class_table(train.y, y_oof, classes).to_csv(out / "per_class_cv.csv")
    plot_confusion_matrix(train.y, y_oof, classes, out / "confusion_matrix_cv.png",
                          title=f"{manifest.dataset} CV (out-of-fold), {'+'.join(modalities)}")
    return pred_dir


def record_folds(out: Path, train: Split, result: MultiSeedResult, protocol: str) -> dict[str, Any]:
    """``folds.csv`` (``name, group, seed, fold``: the fold each training row is held out in, per
    seed) and the summary ``results.json`` and MLflow keep: protocol, folds, groups and a digest
    of the assignment (two runs with one digest cross-validated on the same folds)."""
    rows = []
    for r in result.runs:
        fold_of = np.full(len(train), -1, np.int64)
        for k, va in enumerate(r.fold_val):
            fold_of[va] = k
        rows += [{"name": n, "group": None if train.groups is None else train.groups[i], "seed": r.seed,
                  "fold": int(fold_of[i])} for i, n in enumerate(train.names)]
    frame = pd.DataFrame(rows, columns=["name", "group", "seed", "fold"])
    frame.to_csv(out / "folds.csv", index=False)
    record: dict[str, Any] = {"protocol": protocol, "n_folds": len(result.runs[0].fold_val),
                              "n_groups": 0 if train.groups is None else len(set(train.groups)),
                              "assignment_sha1": hashlib.sha1(frame.to_csv(index=False).encode()).hexdigest()[:12]}
    if train.groups is not None:
        first = result.runs[0]
        record["held_out_groups"] = [sorted({str(train.groups[i]) for i in va}) for va in first.fold_val]
    return record


def robustness_outputs(out: Path, manifest: Manifest, data: TrackData, plan: Mapping[str, Any],
                       results: Mapping[str, MultiSeedResult]) -> dict[str, dict[str, float]]:
    """Weighted F1 per corruption condition of each result: ``robustness_curve.csv`` and the plot."""
    curves = {label: robustness_curve(res, data, plan["split"], plan["conditions"], manifest.train_split)
              for label, res in results.items()}
    rows = [{"model": label, "condition": c, "wf1": v} for label, pts in curves.items() for c, v in pts.items()]
    pd.DataFrame(rows).to_csv(out / "robustness_curve.csv", index=False)
    where = "out-of-fold" if plan["split"] == manifest.train_split else "fold ensemble"
    plot_robustness_curve(curves, out / "robustness_curve.png",
                          title=f"{manifest.dataset} {plan['split']} ({where}): weighted F1 under corruption")
    return curves


def robustness_curve(result, data: TrackData, split: str, conditions: Sequence[str], train_split: str,
                     metric: str = "wf1") -> dict[str, float]:
    """``{'clean': score, '<condition>': score, ...}`` of ``result`` on ``split``: the fold
    ensemble's test predictions of ``split`` and of its probes ``<split>@<condition>``, or the
    pooled out-of-fold predictions of the training split and its views."""
    if split == train_split:
        summary = result.summary()
        out = {"clean": summary[f"oof_{metric}"]["mean"]}
        out.update({c: summary[f"oof_{c}_{metric}"]["mean"] for c in conditions
                    if f"oof_{c}_{metric}" in summary})
        return out
    preds = result.test_predictions()

    def score(s: Split, name: str) -> float | None:
        p = preds.get(name)
        if p is None:
            return None
        return score_predictions(s.y, p.probs, s.v, p.valence).get(metric)

    out = {"clean": score(data.tests[split], split)}
    for c in conditions:
        probe = data.probes.get(f"{split}@{c}")
        if probe is not None:
            out[c] = score(probe, f"{split}@{c}")
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}
