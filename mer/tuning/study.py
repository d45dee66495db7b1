"""The study: workers that claim, run and record trials until ``tune.n_trials`` are COMPLETE,
then the export, the final run and the comparison.

Honest selection: trials see CV scores on the training split only. After the study the exported
configuration predicts the test splits once (the printed ``python -m mer.run --config-dir <run
folder> +experiment=<study>`` on fresh seeds, ``tune.final_seeds``), beside the untuned config on
the same seeds; the test scores are reported, never used to choose.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from mer.config_check import check_config
from mer.core.env import configure_environment
from mer.core.errors import UserError
from mer.core.redact import mask_secrets
from mer.evaluation.scoring import score_predictions
from mer.tracking import build_tracker, flatten
from mer.training.cv import stratified_folds

from .export import export_dir_for, reproduce_args, reproduce_command, safe_name, write_experiment
from .objective import StudyData, direction, evaluate, prepare
from .space import CONF_DIR, SearchSpace, apply_params
from .storage import (
    HEARTBEAT_ATTR,
    MLFLOW_RUN_ATTR,
    WORKER_ATTR,
    check_workers,
    claim_lock,
    fail_stale_trials,
    open_storage,
    sqlite_single_writer,
    storage_url,
    worker_identity,
)

log = logging.getLogger("mer.tune")
REPO = CONF_DIR.parents[1]
PARENT_RUN_ATTR = "mlflow_parent_run_id"
MAX_FAILS_IN_A_ROW = 3


def make_sampler(tune: Mapping[str, Any], worker_index: int = 0, offset: int = 0) -> optuna.samplers.BaseSampler:
    """``offset``: trials the study already has. Each worker, and each resumption, draws its own
    random start-up points (one seed everywhere would repeat the same ones)."""
    s = dict(tune.get("sampler") or {})
    name = s.pop("name", "tpe")
    seed = s.pop("seed", 0)
    seed = None if seed is None else int(seed) + 1009 * offset + worker_index
    if name == "tpe":
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna")
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(s.get("n_startup_trials", 10)),
                                          multivariate=bool(s.get("multivariate", True)),
                                          group=bool(s.get("multivariate", True)),
                                          constant_liar=bool(s.get("constant_liar", True)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SystemExit(f"tune.sampler.name={name!r}: use tpe or random")


def make_pruner(tune: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    p = dict(tune.get("pruner") or {})
    name = p.get("name", "median")
    if name in {None, "none"}:
        return optuna.pruners.NopPruner()
    startup, warmup = int(p.get("n_startup_trials", 5)), int(p.get("n_warmup_steps", 0))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(float(p.get("percentile", 25.0)), n_startup_trials=startup,
                                               n_warmup_steps=warmup)
    raise SystemExit(f"tune.pruner.name={name!r}: use median, percentile or none")


# --- MLflow ---------------------------------------------------------------------------------
def _tracker(cfg: DictConfig):
    return build_tracker(cfg.get("tracking"), cfg.paths.runs_dir)


def _client(cfg: DictConfig):
    """(MlflowClient, experiment id), or (None, None) with tracking off."""
    tr = _tracker(cfg)
    if not hasattr(tr, "_client_setup"):          # tracking=none
        return None, None
    mlflow, exp_id = tr._client_setup()
    return mlflow.MlflowClient(tracking_uri=tr.uri), exp_id


def _mark_mlflow_failed(cfg: DictConfig):
    def on_failed(trial) -> None:
        run_id = trial.user_attrs.get(MLFLOW_RUN_ATTR)
        if not run_id:
            return
        client, _ = _client(cfg)
        if client is not None:
            client.set_tag(run_id, "optuna_state", "FAIL")
            client.set_terminated(run_id, status="FAILED")
    return on_failed


# --- the worker -----------------------------------------------------------------------------
class _Heartbeat:
    def __init__(self, study: optuna.Study, trial_id: int, every_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(study, trial_id, every_s), daemon=True)
        self._thread.start()

    def _beat(self, study, trial_id, every_s) -> None:
        while not self._stop.wait(every_s):
            try:
                study._storage.set_trial_user_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except Exception:                      # the trial ended meanwhile
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _claim(study: optuna.Study, url: str, target: int, stale_after_s: float, on_failed):
    """A new trial, ``"wait"`` (enough are running), or None (the target is reached)."""
    with claim_lock(url):
        fail_stale_trials(study, stale_after_s, on_failed)
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        if complete >= target:
            return None
        if len(trials) >= target:
            return "wait"
        trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        trial.set_user_attr(HEARTBEAT_ATTR, time.time())
    # workers on other machines (an RDB storage) do not share the lock: the later trials give way
    earlier = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
               if t.number < trial.number]
    if len(earlier) >= target:
        trial.set_user_attr("failed_because", "surplus: the target was already claimed by other workers")
        study.tell(trial, state=TrialState.FAIL)
        return "wait"
    return trial


def worker_loop(cfg: DictConfig, url: str, study_name: str, worker_index: int = 0,
                parent_run_id: str | None = None, study_data: StudyData | None = None) -> int:
    """Claim and run trials until the study has ``tune.n_trials`` COMPLETE ones; returns how many
    this worker completed."""
    tune = cfg.tune
    storage = open_storage(url)
    offset = len(storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=False))
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=make_sampler(tune, worker_index, offset), pruner=make_pruner(tune))
    log.info("worker %d: sampler seed offset %d (trials so far)", worker_index, offset)
    sd = study_data or prepare(cfg)
    space = SearchSpace(tune, sd.streams, str(cfg.fusion.name))
    target, objective = int(tune.n_trials), str(tune.objective)
    seeds = [int(s) for s in tune.seeds]
    stale_after_s = float(tune.stale_after_s)
    deadline = time.monotonic() + float(tune.timeout_s) if tune.get("timeout_s") else None
    on_failed = _mark_mlflow_failed(cfg)
    tracker = _tracker(cfg)
    completed = fails_in_a_row = 0
    while deadline is None or time.monotonic() < deadline:
        trial = _claim(study, url, target, stale_after_s, on_failed)
        if trial is None:
            break
        if trial == "wait":
            time.sleep(1.0)
            continue
        state = _run_trial(cfg, study, trial, space, sd, tracker, study_name, parent_run_id, seeds, objective)
        completed += state == TrialState.COMPLETE
        fails_in_a_row = fails_in_a_row + 1 if state == TrialState.FAIL else 0
        if fails_in_a_row >= MAX_FAILS_IN_A_ROW:
            raise RuntimeError(f"{MAX_FAILS_IN_A_ROW} trials in a row failed (see the log above); "
                               "the worker stops rather than burn the budget")
    return completed


def _run_trial(cfg, study, trial, space, sd, tracker, study_name, parent_run_id, seeds, objective) -> TrialState:
    params = space.sample(trial)
    tcfg = apply_params(cfg, params)
    beat = _Heartbeat(study, trial._trial_id, float(cfg.tune.heartbeat_s))
    tags = {"optuna_study": study_name, "optuna_trial": str(trial.number), "worker": worker_identity()}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    state, value = TrialState.FAIL, None
    t0 = time.perf_counter()
    try:
        with tracker.start(f"{study_name}-trial-{trial.number:03d}", tags=tags) as tr:
            if tr.run_id:
                trial.set_user_attr(MLFLOW_RUN_ATTR, tr.run_id)
            tr.log_params({**{f"trial.{k}": v for k, v in params.items()}, "tune.seeds": seeds,
                           "train.n_folds": int(cfg.train.n_folds), "tune.objective": objective})

            def report(value: float, step: int) -> None:
                trial.report(value, step)
                tr.log_metrics({f"running_cv_{objective}": value}, step=step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"running cv_{objective} {value:.4f} after {step} folds")

            try:
                value, summary, _ = evaluate(tcfg, sd, seeds=seeds, objective=objective, report=report)
                tr.log_metrics({**summary, "seconds": time.perf_counter() - t0})
                state = TrialState.COMPLETE
            except optuna.TrialPruned as e:
                state = TrialState.PRUNED
                log.info("trial %d pruned: %s", trial.number, e)
            except Exception as e:
                log.exception("trial %d failed: %s", trial.number, e)
                trial.set_user_attr("failed_because", f"{type(e).__name__}: {e}"[:500])
            tr.set_tags({"optuna_state": state.name})
    finally:
        beat.stop()
    try:
        if state == TrialState.COMPLETE:
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
            for k, v in summary.items():
                trial.set_user_attr(k, v)
            study.tell(trial, value)
            log.info("trial %d: cv_%s %.4f %s", trial.number, objective, value, params)
        else:
            study.tell(trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("trial %d was failed by another worker meanwhile (taken for dead); its result is dropped",
                    trial.number)
        return TrialState.FAIL
    return state


def _worker_entry(cfg_container: dict, url: str, study_name: str, worker_index: int,
                  parent_run_id: str | None) -> None:
    configure_environment()
    logging.basicConfig(level=logging.INFO, format=f"[%(asctime)s][worker {worker_index}][%(levelname)s] %(message)s")
    logging.getLogger("mer").setLevel(logging.WARNING)
    logging.getLogger("mer.tune").setLevel(logging.INFO)
    cfg = OmegaConf.create(cfg_container)
    worker_loop(cfg, url, study_name, worker_index, parent_run_id)


# --- the study ------------------------------------------------------------------------------
@dataclass
class StudyResult:
    study_dir: Path
    study_name: str
    storage: str
    best: dict[str, Any]
    counts: dict[str, int]
    experiment: Path | None = None
    reproduce: str | None = None        # the shell command that runs ``experiment``
    comparison: dict[str, Any] = field(default_factory=dict)
    nested: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None


def counts_by_state(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _study_record(cfg: DictConfig) -> dict[str, Any]:
    tune = cfg.tune
    return {"objective": str(tune.objective), "seeds": [int(s) for s in tune.seeds],
            "n_folds": int(cfg.train.n_folds), "seed": int(cfg.seed),
            "sampler": OmegaConf.to_container(tune.sampler, resolve=True),
            "pruner": OmegaConf.to_container(tune.pruner, resolve=True),
            "data": str(cfg.data.name), "track": str(cfg.track.name)}


def run_workers(cfg: DictConfig, url: str, study_name: str, parent_run_id: str | None,
                study_data: StudyData, study: optuna.Study) -> None:
    workers = int(cfg.tune.workers)
    if workers <= 1:
        worker_loop(cfg, url, study_name, 0, parent_run_id, study_data)
        return
    ctx = mp.get_context("spawn")
    container = OmegaConf.to_container(cfg, resolve=True)

    def start(i: int):
        p = ctx.Process(target=_worker_entry, args=(container, url, study_name, i, parent_run_id),
                        name=f"mer-tune-worker-{i}")
        p.start()
        log.info("worker %d: pid %d", i, p.pid)
        return p

    procs = {i: start(i) for i in range(workers)}
    restarts, next_index = 0, workers
    target = int(cfg.tune.n_trials)
    on_failed = _mark_mlflow_failed(cfg)
    try:
        while procs:
            for i, p in list(procs.items()):
                p.join(timeout=0.5)
                if p.exitcode is None:
                    continue
                del procs[i]
                if p.exitcode == 0:
                    continue
                log.warning("worker %d (pid %d) exited with code %s", i, p.pid, p.exitcode)
                fail_stale_trials(study, float(cfg.tune.stale_after_s), on_failed)
                done = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
                if done < target and restarts < int(cfg.tune.max_restarts):
                    restarts += 1
                    procs[next_index] = start(next_index)
                    next_index += 1
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
                p.join(10)


def base_overrides(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """The study's own command-line overrides, minus the ``tune.*`` ones and Hydra's."""
    keep = []
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key == "tune" or key.startswith(("tune.", "hydra.", "hydra/")):
            continue
        keep.append(o)
    return keep


def _check_storage_opens(url: str) -> None:
    """Open the study storage once, so a wrong URL, a database that is down or a missing driver is
    one line now (credentials masked) rather than a traceback after the features are filled."""
    import sqlalchemy.exc  # deferred: loads sqlalchemy only when used

    try:
        open_storage(url)
    except (ImportError, ValueError, OSError, sqlalchemy.exc.SQLAlchemyError) as err:
        detail = mask_secrets(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        hint = ("install the database's driver (e.g. psycopg2-binary for postgresql://, PyMySQL for "
                "mysql+pymysql://)" if isinstance(err, ImportError) else "check the URL and that the server answers")
        raise UserError(f"cannot open tune.storage={mask_secrets(url)}: {detail}; {hint}, or leave "
                        f"tune.storage unset for a journal file in the study folder") from None


def run_study(cfg: DictConfig, overrides: Sequence[str] = (), choices: Mapping[str, str] | None = None,
              study_dir: Path | None = None) -> StudyResult:
    check_config(cfg)                 # every value of the run config, before any feature is filled
    tune = cfg.tune
    study_name = str(tune.study)
    study_dir = Path(study_dir or Path(cfg.paths.runs_dir) / "tune" / safe_name(study_name))
    if tune.get("export", True):
        export_dir_for(tune.get("export_dir"), study_dir)      # a bad folder fails now, not after the study
    study_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(tune.get("storage"), study_dir)
    shown_url = mask_secrets(url)
    check_workers(url, int(tune.workers))
    _check_storage_opens(url)                           # before minutes of feature extraction
    objective = str(tune.objective)
    with sqlite_single_writer(url):
        t0 = time.perf_counter()
        sd = prepare(cfg)                                   # fills the feature cache once, here
        log.info("features ready in %.1f s: streams %s", time.perf_counter() - t0, sd.streams)
        study = optuna.create_study(study_name=study_name, storage=open_storage(url), load_if_exists=True,
                                    direction=direction(objective), sampler=make_sampler(tune), pruner=make_pruner(tune))
        record = _study_record(cfg)
        old = study.user_attrs.get("protocol")
        if old is None:
            study.set_user_attr("protocol", record)
        elif {k: old.get(k) for k in ("objective", "seeds", "n_folds", "data", "track")} != \
                {k: record[k] for k in ("objective", "seeds", "n_folds", "data", "track")}:
            raise SystemExit(f"study {study_name!r} in {shown_url} was run with {old}; this run asks for {record}. "
                             "Use another tune.study name (or the same settings) to resume.")
        resumed = len(study.trials)
        if resumed:
            log.info("resuming study %r: %s", study_name, counts_by_state(study))
        elif tune.get("enqueue_config", True):
            start = SearchSpace(tune, sd.streams, str(cfg.fusion.name)).params_of(cfg)
            if start:
                study.enqueue_trial(start, user_attrs={"enqueued": "the config's own values"})
                log.info("first trial: the config's own values %s", start)
        fail_stale_trials(study, float(tune.stale_after_s), _mark_mlflow_failed(cfg))
        client, exp_id = _client(cfg)
        parent_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if client is not None:
            if parent_id is None:
                parent = client.create_run(exp_id, run_name=f"tune-{study_name}",
                                           tags={"optuna_study": study_name, "storage": shown_url,
                                                 "out_dir": str(study_dir)})
                parent_id = parent.info.run_id
                study.set_user_attr(PARENT_RUN_ATTR, parent_id)

                for k, v in flatten({"tune": OmegaConf.to_container(tune, resolve=True)}).items():
                    client.log_param(parent_id, k, mask_secrets(str(v))[:6000])
            else:
                client.update_run(parent_id, status="RUNNING")
        try:
            run_workers(cfg, url, study_name, parent_id, sd, study)
            result = finish(cfg, study, sd, url, study_dir, overrides, choices, client, parent_id)
        except BaseException:
            if client is not None:
                client.set_terminated(parent_id, status="FAILED")
            raise
        if client is not None:
            client.set_terminated(parent_id, status="FINISHED")
        return result


def finish(cfg, study, sd, url, study_dir, overrides, choices, client, parent_id) -> StudyResult:
    tune = cfg.tune
    study_name = study.study_name
    counts = counts_by_state(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < int(tune.n_trials):
        raise RuntimeError(f"study {study_name!r} has {len(complete)} COMPLETE trials of {tune.n_trials} "
                           f"({counts}); run the same command again to resume it")
    best_t = study.best_trial
    params = SearchSpace.from_trial_params(best_t.params)
    best = {"number": best_t.number, "value": best_t.value, "params": params,
            "cv": {k: v for k, v in best_t.user_attrs.items() if k.startswith("cv_")}}
    df = study.trials_dataframe()
    df.to_csv(study_dir / "trials.csv", index=False)
    result = StudyResult(study_dir, study_name, url, best, counts, parent_run_id=parent_id)
    best_cfg = apply_params(cfg, params)
    if tune.get("export", True):
        export_dir = export_dir_for(tune.get("export_dir"), study_dir)
        name = safe_name(study_name)
        data_root = str(cfg.data.root) if cfg.data.get("root") else None
        result.reproduce = reproduce_command(export_dir / f"{name}.yaml", data_root)
        header = (f"{study_name}: the best of {len(complete)} complete trials (trial {best_t.number}), "
                  f"CV {tune.objective} {best_t.value:.4f}\n"
                  f"on seeds {list(tune.seeds)} x {cfg.train.n_folds} folds of {cfg.data.name}"
                  + (f" (data.root={cfg.data.root})" if cfg.data.get("root") else "") + ".\n"
                  f"Searched: {json.dumps(params)}\n"
                  f"Reproduce: {result.reproduce}"
                  + f"\nFresh seeds: add train.seeds=[{','.join(str(s) for s in tune.final_seeds)}]")
        best_cfg.train.seeds = [int(s) for s in tune.seeds]
        result.experiment = write_experiment(best_cfg, export_dir / f"{name}.yaml", header=header, choices=choices)
        log.info("best configuration: %s", result.experiment)
    if int(tune.nested.get("outer_folds") or 0) > 1:
        result.nested = nested_cv(cfg, sd, study_dir)
    if result.experiment is not None and (tune.get("final_run") or tune.get("compare_default")):
        result.comparison = final_runs(cfg, result, overrides, client, parent_id)
    summary = {"study": study_name, "storage": mask_secrets(url), "counts": counts, "best": best,
               "experiment": str(result.experiment) if result.experiment else None,
               "reproduce": result.reproduce,
               "protocol": study.user_attrs.get("protocol"), "comparison": result.comparison,
               "nested": result.nested}
    (study_dir / "study.json").write_text(json.dumps(summary, indent=1, default=str))
    if client is not None:
        client.log_metric(parent_id, f"best_cv_{tune.objective}", float(best_t.value))
        client.log_metric(parent_id, "complete_trials", len(complete))
        for k, v in result.comparison.get("metrics", {}).items():
            client.log_metric(parent_id, k, float(v))
        client.set_tag(parent_id, "best_trial", str(best_t.number))
        for p in [study_dir / "study.json", study_dir / "trials.csv", study_dir / "comparison.md",
                  result.experiment]:
            if p is not None and Path(p).is_file():
                client.log_artifact(parent_id, str(p))
    return result


# --- after the study --------------------------------------------------------------------------
def _mer_run(args: list[str], out_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "mer.run", *args, f"hydra.run.dir={out_dir}"]
    log.info("running: %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    (out_dir.parent / f"{out_dir.name}.log").write_text(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out_dir / "results.json").read_text())


def _adopt_run(client, parent_id: str | None, out_dir: Path) -> None:
    """Show a finished mer.run run under the study's run in MLflow."""
    if client is None or parent_id is None:
        return
    exp = client.get_run(parent_id).info.experiment_id
    for r in client.search_runs([exp], filter_string=f"tags.out_dir = '{out_dir}'"):
        client.set_tag(r.info.run_id, "mlflow.parentRunId", parent_id)


