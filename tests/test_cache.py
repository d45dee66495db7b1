"""Cache: keys follow the identity, fills resume after an interruption, failures are recorded."""
import json
from dataclasses import dataclass

import numpy as np
import pytest

from mer.core.failures import ExtractionFailure
from feature_extractors.base import Extractor
from mer.cache.fill import fill_entry
from mer.cache.store import FeatureStore
from mer.core.hashing import cache_key
from mer.core.samples import Sample


class Toy(Extractor):
    """A deterministic utterance extractor: feature = hash-seeded vector; names ending in 'bad' fail."""

    name = "toy"
    modality = "text"
    version = "1"

    @dataclass(frozen=True)
    class Config:
        dim: int = 4
        scale: float = 1.0
        batch_size: int = 3

    calls: list

    def __init__(self, *a, weights="w0", explode_after=None, **k):
        super().__init__(*a, **k)
        self._weights = weights
        self.calls = []
        self.explode_after = explode_after

    def weights_digest(self):
        return self._weights

    def extract_batch(self, samples):
        out = []
        for s in samples:
            if self.explode_after is not None and len(self.calls) >= self.explode_after:
                raise KeyboardInterrupt("simulated crash")
            self.calls.append(s.name)
            if s.name.endswith("bad"):
                out.append(ExtractionFailure(s.name, "empty_transcript", f"{s.name} has no text"))
            elif s.name.endswith("boom"):
                raise RuntimeError("decoder exploded")
            else:
                rng = np.random.default_rng(abs(hash(s.name)) % 2**32)
                out.append((rng.normal(size=self.config.dim) * self.config.scale).astype(np.float32))
        return out


def samples(n, extra=()):
    return [Sample(f"s{i:03d}", "train") for i in range(n)] + [Sample(x, "train") for x in extra]


def test_key_changes_with_config_version_and_weights():
    base = Toy().identity()
    assert cache_key(base) == cache_key(Toy().identity())
    assert cache_key(Toy(scale=2.0).identity()) != cache_key(base)
    assert cache_key(Toy(weights="w1").identity()) != cache_key(base)
    # speed-only options do not change the key
    assert cache_key(Toy(batch_size=64).identity()) == cache_key(base)

    class Toy2(Toy):
        version = "2"
    assert cache_key(Toy2().identity()) != cache_key(base)


def test_entry_paths_differ_by_condition_and_dataset(tmp_path):
    store = FeatureStore(tmp_path)
    ident = Toy().identity()
    a = store.entry("ds", ident, "clean").path
    assert a != store.entry("ds", ident, "snr5").path
    assert a != store.entry("ds2", ident, "clean").path
    assert a.name.startswith("toy-") and len(a.name) == len("toy-") + 8


def test_fill_records_failures_and_isolates_exceptions(tmp_path):
    store = FeatureStore(tmp_path)
    ext = Toy()
    entry = store.entry("ds", ext.identity())
    ss = samples(7, extra=["x_bad", "y_boom"])
    rep = fill_entry(entry, ext, ss, progress=False)
    assert rep.extracted == 7 and rep.failed == 2
    reasons = {f.name: f.reason for f in entry.failures().values()}
    assert reasons == {"x_bad": "empty_transcript", "y_boom": "extractor_error"}
    X, present = entry.load_matrix([s.name for s in ss])
    assert X.shape == (9, 4) and present.tolist() == [True] * 7 + [False, False]
    assert (X[~present] == 0).all()
    # a second fill extracts nothing: failures count as done
    ext2 = Toy()
    rep2 = fill_entry(entry, ext2, ss, progress=False)
    assert rep2.extracted == 0 and rep2.cached == 9 and ext2.calls == []


def test_resume_after_interrupted_fill_gives_identical_cache(tmp_path):
    ss = samples(20)
    names = [s.name for s in ss]
    ref_store = FeatureStore(tmp_path / "ref")
    ref = ref_store.entry("ds", Toy().identity())
    fill_entry(ref, Toy(), ss, progress=False)
    X_ref, _ = ref.load_matrix(names)

    store = FeatureStore(tmp_path / "crash")
    entry = store.entry("ds", Toy().identity())
    crashing = Toy(explode_after=10)
    with pytest.raises(KeyboardInterrupt):
        fill_entry(entry, crashing, ss, progress=False)
    done_before = entry.done_names()
    assert 0 < len(done_before) < 20          # flushed batches survived the crash
    resumed = Toy()
    fill_entry(entry, resumed, ss, progress=False)
    assert set(resumed.calls) == set(names) - done_before   # only missing samples redone
    assert len(done_before) == 9                # every batch of 3 before the crash was written
    X, present = entry.load_matrix(names)
    assert present.all() and np.array_equal(X, X_ref)
    assert not list((entry.path / "parts").glob("*.npz"))   # consolidated


def test_torn_failure_line_and_meta_identity(tmp_path):
    store = FeatureStore(tmp_path)
    ext = Toy()
    entry = store.entry("ds", ext.identity())
    fill_entry(entry, ext, samples(2, extra=["a_bad"]), progress=False)
    with open(entry.path / "failures.jsonl", "a") as f:
        f.write('{"name": "half')          # a crash mid-append
    assert set(entry.failures()) == {"a_bad"}
    meta = json.loads((entry.path / "meta.json").read_text())
    assert meta["identity"]["config"] == {"dim": 4, "scale": 1.0}
    assert meta["identity"]["weights"] == "w0" and meta["count"] == 2


def test_non_finite_features_become_failures(tmp_path):
    class NaNs(Toy):
        def extract_batch(self, samples):
            return [np.array([np.nan, 1.0], np.float32) for _ in samples]
    store = FeatureStore(tmp_path)
    ext = NaNs()
    entry = store.entry("ds", ext.identity())
    rep = fill_entry(entry, ext, samples(2), progress=False)
    assert rep.failed == 2 and {f.reason for f in rep.failures} == {"non_finite"}
