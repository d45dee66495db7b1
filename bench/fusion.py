"""Training time per cross-validation fold of every fusion model at MER2023 size, on this machine.

    python -m bench.fusion                                  # every registered model, defaults below
    python -m bench.fusion --models tfn,lmf,mult --threads 2 --measure-epochs 5

MER2023 size: 3,373 training clips, 5 folds, so one fold trains on 2,698 and validates on 675,
batch 32, for ``--epochs`` (100, the official protocol). Features are random with the widths of
the MER2023 baseline's usual inputs (``--dims``: HuBERT-large audio 1024, MacBERT-large text 1024,
CLIP/MAE-DFER visual 768); frame-level models get sequences of ``--steps`` per modality
(lengths drawn between half and all of it, as real clips vary), utterance-level models get one
vector per clip. Each model is trained for ``--measure-epochs`` epochs (each with its validation
pass, as the CV loop does) after one warm-up epoch; the table prints seconds per epoch, the
projected seconds per fold (x ``--epochs``), the parameter count and the peak resident memory
growth. Timing on a shared machine varies: run it when the machine is quiet, or compare rows of
one run only.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from fusion.base import FUSION
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.data.frames import pad_sequences
from mer.training.data import Split
from mer.training.estimator import FusionEstimator

N_TRAIN, N_VAL, N_CLASSES = 2698, 675, 6


def _parse_map(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=") for part in text.split(","))}


def synthetic_split(n: int, dims: dict[str, int], steps: dict[str, int], seed: int) -> Split:
    rng = np.random.default_rng(seed)
    mods = {}
    for m, d in dims.items():
        lengths = rng.integers(max(1, steps[m] // 2), steps[m] + 1, n)
        X, lengths = pad_sequences([rng.normal(size=(t, d)).astype(np.float32) for t in lengths], dim=d)
        mods[m] = ModalityFeatures(X, lengths > 0, "synthetic", lengths)
    y = rng.integers(0, N_CLASSES, n)
    v = rng.normal(size=n).astype(np.float32)
    return Split(FeatureBundle([f"s{seed}_{i}" for i in range(n)], mods), y, v)


def time_model(name: str, train: Split, val: Split, measure_epochs: int, epochs: int, threads: int) -> dict:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times: list[float] = []
    last = [time.perf_counter()]

    def on_epoch(_record):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    est = FusionEstimator(name, {}, num_classes=N_CLASSES, has_valence=True, epochs=measure_epochs + 1,
                          lr=1e-3, batch_size=32, seed=0, num_threads=threads)
    start = time.perf_counter()
    last[0] = start
    est.fit(train, eval_set=val, on_epoch=on_epoch)
    per_epoch = float(np.median(times[1:])) if len(times) > 1 else times[0]
    params = sum(p.numel() for p in est.model_.parameters())
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {"model": name, "level": FUSION.get(name).input_level, "params": params,
            "s_per_epoch": per_epoch, "s_per_fold": per_epoch * epochs, "first_epoch_s": times[0],
            "peak_rss_growth_mb": rss}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="all", help="comma-separated fusion names, or all")
    ap.add_argument("--dims", default="audio=1024,text=1024,visual=768")
    ap.add_argument("--steps", default="audio=64,text=24,visual=16",
                    help="frame-level steps per modality (max; lengths vary from half of it)")
    ap.add_argument("--epochs", type=int, default=100, help="epochs of one fold (projection)")
    ap.add_argument("--measure-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    names = FUSION.names() if args.models == "all" else args.models.split(",")
    dims, steps = _parse_map(args.dims), _parse_map(args.steps)
    train = synthetic_split(N_TRAIN, dims, steps, 0)
    val = synthetic_split(N_VAL, dims, steps, 1)
    print(f"MER2023 size: {N_TRAIN} train / {N_VAL} val rows per fold, batch 32, dims {dims}, "
          f"frame steps {steps}, {args.threads} thread(s); {args.measure_epochs} timed epochs after 1 warm-up")
    rows = []
    for name in names:
        r = time_model(name, train, val, args.measure_epochs, args.epochs, args.threads)
        rows.append(r)
        print(f"  {name}: {r['s_per_epoch']:.2f} s/epoch", flush=True)
    print()
    print(f"| model | level | parameters | s / epoch | s / fold ({args.epochs} epochs) | first epoch s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['level']} | {r['params']:,} | {r['s_per_epoch']:.2f} | "
              f"{r['s_per_fold']:.0f} | {r['first_epoch_s']:.2f} |")


if __name__ == "__main__":
    main()