def final_runs(cfg: DictConfig, result: StudyResult, overrides: Sequence[str], client, parent_id) -> dict[str, Any]:
    """One run of the exported config (test predictions, submissions) and, for comparison, one of
    the untuned config, both on ``tune.final_seeds``."""
    tune = cfg.tune
    seeds = "[" + ",".join(str(int(s)) for s in tune.final_seeds) + "]"
    common = [f"train.seeds={seeds}", f"ablate_modalities={str(bool(tune.final_ablate)).lower()}",
              "progress=false", f"paths.runs_dir={cfg.paths.runs_dir}", f"paths.cache_dir={cfg.paths.cache_dir}"]
    if cfg.get("tracking") is None or cfg.tracking.get("name") in {None, "none"}:
        common.append("tracking=none")
    base = base_overrides(cfg, overrides)
    root = [f"data.root={cfg.data.root}"] if cfg.data.get("root") else []
    runs: dict[str, dict] = {}
    if tune.get("final_run", True):
        out = result.study_dir / "final"
        runs["tuned"] = _mer_run([*reproduce_args(result.experiment), *root, *common], out)
        _adopt_run(client, parent_id, out)
    if tune.get("compare_default", True):
        out = result.study_dir / "default"
        runs["default"] = _mer_run([*base, *common], out)
        _adopt_run(client, parent_id, out)
    rows, metrics = [], {}
    for label, res in runs.items():
        fused = res["ablation"][-1]
        row = {"config": label, "modalities": "+".join(fused["modalities"]), "seeds": seeds}
        for k in ("cv_wf1", "cv_combined", "cv_acc"):
            if k in fused["cv"]:
                m, s = fused["cv"][k]["mean"], fused["cv"][k]["std"]
                row[k] = f"{m:.4f} ± {s:.4f}"
                metrics[f"{label}_{k}"] = m
                metrics[f"{label}_{k}_std"] = s
        for k, v in fused["test"].items():
            if k.endswith(("_wf1", "_combined")):
                row[k] = f"{v:.4f}"
                metrics[f"{label}_test_{k}"] = v
        row["submissions"] = ", ".join(Path(p).name for p in res.get("submissions", {}).values())
        rows.append(row)
    from mer.evaluation.reports import results_table  # deferred: loads pandas only when used

    table = results_table(rows)
    note = (f"CV on seeds {seeds} (folds the study never saw: it chose on seeds {list(tune.seeds)}); "
            "test scores only where the test labels are known, never used to choose.")
    (result.study_dir / "comparison.md").write_text(table + "\n\n" + note + "\n")
    print("\n" + table + "\n" + note, flush=True)
    return {"rows": rows, "metrics": metrics,
            "submissions": runs.get("tuned", {}).get("submissions", {}),
            "out_dirs": {k: str(result.study_dir / ("final" if k == "tuned" else "default")) for k in runs}}


