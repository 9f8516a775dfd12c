"""Validation of a hierarchy document (parsed YAML or JSON): every error names the source and key.

:func:`parse_document` checks the whole document and returns its parts; it knows nothing of
:class:`~hiseg_ros.hierarchy.Hierarchy`, which :func:`~hiseg_ros.hierarchy.hierarchy_from_dict`
then builds from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .nodes import IGNORE, ROOT, SUPERVISION_KINDS, ClassNode, DatasetEvaluation, DatasetMapping, HierarchyError

_CLASSIFIER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TOP_KEYS = {"name", "classes", "datasets", "description"}


class Source:
    """Where a value came from, for error messages: ``iv2018.yaml: datasets.vistas.ids.12``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> HierarchyError:
        return HierarchyError(f"{self.source}: {key}: {message}")


def parse_document(data: Mapping[str, Any], source: str) -> tuple[str, list[ClassNode], list[DatasetMapping], str]:
    """Validate a hierarchy document; returns ``(name, classes, datasets, description)``."""
    src = Source(source)
    check_keys(src, "", data, required={"name", "classes"}, optional=_TOP_KEYS)
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise src.error("name", "expected a non-empty string")
    classes = _parse_classes(src, data["classes"])
    datasets_raw = data.get("datasets") or {}
    if not isinstance(datasets_raw, dict):
        raise src.error("datasets", "expected a mapping dataset name -> mapping")
    datasets = [
        _parse_dataset(src, f"datasets.{ds_name}", str(ds_name), entry, classes)
        for ds_name, entry in datasets_raw.items()
    ]
    return name, classes, datasets, str(data.get("description", ""))


