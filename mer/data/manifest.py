"""The manifest: one :class:`Sample` per id, whatever layout the dataset was released in.

Recipes (``mer/data/prepare_*.py``) turn a raw release into a :class:`Manifest`; everything after
that (extractors, training, submissions) reads the manifest only and joins by sample name.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from mer.core.io import atomic_file
from mer.core.samples import LabelSpec, Sample


@dataclass
class Manifest:
    """All samples of one dataset plus its label spec.

    ``train_split`` names the split cross-validation runs on; every other split is predicted.
    ``protocol``: the fold protocol the dataset's literature uses (IEMOCAP: ``logo`` over its
    sessions), taken when ``train.protocol`` is null; ``None``: no preference.
    """

    dataset: str
    label_spec: LabelSpec
    samples: list[Sample]
    train_split: str = "train"
    root: str | None = None
    protocol: str | None = None

    def __post_init__(self) -> None:
        counts = Counter(s.name for s in self.samples)
        dup = [n for n, c in counts.items() if c > 1]
        if dup:
            raise ValueError(f"{self.dataset}: {len(dup)} duplicate sample names, e.g. {dup[:3]}")
        for s in self.samples:
            if s.discrete is not None and s.discrete not in self.label_spec.classes:
                raise ValueError(f"{self.dataset}: sample {s.name} has label {s.discrete!r}, "
                                 f"not one of {list(self.label_spec.classes)}")
            for dim in ("valence", "arousal"):
                value = getattr(s, dim)
                if value is not None and not math.isfinite(value):
                    raise ValueError(f"{self.dataset}: sample {s.name} has a non-finite {dim}")
        self._by_name = {s.name: s for s in self.samples}

    # --- access ---------------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.samples:
            seen.setdefault(s.split, None)
        return list(seen)

    def split(self, name: str) -> list[Sample]:
        out = [s for s in self.samples if s.split == name]
        if not out:
            raise KeyError(f"{self.dataset} has no split {name!r}; splits: {self.splits}")
        return out

    @property
    def test_splits(self) -> list[str]:
        return [s for s in self.splits if s != self.train_split]

    def __getitem__(self, name: str) -> Sample:
        return self._by_name[name]

    def __len__(self) -> int:
        return len(self.samples)

    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def modalities_present(self) -> set[str]:
        """Which raw inputs exist for at least one sample: ``text``, ``audio``, ``visual``,
        ``physio`` (signal files of the generic manifest)."""
        out = set()
        for s in self.samples:
            if s.transcripts:
                out.add("text")
            if s.audio_path or s.video_path:
                out.add("audio")
            if s.video_path or s.face_path:
                out.add("visual")
            if (s.meta or {}).get("signals"):
                out.add("physio")
        return out

    def subset(self, names: Iterable[str]) -> "Manifest":
        return Manifest(self.dataset, self.label_spec, [self._by_name[n] for n in names],
                        self.train_split, self.root, self.protocol)

    def summary(self) -> str:
        spec = self.label_spec
        what = f"valence in {list(spec.valence_range)} (no classes)" if spec.valence_only else \
            f"classes {list(spec.classes)}{', valence' if spec.has_valence else ''}"
        lines = [f"{self.dataset}: {len(self)} samples, {what}"]
        for sp in self.splits:
            ss = self.split(sp)
            labelled = sum(spec.has_target(s) for s in ss)
            groups = {s.group for s in ss if s.group is not None}
            lines.append(f"  {sp}: {len(ss)} samples, {labelled} labelled" +
                         (f", {len(groups)} groups" if groups else ""))
        return "\n".join(lines)

    # --- persistence (JSONL: one header line, then one sample per line) ---------------------
    def to_jsonl(self, path: str | os.PathLike) -> None:
        with atomic_file(path, "w", encoding="utf-8") as f:
            header = {"dataset": self.dataset, "classes": list(self.label_spec.classes),
                      "has_valence": self.label_spec.has_valence,
                      "valence_range": list(self.label_spec.valence_range),
                      "has_arousal": self.label_spec.has_arousal,
                      "has_frame_labels": self.label_spec.has_frame_labels,
                      "has_discrete": self.label_spec.has_discrete,
                      "frame_label_fps": self.label_spec.frame_label_fps,
                      "train_split": self.train_split, "root": self.root, "protocol": self.protocol}
            f.write(json.dumps({"manifest": header}, ensure_ascii=False) + "\n")
            for s in self.samples:
                f.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike) -> "Manifest":
        with open(path, encoding="utf-8") as f:
            header = json.loads(f.readline())["manifest"]
            samples = [Sample.from_json(json.loads(line)) for line in f if line.strip()]
        spec = LabelSpec(tuple(header["classes"]), header["has_valence"], tuple(header["valence_range"]),
                         bool(header.get("has_arousal", False)), bool(header.get("has_frame_labels", False)),
                         bool(header.get("has_discrete", True)), float(header.get("frame_label_fps") or 0.0))
        return cls(header["dataset"], spec, samples, header["train_split"], header.get("root"),
                   header.get("protocol"))


def label_arrays(samples: Sequence[Sample], spec: LabelSpec):
    """``(y_class [N] int64 with -1 for unknown, y_valence [N] float32 with nan for unknown)``;
    a target the spec does not learn (``has_discrete`` / ``has_valence`` false) is unknown throughout."""
    y = np.array([spec.index(s.discrete) if s.discrete is not None and spec.has_discrete else -1
                  for s in samples], dtype=np.int64)
    v = np.array([s.valence if s.valence is not None and spec.has_valence else np.nan for s in samples],
                 dtype=np.float32)
    return y, v


def arousal_array(samples: Sequence[Sample]):
    """``[N]`` float32 arousal, nan where unknown."""
    return np.array([s.arousal if s.arousal is not None else np.nan for s in samples], dtype=np.float32)


def read_frame_labels(path: str | os.PathLike, num_classes: int):
    """A per-frame label file as ``[F]`` int64: the ABAW Expr format (an optional header line of
    class names, then one class index per video frame; ``-1`` = not annotated). Raises
    ``ValueError`` naming the file and line for anything else."""
    values = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line or (i == 1 and not line.lstrip("-").isdigit()):
                continue
            try:
                k = int(line)
            except ValueError:
                raise ValueError(f"{path}:{i}: {line!r} is not a class index") from None
            if not -1 <= k < num_classes:
                raise ValueError(f"{path}:{i}: class index {k} is outside [-1, {num_classes - 1}]")
            values.append(k)
    if not values:
        raise ValueError(f"{path}: no frame labels")
    return np.asarray(values, np.int64)
