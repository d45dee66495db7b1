"""Supervised decoding: an extractor's ``load`` stage in worker processes that cannot take the run down.

Media decoding is where extraction crashes: a truncated mp4 that makes FFmpeg spin, a header that
asks for a 100,000 x 100,000 frame, a library that segfaults on one file. :class:`DecodePool` runs
``extractor.load(sample)`` in ``workers`` processes (``spawn``: no inherited locks or threads) and
supervises each sample:

* **timeout** -- a sample still decoding after ``timeout_s`` gets its worker killed and is failed
  as ``timeout``; a fresh worker takes its place. Until a worker has decoded one sample
  successfully it gets ``first_sample_grace_s`` more: that first decode pays for lazy imports and
  JIT compilation (librosa's numba kernels take seconds), which must not be charged to a good
  clip (``Extractor.warmup`` runs before a worker reports ready, for extractors that know how);
* **memory cap** -- each worker's address space is capped at its size after start-up plus
  ``memory_mb`` (``RLIMIT_AS``), so a runaway allocation raises ``MemoryError`` in that worker
  (failed as ``out_of_memory``) instead of waking the kernel's OOM killer;
* **native crash** -- a worker that dies (SIGSEGV, SIGABRT, SIGKILL from outside) fails only the
  sample it was decoding (``worker_crashed``, with the signal); the samples queued behind it go to
  the other workers.

Each worker holds at most ``prefetch`` samples and decodes them in order, so the one in flight is
always the oldest unanswered one: that is how a crash or a timeout is pinned on exactly one sample.
A supervisor thread keeps dispatching, collecting and enforcing timeouts while the main thread runs
the model (torch releases the GIL), which is what overlaps decoding with inference.

Results come back in completion order, as ``(sample, input_or_failure)``.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import pickle
import queue
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Iterable, Iterator

from feature_extractors.base import Extractor, load_or_failure
from mer.core.failures import ExtractionFailure
from mer.core.samples import Sample

log = logging.getLogger(__name__)

_STOP = None


def _vm_size_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG), so a
    killed ``mer.extract`` leaves no orphan shard or decoder behind; a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)            # 1 = PR_SET_PDEATHSIG
        if os.getppid() == 1:                   # the parent died before prctl took effect
            os._exit(1)
    except OSError:
        pass


def _worker_main(conn, payload: bytes, memory_mb: int | None, threads: int) -> None:
    """A decoding worker: unpickle the extractor, cap memory, then answer ``(task_id, sample)``
    messages with ``(task_id, result)`` until told to stop."""
    die_with_parent()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the main process's to handle

    try:
        import torch  # deferred: loads torch only when used

        torch.set_num_threads(threads)
    except Exception:  # noqa: BLE001 - torch is optional for decoding
        pass
    extractor: Extractor = pickle.loads(payload)   # trusted: pickled by the parent that spawned this worker
    extractor.warmup()
    if memory_mb:
        base = _vm_size_bytes()
        if base is not None:
            limit = base + int(memory_mb) * (1 << 20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        conn.send(("ready", os.getpid()))
    except (BrokenPipeError, OSError):
        return                                  # the main process is gone
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is _STOP:
            return
        task_id, sample = msg
        result = load_or_failure(extractor, sample)
        try:
            conn.send((task_id, result))
        except (BrokenPipeError, EOFError):
            return
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            conn.send((task_id, ExtractionFailure(sample.name, "extractor_error",
                                                  f"{extractor.name}.load({sample.name}) returned a value "
                                                  f"that cannot be sent between processes: {err}")))
        except MemoryError:
            conn.send((task_id, ExtractionFailure(sample.name, "out_of_memory",
                                                  f"the decoded input of {sample.name} is too large to send")))


@dataclass
class _Task:
    task_id: int
    sample: Sample
    started: float | None = None      # when this task became the one in flight


@dataclass
class _Worker:
    proc: Any
    conn: Any
    tasks: collections.deque = field(default_factory=collections.deque)
    ready: bool = False
    born: float = field(default_factory=time.monotonic)
    warm: bool = False                # has decoded one sample successfully


@dataclass
class PoolStats:
    """What the supervisor did (for reports and tests)."""

    dispatched: int = 0
    completed: int = 0
    timeouts: int = 0
    crashes: int = 0
    respawns: int = 0


class DecodePoolError(RuntimeError):
    """The pool itself cannot work (workers die at start-up), as opposed to one bad sample."""


class DecodePool:
    """Run ``extractor.load`` over samples in supervised worker processes; see the module docstring.

    Use as a context manager; :meth:`imap` yields ``(sample, input_or_failure)`` in completion order.
    """

    def __init__(self, extractor: Extractor, workers: int = 2, *, timeout_s: float | None = 120.0,
                 memory_mb: int | None = 4096, prefetch: int = 2, threads_per_worker: int = 1,
                 start_timeout_s: float = 120.0, first_sample_grace_s: float = 60.0,
                 start_method: str = "spawn") -> None:
        if workers < 1:
            raise ValueError("DecodePool needs at least one worker")
        self.extractor = extractor
        self.n_workers = int(workers)
        self.timeout_s = float(timeout_s) if timeout_s else None
        self.memory_mb = int(memory_mb) if memory_mb else None
        self.prefetch = max(1, int(prefetch))
        self.threads = max(1, int(threads_per_worker))
        self.start_timeout_s = float(start_timeout_s)
        self.first_sample_grace_s = float(first_sample_grace_s)
        self._ctx = mp.get_context(start_method)
        self._payload = pickle.dumps(extractor)
        self._workers: list[_Worker] = []
        self.stats = PoolStats()
        self._startup_failures = 0
        self._pending: collections.deque = collections.deque()

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> "DecodePool":
        for _ in range(self.n_workers):
            self._workers.append(self._spawn())
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self._payload, self.memory_mb, self.threads),
                                 daemon=True, name=f"mer-decode-{self.extractor.name}")
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def close(self) -> None:
        for w in self._workers:
            try:
                w.conn.send(_STOP)
            except (OSError, BrokenPipeError):
                pass
        deadline = time.monotonic() + 5.0
        for w in self._workers:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5.0)
            w.conn.close()
        self._workers = []

    # --- work ---------------------------------------------------------------------------------
    def imap(self, samples: Iterable[Sample], max_buffered: int | None = None
             ) -> Iterator[tuple[Sample, Any]]:
        """Decode every sample; yield ``(sample, input_or_failure)`` as each finishes.

        ``max_buffered`` bounds decoded inputs waiting for the consumer (memory), default
        ``4 * workers * prefetch``."""
        if not self._workers:
            raise RuntimeError("use DecodePool as a context manager: `with DecodePool(...) as pool:`")
        pending = collections.deque(_Task(i, s) for i, s in enumerate(samples))
        self._pending = pending
        total = len(pending)
        out: queue.Queue = queue.Queue()
        limit = max_buffered or 4 * self.n_workers * self.prefetch
        stop = threading.Event()
        errors: list[BaseException] = []

        def supervise() -> None:
            try:
                self._supervise(pending, out, limit, stop)
            except BaseException as err:  # noqa: BLE001 - surfaced in the consumer thread
                errors.append(err)
            finally:
                out.put(_STOP)

        thread = threading.Thread(target=supervise, name="mer-decode-supervisor", daemon=True)
        thread.start()
        received = 0
        try:
            while received < total:
                item = out.get()
                if item is _STOP:
                    break
                received += 1
                yield item
        finally:
            stop.set()
            thread.join()
        if errors:
            raise errors[0]

    def _supervise(self, pending: collections.deque, out: queue.Queue, limit: int,
                   stop: threading.Event) -> None:
        remaining = len(pending)
        while remaining and not stop.is_set():
            now = time.monotonic()
            # Dispatch to ready workers while the consumer keeps up.
            for w in self._workers:
                while (w.ready and pending and len(w.tasks) < self.prefetch
                       and out.qsize() + self._in_flight() < limit):
                    task = pending.popleft()
                    try:
                        w.conn.send((task.task_id, task.sample))
                    except (OSError, BrokenPipeError):
                        pending.appendleft(task)
                        break
                    if not w.tasks:
                        task.started = now
                    w.tasks.append(task)
                    self.stats.dispatched += 1
            # Wait for an answer, a death, or the next timeout check.
            conns = {w.conn: w for w in self._workers}
            sentinels = {w.proc.sentinel: w for w in self._workers}
            ready = wait(list(conns) + list(sentinels), timeout=0.2)
            dead: list[_Worker] = []
            for obj in ready:
                if obj in conns:
                    w = conns[obj]
                    remaining -= self._drain(w, out)
                elif obj in sentinels:
                    dead.append(sentinels[obj])
            for w in dead:
                if w in self._workers:
                    remaining -= self._drain(w, out)   # answers sent just before dying still count
                    remaining -= self._bury(w, out, self._death_reason(w))
            now = time.monotonic()
            for w in list(self._workers):
                if not w.ready and now - w.born > self.start_timeout_s:
                    raise DecodePoolError(f"a decoding worker for {self.extractor.name} did not start "
                                          f"within {self.start_timeout_s:.0f} s")
                head = w.tasks[0] if w.tasks else None
                limit = (self.timeout_s or 0) + (0.0 if w.warm else self.first_sample_grace_s)
                if head is not None and self.timeout_s and head.started is not None \
                        and now - head.started > limit:
                    w.proc.kill()
                    w.proc.join(timeout=5.0)
                    self.stats.timeouts += 1
                    remaining -= self._bury(w, out, ("timeout", f"decoding took longer than {self.timeout_s:g} s "
                                                                 "(extract.timeout_s); the worker was stopped"))
        # Anything left (consumer stopped early) is simply dropped; workers are stopped by close().

    def _in_flight(self) -> int:
        return sum(len(w.tasks) for w in self._workers)

    def _drain(self, w: _Worker, out: queue.Queue) -> int:
        """Read every answer waiting on ``w``'s pipe; returns how many tasks completed."""
        done = 0
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "ready":
                    w.ready = True
                    self._startup_failures = 0
                    continue
                task_id, result = msg
                task = w.tasks.popleft()
                if task.task_id != task_id:       # cannot happen with in-order workers
                    raise DecodePoolError(f"decoding worker answered task {task_id}, expected {task.task_id}")
                out.put((task.sample, result))
                w.warm = w.warm or not isinstance(result, ExtractionFailure)
                done += 1
                self.stats.completed += 1
                if w.tasks:
                    w.tasks[0].started = time.monotonic()
        except (EOFError, OSError):
            pass
        return done

    def _death_reason(self, w: _Worker) -> tuple[str, str]:
        w.proc.join(timeout=5.0)
        code = w.proc.exitcode
        if code is not None and code < 0:
            try:
                sig = signal.Signals(-code).name
            except ValueError:
                sig = f"signal {-code}"
            hint = " (killed from outside, or by the kernel's out-of-memory killer)" if -code == signal.SIGKILL else ""
            return "worker_crashed", f"the decoding process died with {sig}{hint}"
        return "worker_crashed", f"the decoding process exited with code {code}"

    def _bury(self, w: _Worker, out: queue.Queue, why: tuple[str, str]) -> int:
        """Fail ``w``'s task in flight, give its queued tasks back, replace the worker."""
        self._workers.remove(w)
        with_task = 0
        if w.tasks:
            head = w.tasks.popleft()
            reason, message = why
            out.put((head.sample, ExtractionFailure(head.sample.name, reason,
                                                    f"{self.extractor.name}: {message} while decoding "
                                                    f"{head.sample.name}")))
            with_task = 1
            if reason == "worker_crashed":
                self.stats.crashes += 1
        elif not w.ready:
            self._startup_failures += 1
            if self._startup_failures >= 3:
                reason, message = why
                raise DecodePoolError(f"decoding workers for {self.extractor.name} die at start-up ({message}); "
                                      "run with extract.workers=0 to see the error in this process")
        # Queued-but-unstarted tasks go back to the front of the queue, in their order.
        for task in reversed(w.tasks):
            task.started = None
            self._pending.appendleft(task)
        w.tasks.clear()
        with contextlib.suppress(OSError):
            w.conn.close()
        self._workers.append(self._spawn())
        self.stats.respawns += 1
        return with_task

    def __repr__(self) -> str:
        return f"DecodePool({self.extractor.name}, workers={self.n_workers}, timeout_s={self.timeout_s})"
