"""``python -m mer.extract`` (plain, sharded over local processes, on a local Ray) and
``python -m mer.cache`` (list, verify, repair, gc, retry) on a real dataset written by the test."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mer.cache.store import FeatureStore
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        t = np.arange(int(0.6 * 16000)) / 16000
        f0 = 120 + 15 * (i % 5)
        wav = (0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.05 * np.sin(3 * t))) + 0.01 * rng.normal(size=t.size))
        sf.write(root / f"utt{i:03d}.wav", wav.astype(np.float32), 16000)
        rows.append((f"utt{i:03d}", "train" if i < 32 else "test", f"utt{i:03d}.wav",
                     "calm quiet words" if i % 2 else "loud excited words", "calm" if i % 2 else "excited" if i < 32 else ""))
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00")           # a torn header
    rows.append(("utt_broken", "train", "broken.wav", "", "calm"))
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "split", "audio", "text", "discrete"])
        w.writerows(rows)
    return root


def _run(module, args, cache, **kw):
    env = {**os.environ, "MER_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=kw.get("timeout", 600))


def _extract(corpus, cache, *extra):
    return _run("mer.extract", ["data=generic", f"data.root={corpus}", "features/text=tfidf",
                                "features/audio=librosa_prosody", "features/visual=none", "progress=false",
                                f"paths.runs_dir={cache}/runs", *extra], cache)


def _entries(cache):
    return {(e.path.parent.parent.name, e.identity["extractor"]): e for e in FeatureStore(cache / "features").entries()}


def _same(a, b):
    fa, fb = a.load(), b.load()
    return sorted(fa) == sorted(fb) and all(np.array_equal(fa[n], fb[n]) for n in fa) \
        and {n: f.reason for n, f in a.failures().items()} == {n: f.reason for n, f in b.failures().items()}


def test_sharded_and_ray_extraction_equal_the_plain_one(corpus, tmp_path):
    plain = _extract(corpus, tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "librosa_prosody" in plain.stdout and "decode_error 1" in plain.stdout
    ref = _entries(tmp_path / "plain")
    assert {k[1] for k in ref} == {"tfidf", "librosa_prosody"}
    sharded = _extract(corpus, tmp_path / "sharded", "extract.shards=3")
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    got = _entries(tmp_path / "sharded")
    assert got.keys() == ref.keys() and all(_same(got[k], ref[k]) for k in ref)
    assert all(not list((e.path / "parts").glob("*.npz")) for e in got.values())     # consolidated once
    again = _extract(corpus, tmp_path / "sharded", "extract.shards=3")
    assert again.returncode == 0 and " 0        " not in again.stdout.split("\n", 1)[0]
    pytest.importorskip("ray")
    ray = _extract(corpus, tmp_path / "ray", "extract.launcher=ray", "extract.shards=2")
    assert ray.returncode == 0, ray.stderr[-3000:]
    got = _entries(tmp_path / "ray")
    assert got.keys() == ref.keys() and all(_same(got[k], ref[k]) for k in ref)


def test_cache_cli_lists_verifies_repairs_and_collects(corpus, tmp_path):
    cache = tmp_path / "c"
    assert _extract(corpus, cache).returncode == 0
    out = _run("mer.cache", ["list", "--json"], cache)
    rows = json.loads(out.stdout)
    assert {r["extractor"] for r in rows} == {"tfidf", "librosa_prosody"}
    prosody = next(r for r in rows if r["extractor"] == "librosa_prosody")
    assert prosody["features"] == 40 and prosody["failures"] == 1 and prosody["dim"] == 102
    assert _run("mer.cache", ["verify"], cache).returncode == 0
    # flip one byte of the consolidated features: verify finds it, repair drops it, a rerun redoes it
    entry = _entries(cache)[next(k for k in _entries(cache) if k[1] == "librosa_prosody")]
    before = {n: a.copy() for n, a in entry.load().items()}
    feats = next(entry.path.glob("gen-*/features.npy"))
    raw = bytearray(feats.read_bytes())
    raw[-3] ^= 0xFF
    feats.write_bytes(bytes(raw))
    bad = _run("mer.cache", ["verify"], cache)
    assert bad.returncode == 1 and "CORRUPT" in bad.stdout and "features.npy" in bad.stdout
    assert _run("mer.cache", ["verify", "--repair"], cache).returncode == 0
    assert len(entry.load()) == 39                       # only the sample whose row was hit is dropped
    assert entry.failures()[max(before)].reason == "cache_corrupt"
    redo = _extract(corpus, cache)
    assert redo.returncode == 0 and _run("mer.cache", ["verify"], cache).returncode == 0
    after = entry.load()
    assert sorted(after) == sorted(before) and all(np.array_equal(after[n], before[n]) for n in before)
    # gc: an orphaned generation and a dead writer's temp file go; live data stays
    (entry.path / "gen-99").mkdir()
    (entry.path / "gen-99" / "features.npy").write_bytes(b"x" * 100)
    tmp = entry.path / ".meta.json.abc.tmp"
    tmp.write_bytes(b"partial")
    os.utime(tmp, (0, 0))
    dry = _run("mer.cache", ["gc", "--dry-run"], cache)
    assert "gen-99" in dry.stdout and ".meta.json.abc.tmp" in dry.stdout and (entry.path / "gen-99").exists()
    assert _run("mer.cache", ["gc"], cache).returncode == 0
    assert not (entry.path / "gen-99").exists() and not tmp.exists() and len(entry.load()) == 40
    # retry: forgetting a failure makes the next fill try that sample again
    assert "1 samples will be retried" in _run("mer.cache", ["retry", "--reason", "decode_error"], cache).stdout
    assert "utt_broken" not in entry.failures()
    assert _extract(corpus, cache).returncode == 0 and entry.failures()["utt_broken"].reason == "decode_error"


def test_killed_extraction_resumes_to_the_same_cache(corpus, tmp_path):
    """SIGKILL ``python -m mer.extract`` (2 shards) at random moments, then let it finish: the
    cache equals an uninterrupted run's, and no orphaned shard keeps writing."""
    import random
    import signal
    import time

    ref = _extract(corpus, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    cache = tmp_path / "killed"
    env = {**os.environ, "MER_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "mer.extract", "data=generic", f"data.root={corpus}", "features/text=tfidf",
            "features/audio=librosa_prosody", "features/visual=none", "progress=false",
            f"paths.runs_dir={cache}/runs", "extract.shards=2"]
    rng = random.Random(3)
    for _ in range(3):
        proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 12.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(1.0)
    leftovers = subprocess.run(["pgrep", "-f", f"data.root={corpus}"], capture_output=True, text=True).stdout.split()
    assert not leftovers, "processes of a killed extraction are still running"
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    want, got = _entries(tmp_path / "ref"), _entries(cache)
    assert got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    assert _run("mer.cache", ["verify"], cache).returncode == 0
