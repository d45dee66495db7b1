"""Where a demo corpus lives: its folder, the partial folder it is filled in (under a lock), the
log of clips written whole that lets an interrupted fill resume, and the marker written last."""
from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import socket
from pathlib import Path

from mer.core.io import append_json_lines, atomic_write_text
from mer.core.procs import pid_alive

from .design import DEMO_VERSION, TEST_SPLITS
from .render import _package_versions

COMPLETE_MARKER = "demo-corpus.json"
"""Written last inside the temp folder; a corpus folder without it was not made by mer.demo."""

DONE_CLIPS = "demo-clips-done.jsonl"
"""In the partial folder while it is filled: what made it, then one line per clip written whole
(its path and size), so an interrupted generation resumes with only the missing clips."""


def corpus_root(cache_dir: str | Path, seed: int = 0, n_train: int = 240, n_per_test: int = 20) -> Path:
    """Where :func:`demo_corpus` puts (or finds) the corpus for these arguments."""
    return Path(cache_dir) / "demo" / f"v{DEMO_VERSION}-seed{seed}-n{n_train}-{n_per_test}"


def is_complete(root: str | Path) -> bool:
    """Whether ``root`` holds a finished corpus (its marker is written last, then the folder renamed)."""
    return (Path(root) / COMPLETE_MARKER).is_file()


def partial_dir(root: str | Path) -> Path:
    """The folder in which the corpus for ``root`` is filled (and an interrupted fill resumed)."""
    root = Path(root)
    return root.parent / f".{root.name}.partial"


@contextlib.contextmanager
def _filling_lock(root: Path):
    """Hold an flock beside ``root`` while filling its partial folder (it dies with the process)."""
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
            if is_complete(root):
                lock_path.unlink(missing_ok=True)   # a waiter holding the old file finds root done
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _resume_state(out: Path) -> dict[str, int]:
    """``{clip path: bytes}`` of the clips in the partial folder ``out`` that an earlier run wrote
    whole, with the same package versions; stale temp files and unlisted clips are removed (the
    whole folder when the versions differ), and :data:`DONE_CLIPS` is rewritten to list the rest."""
    head = {"demo_version": DEMO_VERSION, "packages": _package_versions()}
    done: dict[str, int] = {}
    log = out / DONE_CLIPS
    if out.exists():
        lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
        try:
            same_maker = bool(lines) and json.loads(lines[0]) == head
        except ValueError:
            same_maker = False
        if not same_maker:
            shutil.rmtree(out)
        else:
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                    done[str(entry["clip"])] = int(entry["bytes"])
                except (ValueError, KeyError, TypeError):   # a line torn by the kill
                    continue
    whole: set[str] = set()
    for split in ("train", *TEST_SPLITS):
        (out / split).mkdir(parents=True, exist_ok=True)
        for path in (out / split).iterdir():
            clip = f"{split}/{path.name}"
            if done.get(clip) == path.stat().st_size and not path.name.endswith(".tmp"):
                whole.add(clip)
            else:
                path.unlink()
    done = {clip: size for clip, size in done.items() if clip in whole}
    # Rewritten whole: no torn last line to append after.
    atomic_write_text(log, "".join(json.dumps(e) + "\n" for e in
                                   [head, *({"clip": c, "bytes": b} for c, b in sorted(done.items()))]))
    return done


def _append_done(log: Path, clip: str, size: int) -> None:
    append_json_lines(log, [{"clip": clip, "bytes": size}])



def _remove_stale_partials(root: Path) -> None:
    """Delete per-process temp folders (``.<root>.partial-<host>-<pid>-...``, as earlier mer
    versions named them) of this host whose process is gone; they cannot be resumed."""
    prefix = f".{root.name}.partial-{socket.gethostname()}-"
    for partial in root.parent.glob(f"{prefix}*"):
        try:
            pid = int(partial.name[len(prefix):].split("-")[0])
        except ValueError:
            continue
        if not pid_alive(pid):
            shutil.rmtree(partial, ignore_errors=True)
