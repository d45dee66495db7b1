"""Noisy partial-label learning: CC, PRODEN, PiCO and ARNet on real features.

    python -m bench.pll [--datasets digits,mer2023] [--root ../shared/data/mer2023]
                        [--qs 0.1,0.3,0.5] [--etas 0.1,0.2,0.3] [--seeds 0,1,2] [--epochs 100]
                        [--arnet-base auto|pico|proden|cc] [--json out.json]

Datasets: scikit-learn's ``digits`` (1,797 real 8x8 images) and MER2023's labelled training
split as all-MiniLM-L6-v2 transcript embeddings (cached in mer's feature cache). For each
(q, eta, seed): a stratified 70/30 split, candidate sets by the ARNet/IRNet protocol on the 70%,
every method trained on candidate sets only, accuracy on the 30% test labels. ARNet's correction
start is chosen on a validation split of the training rows (never the test rows). The learner ARNet
wraps is, by default (``--arnet-base auto``), chosen from the training candidate sets alone: PiCO
while they cover at most half the classes on average, PRODEN above (``mer.pll.arnet.choose_base``;
on digits q=0.1/0.3 -> PiCO, q=0.5 -> PRODEN; on MER2023's 6 classes likewise).

Printed per dataset and setting: mean (std over seeds) test accuracy of each method, ARNet's
candidate-set "contains truth" rate and average size before -> after refinement, ARNet's
correction start per seed and the base it wrapped, and a line
listing the settings where ARNet does not beat every base learner.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mer.core.env import configure_environment

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main(argv=None) -> None:
    configure_environment()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="digits,mer2023")
    ap.add_argument("--root", default=str(SHARED / "mer2023"))
    ap.add_argument("--qs", default="0.1,0.3,0.5")
    ap.add_argument("--etas", default="0.1,0.2,0.3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--arnet-base", default="auto", choices=("auto", "pico", "proden", "cc"),
                    help="learner ARNet wraps (auto: chosen from the candidate sets' average size)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from mer.pll.datasets import load_feature_set
    from mer.pll.experiment import METHODS, run_setting

    seeds = [int(s) for s in args.seeds.split(",")]
    all_results = []
    for dataset in args.datasets.split(","):
        if dataset == "mer2023" and not Path(args.root).is_dir():
            print(f"[skip] mer2023: {args.root} is absent")
            continue
        fs = load_feature_set(dataset, args.root if dataset == "mer2023" else None)
        print(f"\n== {dataset}: {len(fs.y)} samples, {fs.X.shape[1]} features, {len(fs.classes)} "
              f"classes; {args.epochs} epochs; seeds {seeds}; test accuracy mean (std) ==")
        head = f"{'q':>4} {'eta':>4} | " + " | ".join(f"{m:>15}" for m in METHODS) + \
               " | contains truth | avg set size | start | ARNet wins"
        print(head)
        print("-" * len(head))
        losses = []
        for q in _floats(args.qs):
            for eta in _floats(args.etas):
                rs = [run_setting(fs, dataset, q, eta, s, METHODS, epochs=args.epochs,
                                  arnet_base=args.arnet_base) for s in seeds]
                all_results += rs
                acc = {m: np.array([r.accuracy[m] for r in rs]) for m in METHODS}
                cells = " | ".join(f"{acc[m].mean():.4f} ({acc[m].std():.3f})".rjust(15) for m in METHODS)
                tb = np.mean([r.truth_before for r in rs])
                ta = np.mean([r.truth_after for r in rs])
                sb = np.mean([r.size_before for r in rs])
                sa = np.mean([r.size_after for r in rs])
                starts = ",".join(str(r.correction_epoch) for r in rs) + \
                    f" ({'/'.join(sorted({str(r.arnet_base) for r in rs}))})"
                best_base = max(acc[m].mean() for m in METHODS if m != "arnet")
                wins = acc["arnet"].mean() > best_base and ta > tb
                print(f"{q:>4} {eta:>4} | {cells} | {tb:.3f} -> {ta:.3f} | {sb:.2f} -> {sa:.2f}  | "
                      f"{starts} | {'yes' if wins else 'NO  <--'}", flush=True)
                if not wins:
                    losses.append(f"q={q} eta={eta} (ARNet {acc['arnet'].mean():.4f} vs best base "
                                  f"{best_base:.4f}; contains truth {tb:.3f} -> {ta:.3f})")
        print("settings where ARNet does not beat every base learner (or does not raise contains "
              "truth): " + ("; ".join(losses) if losses else "none"))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in all_results], f, indent=1)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
