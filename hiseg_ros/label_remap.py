"""Label remapping: the leaf map published in another label space, without retraining.

A downstream consumer (a planner, a tracker, a benchmark) often expects its own label set, say
16 driving classes, rather than the hierarchy's leaves. A remap table says which target class
each leaf becomes; loading it against the hierarchy builds one lookup table, so remapping a
frame is one fancy-indexing pass over the leaf map.

File format (YAML; example: config/label_remaps/driving16.yaml)::

    name: driving16               # required: names the label space (LabelInfo, logs)
    hierarchy: iv2018             # optional: refuse the table for a model of another hierarchy
    classes:                      # required: target id (0..254) -> target name, the new label space
      0: road
      1: sidewalk
    default: 255                  # optional: what unmapped leaves become (a target id or name; 255 = void)
    map:                          # required: hierarchy class -> target name or id (null = void)
      drivable: road              #   an inner class maps every leaf below it ...
      crosswalk-plain: road       #   ... and a deeper entry overrides it for its own leaves
      sidewalk: sidewalk

Pixels without a class in the leaf map (the hierarchy's void value) stay void (255). Every error
names the file and the key (``driving16.yaml: map.roadd: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from .hierarchy import IGNORE, ROOT, Hierarchy
from .hierarchy.load import _UniqueKeyLoader

__all__ = ["VOID", "LabelRemap", "LabelRemapError", "label_remap_from_dict", "load_label_remap"]

#: Target value of a pixel without a class (unmapped leaves by default, and void leaf-map pixels).
VOID = IGNORE

_REQUIRED = {"name", "classes", "map"}
_OPTIONAL = {"hierarchy", "default", "description"}


class LabelRemapError(ValueError):
    """A label remap table is invalid for its hierarchy; the message names the file and the key."""


@dataclass(frozen=True)
class LabelRemap:
    """A loaded remap table: the target label space and the leaf id -> target id lookup table."""

    name: str
    source: str
    classes: tuple[tuple[int, str], ...]  # (target id, target name), by id: the LabelInfo entries
    lut: np.ndarray  # uint8, indexed by leaf-map value (leaf ids and the hierarchy's void value)

    def apply(self, leaf_map: np.ndarray) -> np.ndarray:
        """The leaf map in the target label space (uint8, same shape); void stays :data:`VOID`.

        uint8 leaf maps go through cv2.LUT (the table padded to its 256 entries), several times
        faster than numpy indexing at camera resolution; uint16 maps through numpy.
        """
        if leaf_map.dtype == np.uint8 and leaf_map.ndim == 2 and self._lut256 is not None:
            return cv2.LUT(np.ascontiguousarray(leaf_map), self._lut256)
        return self.lut[leaf_map]

    @cached_property
    def _lut256(self) -> np.ndarray | None:
        if len(self.lut) > 256:
            return None
        table = np.full(256, VOID, np.uint8)
        table[: len(self.lut)] = self.lut
        return table

    def target_of(self, leaf_id: int) -> int:
        """Target id a leaf becomes (:data:`VOID` for none)."""
        return int(self.lut[leaf_id])


@dataclass(frozen=True)
class _Where:
    source: str

    def error(self, key: str, message: str) -> LabelRemapError:
        return LabelRemapError(f"{self.source}: {key}: {message}")


def load_label_remap(path: str | Path, hierarchy: Hierarchy) -> LabelRemap:
    """Load and validate a remap table for ``hierarchy``; errors name the file and the offending key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelRemapError(f"{path}: cannot read label remap file: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a class mapped twice is an error, not the last wins
    except yaml.YAMLError as exc:
        raise LabelRemapError(f"{path}: invalid YAML: {exc}") from None
    return label_remap_from_dict(data, hierarchy, str(path))


def label_remap_from_dict(data: Any, hierarchy: Hierarchy, source: str = "<label remap>") -> LabelRemap:
    """Validate a parsed remap document against ``hierarchy`` and build its lookup table."""
    where = _Where(source)
    if not isinstance(data, Mapping):
        raise where.error("<top>", f"expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in _REQUIRED | _OPTIONAL:
            raise where.error(str(key), f"unknown key (expected one of {sorted(_REQUIRED | _OPTIONAL)})")
    missing = sorted(_REQUIRED - set(data))
    if missing:
        raise where.error(missing[0], "missing required key")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise where.error("name", f"expected a non-empty string, got {name!r}")
    wanted = data.get("hierarchy")
    if wanted is not None and wanted != hierarchy.name:
        raise where.error(
            "hierarchy", f"the table is written for hierarchy {wanted!r}, the model's is {hierarchy.name!r}"
        )
    classes = _target_classes(where, data["classes"])
    by_name = {target: tid for tid, target in classes}
    default = _target(where, "default", data.get("default", VOID), classes, by_name)
    lut = np.full(max(hierarchy.max_leaf_id, hierarchy.void_value) + 1, default, dtype=np.uint8)
    lut[hierarchy.void_value] = VOID
    mapping = data["map"]
    if not isinstance(mapping, Mapping) or not mapping:
        raise where.error("map", "expected a non-empty mapping of hierarchy class -> target class")
    depth_of_entry: dict[int, int] = {}  # leaf id -> depth of the entry that set it (deeper wins)
    for cls, value in mapping.items():
        key = f"map.{cls}"
        try:
            node = hierarchy.node(cls) if isinstance(cls, str) and cls != ROOT else None
        except KeyError:
            node = None
        if node is None:
            raise where.error(key, f"not a class of hierarchy {hierarchy.name!r}")
        target = _target(where, key, value, classes, by_name)
        depth = len(hierarchy.ancestors(cls))
        leaves = [node] if node.classifier is None else hierarchy.descendant_leaves(cls)
        for leaf in leaves:
            if depth_of_entry.get(leaf.id, -1) < depth:
                lut[leaf.id] = target
                depth_of_entry[leaf.id] = depth
    return LabelRemap(name=name, source=source, classes=classes, lut=lut)


def _target_classes(where: _Where, value: Any) -> tuple[tuple[int, str], ...]:
    if not isinstance(value, Mapping) or not value:
        raise where.error("classes", "expected a non-empty mapping of target id -> target name")
    seen: dict[str, int] = {}
    for tid, target in value.items():
        key = f"classes.{tid}"
        if isinstance(tid, bool) or not isinstance(tid, int) or not 0 <= tid < VOID:
            raise where.error(key, f"target ids are integers 0..{VOID - 1} ({VOID} is void), got {tid!r}")
        if not isinstance(target, str) or not target:
            raise where.error(key, f"expected a non-empty target class name, got {target!r}")
        if target in seen:
            raise where.error(key, f"target name {target!r} is also id {seen[target]}")
        seen[target] = tid
    return tuple(sorted((tid, target) for target, tid in seen.items()))


def _target(where: _Where, key: str, value: Any, classes: tuple[tuple[int, str], ...], by_name: dict[str, int]) -> int:
    """A target given by name, by id, or as void (``null`` / 255)."""
    if value is None or (type(value) is int and value == VOID):
        return VOID
    if isinstance(value, str) and value in by_name:
        return by_name[value]
    if type(value) is int and value in dict(classes):
        return value
    names = ", ".join(target for _, target in classes)
    raise where.error(key, f"{value!r} is not a target class (expected one of {names}, an id of classes, or null)")
