"""What one sample is and what a dataset's labels look like: :class:`Sample`, :class:`LabelSpec`
and the official class lists. Every layer reads samples; nothing here reads a file."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

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
    frame_label_fps: float = 0.0
    """The rate of the per-frame labels where a sample's video does not say (0.0: unknown; then
    labels follow the steps by share of length where no video gives the rate)."""

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
