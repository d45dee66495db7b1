"""Kill and tamper: does any corrupt feature reach training, is any good sample lost?

    python -m bench.cache_faults                       # 300 samples, 20 rounds (about 2 min on 2 cores)
    python -m bench.cache_faults --n 500 --rounds 30 --seed 1

A corpus of ``--n`` samples is written (an English transcript and a small media file each; a few
samples have an empty transcript, so failures are recorded too). Two entries are filled: ``tfidf``
(the real text extractor, fitted on the corpus) and a frame-level media extractor defined here
(byte statistics of the file, one row per 256 bytes, slowed a little so kills land mid-batch).

A clean reference extraction is made first. Then each round:

1. a fill runs in a child process (``fill_entry`` in ``python -m bench.cache_faults --child``)
   and is killed with SIGKILL at a random moment (mid-batch, mid-consolidation, or not at all
   when it finishes first);
2. 0-3 random files of the entries (parts, generation files, rows.json, index.jsonl,
   failures.jsonl, meta.json) get random byte flips or are truncated;
3. what training would load is loaded (``load_matrix``, ``load_frame_features``), without a fill,
   and compared with the reference: every row present must equal it.

A last fill runs to completion and the entries are loaded once more: every reference feature
must be there, equal, and every reference failure recorded. Printed: runs, kills, tampered
files, corrupt features that reached training (goal 0), good samples lost (goal 0), samples
redone (extracted again after a kill or a tamper), and the time taken.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from feature_extractors.base import Extractor
from mer.cache.store import CacheEntry
from mer.core.samples import Sample

REPO = Path(__file__).resolve().parents[1]
_WORDS = ("calm quiet happy sad angry loud soft words again never always really maybe sure fine "
          "wonderful terrible great small big day night home work friend").split()


class MediaBytes(Extractor):
    """Frame level: for each 256-byte block of the sample's media file, 8 byte statistics."""

    name = "bench_media_bytes"
    modality = "audio"
    level = "frame"

    @dataclass(frozen=True)
    class Config:
        batch_size: int = 8
        slow_ms: float = 60.0          # per batch: lets a kill land inside a batch

    def extract_batch(self, samples):
        time.sleep(self.config.slow_ms / 1000)
        out = []
        for s in samples:
            raw = np.frombuffer(Path(s.audio_path).read_bytes(), np.uint8).astype(np.float32)
            blocks = raw[: len(raw) // 256 * 256].reshape(-1, 256)
            out.append(np.stack([blocks.mean(1), blocks.std(1), blocks.min(1), blocks.max(1),
                                 blocks[:, 0], blocks[:, 1], blocks[:, -1], np.median(blocks, 1)], 1))
        return out


def write_corpus(root: Path, n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        path = root / f"clip_{i:05d}.bin"
        path.write_bytes(rng.integers(0, 256, int(rng.integers(2, 12)) * 256, dtype=np.uint8).tobytes())
        text = "" if i % 37 == 5 else " ".join(rng.choice(_WORDS, int(rng.integers(3, 10))))
        samples.append(Sample(f"clip_{i:05d}", "train", audio_path=str(path), transcripts={"english": text}))
    with open(root / "samples.jsonl", "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.to_json()) + "\n")
    return samples


def read_corpus(root: Path) -> list[Sample]:
    with open(root / "samples.jsonl", encoding="utf-8") as f:
        return [Sample.from_json(json.loads(line)) for line in f]


def extractors(samples: list[Sample]) -> list[Extractor]:
    from feature_extractors.text.tfidf import TfidfText

    tfidf = TfidfText(min_df=1, batch_size=16)
    tfidf.fit(samples)
    return [tfidf, MediaBytes()]


class _CountingEntry(CacheEntry):
    """An entry that appends how many samples each write recorded (kills included: a write is
    counted once it is on disk), so the bench can count what was done twice."""

    log_path: Path | None = None

    def _count(self, n: int) -> None:
        if self.log_path is not None and n:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(fd, f"{n}\n".encode())
            os.close(fd)

    def write_part(self, names, arrays, inputs=None, times=None) -> None:
        super().write_part(names, arrays, inputs, times)
        self._count(len(names))

    def record_failures(self, failures, inputs=None) -> None:
        super().record_failures(failures, inputs)
        self._count(sum(f.reason != "cache_corrupt" for f in failures))


def fill_all(cache: Path, samples: list[Sample], count_path: Path | None = None) -> list:
    from mer.cache.fill import fill_entry
    from mer.cache.store import FeatureStore

    store = FeatureStore(cache)
    reports = []
    for ext in extractors(samples):
        plain = store.entry("bench", ext.identity())
        entry = _CountingEntry(plain.path, plain.identity)
        entry.log_path = count_path
        reports.append(fill_entry(entry, ext, samples, progress=False))
    return reports


def load_all(cache: Path, samples: list[Sample]) -> dict[str, dict[str, np.ndarray]]:
    """What training loads: name -> feature per extractor, for the rows present."""
    from mer.cache.store import FeatureStore
    from mer.data.sequences import load_frame_features

    store = FeatureStore(cache)
    names = [s.name for s in samples]
    out = {}
    for ext in extractors(samples):
        entry = store.entry("bench", ext.identity())
        if ext.level == "frame":
            f = load_frame_features(entry, names)
            out[ext.name] = {n: f.X[i, :f.lengths[i]].copy() for i, n in enumerate(names) if f.present[i]}
        else:
            X, present = entry.load_matrix(names)
            out[ext.name] = {n: X[i].copy() for i, n in enumerate(names) if present[i]}
    return out


def failures_all(cache: Path, samples: list[Sample]) -> dict[str, set[str]]:
    """name of every final failure recorded, per extractor."""
    from mer.cache.store import FeatureStore

    store = FeatureStore(cache)
    return {ext.name: {n for n, f in store.entry("bench", ext.identity()).failures().items()
                       if f.reason != "cache_corrupt"} for ext in extractors(samples)}


def tamper(cache: Path, rng: random.Random, max_files: int) -> list[str]:
    files = [p for p in cache.rglob("*") if p.is_file() and p.name not in (".lock", ".used")
             and not p.name.endswith(".tmp") and p.name != ".fingerprints.jsonl"]
    done = []
    for p in rng.sample(files, min(len(files), rng.randint(0, max_files))):
        raw = bytearray(p.read_bytes())
        if not raw:
            continue
        if rng.random() < 0.6:
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            how = "flipped"
        else:
            raw = raw[:rng.randrange(len(raw))]
            how = "truncated"
        p.write_bytes(bytes(raw))
        done.append(f"{how} {p.relative_to(cache)}")
    return done


def reference(samples: list[Sample]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, set[str]]]:
    """What a clean extraction gives, computed directly (no cache): features and failed names."""
    from mer.core.failures import ExtractionFailure

    feats, fails = {}, {}
    for ext in extractors(samples):
        quick = MediaBytes(slow_ms=0.0) if isinstance(ext, MediaBytes) else ext
        results = quick.extract_batch(samples)
        feats[ext.name] = {s.name: np.asarray(r, np.float32) for s, r in zip(samples, results)
                           if not isinstance(r, ExtractionFailure)}
        fails[ext.name] = {s.name for s, r in zip(samples, results) if isinstance(r, ExtractionFailure)}
    return feats, fails


def edit_media(samples: list[Sample], rng: random.Random) -> list[Sample]:
    """Replace the media file of some samples with other content (sometimes of the same size)."""
    picked = rng.sample(samples, rng.randint(10, 40))
    for s in picked:
        path = Path(s.audio_path)
        size = path.stat().st_size if rng.random() < 0.5 else rng.randint(2, 12) * 256
        path.write_bytes(np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, size, dtype=np.uint8).tobytes())
    return picked


def compare(got, versions, final: bool) -> tuple[int, int]:
    """(rows present that are not a genuine feature, reference rows absent). Between rounds a row
    may still be an older genuine version (its sample was edited and no fill has run since); after
    the last fill it must be the latest."""
    corrupt = missing = 0
    for ext, rows in versions.items():
        for n, vs in rows.items():
            b = got[ext].get(n)
            if b is None:
                missing += vs[-1] is not None
            elif not any(v is not None and v.shape == b.shape and np.array_equal(v, b)
                         for v in (vs[-1:] if final else vs)):
                corrupt += 1
    return corrupt, missing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--max-tampered", type=int, default=3, help="files damaged per round, at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        work = args.child
        (work / "started").touch()                    # imports done: the work begins
        fill_all(work / "cache", read_corpus(work / "corpus"), work / "written.log")
        return 0

    import logging
    import tempfile

    logging.basicConfig(level=logging.ERROR)          # the rejections are expected here
    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(tmp.name if tmp else args.workdir)
    t0 = time.perf_counter()
    samples = write_corpus(work / "corpus", args.n, args.seed)
    ref, ref_fail = reference(samples)
    # every genuine version of each sample's feature (None: the sample fails), newest last
    versions = {e: {s.name: [rows.get(s.name)] for s in samples} for e, rows in ref.items()}
    rng = random.Random(args.seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "bench.cache_faults", "--child", str(work)]
    runs = kills = tampered = corrupt_seen = edited = 0
    t_work = None                                    # how long a whole fill works (the first run's)
    for r in range(args.rounds):
        changed = []
        if r and rng.random() < 0.6:                 # new inputs: the next fill has real work to do
            changed = edit_media(samples, rng)
            edited += len(changed)
            new, _ = reference(changed)
            for e, rows in new.items():
                if e == MediaBytes.name:
                    for s in changed:
                        versions[e][s.name].append(rows.get(s.name))
        start = time.perf_counter()
        (work / "started").unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs += 1
        while proc.poll() is None and not (work / "started").exists():
            time.sleep(0.02)
        began = time.perf_counter()
        try:
            # kill somewhere inside the work (or let it finish): the first run times a whole fill
            proc.wait(timeout=rng.uniform(0.0, 0.6) * t_work if t_work else 600)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            t_work = t_work or max(time.perf_counter() - began, 0.2)
        hits = tamper(work / "cache", rng, args.max_tampered)
        tampered += len(hits)
        if (work / "cache").exists():
            corrupt, _ = compare(load_all(work / "cache", samples), versions, final=False)
            corrupt_seen += corrupt
        what = ", ".join(([f"{len(changed)} media files replaced"] if changed else []) + hits)
        print(f"round {r + 1:2d}: {'killed' if proc.returncode == -signal.SIGKILL else 'finished'} "
              f"after {time.perf_counter() - start:4.1f} s; {what or 'nothing tampered'}", flush=True)
    final = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    runs += 1
    if final.returncode != 0:
        print(final.stderr[-3000:])
    got = load_all(work / "cache", samples)
    corrupt, lost = compare(got, versions, final=True)
    fails = failures_all(work / "cache", samples)
    latest_fail = {e: {n for n, vs in rows.items() if vs[-1] is None} for e, rows in versions.items()}
    lost += sum(len(latest_fail[e] - fails[e]) for e in latest_fail)
    need = sum(len(v) for rows in versions.values() for v in rows.values())   # every version once
    done = sum(int(x) for x in (work / "written.log").read_text().split()) if (work / "written.log").exists() else 0
    print(f"samples: {args.n} x {len(ref)} extractors; media files replaced between runs: {edited}")
    print(f"runs: {runs}   kills: {kills}   tampered files: {tampered}")
    print(f"corrupt or stale features that reached training: {corrupt_seen + corrupt} "
          "(loaded after each round, and after the last fill)")
    print(f"good samples lost: {lost}")
    print(f"samples redone: {max(done - need, 0)}  ({done} features and failures written; {need} needed: "
          "each sample once, plus once per replaced file)")
    print(f"took {time.perf_counter() - t0:.0f} s")
    if tmp:
        tmp.cleanup()
    return 0 if corrupt_seen + corrupt == 0 and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