def nested_cv(cfg: DictConfig, sd: StudyData, study_dir: Path) -> dict[str, Any]:
    """Outer folds for reporting, an inner study (in memory) per outer fold: the selection never
    sees the outer fold it is scored on."""
    tune = cfg.tune
    nested = tune.nested
    objective = str(tune.objective)
    seeds = [int(s) for s in tune.seeds]
    train = sd.data.train
    if nested.get("inner_folds"):
        cfg = cfg.copy()
        cfg.train.n_folds = int(nested.inner_folds)
    outer = stratified_folds(train.y, int(nested.outer_folds), int(nested.seed))
    space = SearchSpace(tune, sd.streams, str(cfg.fusion.name))
    scores, chosen = [], []
    for k, (tr, te) in enumerate(outer):
        inner_data = type(sd.data)(train.rows(tr), {}, {c: v.rows(tr) for c, v in sd.data.views.items()})
        inner = optuna.create_study(direction=direction(objective), sampler=make_sampler(tune, 1000 + k),
                                    pruner=make_pruner(tune))

        def obj(trial):
            tcfg = apply_params(cfg, space.sample(trial))

            def report(v, step):
                trial.report(v, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
            return evaluate(tcfg, sd, seeds=seeds, objective=objective, data=inner_data, report=report)[0]

        inner.optimize(obj, callbacks=[MaxTrialsCallback(int(nested.n_trials), states=(TrialState.COMPLETE,))])
        params = SearchSpace.from_trial_params(inner.best_trial.params)
        tcfg = apply_params(cfg, params)
        held = train.rows(te)
        _, _, res = evaluate(tcfg, sd, seeds=seeds, objective=objective, data=inner_data, tests={"outer": held})
        pred = res.test_predictions()["outer"]
        sc = score_predictions(held.y, pred.probs, held.v, pred.valence)
        scores.append(sc)
        chosen.append(params)
        log.info("nested CV outer fold %d: %s %.4f with %s", k, objective, sc[objective], params)
    keys = scores[0].keys()
    summary = {k: {"mean": float(np.mean([s[k] for s in scores])), "std": float(np.std([s[k] for s in scores]))}
               for k in keys}
    out = {"outer_folds": len(outer), "inner_trials": int(nested.n_trials), "scores": scores,
           "summary": summary, "chosen": chosen}
    (study_dir / "nested_cv.json").write_text(json.dumps(out, indent=1, default=str))
    return out
