"""``python -m mer.report RUNS`` — one ablation table (mean ± std over seeds per cell, CSV +
Markdown) and its plots from many runs.

RUNS: a folder of runs (a Hydra multirun folder, ``~/mer-runs/demo/multi``, a study folder) or
``mlflow:<experiment>`` (the runs tracked there, read through ``--tracking-uri`` or the default
store ``<runs>/mlflow.db``).

    python -m mer.run -m features/text=minilm,tfidf fusion=attention,mlp train.seeds=[0,1,2]
    python -m mer.report ~/mer-runs/multirun/2026-01-01_12-00-00
    python -m mer.report mlflow:mer --top-n 2 --modalities text,audio   # + ranking, top-n fusion
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from mer.core.env import configure_environment


def default_tracking_uri() -> str:
    runs = Path(os.environ.get("MER_RUNS_DIR", Path.home() / "mer-runs"))
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(runs / 'mlflow.db').resolve()}"


def main(argv: list[str] | None = None) -> int:
    configure_environment()
    ap = argparse.ArgumentParser(prog="python -m mer.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", help="a folder of runs, or mlflow:<experiment>")
    ap.add_argument("--out", help="where the table and plots go (default: RUNS/report, or ./report-<experiment>)")
    ap.add_argument("--metric", default="wf1", choices=["wf1", "combined", "acc", "mse"])
    ap.add_argument("--tracking-uri", default=None, help="MLflow store for mlflow:<experiment>")
    ap.add_argument("--top-n", type=int, default=None, help="also write the command that fuses each modality's top n features")
    ap.add_argument("--modalities", default="", help="modalities of the top-n fusion, e.g. text,audio (default: all ranked)")
    args = ap.parse_args(argv)

    from mer.evaluation.ablation import load_runs, write_report  # deferred: loads pandas only when used

    records = load_runs(args.runs, args.tracking_uri or default_tracking_uri())
    if args.out:
        out = Path(args.out)
    elif args.runs.startswith("mlflow:"):
        out = Path(f"report-{args.runs[len('mlflow:'):]}")
    else:
        out = Path(args.runs) / "report"
    mods = [m for m in args.modalities.split(",") if m]
    paths = write_report(records, out, args.metric, args.top_n, mods)
    print(paths["md"].read_text())
    print(f"{len(records)} runs -> " + ", ".join(str(p) for p in paths.values()))
    if "topn" in paths:
        print("top-n fusion: " + paths["topn"].read_text().strip())
    return 0


if __name__ == "__main__":
    from mer.core.errors import run_cli

    run_cli(main)
