"""Text encoders compared by a plain logistic regression on their cached features, same folds.

    python -m bench.text_encoders --root ../shared/data/mer2023 \\
        [--encoders multilingual_e5@chinese,minilm@english,tfidf@chinese] [--seed 0] [--overrides ...]

Each ``name@language`` is ``features/text=name data.language=language`` on ``data=mer2023`` (or
``--data``); features come from (or fill) the cache, so the first run also times the extraction.
Training split only, mer's stratified folds (5, ``--seed``): a ``StandardScaler`` +
``LogisticRegressionCV`` over C in ``10**-4 .. 10**1`` (6 values), scored by weighted F1 on those
folds. The figure is the mean (and standard deviation) over the folds of the held-out weighted F1
at the C with the best mean; C is chosen on the same folds, a small optimism that every encoder
shares. Samples without a transcript keep the zero vector the pipeline gives them.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from mer.features import build_features
from mer.datasets import load_manifest
from mer.tracks.data import make_splits
from mer.core.env import configure_environment
from mer.training.cv import stratified_folds

REPO = Path(__file__).resolve().parents[1]
CS = np.logspace(-4, 1, 6)


def score(X: np.ndarray, y: np.ndarray, folds) -> tuple[np.ndarray, float]:
    """Held-out weighted F1 per fold at the best C, and that C."""
    # The scaler is fitted on all training rows (its mean and scale, no labels): the same for every C.
    Xs = StandardScaler().fit_transform(X)
    clf = LogisticRegressionCV(Cs=CS, cv=folds, scoring="f1_weighted", max_iter=3000, n_jobs=len(folds))
    clf.fit(Xs, y)
    per_c = next(iter(clf.scores_.values()))                  # [folds, Cs], the same for every class
    best = int(np.argmax(per_c.mean(0)))
    return per_c[:, best], float(CS[best])


def main(argv=None) -> None:
    configure_environment()
    # scikit-learn 1.8 announces changes of LogisticRegressionCV's defaults and attributes, neither used here.
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--data", default="mer2023")
    ap.add_argument("--encoders", default="multilingual_e5@chinese,minilm@english")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overrides", nargs="*", default=[])
    args = ap.parse_args(argv)
    for spec in args.encoders.split(","):
        name, _, language = spec.partition("@")
        with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"data={args.data}", f"data.root={args.root}",
                                               f"features/text={name}", *([f"data.language={language}"] if language else []),
                                               "features/audio=none", "features/visual=none", "progress=false",
                                               *args.overrides])
        manifest = load_manifest(cfg)
        start = time.perf_counter()
        bundle, _, _ = build_features(cfg, manifest, "cpu")
        features_s = time.perf_counter() - start
        train, _ = make_splits(manifest, bundle)
        X, present = train.X.modalities["text"].X, train.X.modalities["text"].present
        folds = stratified_folds(train.y, 5, args.seed)
        start = time.perf_counter()
        per_fold, c = score(np.asarray(X, np.float64), train.y, folds)
        print(f"{manifest.dataset} {spec:<26} dim {X.shape[1]:>5}  train {len(train)} ({int((~present).sum())} "
              f"without text)  CV wF1 {np.mean(per_fold):.4f} ± {np.std(per_fold):.4f}  (C={c:g}; "
              f"features {features_s:.1f} s, fits {time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
