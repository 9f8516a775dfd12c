"""The semantic hierarchy: parsed once from YAML, it drives training, export and the node.

A hierarchy is a tree of classes under an implicit ``root``. Every class with children
owns a classifier over those children (the root classifier over the root's children),
so a flat hierarchy is simply one whose classes all hang from ``root``. Datasets map
their native label ids onto classes of the tree: onto a leaf, or onto an inner class
when the dataset is coarser than the tree (Cityscapes "road" -> ``drivable``), or onto
``null`` (ignore).

Everything per pixel is done with lookup tables (numpy fancy indexing), never with
Python loops over pixels: the node calls :meth:`Hierarchy.flatten` on every frame.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

IGNORE = 255
"""Target / mask value of a pixel that carries no label for a classifier."""

ROOT = "root"
SUPERVISION_KINDS = ("pixel", "boxes", "tags")
_CLASSIFIER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SCHEMA_VERSION = 1


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


class _Source:
    """Where a value came from, for error messages: ``iv2018.yaml: datasets.vistas.ids.12``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> HierarchyError:
        return HierarchyError(f"{self.source}: {key}: {message}")


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


class Hierarchy:
    """A validated class tree with its classifiers, dataset mappings and lookup tables.

    Build it with :func:`load_hierarchy` (YAML) or :meth:`from_json` (model metadata);
    the constructor validates everything and raises :class:`HierarchyError`.
    """

    def __init__(
        self,
        name: str,
        classes: Sequence[ClassNode],
        datasets: Sequence[DatasetMapping] = (),
        description: str = "",
        source: str = "<hierarchy>",
    ) -> None:
        self.name = name
        self.description = description
        self.source = source
        self.classes: tuple[ClassNode, ...] = tuple(classes)
        self.datasets: dict[str, DatasetMapping] = {d.name: d for d in datasets}
        self._by_name: dict[str, ClassNode] = {c.name: c for c in self.classes}
        self.classifiers: tuple[Classifier, ...] = _build_classifiers(self.classes)
        self._classifier_by_name = {c.name: c for c in self.classifiers}

    # ------------------------------------------------------------------ structure
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hierarchy) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return (
            f"Hierarchy({self.name!r}, {len(self.classes)} classes, {len(self.leaves)} leaves, "
            f"classifiers={[c.name for c in self.classifiers]})"
        )

    def node(self, name: str) -> ClassNode:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"hierarchy {self.name!r} has no class {name!r}") from None

    def classifier(self, name: str) -> Classifier:
        try:
            return self._classifier_by_name[name]
        except KeyError:
            raise KeyError(f"hierarchy {self.name!r} has no classifier {name!r}") from None

    @property
    def classifier_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classifiers)

    @property
    def classifier_sizes(self) -> list[tuple[str, int]]:
        """(name, number of classes) per classifier, root first: what the network is built from."""
        return [(c.name, c.num_classes) for c in self.classifiers]

    @cached_property
    def leaves(self) -> tuple[ClassNode, ...]:
        return tuple(c for c in self.classes if c.classifier is None)

    @property
    def is_flat(self) -> bool:
        return len(self.classifiers) == 1

    @cached_property
    def max_leaf_id(self) -> int:
        return max(c.id for c in self.leaves)

    @property
    def mask_dtype(self) -> type[np.unsignedinteger]:
        """dtype of the flattened leaf map: uint8 while every leaf id fits below :data:`IGNORE`."""
        return np.uint8 if self.max_leaf_id < IGNORE else np.uint16

    @property
    def void_value(self) -> int:
        """Value of "no class" in the flattened leaf map (255, or 65535 for uint16 maps)."""
        return IGNORE if self.mask_dtype is np.uint8 else 65535

    def ancestors(self, name: str) -> list[str]:
        """Names from ``name``'s parent up to (excluding) root."""
        chain = []
        parent = self.node(name).parent
        while parent != ROOT:
            chain.append(parent)
            parent = self._by_name[parent].parent
        return chain

    def path(self, name: str) -> list[tuple[str, int]]:
        """(classifier, class index) decisions that lead from the root to class ``name``."""
        steps = []
        current = name
        while current != ROOT:
            parent = self._by_name[current].parent
            clf = self.classifier_of_node(parent)
            steps.append((clf.name, clf.classes.index(current)))
            current = parent
        return steps[::-1]

    def classifier_of_node(self, node_name: str) -> Classifier:
        for clf in self.classifiers:
            if clf.node == node_name:
                return clf
        raise KeyError(f"class {node_name!r} of hierarchy {self.name!r} owns no classifier")

    def descendant_leaves(self, node_name: str) -> list[ClassNode]:
        return [leaf for leaf in self.leaves if node_name == ROOT or node_name in self.ancestors(leaf.name)]

    # ------------------------------------------------------------------ lookup tables
    @cached_property
    def _leaf_paths(self) -> dict[str, dict[str, int]]:
        return {leaf.name: dict(self.path(leaf.name)) for leaf in self.leaves}

    @cached_property
    def _child_leaf_luts(self) -> list[tuple[str, int, np.ndarray]]:
        """Per classifier: (name, owner node index or -1, class index -> node index)."""
        index = {c.name: i for i, c in enumerate(self.classes)}
        out = []
        for clf in self.classifiers:
            owner = -1 if clf.node == ROOT else index[clf.node]
            out.append((clf.name, owner, np.array([index[n] for n in clf.classes], dtype=np.int32)))
        return out

    @cached_property
    def _node_ids(self) -> np.ndarray:
        return np.array([c.id for c in self.classes], dtype=np.int64)

    def flatten(self, decisions: Mapping[str, np.ndarray]) -> np.ndarray:
        """The decision rule: per-classifier decisions -> leaf ids.

        Start with the root decision; wherever the chosen class owns a classifier, take
        that classifier's decision instead, down to a leaf (the IV 2018 rule: drivable ->
        L2-drivable, rider -> L2-rider, traffic sign -> L2, front -> L3, else L1).
        ``decisions`` maps every classifier name to an integer array of one shape.
        """
        missing = [n for n in self.classifier_names if n not in decisions]
        if missing:
            raise ValueError(f"flatten: decisions missing for classifiers {missing}")
        current: np.ndarray | None = None
        for name, owner, lut in self._child_leaf_luts:
            dec = np.asarray(decisions[name])
            if dec.size and (int(dec.max()) >= len(lut) or int(dec.min()) < 0):
                raise ValueError(
                    f"flatten: classifier {name!r} has {len(lut)} classes, got decisions "
                    f"in [{int(dec.min())}, {int(dec.max())}]"
                )
            if current is None:
                current = lut[dec]
                continue
            here = current == owner
            if here.any():
                current[here] = lut[dec[here]]
        assert current is not None
        return self._node_ids[current].astype(self.mask_dtype)

    @cached_property
    def _outside_luts(self) -> dict[str, np.ndarray]:
        """Per classifier: LUT over leaf-map values, IGNORE where the leaf does not lie under the
        classifier's node, 0 where it does (so ``decision | lut[leaf]`` is the classifier's mask)."""
        out = {}
        for clf in self.classifiers:
            lut = np.full(max(self.max_leaf_id, self.void_value) + 1, IGNORE, dtype=np.uint8)
            for leaf in self.descendant_leaves(clf.node):
                lut[leaf.id] = 0
            out[clf.name] = lut
        return out

    def classifier_masks(
        self,
        decisions: Mapping[str, np.ndarray],
        leaf_map: np.ndarray,
        lookup: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.take,
    ) -> dict[str, np.ndarray]:
        """Per classifier: its decision where the pixel's path goes through it, :data:`IGNORE` elsewhere.

        Runs on every frame in the node: one LUT lookup and a bitwise OR per classifier (class
        indices are below IGNORE = 255, so OR-ing 255 sets a pixel to IGNORE and OR-ing 0 keeps it).
        ``lookup(lut, leaf_map)`` indexes the LUT; the node passes a faster one for uint8 maps
        (:func:`hiseg_ros.outputs.classifier_masks`).
        """
        out = {}
        for clf in self.classifiers:
            dec = np.asarray(decisions[clf.name]).astype(np.uint8, copy=False)
            if clf.node == ROOT:
                out[clf.name] = dec
                continue
            out[clf.name] = np.bitwise_or(dec, lookup(self._outside_luts[clf.name], leaf_map))
        return out

    def dataset(self, name: str) -> DatasetMapping:
        try:
            return self.datasets[name]
        except KeyError:
            raise KeyError(
                f"hierarchy {self.name!r} has no dataset {name!r} (known: {sorted(self.datasets)})"
            ) from None

    @cached_property
    def _target_luts(self) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Per pixel/boxes dataset: (native id is mapped, per-classifier LUT native id -> target)."""
        out = {}
        for ds in self.datasets.values():
            if ds.supervision == "tags":
                continue
            size = max(int(k) for k in ds.ids) + 1
            known = np.zeros(size, dtype=bool)
            luts = {clf.name: np.full(size, IGNORE, dtype=np.uint8) for clf in self.classifiers}
            for native, target in ds.ids.items():
                native = int(native)
                if native < 0:
                    continue  # e.g. Cityscapes license plate -1: never stored in a label PNG
                known[native] = True
                if target is None:
                    continue
                for clf_name, index in self.path(target):
                    luts[clf_name][native] = index
            out[ds.name] = (known, luts)
        return out

    def targets(self, dataset: str, label_map: np.ndarray) -> dict[str, np.ndarray]:
        """Per-classifier training targets (class index or :data:`IGNORE`) from a native label map.

        A native id mapped to class ``c`` gives every classifier on the root-to-``c`` path the
        index of the next class on that path; classifiers below ``c`` (when ``c`` is an inner
        class because the dataset is coarser) and beside the path get IGNORE.
        """
        ds = self.dataset(dataset)
        if ds.supervision == "tags":
            raise ValueError(f"dataset {dataset!r} has image-level tags, not per-pixel native ids")
        known, luts = self._target_luts[dataset]
        label_map = np.asarray(label_map)
        if label_map.size:
            lo, hi = int(label_map.min()), int(label_map.max())
            if lo < 0 or hi >= len(known) or not known[np.unique(label_map)].all():
                bad = [int(v) for v in np.unique(label_map) if v < 0 or v >= len(known) or not known[v]]
                raise ValueError(f"dataset {dataset!r}: label ids {bad} are not mapped by hierarchy {self.name!r}")
        return {name: lut[label_map] for name, lut in luts.items()}

    def native_to_node(self, dataset: str, native: int | str) -> str | None:
        """The class a native id (or tag) is mapped to, ``None`` for ignore."""
        ds = self.dataset(dataset)
        key: int | str = native if ds.supervision == "tags" else int(native)
        if key not in ds.ids:
            raise KeyError(f"dataset {dataset!r} has no native id {native!r} in hierarchy {self.name!r}")
        return ds.ids[key]

    @cached_property
    def _leaf_native(self) -> dict[str, dict[str, int | None]]:
        out: dict[str, dict[str, int | None]] = {}
        for ds in self.datasets.values():
            if ds.evaluation is None:
                continue
            evaluated = {nid for nid, _ in ds.evaluation.classes}
            overrides = dict(ds.evaluation.leaf_ids)
            per_leaf: dict[str, int | None] = {}
            for leaf in self.leaves:
                if leaf.name in overrides:
                    per_leaf[leaf.name] = overrides[leaf.name]
                    continue
                per_leaf[leaf.name] = _nearest_native(self, ds, leaf.name, evaluated)
            out[ds.name] = per_leaf
        return out

    def leaf_to_native(self, dataset: str) -> dict[str, int | None]:
        """Per leaf: the dataset's native id a prediction of that leaf means (``None``: no counterpart).

        Found at the nearest class on the leaf's ancestry that the dataset maps a native id to
        (preferring an evaluated id when several map there), unless the hierarchy file names
        one under ``evaluation.leaf_ids``.
        """
        if self.dataset(dataset).evaluation is None:
            raise ValueError(f"dataset {dataset!r} has no evaluation label space in hierarchy {self.name!r}")
        return dict(self._leaf_native[dataset])

    def leaf_to_eval_lut(self, dataset: str) -> np.ndarray:
        """LUT leaf id -> the dataset's evaluation id (:data:`IGNORE` where the leaf has none).

        Also covers the void value of the leaf map (maps to IGNORE).
        """
        ds = self.dataset(dataset)
        if ds.evaluation is None:
            raise ValueError(f"dataset {dataset!r} has no evaluation label space in hierarchy {self.name!r}")
        eval_of_native = {nid: i for i, (nid, _) in enumerate(ds.evaluation.classes)}
        lut = np.full(max(self.max_leaf_id, self.void_value) + 1, IGNORE, dtype=np.uint8)
        for leaf in self.leaves:
            native = self._leaf_native[dataset][leaf.name]
            if native is not None and native in eval_of_native:
                lut[leaf.id] = eval_of_native[native]
        return lut

    def native_to_eval_lut(self, dataset: str) -> np.ndarray:
        """LUT native id -> evaluation id (:data:`IGNORE` for ids outside the evaluation space)."""
        ds = self.dataset(dataset)
        if ds.evaluation is None:
            raise ValueError(f"dataset {dataset!r} has no evaluation label space in hierarchy {self.name!r}")
        size = max(int(k) for k in ds.ids) + 1
        lut = np.full(size, IGNORE, dtype=np.uint8)
        for i, (nid, _) in enumerate(ds.evaluation.classes):
            lut[nid] = i
        return lut

    @cached_property
    def palette(self) -> np.ndarray:
        """LUT leaf id (and void) -> RGB colour, for colour masks."""
        lut = np.zeros((max(self.max_leaf_id, self.void_value) + 1, 3), dtype=np.uint8)
        for leaf in self.leaves:
            lut[leaf.id] = leaf.color
        return lut

    def classifier_palette(self, classifier: str) -> np.ndarray:
        """LUT class index of one classifier (and IGNORE) -> RGB colour."""
        lut = np.zeros((IGNORE + 1, 3), dtype=np.uint8)
        for i, name in enumerate(self.classifier(classifier).classes):
            lut[i] = self.node(name).color
        return lut

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        datasets = {}
        for ds in self.datasets.values():
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
            "schema": _SCHEMA_VERSION,
            "name": self.name,
            "description": self.description,
            "classes": [
                {"name": c.name, "id": c.id, "parent": c.parent, "color": list(c.color)}
                | ({"classifier": c.classifier} if c.classifier else {})
                for c in self.classes
            ],
            "datasets": datasets,
        }

    def to_json(self) -> str:
        """Compact JSON (embedded in exported models); :meth:`from_json` gives back an equal hierarchy."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<hierarchy json>") -> Hierarchy:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HierarchyError(f"{source}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HierarchyError(f"{source}: expected a JSON object")
        if data.get("schema") != _SCHEMA_VERSION:
            raise HierarchyError(f"{source}: schema: expected {_SCHEMA_VERSION}, got {data.get('schema')!r}")
        datasets = {}
        for name, entry in (data.get("datasets") or {}).items():
            if isinstance(entry, dict) and isinstance(entry.get("ids"), list):
                entry = dict(entry, ids={k: v for k, v in entry["ids"]})
            datasets[name] = entry
        body = {k: v for k, v in data.items() if k != "schema"} | {"datasets": datasets}
        return hierarchy_from_dict(body, source)


# ---------------------------------------------------------------------- parsing
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
    src = _Source(str(path))
    _check_keys(src, "", data, required={"name", "flatten"}, optional={"description", "coarse_labels"})
    base_path = (path.parent / str(data["flatten"])).resolve()
    if base_path == path.resolve():
        raise src.error("flatten", "a hierarchy cannot flatten itself")
    base = load_hierarchy(base_path)
    coarse = data.get("coarse_labels") or {}
    if not isinstance(coarse, dict):
        raise src.error("coarse_labels", "expected a mapping inner class -> leaf")
    return flatten_hierarchy(base, str(data["name"]), coarse, str(data.get("description", "")), str(path))


def flatten_hierarchy(
    base: Hierarchy,
    name: str,
    coarse_labels: Mapping[str, str] | None = None,
    description: str = "",
    source: str = "<flattened>",
) -> Hierarchy:
    """A flat hierarchy with ``base``'s leaves under one root classifier.

    Dataset ids that ``base`` maps to an inner class have no class in a flat classifier:
    they become ignore, or the leaf named for that inner class in ``coarse_labels``.
    """
    src = _Source(source)
    coarse_labels = dict(coarse_labels or {})
    leaf_names = {leaf.name for leaf in base.leaves}
    for inner, leaf in coarse_labels.items():
        if inner not in {c.name for c in base.classes} or inner in leaf_names:
            raise src.error(f"coarse_labels.{inner}", f"not an inner class of {base.name!r}")
        if leaf not in leaf_names:
            raise src.error(f"coarse_labels.{inner}", f"{leaf!r} is not a leaf of {base.name!r}")
    classes = [ClassNode(leaf.name, leaf.id, ROOT, leaf.color) for leaf in base.leaves]
    datasets = []
    for ds in base.datasets.values():
        ids = {}
        for native, target in ds.ids.items():
            if target is not None and target not in leaf_names:
                target = coarse_labels.get(target)
            ids[native] = target
        datasets.append(DatasetMapping(ds.name, ds.supervision, ids, ds.id_range, _flat_evaluation(base, ds)))
    return Hierarchy(name, classes, datasets, description or f"flat baseline over the leaves of {base.name}", source)


def _flat_evaluation(base: Hierarchy, ds: DatasetMapping) -> DatasetEvaluation | None:
    """Keep ``base``'s leaf -> native answers, which the flat tree can no longer derive by ancestry."""
    if ds.evaluation is None:
        return None
    leaf_native = base.leaf_to_native(ds.name)
    return DatasetEvaluation(ds.evaluation.classes, {k: v for k, v in leaf_native.items() if v is not None})


_TOP_KEYS = {"name", "classes", "datasets", "description"}


def hierarchy_from_dict(data: Mapping[str, Any], source: str) -> Hierarchy:
    """Validate a parsed hierarchy document (YAML or JSON) and build the :class:`Hierarchy`."""
    src = _Source(source)
    _check_keys(src, "", data, required={"name", "classes"}, optional=_TOP_KEYS)
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise src.error("name", "expected a non-empty string")
    classes = _parse_classes(src, data["classes"])
    datasets_raw = data.get("datasets") or {}
    if not isinstance(datasets_raw, dict):
        raise src.error("datasets", "expected a mapping dataset name -> mapping")
    hierarchy = Hierarchy(name, classes, (), str(data.get("description", "")), source)
    datasets = [
        _parse_dataset(src, f"datasets.{ds_name}", str(ds_name), entry, hierarchy)
        for ds_name, entry in datasets_raw.items()
    ]
    hierarchy = Hierarchy(name, classes, datasets, str(data.get("description", "")), source)
    _ = hierarchy._leaf_native  # resolve leaf -> native answers now: ambiguities are load errors
    return hierarchy


def _check_keys(src: _Source, where: str, data: Any, required: set[str], optional: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise src.error(where or "<top>", f"expected a mapping, got {type(data).__name__}")
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in required | optional:
            raise src.error(f"{prefix}{key}", f"unknown key (expected one of {sorted(required | optional)})")
    for key in sorted(required):
        if key not in data:
            raise src.error(f"{prefix}{key}", "missing required key")


def _parse_color(src: _Source, key: str, value: Any) -> tuple[int, int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        raise src.error(key, f"expected a colour [r, g, b] of integers 0..255, got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


def _parse_classes(src: _Source, raw: Any) -> list[ClassNode]:
    if not isinstance(raw, list) or not raw:
        raise src.error("classes", "expected a non-empty list of classes")
    nodes: list[ClassNode] = []
    names: dict[str, int] = {}
    ids: dict[int, int] = {}
    for i, entry in enumerate(raw):
        key = f"classes[{i}]"
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            key = f"classes[{i}] ({entry['name']})"
        _check_keys(src, key, entry, required={"name", "id", "parent", "color"}, optional={"classifier"})
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
        nodes.append(ClassNode(name, class_id, parent, color, classifier))

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
        final.append(ClassNode(node.name, node.id, node.parent, node.color, clf_name))
    return final


def _build_classifiers(classes: Sequence[ClassNode]) -> tuple[Classifier, ...]:
    """Classifiers in breadth-first order (root first, parents before children)."""
    children: dict[str, list[str]] = {}
    for node in classes:
        children.setdefault(node.parent, []).append(node.name)
    by_name = {c.name: c for c in classes}
    out = []
    queue = [ROOT]
    while queue:
        node = queue.pop(0)
        kids = children.get(node, [])
        if not kids:
            continue
        out.append(Classifier(ROOT if node == ROOT else by_name[node].classifier or node, node, tuple(kids)))
        queue.extend(kids)
    return tuple(out)


def _parse_dataset(src: _Source, key: str, name: str, raw: Any, hierarchy: Hierarchy) -> DatasetMapping:
    _check_keys(src, key, raw, required={"supervision", "ids"}, optional={"id_range", "evaluation"})
    supervision = raw["supervision"]
    if supervision not in SUPERVISION_KINDS:
        raise src.error(f"{key}.supervision", f"expected one of {list(SUPERVISION_KINDS)}, got {supervision!r}")
    ids_raw = raw["ids"]
    if not isinstance(ids_raw, dict) or not ids_raw:
        raise src.error(f"{key}.ids", "expected a non-empty mapping native id -> class name or null")
    class_names = {c.name for c in hierarchy.classes}
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
        evaluation = _parse_evaluation(src, f"{key}.evaluation", raw["evaluation"], ids, hierarchy)
    return DatasetMapping(name, supervision, ids, id_range, evaluation)


def _parse_evaluation(
    src: _Source, key: str, raw: Any, ids: Mapping[int | str, str | None], hierarchy: Hierarchy
) -> DatasetEvaluation:
    _check_keys(src, key, raw, required={"classes"}, optional={"leaf_ids"})
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
    leaf_names = {leaf.name for leaf in hierarchy.leaves}
    leaf_ids = {}
    for leaf, native in (raw.get("leaf_ids") or {}).items():
        if leaf not in leaf_names:
            raise src.error(f"{key}.leaf_ids.{leaf}", "not a leaf class of the hierarchy")
        if native not in ids:
            raise src.error(f"{key}.leaf_ids.{leaf}", f"native id {native!r} is not in the dataset's ids")
        leaf_ids[str(leaf)] = int(native)
    return DatasetEvaluation(tuple(classes), leaf_ids)


def _nearest_native(h: Hierarchy, ds: DatasetMapping, leaf: str, evaluated: set[int]) -> int | None:
    for node in [leaf, *h.ancestors(leaf)]:
        natives = sorted(int(k) for k, v in ds.ids.items() if v == node)
        if not natives:
            continue
        preferred = [n for n in natives if n in evaluated] or natives
        if len(preferred) > 1:
            raise HierarchyError(
                f"{h.source}: datasets.{ds.name}: leaf {leaf!r} could mean native ids {preferred} "
                f"(all mapped to {node!r}): name one under evaluation.leaf_ids"
            )
        return preferred[0]
    return None
