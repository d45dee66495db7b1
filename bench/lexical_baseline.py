"""mer's trained model vs a plain logistic regression on the same cached features, same folds.

    python -m bench.lexical_baseline --root ../shared/data/mer2023 [--features minilm] [--seeds 0,1,2]

Uses the run's config (``conf/``) with ``data=mer2023`` and the given root; features come from
(or fill) the cache. Prints per-seed CV weighted F1 (mean over folds of the selected epoch, the
protocol's figure) and the pooled out-of-fold weighted F1 for: LogisticRegression (sklearn
defaults, max_iter raised) and mer's fusion estimator.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from sklearn.linear_model import LogisticRegression

from mer.evaluation.metrics import weighted_f1
from mer.pipeline import build_features, load_manifest, make_estimator, make_splits, resolve_metric
from mer.setup_env import configure_environment
from mer.training.cv import run_seeds, stratified_folds

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    configure_environment()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--data", default="mer2023")
    ap.add_argument("--features", default="minilm")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--overrides", nargs="*", default=[])
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"data={args.data}", f"data.root={args.root}",
                                           f"features/text={args.features}", "features/audio=none",
                                           "features/visual=none", "progress=false", *args.overrides])
    manifest = load_manifest(cfg)
    bundle, _, _ = build_features(cfg, manifest, "cpu")
    train, _ = make_splits(manifest, bundle)
    X, present = train.X.modalities["text"].X, train.X.modalities["text"].present
    metric = resolve_metric(cfg, manifest)
    print(f"{manifest.dataset}: {len(train)} labelled training samples, text features "
          f"{args.features} dim {X.shape[1]}, {int((~present).sum())} without text")
    est = make_estimator(cfg, manifest, metric, "cpu")
    for seed in seeds:
        folds = stratified_folds(train.y, int(cfg.train.n_folds), seed)
        lr_fold, oof = [], np.zeros(len(train), np.int64)
        for tr, va in folds:
            clf = LogisticRegression(max_iter=2000).fit(X[tr], train.y[tr])
            oof[va] = clf.predict(X[va])
            lr_fold.append(weighted_f1(train.y[va], oof[va]))
        res = run_seeds(est, train, {}, seeds=[seed], n_folds=int(cfg.train.n_folds), progress=False)
        r = res.runs[0]
        print(f"seed {seed}: logistic regression  CV wF1 {np.mean(lr_fold):.4f}  OOF wF1 {weighted_f1(train.y, oof):.4f}")
        print(f"seed {seed}: mer {cfg.fusion.name:<18} CV wF1 {np.mean([f['wf1'] for f in r.folds]):.4f}  "
              f"OOF wF1 {r.oof_scores['wf1']:.4f}  (selection metric {metric})")


if __name__ == "__main__":
    main()
