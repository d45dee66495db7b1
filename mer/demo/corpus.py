"""Writing the demo corpus: the release's label, transcript and corruption tables, the clips (in
parallel, resumably), and the corpus folder renamed into place once complete."""
from __future__ import annotations

import csv
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from mer.core.samples import MER_CLASSES

from .design import CUE_TABLES, DEMO_VERSION, NOISY_SPLIT, TEST_SPLITS, VALENCE_MEAN, ClipPlan, plan_corpus
from .folders import (COMPLETE_MARKER, DONE_CLIPS, _append_done, _filling_lock, _remove_stale_partials,
                      _resume_state, corpus_root, is_complete, partial_dir)
from .render import _package_versions, _worker_init, clip_path, render_clip


def demo_corpus(cache_dir: str | Path, seed: int = 0, n_train: int = 240, n_per_test: int = 20,
                progress: bool = True, *, workers: int | None = None) -> Path:
    """The root of the demo corpus in the MER2023 release layout, generated on first use.

    Returns ``<cache_dir>/demo/v<DEMO_VERSION>-seed<seed>-n<n_train>-<n_per_test>/`` holding
    ``train/ test1/ test2/ test3/`` mp4s (H.264 + AAC), ``{train,test1,test2}-label.csv``
    (``name,discrete,valence``), ``test3-label.csv`` (``name,discrete``),
    ``transcription-engchi-polish.csv`` (``name,chinese,english``), ``test2-corruption.csv``
    (``name,snr_db,blur_factor``) and ``demo-cues.csv`` (what each modality shows; for analysis).

    The corpus is built in a partial folder beside the root and renamed into place when
    complete, so an interrupted run never leaves a corpus that looks finished; a later call
    returns an existing root at once. An interrupted generation (killed, crashed, Ctrl-C) is
    resumed by the next call: the clips it wrote whole are kept (each is written atomically and
    listed with its size in :data:`DONE_CLIPS`), only the missing ones are rendered, and the
    corpus comes out byte for byte as an uninterrupted run writes it (the package versions that
    rendered the kept clips must match, or the partial folder is started afresh). One process
    at a time fills a partial folder (an flock); another waits, then finds the corpus done.
    ``workers`` (default: up to 2) render clips in parallel processes; the output is the same
    for any number of workers.
    """
    if n_train < len(MER_CLASSES) or n_per_test < 1:
        raise ValueError(f"need n_train >= {len(MER_CLASSES)} and n_per_test >= 1, got {n_train} and {n_per_test}")
    root = corpus_root(cache_dir, seed, n_train, n_per_test)
    if is_complete(root):
        return root
    if root.exists():
        raise RuntimeError(f"{root} exists but has no {COMPLETE_MARKER}, so it was not made by demo_corpus; "
                           "delete it and run again")
    root.parent.mkdir(parents=True, exist_ok=True)
    with _filling_lock(root):
        if is_complete(root):                    # another process finished it while we waited
            return root
        _remove_stale_partials(root)
        tmp = partial_dir(root)
        started = time.perf_counter()
        _generate(tmp, seed, n_train, n_per_test, progress, workers)
        (tmp / DONE_CLIPS).unlink()
        _write_json(tmp / COMPLETE_MARKER, {
            "demo_version": DEMO_VERSION, "seed": seed, "n_train": n_train, "n_per_test": n_per_test,
            "layout": "mer2023", "generation_s": round(time.perf_counter() - started, 2),
            "class_counts": {s: _counts_in(tmp, s) for s in ("train", *TEST_SPLITS)},
            "cue_tables": CUE_TABLES, "valence_mean": VALENCE_MEAN, "packages": _package_versions(),
        })
        os.rename(tmp, root)
    return root


def _generate(out: Path, seed: int, n_train: int, n_per_test: int, progress: bool, workers: int | None) -> None:
    plans = plan_corpus(seed, n_train, n_per_test)
    done = _resume_state(out)
    log = out / DONE_CLIPS
    by_split: dict[str, list[ClipPlan]] = {}
    for p in plans:
        by_split.setdefault(p.split, []).append(p)
    for split, rows in by_split.items():
        header = ("name", "discrete") if split == "test3" else ("name", "discrete", "valence")
        _write_csv(out / f"{split}-label.csv", header,
                   [(p.name, p.discrete) if split == "test3" else (p.name, p.discrete, p.valence) for p in rows])
    _write_csv(out / "transcription-engchi-polish.csv", ("name", "chinese", "english"),
               [(p.name, p.chinese, p.english) for p in plans])
    _write_csv(out / f"{NOISY_SPLIT}-corruption.csv", ("name", "snr_db", "blur_factor"),
               [(p.name, p.snr_db, p.blur_factor) for p in by_split[NOISY_SPLIT]])
    _write_csv(out / "demo-cues.csv",
               ("name", "split", "discrete", "intensity", "face_cue", "voice_cue", "text_cue", "face_lead"),
               [(p.name, p.split, p.discrete, round(p.intensity, 4), p.face_cue, p.voice_cue, p.text_cue,
                 p.face_lead or "")
                for p in plans])

    todo = [p for p in plans if clip_path(p) not in done]
    n_workers = min(workers or 2, os.cpu_count() or 1, max(len(todo), 1))
    bar = _progress_bar(len(plans), progress, initial=len(plans) - len(todo))

    def finished(p: ClipPlan) -> None:
        _append_done(log, clip_path(p), (out / clip_path(p)).stat().st_size)
        bar.update(1)

    try:
        if n_workers <= 1:
            for p in todo:
                render_clip(p, out)
                finished(p)
        else:
            # spawn, not fork: the caller may already hold torch/OpenMP threads that fork would copy.
            with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
                futures = {pool.submit(render_clip, p, out): p for p in todo}
                try:
                    for fut in as_completed(futures):
                        fut.result()
                        finished(futures[fut])
                except BaseException:  # fail now, not after rendering every clip still queued
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        bar.close()


def _progress_bar(total: int, enabled: bool, initial: int = 0):
    return tqdm(total=total, initial=initial, desc="generating demo corpus", unit="clip", disable=not enabled)


def _write_csv(path: Path, header: Sequence[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _write_json(path: Path, payload) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, ensure_ascii=False)


def _counts_in(out: Path, split: str) -> dict[str, int]:
    with open(out / f"{split}-label.csv", encoding="utf-8") as f:
        labels = [row["discrete"] for row in csv.DictReader(f)]
    return {c: labels.count(c) for c in MER_CLASSES}
