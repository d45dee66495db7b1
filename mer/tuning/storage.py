"""Where a study lives, who may write to it, and what happens to the trials of dead workers.

- default: an Optuna journal file (``JournalFileBackend``) under the study folder; any number of
  worker processes on this machine (or on machines sharing the folder) append to it.
- an RDB URL (``postgresql://``, ``mysql://``...) for workers on several machines.
- ``sqlite:///``: one worker only. SQLite serialises writers with a file lock and Optuna's RDB
  storage retries nothing, so concurrent workers lose trials to "database is locked"; a second
  worker is refused (``tune.workers > 1``, or a lock file held by another live process).

A worker records ``worker = host:pid:start`` and a heartbeat on each trial it runs. A RUNNING
trial whose worker process on this host is gone, or whose heartbeat is older than
``stale_after_s``, is failed by whichever worker looks next, so a study never waits on it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from mer.core.procs import pid_alive
from mer.core.redact import mask_secrets

log = logging.getLogger("mer.tune")

WORKER_ATTR = "worker"
HEARTBEAT_ATTR = "heartbeat"
MLFLOW_RUN_ATTR = "mlflow_run_id"


class SqliteRefused(SystemExit):
    pass


def storage_url(spec: str | None, study_dir: Path) -> str:
    """The storage as a string a worker process can reopen: a URL, or ``journal:<path>``."""
    if spec:
        return str(spec)
    return f"journal:{(study_dir / 'study.journal').resolve()}"


def check_workers(url: str, workers: int) -> None:
    if url.startswith("sqlite") and workers > 1:
        raise SqliteRefused(
            f"tune.storage={mask_secrets(url)} with tune.workers={workers}: SQLite lets one writer in at a time and "
            "Optuna's SQLite storage does not retry, so parallel workers lose trials ('database is locked'). "
            "Leave tune.storage unset (an Optuna journal file, safe for many processes on this machine "
            "or a shared folder), or use a server database for several machines, e.g. "
            "tune.storage=postgresql://user:password@host/optuna.")


@contextlib.contextmanager
def sqlite_single_writer(url: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite study for the life of a worker; a second worker
    (another ``mer.tune`` on the same file) is refused instead of corrupting the study."""
    if not url.startswith("sqlite:///"):
        yield
        return
    db = Path(url[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    fh = open(f"{db}.mer-tune.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise SqliteRefused(f"another mer.tune worker is writing to {db}: a SQLite study takes one worker. "
                            "Use the default journal storage or an RDB URL (postgresql://...) for parallel workers.")
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def open_storage(url: str):
    """The Optuna storage behind ``url`` (a journal file or an RDB URL)."""
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


@contextlib.contextmanager
def claim_lock(url: str) -> Iterator[None]:
    """Serialise "count the trials, then ask for one" between the workers of this host, so they
    never start more trials than the target needs. An flock dies with its process (a killed worker
    never holds it)."""
    if url.startswith("journal:"):
        lock_path = Path(url[len("journal:"):] + ".claim.lock")
    else:
        lock_path = Path("/tmp") / f"mer-tune-{hashlib.sha1(url.encode()).hexdigest()[:12]}.claim.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _process_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def worker_identity() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def worker_alive(identity: str) -> bool | None:
    """True/False for a worker of this host; None when it ran elsewhere (only heartbeats tell)."""
    try:
        host, pid_s, start = identity.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    if not pid_alive(pid):
        return False
    return start == "?" or _process_start(pid) == start


def fail_stale_trials(study: optuna.Study, stale_after_s: float, on_failed=None) -> list[int]:
    """Fail the RUNNING trials whose worker is gone or silent; returns their numbers."""
    now = time.time()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.user_attrs.get(WORKER_ATTR)
        beat = t.user_attrs.get(HEARTBEAT_ATTR)
        if beat is None and t.datetime_start is not None:
            beat = t.datetime_start.timestamp()
        alive = worker_alive(who) if who else None
        reason = None
        if alive is False:
            reason = f"its worker {who} is gone"
        elif beat is not None and now - float(beat) > stale_after_s:
            reason = f"no heartbeat for {now - float(beat):.0f} s (worker {who or 'unknown'})"
        if reason is None:
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "failed_because", reason)
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed.append(t.number)
                log.warning("trial %d failed: %s", t.number, reason)
                if on_failed is not None:
                    on_failed(t)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass                                   # another worker got there first
    return failed
