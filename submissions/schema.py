"""Submission file formats: one registered :class:`SubmissionSchema` per challenge track.

Every track is one row of :data:`SUBMISSION_SCHEMAS`. A schema's *kind* says what one row holds:

* ``discrete``: a class string, and for some tracks a valence (``name,discrete[,valence]``);
* ``openset``: a Python-list string of emotion words (``name,openset``), read by the official
  parsers of :mod:`submissions.openset`;
* ``description``: one free-text description per sample;
* ``preference``: which of two candidate descriptions is preferred.

Its *container* is a CSV file (the header is the columns) or a ``.npz`` archive (the columns are
the names of two 1-D string arrays, entry ``i`` of each forming row ``i``).

==============  ===========  ===================================  ==================  ======  =============================================
schema          kind         header (CSV) / arrays (npz)          file name           rows    followed (MERTools path) / public?
==============  ===========  ===================================  ==================  ======  =============================================
mer2023_multi   discrete     name,discrete,valence                any                 411     ``MER2023/main-release.py`` write_to_csv_pred
mer2023_noise   discrete     name,discrete,valence                any                 412     same writer
mer2023_semi    discrete     name,discrete,valence                any                 --      same writer; every test3 video, the labelled
                                                                                              subset scored
mer2024_semi    discrete     name,discrete                        any                 --      not public (no writer in ``MER2024/``);
                                                                                              presumed from the 2023 format
mer2024_noise   discrete     name,discrete                        any                 --      not public, as mer2024_semi
mer2024_ov      openset      name,openset                         any                 --      ``MER2024/ov_store/predict-openset.csv``,
                                                                                              ``MER2024/toolkit/utils/functions.py``
mer2025_track1  discrete     name,discrete                        ``submission.csv``  20000   ``MER2025/MER2025_Track1/{README.md,
                                                                                              submission.py,evaluation.py}``
mer2025_fg      openset      filenames,fileitems (npz)            ``*-openset.npz``   20000   ``MER2025/MER2025_Track23/README.md`` ("Codalab
                                                                                              only accepts *-openset.npz"), ``evaluation.py``
mer2025_des     description  name,reason                          any                 20000   not public; the columns of ``evaluation.py``'s
                                                                                              reason_csv and ``track3_train_*.csv``
mer2026_cross   discrete     name,discrete                        any                 20000   ``MER2026/MER2026_Track1/{submission.py,
                                                                                              evaluation.py}``; file name not public
mer2026_fg      openset      filenames,fileitems (npz)            ``*-openset.npz``   20000   ``MER2026/MER2026_Track2/evaluation.py``;
                                                                                              the platform's format is not public
mer2026_prefer  preference   name,preference (a1 | a2 | same)     any                 10000   not public; values from ``MER2026/
                                                                                              MER2026_Track3/utils/common.py``
generic         discrete     name,discrete[,valence]              any                 --      ours: classes given at run time
==============  ===========  ===================================  ==================  ======  =============================================

Every schema requires exactly the expected names (``name_set='exact'``). The organisers'
scorers look every ground-truth name up in the submission, so a missing name fails; an extra one
is ignored by them, but it means the wrong test list was used, so it is refused here too.

What the rows may hold, per kind:

* ``discrete``: one of the schema's classes, exactly (case- and space-sensitive: the scorers
  index ``emo2idx`` with the string); a valence is a finite number in ``valence_range``.
* ``openset``: ``[...]`` with each word quoted, e.g. ``"['happy', 'at ease']"``; every parser in
  ``openset_parsers`` (default: both official ones) must read the same words, and no word may be
  empty, have surrounding spaces, or contain a quote, comma, bracket or line break. An empty
  cell or ``[]`` is legal (it scores 0 for that sample; ``allow_empty=False`` reports it).
  The organisers' own MER2025 label extraction emits unquoted lists (``[happy, sad]``), which the
  wheel scorer reads but the MER2024 one does not; the default refuses them, a schema with
  ``openset_parsers=('wheel',)`` accepts them.
* ``description``: any non-empty text; commas and quotes are allowed (the CSV quotes the cell and
  doubles its quotes, so it reads back unchanged); a line break or another control character
  other than tab is refused unless ``allow_newlines`` (the organisers' own MER2026 code flattens
  descriptions with ``.replace('\\n', ' ')``).
* ``preference``: one of the schema's classes (``a1``, ``a2``, ``same``); the MER2026 two-class
  metric (``func_two_class_preference_metric``) scores a predicted ``same`` as ``a1``. One row per
  ``name`` of ``track3_candidate.csv`` assumes one pair per name (unconfirmed: the file is not in
  MERTools; its ``name`` also names the video).

Where the official format is not public the schema's ``description`` says so, and everything a
platform might differ in (columns, file name, classes, container) is a field of the schema, so a
corrected format is a new :class:`SubmissionSchema`, not new code.

Row counts are checked against the names the caller passes (the official test list), never
against a hard-coded number; ``expected_rows`` records the official size for people, messages
and the read budget.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal, Sequence

from mer.core.registry import Registry
from mer.core.samples import MER_CLASSES

NameSetRule = Literal["exact", "superset"]
NAME_SET_RULES: tuple[str, ...] = ("exact", "superset")

FileKind = Literal["discrete", "openset", "description", "preference"]
FILE_KINDS: tuple[str, ...] = ("discrete", "openset", "description", "preference")
"""What one row of a submission holds (see the module docstring)."""

Container = Literal["csv", "npz"]
CONTAINERS: tuple[str, ...] = ("csv", "npz")

NAME_COLUMN = "name"
LABEL_COLUMN = "discrete"
VALENCE_COLUMN = "valence"
OPENSET_COLUMN = "openset"
DESCRIPTION_COLUMN = "reason"
PREFERENCE_COLUMN = "preference"

PREFERENCE_CHOICES: tuple[str, ...] = ("a1", "a2", "same")
"""MER2026 MER-Prefer answers, as ``func_postprocess_preference`` (``MER2026_Track3/utils/
common.py``) reduces a model's reply to them."""

