"""Supervised decoding: a segfault, a hang, a runaway allocation or an exception in one sample's
decoder fails that sample only; kills at random moments lose only what was in flight."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mer.cache.fill import TooManyFailures, fill_entry
from mer.cache.store import FeatureStore
from mer.cache.workers import DecodePool
from mer.core.samples import Sample
from tests.conftest import REPO
from tests.fault_extractors import Misbehaving

BAD = {"b_segv": "worker_crashed", "c_hang": "timeout", "d_hog": "out_of_memory", "e_kill": "worker_crashed",
       "f_raise": "decode_error"}


def _samples(n_good, bad=()):
    return [Sample(f"s{i:03d}", "train") for i in range(n_good)] + [Sample(b, "train") for b in bad]


def test_pool_fails_only_the_bad_samples():
    ext = Misbehaving(hog_mb=4096)
    ss = _samples(12, BAD)
    random.Random(0).shuffle(ss)
    with DecodePool(ext, 2, timeout_s=2.0, memory_mb=512) as pool:
        results = dict((s.name, r) for s, r in pool.imap(ss))
        stats = pool.stats
    assert set(results) == {s.name for s in ss}                    # every sample answered once
    for name, reason in BAD.items():
        assert getattr(results[name], "reason", None) == reason, (name, results[name])
        assert name in results[name].message
    assert "SIGSEGV" in results["b_segv"].message
    for s in ss:
        if s.name not in BAD:
            assert np.array_equal(results[s.name], ext.load(s))     # good samples decoded as in-process
    assert stats.timeouts == 1 and stats.crashes == 2 and stats.respawns == 3


def test_fill_with_workers_equals_in_process_fill(tmp_path):
    ss = _samples(30, ["x_raise", "y_segv"])
    store = FeatureStore(tmp_path)
    ref = store.entry("ref", Misbehaving().identity())
    fill_entry(ref, Misbehaving(), [s for s in ss if "segv" not in s.name], progress=False, workers=0)
    entry = store.entry("ds", Misbehaving().identity())
    rep = fill_entry(entry, Misbehaving(), ss, progress=False, workers=2, timeout_s=30)
    assert rep.extracted == 30 and rep.failed == 2 and rep.pool["crashes"] == 1
    got, want = entry.load(), ref.load()
    assert set(got) == {s.name for s in ss[:30]}
    assert all(np.array_equal(got[n], want[n]) for n in got)
    assert {n: f.reason for n, f in entry.failures().items()} == {"x_raise": "decode_error",
                                                                  "y_segv": "worker_crashed"}
    assert entry.verify() == []


def test_too_many_failures_stops_with_a_clear_message_and_keeps_the_rest(tmp_path):
    ss = _samples(10) + [Sample(f"z{i:02d}_raise", "train") for i in range(30)]
    entry = FeatureStore(tmp_path).entry("ds", Misbehaving().identity())
    with pytest.raises(TooManyFailures, match="failures.jsonl"):
        fill_entry(entry, Misbehaving(batch_size=2), ss, progress=False, max_failure_fraction=0.5)
    assert {f"s{i:03d}" for i in range(10)} <= entry.done_names()   # the good ones were written


_KILL_SCRIPT = """
import sys
from mer.cache.fill import fill_entry
from mer.cache.store import FeatureStore
from mer.data.manifest import Sample
from tests.fault_extractors import Misbehaving

if __name__ == "__main__":
    root, log = sys.argv[1], sys.argv[2]
    ss = [Sample(f"s{i:03d}", "train") for i in range(160)] + [Sample("q_segv", "train"), Sample("r_raise", "train")]
    ext = Misbehaving(slow_s=0.03, log_path=log, batch_size=4)
    entry = FeatureStore(root).entry("ds", Misbehaving().identity())
    fill_entry(entry, ext, ss, progress=False, workers=2, prefetch=2, timeout_s=60, flush_interval_s=0.0)
    print("DONE", flush=True)
"""


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_cache(tmp_path):
    script = tmp_path / "fill.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref_root = tmp_path / "ref"
    subprocess.run([sys.executable, str(script), str(ref_root), str(tmp_path / "ref.log")], env=env,
                   check=True, cwd=REPO, timeout=300)
    root, log = tmp_path / "killed", tmp_path / "killed.log"
    entry = FeatureStore(root).entry("ds", Misbehaving().identity())
    rng = random.Random(7)
    kills = 0
    bound = 2 * 2 + 4 * 2 * 2 + 4          # queued in workers + buffered for the consumer + one batch
    for _ in range(6):
        before = entry.done_names() if entry.path.exists() else set()
        loaded_before = log.read_text().split() if log.exists() else []
        proc = subprocess.Popen([sys.executable, str(script), str(root), str(log)], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(1.0, 5.0))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        time.sleep(0.3)
        after = entry.done_names()
        loaded_now = (log.read_text().split() if log.exists() else [])[len(loaded_before):]
        assert not (set(loaded_now) & before), "a sample done before this run was decoded again"
        lost = set(loaded_now) - after
        assert len(lost) <= bound, f"{len(lost)} decoded samples lost by one kill (bound {bound})"
    # the last run completes
    out = subprocess.run([sys.executable, str(script), str(root), str(log)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert "DONE" in out.stdout, out.stderr[-2000:]
    assert kills >= 2
    ref = FeatureStore(ref_root).entry("ds", Misbehaving().identity())
    got, want = entry.load(), ref.load()
    assert sorted(got) == sorted(want) and all(np.array_equal(got[n], want[n]) for n in want)
    assert {n: f.reason for n, f in entry.failures().items()} == {n: f.reason for n, f in ref.failures().items()}
    assert entry.verify() == []
    assert not list((entry.path / "parts").glob("*.npz"))


def test_a_single_remaining_crashing_sample_still_goes_to_a_worker(tmp_path):
    entry = FeatureStore(tmp_path).entry("ds", Misbehaving().identity())
    rep = fill_entry(entry, Misbehaving(), [Sample("only_segv", "train")], progress=False, workers=1,
                     timeout_s=30)
    assert rep.failed == 1
    assert entry.failures()["only_segv"].reason == "worker_crashed"
