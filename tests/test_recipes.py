"""Dataset recipes on tiny layouts written here, and on the real label/transcript files when present."""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

from mer.core.samples import MELD_CLASSES, MER_CLASSES
from mer.data.manifest import Manifest
from mer.data.recipes import RECIPES, prepare
from mer.data.safe_pickle import UnsafePickleError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                       reason=f"real MER label/transcript files not present at {SHARED_DATA}")


# --- fixture writers ---------------------------------------------------------------------------
def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def touch(path: Path) -> Path:
    """An empty stand-in media file: recipes list media, they never decode them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_label_npz(path: Path, corpora: dict[str, dict]) -> Path:
    """A MERBench label npz: each corpus a 0-d object array wrapping ``{name: {'emo', 'val'}}``."""
    np.savez(path, **{key: np.array(corpus, dtype=object) for key, corpus in corpora.items()})
    return path


def by_split(manifest: Manifest) -> dict[str, tuple[int, int]]:
    """``{split: (samples, labelled)}``."""
    return {sp: (len(manifest.split(sp)), sum(s.is_labelled for s in manifest.split(sp))) for sp in manifest.splits}


def test_every_layout_is_registered():
    assert {"mer2023", "merbench", "meld", "mer2024", "mer2025", "generic"} <= set(RECIPES.names())


# --- mer2023 -----------------------------------------------------------------------------------
@pytest.fixture
def mer2023_release(tmp_path) -> Path:
    root = tmp_path / "mer2023-release"
    write_csv(root / "train-label.csv", ["name", "discrete", "valence"],
              [["00123", "happy", "1.5"], ["sample_00000002", "sad", "-2.25"], ["sample_00000003", "neutral", "0"]])
    touch(root / "train" / "00123.mp4")
    touch(root / "train" / "sample_00000002.avi")
    write_csv(root / "test1-label.csv", ["name", "discrete", "valence"], [["sample_00000010", "angry", "-3"]])
    touch(root / "test1" / "sample_00000010.mp4")
    touch(root / "test2" / "sample_00000020.mp4")        # no label file: names come from the folder
    write_csv(root / "test3-label.csv", ["name", "discrete"], [["samplenew_00000030", "worried"]])
    touch(root / "test3" / "samplenew_00000030.mp4")
    touch(root / "test3" / "sample_unlabelled_pool.mp4")  # MER-SEMI pool video, in no label file
    touch(root / "test3" / "._sample_unlabelled_pool.mp4")  # macOS resource fork: not media
    write_csv(root / "transcription-engchi-polish.csv", ["name", "chinese", "english"],
              [["00123", "你好", "Hello"], ["sample_00000002", "", ""], ["sample_00000003", "不", "NA"],
               ["sample_00000010", "好", "Good"]])
    return root


def test_mer2023_release_layout(mer2023_release):
    m = prepare("mer2023", mer2023_release)
    assert m.label_spec.classes == MER_CLASSES and m.label_spec.has_valence
    assert by_split(m) == {"train": (3, 3), "test1": (1, 1), "test2": (1, 0), "test3": (2, 1)}
    assert m.names()[0] == "00123"  # not 123
    s = m["00123"]
    assert (s.split, s.discrete, s.valence) == ("train", "happy", 1.5)
    assert s.video_path == str(mer2023_release / "train" / "00123.mp4")
    assert m["sample_00000002"].video_path.endswith("sample_00000002.avi")
    assert m["sample_00000003"].video_path is None  # media are optional per sample
    assert m["samplenew_00000030"].discrete == "worried"
    assert m["samplenew_00000030"].valence is None  # test3 has no valence column
    assert m["sample_unlabelled_pool"].split == "test3" and not m["sample_unlabelled_pool"].is_labelled


def test_mer2023_transcripts_empty_missing_and_na(mer2023_release):
    m = prepare("mer2023", mer2023_release)
    assert m["00123"].transcripts == {"chinese": "你好", "english": "Hello"}
    assert m["sample_00000002"].transcripts == {"chinese": "", "english": ""}  # real, empty
    assert m["sample_00000003"].text("english") == "NA"  # a word, not a missing value
    assert m["sample_00000020"].transcripts == {}  # not in the transcript file: no text known
    assert m["sample_00000020"].text("english") is None


def test_mer2023_names_only_layout(tmp_path):
    root = tmp_path / "names-only"
    write_csv(root / "train-label.csv", ["name", "discrete", "valence"], [["a", "happy", "1"], ["b", "sad", "-1"]])
    for split, name in [("test1", "t1"), ("test2", "t2"), ("test3", "t3")]:
        write_csv(root / f"{split}-names.csv", ["name"], [[name], [f"{name}_0007"]])
    write_csv(root / "transcription-engchi-polish.csv", ["name", "chinese", "english"], [["a", "甲", "A"]])
    m = prepare("mer2023", root)
    assert by_split(m) == {"train": (2, 2), "test1": (2, 0), "test2": (2, 0), "test3": (2, 0)}
    assert all(s.video_path is None and s.audio_path is None and s.face_path is None for s in m.samples)
    assert m.modalities_present() == {"text"}


def test_mer2023_old_transcription_file_is_chinese(tmp_path):
    root = tmp_path / "old"
    write_csv(root / "train-label.csv", ["name", "discrete", "valence"], [["a", "happy", "1"]])
    write_csv(root / "transcription.csv", ["name", "sentence"], [["a", "今天天气真好"]])
    m = prepare("mer2023", root)  # default language english: the Chinese-only file is still accepted
    assert m["a"].transcripts == {"chinese": "今天天气真好"}


def test_mer2023_placeholder_test_labels_are_unknown(tmp_path):
    root = tmp_path / "placeholders"
    write_csv(root / "train-label.csv", ["name", "discrete", "valence"], [["a", "neutral", "-10"]])
    write_csv(root / "test1-label.csv", ["name", "discrete", "valence"],
              [["t", "neutral", "-10"], ["u", "neutral", "-10"]])
    touch(root / "test1" / "v.mp4")  # a video no file lists: unknown too, and no reason to trust the rest
    m = prepare("mer2023", root)
    assert (m["a"].discrete, m["a"].valence) == ("neutral", None)  # train: always a label
    assert by_split(m)["test1"] == (3, 0)
    assert m["t"].valence is None


def test_mer2023_all_neutral_test3_without_valence_stays_labelled(tmp_path):
    # Only an explicit -10 marks a placeholder: test3 has no valence column, and a small split
    # that happens to be all neutral is still labelled.
    write_csv(tmp_path / "train-label.csv", ["name", "discrete", "valence"], [["a", "happy", "1"]])
    write_csv(tmp_path / "test3-label.csv", ["name", "discrete"], [["n1", "neutral"], ["n2", "neutral"]])
    m = prepare("mer2023", tmp_path)
    assert [(s.discrete, s.valence) for s in m.split("test3")] == [("neutral", None), ("neutral", None)]


def test_mer2023_missing_train_labels_says_what_is_there(tmp_path):
    write_csv(tmp_path / "labels.csv", ["name"], [["a"]])
    with pytest.raises(FileNotFoundError, match=r"train-label\.csv.*found: labels\.csv"):
        prepare("mer2023", tmp_path)


def test_mer2023_bad_label_names_file_row_and_sample(tmp_path):
    write_csv(tmp_path / "train-label.csv", ["name", "discrete", "valence"],
              [["a", "happy", "1"], ["b", "joyful", "2"]])
    with pytest.raises(ValueError, match=r"train-label\.csv: row 2 \(b\): label 'joyful'"):
        prepare("mer2023", tmp_path)
    write_csv(tmp_path / "train-label.csv", ["name", "discrete", "valence"], [["a", "happy", "high"]])
    with pytest.raises(ValueError, match=r"row 1 \(a\): valence 'high' is not a number"):
        prepare("mer2023", tmp_path)


def test_two_videos_for_one_sample_is_an_error(mer2023_release):
    touch(mer2023_release / "train" / "00123.avi")
    with pytest.raises(ValueError, match=r"two media files for sample '00123'"):
        prepare("mer2023", mer2023_release)


# --- merbench / meld ---------------------------------------------------------------------------
@pytest.fixture
def merbench_dir(tmp_path) -> Path:
    root = tmp_path / "mer2023-dataset-process"
    root.mkdir()
    write_label_npz(root / "label-6way.npz", {
        "train_corpus": {"00042": {"emo": "happy", "val": 2.0}, "s2": {"emo": "neutral", "val": -10}},
        "test1_corpus": {"t1": {"emo": "neutral", "val": -10}, "t2": {"emo": "neutral", "val": -10}},
        "test3_corpus": {"t3": {"emo": "neutral", "val": -10}, "t4": {"emo": "sad", "val": -10}},
    })
    write_csv(root / "transcription-engchi-polish.csv", ["name", "chinese", "english"],
              [["00042", "好", "Good"], ["s2", "", ""], ["t1", "嗯", "Hm"]])
    touch(root / "video" / "00042.mp4")
    touch(root / "audio" / "00042.wav")
    touch(root / "openface_face" / "00042" / "00042.npy")
    return root


def test_merbench_layout(merbench_dir):
    m = prepare("merbench", merbench_dir)
    assert m.dataset == "mer2023-dataset-process" and m.label_spec.has_valence
    assert by_split(m) == {"train": (2, 2), "test1": (2, 0), "test3": (2, 2)}
    s = m["00042"]
    assert s.video_path == str(merbench_dir / "video" / "00042.mp4")
    assert s.audio_path == str(merbench_dir / "audio" / "00042.wav")
    assert s.face_path == str(merbench_dir / "openface_face" / "00042" / "00042.npy")
    assert m["s2"].video_path is None and m["s2"].face_path is None
    # test1 is all placeholders -> unlabelled; test3 holds one real label -> the split is labelled,
    # and its neutral/-10 entry is a real neutral whose valence is unknown.
    assert (m["t1"].discrete, m["t1"].valence) == (None, None)
    assert (m["t3"].discrete, m["t3"].valence) == ("neutral", None)
    assert m["t1"].transcripts == {"chinese": "嗯", "english": "Hm"}


def test_merbench_unknown_language_and_classes(merbench_dir):
    with pytest.raises(ValueError, match=r"transcripts in \['chinese', 'english'\], not 'japanese'"):
        prepare("merbench", merbench_dir, language="japanese")
    with pytest.raises(ValueError, match=r"label 'happy' is not one of \['neutral', 'sad'\]"):
        prepare("merbench", merbench_dir, classes=["neutral", "sad"])


def test_merbench_refuses_a_malicious_label_file(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    root = tmp_path / "ds"
    root.mkdir()
    npy = io.BytesIO()  # what np.save writes for an object array: header, then the pickle
    npy_format.write_array_header_1_0(npy, {"descr": "|O", "fortran_order": False, "shape": ()})
    pickle.dump(np.array({"a": {"emo": Evil(), "val": 0.0}}, dtype=object), npy, protocol=4)
    with zipfile.ZipFile(root / "label-6way.npz", "w") as archive:
        archive.writestr("train_corpus.npy", npy.getvalue())
    with pytest.raises(UnsafePickleError, match="train_corpus"):
        prepare("merbench", root)
    assert not marker.exists()


def test_merbench_without_train_corpus(tmp_path):
    write_label_npz(tmp_path / "label-6way.npz", {"test_corpus": {"a": {"emo": "neutral", "val": -10}}})
    with pytest.raises(ValueError, match=r"no train_corpus key; keys are \['test_corpus'\]"):
        prepare("merbench", tmp_path)


def test_meld_layout(tmp_path):
    write_label_npz(tmp_path / "label.npz", {
        "train_corpus": {"train_dia0_utt0": {"emo": 3, "val": -10}, "train_dia0_utt1": {"emo": 1, "val": -10}},
        "val_corpus": {"dev_dia0_utt0": {"emo": 0, "val": -10}},
        "test_corpus": {"test_dia0_utt0": {"emo": 3, "val": -10}},
    })
    write_csv(tmp_path / "transcription-engchi-polish.csv", ["name", "chinese", "english"],
              [["train_dia0_utt0", "哦。", "Oh."]])
    m = prepare("meld", tmp_path)
    assert m.dataset == "meld" and m.label_spec.classes == MELD_CLASSES and not m.label_spec.has_valence
    assert by_split(m) == {"train": (2, 2), "val": (1, 1), "test": (1, 0)}
    labels = [m[n].discrete for n in ("train_dia0_utt0", "train_dia0_utt1", "dev_dia0_utt0")]
    assert labels == ["neutral", "joy", "anger"]
    assert all(s.valence is None for s in m.samples)
    assert m["train_dia0_utt0"].text("english") == "Oh."


def test_meld_label_index_out_of_range(tmp_path):
    write_label_npz(tmp_path / "label.npz", {"train_corpus": {"x": {"emo": 7, "val": -10}}})
    with pytest.raises(ValueError, match=r"sample 'x'.*label index 7 is outside 0\.\.6"):
        prepare("meld", tmp_path)


# --- mer2024 / mer2025 -------------------------------------------------------------------------
def test_mer2024_layout(tmp_path):
    write_csv(tmp_path / "label-disdim.csv", ["name", "discrete", "valence"],
              [["sample_00000001", "happy", "2"], ["0007", "surprise", "1"]])
    touch(tmp_path / "video-labeled" / "sample_00000001.mp4")
    touch(tmp_path / "video-unlabeled-with-test2noise" / "samplenew3_00000009.mp4")
    touch(tmp_path / "video-unlabeled-with-test2noise" / "sample_noise_01.avi")
    write_csv(tmp_path / "label-transcription.csv", ["name", "chinese"], [["sample_00000001", "开心"]])
    m = prepare("mer2024", tmp_path)
    assert not m.label_spec.has_valence and m.label_spec.classes == MER_CLASSES
    assert by_split(m) == {"train": (2, 2), "test": (2, 0)}
    assert m["sample_00000001"].video_path.endswith("video-labeled/sample_00000001.mp4")
    assert m["sample_00000001"].valence is None  # MER2024 scores no valence
    assert m["0007"].video_path is None and m["0007"].transcripts == {}
    assert m["sample_00000001"].transcripts == {"chinese": "开心"}
    assert m["sample_noise_01"].video_path.endswith("sample_noise_01.avi")


def test_mer2024_transcripts_only(tmp_path):
    write_csv(tmp_path / "label-disdim.csv", ["name", "discrete"], [["a", "sad"]])
    write_csv(tmp_path / "label-transcription.csv", ["name", "chinese", "english"], [["a", "难过", "Sad."]])
    m = prepare("mer2024", tmp_path)
    assert by_split(m) == {"train": (1, 1)}
    assert m["a"].transcripts == {"chinese": "难过", "english": "Sad."}


def test_mer2025_layout(tmp_path):
    write_csv(tmp_path / "track1_train_disdim.csv", ["name", "discrete", "valence"],
              [["sample_00000001", "worried", "-1"], ["sample_00000002", "angry", "-3"]])
    write_csv(tmp_path / "track_all_candidates.csv", ["name"], [["samplenew4_00000001"], ["000777"]])
    write_csv(tmp_path / "subtitle_chieng.csv", ["name", "chinese", "english"],
              [["sample_00000001", "担心", "Worried"], ["000777", "", ""]])
    for name in ("sample_00000001", "000777"):
        touch(tmp_path / "video" / f"{name}.mp4")
        touch(tmp_path / "audio" / f"{name}.wav")
        touch(tmp_path / "openface_face" / name / f"{name}.npy")
    m = prepare("mer2025", tmp_path)
    assert not m.label_spec.has_valence
    assert by_split(m) == {"train": (2, 2), "test": (2, 0)}
    s = m["000777"]
    assert (s.split, s.transcripts) == ("test", {"chinese": "", "english": ""})
    assert s.video_path.endswith("video/000777.mp4") and s.audio_path.endswith("audio/000777.wav")
    assert s.face_path.endswith("openface_face/000777/000777.npy")
    assert m["sample_00000002"].video_path is None and m["sample_00000002"].transcripts == {}


def test_mer2025_custom_file_names(tmp_path):
    write_csv(tmp_path / "track1_train.csv", ["name", "discrete"], [["a", "happy"]])
    write_csv(tmp_path / "track1_track2_candidate.csv", ["name"], [["b"]])
    m = prepare("mer2025", tmp_path, train_file="track1_train.csv", candidates_file="track1_track2_candidate.csv")
    assert by_split(m) == {"train": (1, 1), "test": (1, 0)}


# --- generic -----------------------------------------------------------------------------------
GENERIC_ROWS = [
    {"name": "00001", "split": "train", "video": "clips/00001.mp4", "audio": "", "text": "I am fine",
     "text_chinese": "我很好", "discrete": "happy", "valence": "0.5", "speaker": "A"},
    {"name": "00002", "split": "", "video": "", "audio": "wav/00002.wav", "text": "",
     "text_chinese": "", "discrete": "calm", "valence": "", "speaker": ""},
    {"name": "00003", "split": "test", "video": "", "audio": "", "text": "Why?",
     "text_chinese": "为什么？", "discrete": "", "valence": "", "speaker": "B"},
]


def _generic_root(tmp_path: Path, fmt: str) -> Path:
    root = tmp_path / f"generic-{fmt}"
    touch(root / "clips" / "00001.mp4")
    touch(root / "wav" / "00002.wav")
    if fmt == "csv":
        write_csv(root / "manifest.csv", list(GENERIC_ROWS[0]), [list(r.values()) for r in GENERIC_ROWS])
    else:
        with open(root / "manifest.jsonl", "w", encoding="utf-8") as f:
            for r in GENERIC_ROWS:  # JSONL: nulls for empties, a number for valence
                row = {k: (None if v == "" else v) for k, v in r.items()}
                row["valence"] = float(r["valence"]) if r["valence"] else None
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return root


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_generic_manifest(tmp_path, fmt):
    root = _generic_root(tmp_path, fmt)
    m = prepare("generic", root, manifest=f"manifest.{fmt}")
    assert m.label_spec.classes == ("calm", "happy")  # sorted from the train split
    assert m.label_spec.has_valence
    assert by_split(m) == {"train": (2, 2), "test": (1, 0)}
    a, b, c = m["00001"], m["00002"], m["00003"]
    assert a.video_path == str(root / "clips" / "00001.mp4") and a.audio_path is None
    assert b.audio_path == str(root / "wav" / "00002.wav") and b.split == "train"
    assert a.transcripts == {"english": "I am fine", "chinese": "我很好"}
    assert b.transcripts == {"english": "", "chinese": ""}
    assert (a.valence, b.valence) == (0.5, None)
    assert a.meta == {"speaker": "A"} and b.meta == {}
    assert c.discrete is None and c.text("chinese") == "为什么？"


def test_generic_csv_and_jsonl_agree(tmp_path):
    csv_m = prepare("generic", _generic_root(tmp_path, "csv"), manifest="manifest.csv")
    jsonl_m = prepare("generic", _generic_root(tmp_path, "jsonl"), manifest="manifest.jsonl")
    def strip_root(m: Manifest) -> list[dict]:
        return [{k: v.replace(m.root, "") if isinstance(v, str) else v for k, v in s.to_json().items()}
                for s in m.samples]

    assert strip_root(csv_m) == strip_root(jsonl_m)


def test_generic_absolute_manifest_and_options(tmp_path):
    root = _generic_root(tmp_path, "csv")
    m = prepare("generic", root, manifest=str(root / "manifest.csv"), language="en",
                classes=["happy", "calm", "sad"], dataset="mine")
    assert m.dataset == "mine" and m.label_spec.classes == ("happy", "calm", "sad")
    assert m["00001"].transcripts == {"en": "I am fine", "chinese": "我很好"}


@pytest.mark.parametrize("column, value, message", [
    ("valence", "very", r"row 2 \(00002\): valence 'very' is not a number"),
    ("valence", "7", r"row 2 \(00002\): valence 7.0 is outside valence_range"),
    ("video", "clips/missing.mp4", r"row 2 \(00002\): video file .*missing\.mp4 does not exist"),
    ("name", "00001", r"name '00001' appears in rows 1 and 2"),
])
def test_generic_bad_values_name_the_row(tmp_path, column, value, message):
    root = _generic_root(tmp_path, "csv")
    rows = [dict(r) for r in GENERIC_ROWS]
    rows[1][column] = value
    write_csv(root / "bad.csv", list(rows[0]), [list(r.values()) for r in rows])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare("generic", root, manifest="bad.csv")


def test_generic_label_outside_given_classes(tmp_path):
    root = _generic_root(tmp_path, "csv")
    with pytest.raises(ValueError, match=r"row 2 \(00002\): label 'calm' is not one of \['happy'\]"):
        prepare("generic", root, manifest="manifest.csv", classes=["happy"])


def test_generic_missing_manifest_and_bad_jsonl(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest file .*nope.csv does not exist"):
        prepare("generic", tmp_path, manifest="nope.csv")
    (tmp_path / "m.jsonl").write_text('{"name": "a"}\n{"name": \n')
    with pytest.raises(ValueError, match=r"m\.jsonl: line 2 is not valid JSON"):
        prepare("generic", tmp_path, manifest="m.jsonl")


def test_generic_transcripts_only_and_media_unchecked(tmp_path):
    write_csv(tmp_path / "m.csv", ["name", "transcript", "video"], [["x", "hello", "/nowhere/x.mp4"]])
    m = prepare("generic", tmp_path, manifest="m.csv", check_media=False)
    assert m["x"].video_path == "/nowhere/x.mp4" and m["x"].transcripts == {"english": "hello"}
    assert m.label_spec.classes == () and not m["x"].is_labelled


def test_recipe_manifest_round_trips_through_jsonl(mer2023_release, tmp_path):
    m = prepare("mer2023", mer2023_release)
    m.to_jsonl(tmp_path / "m.jsonl")
    back = Manifest.from_jsonl(tmp_path / "m.jsonl")
    assert [s.to_json() for s in back.samples] == [s.to_json() for s in m.samples]


# --- real data ---------------------------------------------------------------------------------
MER2023_TRAIN_COUNTS = {"neutral": 871, "angry": 822, "happy": 689, "worried": 462, "sad": 383, "surprise": 146}


@needs_shared_data
@pytest.mark.parametrize("layout", ["mer2023", "merbench"])
def test_real_mer2023(layout):
    m = prepare(layout, SHARED_DATA / "mer2023")
    assert m.label_spec.classes == MER_CLASSES and m.label_spec.has_valence
    assert by_split(m) == {"train": (3373, 3373), "test1": (411, 0), "test2": (412, 0), "test3": (834, 0)}
    assert Counter(s.discrete for s in m.split("train")) == MER2023_TRAIN_COUNTS
    valences = [s.valence for s in m.split("train")]
    assert min(valences) == -5.0 and max(valences) == 4.25
    assert all(isinstance(n, str) and n.startswith(("sample_", "samplenew_")) for n in m.names())
    with_text = [s for s in m.samples if s.transcripts]
    assert len(with_text) == 5030
    assert sum(s.text("english") == "" for s in with_text) == 217
    assert sum(s.text("chinese") == "" for s in with_text) == 217
    assert all(s.video_path is None and s.face_path is None for s in m.samples)


@needs_shared_data
def test_real_meld():
    m = prepare("meld", SHARED_DATA / "meld")
    assert by_split(m) == {"train": (9989, 9989), "val": (1109, 1109), "test": (2610, 0)}
    assert not m.label_spec.has_valence
    assert Counter(s.discrete for s in m.split("train"))["neutral"] == 4710
    assert sum(bool(s.transcripts) for s in m.samples) == 13708
