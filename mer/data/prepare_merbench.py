"""MERBench's processed layout (``dataset-process/``), as MER2024/2025 toolkits also read it.

Files under ``root`` (only the label file is required)::

    label-6way.npz                     {split}_corpus -> {name: {'emo': str | int, 'val': float}}
    transcription-engchi-polish.csv    name,chinese,english
    video/<name>.mp4, audio/<name>.wav, openface_face/<name>/<name>.npy      optional media

The npz is read with :func:`mer.data.safe_pickle.load_label_npz` (no arbitrary pickles). Each
``<split>_corpus`` key becomes split ``<split>``. Unknown labels are written by the organisers'
preprocessing as ``{'emo': 'neutral', 'val': -10}``: a non-train split made only of those is
unlabelled; anywhere else ``emo`` is a real label and ``val == -10`` only means "no valence".
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .manifest import MER_CLASSES, LabelSpec, Manifest
from .recipe_io import (build_samples, find_media, load_transcripts, parse_discrete, parse_valence,
                        require_file, resolve_root, unlabel_placeholder_split)
from .recipes import RECIPES
from .safe_pickle import load_label_npz

LAYOUT = "merbench"
CORPUS_SUFFIX = "_corpus"
TRANSCRIPT_FILE = "transcription-engchi-polish.csv"

Labels = list[tuple[str, str | None, float | None]]


def _corpus_labels(corpus: Any, classes: Sequence[str], split: str, where: str) -> Labels:
    """``[(name, discrete, valence)]`` of one ``{name: {'emo', 'val'}}`` corpus, in its order.

    A non-train corpus of placeholders only (``{'emo': 'neutral', 'val': -10}``) comes back unlabelled.
    """
    if not isinstance(corpus, Mapping):
        raise ValueError(f"{where}: expected a dict name -> {{'emo', 'val'}}, found {type(corpus).__name__}")
    out: Labels = []
    for name, entry in corpus.items():
        at = f"{where}, sample {name!r}"
        if not isinstance(name, str) or not isinstance(entry, Mapping) or "emo" not in entry:
            raise ValueError(f"{at}: expected a str name mapping to {{'emo': ..., 'val': ...}}, "
                             f"found {entry!r}")
        out.append((name, parse_discrete(entry["emo"], classes, at), parse_valence(entry.get("val"), at)))
    return unlabel_placeholder_split(out, [entry.get("val") for entry in corpus.values()], split)


def read_label_npz(path: Path, classes: Sequence[str], train_split: str = "train") -> dict[str, Labels]:
    """``{split: [(name, discrete, valence)]}`` from a MERBench label npz, splits in file order."""
    arrays = load_label_npz(path)
    splits = {key[: -len(CORPUS_SUFFIX)]: value for key, value in arrays.items()
              if key.endswith(CORPUS_SUFFIX)}
    if train_split not in splits:
        raise ValueError(f"{path}: no {train_split}{CORPUS_SUFFIX} key; keys are {sorted(arrays)}")
    return {split: _corpus_labels(corpus, classes, split, f"{path} [{split}{CORPUS_SUFFIX}]")
            for split, corpus in splits.items()}


def prepare_npz_dataset(root: str | os.PathLike, *, layout: str, label_file: str, classes: Sequence[str],
                        language: str | None, transcript_file: str | None, dataset: str | None,
                        has_valence: bool | None) -> Manifest:
    """The shared body of ``merbench`` and ``meld``: label npz + transcripts + optional media."""
    root = resolve_root(root, layout)
    classes = tuple(classes)
    label_path = require_file(root, label_file, layout, "labels: {split}_corpus -> {name: {emo, val}}")
    splits = read_label_npz(label_path, classes)
    transcripts = load_transcripts(root, layout, language, transcript_file, TRANSCRIPT_FILE)
    media = find_media(root, [n for labels in splits.values() for n, _, _ in labels])
    samples = [s for split, labels in splits.items()
               for s in build_samples(split, labels, media, transcripts)]
    if has_valence is None:  # MER2023 has valence; MELD/IEMOCAP write -10 (no valence) everywhere
        has_valence = any(s.valence is not None for s in samples)
    spec = LabelSpec(classes, has_valence=has_valence)
    return Manifest(dataset or root.name, spec, samples, root=str(root))


@RECIPES.register(LAYOUT)
def prepare_merbench(root: str | os.PathLike, *, label_file: str = "label-6way.npz",
                     classes: Sequence[str] = MER_CLASSES, language: str | None = "english",
                     transcript_file: str | None = None, dataset: str | None = None,
                     has_valence: bool | None = None) -> Manifest:
    """Manifest of a MERBench-processed dataset at ``root``.

    Options:
      label_file: the npz under ``root`` (``label-6way.npz``; MELD and others use ``label.npz``).
      classes: class strings in index order; integer ``emo`` values index it (default MER_CLASSES).
      language: transcript language text features will read, checked against the file (``None``: no check).
      transcript_file: transcript CSV under ``root`` instead of ``transcription-engchi-polish.csv``
        (the default file may be absent: then samples have no transcripts).
      dataset: manifest dataset name (default: the root folder's name).
      has_valence: ``None`` infers it (any labelled sample with a valence other than -10).
    """
    return prepare_npz_dataset(root, layout=LAYOUT, label_file=label_file, classes=classes, language=language,
                               transcript_file=transcript_file, dataset=dataset, has_valence=has_valence)
