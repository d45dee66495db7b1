"""mer's models against a plain scikit-learn floor on real data: same features, same folds.

    python -m bench.real_floor                                  # MER2023 and MELD from ../shared/data
    python -m bench.real_floor --datasets mer2023 --models default,linear,mlp --seeds 0,1
    python -m bench.real_floor --dataset mydata=generic:/data/mydata --features minilm

For each dataset (the real ones in ``../shared/data`` and any ``--dataset name=config:root``), the
training split's features come from (or fill) mer's cache through the run's own config, and the
folds are the run's folds (``split_folds``, one set per seed). On those folds it cross-validates:

(a) the floor: scikit-learn ``LogisticRegressionCV`` for the class and ``RidgeCV`` for valence,
    on the presence-masked concatenation of the streams, standardised (``std``) and as cached
    (``raw``); mer must beat the better of the two;
(b) mer's default (``python -m mer.run data=<dataset>`` as configured) and each ``--models`` entry
    (a fusion model name, run with the default training settings).

Every figure is out-of-fold: each row's prediction comes from a model that never saw it, with
every choice (regularisation, epoch, C) made inside the training folds. For mer's models the
official protocol's figure (best epoch chosen on the scored fold, optimistic) is printed beside.
Test labels are never read: only the training split is used.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from threadpoolctl import threadpool_limits

from mer.evaluation.scoring import score_outputs
from mer.training.no_input import drop_no_input
from mer.features import build_features
from mer.datasets import load_manifest
from mer.tracks.supervised import make_estimator
from mer.tracks.data import check_labels, make_splits, resolve_metric, resolve_protocol
from mer.core.env import configure_environment
from mer.training.cv import run_seeds, split_folds
from mer.training.data import Split

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
REAL = {"mer2023": ("mer2023", SHARED / "mer2023"), "meld": ("meld", SHARED / "meld")}
HEADLINE = ("wf1", "acc", "mse", "combined", "non0_acc2", "non0_f1", "mae", "corr")


def compose_cfg(config: str, root: str, overrides: list[str]):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"data={config}", f"data.root={root}", "progress=false",
                                            "tracking=none", *overrides])


def design(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """``[N, sum D + M]`` presence-masked concatenation (frame-level streams mean-pooled), and
    the rows with at least one stream present."""
    X = split.X.pooled() if split.X.has_sequences else split.X
    parts = []
    for m in sorted(X.modalities):
        f = X.modalities[m]
        parts += [np.where(f.present[:, None], f.X, 0.0), f.present[:, None].astype(np.float32)]
    any_present = np.any([X.modalities[m].present for m in X.modalities], axis=0)
    return np.concatenate(parts, 1).astype(np.float64), any_present


def sklearn_floor(train: Split, folds, has_valence: bool, sentiment: bool, scale: bool = True
                  ) -> dict[str, np.ndarray]:
    """Out-of-fold ``probs`` / ``valence`` of [StandardScaler +] LogisticRegressionCV / RidgeCV."""
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Z, _ = design(train)
    C = int(train.y.max()) + 1
    probs = np.full((len(train), max(C, 1)), 1.0 / max(C, 1))
    val = np.full(len(train), np.nan)
    for tr, va in folds:
        if not sentiment:
            lab = tr[train.y[tr] >= 0]
            clf = make_pipeline(StandardScaler(with_mean=scale, with_std=scale),
                                LogisticRegressionCV(Cs=10, max_iter=3000, l1_ratios=(0.0,), use_legacy_attributes=False))
            clf.fit(Z[lab], train.y[lab])
            p = np.zeros((len(va), C))
            p[:, clf.classes_] = clf.predict_proba(Z[va])
            probs[va] = p
        if has_valence:
            known = tr[np.isfinite(train.v[tr])]
            reg = make_pipeline(StandardScaler(with_mean=scale, with_std=scale), RidgeCV(alphas=np.logspace(-2, 4, 13)))
            val[va] = reg.fit(Z[known], train.v[known]).predict(Z[va])
    out = {"probs": probs.astype(np.float32)}
    if has_valence:
        out["valence"] = val.astype(np.float32)
    return out


def fmt(scores: dict[str, float]) -> str:
    return "  ".join(f"{k} {scores[k]:.4f}" for k in HEADLINE if k in scores)


def bench_dataset(label: str, config: str, root: str, models: list[str], seeds: list[int],
                  overrides: list[str], floors: list[str]) -> list[dict]:
    cfg = compose_cfg(config, root, overrides)
    manifest = load_manifest(cfg)
    check_labels(manifest)
    protocol = resolve_protocol(cfg, manifest, warn=False)
    t0 = time.perf_counter()
    bundle, info, _ = build_features(cfg, manifest, "cpu")
    train, _ = make_splits(manifest, bundle, protocol)
    train = drop_no_input(train)         # what a run trains on: rows with a feature in some stream
    metric = resolve_metric(cfg, manifest)
    spec = manifest.label_spec
    sentiment = train.valence_range is not None
    streams = ", ".join(f"{m} ({i['extractor']}, dim {i['dim']})" for m, i in info.items())
    print(f"\n## {label}: {len(train)} training rows, streams {streams}; features {time.perf_counter() - t0:.0f} s; "
          f"selection metric {metric}; protocol {protocol}; seeds {seeds}", flush=True)
    rows = []
    n_folds = int(cfg.train.n_folds)
    labelled = (train.y >= 0) | (np.isfinite(train.v) if sentiment else False)

    def score(out):
        return score_outputs(train.y[labelled], {k: v[labelled] for k, v in out.items()}, train.v[labelled],
                             valence_range=train.valence_range)

    def ensemble_row(name, outs, seconds):
        if len(outs) > 1:
            mean = {k: np.mean([o[k] for o in outs], axis=0) for k in outs[0]}
            rows.append({"dataset": label, "model": f"{name} [ensemble of {len(outs)} seeds]", "seed": "all",
                         "oof": score(mean), "official": None, "seconds": seconds})
            print(f"{label} seeds {seeds}  {name} ensemble  oof: {fmt(rows[-1]['oof'])}", flush=True)

    for scale in floors:
        name, outs, t = f"floor: sklearn ({scale})", [], time.perf_counter()
        for seed in seeds:
            t1 = time.perf_counter()
            with threadpool_limits(1):
                out = sklearn_floor(train, split_folds(train, n_folds, seed), spec.has_valence, sentiment,
                                    scale=scale == "std")
            outs.append(out)
            rows.append({"dataset": label, "model": name, "seed": seed, "oof": score(out), "official": None,
                         "seconds": time.perf_counter() - t1})
            print(f"{label} seed {seed}  {name:<22} oof: {fmt(rows[-1]['oof'])}  [{rows[-1]['seconds']:.0f} s]",
                  flush=True)
        ensemble_row(name, outs, time.perf_counter() - t)
    for model in models:
        over = [] if model == "default" else [f"fusion={model}"]
        mcfg = compose_cfg(config, root, overrides + over) if over else cfg
        est = make_estimator(mcfg, manifest, metric, "cpu")
        name = f"mer {model}" + (f" ({mcfg.fusion.name})" if model == "default" else "")
        t = time.perf_counter()
        res = run_seeds(est, train, {}, seeds=seeds, n_folds=n_folds, progress=False)
        seconds = (time.perf_counter() - t) / len(seeds)
        for r in res.runs:
            official = {k[len("official_"):]: v for k, v in r.fold_mean().items() if k.startswith("official_")}
            rows.append({"dataset": label, "model": name, "seed": r.seed, "oof": r.oof_scores,
                         "official": official, "seconds": seconds})
            print(f"{label} seed {r.seed}  {name:<22} oof: {fmt(r.oof_scores)}  | official best-epoch: "
                  f"{fmt(official)}  [{seconds:.0f} s]", flush=True)
        ensemble_row(name, [r.oof.outputs() for r in res.runs], seconds * len(seeds))
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one line per (dataset, model), out-of-fold figures as mean over seeds."""
    keys = [k for k in HEADLINE if any(k in r["oof"] for r in rows)]
    out = ["| dataset | model | " + " | ".join(f"oof {k}" for k in keys) + " | official wf1 | s / seed |",
           "|---" * (len(keys) + 4) + "|"]
    seen: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        seen.setdefault((r["dataset"], r["model"]), []).append(r)
    for (ds, model), rs in seen.items():
        def mean(k, where="oof"):
            vals = [r[where][k] for r in rs if r[where] and k in r[where]]
            if not vals:
                return "-"
            return f"{np.mean(vals):.4f}" + (f" ± {np.std(vals):.4f}" if len(vals) > 1 else "")
        out.append(f"| {ds} | {model} | " + " | ".join(mean(k) for k in keys) + f" | {mean('wf1', 'official')} | "
                   f"{np.mean([r['seconds'] for r in rs]):.0f} |")
    return "\n".join(out)


