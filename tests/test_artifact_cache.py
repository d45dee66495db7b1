"""Artifact entries (mer.core.artifacts): items written whole, read verified, damage found by
``verify`` and dropped by ``repair``; face crops and transcripts as kinds of it; ``python -m
mer.cache`` listing, verifying, repairing and collecting every kind."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from feature_extractors.asr.cache import ASR_KIND, read_transcripts
from feature_extractors.asr.base import Transcript
from feature_extractors.visual.faces import (FaceClip, FaceConfig, face_config_hash, face_entry, read_cached_clip,
                                             write_cached_clip)
from mer.cache.__main__ import main as cache_cli
from mer.cache.fill import fill_entry
from mer.cache.store import FeatureStore
from mer.core.artifacts import ArtifactEntry, ArtifactKind, find_artifacts, open_artifact
from mer.core.errors import UserError
from mer.core.hashing import cache_key
from tests.test_cache_integrity import WordVector, text_samples

KIND = ArtifactKind("toy")
IDENTITY = {"toy": 1, "options": {"size": 3}}


def toy_entry(root: Path) -> ArtifactEntry:
    return ArtifactEntry(root / "ds" / "clean" / "toy" / cache_key(IDENTITY)[:8], KIND, IDENTITY)


def filled(root: Path) -> ArtifactEntry:
    entry = toy_entry(root)
    for i in range(3):
        entry.write(f"clip{i}", f"payload {i}".encode() * 100, f"fp{i}", ".bin")
    entry.write_failure("broken", "no_face", "no face in 0 of 6 frames of broken", "fpb")
    return entry


def test_items_read_back_verified_from_a_fresh_entry(tmp_path):
    filled(tmp_path)
    entry = toy_entry(tmp_path)                                     # another process, say
    item = entry.read("clip1", "fp1")
    assert item.data == b"payload 1" * 100 and item.failure is None
    assert entry.read("broken", "fpb").failure == ("no_face", "no face in 0 of 6 frames of broken")
    assert entry.read("absent") is None
    meta = json.loads((entry.path / "meta.json").read_text())
    assert (meta["kind"], meta["identity"], meta["key"]) == ("toy", IDENTITY, cache_key(IDENTITY))
    assert entry.verify() == []
    summary = entry.summary()
    assert (summary["items"], summary["failures"], summary["dropped"]) == (3, 1, 0)


def test_a_damaged_meta_json_is_rewritten_and_a_foreign_one_refused(tmp_path):
    entry = filled(tmp_path)
    (entry.path / "meta.json").write_text('{"kind": "toy", "ident')          # torn
    fresh = toy_entry(tmp_path)
    assert fresh.read("clip0", "fp0").data == b"payload 0" * 100            # items stand on their own checksums
    [problem] = fresh.verify()
    assert "meta.json is unreadable" in problem and problem.endswith("--repair writes it anew")
    fresh.write("clip5", b"five", "fp5", ".bin")                             # the next write rewrites it
    assert toy_entry(tmp_path).verify() == []
    with pytest.raises(UserError, match="belongs to another configuration"):
        ArtifactEntry(entry.path, KIND, {"toy": 2}).read("clip0")


def test_a_stale_source_fingerprint_reads_as_absent_and_is_redone(tmp_path):
    entry = filled(tmp_path)
    assert entry.read("clip0", "fp0-replaced-video") is None
    entry.write("clip0", b"new crops", "fp0-replaced-video", ".bin")
    again = toy_entry(tmp_path)
    assert again.read("clip0", "fp0-replaced-video").data == b"new crops"
    assert again.read("clip0", "fp0") is None                       # the old source's item is gone


@pytest.mark.parametrize("damage", ["truncated", "garbled", "missing"])
def test_a_damaged_item_file_reads_as_absent_verify_reports_it_and_repair_drops_it(tmp_path, damage):
    entry = filled(tmp_path)
    path = entry.item_path("clip2", ".bin")
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])                    # a kill mid-copy, say
    elif damage == "garbled":
        path.write_bytes(data[:10] + b"X" + data[11:])
    else:
        path.unlink()
    fresh = toy_entry(tmp_path)
    problems = fresh.verify()
    assert len(problems) == 1 and "1 stored items fail their check (clip2" in problems[0]
    assert fresh.read("clip2", "fp2") is None                       # absent, never returned ...
    assert "dropped" in fresh.records()["clip2"]                    # ... and recorded
    assert toy_entry(tmp_path).summary()["dropped"] == 1
    assert fresh.verify(repair=True)
    assert toy_entry(tmp_path).verify() == []
    assert "clip2" not in toy_entry(tmp_path).records() and not path.exists()
    assert toy_entry(tmp_path).read("clip1", "fp1").data == b"payload 1" * 100      # the others stay


def test_a_garbled_record_line_reads_as_absent_and_repair_rewrites_the_log(tmp_path):
    entry = filled(tmp_path)
    log = entry.records_path
    lines = log.read_text().splitlines()
    assert len(lines) == 4
    lines[1] = lines[1].replace('"clip1"', '"clip7"')               # whole JSON, wrong crc
    log.write_text("\n".join(lines) + "\n")
    fresh = toy_entry(tmp_path)
    assert fresh.read("clip1", "fp1") is None and fresh.read("clip7") is None
    assert fresh.damaged_lines == 1
    problems = fresh.verify()
    assert any("1 damaged lines" in p for p in problems)
    assert any("files have no record (clip1.bin" in p for p in problems)   # its file is an orphan now
    fresh.verify(repair=True)
    assert toy_entry(tmp_path).verify() == [] and not entry.item_path("clip1", ".bin").exists()
    assert sorted(toy_entry(tmp_path).records()) == ["broken", "clip0", "clip2"]


def test_a_torn_last_record_is_skipped_and_the_next_record_starts_a_line_of_its_own(tmp_path):
    entry = filled(tmp_path)
    with open(entry.records_path, "ab") as f:                       # a kill mid-append
        f.write(b'{"item": "clip9", "source": "fp9", "fi')
    fresh = toy_entry(tmp_path)
    assert fresh.read("clip9") is None and fresh.damaged_lines == 0  # normal after a crash
    assert fresh.verify() == []
    fresh.write("clip9", b"done", "fp9", ".bin")
    assert toy_entry(tmp_path).read("clip9", "fp9").data == b"done"
    assert toy_entry(tmp_path).read("clip0", "fp0") is not None


def test_a_reader_sees_records_appended_by_another_writer(tmp_path):
    reader = filled(tmp_path)
    assert reader.read("late") is None
    toy_entry(tmp_path).write("late", b"late bytes", "fpl", ".bin")  # another process
    assert reader.read("late", "fpl").data == b"late bytes"


def test_face_crops_are_an_artifact_kind(tmp_path):
    cfg = FaceConfig()
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"v" * 4000)
    k = 3
    clip = FaceClip(crops=np.full((k, cfg.size, cfg.size, 3), 7, np.uint8), frame_index=np.arange(k),
                    total_frames=9, fps=25.0, source="video", boxes=np.ones((k, 4), np.int64),
                    roll_deg=np.zeros(k, np.float32), frames_tried=9)
    entry = face_entry(tmp_path / "ds" / "clean" / "faces" / face_config_hash(cfg)[:8], cfg)
    write_cached_clip(entry, "clip", clip, str(video))
    got = read_cached_clip(face_entry(entry.path, cfg), "clip", cfg, str(video))
    np.testing.assert_array_equal(got.crops, clip.crops)
    [found] = find_artifacts(tmp_path)
    assert found.kind.name == "faces" and found.identity["face_pipeline"] == entry.identity["face_pipeline"]
    assert found.verify() == []
    (entry.path / "clip.npz").write_bytes(b"PK not a zip")
    assert read_cached_clip(ArtifactEntry(entry.path, entry.kind, entry.identity), "clip", cfg, str(video)) is None


def _legacy_asr(root: Path) -> Path:
    """A transcript folder as written before artifact entries: identity.json, lines without crc."""
    identity = {"asr": "whisper", "version": "1", "config": {"beam_size": 5}}
    folder = root / "ds" / "clean" / "asr" / cache_key(identity)[:8]
    folder.mkdir(parents=True)
    (folder / "identity.json").write_text(json.dumps({"key": cache_key(identity), "identity": identity}))
    lines = [{**Transcript("a", "hello there").to_json(), "media_fingerprint": "f" * 32},
             {**Transcript.failed("b", "empty_audio", "b has no audio").to_json(), "media_fingerprint": "e" * 32}]
    (folder / "transcripts.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    return folder


def test_an_old_transcript_folder_is_adopted_by_repair(tmp_path):
    folder = _legacy_asr(tmp_path)
    entry = open_artifact(folder)
    assert entry.kind == ASR_KIND and entry.identity["asr"] == "whisper"
    assert entry.read("a").record["text"] == "hello there"
    problems = entry.verify(repair=True)
    assert len(problems) == 1 and "meta.json is missing (an older layout" in problems[0]
    assert problems[0].endswith("--repair writes it anew")
    assert open_artifact(folder).verify() == []
    assert json.loads((folder / "meta.json").read_text())["records"] == "transcripts.jsonl"
    assert read_transcripts(folder / "transcripts.jsonl")["a"].text == "hello there"


def test_the_cli_lists_verifies_repairs_and_collects_every_kind(tmp_path, capsys):
    root = tmp_path / "features"
    ext = WordVector()
    fill_entry(FeatureStore(root).entry("ds", ext.identity()), ext, text_samples(4), progress=False)
    toy = filled(root)
    _legacy_asr(root)
    face_folder = root / "ds" / "clean" / "faces" / "0badf00d"          # a crop cache of the older layout
    face_folder.mkdir(parents=True)
    (face_folder / "clip.npz").write_bytes(b"old crops")

    assert cache_cli(["--root", str(root), "list"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split()[:2] == ["kind", "dataset"] and "items" in header.split()
    kinds = {line.split()[0]: line.split() for line in rows if line.split() and line.split()[1] == "ds"}
    assert set(kinds) == {"features", "toy", "asr", "faces"}
    assert "4 entries (1 asr, 1 faces, 1 features, 1 toy)" in out
    assert f"BROKEN {face_folder}" in out and "meta.json is missing" in out

    assert cache_cli(["--root", str(root), "list", "--json"]) == 0
    by_kind = {r["kind"]: r for r in json.loads(capsys.readouterr().out)}
    assert (by_kind["toy"]["items"], by_kind["toy"]["failures"]) == (3, 1)
    assert (by_kind["asr"]["items"], by_kind["features"]["items"]) == (2, 4)
    assert by_kind["toy"]["size"] > 0 and by_kind["features"]["extractor"] == "word_vector"

    toy.item_path("clip0", ".bin").write_bytes(b"torn")
    assert cache_cli(["--root", str(root), "gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove {face_folder}" in out and "older layout that nothing reads" in out
    assert "/asr/" not in out                                        # an older transcript folder is adopted

    assert cache_cli(["--root", str(root), "verify"]) == 1
    out = capsys.readouterr().out
    status = {line.split()[1]: line.split()[0] for line in out.splitlines() if line.startswith(("ok", "CORRUPT"))}
    assert status[str(toy.path)] == "CORRUPT" and status[str(face_folder)] == "CORRUPT"
    assert status[str(FeatureStore(root).entry("ds", ext.identity()).path)] == "ok"
    assert cache_cli(["--root", str(root), "verify", "--repair"]) == 0
    capsys.readouterr()
    assert not face_folder.exists()                                  # the older layout's crops go
    assert toy_entry(root).read("clip0") is None and toy_entry(root).read("clip1", "fp1") is not None

    assert cache_cli(["--root", str(root), "retry", "--reason", "no_face"]) == 0
    assert "1 samples will be retried" in capsys.readouterr().out
    assert "broken" not in toy_entry(root).records()

    old = 1_000_000_000.0
    for name in (".used", "meta.json", "records.jsonl"):
        os.utime(toy.path / name, (old, old))
    assert cache_cli(["--root", str(root), "gc", "--unused-days", "30"]) == 0
    out = capsys.readouterr().out
    assert f"removing {toy.path}" in out and "toy entry not used for more than 30 days" in out
    assert not toy.path.exists() and (root / "ds" / "clean" / "asr").is_dir()


def test_corrupted_copies_are_an_artifact_kind(tmp_path, capsys):
    pytest.importorskip("av")
    from mer.data.corrupt import CorruptionSettings, corrupt_manifest
    from tests.test_corrupt import write_release

    manifest = write_release(tmp_path / "release", n_train=2, n_test=1, wav_sample=False)
    out = tmp_path / "cache" / "corrupted" / "ds" / "snr6"                  # where the pipeline keeps it
    _, copy = corrupt_manifest(manifest, "snr6", CorruptionSettings(), out, workers=0, progress=False)
    log = out / "corruption.jsonl"
    assert len(log.read_text().splitlines()) == 3
    corrupt_manifest(manifest, "snr6", CorruptionSettings(), out, workers=0, progress=False)
    assert len(log.read_text().splitlines()) == 3                          # a rerun redoes nothing

    victim = copy.samples[1]
    good = Path(victim.video_path).read_bytes()
    Path(victim.video_path).write_bytes(good[: len(good) // 2])            # a copy cut short
    features = tmp_path / "cache" / "features"
    assert cache_cli(["--root", str(features), "verify"]) == 1
    out_text = capsys.readouterr().out
    assert f"CORRUPT   {out}" in out_text and "has changed since it was written" in out_text
    _, again = corrupt_manifest(manifest, "snr6", CorruptionSettings(), out, workers=0, progress=False)
    assert Path(victim.video_path).read_bytes() == good                    # redone, byte for byte ...
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [d["item"] for d in lines[3:]] == [victim.name, victim.name]    # ... alone (dropped, then done)
    assert "dropped" in lines[3] and again.records[victim.name] == copy.records[victim.name]

    assert cache_cli(["--root", str(features), "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["kind"], row["dataset"], row["condition"], row["items"]) == ("corrupted", "ds", "snr6", 3)
    assert cache_cli(["--root", str(features), "verify", "--repair"]) == 0
    assert cache_cli(["--root", str(features), "verify"]) == 0
    assert (out / "train-label.csv").is_file() and Path(victim.video_path).is_file()   # repair keeps the copy
