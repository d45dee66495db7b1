"""Prompt templates per task and input set, following GPT-4V-emotion's (``zeroQiaoba/gpt4v-emotion``,
``chatgpt.py``) for the discrete task: a role ("video expression classification expert"), the
number of items and of frames per video, "ignore the speaker's identity", "sort the provided
categories from high to low according to the top 5 similarity", the candidate list as a Python
list, and the answer format ``{'name':, 'result':}`` per item. Text-only, video-only and
text+video requests use the paper's three wordings; audio (which the paper did not send) adds an
"audio" clause in the same style.

Tasks (``TASKS``):

``discrete``     rank the dataset's classes (the top of the ranking is the prediction);
``valence``      one number in the dataset's valence range;
``ov``           any number of emotion words (MER-OV / MER-FG);
``description``  a short description of the emotion and the cues that show it (MER-DES);
``preference``   which of two given descriptions (A or B) fits the clip better (MER-Prefer).

A template is a ``str.format`` string with the fields ``{n}`` (items in the request), ``{items}``
(``video``/``videos``, ``text``/``texts``...), ``{frames}``, ``{labels}``, ``{lo}``/``{hi}``
(valence range); ``mllm.templates.<task>`` in the config replaces a built-in one. The digest of
the rendered instruction is part of every answer's cache key, so a changed prompt asks again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

TASKS = ("discrete", "valence", "ov", "description", "preference")
INPUTS = ("text", "video", "audio")

PROMPT_VERSION = "1"
"""Bump when a built-in template's wording changes (the rendered text is in the key anyway)."""

_FORMAT = "The output format should be {{{{'name':, 'result':}}}} for each {item}."

_ROLE = {
    frozenset({"text"}): "a textual emotion classification expert",
    frozenset({"video"}): "a video expression classification expert",
    frozenset({"audio"}): "an audio expression classification expert",
}

_DISCRETE = {
    # the paper's three wordings (text, video, multi), n and the frame count filled in
    frozenset({"text"}): (
        "Please play the role of a textual emotion classification expert. We provide {n} {items}. "
        "Please recognize the speaker's expression from the provided text. For each text, please sort "
        "the provided categories from high to low according to the top 5 similarity with the input. "
        "Here are the optional categories: {labels}. " + _FORMAT.format(item="text")),
    frozenset({"video"}): (
        "Please play the role of a video expression classification expert. We provide {n} {items}, each "
        "with {frames} temporally uniformly sampled frames. Please ignore the speaker's identity and "
        "focus on their facial expression. For each video, please sort the provided categories from high "
        "to low according to the top 5 similarity with the input video. Here are the optional categories: "
        "{labels}. Please ignore the speaker's identity and focus on the facial expression. "
        + _FORMAT.format(item="video")),
    frozenset({"text", "video"}): (
        "Please play the role of a video expression classification expert. We provide {n} {items}, each "
        "with the speaker's content and {frames} temporally uniformly sampled frames. Please ignore the "
        "speaker's identity and focus on their emotions. For each video, please sort the provided "
        "categories from high to low according to the top 5 similarity with the input video. Here are "
        "the optional categories: {labels}. Please ignore the speaker's identity and focus on their "
        "emotions. " + _FORMAT.format(item="video")),
}

_GENERIC_DISCRETE = (
    "Please play the role of {role}. We provide {n} {items}{with_}. Please ignore the speaker's identity "
    "and focus on their emotions. For each {item}, please sort the provided categories from high to low "
    "according to the top 5 similarity with the input. Here are the optional categories: {labels}. "
    "The output format should be {{'name':, 'result':}} for each {item}.")

