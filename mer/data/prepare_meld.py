"""MELD through MERBench's processed files (7 classes, no valence).

Files under ``root``: ``label.npz`` (``train_corpus``, ``val_corpus``, ``test_corpus``; ``emo``
is an index into :data:`MELD_CLASSES`, ``val`` is always -10), ``transcription-engchi-polish.csv``
and optional ``video/``, ``audio/``, ``openface_face/``. Splits ``train``/``val``/``test``; the
test split ships placeholders (``{'emo': 3, 'val': -10}``) and comes out unlabelled.
"""
from __future__ import annotations

import os

from mer.core.samples import MELD_CLASSES
from .manifest import Manifest
from .prepare_merbench import prepare_npz_dataset
from .recipes import RECIPES

LAYOUT = "meld"


@RECIPES.register(LAYOUT)
def prepare_meld(root: str | os.PathLike, *, label_file: str = "label.npz", language: str | None = "english",
                 transcript_file: str | None = None, dataset: str = LAYOUT) -> Manifest:
    """Manifest of MERBench's MELD folder at ``root``; options as in ``merbench`` (classes fixed)."""
    return prepare_npz_dataset(root, layout=LAYOUT, label_file=label_file, classes=MELD_CLASSES,
                               language=language, transcript_file=transcript_file, dataset=dataset,
                               has_valence=False)
