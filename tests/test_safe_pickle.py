"""The restricted npz label loader: real label layouts load, anything executable is refused."""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

from mer.data.safe_pickle import UnsafePickleError, load_label_npz

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class _RunsCommand:
    """Unpickling this would run ``command`` in a shell."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Evals:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


def _write_npz_member(path: Path, key: str, payload: bytes, descr: str = "|O", shape: tuple = ()) -> None:
    """An npz whose ``key`` holds an object-array header followed by ``payload`` (what np.save writes)."""
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    buf.write(payload)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{key}.npy", buf.getvalue())


def test_merbench_style_labels_round_trip(tmp_path):
    corpus = {"sample_00000001": {"emo": "happy", "val": 1.25},
              "00123": {"emo": "neutral", "val": np.float64(-0.5)},   # numpy scalar in the payload
              "meld_like": {"emo": np.int64(3), "val": -10}}
    path = tmp_path / "label.npz"
    np.savez(path, train_corpus=np.array(corpus, dtype=object), lengths=np.arange(4, dtype=np.int32))
    loaded = load_label_npz(path)
    assert set(loaded) == {"train_corpus", "lengths"}
    assert loaded["train_corpus"] == corpus
    assert list(loaded["train_corpus"]) == ["sample_00000001", "00123", "meld_like"]  # order kept
    np.testing.assert_array_equal(loaded["lengths"], np.arange(4, dtype=np.int32))  # non-object: plain load


def test_protocol_2_numpy_scalars_load(tmp_path):
    # Protocol <= 2 spells the scalar's raw bytes through _codecs.encode; that must be allowed.
    payload = pickle.dumps(np.array({"a": {"emo": "sad", "val": np.float64(2.5)}}, dtype=object), protocol=2)
    path = tmp_path / "old.npz"
    _write_npz_member(path, "train_corpus", payload)
    assert load_label_npz(path)["train_corpus"] == {"a": {"emo": "sad", "val": 2.5}}


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "inside-a-label-dict"])
def test_os_system_payload_is_refused_and_never_runs(tmp_path, nested):
    marker = tmp_path / "pwned"
    evil = _RunsCommand(f"touch {marker}")
    obj = np.array({"sample_1": {"emo": evil, "val": 0.0}}, dtype=object) if nested else evil
    path = tmp_path / "label-6way.npz"
    _write_npz_member(path, "train_corpus", pickle.dumps(obj, protocol=4))

    with pytest.raises(UnsafePickleError) as err:
        load_label_npz(path)
    message = str(err.value)
    assert str(path) in message and "train_corpus" in message
    assert f"{os.system.__module__}.system" in message  # posix.system on Linux
    assert not marker.exists()


def test_eval_payload_is_refused(tmp_path):
    path = tmp_path / "label.npz"
    _write_npz_member(path, "test_corpus", pickle.dumps(_Evals(), protocol=2))
    # Protocol 2 writes Python 2's module name; the refusal names what the pickle asked for.
    with pytest.raises(UnsafePickleError, match=r"__builtin__\.eval") as err:
        load_label_npz(path)
    assert "test_corpus" in str(err.value)


def test_not_an_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "label.npz"
    path.write_text("name,discrete\n")
    with pytest.raises(ValueError, match="not an .npz"):
        load_label_npz(path)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real MERBench label files not present at {SHARED_DATA}")
@pytest.mark.parametrize("relative", ["mer2023/label-6way.npz", "meld/label.npz"])
def test_real_label_files_match_numpy(relative):
    path = SHARED_DATA / relative
    loaded = load_label_npz(path)
    with np.load(path, allow_pickle=True) as reference:  # trusted shared data: the reference reader
        assert sorted(loaded) == sorted(reference.files)
        for key in reference.files:
            assert loaded[key] == reference[key].tolist()
