"""Reading a hierarchy YAML file: strict YAML (no duplicate keys), then the document check.

A file either lists its classes (see ``docs/HIERARCHY.md``) or says ``flatten: other.yaml`` to
make the flat baseline of another hierarchy file (:func:`~hiseg_ros.hierarchy.flatten_hierarchy`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .flat import flatten_hierarchy
from .nodes import HierarchyError
from .tree import Hierarchy, hierarchy_from_dict
from .validate import Source, check_keys


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (plain YAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (mapped twice)", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_hierarchy(path: str | Path) -> Hierarchy:
    """Load and validate a hierarchy YAML file; errors name the file and the offending key."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HierarchyError(f"{source}: cannot read hierarchy file: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise HierarchyError(f"{source}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise HierarchyError(f"{source}: expected a mapping at the top level")
    if "flatten" in data:
        return _load_flattened(path, data)
    return hierarchy_from_dict(data, source)


def _load_flattened(path: Path, data: dict) -> Hierarchy:
    """``flatten: other.yaml``: one classifier over the leaves of another hierarchy (baselines)."""
    src = Source(str(path))
    check_keys(src, "", data, required={"name", "flatten"}, optional={"description", "coarse_labels"})
    base_path = (path.parent / str(data["flatten"])).resolve()
    if base_path == path.resolve():
        raise src.error("flatten", "a hierarchy cannot flatten itself")
    base = load_hierarchy(base_path)
    coarse = data.get("coarse_labels") or {}
    if not isinstance(coarse, dict):
        raise src.error("coarse_labels", "expected a mapping inner class -> leaf")
    return flatten_hierarchy(base, str(data["name"]), coarse, str(data.get("description", "")), str(path))
