"""A cache nobody can fool: inputs are fingerprinted into each row (an edited transcript or a
replaced video re-extracts exactly that sample, a moved dataset folder nothing), every row is
checked on loading (flipped bytes, swapped names, NaNs: only those samples are dropped and
redone), and ``python -m mer.cache`` survives a broken entry."""
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import pytest

from mer.core.failures import ExtractionFailure
from feature_extractors.base import Extractor
from mer.core import fingerprints as fp_inputs
from mer.cache.__main__ import main as cache_cli
from mer.cache.fill import fill_entry
from mer.core.fingerprints import FingerprintCache
from mer.cache.store import FeatureStore, row_digest
from mer.core.samples import Sample
from mer.data.sequences import load_frame_features


class WordVector(Extractor):
    """Text: a vector of the transcript's byte histogram (it really reads the text)."""

    name = "word_vector"
    modality = "text"

    @dataclass(frozen=True)
    class Config:
        language: str = "english"
        batch_size: int = 4

    def extract_batch(self, samples):
        out = []
        for s in samples:
            text = s.text(self.config.language)
            if not text:
                out.append(ExtractionFailure(s.name, "empty_transcript", f"{s.name} has no text"))
                continue
            out.append(np.bincount(np.frombuffer(text.encode(), np.uint8) % 16, minlength=16).astype(np.float32))
        return out


