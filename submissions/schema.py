"""Submission file formats, one registered :class:`SubmissionSchema` per challenge track.

What each track accepts (spec ``mer_challenge_mertools.md`` §7):

=================  ===========================  ==================  ===================================
schema             header                       file name           names in the file
=================  ===========================  ==================  ===================================
mer2023_multi      name,discrete,valence        any                 exactly the test1 names (411)
mer2023_noise      name,discrete,valence        any                 exactly the test2 names (412)
mer2023_semi       name,discrete,valence        any                 exactly every test3 name; only the
                                                                    labelled subset is scored
mer2024_semi       name,discrete                any                 exactly the given names
mer2024_noise      name,discrete                any                 exactly the given names
mer2025_track1     name,discrete                ``submission.csv``  exactly the 20,000 candidates
generic            name,discrete[,valence]      any                 exactly the given names; classes
                                                                    are given at run time
=================  ===========================  ==================  ===================================

Row counts are checked against the names the caller passes (the official test list), never
against a hard-coded number; ``expected_rows`` records the official size for people and messages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from mer.core.samples import MER_CLASSES
from mer.core.registry import Registry

NameSetRule = Literal["exact", "superset"]
NAME_SET_RULES: tuple[str, ...] = ("exact", "superset")

NAME_COLUMN = "name"
LABEL_COLUMN = "discrete"
VALENCE_COLUMN = "valence"


@dataclass(frozen=True)
class SubmissionSchema:
    """The shape of one track's submission file.

    Attributes:
        name: registry name, e.g. ``mer2023_multi``.
        description: one line for ``--help`` and error messages.
        columns: the header, in order; with ``has_valence=None`` the trailing ``valence`` is optional.
        file_name: the file name the platform requires, or None when the caller chooses.
        classes: the allowed ``discrete`` strings, or None when they are given at run time.
        has_valence: True: the ``valence`` column is required; False: forbidden; None: optional.
        valence_range: inclusive range valid valences must lie in.
        name_set: ``'exact'``: the file's names must equal the expected names; ``'superset'``:
            it must contain them all and may contain more.
        expected_rows: the official test-list size, for documentation only (see module docstring).
    """

    name: str
    description: str
    columns: tuple[str, ...]
    file_name: str | None = None
    classes: tuple[str, ...] | None = MER_CLASSES
    has_valence: bool | None = False
    valence_range: tuple[float, float] = (-5.0, 5.0)
    name_set: NameSetRule = "exact"
    expected_rows: int | None = None

    def __post_init__(self) -> None:
        if self.columns[:2] != (NAME_COLUMN, LABEL_COLUMN):
            raise ValueError(f"schema {self.name!r}: columns must start with name,discrete")
        if (VALENCE_COLUMN in self.columns) != (self.has_valence is not False):
            raise ValueError(f"schema {self.name!r}: a valence column goes with has_valence "
                             f"True/None, got columns {self.columns} and {self.has_valence}")
        if self.name_set not in NAME_SET_RULES:
            raise ValueError(f"schema {self.name!r}: name_set must be one of {NAME_SET_RULES}")

    def headers(self) -> list[tuple[str, ...]]:
        """Every header this schema accepts (two when the valence column is optional)."""
        if self.has_valence is None:
            return [self.columns, tuple(c for c in self.columns if c != VALENCE_COLUMN)]
        return [self.columns]

    def resolve_classes(self, classes: Sequence[str] | None = None) -> tuple[str, ...]:
        """The allowed labels: the schema's own, or ``classes`` for a schema without fixed ones."""
        if self.classes is None:
            if not classes:
                raise ValueError(f"schema {self.name!r} has no fixed classes; pass the allowed labels "
                                 f"(classes=..., or --classes a,b,c on the command line)")
            return tuple(classes)
        if classes is not None and set(classes) != set(self.classes):
            raise ValueError(f"schema {self.name!r} accepts exactly the classes "
                             f"{', '.join(self.classes)}; got {', '.join(classes)}")
        return self.classes

    def default_file_name(self) -> str:
        """The name to write when the caller gives a directory."""
        return self.file_name or f"{self.name}.csv"


SUBMISSION_SCHEMAS: Registry[SubmissionSchema] = Registry("submission schema")

_WITH_VALENCE = (NAME_COLUMN, LABEL_COLUMN, VALENCE_COLUMN)
_DISCRETE_ONLY = (NAME_COLUMN, LABEL_COLUMN)


def register_schema(schema: SubmissionSchema) -> SubmissionSchema:
    """Add ``schema`` to :data:`SUBMISSION_SCHEMAS` under its own name."""
    return SUBMISSION_SCHEMAS.register(schema.name)(schema)


def get_schema(track: str | SubmissionSchema) -> SubmissionSchema:
    """The schema registered as ``track`` (unknown names list the known ones); schemas pass through."""
    return track if isinstance(track, SubmissionSchema) else SUBMISSION_SCHEMAS.get(track)


register_schema(SubmissionSchema(
    name="mer2023_multi", columns=_WITH_VALENCE, has_valence=True, expected_rows=411,
    description="MER2023 MER-MULTI (test1): name,discrete,valence; ranked by wf1 - 0.25*mse"))
register_schema(SubmissionSchema(
    name="mer2023_noise", columns=_WITH_VALENCE, has_valence=True, expected_rows=412,
    description="MER2023 MER-NOISE (test2): name,discrete,valence; ranked by wf1 - 0.25*mse"))
register_schema(SubmissionSchema(
    name="mer2023_semi", columns=_WITH_VALENCE, has_valence=True,
    description="MER2023 MER-SEMI (test3): name,discrete,valence for every test3 video; "
                "weighted F1 on the labelled subset"))
register_schema(SubmissionSchema(
    name="mer2024_semi", columns=_DISCRETE_ONLY,
    description="MER2024 MER-SEMI: name,discrete; weighted F1"))
register_schema(SubmissionSchema(
    name="mer2024_noise", columns=_DISCRETE_ONLY,
    description="MER2024 MER-NOISE: name,discrete; weighted F1"))
register_schema(SubmissionSchema(
    name="mer2025_track1", columns=_DISCRETE_ONLY, file_name="submission.csv", expected_rows=20000,
    description="MER2025/2026 Track1: submission.csv with name,discrete for the 20,000 "
                "candidates; weighted F1"))
register_schema(SubmissionSchema(
    name="generic", columns=_WITH_VALENCE, classes=None, has_valence=None,
    description="any dataset: name,discrete[,valence] with classes given at run time"))
