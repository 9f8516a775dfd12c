"""The pieces a hierarchy is made of: classes, classifiers, dataset mappings, and the shared constants.

Plain frozen records with no behaviour of their own, so every other module of the package (parsing,
decision rule, dataset tables, JSON) can use them without importing :class:`Hierarchy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

IGNORE = 255
"""Target / mask value of a pixel that carries no label for a classifier."""

ROOT = "root"
SUPERVISION_KINDS = ("pixel", "boxes", "tags")


class HierarchyError(ValueError):
    """A hierarchy file or JSON document is invalid; the message names the source and key."""


@dataclass(frozen=True)
class ClassNode:
    """One class of the tree (leaf or inner)."""

    name: str
    id: int
    parent: str
    color: tuple[int, int, int]
    classifier: str | None = None  # set on classes that have children
    traffic_sign: bool = False  # ``traffic_sign: true``: this class (its leaves) are traffic signs


@dataclass(frozen=True)
class Classifier:
    """A classifier: the node that owns it and its classes (the node's children, in file order)."""

    name: str
    node: str  # ROOT for the root classifier
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DatasetEvaluation:
    """A dataset's evaluation label space: evaluation id i is native id ``classes[i][0]``."""

    classes: tuple[tuple[int, str], ...]
    leaf_ids: Mapping[str, int] = field(default_factory=dict)  # leaf -> native id, where ancestry cannot tell


@dataclass(frozen=True)
class DatasetMapping:
    """How one dataset's native ids (ints, or tag strings) map onto classes (``None`` = ignore)."""

    name: str
    supervision: str
    ids: Mapping[int | str, str | None]
    id_range: tuple[int, int] | None = None
    evaluation: DatasetEvaluation | None = None
