"""The hierarchy as a JSON document: what exported models embed, so a model file names its classes.

:func:`hierarchy_to_dict` writes the document; :func:`document_body` reads one back into the
mapping that :func:`~hiseg_ros.hierarchy.hierarchy_from_dict` validates, the same check a YAML
file goes through. A round trip gives back an equal hierarchy.
Documents written before classes could be declared ``traffic_sign`` load unchanged (no class is then
a traffic sign: the node's ``sign_class`` parameter names one).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .nodes import HierarchyError

if TYPE_CHECKING:
    from .tree import Hierarchy

SCHEMA_VERSION = 1


def hierarchy_to_dict(h: Hierarchy) -> dict[str, Any]:
    """The JSON-able document of ``h`` (dataset ids as ``[key, value]`` pairs, see below)."""
    datasets = {}
    for ds in h.datasets.values():
        entry: dict[str, Any] = {
            "supervision": ds.supervision,
            # JSON object keys are strings: keep ids as [key, value] pairs to stay typed.
            "ids": [[k, v] for k, v in ds.ids.items()],
        }
        if ds.id_range is not None:
            entry["id_range"] = list(ds.id_range)
        if ds.evaluation is not None:
            entry["evaluation"] = {
                "classes": [list(c) for c in ds.evaluation.classes],
                "leaf_ids": dict(ds.evaluation.leaf_ids),
            }
        datasets[ds.name] = entry
    return {
        "schema": SCHEMA_VERSION,
        "name": h.name,
        "description": h.description,
        "classes": [
            {"name": c.name, "id": c.id, "parent": c.parent, "color": list(c.color)}
            | ({"classifier": c.classifier} if c.classifier else {})
            # only where set: documents of hierarchies without traffic signs stay as they were
            | ({"traffic_sign": True} if c.traffic_sign else {})
            for c in h.classes
        ],
        "datasets": datasets,
    }


def hierarchy_to_json(h: Hierarchy) -> str:
    """Compact, key-sorted JSON of :func:`hierarchy_to_dict` (stable: it is also the hierarchy's hash)."""
    return json.dumps(hierarchy_to_dict(h), separators=(",", ":"), sort_keys=True)


def document_body(text: str | bytes, source: str) -> dict[str, Any]:
    """Parse a JSON document and check its schema; returns the hierarchy mapping without ``schema``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HierarchyError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HierarchyError(f"{source}: expected a JSON object")
    if data.get("schema") != SCHEMA_VERSION:
        raise HierarchyError(f"{source}: schema: expected {SCHEMA_VERSION}, got {data.get('schema')!r}")
    datasets = {}
    for name, entry in (data.get("datasets") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("ids"), list):
            entry = dict(entry, ids={k: v for k, v in entry["ids"]})
        datasets[name] = entry
    return {k: v for k, v in data.items() if k != "schema"} | {"datasets": datasets}
