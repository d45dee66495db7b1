"""The emotion-wheel assets of the MER2025+ open-vocabulary scorer, read without openpyxl.

Folder layout (MER2025 Track2 / MER2026 MER-FG ``emotion_wheel/``)::

    format.csv      name,format   a base word and its inflected/derived forms ("abandoned",
                                  "abandoned,abandon,abandonment,...")
    synonym.xlsx    word_run1, synonym_run1, ..., word_run8, synonym_run8: for each of 8 LLM
                    runs, a wheel word and its synonyms ("care", "concern, attention, ...")
    wheel1..5.xlsx  level1, level2, level3; a blank cell continues the value above

How the official scorer chains them (MER2025 ``wheel.py``, restated):

* ``format_map[form]``: every base word whose ``format`` lists ``form``, plus ``base -> base``.
* ``synonym_map[word]``: per run, ``head -> head`` and ``synonym -> head`` (lower-cased,
  stripped), merged over the 8 runs by set union.
* ``wheel_map`` (per wheel and level): level1 clustering maps level1/level2/level3 words to their
  level1 word; level2 clustering maps level2/level3 words to their level2 word and a level1 word
  to the alphabetically first of its level2 words.
* a label maps to ``wheel_map[h]`` for the alphabetically first ``h`` in
  ``{synonym_map[b] for b in format_map[label]}`` that the wheel knows; a label missing from
  ``format_map`` (or with no such ``h``) is dropped.

A base word of ``format.csv`` that ``synonym.xlsx`` does not list raises ``KeyError`` in the
official code; here it contributes nothing (the assets shipped with MER2025/2026 have none, which
:func:`WheelAssets.missing_synonym_bases` lets a test check).
"""
from __future__ import annotations

import csv
import re
import zipfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mer.ov.io import parse_openset_wheel

