"""Self-training against supervised-only training, over several seeds.

    python -m bench.semi_supervised [--seeds 0,1,2] [--hide 0.8] [--n-train 240] [--n-per-test 100]
    python -m bench.semi_supervised --root ../shared/data/mer2023 --hide 0,0.2 [--features minilm]

Every (hidden fraction, seed) is one ``mer.run track=semi`` with ``train.seeds=[seed]`` and
``track.hide_labels.seed=seed``; its round 0 is the supervised-only baseline on the same folds,
seeds and features, so each run gives both. With ``--root`` the dataset is MER2023 (text only:
its media are not public) and the pool is test1-3, whose labels are withheld; without it, the
demo corpus (all three modalities) with its test splits in the pool.

Printed per hidden fraction, mean ± std over seeds, for supervised-only and self-training:
``heldout`` weighted F1 (the hidden training labels, scored inside the pool as MER-SEMI's test
subset is: the honest comparison), labelled test splits where there are any, CV weighted F1
(optimistic for self-training: its teacher saw the held-out folds), pseudo-labels and their
accuracy where labels are known. With ``--hide 0`` on real data the runs write the submissions
(self-training and, under ``submissions/baseline-supervised``, supervised-only).
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


def main(argv=None) -> None:
    configure_environment()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="MER2023 folder (names-only layout works); default: demo")
    ap.add_argument("--features", default="minilm", help="text features on real data")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--hide", default=None, help="hidden shares of the training labels (default: demo 0.8, real 0,0.2)")
    ap.add_argument("--n-train", type=int, default=240)
    ap.add_argument("--n-per-test", type=int, default=100)
    ap.add_argument("--out", default=None)
    ap.add_argument("--overrides", nargs="*", default=[])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from mer.evaluation.reports import results_table
    from mer.pipeline import run

    seeds = [int(s) for s in args.seeds.split(",")]
    hides = [float(h) for h in (args.hide or ("0,0.2" if args.root else "0.8")).split(",")]
    if args.root:
        data = ["data=mer2023", f"data.root={args.root}", f"features/text={args.features}", "features/audio=none",
                "features/visual=none"]
    else:
        data = [f"data.demo.n_train={args.n_train}", f"data.demo.n_per_test={args.n_per_test}"]
    out = None
    rows = []
    for hide in hides:
        for seed in seeds:
            with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
                cfg = compose("config", overrides=[
                    "track=semi", "tracking=none", "ablate_modalities=false", "progress=false", *data,
                    f"train.seeds=[{seed}]", f"track.hide_labels.fraction={hide}", f"track.hide_labels.seed={seed}",
                    *args.overrides])
            if out is None:
                out = Path(args.out) if args.out else Path(cfg.paths.runs_dir) / "bench" / "semi" / \
                    datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            res = run(cfg, out_dir=out / f"hide{hide:g}-seed{seed}")
            m = res.metrics
            for who, prefix in (("supervised", "baseline_"), ("self_training", "")):
                row = {"hide": hide, "seed": seed, "model": who, "cv_wf1": m.get(f"{prefix}cv_wf1")}
                row.update({k[len(prefix) + 5:]: v for k, v in m.items()
                            if k.startswith(f"{prefix}test_") and k.endswith("_wf1")})
                if who == "self_training":
                    row.update({"n_pseudo": m.get("semi_n_pseudo"), "pool": m.get("semi_pool_size"),
                                "pseudo_acc": m.get("semi_pseudo_acc_known")})
                rows.append(row)
            print(f"hide {hide:g} seed {seed}: " + "  ".join(
                f"{r['model']} heldout {r.get('heldout_wf1', float('nan')):.4f} cv {r['cv_wf1']:.4f}"
                for r in rows[-2:]) + f"  ({res.out_dir})", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    metric_cols = [c for c in df.columns if c.endswith("_wf1")]
    table = []
    for (hide, model), d in df.groupby(["hide", "model"], sort=False):
        row = {"hide": f"{hide:g}", "model": model}
        for c in metric_cols:
            if d[c].notna().any():
                row[c] = f"{d[c].mean():.4f} ± {d[c].std(ddof=0):.4f}"
        if model == "self_training":
            row["n_pseudo / pool"] = f"{d['n_pseudo'].mean():.0f} / {d['pool'].mean():.0f}"
            if d["pseudo_acc"].notna().any():
                row["pseudo_acc"] = f"{d['pseudo_acc'].mean():.3f}"
        table.append(row)
    where = f"MER2023 ({args.root}, text {args.features})" if args.root else \
        f"demo n_train={args.n_train} n_per_test={args.n_per_test}"
    print(f"\n{where}; seeds {args.seeds}; mean ± std over seeds")
    print(results_table(table))
    print(f"outputs: {out}")


if __name__ == "__main__":
    main()
