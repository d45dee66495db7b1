"""Any dataset, described by one manifest file the user writes (CSV, TSV or JSONL).

Columns (JSONL: keys; only ``name`` is required)::

    name                      sample id, kept as the exact string (``00123`` stays ``00123``)
    split                     default ``train`` (option ``train_split``)
    video, audio, face        media paths, relative to ``root`` or absolute; empty = none
    text | transcript         transcript in the language named by option ``language``
    text_<lang>               transcript in ``<lang>`` (``text_chinese``, ``text_english`` ...)
    discrete                  class string; empty = unknown
    valence                   number; empty (or the -10 placeholder) = unknown
    arousal                   number; empty = unknown (a regression head is trained when any is known)
    frame_labels              per-frame class file (ABAW Expr format: an optional header line, then
                              one class index per video frame, -1 = unannotated); a row without
                              ``discrete`` takes its most frequent annotated frame class
    signal, signal_<name>     physiological signal files (CSV / NPY / NPZ; EDA, ECG, BVP...), relative
                              to ``root`` or absolute: ``Sample.meta["signals"]`` maps ``physio``
                              (plain ``signal``) or ``<name>`` to the path; the ``physio_stats``
                              extractor (``features/physio=stats``) reads them as a frame-level stream
    group                     speaker / session / dialogue id, kept whole by the group-aware fold
                              protocols (``train.protocol=stratified_group`` or ``logo``); without
                              the column, IEMOCAP-style names (``Ses01F_impro01_F000``) give their
                              session (``Ses01``)

A dataset whose rows carry a ``valence`` and no ``discrete`` is sentiment data: the valence is its
only target (CMU-MOSI style), scored with the sentiment metrics.

Any other column is kept, per sample, in ``Sample.meta`` (speaker, duration, ...). An empty
transcript cell is an empty transcript (``''``). Errors name the file, the row and the sample.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mer.core.samples import LabelSpec, Sample

from .manifest import Manifest, read_frame_labels
from .prepare_merbench import iemocap_session
from .recipe_io import check_names, parse_valence, read_table, resolve_root
from .recipes import RECIPES

LAYOUT = "generic"
MEDIA_COLUMNS = {"video": "video_path", "audio": "audio_path", "face": "face_path"}
PLAIN_TEXT_COLUMNS = ("text", "transcript")
TEXT_PREFIX = "text_"
SIGNAL_COLUMN, SIGNAL_PREFIX, DEFAULT_SIGNAL = "signal", "signal_", "physio"
KNOWN_COLUMNS = {"name", "split", "discrete", "valence", "arousal", "frame_labels", "group", *MEDIA_COLUMNS,
                 *PLAIN_TEXT_COLUMNS}


@dataclass(frozen=True)
class _Context:
    """What every row needs to become a Sample."""

    root: Path
    source: Path
    language: str | None
    train_split: str
    check_media: bool


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of the manifest file: ``.jsonl``/``.ndjson`` one object a line, ``.tsv`` tabs, else CSV.

    CSV cells are strings (``''`` where empty); JSONL values are as written (``null`` = empty).
    """
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    return read_table(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {line_no} is not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {line_no} is a JSON {type(row).__name__}, not an object")
            if "name" not in row:
                raise ValueError(f"{path}: line {line_no} has no 'name'; keys are {sorted(row)}")
            rows.append(row)
    return rows


def _name(value: Any, where: str) -> str:
    # JSON numbers are accepted as ids (123 -> "123"); floats and others would round-trip badly.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: name {value!r} must be a string")
    return str(value).strip()


def _media(row: dict[str, Any], ctx: _Context, where: str) -> dict[str, str | None]:
    """``{video_path, audio_path, face_path}`` of a row, resolved against ``ctx.root``."""
    out: dict[str, str | None] = {}
    for column, field_name in MEDIA_COLUMNS.items():
        value = row.get(column)
        if _empty(value):
            out[field_name] = None
            continue
        path = Path(str(value).strip()).expanduser()
        path = path if path.is_absolute() else ctx.root / path
        if ctx.check_media and not path.exists():
            raise FileNotFoundError(f"{where}: {column} file {path} does not exist; fix the path "
                                    f"(relative paths start at {ctx.root}) or pass check_media=False")
        out[field_name] = str(path)
    return out


def _signals(row: dict[str, Any], ctx: _Context, where: str) -> dict[str, str]:
    """``{signal name: path}`` from ``signal`` (named ``physio``) and ``signal_<name>`` columns."""
    out: dict[str, str] = {}
    for column, value in row.items():
        if column == SIGNAL_COLUMN:
            name = DEFAULT_SIGNAL
        elif column.startswith(SIGNAL_PREFIX) and len(column) > len(SIGNAL_PREFIX):
            name = column[len(SIGNAL_PREFIX):]
        else:
            continue
        if _empty(value):
            continue
        path = Path(str(value).strip()).expanduser()
        path = path if path.is_absolute() else ctx.root / path
        if ctx.check_media and not path.exists():
            raise FileNotFoundError(f"{where}: {column} file {path} does not exist; fix the path "
                                    f"(relative paths start at {ctx.root}) or pass check_media=False")
        out[name] = str(path)
    return out


def _is_signal_column(column: str) -> bool:
    return column == SIGNAL_COLUMN or column.startswith(SIGNAL_PREFIX)


def _transcripts(row: dict[str, Any], ctx: _Context, where: str) -> dict[str, str]:
    """``{language: text}`` from ``text``/``transcript`` (in ``ctx.language``) and ``text_<lang>``."""
    out: dict[str, str] = {}
    for column, value in row.items():
        if column in PLAIN_TEXT_COLUMNS:
            if ctx.language is None:
                raise ValueError(f"{ctx.source}: column {column!r} needs language= to say what "
                                 f"language it is")
            lang = ctx.language
        elif column.startswith(TEXT_PREFIX) and len(column) > len(TEXT_PREFIX):
            lang = column[len(TEXT_PREFIX):]
        else:
            continue
        if lang in out:
            raise ValueError(f"{where}: two columns give the {lang} transcript; keep one of "
                             f"{[c for c in row if c in PLAIN_TEXT_COLUMNS or c == TEXT_PREFIX + lang]}")
        out[lang] = "" if value is None else str(value)
    return out


def _row_sample(row: dict[str, Any], row_no: int, ctx: _Context) -> Sample:
    """One row as a Sample; ``discrete`` is checked against the classes later, once they are known."""
    name = _name(row.get("name"), f"{ctx.source}: row {row_no}")
    where = f"{ctx.source}: row {row_no} ({name})"
    split = ctx.train_split if _empty(row.get("split")) else str(row["split"]).strip()
    meta: dict[str, Any] = {k: v for k, v in row.items() if k not in KNOWN_COLUMNS and not k.startswith(TEXT_PREFIX)
                            and not _is_signal_column(k) and not _empty(v)}
    signals = _signals(row, ctx, where)
    if signals:
        meta["signals"] = signals
    discrete = None if _empty(row.get("discrete")) else str(row["discrete"]).strip()
    frame_labels = None
    if not _empty(row.get("frame_labels")):
        path = Path(str(row["frame_labels"]).strip()).expanduser()
        path = path if path.is_absolute() else ctx.root / path
        if not path.is_file():
            raise FileNotFoundError(f"{where}: frame_labels file {path} does not exist")
        frame_labels = str(path)
    try:
        arousal = parse_valence(row.get("arousal"), where)
    except ValueError as e:
        raise ValueError(str(e).replace(": valence ", ": arousal ", 1)) from None
    group = None if _empty(row.get("group")) else str(row["group"]).strip()
    return Sample(name=name, split=split, **_media(row, ctx, where),
                  transcripts=_transcripts(row, ctx, where), discrete=discrete,
                  valence=parse_valence(row.get("valence"), where), meta=meta,
                  arousal=arousal, frame_labels=frame_labels, group=group)


def _with_frame_majority(samples: list[Sample], classes: Sequence[str]) -> list[Sample]:
    """Rows with per-frame labels but no ``discrete``: the most frequent annotated frame class."""
    out = []
    for s in samples:
        if s.discrete is None and s.frame_labels is not None:
            frames = read_frame_labels(s.frame_labels, len(classes))
            known = frames[frames >= 0]
            if len(known):
                s = dataclasses.replace(s, discrete=classes[int(np.bincount(known, minlength=len(classes)).argmax())])
        out.append(s)
    return out


def _label_spec(samples: Sequence[Sample], classes: Sequence[str] | None, ctx: _Context,
                valence_range: tuple[float, float]) -> LabelSpec:
    """Classes as given or sorted from the train split; every label and valence checked against them."""
    if classes is None:
        classes = sorted({s.discrete for s in samples
                          if s.split == ctx.train_split and s.discrete is not None})
        origin = f"the classes found in split {ctx.train_split!r}"
    else:
        origin = "the classes option"
    low, high = valence_range
    for row_no, s in enumerate(samples, start=1):
        where = f"{ctx.source}: row {row_no} ({s.name})"
        if s.discrete is not None and s.discrete not in classes:
            raise ValueError(f"{where}: label {s.discrete!r} is not one of {list(classes)} ({origin}); "
                             f"fix the label or pass classes=[...]")
        if s.valence is not None and not low <= s.valence <= high:
            raise ValueError(f"{where}: valence {s.valence} is outside valence_range {list(valence_range)}; "
                             f"leave the cell empty for unknown or pass valence_range=")
        if s.arousal is not None and not low <= s.arousal <= high:
            raise ValueError(f"{where}: arousal {s.arousal} is outside valence_range {list(valence_range)} "
                             f"(shared by both dimensions)")
    has_valence = any(s.valence is not None for s in samples)
    # no class anywhere but valences: sentiment data, the valence its only target
    has_discrete = bool(classes) or not has_valence
    return LabelSpec(tuple(classes), has_valence=has_valence, valence_range=(float(low), float(high)),
                     has_arousal=any(s.arousal is not None for s in samples),
                     has_frame_labels=any(s.frame_labels is not None for s in samples),
                     has_discrete=has_discrete)


@RECIPES.register(LAYOUT)
def prepare_generic(root: str | os.PathLike, *, manifest: str | os.PathLike, language: str | None = "english",
                    classes: Sequence[str] | None = None, train_split: str = "train",
                    valence_range: Sequence[float] = (-5.0, 5.0), check_media: bool = True,
                    dataset: str | None = None, frame_label_fps: float = 0.0) -> Manifest:
    """Manifest of the dataset described by the file ``manifest`` (relative to ``root`` or absolute).

    Options:
      manifest: the CSV/TSV/JSONL file (columns in the module docstring).
      language: the language of plain ``text``/``transcript`` columns.
      classes: class strings in index order; default: sorted labels of the train split.
      train_split: the split cross-validation runs on and the default for rows without one.
      valence_range: ``(low, high)``; valences outside are errors (a stray placeholder, a typo).
      check_media: whether listed media paths must exist (files are never opened).
      dataset: manifest dataset name (default: the root folder's name).
      frame_label_fps: the rate of the ``frame_labels`` files where a sample's video does not
        give it (no video, face crops only); 0: labels then follow the steps by share of length.
    """
    root = resolve_root(root, LAYOUT)
    source = Path(manifest).expanduser()
    source = source if source.is_absolute() else root / source
    if not source.is_file():
        raise FileNotFoundError(f"{LAYOUT}: manifest file {source} does not exist; pass manifest= a CSV or "
                                f"JSONL path (relative to {root} or absolute)")
    ctx = _Context(root, source, language, train_split, check_media)
    rows = read_rows(source)
    samples = [_row_sample(row, row_no, ctx) for row_no, row in enumerate(rows, start=1)]
    check_names([s.name for s in samples], source)
    if not any("group" in row for row in rows):
        sessions = [iemocap_session(s.name) for s in samples]
        if samples and all(sessions):
            samples = [dataclasses.replace(s, group=g) for s, g in zip(samples, sessions)]
    if any(s.frame_labels is not None and s.discrete is None for s in samples):
        if classes is None:
            raise ValueError(f"{source}: rows with frame_labels and no discrete label need classes=[...] "
                             f"(the class names of the frame indices, in index order)")
        samples = _with_frame_majority(samples, list(classes))
    spec = _label_spec(samples, None if classes is None else list(classes), ctx,
                       (float(valence_range[0]), float(valence_range[1])))
    if frame_label_fps:
        if float(frame_label_fps) < 0:
            raise ValueError(f"frame_label_fps must be >= 0 (0: unknown), got {frame_label_fps}")
        spec = dataclasses.replace(spec, frame_label_fps=float(frame_label_fps))
    return Manifest(dataset or root.name, spec, samples, train_split=train_split, root=str(root))
