"""MERBench's processed layout (``dataset-process/``), as MER2024/2025 toolkits also read it.

Files under ``root`` (only the label file is required)::

    label-6way.npz                     {split}_corpus -> {name: {'emo': str | int, 'val': float}}
    transcription-engchi-polish.csv    name,chinese,english
    video/<name>.mp4, audio/<name>.wav, openface_face/<name>/<name>.npy      optional media

The npz is read with :func:`mer.data.safe_pickle.load_label_npz` (no arbitrary pickles). Each
``<split>_corpus`` key becomes split ``<split>``; a file with the single key ``whole_corpus``
(IEMOCAP) is all split ``train``, with no test split. Unknown labels are written by the organisers'
preprocessing as ``{'emo': 'neutral', 'val': -10}``: a non-train split made only of those is
unlabelled; anywhere else ``emo`` is a real label and ``val == -10`` only means "no valence".

The eight datasets MERBench releases this way differ in their label file, class list and
valence (:data:`DATASET_KINDS`, chosen with ``dataset_kind=``): MER2023 (``label-6way.npz``, six
class strings and a valence in [-5, 5]); IEMOCAP (``label_4way.npz`` / ``label_6way.npz``, one
``whole_corpus``, ``emo`` a class index, ``val`` -10; each sample's session ``Ses01``...``Ses05``
from its name is its group, and its papers fold by leaving one session out); MELD (``label.npz``,
``train/val/test_corpus``, class indices); CMU-MOSI, CMU-MOSEI, CH-SIMS and CH-SIMS v2
(``label.npz``, ``train/val/test_corpus``, ``emo`` always 0 and ``val`` the sentiment in [-3, 3]
or [-1, 1]: the valence is the only target).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import dataclasses
import re
from dataclasses import dataclass

from mer.core.samples import MELD_CLASSES, MER_CLASSES, LabelSpec
from .manifest import Manifest
from .recipe_io import (build_samples, find_media, load_transcripts, parse_discrete, parse_valence,
                        require_file, resolve_root, unlabel_placeholder_split)
from .recipes import RECIPES
from .safe_pickle import load_label_npz

LAYOUT = "merbench"
CORPUS_SUFFIX = "_corpus"
TRANSCRIPT_FILE = "transcription-engchi-polish.csv"

Labels = list[tuple[str, str | None, float | None]]
WHOLE_CORPUS = "whole"
"""``whole_corpus``: IEMOCAP's one key, read as the training split."""

IEMOCAP4_CLASSES: tuple[str, ...] = ("happy", "sad", "neutral", "anger")
IEMOCAP6_CLASSES: tuple[str, ...] = ("happy", "sad", "neutral", "anger", "excited", "frustrated")
"""IEMOCAP's class indices in MERBench's ``label_4way.npz`` / ``label_6way.npz`` (the order of the
``IEMOCAP_features_raw_{4,6}way.pkl`` files they were converted from: hap, sad, neu, ang, exc, fru)."""

IEMOCAP_NAME = re.compile(r"^(Ses\d\d)[MF]_")
"""IEMOCAP utterance names (``Ses01F_impro01_F000``): the session is the first five characters."""


@dataclass(frozen=True)
class DatasetKind:
    """What one MERBench-processed dataset's files mean.

    ``classes``: class strings in index order, ``()`` for sentiment data (``emo`` ignored);
    ``valence_range``: the declared range of ``val`` where it is a label, ``None`` where the
    dataset has no valence (``val`` is -10 throughout) or infers it; ``protocol``: the fold
    protocol its papers use (``None``: the run's ``train.protocol``)."""

    label_file: str
    classes: tuple[str, ...]
    valence_range: tuple[float, float] | None = None
    protocol: str | None = None
    has_valence: bool | None = None


DATASET_KINDS: dict[str, DatasetKind] = {
    "mer2023": DatasetKind("label-6way.npz", MER_CLASSES, (-5.0, 5.0)),
    "iemocap4": DatasetKind("label_4way.npz", IEMOCAP4_CLASSES, protocol="logo", has_valence=False),
    "iemocap6": DatasetKind("label_6way.npz", IEMOCAP6_CLASSES, protocol="logo", has_valence=False),
    "meld": DatasetKind("label.npz", MELD_CLASSES, has_valence=False),
    "mosi": DatasetKind("label.npz", (), (-3.0, 3.0), has_valence=True),
    "mosei": DatasetKind("label.npz", (), (-3.0, 3.0), has_valence=True),
    "sims": DatasetKind("label.npz", (), (-1.0, 1.0), has_valence=True),
    "simsv2": DatasetKind("label.npz", (), (-1.0, 1.0), has_valence=True),
}
"""``dataset_kind`` -> its files' meaning (MERBench ``toolkit/preprocess/*.py`` and dataloaders)."""


def iemocap_session(name: str) -> str | None:
    """``Ses01F_impro01_F000`` -> ``Ses01``; ``None`` for a name that is not IEMOCAP's."""
    m = IEMOCAP_NAME.match(name)
    return m.group(1) if m else None


