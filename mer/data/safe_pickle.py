"""Read MERBench label ``.npz`` files without running arbitrary pickles.

MERBench stores each corpus as a 0-d object array whose payload is a pickle of
``{name: {'emo': str | int, 'val': float}}``. Loading it with numpy's pickle-enabled ``np.load`` would execute
whatever the pickle asks for, so a tampered label file could run code on the training machine.
:func:`load_label_npz` opens the npz as a zip, parses each ``.npy`` header itself and unpickles
object payloads with :class:`RestrictedUnpickler`, which only resolves the few numpy callables a
pickled ndarray of plain dicts/str/int/float/numpy scalars needs.
"""
from __future__ import annotations

import _codecs
import importlib
import os
import pickle
import zipfile
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list; nothing it asked for was run."""


def _numpy_multiarray():
    # numpy 2 moved ``numpy.core`` to ``numpy._core``; pickles written by either name the one
    # their writer had, so both names map to whichever module this numpy provides.
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        return importlib.import_module("numpy.core.multiarray")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = _numpy_multiarray()

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,   # the subtype handed to _reconstruct
        ("numpy", "dtype"): np.dtype,       # dtype of the array and of numpy scalars
        ("_codecs", "encode"): _codecs.encode,  # protocol <= 2 pickles spell bytes this way
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct  # empty ndarray, then BUILD
        allowed[(module, "scalar")] = multiarray.scalar              # numpy scalars (np.float64)
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in :func:`_allowed_globals`.

    ``source`` (file and key) is named in the error so a user knows which file to distrust.
    """

    def __init__(self, file: BinaryIO, source: str) -> None:
        # latin1 decodes Python 2 ``str`` payloads byte for byte (what numpy recommends for them).
        super().__init__(file, encoding="latin1")
        self.source = source
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: the pickle asks for {module}.{name}, which a label file never "
                f"needs (allowed: plain dicts, str, int, float, numpy arrays and scalars); refusing "
                f"to load it. Regenerate the file from a trusted source.") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: the pickle uses a persistent id ({pid!r}); refusing")


def _read_header(fp: BinaryIO, source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``fp``, leaving it at the payload."""
    version = npy_format.read_magic(fp)
    if version == (1, 0):
        return npy_format.read_array_header_1_0(fp)
    if version == (2, 0):
        return npy_format.read_array_header_2_0(fp)
    raise ValueError(f"{source}: .npy format version {version} is not supported (only 1.0 and 2.0)")


def _load_member(archive: zipfile.ZipFile, member: str, source: str) -> Any:
    """One npz member: object arrays through the restricted unpickler, others via numpy."""
    with archive.open(member) as fp:
        shape, _, dtype = _read_header(fp, source)
        if dtype.hasobject:
            array = RestrictedUnpickler(fp, source).load()
    if not dtype.hasobject:
        with archive.open(member) as fp:
            return npy_format.read_array(fp, allow_pickle=False)
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise UnsafePickleError(f"{source}: the header promises an array of shape {tuple(shape)}, "
                                f"the pickle holds {type(array).__name__}")
    # MERBench corpora are 0-d object arrays wrapping a dict; unwrap them as np.load(...).tolist() does.
    return array.item() if array.ndim == 0 else array


def load_label_npz(path: str | os.PathLike) -> dict[str, Any]:
    """Load every array of a MERBench label npz safely.

    Returns ``{key: value}`` with the npz keys (``train_corpus``, ``test1_corpus``...; the
    ``.npy`` suffix dropped). A 0-d object array comes back as its payload (for label files the
    dict ``name -> {'emo': str | int, 'val': float}``); other object arrays as object ndarrays;
    numeric arrays as they are. Raises :class:`UnsafePickleError` naming the file, the key and
    the refused ``module.name`` when a payload asks for anything else.
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz (zip) archive")
    out: dict[str, Any] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            key = member[:-4] if member.endswith(".npy") else member
            out[key] = _load_member(archive, member, f"{path} [key {key!r}]")
    return out
