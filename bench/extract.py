"""Throughput of feature extractors: clips per second on N demo-like clips, as a small table.

    python -m bench.extract --extractors librosa_prosody,minilm,tfidf --n 64
    python -m bench.extract --extractors all --device cuda --threads 2

Clips come from the embedded demo corpus (:func:`mer.demo.demo_corpus`, MER2023 layout, mp4
with H.264 video + AAC audio + transcripts) when it is importable; otherwise from a small
synthetic set written here (mp4 with a moving gray frame and a voiced sawtooth, and an English and
a Chinese transcript), so the benchmark runs on any checkout. Timings include decoding the media,
as a real extraction run does. Any extractor in the registry can be named; nothing here is
specific to a modality, so a new extractor needs no change to this file. A new clip source is
one function added to :data:`CLIP_SOURCES`.

Columns, per stage: ``setup_s`` (loading weights), ``fit_s`` (``needs_fit`` extractors, fitted
on the same clips), ``decode/s`` (the ``load`` stage alone, in this process), ``model/s`` (the
``forward`` stage alone, on inputs decoded beforehand, in ``batch_size`` batches), ``e2e/s`` (a
real cache fill: supervised decoding workers feeding the model, writes included, worker start-up
excluded), ``e2e/model`` (goal >= 0.9: extraction is bound by the model, not by decoding), then
``e2e/bound`` (end to end against the slower stage: the model alone, or decoding spread over the
workers; near 1 means the pipeline adds nothing), ``dim`` and ``failed`` (by reason). One-stage extractors (no ``load``/``forward`` split) show only
``e2e/s``, measured in process.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

if __package__ in (None, ""):   # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from mer.core.failures import ExtractionFailure
from feature_extractors.base import build_extractor, EXTRACTORS
from mer.core.samples import Sample

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # benchmarks never download

SAMPLE_RATE_HZ = 16000


# --- clip sources -------------------------------------------------------------------------
def demo_clips(n: int, cache_dir: Path) -> list[Sample]:
    """The first ``n`` training clips of the demo corpus (generated into ``cache_dir`` once)."""
    from mer.demo import demo_corpus
    from mer.data.recipes import prepare

    root = demo_corpus(cache_dir, seed=0, n_train=max(n, 6), n_per_test=1, progress=True)
    return prepare("mer2023", root).split("train")[:n]


_PHRASES = [
    ("I can't believe you did this to me again", "你怎么又这样对我"),
    ("That is wonderful news, thank you so much", "太好了，真是谢谢你"),
    ("I don't know, maybe we should just wait", "我不知道，也许我们应该等等"),
    ("Why would anyone say something like that", "怎么会有人说这种话"),
    ("Everything is fine, really, don't worry", "一切都好，真的，别担心"),
    ("I miss her so much it hurts", "我太想她了，心里好痛"),
]


def synthetic_clips(n: int, cache_dir: Path) -> list[Sample]:
    """``n`` 3-s mp4 clips (64x64 video, AAC voiced sawtooth with a random F0 contour) + transcripts."""
    import av

    out_dir = cache_dir / "bench-synthetic"
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        rng = np.random.default_rng(i)
        path = out_dir / f"clip_{i:05d}.mp4"
        if not path.exists():
            _write_synthetic_mp4(path, rng, av)
        english, chinese = _PHRASES[i % len(_PHRASES)]
        samples.append(Sample(f"clip_{i:05d}", "train", video_path=str(path),
                              transcripts={"english": english, "chinese": chinese}))
    return samples


def _write_synthetic_mp4(path: Path, rng: np.random.Generator, av, duration_s: float = 3.0, fps: int = 15) -> None:
    n = int(duration_s * SAMPLE_RATE_HZ)
    f0 = np.linspace(rng.uniform(100, 250), rng.uniform(100, 250), n)
    phase = np.cumsum(f0) / SAMPLE_RATE_HZ
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * np.arange(n) / SAMPLE_RATE_HZ)
    audio = (0.3 * syllables * (2 * (phase % 1.0) - 1)).astype(np.float32)
    tmp = path.with_suffix(".partial.mp4")
    with av.open(str(tmp), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        sound = container.add_stream("aac", rate=SAMPLE_RATE_HZ)
        sound.layout = "mono"
        for k in range(int(duration_s * fps)):
            img = np.full((64, 64, 3), (k * 7) % 255, dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(video.encode(None))
        frame = av.AudioFrame.from_ndarray(audio[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE_HZ, 0
        container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    tmp.replace(path)   # a half-written clip never looks finished


CLIP_SOURCES: dict[str, Callable[[int, Path], list[Sample]]] = {
    "demo": demo_clips,
    "synthetic": synthetic_clips,
}


def load_clips(source: str, n: int, cache_dir: Path) -> tuple[str, list[Sample]]:
    """``(source used, samples)``; ``auto`` is the demo corpus when importable, else synthetic."""
    if source == "auto":
        try:
            import mer.demo  # noqa: F401
            source = "demo"
        except ImportError:
            source = "synthetic"
    return source, CLIP_SOURCES[source](n, cache_dir)


# --- measurement --------------------------------------------------------------------------
@dataclass
class Row:
    extractor: str
    setup_s: float
    fit_s: float | None
    decode_per_s: float | None
    model_per_s: float | None
    e2e_per_s: float
    workers: int
    dim: str
    failed: str

    @property
    def ratio(self) -> float | None:
        return self.e2e_per_s / self.model_per_s if self.model_per_s else None

    @property
    def bound(self) -> float | None:
        """What the slower stage allows: the model alone, or decoding spread over the workers."""
        if not self.model_per_s or not self.decode_per_s:
            return None
        return min(self.model_per_s, self.decode_per_s * max(1, self.workers))


def bench_one(name: str, samples: Sequence[Sample], device: str, workers: int) -> Row:
    from mer.cache.fill import fill_entry, is_two_stage
    from mer.cache.store import FeatureStore
    from feature_extractors.base import load_or_failure

    extractor = build_extractor(name)
    fit_s = None
    if extractor.needs_fit:
        started = time.perf_counter()
        extractor.fit(samples)
        fit_s = time.perf_counter() - started
    started = time.perf_counter()
    extractor.setup(device)
    setup_s = time.perf_counter() - started
    batch_size = max(1, int(getattr(extractor.config, "batch_size", 16)))

    decode_rate = model_rate = None
    if workers < 0:
        from mer.cache.fill import FillOptions
        from mer.features import resolve_workers

        workers = resolve_workers(FillOptions(workers=-1), extractor, 10_000).workers
    if is_two_stage(extractor):
        started = time.perf_counter()
        loaded = [load_or_failure(extractor, s) for s in samples]
        decode_rate = len(samples) / (time.perf_counter() - started)
        ok = [(s, x) for s, x in zip(samples, loaded) if not isinstance(x, ExtractionFailure)]
        started = time.perf_counter()
        for i in range(0, len(ok), batch_size):
            chunk = ok[i:i + batch_size]
            extractor.forward([s for s, _ in chunk], [x for _, x in chunk])
        model_rate = len(ok) / max(time.perf_counter() - started, 1e-9) if ok else None
    else:
        workers = 0
    with tempfile.TemporaryDirectory() as tmp:
        entry = FeatureStore(tmp).entry("bench", extractor.identity())
        report = fill_entry(entry, extractor, samples, device=device, progress=False, workers=workers,
                            max_failure_fraction=1.0)
        e2e_s = report.seconds - (report.startup_s or 0.0)
        arrays = list(entry.load().values())
    reasons = Counter(f.reason for f in report.failures)
    shapes = sorted({tuple(a.shape) for a in arrays})
    dim = ", ".join("x".join(map(str, s)) for s in shapes[:2]) + (" ..." if len(shapes) > 2 else "") or "-"
    failed = ", ".join(f"{r}: {c}" for r, c in reasons.most_common()) or "0"
    return Row(name, setup_s, fit_s, decode_rate, model_rate, len(samples) / e2e_s, workers, dim, failed)


def mean_duration_s(samples: Sequence[Sample]) -> float:
    """Mean media duration (container metadata only, nothing decoded); nan without media."""
    import av

    seconds = []
    for sample in samples:
        path = sample.audio_path or sample.video_path
        if path:
            with av.open(path) as container:
                seconds.append((container.duration or 0) / 1e6)
    return float(np.mean(seconds)) if seconds else float("nan")


def print_table(rows: Sequence[Row], header_note: str) -> None:
    print(header_note)
    head = ("extractor", "setup_s", "fit_s", "decode/s", "model/s", "e2e/s", "workers", "e2e/model",
            "e2e/bound", "dim", "failed")
    f1 = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    cells = [(r.extractor, f"{r.setup_s:.2f}", "-" if r.fit_s is None else f"{r.fit_s:.2f}",
              f1(r.decode_per_s), f1(r.model_per_s), f1(r.e2e_per_s), str(r.workers),
              "-" if r.ratio is None else f"{r.ratio:.2f}",
              "-" if r.bound is None else f"{r.e2e_per_s / r.bound:.2f}", r.dim, r.failed) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))


def main(argv: Sequence[str] | None = None) -> None:  # noqa: C901
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extractors", default="librosa_prosody,minilm,tfidf",
                        help="comma-separated registry names, or 'all'")
    parser.add_argument("--n", type=int, default=64, help="number of clips")
    parser.add_argument("--source", choices=("auto", *CLIP_SOURCES), default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=-1,
                        help="decoding worker processes in the end-to-end fill (0: decode in process; "
                             "-1: what extract.workers=auto picks)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "mer-bench",
                        help="where demo/synthetic clips are written once and reused")
    args = parser.parse_args(argv)

    registry = EXTRACTORS
    names = (registry.names() if args.extractors == "all"
             else [s.strip() for s in args.extractors.split(",") if s.strip()])
    for name in names:
        if name not in registry:
            parser.error(f"unknown extractor {name!r}; known: {', '.join(registry.names())}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    source, samples = load_clips(args.source, args.n, args.cache_dir)
    rows = []
    for name in names:
        try:
            rows.append(bench_one(name, samples, args.device, args.workers))
        except (FileNotFoundError, ValueError, ImportError) as err:
            # an extractor whose weights must be given by hand (model_path, weights_path) or whose
            # optional package is absent: say so and go on with the others
            print(f"{name}: skipped, {err}", file=sys.stderr)
    print_table(rows, f"{len(samples)} clips ({mean_duration_s(samples):.1f} s each on average) from "
                      f"the {source} source; device {args.device}; {os.cpu_count()} CPU cores")


if __name__ == "__main__":   # decoding workers are spawned: keep this guard
    main()
