"""Samples with no input: no feature in any modality of the run (every stream's ``present`` is
false for the row: an empty transcript and an unreadable clip, a zero-length or non-finite audio
track with no face ...).

Such a sample tells a model nothing, so:

* it is left out of training and of the cross-validation scores (:func:`drop_no_input`), so the
  out-of-fold predictions and ``cv_*`` scores cover only samples the model could see;
* in a test split it gets an explicit **fallback** prediction, the training prior: the most
  frequent training class (``discrete``) and the mean training valence (and arousal), never a
  model's output on an all-masked input. A warning gives the count;
* the run lists them in ``no_input.csv`` (``name, split``) in its output folder, counts them in
  ``results.json`` (``no_input``) and the printed summary, and logs ``n_no_input`` to MLflow;
  ``python -m submissions.validate FILE --track ... --no-input-names <run>/no_input.csv`` flags
  the submission's rows that are fallbacks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mer.core.errors import UserError
from mer.data.bundle import FeatureBundle
from mer.training.cv import Predictions
from mer.training.data import Split

FILE_NAME = "no_input.csv"
"""The run's list of samples with no input (``name, split``), beside ``results.json``."""


def no_input_mask(bundle: FeatureBundle) -> np.ndarray:
    """``[N]`` True where a row has no feature in any of the bundle's modalities."""
    present = np.zeros(len(bundle.names), dtype=bool)
    for features in bundle.modalities.values():
        present |= np.asarray(features.present, dtype=bool)
    return ~present


def drop_no_input(split: Split) -> Split:
    """``split`` without its rows that have no input (training never sees them, CV never scores them)."""
    mask = no_input_mask(split.X)
    if not mask.any():
        return split
    if mask.all():
        raise UserError(f"none of the {len(mask)} training samples has a feature in any modality (every "
                        f"extraction failed; see failures.jsonl in the run folder): check the dataset's media "
                        f"and transcripts, or choose other features/text, features/audio, features/visual")
    return split.rows(np.flatnonzero(~mask))


@dataclass
class NoInput:
    """The run's samples with no input per split, and the fallback their predictions take."""

    names: dict[str, list[str]]
    classes: tuple[str, ...]
    discrete: int | None = None           # index of the most frequent training class
    valence: float | None = None          # mean training valence
    arousal: float | None = None          # mean training arousal
    fallback_counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, manifest, bundle: FeatureBundle, train: Split) -> "NoInput":
        """From the run's full bundle (every sample) and its training split (no-input rows already
        dropped: the prior is that of the samples the model learns from)."""
        mask = no_input_mask(bundle)
        by_name = {n: i for i, n in enumerate(bundle.names)}
        names: dict[str, list[str]] = {}
        for s in manifest.samples:
            i = by_name.get(s.name)
            if i is not None and mask[i]:
                names.setdefault(s.split, []).append(s.name)
        labelled = train.y[train.y >= 0]
        discrete = int(np.bincount(labelled).argmax()) if labelled.size else None
        finite_v = train.v[np.isfinite(train.v)] if train.v is not None else np.array([])
        valence = float(finite_v.mean()) if finite_v.size else None
        arousal = None
        if "arousal" in train.targets:
            a = np.asarray(train.targets["arousal"], dtype=np.float64)
            arousal = float(a[np.isfinite(a)].mean()) if np.isfinite(a).any() else None
        return cls(names, tuple(manifest.label_spec.classes), discrete, valence, arousal)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.names.values())

    def all_names(self) -> set[str]:
        return {n for v in self.names.values() for n in v}

    def fill(self, preds: Mapping[str, Predictions]) -> dict[str, Predictions]:
        """``preds`` with the fallback in the rows of samples with no input (the run warns once,
        with the counts, when it finds them)."""
        missing = self.all_names()
        out: dict[str, Predictions] = {}
        for split, p in preds.items():
            rows = np.flatnonzero([n in missing for n in p.names])
            if not rows.size:
                out[split] = p
                continue
            probs = p.probs.copy()
            if self.discrete is not None and self.discrete < probs.shape[1]:
                probs[rows] = 0.0
                probs[rows, self.discrete] = 1.0
            valence = None if p.valence is None else p.valence.copy()
            if valence is not None and self.valence is not None:
                valence[rows] = self.valence
            extra = dict(p.extra)
            if "arousal" in extra and self.arousal is not None:
                extra["arousal"] = extra["arousal"].copy()
                extra["arousal"][rows] = self.arousal
            out[split] = Predictions(list(p.names), probs, valence, extra)
            self.fallback_counts[split] = int(rows.size)
        return out

    def describe(self) -> str:
        parts = []
        if self.discrete is not None and self.classes:
            parts.append(f"discrete {self.classes[self.discrete]}, the most frequent training class")
        if self.valence is not None:
            parts.append(f"valence {self.valence:.3f}, the mean training valence")
        if self.arousal is not None:
            parts.append(f"arousal {self.arousal:.3f}")
        return "; ".join(parts) or "none"

    def record(self, train_split: str) -> dict[str, Any]:
        """What ``results.json`` keeps under ``no_input``."""
        return {"count": self.count, "by_split": {k: len(v) for k, v in sorted(self.names.items())},
                "excluded_from_training": len(self.names.get(train_split, [])),
                "fallback": {"discrete": None if self.discrete is None or not self.classes
                             else self.classes[self.discrete],
                             "valence": self.valence, "arousal": self.arousal},
                "fallback_rows": dict(self.fallback_counts), "file": FILE_NAME,
                "names": {k: v for k, v in sorted(self.names.items())}}

    def summary_line(self, train_split: str) -> str | None:
        """The printed summary's line (None when every sample has input)."""
        if not self.count:
            return None
        n_train = len(self.names.get(train_split, []))
        tests = ", ".join(f"{k} {len(v)}" for k, v in sorted(self.names.items()) if k != train_split)
        return (f"no input (no feature in any modality): {self.count} samples; {n_train} of {train_split} left out "
                f"of training and CV" + (f"; test rows with the fallback ({self.describe()}): {tests}" if tests else "")
                + f"; see {FILE_NAME}")

    def write(self, out_dir: Path) -> Path:
        path = Path(out_dir) / FILE_NAME
        rows = [(n, split) for split, names in sorted(self.names.items()) for n in names]
        pd.DataFrame(rows, columns=["name", "split"]).to_csv(path, index=False)
        return path


def no_input_names(path: str | Path, splits: Sequence[str] | None = None) -> list[str]:
    """The names a run's ``no_input.csv`` lists (of ``splits`` only, when given)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if splits is not None and "split" in frame:
        frame = frame[frame["split"].isin(list(splits))]
    return frame["name"].tolist()
