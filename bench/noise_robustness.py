"""Noise-robust training against clean-only training on the demo corpus, over several seeds.

    python -m bench.noise_robustness [--seeds 0,1,2] [--n-train 240] [--n-per-test 100]
        [--variants clean_only,copies,augment,all] [--out DIR] [--overrides key=value ...]

Every (variant, seed) is one ``mer.run track=noise`` with ``train.seeds=[seed]`` (the features come
from the cache after the first run). Variants: ``clean_only`` (supervised, clean clips only),
``copies`` (+ the ``mixed`` corrupted copies of the training clips), ``augment`` (modality dropout
+ feature noise, no copies), ``all`` (the track's defaults: all three). Printed per variant, mean
± std over seeds: CV weighted F1 (clean held-out folds), ``test1`` (clean clips), ``test2`` (the
demo's MER-NOISE split: synthetic babble at 5-10 dB and blur x1/x2/x4, made when the corpus was
generated, unseen by the corruption code), ``test1@mixed`` (test1's clips corrupted by mer), and
the robustness curve on test1. Writes ``results.csv`` and ``robustness_curves.png`` (mean over
seeds) under ``--out``.
"""
from __future__ import annotations

import argparse
import logging
from datetime import datetime
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from mer.core.env import configure_environment

REPO = Path(__file__).resolve().parents[1]

VARIANTS = {
    "clean_only": ["track.strategy=supervised"],
    "copies": ["track.strategy_options.modality_dropout=0", "track.strategy_options.feature_noise=0"],
    "augment": ["track.strategy_options.train_on=[]"],
    "all": [],
}


def main(argv=None) -> None:
    configure_environment()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n-train", type=int, default=240)
    ap.add_argument("--n-per-test", type=int, default=100)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--overrides", nargs="*", default=[])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from mer.evaluation.reports import plot_robustness_curve, results_table
    from mer.pipeline import run

    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    rows = []
    out = None
    for seed in seeds:
        for v in variants:
            with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
                cfg = compose("config", overrides=[
                    "track=noise", "track.baseline=null", "tracking=none", "ablate_modalities=false",
                    "progress=false", f"data.demo.n_train={args.n_train}", f"data.demo.n_per_test={args.n_per_test}",
                    f"train.seeds=[{seed}]", *VARIANTS[v], *args.overrides])
            if out is None:
                out = Path(args.out) if args.out else \
                    Path(cfg.paths.runs_dir) / "bench" / "noise" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            res = run(cfg, out_dir=out / f"{v}-seed{seed}")
            m = res.metrics
            row = {"variant": v, "seed": seed, "cv_wf1": m["cv_wf1"], "test1_wf1": m["test_test1_wf1"],
                   "test2_wf1": m["test_test2_wf1"], "test2_combined": m["test_test2_combined"]}
            row.update({k[len("curve_"):]: val for k, val in m.items() if k.startswith("curve_")})
            rows.append(row)
            print(f"{v:>10} seed {seed}: test1 wF1 {row['test1_wf1']:.4f}  test2 wF1 {row['test2_wf1']:.4f}  "
                  f"test1@mixed wF1 {row.get('mixed_wf1', float('nan')):.4f}", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    cols = ["cv_wf1", "test1_wf1", "test2_wf1", "test2_combined", "mixed_wf1"]
    table = []
    for v in variants:
        d = df[df.variant == v]
        table.append({"variant": v, **{c if c != "mixed_wf1" else "test1@mixed_wf1":
                                       f"{d[c].mean():.4f} ± {d[c].std(ddof=0):.4f}" for c in cols if c in d}})
    print(f"\n{len(seeds)} seeds ({args.seeds}), demo n_train={args.n_train}, n_per_test={args.n_per_test}")
    print(results_table(table))
    curve_cols = [c for c in df.columns if c.endswith("_wf1") and c.split("_")[0].startswith(("snr", "blur", "clean",
                                                                                              "mixed"))]
    curves = {v: {c[:-4]: float(df[df.variant == v][c].mean()) for c in curve_cols} for v in variants}
    print("robustness curve on test1 (weighted F1, mean over seeds):")
    print(results_table([{"variant": v, **{k: f"{x:.4f}" for k, x in pts.items()}} for v, pts in curves.items()]))
    plot_robustness_curve(curves, out / "robustness_curves.png",
                          title=f"demo test1, mean over seeds {args.seeds}: weighted F1 under corruption")
    print(f"outputs: {out}")


if __name__ == "__main__":
    main()