def main(argv=None) -> None:
    configure_environment()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mer2023,meld", help="real datasets from ../shared/data ('' for none)")
    ap.add_argument("--dataset", action="append", default=[], metavar="NAME=CONFIG:ROOT",
                    help="another dataset: a conf/data config and its root, e.g. mosi=mosi:/data/MOSI")
    ap.add_argument("--models", default="default,linear", help="'default' and/or fusion model names")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--floors", default="std,raw", help="the sklearn floor on standardised (std) and/or raw features")
    ap.add_argument("--features", default=None, help="features/text=... for every dataset (default: the config's)")
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides for every run, e.g. train.epochs=30")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    models = [m for m in args.models.split(",") if m]
    floors = [f for f in args.floors.split(",") if f]
    overrides = ["features/audio=none", "features/visual=none", *args.overrides]
    if args.features:
        overrides.append(f"features/text={args.features}")
    jobs = []
    for name in [d for d in args.datasets.split(",") if d]:
        config, root = REAL[name]
        if not root.is_dir():
            print(f"{name}: {root} is absent, skipped")
            continue
        jobs.append((name, config, str(root)))
    for spec in args.dataset:
        name, rest = spec.split("=", 1)
        config, root = rest.split(":", 1)
        jobs.append((name, config, root))
    rows = []
    for name, config, root in jobs:
        rows += bench_dataset(name, config, root, models, seeds, overrides, floors)
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