OPENSET_PARSER_NAMES: tuple[str, ...] = ("mer2024", "wheel")
"""Names of the official openset parsers (:data:`submissions.openset.OPENSET_PARSERS`)."""

DEFAULT_MAX_ROW_BYTES = 1024
"""The most bytes one row of a discrete submission plausibly takes (a name, a label, a valence)."""

_CLOSED_KINDS = ("discrete", "preference")          # kinds whose values come from a class set


@dataclass(frozen=True)
class SubmissionSchema:
    """The shape of one track's submission file.

    Attributes:
        name: registry name, e.g. ``mer2023_multi``.
        description: one line for ``--help`` and error messages; says where the format is not
            public.
        columns: the header, in order (for an npz, the two array names); the first column holds
            the sample names, the second the value of the ``kind``. With ``has_valence=None`` the
            trailing ``valence`` is optional.
        kind: what a row holds: ``discrete``, ``openset``, ``description`` or ``preference``.
        file_name: the file name the platform requires: an exact name (``submission.csv``) or an
            ``fnmatch`` pattern (``*-openset.npz``); None when the caller chooses.
        classes: the allowed values of a ``discrete`` or ``preference`` column, or None when they
            are given at run time; must be None for ``openset`` and ``description``.
        has_valence: True: the ``valence`` column is required; False: forbidden; None: optional.
            Only ``discrete`` schemas may have one.
        valence_range: inclusive range valid valences must lie in.
        name_set: ``'exact'``: the file's names must equal the expected names; ``'superset'``:
            it must contain them all and may contain more.
        expected_rows: the official test-list size, for documentation only (see module docstring).
        container: ``csv`` or ``npz`` (two 1-D string arrays named by ``columns``).
        openset_parsers: the official parsers every ``openset`` cell must read the same under.
        allow_newlines: whether a ``description`` may contain line breaks.
        max_row_bytes: the most bytes a row plausibly takes, which sets the read budget.
        source: where the format was read (a MERTools path), or why it is assumed.
    """

    name: str
    description: str
    columns: tuple[str, ...]
    kind: FileKind = "discrete"
    file_name: str | None = None
    classes: tuple[str, ...] | None = MER_CLASSES
    has_valence: bool | None = False
    valence_range: tuple[float, float] = (-5.0, 5.0)
    name_set: NameSetRule = "exact"
    expected_rows: int | None = None
    container: Container = "csv"
    openset_parsers: tuple[str, ...] = OPENSET_PARSER_NAMES
    allow_newlines: bool = False
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES
    source: str = ""

    def __post_init__(self) -> None:
        def refuse(why: str) -> None:
            raise ValueError(f"schema {self.name!r}: {why}")

        if self.kind not in FILE_KINDS:
            refuse(f"kind must be one of {FILE_KINDS}, got {self.kind!r}")
        if self.container not in CONTAINERS:
            refuse(f"container must be one of {CONTAINERS}, got {self.container!r}")
        if self.name_set not in NAME_SET_RULES:
            refuse(f"name_set must be one of {NAME_SET_RULES}")
        if len(set(self.columns)) != len(self.columns) or len(self.columns) < 2:
            refuse(f"columns must be at least two distinct names, got {self.columns}")
        if self.kind == "discrete":
            if self.columns[:2] != (NAME_COLUMN, LABEL_COLUMN):
                refuse("columns must start with name,discrete")
            if (VALENCE_COLUMN in self.columns) != (self.has_valence is not False):
                refuse(f"a valence column goes with has_valence True/None, got columns "
                       f"{self.columns} and {self.has_valence}")
        elif len(self.columns) != 2 or self.has_valence is not False:
            refuse(f"a {self.kind} file has exactly two columns (the name and the "
                   f"{self.kind}) and no valence; got {self.columns}")
        if self.kind not in _CLOSED_KINDS and self.classes is not None:
            refuse(f"a {self.kind} file has no class set; pass classes=None")
        if self.kind == "openset":
            unknown = [p for p in self.openset_parsers if p not in OPENSET_PARSER_NAMES]
            if unknown or not self.openset_parsers:
                refuse(f"openset_parsers must name some of {OPENSET_PARSER_NAMES}, got "
                       f"{self.openset_parsers}")
        if self.container == "npz" and self.has_valence is not False:
            refuse("an npz submission holds two arrays; it cannot carry a valence")

    @property
    def name_column(self) -> str:
        """The column (or npz array) that holds the sample names."""
        return self.columns[0]

    @property
    def value_column(self) -> str:
        """The column (or npz array) that holds the kind's value: discrete, openset, ..."""
        return self.columns[1]

    def headers(self) -> list[tuple[str, ...]]:
        """Every header this schema accepts (two when the valence column is optional)."""
        if self.has_valence is None:
            return [self.columns, tuple(c for c in self.columns if c != VALENCE_COLUMN)]
        return [self.columns]

    def resolve_classes(self, classes: Sequence[str] | None = None) -> tuple[str, ...]:
        """The allowed values: the schema's own, or ``classes`` for a schema without fixed ones;
        ``()`` for kinds without a class set (``classes`` is then ignored)."""
        if self.kind not in _CLOSED_KINDS:
            return ()
        if self.classes is None:
            if not classes:
                raise ValueError(f"schema {self.name!r} has no fixed classes; pass the allowed labels "
                                 f"(classes=..., or --classes a,b,c on the command line)")
            return tuple(classes)
        if classes is not None and set(classes) != set(self.classes):
            raise ValueError(f"schema {self.name!r} accepts exactly the classes "
                             f"{', '.join(self.classes)}; got {', '.join(classes)}")
        return self.classes

    def file_name_ok(self, file_name: str) -> bool:
        """Whether the platform accepts a file called ``file_name``."""
        return self.file_name is None or fnmatch.fnmatchcase(file_name, self.file_name)

    def default_file_name(self) -> str:
        """The name to write when the caller gives a directory."""
        if self.file_name is None:
            return f"{self.name}.{self.container}"
        return self.file_name.replace("*", self.name)