N_WHEELS = 5
LEVELS = ("level1", "level2")
_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def read_xlsx_rows(path: str | Path) -> list[dict[str, str]]:
    """The first sheet of an ``.xlsx`` file as a list of ``{header: text}`` rows.

    Only what the wheel assets use: shared strings, inline strings and plain values; blank cells
    are absent from the row dict. (The standard library reads the Office Open XML zip directly.)
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .xlsx file: {err}") from None
    with archive:
        names = set(archive.namelist())
        shared: list[str] = []
        if "xl/sharedStrings.xml" in names:
            root = ET.fromstring(archive.read("xl/sharedStrings.xml"))
            shared = ["".join(t.text or "" for t in si.iter(f"{_NS}t")) for si in root.findall(f"{_NS}si")]
        sheet = "xl/worksheets/sheet1.xml"
        if sheet not in names:
            raise ValueError(f"{path} has no first worksheet ({sheet})")
        data = ET.fromstring(archive.read(sheet)).find(f"{_NS}sheetData")
    grid: list[dict[int, str]] = []
    for row in data.findall(f"{_NS}row") if data is not None else []:
        cells: dict[int, str] = {}
        for cell in row.findall(f"{_NS}c"):
            kind, value = cell.get("t"), cell.find(f"{_NS}v")
            if kind == "inlineStr":
                text = "".join(t.text or "" for t in cell.iter(f"{_NS}t"))
            elif value is None or value.text is None:
                continue
            elif kind == "s":
                text = shared[int(value.text)]
            else:
                text = value.text
            cells[_column_index(cell.get("r", "A1"))] = text
        grid.append(cells)
    if not grid:
        return []
    header = {i: h.strip() for i, h in grid[0].items()}
    return [{header[i]: v for i, v in cells.items() if i in header} for cells in grid[1:]]


def _column_index(ref: str) -> int:
    letters = re.match(r"[A-Z]+", ref)
    n = 0
    for ch in letters.group(0) if letters else "A":
        n = n * 26 + ord(ch) - 64
    return n - 1


def read_wheel(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """``level1 -> level2 -> [level3 words]`` (lower-cased, stripped; blanks continue above)."""
    tree: dict[str, dict[str, list[str]]] = {}
    level1 = level2 = level3 = ""
    for row in read_xlsx_rows(path):
        level1 = row.get("level1") or level1
        level2 = row.get("level2") or level2
        level3 = row.get("level3") or level3
        l1, l2, l3 = (x.lower().strip() for x in (level1, level2, level3))
        tree.setdefault(l1, {}).setdefault(l2, []).append(l3)
    return tree


def wheel_cluster_map(tree: dict[str, dict[str, list[str]]], level: str) -> dict[str, str]:
    """Word -> its cluster on one wheel at ``level1`` or ``level2``."""
    if level not in LEVELS:
        raise ValueError(f"wheel level must be one of {LEVELS}, got {level!r}")
    out: dict[str, str] = {}
    for l1, children in tree.items():
        out[l1] = l1 if level == "level1" else sorted(children)[0]
        for l2, leaves in children.items():
            out[l2] = l1 if level == "level1" else l2
            for l3 in leaves:
                out[l3] = l1 if level == "level1" else l2
    return out


@dataclass
class WheelAssets:
    """The three normalisation stages of the wheel scorer (see the module docstring)."""

    format_map: dict[str, list[str]]
    synonym_map: dict[str, list[str]]
    wheels: list[dict[str, dict[str, list[str]]]]
    root: str = ""
    _cluster_maps: dict[tuple[int, str], dict[str, str]] = field(default_factory=dict, repr=False)

    def cluster_map(self, wheel: int, level: str) -> dict[str, str]:
        key = (wheel, level)
        if key not in self._cluster_maps:
            self._cluster_maps[key] = wheel_cluster_map(self.wheels[wheel], level)
        return self._cluster_maps[key]

    def heads(self, word: str) -> list[str]:
        """Sorted wheel-vocabulary heads of ``word`` via format then synonym (may be empty)."""
        out = set()
        for base in self.format_map.get(word, ()):
            out.update(self.synonym_map.get(base, ()))
        return sorted(out)

    def map_word(self, word: str, wheel: int, level: str) -> str:
        """The official case-3 mapping of one lower-cased, stripped word ('' = dropped)."""
        clusters = self.cluster_map(wheel, level)
        for head in self.heads(word):
            if head in clusters:
                return clusters[head]
        return ""

    def wheel_vocabulary(self) -> set[str]:
        return {w for tree in self.wheels for l1, ch in tree.items()
                for w in [l1, *ch, *(x for leaves in ch.values() for x in leaves)]}

    def missing_synonym_bases(self) -> list[str]:
        """Base words of ``format.csv`` that ``synonym.xlsx`` does not list (official: KeyError)."""
        bases = {b for bs in self.format_map.values() for b in bs}
        return sorted(bases - set(self.synonym_map))


def read_format_map(path: str | Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            base = row.get("name") or ""
            for form in parse_openset_wheel(row.get("format") or ""):
                out.setdefault(form, []).append(base)
            out.setdefault(base, []).append(base)
    return out


def read_synonym_map(path: str | Path, runs: int = 8) -> dict[str, list[str]]:
    rows = read_xlsx_rows(path)
    merged: dict[str, set[str]] = {}
    for run in range(1, runs + 1):
        word_col, syn_col = f"word_run{run}", f"synonym_run{run}"
        if rows and word_col not in rows[0]:
            raise ValueError(f"{path}: no column {word_col!r}; columns: {sorted(rows[0])}")
        for row in rows:
            head = (row.get(word_col) or "").strip().lower()
            if not head:
                continue
            merged.setdefault(head, set()).add(head)
            for syn in parse_openset_wheel(row.get(syn_col) or ""):
                merged.setdefault(syn.strip().lower(), set()).add(head)
    return {k: sorted(v) for k, v in merged.items()}


@lru_cache(maxsize=4)
def load_wheel_assets(root: str | Path) -> WheelAssets:
    """Read ``format.csv``, ``synonym.xlsx`` and ``wheel1..5.xlsx`` from ``root`` (cached)."""
    root = Path(root).expanduser()
    needed = ["format.csv", "synonym.xlsx", *(f"wheel{i}.xlsx" for i in range(1, N_WHEELS + 1))]
    missing = [n for n in needed if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(f"emotion-wheel folder {root} lacks {', '.join(missing)} (the "
                                f"MER2025 emotion_wheel assets: format.csv, synonym.xlsx, "
                                f"wheel1..5.xlsx)")
    return WheelAssets(format_map=read_format_map(root / "format.csv"),
                       synonym_map=read_synonym_map(root / "synonym.xlsx"),
                       wheels=[read_wheel(root / f"wheel{i}.xlsx") for i in range(1, N_WHEELS + 1)],
                       root=str(root))
