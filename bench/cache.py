"""Warm-cache overhead of a rerun: how long the feature stage takes when every entry is cached.

    python -m bench.cache --n 5000 --dim 384 --modalities 3

Fills ``--modalities`` utterance entries of ``--n`` samples once (not timed), then times what a
rerun does per modality: compute the identity and key, check which samples are done, consolidate
nothing, and load the feature matrix in manifest order. Goal: under 2 s for 5,000 samples.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from feature_extractors.base import Extractor
from mer.cache.fill import fill_entry
from mer.cache.store import FeatureStore
from mer.data.manifest import Sample


class _Random(Extractor):
    name = "bench_random"
    modality = "text"

    @dataclass(frozen=True)
    class Config:
        dim: int = 384
        batch_size: int = 512

    def extract_batch(self, samples):
        rng = np.random.default_rng(len(samples))
        return [rng.normal(size=self.config.dim).astype(np.float32) for _ in samples]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--modalities", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    samples = [Sample(f"sample_{i:08d}", "train") for i in range(args.n)]
    names = [s.name for s in samples]
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(tmp)
        for m in range(args.modalities):
            ext = _Random(dim=args.dim + m)
            fill_entry(store.entry("bench", ext.identity()), ext, samples, progress=False)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for m in range(args.modalities):
                ext = _Random(dim=args.dim + m)
                entry = store.entry("bench", ext.identity())
                report = fill_entry(entry, ext, samples, progress=False)
                X, present = entry.load_matrix(names)
                assert report.extracted == 0 and present.all()
            times.append(time.perf_counter() - t0)
    print(f"warm-cache rerun, {args.n} samples x {args.modalities} modalities (dim ~{args.dim}): "
          f"best {min(times):.3f} s, median {sorted(times)[len(times) // 2]:.3f} s (goal < 2 s)")


if __name__ == "__main__":
    main()
