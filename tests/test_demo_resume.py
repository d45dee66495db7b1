"""An interrupted demo generation resumes: the clips written whole are kept, only the missing ones
are rendered, and the corpus is byte for byte the one an uninterrupted run writes."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mer import demo

REPO = Path(__file__).resolve().parents[1]
SIZE = dict(seed=7, n_train=12, n_per_test=2)          # 18 clips, a few seconds
N_CLIPS = 12 + 3 * 2


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file, the marker's timing taken out (it differs between any two runs)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == demo.COMPLETE_MARKER:
            meta = json.loads(data)
            meta.pop("generation_s")
            data = json.dumps(meta, sort_keys=True).encode()
        out[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def done_lines(partial: Path) -> int:
    try:
        return len((partial / demo.DONE_CLIPS).read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def test_killed_generation_resumes_to_the_same_bytes(tmp_path):
    cache = tmp_path / "resumed"
    root = demo.corpus_root(cache, **SIZE)
    partial = demo.partial_dir(root)
    code = ("import sys; from mer import demo; "
            f"demo.demo_corpus(sys.argv[1], **{SIZE!r}, progress=False, workers=1)")
    child = subprocess.Popen([sys.executable, "-c", code, str(cache)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while done_lines(partial) < 4 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, "generation ended before it could be interrupted"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert not demo.is_complete(root)
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in partial.glob("*/*.mp4")}
    assert 4 <= len(kept) < N_CLIPS
    # a torn file as a kill mid-write leaves it: removed, never taken for a clip
    (partial / "train" / ".sample_00000099.mp4.1234.tmp").write_bytes(b"\0" * 100)

    resumed = demo.demo_corpus(cache, **SIZE, progress=False, workers=1)
    assert resumed == root and demo.is_complete(root)
    for old, (ino, mtime) in kept.items():       # kept clips were not rendered again
        new = root / old.relative_to(partial)
        assert (new.stat().st_ino, new.stat().st_mtime_ns) == (ino, mtime), new

    fresh = demo.demo_corpus(tmp_path / "fresh", **SIZE, progress=False, workers=1)
    assert digests(resumed) == digests(fresh)
    assert len([k for k in digests(fresh) if k.endswith(".mp4")]) == N_CLIPS


def test_clip_that_differs_from_its_record_is_rendered_again(tmp_path, monkeypatch):
    size = dict(seed=8, n_train=6, n_per_test=1)
    root = demo.corpus_root(tmp_path, **size)
    calls = []
    real_render = demo.render_clip

    def stop_after_four(plan, out_dir):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(plan.name)
        return real_render(plan, out_dir)

    monkeypatch.setattr("mer.demo.corpus.render_clip", stop_after_four)
    with pytest.raises(KeyboardInterrupt):
        demo.demo_corpus(tmp_path, **size, progress=False, workers=1)
    monkeypatch.setattr("mer.demo.corpus.render_clip", real_render)
    partial = demo.partial_dir(root)
    clips = sorted(partial.glob("*/*.mp4"))
    assert len(clips) == 4
    clips[0].write_bytes(clips[0].read_bytes()[:-10])                  # truncated behind our back
    out = demo.demo_corpus(tmp_path, **size, progress=False, workers=1)
    fresh = demo.demo_corpus(tmp_path / "fresh", **size, progress=False, workers=1)
    assert digests(out) == digests(fresh)