_OTHER = {
    "valence": (
        "Please play the role of an emotion analysis expert. We provide {n} {items}{with_}. Please ignore "
        "the speaker's identity and focus on their emotions. For each {item}, please rate the valence of "
        "the speaker's emotion (how negative or positive it is) as one number from {lo} (most negative) "
        "to {hi} (most positive), 0 being neutral. The output format should be {{'name':, 'result':}} "
        "for each {item}, with the number as the result."),
    "ov": (
        "Please play the role of an emotion recognition expert. We provide {n} {items}{with_}. Please "
        "ignore the speaker's identity and focus on their emotions. For each {item}, please name every "
        "emotion the speaker shows, as a list of English emotion words (for example ['happy', "
        "'grateful']); use as many words as are needed, and only emotion words. The output format should "
        "be {{'name':, 'result':}} for each {item}, with the list as the result."),
    "description": (
        "Please play the role of an emotion recognition expert. We provide {n} {items}{with_}. Please "
        "ignore the speaker's identity. For each {item}, please describe in two or three sentences the "
        "speaker's emotional state and the facial, vocal and textual cues that show it. The output "
        "format should be {{'name':, 'result':}} for each {item}, with the description as the result."),
    "preference": (
        "Please play the role of an emotion recognition expert. We provide {n} {items}{with_}, each with "
        "two candidate descriptions of the speaker's emotion, A and B. For each {item}, please decide "
        "which description fits the speaker's emotion and its cues better. The output format should be "
        "{{'name':, 'result':}} for each {item}, with A or B as the result."),
}


def input_set(inputs: Sequence[str]) -> frozenset[str]:
    """The checked set of inputs a request carries (``text``, ``video``, ``audio``)."""
    chosen = frozenset(str(x) for x in inputs)
    unknown = sorted(chosen - set(INPUTS))
    if unknown or not chosen:
        raise ValueError(f"MLLM inputs must be a non-empty subset of {list(INPUTS)}, got {sorted(chosen)}")
    return chosen


def setting_name(inputs: Sequence[str]) -> str:
    """``text``, ``video``, ``multi`` (text+video, the paper's name), or the inputs joined by ``+``."""
    s = input_set(inputs)
    if s == {"text", "video"}:
        return "multi"
    return "+".join(x for x in INPUTS if x in s)


def _item_word(inputs: frozenset[str]) -> str:
    if "video" in inputs:
        return "video"
    return "text" if inputs == {"text"} else "audio clip"


def _with_clause(inputs: frozenset[str], frames: int) -> str:
    parts = []
    if "text" in inputs and inputs != {"text"}:
        parts.append("the speaker's content")
    if "video" in inputs:
        parts.append(f"{frames} temporally uniformly sampled frames")
    if "audio" in inputs and inputs != {"audio"}:
        parts.append("the audio")
    return (", each with " + " and ".join(parts)) if parts else ""


@dataclass(frozen=True)
class PromptSpec:
    """What an instruction says: the task, the inputs, the candidate labels (discrete) and the
    valence range; ``template`` overrides the built-in wording."""

    task: str
    inputs: frozenset[str]
    labels: tuple[str, ...] = ()
    frames: int = 3
    valence_range: tuple[float, float] = (-5.0, 5.0)
    template: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown MLLM task {self.task!r}; tasks: {', '.join(TASKS)}")
        if self.task == "discrete" and not self.labels:
            raise ValueError("the discrete task needs the candidate labels")

    def render(self, n: int = 1) -> str:
        """The instruction for a request of ``n`` items."""
        item = _item_word(self.inputs)
        fields = {"n": n, "items": item + ("s" if n != 1 else ""), "item": item, "frames": self.frames,
                  "labels": repr(list(self.labels)), "lo": _num(self.valence_range[0]),
                  "hi": _num(self.valence_range[1]), "with_": _with_clause(self.inputs, self.frames),
                  "role": _ROLE.get(self.inputs, "an emotion recognition expert")}
        if self.template:
            return self.template.format(**fields)
        if self.task == "discrete":
            text = _DISCRETE.get(self.inputs)
            if text is not None:
                return text.format(**fields)
            return _GENERIC_DISCRETE.format(**fields)
        return _OTHER[self.task].format(**fields)


def _num(x: float) -> str:
    return f"{x:g}"


def build_spec(task: str, inputs: Sequence[str], labels: Sequence[str] = (), frames: int = 3,
               valence_range: Sequence[float] = (-5.0, 5.0),
               templates: Mapping[str, str] | None = None) -> PromptSpec:
    """A :class:`PromptSpec` from config values (``templates``: task -> user template)."""
    return PromptSpec(task, input_set(inputs), tuple(labels), int(frames),
                      (float(valence_range[0]), float(valence_range[1])),
                      (templates or {}).get(task) or None)
