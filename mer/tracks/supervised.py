"""The supervised family: the fusion estimator cross-validated on seeded folds, with its loss as
the objective. ``supervised`` is the family's plain member; the noise-robust and self-training
strategies (:mod:`mer.tracks.noise`, :mod:`mer.tracks.semi`) extend it with their objective,
their views or pool, and their own ``cross_validate``.

The family's hooks (:mod:`mer.tracks.base`):

* :meth:`~SupervisedStrategy.check` — labels, valence range and fold protocol, before any
  extraction;
* :meth:`~SupervisedStrategy.prepare` — the training and test splits, hidden labels and the
  unlabelled pool, the samples with no input in any stream (left out of training; their test rows
  get the training prior), the corrupted conditions the strategy trains on or the robustness curve
  scores;
* :meth:`~SupervisedStrategy.evaluate` — the CV of the fused streams (and of each stream alone
  with ``ablate_modalities``) and the comparison ``track.baseline`` asks for, on the same folds;
* :meth:`~SupervisedStrategy.write_outputs` — the results table and tracked metrics, the
  robustness curve, predictions, folds and validated submissions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from mer.core.config import plain
from mer.data.manifest import Manifest
from mer.training.cv import MultiSeedResult
from mer.training.estimator import FusionEstimator
from mer.training.no_input import NoInput
from mer.training.objective import SupervisedObjective

from .base import STRATEGIES, Strategy, TrackData, TrackOutcome, build_strategy
from .data import add_corrupted_conditions, check_labels, make_track_data, resolve_metric, resolve_protocol
from .outputs import (cv_label, ensemble_oof_scores, record_folds, results_row, robustness_outputs, run_metrics,
                      score_tests, write_predictions, write_submissions)

log = logging.getLogger("mer")

SHARED_OPTIONS = ("valence_weight", "label_smoothing", "arousal_weight", "frame_weight", "dimension_loss")
"""Loss options a baseline strategy takes over from the run's strategy."""


def blend_setting(value: Any) -> float | str:
    """``train.blend_linear``: ``auto`` (chosen per fold on its inner split) or a weight in [0, 1]."""
    return "auto" if value == "auto" else float(value or 0.0)


def make_estimator(cfg: DictConfig, manifest: Manifest, metric: str, device: str) -> FusionEstimator:
    t = cfg.train
    window = dict((cfg.get("sequence") or {}).get("window") or {})
    return FusionEstimator(
        fusion=cfg.fusion.name, fusion_params=plain(cfg.fusion.get("params")),
        # sentiment data: a one-class discrete head, never trained (no cross-entropy) and never read
        num_classes=manifest.label_spec.num_classes if manifest.label_spec.has_discrete else 1,
        has_valence=manifest.label_spec.has_valence,
        epochs=int(t.epochs), lr=float(t.lr), weight_decay=float(t.weight_decay), batch_size=int(t.batch_size),
        grad_clip=t.get("grad_clip"), select_metric=metric, standardize=bool(t.standardize),
        seed=int(cfg.seed), device=device, num_threads=t.get("num_threads", 1),
        window_size=window.get("size"), window_hop=window.get("hop"),
        selection=str(t.get("selection", "fold")), inner_fraction=float(t.get("inner_fraction", 0.15)),
        patience=t.get("patience"), blend_linear=blend_setting(t.get("blend_linear")))


@dataclass
class Evaluation:
    """What :meth:`SupervisedStrategy.evaluate` hands to :meth:`~SupervisedStrategy.write_outputs`:
    each setting's CV (``(streams, result)``, the fused streams last) and the baseline's."""

    settings: list[tuple[list[str], MultiSeedResult]]
    baseline_name: str | None = None
    baseline: MultiSeedResult | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> MultiSeedResult:
        return self.settings[-1][1]


