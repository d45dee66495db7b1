"""MER2024 as released: labelled videos plus the unlabelled pool with the noisy test mixed in.

Files under ``root`` (only the label file is required)::

    label-disdim.csv                     name,discrete[,valence...]   labels (only discrete is used)
    video-labeled/<name>.mp4                                          training videos
    video-unlabeled-with-test2noise/<name>.mp4                        split ``test``, unlabelled
    label-transcription.csv              name,chinese[,english]       checked subtitles

MER2024 scores no valence (the toolkit sets its valence head to 0), so ``has_valence`` is False.
Without the unlabelled folder there is no ``test`` split (a transcripts-only copy still trains).
"""
from __future__ import annotations

import os

from mer.core.samples import MER_CLASSES, LabelSpec
from .manifest import Manifest
from .recipe_io import (VIDEO_EXTS, build_samples, find_media, index_media, load_transcripts, read_label_csv,
                        require_file, resolve_root)
from .recipes import RECIPES

LAYOUT = "mer2024"
TRANSCRIPT_FILE = "label-transcription.csv"


@RECIPES.register(LAYOUT)
def prepare_mer2024(root: str | os.PathLike, *, language: str | None = "english",
                    label_file: str = "label-disdim.csv", labelled_dir: str = "video-labeled",
                    unlabelled_dir: str = "video-unlabeled-with-test2noise",
                    transcript_file: str | None = None, dataset: str = LAYOUT) -> Manifest:
    """Manifest of the MER2024 release at ``root``: split ``train`` (labelled) and ``test`` (the pool).

    Options:
      language: transcript language text features will read, checked when the transcript file
        has several (the release's file is Chinese only, which is accepted as it is).
      label_file, labelled_dir, unlabelled_dir: file/folder names under ``root``.
      transcript_file: transcript CSV under ``root`` instead of ``label-transcription.csv``.
      dataset: manifest dataset name.
    """
    root = resolve_root(root, LAYOUT)
    label_path = require_file(root, label_file, LAYOUT, "training labels: name,discrete")
    train = read_label_csv(label_path, MER_CLASSES, "train", use_valence=False)
    pool = sorted(index_media(root / unlabelled_dir, VIDEO_EXTS))
    transcripts = load_transcripts(root, LAYOUT, language, transcript_file, TRANSCRIPT_FILE)
    # One index over both folders: a name in both is reported as such, not as a duplicate sample.
    media = find_media(root, [n for n, _, _ in train] + pool, video_dirs=(labelled_dir, unlabelled_dir))
    samples = build_samples("train", train, media, transcripts)
    samples += build_samples("test", [(n, None, None) for n in pool], media, transcripts)
    return Manifest(dataset, LabelSpec(MER_CLASSES, has_valence=False), samples, root=str(root))
