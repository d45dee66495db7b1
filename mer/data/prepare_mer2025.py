"""MER2025 Track 1 (MER-SEMI successor) as released; MER2026 Track 1 with its own file names.

Files under ``root`` (only the train label file is required)::

    track1_train_disdim.csv          name,discrete[,...]       labels (only discrete is used)
    track_all_candidates.csv         name[,...]                the 20,000 test candidates -> split ``test``
    subtitle_chieng.csv              name,chinese,english      subtitles
    video/<name>.mp4, audio/<name>.wav, openface_face/<name>/<name>.npy

MER2026 ships ``track1_train.csv`` and ``track1_track2_candidate.csv``: pass them as
``train_file``/``candidates_file``. Track 1 scores no valence, so ``has_valence`` is False.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

from mer.core.samples import MER_CLASSES, LabelSpec
from .manifest import Manifest
from .recipe_io import (build_samples, find_media, load_transcripts, optional_file, read_label_csv,
                        read_names, require_file, resolve_root)
from .recipes import RECIPES

log = logging.getLogger(__name__)

LAYOUT = "mer2025"
TRANSCRIPT_FILE = "subtitle_chieng.csv"


@RECIPES.register(LAYOUT)
def prepare_mer2025(root: str | os.PathLike, *, language: str | None = "english",
                    train_file: str = "track1_train_disdim.csv",
                    candidates_file: str = "track_all_candidates.csv",
                    transcript_file: str | None = None, classes: Sequence[str] = MER_CLASSES,
                    dataset: str = LAYOUT) -> Manifest:
    """Manifest of the MER2025 Track 1 release at ``root``: splits ``train`` and ``test`` (candidates).

    Options:
      language: transcript language text features will read, checked against the subtitle file.
      train_file, candidates_file: label and candidate CSVs under ``root`` (candidates optional).
      transcript_file: subtitle CSV under ``root`` instead of ``subtitle_chieng.csv``.
      classes: class strings in index order (default MER_CLASSES).
      dataset: manifest dataset name.
    """
    root = resolve_root(root, LAYOUT)
    classes = tuple(classes)
    train_path = require_file(root, train_file, LAYOUT, "training labels: name,discrete")
    train = read_label_csv(train_path, classes, "train", use_valence=False)
    candidates_path = optional_file(root, candidates_file)
    if candidates_path is None:
        log.warning("%s: no %s in %s; the manifest has no test split", LAYOUT, candidates_file, root)
    test = [(n, None, None) for n in read_names(candidates_path)] if candidates_path else []
    transcripts = load_transcripts(root, LAYOUT, language, transcript_file, TRANSCRIPT_FILE)
    media = find_media(root, [n for n, _, _ in train + test])
    samples = build_samples("train", train, media, transcripts)
    samples += build_samples("test", test, media, transcripts)
    return Manifest(dataset, LabelSpec(classes, has_valence=False), samples, root=str(root))