SUBMISSION_SCHEMAS: Registry[SubmissionSchema] = Registry("submission schema")

_WITH_VALENCE = (NAME_COLUMN, LABEL_COLUMN, VALENCE_COLUMN)
_DISCRETE_ONLY = (NAME_COLUMN, LABEL_COLUMN)
_OPENSET_NPZ = ("filenames", "fileitems")


def register_schema(schema: SubmissionSchema) -> SubmissionSchema:
    """Add ``schema`` to :data:`SUBMISSION_SCHEMAS` under its own name."""
    return SUBMISSION_SCHEMAS.register(schema.name)(schema)


def get_schema(track: str | SubmissionSchema) -> SubmissionSchema:
    """The schema registered as ``track`` (unknown names list the known ones); schemas pass through."""
    return track if isinstance(track, SubmissionSchema) else SUBMISSION_SCHEMAS.get(track)


# --- discrete: name,discrete[,valence] --------------------------------------------------------
register_schema(SubmissionSchema(
    name="mer2023_multi", columns=_WITH_VALENCE, has_valence=True, expected_rows=411,
    source="MER2023/main-release.py::write_to_csv_pred",
    description="MER2023 MER-MULTI (test1): name,discrete,valence; ranked by wf1 - 0.25*mse"))
register_schema(SubmissionSchema(
    name="mer2023_noise", columns=_WITH_VALENCE, has_valence=True, expected_rows=412,
    source="MER2023/main-release.py::write_to_csv_pred",
    description="MER2023 MER-NOISE (test2): name,discrete,valence; ranked by wf1 - 0.25*mse"))
register_schema(SubmissionSchema(
    name="mer2023_semi", columns=_WITH_VALENCE, has_valence=True,
    source="MER2023/main-release.py::write_to_csv_pred",
    description="MER2023 MER-SEMI (test3): name,discrete,valence for every test3 video; "
                "weighted F1 on the labelled subset"))