def _corpus_labels(corpus: Any, classes: Sequence[str], split: str, where: str) -> Labels:
    """``[(name, discrete, valence)]`` of one ``{name: {'emo', 'val'}}`` corpus, in its order.

    A non-train corpus of placeholders only (``{'emo': 'neutral', 'val': -10}``) comes back
    unlabelled. With no ``classes`` (sentiment data) ``emo`` is not read: ``discrete`` is ``None``.
    """
    if not isinstance(corpus, Mapping):
        raise ValueError(f"{where}: expected a dict name -> {{'emo', 'val'}}, found {type(corpus).__name__}")
    out: Labels = []
    for name, entry in corpus.items():
        at = f"{where}, sample {name!r}"
        if not isinstance(name, str) or not isinstance(entry, Mapping) or "emo" not in entry:
            raise ValueError(f"{at}: expected a str name mapping to {{'emo': ..., 'val': ...}}, "
                             f"found {entry!r}")
        discrete = parse_discrete(entry["emo"], classes, at) if classes else None
        out.append((name, discrete, parse_valence(entry.get("val"), at)))
    return unlabel_placeholder_split(out, [entry.get("val") for entry in corpus.values()], split)


def read_label_npz(path: Path, classes: Sequence[str], train_split: str = "train") -> dict[str, Labels]:
    """``{split: [(name, discrete, valence)]}`` from a MERBench label npz, splits in file order."""
    arrays = load_label_npz(path)
    splits = {key[: -len(CORPUS_SUFFIX)]: value for key, value in arrays.items()
              if key.endswith(CORPUS_SUFFIX)}
    if list(splits) == [WHOLE_CORPUS]:
        splits = {train_split: splits[WHOLE_CORPUS]}
    if train_split not in splits:
        raise ValueError(f"{path}: no {train_split}{CORPUS_SUFFIX} key; keys are {sorted(arrays)}")
    return {split: _corpus_labels(corpus, classes, split, f"{path} [{split}{CORPUS_SUFFIX}]")
            for split, corpus in splits.items()}


def prepare_npz_dataset(root: str | os.PathLike, *, layout: str, label_file: str, classes: Sequence[str],
                        language: str | None, transcript_file: str | None, dataset: str | None,
                        has_valence: bool | None, valence_range: Sequence[float] | None = None,
                        protocol: str | None = None) -> Manifest:
    """The shared body of ``merbench`` and ``meld``: label npz + transcripts + optional media.

    Names of IEMOCAP's form (every one of them) get their session as their group."""
    root = resolve_root(root, layout)
    classes = tuple(classes)
    label_path = require_file(root, label_file, layout, "labels: {split}_corpus -> {name: {emo, val}}")
    splits = read_label_npz(label_path, classes)
    transcripts = load_transcripts(root, layout, language, transcript_file, TRANSCRIPT_FILE)
    media = find_media(root, [n for labels in splits.values() for n, _, _ in labels])
    samples = [s for split, labels in splits.items()
               for s in build_samples(split, labels, media, transcripts)]
    sessions = [iemocap_session(s.name) for s in samples]
    if samples and all(sessions):
        samples = [dataclasses.replace(s, group=g) for s, g in zip(samples, sessions)]
    if has_valence is None:  # MER2023 has valence; MELD/IEMOCAP write -10 (no valence) everywhere
        has_valence = any(s.valence is not None for s in samples)
    spec = LabelSpec(classes, has_valence=has_valence, has_discrete=bool(classes),
                     **({"valence_range": (float(valence_range[0]), float(valence_range[1]))}
                        if valence_range is not None else {}))
    return Manifest(dataset or root.name, spec, samples, root=str(root), protocol=protocol)


@RECIPES.register(LAYOUT)
def prepare_merbench(root: str | os.PathLike, *, dataset_kind: str | None = None, label_file: str | None = None,
                     classes: Sequence[str] | None = None, language: str | None = "english",
                     transcript_file: str | None = None, dataset: str | None = None,
                     has_valence: bool | None = None, valence_range: Sequence[float] | None = None) -> Manifest:
    """Manifest of a MERBench-processed dataset at ``root``.

    Options:
      dataset_kind: which of MERBench's datasets it is (:data:`DATASET_KINDS`: mer2023, iemocap4,
        iemocap6, meld, mosi, mosei, sims, simsv2); it sets the options below (default mer2023).
      label_file: the npz under ``root`` (the kind's: ``label-6way.npz``, ``label_4way.npz``, ``label.npz``).
      classes: class strings in index order; integer ``emo`` values index it (the kind's; ``[]``:
        sentiment data, valence the only target).
      language: transcript language text features will read, checked against the file (``None``: no check).
      transcript_file: transcript CSV under ``root`` instead of ``transcription-engchi-polish.csv``
        (the default file may be absent: then samples have no transcripts).
      dataset: manifest dataset name (default: the root folder's name).
      has_valence: ``None``: the kind's, else inferred (any labelled sample with a valence other than -10).
      valence_range: the declared ``[low, high]`` of the valence (the kind's: [-3, 3] MOSI/MOSEI,
        [-1, 1] SIMS/SIMSv2, [-5, 5] MER2023).
    """
    if dataset_kind is not None and dataset_kind not in DATASET_KINDS:
        raise ValueError(f"merbench: dataset_kind {dataset_kind!r} is not one of {list(DATASET_KINDS)}")
    kind = DATASET_KINDS[dataset_kind or "mer2023"]
    return prepare_npz_dataset(root, layout=LAYOUT, label_file=label_file or kind.label_file,
                               classes=kind.classes if classes is None else classes, language=language,
                               transcript_file=transcript_file, dataset=dataset,
                               has_valence=kind.has_valence if has_valence is None else has_valence,
                               valence_range=kind.valence_range if valence_range is None else valence_range,
                               protocol=kind.protocol)
