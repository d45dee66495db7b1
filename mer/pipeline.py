"""``run(cfg) -> RunResult``: the whole way from a dataset to scores, submissions and a tracked run.

raw dataset -> manifest -> feature cache (filled where missing) -> FeatureBundle -> strategy +
fusion estimator over seeded folds -> official metrics -> submission files -> MLflow.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from mer.features import apply_asr_config, fill_options, fill_stream, plan_streams
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.data.manifest import Manifest, label_arrays
from mer.data.recipes import prepare
from mer.evaluation.scoring import score_predictions
from mer.tracking import build_tracker, git_commit
from mer.training.cv import MultiSeedResult, Predictions, run_seeds
from mer.training.data import Split
from mer.training.estimator import FusionEstimator, resolve_device
from mer.tracks.base import build_strategy

log = logging.getLogger("mer")


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, float]
    table: str
    submissions: dict[str, Path] = field(default_factory=dict)
    run_id: str | None = None
    tracking_uri: str | None = None
    ablation: list[dict[str, Any]] = field(default_factory=list)


def plain(node: Any) -> dict[str, Any]:
    """A config node (or None) as a plain dict, interpolations resolved."""
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


# --- data -----------------------------------------------------------------------------------
def load_manifest(cfg: DictConfig) -> Manifest:
    data = cfg.data
    options = plain(data.get("options"))
    options.setdefault("dataset", str(data.name))
    if data.name == "demo" and not data.root:
        from mer.data.demo import demo_corpus

        d = data.demo
        root = demo_corpus(Path(cfg.paths.cache_dir), seed=int(d.seed), n_train=int(d.n_train),
                           n_per_test=int(d.n_per_test), progress=bool(cfg.progress))
    elif not data.root:
        raise SystemExit(f"data={data.name} needs the dataset's folder: add data.root=/path/to/{data.name} "
                         f"(layout {data.layout!r}); or run the demo with `python -m mer.run`.")
    else:
        root = Path(str(data.root)).expanduser()
        if not root.is_dir():
            raise SystemExit(f"data.root={root} is not a folder")
    return prepare(data.layout, root, **options)


def dataset_cache_id(cfg: DictConfig, manifest: Manifest) -> str:
    """Cache folder of a dataset: its name plus a short hash of its root, so two copies never mix."""
    if cfg.data.get("cache_id"):
        return str(cfg.data.cache_id)
    root = os.path.abspath(manifest.root or "")
    return f"{cfg.data.name}-{hashlib.sha1(root.encode()).hexdigest()[:8]}"


# --- features -------------------------------------------------------------------------------
def build_features(cfg: DictConfig, manifest: Manifest, device: str, condition: str = "clean"
                   ) -> tuple[FeatureBundle, dict[str, Any], list[dict]]:
    names = manifest.names()
    mods: dict[str, ModalityFeatures] = {}
    info: dict[str, Any] = {}
    failures: list[dict] = []
    opts = fill_options(cfg)
    dataset_id = dataset_cache_id(cfg, manifest)
    manifest, asr_tag = apply_asr_config(cfg, manifest, dataset_id, condition)
    text_condition = f"{condition}+{asr_tag}" if asr_tag else None
    for s in plan_streams(cfg, manifest, dataset_id, condition, text_condition):
        stream, entry, name = s.stream, s.entry, s.extractor.name
        t0 = time.perf_counter()
        report = fill_stream(s, manifest.samples, device=device, progress=bool(cfg.progress), opts=opts)
        X, present = entry.load_matrix(names)
        fails = entry.failures()
        for n in names:
            if n in fails:
                f = fails[n]
                failures.append({"stream": stream, "modality": s.modality, "extractor": name, "name": n,
                                 "reason": f.reason, "message": f.message})
        mods[stream] = ModalityFeatures(X, present, source=entry.path.name)
        info[stream] = {"extractor": name, "modality": s.modality, "cache_key": entry.key,
                        "entry": str(entry.path), "dim": int(X.shape[1]), "present": int(present.sum()),
                        "total": len(names), "extracted_now": report.extracted, "from_cache": report.cached,
                        "seconds": round(time.perf_counter() - t0, 2)}
        absent = len(names) - int(present.sum())
        log.info("%s: %s, dim %d, %d/%d samples (%d extracted now, %d from cache)%s", stream, name,
                 X.shape[1], present.sum(), len(names), report.extracted, report.cached,
                 f"; {absent} without a feature are masked (see failures.jsonl)" if absent else "")
    if not mods:
        raise SystemExit("no modality has features: check features/text, features/audio, features/visual "
                         "and that the dataset has the inputs they need")
    return FeatureBundle(names, mods), info, failures


# --- training -------------------------------------------------------------------------------
def resolve_metric(cfg: DictConfig, manifest: Manifest) -> str:
    metric = cfg.track.get("metric", "auto")
    if metric == "auto":
        return "combined" if manifest.label_spec.has_valence else "wf1"
    if metric == "combined" and not manifest.label_spec.has_valence:
        raise SystemExit(f"track.metric=combined needs valence labels; {manifest.dataset} has none")
    return metric


def make_splits(manifest: Manifest, bundle: FeatureBundle) -> tuple[Split, dict[str, Split]]:
    spec = manifest.label_spec
    train_samples = [s for s in manifest.split(manifest.train_split) if s.is_labelled]
    y, v = label_arrays(train_samples, spec)
    train = Split(bundle.take([s.name for s in train_samples]), y, v)
    tests = {}
    for sp in manifest.test_splits:
        samples = manifest.split(sp)
        yt, vt = label_arrays(samples, spec)
        tests[sp] = Split(bundle.take([s.name for s in samples]), yt, vt)
    return train, tests


def make_estimator(cfg: DictConfig, manifest: Manifest, metric: str, device: str) -> FusionEstimator:
    t = cfg.train
    return FusionEstimator(
        fusion=cfg.fusion.name, fusion_params=plain(cfg.fusion.get("params")),
        num_classes=manifest.label_spec.num_classes, has_valence=manifest.label_spec.has_valence,
        epochs=int(t.epochs), lr=float(t.lr), weight_decay=float(t.weight_decay), batch_size=int(t.batch_size),
        grad_clip=t.get("grad_clip"), select_metric=metric, standardize=bool(t.standardize),
        seed=int(cfg.seed), device=device, num_threads=t.get("num_threads", 1))


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.4f}" if n == 1 else f"{mean:.4f} ± {std:.4f}"


# --- outputs --------------------------------------------------------------------------------
def predictions_frame(manifest: Manifest, preds: Predictions) -> pd.DataFrame:
    classes = manifest.label_spec.classes
    df = pd.DataFrame({"name": preds.names, "discrete": [classes[i] for i in preds.probs.argmax(1)]})
    if preds.valence is not None:
        df["valence"] = np.clip(preds.valence, *manifest.label_spec.valence_range)
    for i, c in enumerate(classes):
        df[f"p_{c}"] = preds.probs[:, i]
    return df


def write_submissions(cfg: DictConfig, manifest: Manifest, tests: Mapping[str, Predictions], out_dir: Path
                      ) -> dict[str, Path]:
    from submissions.validate import validate_submission
    from submissions.writers import write_submission

    written = {}
    target = out_dir / "submissions"
    target.mkdir(parents=True, exist_ok=True)
    for track, sub in (cfg.data.get("submissions") or {}).items():
        if sub.split not in tests:
            continue
        df = predictions_frame(manifest, tests[sub.split])
        cols = ["name", "discrete"] + (["valence"] if "valence" in df else [])
        expected = [s.name for s in manifest.split(sub.split)]
        path = write_submission(sub.schema, df[cols], target, expected_names=expected,
                                classes=list(manifest.label_spec.classes))
        problems = validate_submission(path, sub.schema, names=expected, classes=list(manifest.label_spec.classes))
        if problems:
            raise RuntimeError(f"submission {path} failed validation: {problems}")
        written[track] = path
    return written


def default_out_dir(cfg: DictConfig) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        return Path(cfg.paths.runs_dir) / str(cfg.data.name) / str(cfg.track.name) / stamp


def score_tests(preds: Mapping[str, Predictions], tests: Mapping[str, Split]) -> dict[str, float]:
    """``{<split>_<metric>: value}`` of the ensembled test predictions, for splits with labels."""
    out: dict[str, float] = {}
    for sp, p in preds.items():
        sc = score_predictions(tests[sp].y, p.probs, tests[sp].v, p.valence)
        out.update({f"{sp}_{k}": v for k, v in sc.items()})
    return out


def results_row(ablation: Mapping[str, Any], fusion: str, n_seeds: int) -> dict[str, str]:
    """One line of the printed table: CV mean (± std over seeds) and the test scores."""
    mods, summ = ablation["modalities"], ablation["cv"]
    row = {"modalities": "+".join(mods), "fusion": fusion if len(mods) > 1 else "-"}
    for k in ("wf1", "acc", "mse", "combined"):
        if f"cv_{k}" in summ:
            row[f"cv_{k}"] = _fmt(summ[f"cv_{k}"]["mean"], summ[f"cv_{k}"]["std"], n_seeds)
    row.update({k: f"{v:.4f}" for k, v in ablation["test"].items() if k.endswith(("_wf1", "_combined"))})
    return row


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
    for abl in ablation[:-1]:
        name = "+".join(abl["modalities"])
        metrics.update({f"unimodal_{name}_{k}": v["mean"] for k, v in abl["cv"].items()
                        if k in {"cv_wf1", "cv_combined"}})
    return metrics


def write_predictions(out: Path, manifest: Manifest, train: Split, oof: Predictions,
                      tests: Mapping[str, Predictions], modalities: list[str]) -> Path:
    """Per-sample predictions (out-of-fold and per test split), the per-class table and the
    confusion matrix of the out-of-fold predictions."""
    from mer.evaluation.reports import per_class_table, plot_confusion_matrix

    classes = list(manifest.label_spec.classes)
    pred_dir = out / "predictions"
    pred_dir.mkdir(exist_ok=True)
    oof_df = predictions_frame(manifest, oof)
    oof_df.insert(1, "true", [classes[i] for i in train.y])
    oof_df.to_csv(pred_dir / f"{manifest.train_split}-oof.csv", index=False)
    for sp, p in tests.items():
        predictions_frame(manifest, p).to_csv(pred_dir / f"{sp}.csv", index=False)
    y_oof = oof.probs.argmax(1)
    per_class_table(train.y, y_oof, classes).to_csv(out / "per_class_cv.csv")
    plot_confusion_matrix(train.y, y_oof, classes, out / "confusion_matrix_cv.png",
                          title=f"{manifest.dataset} CV (out-of-fold), {'+'.join(modalities)}")
    return pred_dir


# --- the run --------------------------------------------------------------------------------
def run(cfg: DictConfig, out_dir: str | os.PathLike | None = None) -> RunResult:
    """Walk the whole way for one config. Tests call this directly; ``python -m mer.run`` wraps it."""
    from mer.evaluation.reports import results_table

    t_start = time.perf_counter()
    out = Path(out_dir) if out_dir else default_out_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    device = resolve_device(str(cfg.device))
    tracker = build_tracker(cfg.get("tracking"), cfg.paths.runs_dir)
    run_name = f"{cfg.data.name}-{cfg.track.name}-{cfg.fusion.name}"
    with tracker.start(run_name, tags={"track": str(cfg.track.name), "dataset": str(cfg.data.name),
                                       "fusion": str(cfg.fusion.name), "out_dir": str(out),
                                       **git_commit()}):
        tracker.log_params(resolved)
        manifest = load_manifest(cfg)
        log.info("%s", manifest.summary())
        manifest.to_jsonl(out / "manifest.jsonl")
        bundle, feat_info, failures = build_features(cfg, manifest, device)
        with open(out / "failures.jsonl", "w", encoding="utf-8") as f:
            for rec in failures:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        tracker.log_params({f"cache.{m}.key": i["cache_key"] for m, i in feat_info.items()})
        tracker.log_params({f"cache.{m}.extractor": i["extractor"] for m, i in feat_info.items()})
        metric = resolve_metric(cfg, manifest)
        train, tests = make_splits(manifest, bundle)
        strategy = build_strategy(cfg.track.strategy, **plain(cfg.track.get("strategy_options")))
        seeds = [int(s) for s in cfg.train.seeds]
        n_folds = int(cfg.train.n_folds)

        def cv(modalities):
            est = make_estimator(cfg, manifest, metric, device)
            sel = lambda s: Split(s.X.select(modalities), s.y, s.v, s.weight)  # noqa: E731
            return run_seeds(est, sel(train), {k: sel(v) for k, v in tests.items()}, seeds=seeds,
                             n_folds=n_folds, strategy=strategy, progress=bool(cfg.progress))

        fused_mods = sorted(bundle.modalities)
        settings = [(fused_mods, cv(fused_mods))]
        if cfg.get("ablate_modalities") and len(fused_mods) > 1:
            settings = [([m], cv([m])) for m in fused_mods] + settings
        test_preds = [res.test_predictions() for _, res in settings]
        ablation = [{"modalities": mods, "cv": res.summary(), "test": score_tests(preds, tests)}
                    for (mods, res), preds in zip(settings, test_preds)]
        rows = [results_row(a, str(cfg.fusion.name), len(seeds)) for a in ablation]
        result: MultiSeedResult = settings[-1][1]
        fused_preds = test_preds[-1]
        metrics = run_metrics(ablation, len(seeds))
        for r in result.runs:
            for f in r.folds:
                tracker.log_metrics({f"fold_{k}": v for k, v in f.items() if k not in {"fold", "n_train", "n_val"}},
                                    step=r.seed * 100 + f["fold"])
        tracker.log_metrics(metrics)
        pred_dir = write_predictions(out, manifest, train, result.oof_predictions(), fused_preds, fused_mods)
        subs = write_submissions(cfg, manifest, fused_preds, out)
        text_table = results_table(rows)
        (out / "results.md").write_text(text_table + "\n")
        summary = {"metric": metric, "metrics": metrics, "ablation": ablation, "features": feat_info,
                   "failures": len(failures), "submissions": {k: str(v) for k, v in subs.items()},
                   "seeds": seeds, "n_folds": n_folds, "seconds": round(time.perf_counter() - t_start, 1)}
        (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
        for p in [out / "results.json", out / "results.md", out / "per_class_cv.csv",
                  out / "confusion_matrix_cv.png", out / "config_resolved.yaml", out / "failures.jsonl"]:
            tracker.log_artifact(p)
        tracker.log_artifact(pred_dir, "predictions")
        if subs:
            tracker.log_artifact(out / "submissions", "submissions")
        tracker.log_metrics({"seconds_total": time.perf_counter() - t_start})
        return RunResult(out, metrics, text_table, subs, tracker.run_id, tracker.uri, ablation)