register_schema(SubmissionSchema(
    name="mer2024_semi", columns=_DISCRETE_ONLY,
    source="not public: MER2024/ has no submission writer; presumed from the 2023 format",
    description="MER2024 MER-SEMI: name,discrete; weighted F1; the official file format is "
                "not public (presumed from 2023)"))
register_schema(SubmissionSchema(
    name="mer2024_noise", columns=_DISCRETE_ONLY,
    source="not public: MER2024/ has no submission writer; presumed from the 2023 format",
    description="MER2024 MER-NOISE: name,discrete; weighted F1; the official file format is "
                "not public (presumed from 2023)"))
register_schema(SubmissionSchema(
    name="mer2025_track1", columns=_DISCRETE_ONLY, file_name="submission.csv", expected_rows=20000,
    source="MER2025/MER2025_Track1/{README.md,submission.py,evaluation.py}",
    description="MER2025 Track1: submission.csv with name,discrete for the 20,000 "
                "candidates; weighted F1"))
register_schema(SubmissionSchema(
    name="mer2026_cross", columns=_DISCRETE_ONLY, expected_rows=20000,
    source="MER2026/MER2026_Track1/{submission.py,evaluation.py}; the file name rule is not public",
    description="MER2026 Track1 MER-Cross: name,discrete (the interlocutor's emotion) for the "
                "20,000 track1_track2_candidate.csv names; weighted F1; the platform's file name "
                "rule is not public (2025 required submission.csv)"))
register_schema(SubmissionSchema(
    name="generic", columns=_WITH_VALENCE, classes=None, has_valence=None,
    source="ours",
    description="any dataset: name,discrete[,valence] with classes given at run time"))

# --- openset: Python-list strings of words --------------------------------------------------
register_schema(SubmissionSchema(
    name="mer2024_ov", kind="openset", columns=(NAME_COLUMN, OPENSET_COLUMN), classes=None,
    max_row_bytes=2048,
    source="MER2024/ov_store/predict-openset.csv; MER2024/toolkit/utils/functions.py::string_to_list",
    description="MER2024 MER-OV: name,openset with \"['word', ...]\" lists; set precision/recall "
                "after LLM synonym grouping"))
register_schema(SubmissionSchema(
    name="mer2025_fg", kind="openset", columns=_OPENSET_NPZ, classes=None, container="npz",
    file_name="*-openset.npz", expected_rows=20000, max_row_bytes=2048,
    source="MER2025/MER2025_Track23/README.md (Codalab only accepts *-openset.npz); evaluation.py; "
           "my_affectgpt/evaluation/wheel.py",
    description="MER2025 Track2 MER-FG: *-openset.npz with string arrays filenames, fileitems "
                "(\"['word', ...]\") for the 20,000 candidates; emotion-wheel F1"))
register_schema(SubmissionSchema(
    name="mer2026_fg", kind="openset", columns=_OPENSET_NPZ, classes=None, container="npz",
    file_name="*-openset.npz", expected_rows=20000, max_row_bytes=2048,
    source="MER2026/MER2026_Track2/evaluation.py (reads *-openset.npz); the platform's format is "
           "not public",
    description="MER2026 Track2 MER-FG: *-openset.npz (filenames, fileitems) as "
                "MER2026_Track2/evaluation.py reads it; the platform's format is not public; "
                "emotion-wheel F1"))

# --- description: free text ------------------------------------------------------------------
register_schema(SubmissionSchema(
    name="mer2025_des", kind="description", columns=(NAME_COLUMN, DESCRIPTION_COLUMN),
    classes=None, expected_rows=20000, max_row_bytes=16384,
    source="not public; columns of MER2025/MER2025_Track23/evaluation.py (reason_csv: name, "
           "reason) and the track3_train_*.csv files its README lists",
    description="MER2025 Track3 MER-DES: name,reason, one single-line description per candidate; "
                "the official file format is not public"))

# --- preference: which of two descriptions --------------------------------------------------
register_schema(SubmissionSchema(
    name="mer2026_prefer", kind="preference", columns=(NAME_COLUMN, PREFERENCE_COLUMN),
    classes=PREFERENCE_CHOICES, expected_rows=10000,
    source="not public; values from MER2026/MER2026_Track3/utils/common.py, the preference "
           "column from main_dpo_batch.py, the names from track3_candidate.csv",
    description="MER2026 Track3 MER-Prefer: name,preference with a1, a2 or same for the 10,000 "
                "track3_candidate.csv pairs; weighted F1 (same counts as a1); the official file "
                "format is not public"))
