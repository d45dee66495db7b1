"""MER2023 as released (``dataset-release/``), or its names-only variant without media.

Files under ``root`` (only ``train-label.csv`` is required)::

    train-label.csv                    name,discrete,valence          training labels
    train/ test1/ test2/ test3/        <name>.mp4 | .avi | ...        videos, listed, never opened
    test{1,2,3}-label.csv              name,discrete[,valence]        released test labels (test3: no valence)
    test{1,2,3}-names.csv              name                           names-only layout
    transcription-engchi-polish.csv    name,chinese,english           MERBench's checked transcripts
    transcription.csv                  name,sentence                  old ASR transcripts (Chinese)
    audio/<name>.wav, openface_face/<name>/<name>.npy                 if the user extracted them

Splits: ``train``, then ``test1`` (MER-MULTI), ``test2`` (MER-NOISE), ``test3`` (MER-SEMI) where
anything names them. A test split holds the names of its label file (else its names file) in
file order, then the videos of its folder that neither lists (MER-SEMI's unlabelled pool),
sorted; only label-file rows carry labels.
"""
from __future__ import annotations

import os
from pathlib import Path

from mer.core.samples import MER_CLASSES, LabelSpec, Sample
from .manifest import Manifest
from .recipe_io import (VIDEO_EXTS, Transcripts, build_samples, find_media, index_media, load_transcripts,
                        read_label_csv, read_names, require_file, resolve_root)
from .recipes import RECIPES

LAYOUT = "mer2023"
TEST_SPLITS: tuple[str, ...] = ("test1", "test2", "test3")
TRANSCRIPT_FILES: tuple[str, ...] = ("transcription-engchi-polish.csv", "transcription.csv")

Labels = list[tuple[str, str | None, float | None]]


def _test_split_labels(root: Path, split: str) -> Labels:
    """``[(name, discrete, valence)]`` of one test split, unlabelled rows as ``(name, None, None)``."""
    label_file, names_file = root / f"{split}-label.csv", root / f"{split}-names.csv"
    if label_file.is_file():
        rows = read_label_csv(label_file, MER_CLASSES, split, use_valence=True)
    elif names_file.is_file():
        rows = [(n, None, None) for n in read_names(names_file)]
    else:
        rows = []
    listed = {n for n, _, _ in rows}
    # The folder may hold more than the files list: MER-SEMI's 73k unlabelled videos are test3 too.
    extra = sorted(set(index_media(root / split, VIDEO_EXTS)) - listed)
    return rows + [(n, None, None) for n in extra]


def _split_samples(root: Path, splits: dict[str, Labels], transcripts: Transcripts) -> list[Sample]:
    """Samples of every split; videos are looked up across all split folders at once."""
    names = [n for labels in splits.values() for n, _, _ in labels]
    media = find_media(root, names, video_dirs=("train", *TEST_SPLITS))
    return [s for split, labels in splits.items()
            for s in build_samples(split, labels, media, transcripts)]


@RECIPES.register(LAYOUT)
def prepare_mer2023(root: str | os.PathLike, *, language: str | None = "english",
                    transcript_file: str | None = None, dataset: str = LAYOUT) -> Manifest:
    """Manifest of the MER2023 release at ``root`` (labels: 6 classes + valence in [-5, 5]).

    Options:
      language: the transcript language text features will read; checked against the
        transcript file (``None``: no check). The old ``transcription.csv`` is Chinese only and
        is stored under ``chinese`` whatever is asked (it is the only language there).
      transcript_file: a transcript CSV under ``root`` to use instead of the first present of
        ``transcription-engchi-polish.csv``, ``transcription.csv``.
      dataset: the manifest's dataset name (cache keys use it).
    """
    root = resolve_root(root, LAYOUT)
    train_file = require_file(root, "train-label.csv", LAYOUT, "training labels: name,discrete,valence")
    splits: dict[str, Labels] = {"train": read_label_csv(train_file, MER_CLASSES, "train", use_valence=True)}
    for split in TEST_SPLITS:
        if labels := _test_split_labels(root, split):
            splits[split] = labels
    transcripts = load_transcripts(root, LAYOUT, language, transcript_file, *TRANSCRIPT_FILES)
    samples = _split_samples(root, splits, transcripts)
    return Manifest(dataset, LabelSpec(MER_CLASSES, has_valence=True), samples, root=str(root))