@STRATEGIES.register("supervised")
class SupervisedStrategy(Strategy, SupervisedObjective):
    """The supervised loss (:class:`~mer.training.objective.SupervisedObjective`) over the
    labelled training rows, and the family's hooks (module docstring)."""

    name = "supervised"

    # --- the run's hooks --------------------------------------------------------------------
    def run_tags(self, cfg: DictConfig) -> dict[str, str]:
        return {"fusion": str(cfg.fusion.name)}

    def check(self, ctx) -> None:
        check_labels(ctx.manifest)
        ctx.info["protocol"] = resolve_protocol(ctx.cfg, ctx.manifest)

    def prepare(self, ctx) -> TrackData:
        cfg, manifest = ctx.cfg, ctx.manifest
        data = make_track_data(cfg, manifest, ctx.bundle, int(cfg.train.n_folds))
        no_input = NoInput.of(manifest, ctx.bundle, data.train)   # left out of training; test rows get the fallback
        if no_input.count:
            log.warning("%s", no_input.summary_line(manifest.train_split))
        if self.needs_pool and data.pool is None:
            raise SystemExit(f"track.strategy={cfg.track.strategy} needs an unlabelled pool: set track.pool.splits "
                             f"(all, or a list of {manifest.test_splits}) or track.hide_labels.fraction")
        info, failures, curve_plan = add_corrupted_conditions(cfg, manifest, data, self, ctx.condition_features)
        ctx.add_features(info, failures)
        data.extras.update(no_input=no_input, curve_plan=curve_plan, metric=resolve_metric(cfg, manifest))
        return data

    def evaluate(self, ctx, data: TrackData) -> Evaluation:
        cfg = ctx.cfg
        seeds, n_folds = [int(s) for s in cfg.train.seeds], int(cfg.train.n_folds)

        def cv(streams, strategy: Strategy = self) -> MultiSeedResult:
            est = make_estimator(cfg, ctx.manifest, data.extras["metric"], ctx.device)
            label = cv_label(streams, str(cfg.fusion.name), strategy.name if strategy is not self else None)
            return strategy.cross_validate(est, data.select(streams), seeds=seeds, n_folds=n_folds,
                                           progress=bool(cfg.progress), label=label, on_fold=ctx.on_fold)

        fused = sorted(ctx.bundle.modalities)
        settings = [([m], cv([m])) for m in fused] if cfg.get("ablate_modalities") and len(fused) > 1 else []
        settings.append((fused, cv(fused)))
        evaluation = Evaluation(settings)
        name = cfg.track.get("baseline")
        if name and name != self.name:          # the comparison the track asks for, on the same folds
            made = evaluation.result.extras.get("baseline")   # self-training's round 0 is supervised-only
            evaluation.baseline_name = str(name)
            evaluation.baseline = made if made is not None and name == "supervised" else cv(
                fused, build_strategy(str(name), **{k: getattr(self, k) for k in SHARED_OPTIONS if hasattr(self, k)}))
        return evaluation

    def write_outputs(self, ctx, data: TrackData, evaluation: Evaluation) -> TrackOutcome:
        cfg, manifest, out, tracker = ctx.cfg, ctx.manifest, ctx.out, ctx.tracker
        seeds = [int(s) for s in cfg.train.seeds]
        no_input: NoInput = data.extras["no_input"]
        fusion = str(cfg.fusion.name)

        def summarise(streams, res: MultiSeedResult, strategy_name: str):
            preds = no_input.fill(res.test_predictions())
            main = {k: v for k, v in preds.items() if k in data.tests}
            return {"modalities": streams, "strategy": strategy_name, "cv": res.summary(),
                    "ensemble_oof": ensemble_oof_scores(res, data.train) if len(seeds) > 1 else {},
                    "test": score_tests(main, data.tests)}, main

        summaries = [summarise(streams, res, self.name) for streams, res in evaluation.settings]
        ablation = [a for a, _ in summaries]
        result, fused_preds, fused = evaluation.result, summaries[-1][1], evaluation.settings[-1][0]
        rows = [results_row(a, fusion, len(seeds)) for a in ablation]
        metrics = run_metrics(ablation, len(seeds))
        base_name, base_res, base_preds = evaluation.baseline_name, evaluation.baseline, None
        if base_res is not None:
            base_abl, base_preds = summarise(fused, base_res, f"{base_name} (baseline)")
            rows.append(results_row(base_abl, fusion, len(seeds)))
            metrics.update({f"baseline_{k}": v for k, v in run_metrics([base_abl], len(seeds)).items()})
        for r in result.runs:
            for f in r.folds:
                tracker.log_metrics({f"fold_{k}": v for k, v in f.items() if k not in {"fold", "n_train", "n_val"}},
                                    step=r.seed * 100 + f["fold"])
        curves: dict[str, dict[str, float]] = {}
        plan = data.extras.get("curve_plan")
        if plan:
            curves = robustness_outputs(out, manifest, data, plan, {
                self.name: result, **({f"{base_name} (baseline)": base_res} if base_res is not None else {})})
            for label, pts in curves.items():
                prefix = "baseline_curve" if label.endswith("(baseline)") else "curve"
                metrics.update({f"{prefix}_{c}_wf1": v for c, v in pts.items()})
        metrics.update(self.report(result, data, out, list(manifest.label_spec.classes), tracker))
        metrics["n_no_input"] = float(no_input.count)
        no_input.write(out)
        write_predictions(out, manifest, data.train, result.oof_predictions(), fused_preds, fused)
        protocol = str(ctx.info.get("protocol") or data.train.protocol)
        fold_record = record_folds(out, data.train, result, protocol)
        tracker.log_params({f"folds.{k}": v for k, v in fold_record.items() if k != "held_out_groups"})
        subs = write_submissions(cfg, manifest, fused_preds, out)
        if base_preds is not None:
            write_submissions(cfg, manifest, base_preds, out, subdir=f"submissions/baseline-{base_name}")
        summary = {"metric": data.extras["metric"], "ablation": ablation, "strategy": self.name,
                   "baseline": base_name if base_res is not None else None, "robustness_curve": curves,
                   "seeds": seeds, "n_folds": int(cfg.train.n_folds), "protocol": protocol, "folds": fold_record,
                   "targets": list(manifest.label_spec.targets), "no_input": no_input.record(manifest.train_split)}
        artifacts = [out / n for n in ("per_class_cv.csv", "folds.csv", "confusion_matrix_cv.png", "no_input.csv",
                                       "robustness_curve.png", "robustness_curve.csv")]
        notes = [line for line in [no_input.summary_line(manifest.train_split)] if line]
        return TrackOutcome(rows, metrics, subs, summary, artifacts, ablation=ablation, notes=notes)
