"""The manifest: one :class:`Sample` per id, whatever layout the dataset was released in.

Recipes (``mer/data/prepare_*.py``) turn a raw release into a :class:`Manifest`; everything after
that (extractors, training, submissions) reads the manifest only and joins by sample name.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

MER_CLASSES: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")
"""MER2023-2026 discrete labels, exact strings, in the official index order."""

MELD_CLASSES: tuple[str, ...] = ("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise")
"""MELD labels in MERBench's index order."""

VALENCE_PLACEHOLDER = -10.0
"""What the organisers' preprocessing writes for an unknown valence."""

TARGETS: tuple[str, ...] = ("discrete", "valence")
"""What a run can learn: the class, the valence, or both (``data.targets``)."""


@dataclass(frozen=True)
class LabelSpec:
    """What a dataset's labels look like: the class strings in index order and whether valence exists.

    ``has_discrete=False`` (sentiment data: CMU-MOSI, SIMS...): the valence is the only target;
    the classes are not learnt and the discrete labels, if any, are ignored."""

    classes: tuple[str, ...]
    has_valence: bool = False
    valence_range: tuple[float, float] = (-5.0, 5.0)
    has_arousal: bool = False
    has_frame_labels: bool = False
    """Per-frame discrete labels (ABAW Expr files, :func:`read_frame_labels`) over the same classes."""
    has_discrete: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targets(self) -> tuple[str, ...]:
        """The targets a run learns, of :data:`TARGETS`."""
        return tuple(t for t, on in zip(TARGETS, (self.has_discrete, self.has_valence)) if on)

    @property
    def valence_only(self) -> bool:
        return self.has_valence and not self.has_discrete

    def has_target(self, sample: "Sample") -> bool:
        """Whether ``sample`` has a label for one of the targets (a training row)."""
        return ((self.has_discrete and sample.discrete is not None)
                or (self.valence_only and sample.valence is not None))

    def index(self, label: str) -> int:
        try:
            return self.classes.index(label)
        except ValueError:
            raise ValueError(f"label {label!r} is not one of {list(self.classes)}") from None


@dataclass(frozen=True)
class Sample:
    """One utterance/clip.

    ``discrete``/``valence`` are ``None`` where the label is unknown (withheld test labels,
    unlabelled pools). ``transcripts`` maps a language (``english``, ``chinese``...) to text; an
    empty string is a real, empty transcript. Media paths are absolute or ``None``.
    """

    name: str
    split: str
    video_path: str | None = None
    audio_path: str | None = None
    face_path: str | None = None
    transcripts: Mapping[str, str] = field(default_factory=dict)
    discrete: str | None = None
    valence: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    arousal: float | None = None
    frame_labels: str | None = None
    """A per-frame label file (one class index per video frame, -1 = unannotated), or ``None``."""
    group: str | None = None
    """Speaker, session or dialogue (IEMOCAP: ``Ses01``), what group-aware folds keep whole."""

    @property
    def is_labelled(self) -> bool:
        return self.discrete is not None

    def text(self, language: str) -> str | None:
        """The transcript in ``language``; ``None`` when the sample has none in that language."""
        return self.transcripts.get(language)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["transcripts"] = dict(self.transcripts)
        d["meta"] = dict(self.meta)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Sample":
        return cls(**{**d, "transcripts": dict(d.get("transcripts") or {}), "meta": dict(d.get("meta") or {})})


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
        """Which raw inputs exist for at least one sample: ``text``, ``audio``, ``visual``."""
        out = set()
        for s in self.samples:
            if s.transcripts:
                out.add("text")
            if s.audio_path or s.video_path:
                out.add("audio")
            if s.video_path or s.face_path:
                out.add("visual")
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            header = {"dataset": self.dataset, "classes": list(self.label_spec.classes),
                      "has_valence": self.label_spec.has_valence,
                      "valence_range": list(self.label_spec.valence_range),
                      "has_arousal": self.label_spec.has_arousal,
                      "has_frame_labels": self.label_spec.has_frame_labels,
                      "has_discrete": self.label_spec.has_discrete,
                      "train_split": self.train_split, "root": self.root, "protocol": self.protocol}
            f.write(json.dumps({"manifest": header}, ensure_ascii=False) + "\n")
            for s in self.samples:
                f.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike) -> "Manifest":
        with open(path, encoding="utf-8") as f:
            header = json.loads(f.readline())["manifest"]
            samples = [Sample.from_json(json.loads(line)) for line in f if line.strip()]
        spec = LabelSpec(tuple(header["classes"]), header["has_valence"], tuple(header["valence_range"]),
                         bool(header.get("has_arousal", False)), bool(header.get("has_frame_labels", False)),
                         bool(header.get("has_discrete", True)))
        return cls(header["dataset"], spec, samples, header["train_split"], header.get("root"),
                   header.get("protocol"))


def label_arrays(samples: Sequence[Sample], spec: LabelSpec):
    """``(y_class [N] int64 with -1 for unknown, y_valence [N] float32 with nan for unknown)``;
    a target the spec does not learn (``has_discrete`` / ``has_valence`` false) is unknown throughout."""
    import numpy as np

    y = np.array([spec.index(s.discrete) if s.discrete is not None and spec.has_discrete else -1
                  for s in samples], dtype=np.int64)
    v = np.array([s.valence if s.valence is not None and spec.has_valence else np.nan for s in samples],
                 dtype=np.float32)
    return y, v


def arousal_array(samples: Sequence[Sample]):
    """``[N]`` float32 arousal, nan where unknown."""
    import numpy as np

    return np.array([s.arousal if s.arousal is not None else np.nan for s in samples], dtype=np.float32)


def read_frame_labels(path: str | os.PathLike, num_classes: int):
    """A per-frame label file as ``[F]`` int64: the ABAW Expr format (an optional header line of
    class names, then one class index per video frame; ``-1`` = not annotated). Raises
    ``ValueError`` naming the file and line for anything else."""
    import numpy as np

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
