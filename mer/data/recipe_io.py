"""Readers the dataset recipes share: string-typed tables, transcripts, media lookup, labels.

Every recipe (``prepare_<layout>.py``) is a short list of which file means what; the reading,
checking and error wording lives here once, so all layouts fail the same helpful way.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import logging
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mer.core.samples import VALENCE_PLACEHOLDER, Sample

log = logging.getLogger(__name__)

VIDEO_EXTS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv")
AUDIO_EXTS: tuple[str, ...] = (".wav", ".flac", ".mp3", ".m4a", ".ogg")

TRANSCRIPT_COLUMNS: Mapping[str, str] = {"chinese": "chinese", "english": "english", "sentence": "chinese"}
"""Transcript column -> language. ``sentence`` is MER2023's old ASR file (Chinese WeNet output)."""

PLACEHOLDER_LABEL = "neutral"
"""The class the organisers' preprocessing writes for an unknown label (with valence -10)."""


# --- files and folders -------------------------------------------------------------------------
def resolve_root(root: str | os.PathLike, layout: str) -> Path:
    """``root`` as an absolute directory, or a FileNotFoundError that says which layout wanted it."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"{layout}: dataset root {path} is not a directory; pass the folder "
                                f"that holds the released files")
    return path


def describe_dir(root: Path, limit: int = 20) -> str:
    """A short listing of ``root`` for error messages (folders end with ``/``)."""
    entries = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(root))
    shown = ", ".join(entries[:limit]) or "(empty)"
    return shown + (f", ... ({len(entries)} entries)" if len(entries) > limit else "")


def require_file(root: Path, filename: str, layout: str, what: str) -> Path:
    """``root / filename`` or a FileNotFoundError listing what ``root`` holds instead."""
    path = root / filename
    if not path.is_file():
        raise FileNotFoundError(f"{layout}: no {filename} ({what}) in {root}; found: {describe_dir(root)}. "
                                f"Point root at the release folder or pass the file name as an option.")
    return path


def optional_file(root: Path, *candidates: str | None) -> Path | None:
    """The first of ``candidates`` (relative to ``root``) that exists, else ``None``."""
    for name in candidates:
        if name and (root / name).is_file():
            return root / name
    return None


def index_media(folder: Path | None, exts: Sequence[str]) -> dict[str, str]:
    """``{stem: absolute path}`` of the files in ``folder`` with one of ``exts`` (no recursion).

    A missing folder gives ``{}`` (media are optional). Two files with one stem (``a.mp4`` and
    ``a.avi``) are an error, as the sample would be ambiguous. Files are only listed, never opened.
    """
    if folder is None or not folder.is_dir():
        return {}
    found: dict[str, str] = {}
    wanted = {e.lower() for e in exts}
    with os.scandir(folder) as it:
        for entry in it:
            stem, ext = os.path.splitext(entry.name)
            if entry.name.startswith(".") or ext.lower() not in wanted:
                continue  # hidden files such as macOS ``._x.mp4`` resource forks are not media
            if stem in found:
                raise ValueError(f"two media files for sample {stem!r} in {folder}: "
                                 f"{Path(found[stem]).name} and {entry.name}; keep one")
            found[stem] = str(folder / entry.name)
    return found


def face_paths(face_dir: Path | None, names: Iterable[str]) -> dict[str, str]:
    """``{name: path}`` for the MERBench/MER2025 face stacks ``<face_dir>/<name>/<name>.npy`` that exist."""
    if face_dir is None or not face_dir.is_dir():
        return {}
    return {n: str(p) for n in names if (p := face_dir / n / f"{n}.npy").is_file()}


# --- tables ------------------------------------------------------------------------------------
def _decode_table(raw: bytes, path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        first = err
    try:
        text = raw.decode("gb18030")
        log.warning("%s is not UTF-8; read it as GB18030 (GBK)", path)
        return text
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8-sig", errors="replace")
    bad_lines = [i + 1 for i, line in enumerate(text.splitlines()) if "\ufffd" in line]
    log.warning("%s is neither UTF-8 nor GB18030 (%s); lines %s hold undecodable bytes, shown as U+FFFD: "
                "their samples get no text features", path, first.reason, bad_lines[:10])
    return text


def read_table(path: Path, required: Sequence[str] = ("name",), sep: str = ",") -> list[dict[str, str]]:
    """Rows of a CSV (``sep="\\t"``: TSV) as ``{column: str}``, every cell a string (``''`` where empty).

    ``dtype=str`` and ``keep_default_na=False`` keep ``00123`` a string and a transcript that
    reads ``NA`` a transcript; ``utf-8-sig`` drops an Excel BOM. Column names are stripped;
    names (column ``name``) are stripped, must be non-empty and unique.

    A file that is not UTF-8 is read as GB18030 when it is valid GB18030 (Chinese subtitles are
    often GBK); otherwise its invalid bytes become U+FFFD, a warning names the rows, and the text
    extractors record those samples as ``undecodable_transcript`` instead of embedding noise.
    """
    import pandas as pd  # deferred: loads pandas only when used

    raw = Path(path).read_bytes()
    text = _decode_table(raw, path)
    frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)}")
    rows = frame.to_dict("records")
    if "name" in frame.columns:
        check_names([r["name"] for r in rows], path)
        for r in rows:
            r["name"] = r["name"].strip()
    return rows


def check_names(names: Sequence[Any], source: Any) -> None:
    """Raise on empty or repeated names; rows are counted from 1 at the first data row."""
    seen: dict[str, int] = {}
    for row, name in enumerate(names, start=1):
        name = str(name).strip() if name is not None else ""
        if not name:
            raise ValueError(f"{source}: row {row} has an empty name")
        if name in seen:
            raise ValueError(f"{source}: name {name!r} appears in rows {seen[name]} and {row}; "
                             f"names must be unique")
        seen[name] = row


def read_label_csv(path: Path, classes: Sequence[str], split: str, *, use_valence: bool
                   ) -> list[tuple[str, str | None, float | None]]:
    """``[(name, discrete, valence)]`` of split ``split``'s label CSV (``name,discrete[,valence]``).

    File order is kept. ``valence`` is ``None`` when ``use_valence`` is false, the column is
    absent (MER2023 test3) or the cell holds -10; a non-train file of placeholders only comes
    back unlabelled. Errors name the file, the row and the sample.
    """
    rows = read_table(path, required=("name", "discrete"))
    out = []
    for row, r in enumerate(rows, start=1):
        where = f"{path}: row {row} ({r['name']})"
        valence = parse_valence(r.get("valence"), where) if use_valence else None
        out.append((r["name"], parse_discrete(r["discrete"], classes, where), valence))
    return unlabel_placeholder_split(out, [r.get("valence") for r in rows], split)


def read_names(path: Path) -> list[str]:
    """The ``name`` column of a names-only CSV (``test1-names.csv``)."""
    return [r["name"] for r in read_table(path)]


# --- transcripts -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transcripts:
    """A transcript file read: ``{name: {language: text}}``, its languages and where it came from."""

    by_name: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    languages: tuple[str, ...] = ()
    path: Path | None = None

    def of(self, name: str) -> dict[str, str]:
        """Every language for a listed sample (``''`` = a real empty transcript); ``{}`` if not listed."""
        text = self.by_name.get(name)
        return {} if text is None else {lang: text.get(lang, "") for lang in self.languages}


def read_transcripts(path: Path | None) -> Transcripts:
    """The transcript CSV at ``path`` (``None`` -> no transcripts).

    Columns: ``name`` plus any of ``chinese``, ``english``, ``sentence`` (old MER2023 ASR file,
    stored as ``chinese``: it is Chinese text, and filing it under ``english`` would feed Chinese
    to English text models). Empty cells are real empty transcripts (``''``).
    """
    if path is None:
        return Transcripts()
    rows = read_table(path)
    columns = [c for c in rows[0] if c in TRANSCRIPT_COLUMNS] if rows else []
    if rows and not columns:
        raise ValueError(f"{path}: no transcript column; expected one of {list(TRANSCRIPT_COLUMNS)}, "
                         f"found {list(rows[0])}")
    languages = tuple(dict.fromkeys(TRANSCRIPT_COLUMNS[c] for c in columns))
    if len(languages) < len(columns):
        raise ValueError(f"{path}: columns {columns} give the same language twice; keep one")
    by_name = {r["name"]: {TRANSCRIPT_COLUMNS[c]: r[c] for c in columns} for r in rows}
    return Transcripts(by_name, languages, path)


def load_transcripts(root: Path, layout: str, language: str | None, chosen: str | None,
                     *defaults: str) -> Transcripts:
    """Read the transcript file ``chosen`` (must exist) or the first of ``defaults`` present.

    No file at all is fine (a dataset of media only); it is logged so a misplaced file shows.
    """
    if chosen is not None:
        path = require_file(root, chosen, layout, "transcripts")
    else:
        path = optional_file(root, *defaults)
        if path is None:
            log.warning("%s: none of %s in %s; samples have no transcripts", layout, list(defaults), root)
    transcripts = read_transcripts(path)
    check_language(language, transcripts, layout)
    return transcripts


def check_language(language: str | None, transcripts: Transcripts, layout: str) -> None:
    """Fail early when the transcripts lack the language text features are meant to read.

    ``language=None`` skips the check. A source with one language only (MER2023's old
    ``transcription.csv``, MER2024's Chinese subtitles) is accepted whatever was asked, with a
    log line, since that one language is all the release offers.
    """
    languages, source = transcripts.languages, transcripts.path
    if language is None or source is None or language in languages:
        return
    if len(languages) == 1:
        log.info("%s: %s holds %s transcripts only; samples carry them under %r (asked for %r)",
                 layout, source.name, languages[0], languages[0], language)
        return
    raise ValueError(f"{layout}: {source} has transcripts in {list(languages)}, not {language!r}; "
                     f"pass language= one of those")


# --- labels ------------------------------------------------------------------------------------
def parse_valence(value: Any, where: str) -> float | None:
    """A valence cell as a float; ``None`` for empty or the placeholder -10. Errors name ``where``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        valence = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: valence {value!r} is not a number") from None
    if not math.isfinite(valence):
        raise ValueError(f"{where}: valence {value!r} is not finite; leave the cell empty for unknown")
    return None if valence == VALENCE_PLACEHOLDER else valence


def parse_discrete(value: Any, classes: Sequence[str], where: str) -> str | None:
    """A discrete label as one of ``classes``; ints index ``classes`` (MERBench MELD); empty -> ``None``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        index = int(value)
        if not 0 <= index < len(classes):
            raise ValueError(f"{where}: label index {index} is outside 0..{len(classes) - 1} "
                             f"({list(classes)})")
        return classes[index]
    label = str(value).strip()
    if label not in classes:
        raise ValueError(f"{where}: label {label!r} is not one of {list(classes)}; pass classes= if the "
                         f"dataset uses other labels")
    return label


def is_placeholder(discrete: str | None, raw_valence: Any) -> bool:
    """Whether a parsed label with its *raw* valence is the organisers' unknown-label placeholder.

    The placeholder is ``neutral`` with an explicit valence of -10. A missing valence (MER2023's
    test3 file has no valence column) is not enough: an all-neutral labelled split would vanish.
    """
    try:
        return discrete == PLACEHOLDER_LABEL and float(raw_valence) == VALENCE_PLACEHOLDER
    except (TypeError, ValueError):
        return False


def unlabel_placeholder_split(labels: list[tuple[str, str | None, float | None]],
                              raw_valences: Sequence[Any], split: str,
                              train_split: str = "train") -> list[tuple[str, str | None, float | None]]:
    """``[(name, discrete, valence)]`` as given, or all unlabelled for a placeholder-only split.

    A non-train split whose every entry is a placeholder carries no labels (withheld test
    labels). One real label makes the split labelled, since ``neutral`` is also a real class;
    a train entry is always a label.
    """
    if split == train_split or not labels:
        return labels
    if all(is_placeholder(d, raw) for (_, d, _), raw in zip(labels, raw_valences, strict=True)):
        return [(name, None, None) for name, _, _ in labels]
    return labels


# --- samples -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Media:
    """Where each sample's media are: ``{name: absolute path}`` per kind; absent names have none."""

    videos: Mapping[str, str] = field(default_factory=dict)
    audios: Mapping[str, str] = field(default_factory=dict)
    faces: Mapping[str, str] = field(default_factory=dict)


def find_media(root: Path, names: Iterable[str], video_dirs: Sequence[str] = ("video",),
               audio_dirs: Sequence[str] = ("audio",), face_dir: str = "openface_face") -> Media:
    """List the media folders under ``root`` (each optional) for the samples in ``names``.

    ``video_dirs`` may be several (MER2023 keeps one folder per split); a name found in two of
    them is an error. Faces are MERBench's ``<face_dir>/<name>/<name>.npy`` stacks.
    """
    def merged(dirs: Sequence[str], exts: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for d in dirs:
            for stem, path in index_media(root / d, exts).items():
                if stem in out:
                    raise ValueError(f"sample {stem!r} has media in two folders: {out[stem]} and {path}; "
                                     f"keep one")
                out[stem] = path
        return out

    return Media(merged(video_dirs, VIDEO_EXTS), merged(audio_dirs, AUDIO_EXTS),
                 face_paths(root / face_dir, names))


MEDIA_FIELDS: tuple[str, ...] = ("video_path", "audio_path", "face_path")

ALLOW_LINKS_OPTION = "data.options.allow_external_links=true"


def external_target(path: str | os.PathLike, root: str | os.PathLike) -> Path | None:
    """Where ``path`` really is when it lies in ``root`` as listed but a symlink (of the file or of
    a folder on its way) takes it out of ``root``; None when it stays inside, or when the path is
    outside ``root`` as written (an absolute path a manifest names on purpose is not a link)."""
    listed = os.path.abspath(os.path.expanduser(os.fspath(path)))
    given = os.path.abspath(os.path.expanduser(os.fspath(root)))
    real_root = _real_dir(given)
    if not (_inside(listed, given) or _inside(listed, real_root)):
        return None
    folder, name = os.path.split(listed)
    real = os.path.realpath(listed) if os.path.islink(listed) else os.path.join(_real_dir(folder), name)
    return None if _inside(real, real_root) else Path(real)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@functools.lru_cache(maxsize=4096)
def _real_dir(folder: str) -> str:
    """``folder`` resolved, once per folder and call (a release has few folders, many files)."""
    return os.path.realpath(folder)


def refuse_external_links(samples: Sequence[Sample], root: str | os.PathLike, allow: bool = False,
                          dataset: str = "") -> list[Sample]:
    """``samples`` with every media path that links out of the dataset ``root`` dropped (a link in
    a downloaded release must not make mer read files elsewhere on the machine).

    A dropped path leaves ``meta["refused_media"][field]`` saying which link went where, so the
    extractors record that sample's failure as ``external_link`` with that message and the run
    goes on with the rest. ``allow=True`` (``data.options.allow_external_links=true``) keeps them.
    """
    if allow:
        return list(samples)
    _real_dir.cache_clear()                     # folders are resolved once per call, as they are now
    out: list[Sample] = []
    refused: list[str] = []
    for sample in samples:
        dropped: dict[str, str] = {}
        for name in MEDIA_FIELDS:
            path = getattr(sample, name)
            target = external_target(path, root) if path else None
            if target is not None:
                dropped[name] = (f"sample {sample.name}: {name} {path} links to {target}, outside the "
                                 f"dataset root {root}; not read (set {ALLOW_LINKS_OPTION} to follow "
                                 f"links out of the root)")
        if dropped:
            meta = {**dict(sample.meta), "refused_media": dropped}
            sample = dataclasses.replace(sample, meta=meta, **{k: None for k in dropped})
            refused.append(next(iter(dropped.values())))
        out.append(sample)
    if refused:
        log.warning("%s%d sample(s) have media linking out of the dataset root, e.g. %s; they are recorded "
                    "as failures (external_link) and the rest goes on", f"{dataset}: " if dataset else "",
                    len(refused), refused[0])
    return out


def build_sample(name: str, split: str, media: Media, transcripts: Transcripts,
                 discrete: str | None = None, valence: float | None = None) -> Sample:
    """One :class:`Sample`: media and transcripts looked up by name, ``None``/``{}`` where absent.

    A sample missing from the transcript file gets no transcripts (unknown text), which is not
    the same as an empty transcript (``''``, listed but silent).
    """
    return Sample(name=name, split=split, video_path=media.videos.get(name),
                  audio_path=media.audios.get(name), face_path=media.faces.get(name),
                  transcripts=transcripts.of(name), discrete=discrete, valence=valence)


def build_samples(split: str, labels: Sequence[tuple[str, str | None, float | None]], media: Media,
                  transcripts: Transcripts) -> list[Sample]:
    """Samples of one split from ``[(name, discrete, valence)]``."""
    return [build_sample(n, split, media, transcripts, d, v) for n, d, v in labels]
