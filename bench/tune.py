"""Trials per minute of ``python -m mer.tune`` with 1 and 2 worker processes on the demo corpus.

    python -m bench.tune                       # 8 trials of 10 epochs x 5 folds each, 1 and 2 workers
    python -m bench.tune --workers 1 2 4 --trials 12 --epochs 20
    python -m bench.tune --kill-one --workers 4 --trials 12    # SIGKILL one worker mid-trial

Each setting runs a fresh study (journal storage, MLflow tracking as usual, no pruning, no final
run) in a temporary runs folder. Throughput is counted from the study's own record: COMPLETE
trials over the time from the first trial's start to the last one's end, so start-up (imports,
loading the cached features) is reported apart. The feature cache must be warm for the figures
to mean anything: the first call of ``python -m mer.run`` fills it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _kill_one_mid_trial(journal: Path, name: str, proc: subprocess.Popen) -> tuple[int, int] | None:
    """SIGKILL the worker of the first trial that has reported a fold; (trial number, pid)."""
    import signal

    import optuna

    from mer.tuning.storage import open_storage

    while proc.poll() is None:
        if journal.exists():
            try:
                study = optuna.load_study(study_name=name, storage=open_storage(f"journal:{journal}"))
                for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                    pid = int(t.user_attrs.get("worker", "x:0:0").split(":")[1])
                    if t.intermediate_values and pid not in (0, proc.pid):
                        os.kill(pid, signal.SIGKILL)
                        return t.number, pid
            except KeyError:
                pass
        time.sleep(0.2)
    return None


def one(workers: int, trials: int, epochs: int, extra: list[str], kill_one: bool = False) -> dict:
    import optuna

    from mer.tuning.storage import open_storage

    with tempfile.TemporaryDirectory(prefix="mer-bench-tune-") as tmp:
        name = f"bench-w{workers}"
        cmd = [sys.executable, "-m", "mer.tune", f"tune.study={name}", f"tune.workers={workers}",
               f"tune.n_trials={trials}", f"train.epochs={epochs}", "tune.pruner.name=none",
               "tune.final_run=false", "tune.compare_default=false", "tune.export=false", "progress=false",
               f"paths.runs_dir={tmp}", *extra]
        journal = Path(tmp) / "tune" / name / "study.journal"
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed = _kill_one_mid_trial(journal, name, proc) if kill_one else None
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=name, storage=open_storage(f"journal:{journal}"))
        if kill_one:
            states: dict[str, int] = {}
            for t in study.trials:
                states[t.state.name] = states.get(t.state.name, 0) + 1
            print(f"killed worker pid {killed[1] if killed else '-'} during trial "
                  f"{killed[0] if killed else '-'}; trial states after the study: {states}; "
                  f"that trial: {study.trials[killed[0]].state.name if killed else '-'} "
                  f"({study.trials[killed[0]].user_attrs.get('failed_because') if killed else ''})", flush=True)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        first = min(t.datetime_start for t in done)
        last = max(t.datetime_complete for t in done)
        span = (last - first).total_seconds()
        return {"workers": workers, "complete": len(done), "trial_span_s": span, "wall_s": wall,
                "trials_per_min": 60.0 * len(done) / span,
                "mean_trial_s": sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done) / len(done)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--kill-one", action="store_true", help="SIGKILL one worker mid-trial and report the trial states")
    ap.add_argument("overrides", nargs="*", help="more mer.tune overrides, e.g. features/visual=none")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"mer.tune on the demo corpus: {args.trials} trials of {args.epochs} epochs x 5 folds, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{'workers':>7} {'complete':>8} {'trials/min':>10} {'mean trial s':>12} {'trial span s':>12} {'wall s':>7}")
    for w in args.workers:
        r = one(w, args.trials, args.epochs, args.overrides, args.kill_one)
        print(f"{r['workers']:>7} {r['complete']:>8} {r['trials_per_min']:>10.2f} {r['mean_trial_s']:>12.1f} "
              f"{r['trial_span_s']:>12.1f} {r['wall_s']:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