def check_keys(src: Source, where: str, data: Any, required: set[str], optional: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise src.error(where or "<top>", f"expected a mapping, got {type(data).__name__}")
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in required | optional:
            raise src.error(f"{prefix}{key}", f"unknown key (expected one of {sorted(required | optional)})")
    for key in sorted(required):
        if key not in data:
            raise src.error(f"{prefix}{key}", "missing required key")


def _parse_color(src: Source, key: str, value: Any) -> tuple[int, int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        raise src.error(key, f"expected a colour [r, g, b] of integers 0..255, got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


def _parse_classes(src: Source, raw: Any) -> list[ClassNode]:
    if not isinstance(raw, list) or not raw:
        raise src.error("classes", "expected a non-empty list of classes")
    nodes: list[ClassNode] = []
    names: dict[str, int] = {}
    ids: dict[int, int] = {}
    for i, entry in enumerate(raw):
        key = f"classes[{i}]"
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            key = f"classes[{i}] ({entry['name']})"
        check_keys(src, key, entry, required={"name", "id", "parent", "color"}, optional={"classifier", "traffic_sign"})
        name = entry["name"]
        if not isinstance(name, str) or not name:
            raise src.error(f"{key}.name", f"expected a non-empty string, got {name!r}")
        if name == ROOT:
            raise src.error(f"{key}.name", f"{ROOT!r} is reserved for the implicit root")
        if name in names:
            raise src.error(f"{key}.name", f"duplicate class name (also classes[{names[name]}])")
        names[name] = i
        class_id = entry["id"]
        if not isinstance(class_id, int) or isinstance(class_id, bool) or not 0 <= class_id < 65535:
            raise src.error(f"{key}.id", f"expected an integer 0..65534, got {class_id!r}")
        if class_id in ids:
            raise src.error(f"{key}.id", f"duplicate id {class_id} (also classes[{ids[class_id]}])")
        ids[class_id] = i
        parent = entry["parent"]
        if not isinstance(parent, str):
            raise src.error(f"{key}.parent", f"expected a class name or {ROOT!r}, got {parent!r}")
        color = _parse_color(src, f"{key}.color", entry["color"])
        classifier = entry.get("classifier")
        if classifier is not None and (not isinstance(classifier, str) or not _CLASSIFIER_NAME.match(classifier)):
            raise src.error(
                f"{key}.classifier", f"expected a name like 'traffic_sign' ([A-Za-z][A-Za-z0-9_]*), got {classifier!r}"
            )
        traffic_sign = entry.get("traffic_sign", False)
        if not isinstance(traffic_sign, bool):
            raise src.error(f"{key}.traffic_sign", f"expected true or false, got {traffic_sign!r}")
        nodes.append(ClassNode(name, class_id, parent, color, classifier, traffic_sign))

    for i, node in enumerate(nodes):
        if node.parent != ROOT and node.parent not in names:
            raise src.error(f"classes[{i}] ({node.name}).parent", f"unknown parent {node.parent!r}")
    by_name = {n.name: n for n in nodes}
    for i, node in enumerate(nodes):  # cycle: walking up must reach root within len(nodes) steps
        seen = [node.name]
        current = node.parent
        while current != ROOT:
            if current in seen:
                raise src.error(
                    f"classes[{i}] ({node.name}).parent", f"cycle in parents: {' -> '.join([*seen, current])}"
                )
            seen.append(current)
            current = by_name[current].parent

    children: dict[str, list[str]] = {}
    for node in nodes:
        children.setdefault(node.parent, []).append(node.name)
    if len(children.get(ROOT, [])) < 2:
        raise src.error("classes", f"the root classifier needs at least 2 classes with parent {ROOT!r}")
    final: list[ClassNode] = []
    classifier_names: dict[str, str] = {ROOT: ROOT}
    for i, node in enumerate(nodes):
        key = f"classes[{i}] ({node.name})"
        kids = children.get(node.name, [])
        if not kids:
            if node.classifier is not None:
                raise src.error(f"{key}.classifier", "given, but no class has this class as parent")
            final.append(node)
            continue
        if len(kids) < 2:
            raise src.error(key, f"has a single child {kids[0]!r}: a classifier needs at least 2 classes")
        clf_name = node.classifier or re.sub(r"[^A-Za-z0-9_]", "_", node.name)
        if not _CLASSIFIER_NAME.match(clf_name):
            raise src.error(f"{key}.classifier", f"derived classifier name {clf_name!r} is invalid: set one")
        if clf_name in classifier_names:
            raise src.error(f"{key}.classifier", f"duplicate classifier name {clf_name!r}")
        classifier_names[clf_name] = node.name
        final.append(ClassNode(node.name, node.id, node.parent, node.color, clf_name, node.traffic_sign))
    return final


def _parse_dataset(src: Source, key: str, name: str, raw: Any, classes: list[ClassNode]) -> DatasetMapping:
    check_keys(src, key, raw, required={"supervision", "ids"}, optional={"id_range", "evaluation"})
    supervision = raw["supervision"]
    if supervision not in SUPERVISION_KINDS:
        raise src.error(f"{key}.supervision", f"expected one of {list(SUPERVISION_KINDS)}, got {supervision!r}")
    ids_raw = raw["ids"]
    if not isinstance(ids_raw, dict) or not ids_raw:
        raise src.error(f"{key}.ids", "expected a non-empty mapping native id -> class name or null")
    class_names = {c.name for c in classes}
    ids: dict[int | str, str | None] = {}
    for native, target in ids_raw.items():
        if supervision == "tags":
            if not isinstance(native, str):
                raise src.error(f"{key}.ids.{native}", "tag datasets are keyed by tag names (strings)")
        elif not isinstance(native, int) or isinstance(native, bool):
            raise src.error(f"{key}.ids.{native}", f"expected an integer native id, got {native!r}")
        if target is not None and target not in class_names:
            raise src.error(f"{key}.ids.{native}", f"unknown class {target!r}")
        ids[native] = target
    id_range = None
    if "id_range" in raw:
        rng = raw["id_range"]
        if (
            supervision == "tags"
            or not isinstance(rng, list)
            or len(rng) != 2
            or not all(isinstance(v, int) for v in rng)
            or rng[0] > rng[1]
        ):
            raise src.error(f"{key}.id_range", f"expected [first, last] integer ids (not for tags), got {rng!r}")
        id_range = (int(rng[0]), int(rng[1]))
        missing = [i for i in range(id_range[0], id_range[1] + 1) if i not in ids]
        if missing:
            raise src.error(f"{key}.ids", f"native ids {missing} of id_range {list(id_range)} are not mapped")
        outside = [i for i in ids if not id_range[0] <= int(i) <= id_range[1]]
        if outside:
            raise src.error(f"{key}.ids", f"native ids {outside} lie outside id_range {list(id_range)}")
    evaluation = None
    if "evaluation" in raw:
        evaluation = _parse_evaluation(src, f"{key}.evaluation", raw["evaluation"], ids, classes)
    return DatasetMapping(name, supervision, ids, id_range, evaluation)


def _parse_evaluation(
    src: Source, key: str, raw: Any, ids: Mapping[int | str, str | None], tree: list[ClassNode]
) -> DatasetEvaluation:
    check_keys(src, key, raw, required={"classes"}, optional={"leaf_ids"})
    classes = []
    seen: set[int] = set()
    for i, entry in enumerate(raw["classes"] or []):
        if not isinstance(entry, list | tuple) or len(entry) != 2 or not isinstance(entry[0], int):
            raise src.error(f"{key}.classes[{i}]", f"expected [native id, name], got {entry!r}")
        native, label = int(entry[0]), str(entry[1])
        if native not in ids:
            raise src.error(f"{key}.classes[{i}]", f"native id {native} is not in the dataset's ids")
        if native in seen:
            raise src.error(f"{key}.classes[{i}]", f"native id {native} listed twice")
        seen.add(native)
        classes.append((native, label))
    if not classes:
        raise src.error(f"{key}.classes", "expected at least one evaluation class")
    if len(classes) > IGNORE:
        raise src.error(f"{key}.classes", f"at most {IGNORE} evaluation classes are supported")
    leaf_names = {c.name for c in tree if c.classifier is None}
    leaf_ids = {}
    for leaf, native in (raw.get("leaf_ids") or {}).items():
        if leaf not in leaf_names:
            raise src.error(f"{key}.leaf_ids.{leaf}", "not a leaf class of the hierarchy")
        if native not in ids:
            raise src.error(f"{key}.leaf_ids.{leaf}", f"native id {native!r} is not in the dataset's ids")
        leaf_ids[str(leaf)] = int(native)
    return DatasetEvaluation(tuple(classes), leaf_ids)