class FileBytes(Extractor):
    """Audio: byte statistics of the file it decodes (level ``frame``: one row per 64 bytes)."""

    name = "file_bytes"
    modality = "audio"
    level = "utterance"

    @dataclass(frozen=True)
    class Config:
        frames: bool = False
        batch_size: int = 4

    def extract_batch(self, samples):
        out = []
        for s in samples:
            raw = np.frombuffer(open(s.audio_path, "rb").read(), np.uint8).astype(np.float32)
            rows = raw[: len(raw) // 64 * 64].reshape(-1, 64)[:, :8]
            out.append(rows if self.config.frames else rows.mean(0))
        return out


class FrameBytes(FileBytes):
    name = "frame_bytes"
    level = "frame"


def text_samples(n=8):
    return [Sample(f"s{i:03d}", "train", transcripts={"english": f"words of sample {i} " * (i + 1)}) for i in range(n)]


def media_samples(root, n=8, size=3000):
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = root / f"clip{i:02d}.wav"
        if not path.exists():
            path.write_bytes(np.random.default_rng(i).integers(0, 256, size, dtype=np.uint8).tobytes())
        out.append(Sample(f"clip{i:02d}", "train", audio_path=str(path)))
    return out


def _entry(tmp_path, ext, dataset="ds"):
    return FeatureStore(tmp_path / "cache").entry(dataset, ext.identity())


def _fill(entry, ext, samples, **kw):
    return fill_entry(entry, ext, samples, progress=False, **kw)


# --- inputs in the key --------------------------------------------------------------------
def test_edited_transcript_reextracts_exactly_that_sample(tmp_path):
    ext = WordVector()
    samples = text_samples() + [Sample("s_empty", "train", transcripts={"english": ""})]
    entry = _entry(tmp_path, ext)
    first = _fill(entry, ext, samples)
    assert (first.extracted, first.failed) == (8, 1)
    again = _fill(entry, ext, samples)
    assert (again.cached, again.extracted, again.stale) == (9, 0, 0)
    edited = [Sample(s.name, s.split, transcripts={"english": "an entirely new sentence"}) if s.name == "s003"
              else Sample(s.name, s.split, transcripts={"english": "now it has words"}) if s.name == "s_empty"
              else s for s in samples]
    rep = _fill(entry, ext, edited)
    assert (rep.extracted, rep.stale, rep.failed, rep.cached) == (2, 2, 0, 7)
    X, present = entry.load_matrix([s.name for s in edited])
    assert present.all()
    fresh = ext.extract_batch(edited)
    assert all(np.array_equal(X[i], fresh[i]) for i in range(len(edited)))   # the new sentences' vectors
    assert "s_empty" not in entry.failures()          # the old failure is superseded by the feature
    assert _fill(entry, ext, edited).extracted == 0


def test_replaced_media_reextracts_it_and_a_moved_folder_reextracts_nothing(tmp_path):
    ext = FileBytes()
    samples = media_samples(tmp_path / "data")
    entry = _entry(tmp_path, ext)
    assert _fill(entry, ext, samples).extracted == 8
    # same size, new content: the size alone would not notice
    (tmp_path / "data" / "clip05.wav").write_bytes(np.full(3000, 7, np.uint8).tobytes())
    rep = _fill(entry, ext, samples)
    assert (rep.extracted, rep.stale) == (1, 1)
    assert np.allclose(entry.load(["clip05"])["clip05"], 7.0)
    # moved (and copied) dataset folder: content unchanged, nothing re-extracted
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    shutil.rmtree(tmp_path / "data")
    moved = media_samples(tmp_path / "moved")
    rep = _fill(entry, ext, moved)
    assert (rep.extracted, rep.stale, rep.cached) == (0, 0, 8)
    # a media file that appears later (or is fixed) is picked up
    big = tmp_path / "moved" / "clip01.wav"
    big.write_bytes(np.random.default_rng(99).integers(0, 256, 5 << 20, dtype=np.uint8).tobytes())
    assert _fill(entry, ext, moved).stale == 1


def test_fingerprints_are_remembered_by_stat_across_runs(tmp_path):
    samples = media_samples(tmp_path / "data", n=30)
    for s in samples:                                   # files that have been still for a while
        os.utime(s.audio_path, (time.time() - 60, time.time() - 60))
    path = tmp_path / "fp.jsonl"
    fp_inputs._PROCESS.clear()
    first = FingerprintCache(path)
    a = fp_inputs.fingerprints(FileBytes(), samples, first)
    assert first.reads == 30
    fp_inputs._PROCESS.clear()                         # a new process: only the file remembers
    second = FingerprintCache(path)
    b = fp_inputs.fingerprints(FileBytes(), samples, second)
    assert a == b and second.reads == 0
    (tmp_path / "data" / "clip03.wav").write_bytes(b"x" * 3000)
    os.utime(tmp_path / "data" / "clip03.wav", (time.time() - 30, time.time() - 30))
    third = FingerprintCache(path)
    c = fp_inputs.fingerprints(FileBytes(), samples, third)
    assert third.reads == 1 and {n for n in a if a[n] != c[n]} == {"clip03"}


# --- checked on loading -------------------------------------------------------------------
def _consolidated(tmp_path, n=12):
    ext = WordVector()
    samples = text_samples(n)
    entry = _entry(tmp_path, ext)
    _fill(entry, ext, samples)
    ref = {n: a.copy() for n, a in entry.load().items()}    # load() maps the file: copy before tampering
    gen = next(entry.path.glob("gen-*"))
    return ext, samples, entry, ref, gen


def test_flipped_bytes_in_a_generation_drop_only_that_row(tmp_path):
    ext, samples, entry, ref, gen = _consolidated(tmp_path)
    names = [s.name for s in samples]
    feats = gen / "features.npy"
    raw = bytearray(feats.read_bytes())
    order = json.loads((gen / "names.json").read_text())
    row = order.index("s007")
    raw[len(raw) - (len(order) - row) * 16 * 4 + 5] ^= 0x10       # one byte inside row s007
    feats.write_bytes(bytes(raw))
    X, present = entry.load_matrix(names)
    assert [n for n, p in zip(names, present) if not p] == ["s007"]
    assert not X[names.index("s007")].any()
    assert entry.failures()["s007"].reason == "cache_corrupt"
    rep = _fill(entry, ext, samples)
    assert (rep.extracted, rep.cached) == (1, 11)
    got = entry.load()
    assert sorted(got) == sorted(ref) and all(np.array_equal(got[n], ref[n]) for n in ref)
    assert "s007" not in entry.failures() and entry.verify() == []


def test_flipped_bytes_found_by_the_fill_itself_are_redone_in_that_fill(tmp_path):
    ext, samples, entry, ref, gen = _consolidated(tmp_path)
    raw = bytearray((gen / "features.npy").read_bytes())
    raw[-1] ^= 0x01
    (gen / "features.npy").write_bytes(bytes(raw))
    rep = _fill(entry, ext, samples)
    assert (rep.corrupt, rep.extracted) == (1, 1)
    X, present = entry.load_matrix([s.name for s in samples])
    assert present.all() and all(np.array_equal(X[i], ref[s.name]) for i, s in enumerate(samples))


def test_swapped_names_are_caught(tmp_path):
    ext, samples, entry, ref, gen = _consolidated(tmp_path)
    order = json.loads((gen / "names.json").read_text())
    i, j = order.index("s002"), order.index("s009")
    order[i], order[j] = order[j], order[i]
    (gen / "names.json").write_text(json.dumps(order))
    X, present = entry.load_matrix([s.name for s in samples])
    assert {s.name for s, p in zip(samples, present) if not p} == {"s002", "s009"}
    assert _fill(entry, ext, samples).extracted == 2
    got = entry.load()
    assert all(np.array_equal(got[n], ref[n]) for n in ref)


def test_nan_with_recomputed_checksums_is_rejected(tmp_path):
    ext, samples, entry, ref, gen = _consolidated(tmp_path)
    data = np.load(gen / "features.npy")
    order = json.loads((gen / "names.json").read_text())
    data[order.index("s004"), 3] = np.nan
    np.save(gen / "features.npy", data)
    # whoever did it also recomputed every checksum
    meta = json.loads((entry.path / "meta.json").read_text())
    meta["checksums"]["features.npy"] = hashlib.sha256((gen / "features.npy").read_bytes()).hexdigest()
    (entry.path / "meta.json").write_text(json.dumps(meta))
    rows = json.loads((gen / "rows.json").read_text())
    rows["crc32"] = [row_digest(n, data[k]) for k, n in enumerate(order)]
    (gen / "rows.json").write_text(json.dumps(rows))
    X, present = entry.load_matrix([s.name for s in samples])
    assert np.isfinite(X).all() and {s.name for s, p in zip(samples, present) if not p} == {"s004"}
    assert "NaN" in entry.failures()["s004"].message
    assert _fill(entry, ext, samples).extracted == 1


def test_a_damaged_part_drops_only_its_samples(tmp_path):
    ext = WordVector()
    samples = text_samples(12)
    entry = _entry(tmp_path, ext)
    _fill(entry, ext, samples, consolidate=False)
    parts = sorted((entry.path / "parts").glob("*.npz"))
    assert len(parts) == 3                                  # batch_size 4
    raw = bytearray(parts[1].read_bytes())
    raw[200] ^= 0xFF
    parts[1].write_bytes(bytes(raw))
    hit = set(json.loads([line for line in (entry.path / "index.jsonl").read_text().splitlines()
                          if parts[1].name in line][0])["names"])
    got = entry.load()
    assert set(got) == {s.name for s in samples} - hit
    assert {n for n, f in entry.failures().items() if f.reason == "cache_corrupt"} == hit
    rep = _fill(entry, ext, samples)
    assert rep.extracted == len(hit) and len(entry.load()) == 12 and entry.verify() == []


def test_frame_level_rows_are_checked_too(tmp_path):
    ext = FrameBytes(frames=True)
    samples = media_samples(tmp_path / "data", n=6)
    entry = _entry(tmp_path, ext)
    _fill(entry, ext, samples)
    gen = next(entry.path.glob("gen-*"))
    order = json.loads((gen / "names.json").read_text())
    offsets = np.load(gen / "offsets.npy")
    data = np.load(gen / "features.npy")
    data[offsets[order.index("clip02")] + 1, 0] += 1.0      # one frame of one clip
    np.save(gen / "features.npy", data)
    names = [s.name for s in samples]
    feats = load_frame_features(entry, names)
    assert [n for n, p in zip(names, feats.present) if not p] == ["clip02"]
    assert feats.lengths[names.index("clip02")] == 0 and feats.lengths[names.index("clip03")] > 0
    assert _fill(entry, ext, samples).extracted == 1
    assert load_frame_features(entry, names).present.all()


# --- tools survive a broken entry ---------------------------------------------------------
def test_a_truncated_meta_json_leaves_the_other_entries_checkable(tmp_path, capsys):
    root = tmp_path / "cache" / "features"
    store = FeatureStore(root)
    good_ext, bad_ext = WordVector(), WordVector(language="chinese")
    samples = [Sample(s.name, s.split, transcripts={"english": s.text("english"), "chinese": "你好" * (k + 1)})
               for k, s in enumerate(text_samples(6))]
    good, bad = store.entry("ds", good_ext.identity()), store.entry("ds", bad_ext.identity())
    _fill(good, good_ext, samples)
    _fill(bad, bad_ext, samples)
    ref = {n: a.copy() for n, a in bad.load().items()}
    meta = bad.path / "meta.json"
    meta.write_bytes(meta.read_bytes()[:40])                 # truncated mid-write by something else
    (root / "ds" / "clean" / "junk-0123abcd").mkdir()
    (root / "ds" / "clean" / "junk-0123abcd" / "meta.json").write_bytes(b"\x00\xff garbage")

    assert cache_cli(["--root", str(root), "list"]) == 0
    out = capsys.readouterr().out
    assert str(bad.path) in out and "meta.json is unreadable" in out and "junk-0123abcd" in out
    assert "word_vector" in out and "3 entries" in out

    assert cache_cli(["--root", str(root), "verify"]) == 1
    out = capsys.readouterr().out
    lines = {line.split()[1]: line.split()[0] for line in out.splitlines() if line.startswith(("ok", "CORRUPT"))}
    assert lines[str(good.path)] == "ok" and lines[str(bad.path)] == "CORRUPT"
    assert "--repair rebuilds it from gen-1" in out

    assert cache_cli(["--root", str(root), "gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "gen-1" not in out                                # the broken entry's live generation stays

    assert cache_cli(["--root", str(root), "verify", "--repair"]) == 0
    capsys.readouterr()
    assert cache_cli(["--root", str(root), "verify"]) == 0
    again = FeatureStore(root).entry("ds", bad_ext.identity())
    got = again.load()
    assert sorted(got) == sorted(ref) and all(np.array_equal(got[n], ref[n]) for n in ref)
    assert _fill(again, bad_ext, samples).extracted == 0


def test_a_fill_rewrites_a_broken_meta_json_and_keeps_its_features(tmp_path):
    ext = WordVector()
    samples = text_samples(6)
    entry = _entry(tmp_path, ext)
    _fill(entry, ext, samples)
    (entry.path / "meta.json").write_text("{\"identity\": ")
    rep = _fill(entry, ext, samples + [Sample("s_new", "train", transcripts={"english": "hello there"})])
    assert (rep.cached, rep.extracted) == (6, 1)
    assert json.loads((entry.path / "meta.json").read_text())["count"] == 7


@pytest.mark.parametrize("target", ["index.jsonl", "failures.jsonl"])
def test_garbled_lines_never_claim_a_sample_is_done(tmp_path, target):
    ext = WordVector()
    samples = text_samples(8) + [Sample("s_empty", "train", transcripts={"english": ""})]
    entry = _entry(tmp_path, ext)
    _fill(entry, ext, samples, consolidate=False)
    path = entry.path / target
    text = path.read_text()
    path.write_text(text.replace("s00", "s0X", 1))          # a flipped byte in a name
    rep = _fill(entry, ext, samples)
    X, present = entry.load_matrix([s.name for s in samples])
    assert present[:8].all() and "s_empty" in entry.failures()
    assert rep.extracted + rep.failed <= 5                  # at most one batch redone


def test_shared_face_crops_of_a_replaced_video_are_not_reused(tmp_path):
    from feature_extractors.visual.faces import FaceClip, FaceConfig, face_entry, read_cached_clip, write_cached_clip

    cfg = FaceConfig()
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"a" * 5000)
    k = 2
    clip = FaceClip(crops=np.zeros((k, cfg.size, cfg.size, 3), np.uint8), frame_index=np.arange(k),
                    total_frames=10, fps=25.0, source="video", boxes=np.zeros((k, 4), np.int64),
                    roll_deg=np.zeros(k, np.float32), frames_tried=10)
    entry = face_entry(tmp_path / "faces" / "0123abcd", cfg)
    write_cached_clip(entry, "clip", clip, str(video))
    assert read_cached_clip(entry, "clip", cfg, str(video)) is not None
    video.write_bytes(b"b" * 5000)                      # same size, other video
    assert read_cached_clip(entry, "clip", cfg, str(video)) is None


def test_a_verified_generation_is_stamped_and_any_later_write_is_still_caught(tmp_path, monkeypatch):
    from mer.cache import store as store_mod

    monkeypatch.setattr(store_mod, "_SETTLED_NS", 0)      # stamp files written a moment ago too
    ext, samples, entry, ref, gen = _consolidated(tmp_path)
    names = [s.name for s in samples]
    entry.load_matrix(names)
    assert (gen / ".verified.json").is_file()
    block = entry._generation(entry._meta())
    assert store_mod._stamp_ok(gen) and block.trusted
    time.sleep(0.05)                                         # past the file system's clock tick
    raw = bytearray((gen / "features.npy").read_bytes())
    raw[-7] ^= 0x04
    (gen / "features.npy").write_bytes(bytes(raw))
    assert not store_mod._stamp_ok(gen)
    X, present = entry.load_matrix(names)
    assert present.sum() == len(names) - 1


def test_a_run_redoes_a_corrupt_row_and_a_changed_transcript_before_training(tmp_path):
    from omegaconf import OmegaConf

    from mer.features import Stream
    from mer.features import _load_streams

    ext, samples, entry, ref, gen = _consolidated(tmp_path)
    raw = bytearray((gen / "features.npy").read_bytes())
    raw[-2] ^= 0x40
    (gen / "features.npy").write_bytes(bytes(raw))
    samples[0] = Sample(samples[0].name, "train", transcripts={"english": "changed words"})
    cfg = OmegaConf.create({"progress": False, "extract": {"workers": 0}})
    names = [s.name for s in samples]
    mods, info, failures = _load_streams([Stream("text", ext, entry)], samples, names, cfg, "cpu", "clean")
    assert mods["text"].present.all() and failures == []
    assert info["text"]["extracted_now"] == 2 and info["text"]["from_cache"] == 10
    fresh = ext.extract_batch(samples)
    assert all(np.array_equal(mods["text"].X[i], fresh[i]) for i in range(len(samples)))


def test_fingerprinting_never_opens_a_named_pipe(tmp_path):
    fifo = tmp_path / "stuck.wav"
    os.mkfifo(fifo)                                     # opening it for reading would block forever
    fp = FingerprintCache().file(fifo)
    assert fp.startswith("special:")
